"""`kiln doctor`: check the installation and say what to fix.

One line per check, `ok` / `warn` / `FAIL` with a hint; `--json` prints the same records.
Exit 0 when no check failed, 1 otherwise. Every check is real (it starts a Dask cluster, writes
to the artifact store, opens the lineage database) but bounded by `--timeout`.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_PYTHON = (3, 11)
DISTRIBUTION = "nbkiln"
LABEXTENSION = "nbkiln"
SERVER_EXTENSION = "jupyter_ext"

T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str = ""


class CheckTimeout(TimeoutError):
    pass


def within(seconds: float, work: Callable[[], T]) -> T:
    """Run `work` in a daemon thread; raise CheckTimeout if it takes longer than `seconds`
    (a hung connection must not hang the doctor)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="kiln-doctor-check")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CheckTimeout(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- the checks ------------------------------------------------------------------------------


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", OK, f"Python {version} ({sys.executable})")
    return Check(
        "python",
        FAIL,
        f"Python {version}; Kiln needs {'.'.join(map(str, MIN_PYTHON))} or newer",
        "create the virtualenv with a newer Python: python3.11 -m venv .venv",
    )


def check_nbkiln() -> Check:
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).resolve().parent
    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:
        return Check(
            "nbkiln",
            FAIL,
            f"the compiler package is imported from {here} but nbkiln is not installed",
            "pip install -e . (in the repository) or pip install nbkiln",
        )
    return Check("nbkiln", OK, f"nbkiln {installed} ({here})")


def check_labextension() -> Check:
    hint = "reinstall nbkiln (its wheel ships the prebuilt extension): pip install -e ."
    try:
        from jupyter_core.paths import jupyter_path
        from jupyterlab_server.config import get_federated_extensions, get_page_config
    except ImportError as exc:
        return Check("labextension", FAIL, f"JupyterLab is not importable: {exc}", hint)
    paths = jupyter_path("labextensions")
    found = get_federated_extensions(paths).get(LABEXTENSION)
    if found is None:
        return Check(
            "labextension",
            FAIL,
            f"the JupyterLab extension {LABEXTENSION} is not installed (looked in "
            f"{', '.join(paths)})",
            hint,
        )
    disabled = get_page_config(paths).get("disabledExtensions") or {}
    if isinstance(disabled, list):  # older page_config files
        disabled = dict.fromkeys(disabled, True)
    off = sorted(k for k, v in disabled.items() if v and k.split(":")[0] == LABEXTENSION)
    if off:
        return Check(
            "labextension",
            FAIL,
            f"{LABEXTENSION} {found.get('version')} is installed but disabled ({', '.join(off)})",
            f"jupyter labextension enable {LABEXTENSION}",
        )
    return Check(
        "labextension", OK, f"{LABEXTENSION} {found.get('version')} enabled ({found['ext_path']})"
    )


def check_server_extension() -> Check:
    try:
        from jupyter_core.paths import jupyter_config_path
        from jupyter_server.extension.config import ExtensionConfigManager
    except ImportError as exc:
        return Check(
            "server extension", FAIL, f"jupyter_server is not importable: {exc}", "pip install -e ."
        )
    manager = ExtensionConfigManager(read_config_path=jupyter_config_path())
    if manager.enabled(SERVER_EXTENSION):
        return Check("server extension", OK, f"{SERVER_EXTENSION} enabled (endpoints /kiln/)")
    return Check(
        "server extension",
        FAIL,
        f"the server extension {SERVER_EXTENSION} is not enabled: the Pipeline panel cannot "
        "compile or run",
        f"jupyter server extension enable {SERVER_EXTENSION}",
    )


def check_papermill_engine() -> Check:
    from importlib.metadata import entry_points

    hint = "reinstall nbkiln (it registers the papermill.engine entry point): pip install -e ."
    found = [ep for ep in entry_points(group="papermill.engine") if ep.name == "kiln"]
    if not found:
        return Check("papermill engine", FAIL, "no papermill engine named kiln", hint)
    try:
        # As papermill itself does: its engine registry loads the entry points on import.
        from papermill.engines import papermill_engines

        engine = papermill_engines.get_engine("kiln")
    except Exception as exc:
        return Check(
            "papermill engine", FAIL, f"papermill cannot load the kiln engine: {exc}", hint
        )
    return Check("papermill engine", OK, f"kiln -> {engine.__module__}.{engine.__name__}")


def check_kernelspec() -> Check:
    hint = "python -m ipykernel install --sys-prefix --name python3"
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager().find_kernel_specs()
    except Exception as exc:
        return Check("kernelspec", WARN, f"cannot list kernelspecs: {exc}", hint)
    if "python3" not in specs:
        return Check(
            "kernelspec",
            WARN,
            "no kernelspec named python3: papermill's default engine (`kiln schedule add "
            "--engine papermill`) cannot run notebooks",
            hint,
        )
    return Check("kernelspec", OK, f"python3 ({specs['python3']})")


def _trivial(x: int) -> int:
    return x + 1


def check_dask(scheduler: str | None, timeout: float) -> Check:
    from compiler.runtime.cluster import configured_scheduler_address

    address = configured_scheduler_address(scheduler)
    if address:
        return _check_remote_dask(address, timeout)
    return _check_local_dask(timeout)


