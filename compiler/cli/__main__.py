"""`python -m compiler.cli`: the `kiln` command without its console script."""

from compiler.cli.main import entry

entry()
