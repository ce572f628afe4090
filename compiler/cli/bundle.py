"""Run an exported bundle (`pipelines/NAME/VERSION/run.py`) exactly as `kiln run` would.

The bundle carries its spec and notebook snapshot; this module only reads them back and hands
them to the same `run_command` the CLI uses, so a bundle run behaves like a notebook run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler.cli.run import add_run_arguments, run_command


def main(bundle_dir: Path, argv: list[str]) -> int:
    spec_path = bundle_dir / "pipeline.json"
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"kiln: {spec_path}: cannot read the bundle's pipeline: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="run.py",
        description=f"Run pipeline {spec['name']!r} version {spec['version']} on Dask.",
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="folder the tasks run in: their relative file paths, the cache, the lineage "
        "database and the output notebook (default: the bundle's folder)",
    )
    args = parser.parse_args(argv)
    if args.workdir is not None and not Path(args.workdir).is_dir():
        parser.error(f"--workdir {args.workdir}: no such folder")
    notebook = bundle_dir / spec["notebook"]["file"]
    return int(run_command(args, spec, notebook))
