"""What a notebook imports to talk to Kiln: `import kiln; kiln.log_metric("accuracy", acc)`.

Inside a task run by Kiln the value is recorded with the run (see `kiln metrics NOTEBOOK`);
in a plain kernel or script the call does nothing and says so once.
"""

from compiler.runtime.monitor import log_metric

__all__ = ["log_metric"]
