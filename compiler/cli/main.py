"""`kiln`: compile, check, draw and run tagged notebooks.

Every subcommand is a thin shell over the library (`compiler.compile.api`, `compiler.ops`), the
same library the Jupyter server extension calls.
"""

# ruff: noqa: E402  (the imports below come after the start-up setting they depend on)
from __future__ import annotations

import sys

# jsonschema (imported by nbformat) builds the optional `rfc3987_syntax` IRI grammar at import,
# 1.5 s of every command's start-up; Kiln never validates IRIs, so the CLI does without it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

import argparse
import functools
import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Imported where used, not here: with subprocess, shutil and uuid (~11 ms) and the diagnostics
# (dataclasses and inspect, ~16 ms) `kiln metrics`, which uses none of them, started in 0.2 s.
if TYPE_CHECKING:
    from compiler.model.diagnostics import Diagnostic

EXIT_OK, EXIT_ERRORS, EXIT_UNREADABLE = 0, 1, 2


def _print_diagnostics(diagnostics: list[Diagnostic], path: str, stream: Any) -> None:
    for d in diagnostics:
        print(f"{path}: {d.render()}", file=stream)


def _show_diagnostics(diagnostics: list[Diagnostic], ok: bool, path: str) -> None:
    """Errors and warnings on stderr; notes only when the notebook does not compile."""
    _print_diagnostics([d for d in diagnostics if d.severity != "info" or not ok], path, sys.stderr)


def _compile_or_exit(path: str, show: bool = True) -> tuple[Any, int]:
    from compiler.compile.api import compile_notebook
    from compiler.model.diagnostics import NotebookLoadError

    try:
        result = compile_notebook(path)
    except NotebookLoadError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return None, EXIT_UNREADABLE
    if show:
        _show_diagnostics(result.diagnostics, result.ok, path)
    return result, EXIT_OK if result.ok else EXIT_ERRORS


