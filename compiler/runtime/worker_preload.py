"""Dask worker preload of Kiln's local clusters (`cluster.local_cluster_options`).

Imported by each worker process while it starts, before it takes tasks: the task executor and
the IPython machinery its shell is built from. The first task on a worker then starts at once
instead of importing them (0.1-0.3 s a worker). Nothing is created here: the shell itself is
still made by the first task (`executor.get_shell`), so what a task sees does not change.
"""

from __future__ import annotations

import IPython.core.interactiveshell  # noqa: F401
import traitlets.config  # noqa: F401

import compiler.runtime.executor  # noqa: F401