def _check_remote_dask(address: str, timeout: float) -> Check:
    hint = (
        f"start the Dask scheduler at {address}, or run without --scheduler and "
        "DASK_SCHEDULER_ADDRESS to use a local cluster"
    )

    def connect() -> tuple[int, int]:
        from distributed import Client

        with Client(address, timeout=f"{timeout}s") as client:
            workers = len(client.scheduler_info().get("workers") or {})
            value = client.submit(_trivial, 1, pure=False).result(timeout=timeout) if workers else 0
            return workers, value

    try:
        workers, value = within(timeout + 2, connect)
    except Exception as exc:
        return Check("dask", FAIL, f"cannot reach the Dask scheduler {address}: {exc}", hint)
    if workers == 0:
        return Check(
            "dask",
            WARN,
            f"scheduler {address} answers but has no workers: runs would wait",
            "start workers: dask worker " + address,
        )
    if value != 2:
        return Check("dask", FAIL, f"scheduler {address}: a test task returned {value!r}", hint)
    return Check("dask", OK, f"scheduler {address}: {workers} worker(s), a test task ran")


def _check_local_dask(timeout: float) -> Check:
    hint = "see the error; `python -c 'import distributed'` must work in this environment"

    def start() -> int:
        from compiler.runtime.cluster import open_cluster

        session = open_cluster(None, 1)
        try:
            return int(session.client.submit(_trivial, 1, pure=False).result(timeout=timeout))
        finally:
            session.close()

    try:
        value = within(timeout + 10, start)  # starting a worker process takes a few seconds
    except Exception as exc:
        return Check("dask", FAIL, f"cannot start a local Dask cluster: {exc}", hint)
    if value != 2:
        return Check("dask", FAIL, f"local cluster: a test task returned {value!r}", hint)
    return Check("dask", OK, "a local Dask cluster started and ran a test task")


def check_store(store_url: str | None, timeout: float) -> Check:
    url = store_url or str(Path.cwd() / ".kiln")
    hint = (
        "pass --store with a folder or fsspec URL you can write to (s3:// needs `pip install "
        "s3fs` and credentials)"
    )

    def probe() -> None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        root = root.rstrip("/")
        existed = fs.exists(root)
        fs.makedirs(root, exist_ok=True)
        path = f"{root}/.kiln-doctor-{uuid.uuid4().hex}"
        try:
            with fs.open(path, "wb") as f:
                f.write(b"kiln doctor\n")
            with fs.open(path, "rb") as f:
                if f.read() != b"kiln doctor\n":
                    raise OSError("what was written reads back differently")
        finally:
            if fs.exists(path):
                fs.rm(path)
            if not existed and fs.exists(root) and not fs.ls(root):
                fs.rmdir(root)  # leave no trace where there was none

    try:
        within(timeout, probe)
    except Exception as exc:
        return Check(
            "artifact store", FAIL, f"cannot write to {url}: {type(exc).__name__}: {exc}", hint
        )
    return Check("artifact store", OK, f"{url} is writable")


def check_lineage_db(lineage_db: str | None, timeout: float) -> Check:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from compiler.lineage.store import ENV_URL, open_store, resolve_url

    url = resolve_url(lineage_db)
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:
        shown = url
    hint = (
        "pass --lineage-db with a SQLAlchemy URL you can write to, or set "
        f"{ENV_URL} (PostgreSQL: postgresql+psycopg://USER@HOST/DB and `pip install "
        "'psycopg[binary]'`)"
    )
    database = _sqlite_file(url)
    if database is not None and not database.exists():
        # Opening would create the file; say where, and check its folder instead.
        folder, problem = _creatable(database)
        if problem:
            return Check("lineage db", FAIL, f"{shown}: cannot create it, {problem}", hint)
        return Check("lineage db", OK, f"{shown} (created on the first run; {folder} is writable)")

    def probe() -> str:
        with open_store(url) as store:
            # A real write that changes nothing: proves the connection may write.
            store.write(
                lambda c: c.execute(text("UPDATE alembic_version SET version_num = version_num"))
            )
            return store.dialect

    try:
        dialect = within(timeout, probe)
    except Exception as exc:
        return Check("lineage db", FAIL, f"{shown}: {type(exc).__name__}: {exc}", hint)
    return Check("lineage db", OK, f"{shown} ({dialect}) opens and accepts writes")


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _creatable(path: Path) -> tuple[Path, str]:
    """The nearest existing folder above `path`, and why the file could not be made there."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return folder, f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK):
        return folder, f"{folder} is not writable"
    return folder, ""


def check_ruff() -> Check:
    try:
        from ruff.__main__ import find_ruff_bin

        binary = find_ruff_bin()
    except Exception:
        binary = shutil.which("ruff")
    if not binary:
        return Check(
            "ruff",
            WARN,
            "no ruff binary: `kiln compile` and `kiln export` write unpolished modules",
            "pip install ruff",
        )
    return Check("ruff", OK, str(binary))


def check_graphviz() -> Check:
    dot = shutil.which("dot")
    if dot is None:
        return Check(
            "graphviz",
            WARN,
            "optional: `kiln graph --format svg` needs Graphviz's dot (mermaid and dot work)",
            "apt-get install graphviz (or brew install graphviz)",
        )
    return Check("graphviz", OK, dot)


def run_checks(
    *,
    scheduler: str | None = None,
    store: str | None = None,
    lineage_db: str | None = None,
    timeout: float = 10.0,
) -> list[Check]:
    """Every check, in the order `kiln doctor` prints them."""
    checks: list[Callable[[], Check]] = [
        check_python,
        check_nbkiln,
        check_labextension,
        check_server_extension,
        check_papermill_engine,
        check_kernelspec,
        lambda: check_dask(scheduler, timeout),
        lambda: check_store(store, timeout),
        lambda: check_lineage_db(lineage_db, timeout),
        check_ruff,
        check_graphviz,
    ]
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as exc:  # a broken check is itself a finding, never a crash
            name = getattr(check, "__name__", "check").removeprefix("check_")
            results.append(Check(name, FAIL, f"the check crashed: {type(exc).__name__}: {exc}"))
    return results