def write_atomically(path: Path, text: str) -> None:
    """Write next to the target and rename, so a reader never sees half a file."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    # open() rather than mkstemp: the file gets the umask's mode (0644), not mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_output_folder(out: Path, files: dict[str, str]) -> None:
    """Write `files` into `out` so a reader sees the old set or the new set, never a mix (an
    interrupted compile left pipeline.json without tasks.py). The files are written into a
    sibling folder that replaces `out` by rename; a folder that also holds files of the user's
    (or is a symlink) gets each file replaced atomically instead, tasks.py before the
    pipeline.json runners read. A file where the folder should be is refused, never replaced."""
    import shutil
    import uuid

    out.parent.mkdir(parents=True, exist_ok=True)
    ours = set(files)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a folder")
    if out.is_symlink() or (out.is_dir() and any(p.name not in ours for p in out.iterdir())):
        for name in sorted(files, key=lambda n: n == "pipeline.json"):
            write_atomically(out / name, files[name])
        return
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    retired = out.with_name(f".{out.name}.{uuid.uuid4().hex}.old")
    staging.mkdir()
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o755)
        if out.exists():
            os.rename(out, retired)
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _last_run_warnings(notebook: str) -> list[dict[str, Any]]:
    """What the notebook's last recorded run found that the compiler could not see (a value
    changed in place), as diagnostics with the fix; none without a lineage store (never made
    here) or when it cannot be read."""
    from compiler.lineage.defaults import ENV_URL
    from compiler.lineage.queries import last_run_warnings
    from compiler.lineage.store import LineageStoreError, find_default_db, open_store

    url = os.environ.get(ENV_URL)
    if not url:
        found = find_default_db(Path(notebook).resolve().parent)
        if found is None:
            return []
        url = f"sqlite:///{found}"
    try:
        store = open_store(url, migrate=False)
        try:
            run_id, warnings = last_run_warnings(store, notebook)
        finally:
            store.engine.dispose()
    except LineageStoreError:
        return []
    except Exception:  # an old or damaged store: the compile's own word stands
        return []
    return [
        {
            "severity": "warning",
            "code": "input-changed-in-place",
            "cell_index": w.get("cell_index"),
            "line": w.get("line"),
            "task": w.get("task"),
            "fix": w.get("fix"),
            "run_id": run_id,
            "message": f"the last run ({run_id}) found: {w.get('message')}",
        }
        for w in warnings
    ]


def cmd_check(args: argparse.Namespace) -> int:
    result, code = _compile_or_exit(args.notebook, show=False)
    if result is None:
        return code
    found = _last_run_warnings(args.notebook)
    if args.json:
        print(json.dumps([*result.to_dict()["diagnostics"], *found], indent=2))
    else:
        _print_diagnostics(result.diagnostics, args.notebook, sys.stdout)
        for w in found:
            where = f"cell {w['cell_index']}" if w.get("cell_index") is not None else "run"
            print(f"{args.notebook}: {where}: warning: {w['message']}")
        errors = sum(d.severity == "error" for d in result.diagnostics)
        warnings = sum(d.severity == "warning" for d in result.diagnostics) + len(found)
        tasks = len(result.pipeline.tasks)
        print(f"{args.notebook}: {tasks} task(s), {errors} error(s), {warnings} warning(s)")
    return code


def cmd_compile(args: argparse.Namespace) -> int:
    from compiler.compile.emit import spec_json
    from compiler.model.diagnostics import CompileError

    result, code = _compile_or_exit(args.notebook)
    if result is None or code != EXIT_OK:
        if result is not None:
            print("kiln: errors found; nothing written", file=sys.stderr)
        return code
    out = Path(args.output)
    spec = result.spec
    try:
        module = result.module_source()
    except CompileError as exc:
        _show_diagnostics(exc.diagnostics, False, args.notebook)
        print("kiln: errors found; nothing written", file=sys.stderr)
        return EXIT_ERRORS
    try:
        write_output_folder(out, {"pipeline.json": spec_json(spec), "tasks.py": module})
    except OSError as exc:
        print(f"kiln: cannot write {out}/: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    print(f"{result.pipeline.name} {spec['version']}: {len(spec['tasks'])} task(s) -> {out}/")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from compiler.compile.graph import to_dot, to_mermaid

    result, code = _compile_or_exit(args.notebook)
    if result is None or code != EXIT_OK:
        return code
    spec = result.spec
    if args.format == "mermaid":
        print(to_mermaid(spec), end="")
    elif args.format == "dot":
        print(to_dot(spec), end="")
    else:
        dot = shutil.which("dot")
        if dot is None:
            print(
                "kiln: SVG needs Graphviz's `dot` (apt-get install graphviz); "
                "use --format dot or mermaid",
                file=sys.stderr,
            )
            return EXIT_ERRORS
        svg = subprocess.run(
            [dot, "-Tsvg"], input=to_dot(spec), capture_output=True, text=True, check=True
        ).stdout
        print(svg, end="")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from compiler.model.diagnostics import CompileError
    from compiler.ops.export import export_bundle

    result, code = _compile_or_exit(args.notebook)
    if result is None or code != EXIT_OK:
        return code
    try:
        exported = export_bundle(result, args.notebook, root=args.output)
    except CompileError as exc:
        _show_diagnostics(exc.diagnostics, False, args.notebook)
        return EXIT_ERRORS
    if args.json:
        print(json.dumps(exported.to_dict(), indent=2))
    elif exported.created:
        print(f"exported {exported.name} version {exported.version} -> {exported.path}/")
    else:
        print(
            f"{exported.name} version {exported.version} already exported at "
            f"{exported.path}/ (unchanged)"
        )
    return EXIT_OK


def _compiled_already(path: str) -> bool:
    """Whether the compile cache holds this notebook as it is now (compiled_spec's key)."""
    from compiler.compile.cache import cache_entry_path
    from compiler.compile.notebook import read_notebook_text

    return cache_entry_path(Path(path), read_notebook_text(path).encode("utf-8")).is_file()


def cmd_run(args: argparse.Namespace) -> int:
    from compiler.cli.run import early_cluster, run_command
    from compiler.compile.cache import compiled_spec
    from compiler.model.diagnostics import NotebookLoadError

    # A notebook that must be compiled has changed: its tasks will run, so the cluster starts
    # now and comes up while the notebook compiles (the compile cache's look-up costs ~1 ms).
    try:
        cluster_start = early_cluster(args, must_compile=not _compiled_already(args.notebook))
    except NotebookLoadError:
        cluster_start = None  # reported below, by the compile
    try:
        spec, diagnostics = compiled_spec(args.notebook)
    except NotebookLoadError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        if cluster_start is not None:
            cluster_start.discard(wait=False)
        return EXIT_UNREADABLE
    _show_diagnostics(diagnostics, spec is not None, args.notebook)
    if spec is None:
        if cluster_start is not None:
            cluster_start.discard(wait=False)  # the user's mistake is shown without delay
        return EXIT_ERRORS
    code = int(run_command(args, spec, args.notebook, cluster_start))
    global _EXIT_AT_ONCE
    _EXIT_AT_ONCE = True  # the run closed its cluster and joined its lineage writer
    return code


# Commands whose parser is built alone when the command line starts with one: `kiln metrics`
# then imports and builds its own module's options only (every subcommand's, with the modules
# that define them, was ~20 ms of a 0.2 s command). Any other first word (`--help`, a typo, a
# command not listed) gets the whole parser. tests/test_metrics_cli.py checks that each listed
# module registers these commands and that their help reads the same in both parsers.
QUICK_COMMANDS = {
    "metrics": "compiler.cli.metrics",
    "drift": "compiler.cli.metrics",
    "baseline": "compiler.cli.metrics",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole `kiln` parser, or with `command` one of QUICK_COMMANDS: a parser of the
    commands its module registers only."""
    parser = argparse.ArgumentParser(
        prog="kiln", description="Tagged Jupyter notebooks as versioned pipelines on Dask."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in QUICK_COMMANDS:
        importlib.import_module(QUICK_COMMANDS[command]).register(sub)
        return parser

    p = sub.add_parser("check", help="print the notebook's diagnostics (exit 1 on errors)")
    p.add_argument("notebook")
    p.add_argument("--json", action="store_true", help="diagnostics as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compile", help="write pipeline.json and tasks.py")
    p.add_argument("notebook")
    p.add_argument("-o", "--output", default="build", help="output folder (default: build)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("graph", help="print the DAG as Mermaid, DOT or SVG")
    p.add_argument("notebook")
    p.add_argument("--format", choices=["mermaid", "dot", "svg"], default="mermaid")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("export", help="write a versioned bundle: pipelines/NAME/VERSION/")
    p.add_argument("notebook")
    p.add_argument(
        "-o", "--output", help="folder that holds pipelines/ (default: beside the notebook)"
    )
    p.add_argument("--json", action="store_true", help="print the bundle's path and version")
    p.set_defaults(func=cmd_export)

    from compiler.cli.run_options import add_run_arguments

    p = sub.add_parser("run", help="run the pipeline on Dask (local cluster by default)")
    p.add_argument("notebook")
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    from compiler.cli.cluster import register as register_cluster
    from compiler.cli.doctor import register as register_doctor
    from compiler.cli.lineage import register as register_lineage
    from compiler.cli.metrics import register as register_metrics
    from compiler.cli.production import register as register_production
    from compiler.cli.schedule import register as register_schedules
    from compiler.cli.verify import register as register_verify

    register_lineage(sub)
    register_metrics(sub)
    register_schedules(sub)
    register_cluster(sub)
    register_production(sub)
    register_doctor(sub)
    register_verify(sub)
    return parser


def _version() -> str:
    from compiler import __version__

    return f"kiln {__version__}"


# Set once a command has closed everything it opened (see `entry`).
_EXIT_AT_ONCE = False


def entry() -> None:
    """The `kiln` console script. After `kiln run` the process ends without CPython's teardown:
    the run has already closed its Dask cluster and client, joined its lineage and OpenLineage
    writers and written its output notebook, and tearing down the ~2,000 modules a Dask client
    loads took 0.3 s of every run. Other commands, and `main()` called in-process, exit
    normally."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # `kiln runs | head -1`: the reader has gone, which is not an error of Kiln's. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1  # what Python's documentation suggests for a closed pipe
    if _EXIT_AT_ONCE:
        import logging

        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe (`kiln run ... | head`)
            code = code or 1
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


@functools.lru_cache(maxsize=len(QUICK_COMMANDS) + 1)
def _parser(command: str | None = None) -> argparse.ArgumentParser:
    # Built once per process: building it is ~35 ms (every subcommand's options), which
    # in-process callers of main() (tests, tools) paid on every call.
    return build_parser(command)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    first = words[0] if words else None
    args = _parser(first if first in QUICK_COMMANDS else None).parse_args(words)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    entry()
