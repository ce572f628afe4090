"""The `kiln` command: one module per noun (compile in main, run, lineage, schedule, bundle).

`compiler.cli:entry` is the console script (the same path before and after the re-layout, so
an existing install's `kiln` keeps working).
"""

from compiler.cli.main import entry

__all__ = ["entry"]
