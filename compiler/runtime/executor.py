"""Run one task inside a Dask worker with IPython semantics, and capture what its cells show.

One `InteractiveShell` lives in each worker process (workers run one task at a time: one thread
each); every task gets a fresh user namespace of setup names, parameter values and inputs. Each
cell's own source goes through `shell.run_cell`, so magics, `!cmd` and `display()` behave as in
Jupyter, and stdout/stderr, rich displays, the last expression's value and errors are recorded as
nbformat v4 output dicts.

Everything here runs on the worker; the functions take and return plain data (dicts, lists) so
the client never needs the values themselves.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from compiler.runtime.cache import store_at
from compiler.runtime.digest import InputCheck, value_digest
from compiler.runtime.monitor import TaskMonitor
from compiler.runtime.rebind import bind_to_namespace
from compiler.runtime.store_writes import should_defer, store_later, task_running

# -- errors injected into the task's thread -------------------------------------------------


class TaskTimeout(BaseException):
    """Raised inside a task that ran past its `timeout` (BaseException: `except Exception`
    in the notebook must not swallow it)."""

    message = "task exceeded its timeout"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.message


class WorkerMemoryExceeded(MemoryError):
    """Raised inside a task whose worker process is about to exceed its memory limit, before the
    nanny kills the whole worker; the client retries it on a worker with more memory."""

    message = "worker memory limit exceeded"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.message


class TaskFailed(Exception):
    """A task's code raised. Carries the task record: the error mapped to its notebook cell and
    line, and every cell's captured outputs up to the failure."""

    def __init__(self, record: dict[str, Any]):
        self.record = record
        super().__init__(str(self))  # short args: Dask logs and reprs stay readable

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.record,))

    def __str__(self) -> str:
        error = self.record.get("error") or {}
        where = "setup" if error.get("cell_index") is None else f"cell {error['cell_index']}"
        if error.get("line") is not None:
            where += f", line {error['line']}"
        return f"task {self.record.get('task')!r} failed at {where}: {error.get('ename')}: " + str(
            error.get("evalue")
        )


# -- output capture --------------------------------------------------------------------------


class OutputCollector:
    """The outputs of one cell, in the order they appeared, as nbformat v4 dicts."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, Any]] = []
        self._clear_on_next = False

    def _before_add(self) -> None:
        if self._clear_on_next:
            self.outputs.clear()
            self._clear_on_next = False

    def add_stream(self, name: str, text: str) -> None:
        if not text:
            return
        self._before_add()
        last = self.outputs[-1] if self.outputs else None
        if last and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text  # consecutive writes form one output, as in Jupyter
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def add(self, output: dict[str, Any]) -> None:
        self._before_add()
        self.outputs.append(output)

    def clear(self, wait: bool) -> None:
        if wait:
            self._clear_on_next = True
        else:
            self.outputs.clear()


class _StreamToCollector:
    """A text file that appends to the collector of the cell running now (sys.stdout and
    sys.stderr during a cell). Like a kernel's streams it is one object for the whole process:
    a logging handler made in one cell (logging.basicConfig) that keeps it writes into
    whichever cell logs later, not into a finished cell's outputs."""

    def __init__(self, name: str):
        self.name = name

    def write(self, text: str) -> int:
        _ACTIVE.add_stream(self.name, str(text))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


def jsonable_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """A mime bundle nbformat accepts: bytes (images) as base64 text, JSON types kept."""
    bundle: dict[str, Any] = {}
    for mime, value in data.items():
        if isinstance(value, bytes):
            bundle[mime] = base64.b64encode(value).decode("ascii")
        elif mime == "application/json" or mime.endswith("+json"):
            bundle[mime] = json.loads(json.dumps(value, default=repr))
        else:
            bundle[mime] = value if isinstance(value, str) else str(value)
    return bundle


_ACTIVE = OutputCollector()  # where the shell's display machinery writes right now
_STDOUT = _StreamToCollector("stdout")
_STDERR = _StreamToCollector("stderr")


def _make_shell_class() -> Any:
    # IPython is imported lazily so importing the runtime (on the client) stays fast.
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type

    class CapturingDisplayHook(DisplayHook):
        """The last expression's value becomes an execute_result instead of printed text."""

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict: Any, md_dict: Any = None) -> None:
            _ACTIVE.add(
                {
                    "output_type": "execute_result",
                    "data": jsonable_bundle(format_dict),
                    "metadata": dict(md_dict or {}),
                    "execution_count": None,
                }
            )

        def finish_displayhook(self) -> None:
            pass

    class CapturingDisplayPublisher(DisplayPublisher):
        """`display(...)` becomes a display_data output."""

        def publish(
            self,
            data: Any,
            metadata: Any = None,
            source: Any = None,
            *,
            transient: Any = None,
            update: bool = False,
            **kwargs: Any,
        ) -> None:
            _ACTIVE.add(
                {
                    "output_type": "display_data",
                    "data": jsonable_bundle(data),
                    "metadata": dict(metadata or {}),
                }
            )

        def clear_output(self, wait: bool = False) -> None:
            _ACTIVE.clear(wait)

    class KilnShell(InteractiveShell):
        displayhook_class = Type(CapturingDisplayHook)
        display_pub_class = Type(CapturingDisplayPublisher)

        def enable_gui(self, gui: Any = None) -> None:
            """`%matplotlib inline` (or agg, svg, any non-GUI backend) needs no event loop, as in
            ipykernel; the base class raises NotImplementedError for every backend. A GUI event
            loop (qt, tk, osx) cannot run on a Dask worker, which has no display."""
            if gui in (None, "inline", "agg", "svg", "pdf", "ps", "cairo", "template"):
                return
            from IPython.core.error import UsageError

            raise UsageError(
                f"%matplotlib {gui}: a GUI backend needs a display, and Kiln tasks run on Dask "
                "workers without one; use %matplotlib inline (figures appear in the output "
                "notebook) or savefig()"
            )

        def _showtraceback(self, etype: Any, evalue: Any, stb: Any) -> None:
            # Instead of printing the traceback to stdout, keep it as the cell's error output.
            _ACTIVE.add(
                {
                    "output_type": "error",
                    "ename": getattr(etype, "__name__", str(etype)),
                    "evalue": str(evalue),
                    "traceback": list(stb),
                }
            )

    return KilnShell


_SHELL: Any = None
_BASELINE_EXTENSIONS: set[str] = set()  # IPython extensions loaded when the shell was made
_BASELINE_NS: dict[str, Any] = {}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def get_shell() -> Any:
    """This worker process's shell, created on first use."""
    global _SHELL, _BASELINE_NS
    if _SHELL is None:
        from traitlets.config import Config

        # Figures show up as in Jupyter: matplotlib's inline backend (from matplotlib-inline,
        # which ipykernel brings) displays them after each cell; nothing is imported until the
        # notebook imports matplotlib itself.
        if _has_module("matplotlib_inline"):
            os.environ.setdefault("MPLBACKEND", _INLINE_BACKEND)
        config = Config()
        config.HistoryManager.enabled = False  # no sqlite history per worker
        config.InteractiveShell.cache_size = 0  # no Out[n] cache keeping old values alive
        config.InteractiveShell.colors = "nocolor"  # tracebacks read well in CLI and notebook
        _SHELL = _make_shell_class().instance(config=config)
        _BASELINE_NS = dict(_SHELL.user_ns)
        _BASELINE_EXTENSIONS.clear()
        _BASELINE_EXTENSIONS.update(_SHELL.extension_manager.loaded)
        _BASELINE_WARNING_FILTERS[:] = warnings.filters
        _BASELINE_LOGGING[:] = [logging.root.level, list(logging.root.handlers)]
    return _SHELL


_INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def _restore_inline_figures(shell: Any) -> None:
    """A task that called `matplotlib.use("Agg")` changed this worker's backend for every later
    task: put the inline one back, as a fresh kernel would have it (only if matplotlib was
    imported: never import it for a task that does not use it)."""
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is None or os.environ.get("MPLBACKEND") != _INLINE_BACKEND:
        return
    if matplotlib.get_backend() != _INLINE_BACKEND or not matplotlib.is_interactive():
        import matplotlib.pyplot as plt
        from IPython.core.pylabtools import activate_matplotlib
        from matplotlib_inline.backend_inline import configure_inline_support

        plt.close("all")
        # What `%matplotlib inline` does: the backend, interactive mode, the flush hook.
        activate_matplotlib(_INLINE_BACKEND)
        configure_inline_support(shell, _INLINE_BACKEND)


_BASELINE_WARNING_FILTERS: list[Any] = []


def _fresh_warnings() -> None:
    """Warnings as in a fresh kernel: the filters a task set (`warnings.filterwarnings(
    "ignore")`) are dropped, and a warning shown once by an earlier task on this worker is
    shown again (Python keeps "already shown" per process; a kernel is a new process)."""
    warnings.filters[:] = _BASELINE_WARNING_FILTERS  # type: ignore[index]  # a list at run time
    warnings._filters_mutated()  # type: ignore[attr-defined]  # invalidates the registries


_BASELINE_LOGGING: list[Any] = []  # the root logger's level and handlers before any task


def _fresh_logging() -> None:
    """The root logger as in a fresh kernel: a task's logging.basicConfig() must not make the
    next notebook's basicConfig() a no-op (its log lines went to the earlier task's handler)."""
    if not _BASELINE_LOGGING:
        return
    level, handlers = _BASELINE_LOGGING
    root = logging.root
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def fresh_namespace(shell: Any, names: Mapping[str, Any]) -> None:
    """Reset the user namespace to the shell's initial one plus `names` (faster than reset())."""
    _restore_inline_figures(shell)
    _fresh_warnings()
    _fresh_logging()
    # An extension an earlier task (or a replayed `%load_ext`) loaded on this worker is not
    # "already loaded" for this task: its own `%load_ext` loads it as a fresh kernel would.
    shell.extension_manager.loaded.intersection_update(_BASELINE_EXTENSIONS)
    ns = shell.user_ns
    ns.clear()
    ns.update(_BASELINE_NS)
    hist = shell.history_manager
    del hist.input_hist_parsed[1:]
    del hist.input_hist_raw[1:]
    hist.output_hist.clear()
    ns.update(names)


# -- watchdog: timeout, memory limit, peak memory -----------------------------------------------


def _async_raise(thread_id: int, exc_type: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )


class TaskGuard:
    """Watches the running task: samples the worker process's RSS (for the task's peak memory),
    stops the task past its timeout, and stops it before the worker would exceed its memory
    limit. Dask cannot kill a worker thread, so stopping means raising an exception inside that
    thread (PyThreadState_SetAsyncExc). The watching is done by one long-lived thread per worker
    process (`_Watchdog`): starting a thread per task would cost more than a trivial task."""

    def __init__(
        self,
        timeout: float | None,
        memory_threshold: int | None,
        cell_timeout: float | None = None,
    ):
        self.timeout = timeout
        # papermill's --execution-timeout: a limit on each cell, counted from `cell_started`.
        self.cell_timeout = cell_timeout
        self.cell_started = 0.0
        self.memory_threshold = memory_threshold
        self.peak_rss = 0
        self.rss_total = 0  # sum and count of the samples: the task's average memory
        self.rss_samples = 0
        self.fired: type[BaseException] | None = None
        self._lock = threading.Lock()
        self._active = False
        self._thread_id = 0
        self.started = 0.0

    def sample(self) -> int:
        rss = _WATCHDOG.rss()
        self._add(rss)
        return rss

    def _add(self, rss: int) -> None:
        self.peak_rss = max(self.peak_rss, rss)
        self.rss_total += rss
        self.rss_samples += 1

    @property
    def average_rss(self) -> int | None:
        return self.rss_total // self.rss_samples if self.rss_samples else None

    def check(self, rss: int) -> None:
        """Called by the watchdog thread with a fresh RSS sample."""
        self._add(rss)
        if self.timeout and time.monotonic() - self.started > self.timeout:
            message = f"task exceeded its timeout of {self.timeout}s"
            self._interrupt(type("TaskTimeout", (TaskTimeout,), {"message": message}))
        if self.cell_timeout and self.cell_started:
            if time.monotonic() - self.cell_started > self.cell_timeout:
                message = f"cell exceeded its execution timeout of {self.cell_timeout}s"
                self._interrupt(type("TaskTimeout", (TaskTimeout,), {"message": message}))
        if self.memory_threshold and rss > self.memory_threshold:
            message = (
                f"worker memory use passed {self.memory_threshold} bytes, close to its limit; "
                "the task will be retried with more memory"
            )
            self._interrupt(
                type("WorkerMemoryExceeded", (WorkerMemoryExceeded,), {"message": message})
            )

    def _interrupt(self, exc_type: type[BaseException]) -> None:
        with self._lock:
            if self._active and self.fired is None:
                self.fired = exc_type
                _async_raise(self._thread_id, exc_type)

    def __enter__(self) -> TaskGuard:
        self._thread_id = threading.get_ident()
        self.started = time.monotonic()
        self._active = True
        self.sample()
        _WATCHDOG.watch(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _WATCHDOG.watch(None)
        with self._lock:
            self._active = False
            if self.fired is not None:
                _async_raise(self._thread_id, None)  # drop it if not yet delivered
        self.sample()


class _Watchdog:
    """The per-process thread behind TaskGuard: sleeps while no task runs."""

    # Every wake-up takes the GIL from the task's thread; at 20 ms a pure-Python loop ran up to
    # 2x slower here. 100 ms is Dask's own memory-monitor interval.
    interval = 0.1
    idle_s = 2.0  # no task for this long: the thread parks until the next one

    def __init__(self) -> None:
        self._guard: TaskGuard | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._statm: int | None = None
        self._parked = False  # the thread waits for a task (no task since IDLE_S)

    def rss(self) -> int:
        # Twice per task: on Linux one pread of /proc/self/statm on a descriptor kept open
        # (psutil opens and parses the file on every call: ~1 ms per task on a busy machine).
        if self._statm is None:
            try:
                self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            except OSError:
                self._statm = -1
        if self._statm >= 0:
            try:
                return int(os.pread(self._statm, 64, 0).split()[1]) * _PAGE_SIZE
            except (OSError, ValueError, IndexError):
                pass
        if self._process is None:
            import psutil

            self._process = psutil.Process()
        try:
            return int(self._process.memory_info().rss)
        except Exception:
            return 0

    def watch(self, guard: TaskGuard | None) -> None:
        # Between tasks of a busy worker this is an assignment: the thread keeps polling at its
        # interval and is woken only when it parked (a condition notify per task cost as much
        # as the task's own bookkeeping).
        self._guard = guard
        if guard is None:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="kiln-watchdog", daemon=True)
            self._thread.start()
        if self._parked:
            with self._changed:
                self._changed.notify()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            guard = self._guard
            if guard is None:
                if time.monotonic() - idle_since > self.idle_s:
                    with self._changed:
                        self._parked = True
                        while self._guard is None:
                            self._changed.wait()
                        self._parked = False
                    continue
            else:
                idle_since = time.monotonic()
            time.sleep(self.interval)
            if guard is not None and guard is self._guard:
                guard.check(self.rss())


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_WATCHDOG = _Watchdog()


def memory_threshold_for(memory_limit: int | None) -> int | None:
    """RSS at which a task is stopped: below the nanny's terminate fraction, so the task fails
    with a MemoryError instead of the whole worker being killed."""
    if not memory_limit:
        return None
    import dask.config

    terminate = dask.config.get("distributed.worker.memory.terminate", 0.95) or 0.95
    return int(memory_limit * min(0.85, float(terminate) - 0.1))


def kill_worker_from_nanny(dask_worker: Any) -> int | None:
    """Run on a nanny (Client.run(nanny=True)): SIGKILL its worker process, whose task thread is
    stuck past its timeout; the nanny starts a fresh worker. Works even when the worker's own
    event loop is blocked."""
    import signal

    pid = getattr(getattr(dask_worker, "process", None), "pid", None)
    if pid:
        os.kill(pid, signal.SIGKILL)
    return pid


def exit_worker_process() -> str:
    """Run on a worker (Client.run) whose task thread is stuck past its timeout: the process
    exits a moment later, after answering, and its nanny starts a fresh one."""
    threading.Timer(0.2, os._exit, (75,)).start()
    return "exiting"


# -- helpers -----------------------------------------------------------------------------------


def _current_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _log_event(worker: Any, topic: str | None, message: dict[str, Any]) -> None:
    if worker is not None and topic:
        try:
            worker.log_event(topic, message)
        except Exception:  # events are progress information; never fail the task for one
            pass


def _log_cell_event(
    worker: Any, topic: str | None, payload: Mapping[str, Any], cell: Mapping[str, Any], kind: str
) -> None:
    """A cell started or finished (with its outputs so far): one small event per cell, sent
    only when the run asked for them (a scheduler round trip each)."""
    if topic:
        message = {"kind": kind, "key": payload["key"], "task": payload["task"], "cell": dict(cell)}
        _log_event(worker, topic, message)


_LOCAL_NAMES: dict[str, tuple[int, frozenset[str]]] = {}  # folder -> (its mtime, module names)


def _local_module_names(folder: str) -> frozenset[str]:
    """The module names a folder offers (`NAME.py`, `NAME/__init__.py`), listed again only when
    the folder's mtime changes (a file added, removed or renamed): one stat per task instead of
    a directory listing."""
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return frozenset()
    known = _LOCAL_NAMES.get(folder)
    if known is not None and known[0] == mtime:
        return known[1]
    local: set[str] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    local.add(entry.name[:-3])
                elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                    local.add(entry.name)
    except OSError:
        return frozenset()
    names = frozenset(local)
    _LOCAL_NAMES[folder] = (mtime, names)
    return names


def forget_local_modules(folder: str) -> None:
    """Forget modules imported from the notebook's folder (`helpers.py`, `mylib/`), so each task
    imports them afresh: a worker of a long-lived cluster must not run a helper as it was when
    an earlier run imported it (the cache key already follows the file). Only a module whose
    file is `FOLDER/NAME.py` or under `FOLDER/NAME/` counts: never a virtualenv's packages.
    This runs before every task, so it looks up the folder's own names in sys.modules and scans
    sys.modules (thousands of entries) only for a package of that folder that was imported."""
    local = _local_module_names(folder)
    imported = [name for name in local if name in sys.modules]
    if not imported:
        return
    tops = set(imported)
    imported += [name for name in sys.modules if "." in name and name.partition(".")[0] in tops]
    root = os.path.realpath(folder)
    for name in imported:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if not file:
            continue
        top = name.partition(".")[0]
        relative = os.path.relpath(os.path.realpath(file), root)
        if relative == f"{top}.py" or relative.startswith(top + os.sep):
            del sys.modules[name]


@contextlib.contextmanager
def _in_notebook_folder(payload: Mapping[str, Any]) -> Iterator[None]:
    """Relative paths resolve as in the notebook (cwd = its folder, or the run's working folder)
    and local imports from the notebook's own folder (`module_dir`, the same folder unless the
    run was given a working folder)."""
    folder = payload.get("notebook_dir")
    if not folder or not os.path.isdir(folder):
        yield
        return
    modules = str(payload.get("module_dir") or folder)
    forget_local_modules(modules)
    previous = os.getcwd()
    # Environment variables a cell sets (`%env`) are put back by `_isolated`, which every
    # caller wraps this in.
    os.chdir(folder)
    sys.path.insert(0, modules)
    try:
        yield
    finally:
        os.chdir(previous)
        with contextlib.suppress(ValueError):
            sys.path.remove(modules)


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """What one task changes in its worker process goes away with it, as if the next task (of
    this run or of another notebook's, on a long-lived cluster) had a fresh kernel: environment
    variables, sys.path, the working directory, matplotlib's rcParams and open figures, and
    what `%config` set on the shell's configurables (`InlineBackend.figure_formats`). The user
    namespace is reset by `fresh_namespace`. Costs two small dict copies per task (and one of
    rcParams' ~300 entries once the worker has imported matplotlib), and reading the shell's
    ~200 configurable traits (`_config_snapshot`)."""
    configured = _config_snapshot(_SHELL)
    environ = _environ_snapshot()
    path = list(sys.path)
    cwd = os.getcwd()
    matplotlib = sys.modules.get("matplotlib")
    rc = dict(matplotlib.rcParams) if matplotlib is not None else None
    try:
        yield
    finally:
        _restore_environ(environ)
        if sys.path != path:
            sys.path[:] = path
        if os.getcwd() != cwd:
            with contextlib.suppress(OSError):
                os.chdir(cwd)
        _reset_matplotlib(rc)
        _restore_config(_SHELL, configured)


_CONFIG_TRAITS: dict[type, tuple[str, ...]] = {}
_UNSET = object()


def _config_traits(configurable: Any) -> tuple[str, ...]:
    # Per class: `trait_names(config=True)` filters every trait's metadata on each call, and
    # was a third of a trivial task's time on the worker when asked twice per configurable per
    # task. (traitlets' add_traits makes a new class, so a class's names do not change.)
    kind = type(configurable)
    names = _CONFIG_TRAITS.get(kind)
    if names is None:
        names = _CONFIG_TRAITS[kind] = tuple(configurable.trait_names(config=True))
    return names


def _trait_values(configurable: Any) -> Any:
    """Name -> value as the object holds them (traitlets' own dict), without computing the
    defaults it has not used yet; a mapping that reads through the traits if there is none."""
    values = getattr(configurable, "_trait_values", None)
    if isinstance(values, dict):
        return values
    return {name: getattr(configurable, name) for name in _config_traits(configurable)}


def _config_snapshot(shell: Any) -> dict[int, tuple[Any, dict[str, Any]]]:
    """The configurable traits of what `%config` can set (the shell's configurables), by
    object: `%config` assigns values, so the values themselves need no copy."""
    if shell is None:
        return {}
    snapshot = {}
    for c in shell.configurables:
        values = _trait_values(c)
        snapshot[id(c)] = (c, {name: values.get(name, _UNSET) for name in _config_traits(c)})
    return snapshot


def _restore_config(shell: Any, saved: dict[int, tuple[Any, dict[str, Any]]]) -> None:
    """Put back what a task's `%config` changed, as a fresh kernel would have it. A configurable
    the task made (matplotlib's InlineBackend, on its first figure) goes back to its defaults.
    Setting a trait runs its observers, so `InlineBackend.figure_formats` re-registers the
    shell's figure formatters. A trait still holding the very object it held before is left
    alone without comparing values (most of them, in most tasks)."""
    if shell is None:
        return
    for c in list(shell.configurables):
        was = saved.get(id(c))
        before = was[1] if was is not None and was[0] is c else None
        now = _trait_values(c)
        for name in _config_traits(c):
            try:
                if before is not None:
                    value = before.get(name, _UNSET)
                    if now.get(name, _UNSET) is value:
                        continue
                    if value is _UNSET:  # not used before the task: its default
                        value = c.trait_defaults(name)
                else:
                    value = c.trait_defaults(name)
                if getattr(c, name) != value:
                    setattr(c, name, value)
            except Exception:  # a trait without a usable default: left as it is
                continue


def _environ_snapshot() -> dict[Any, Any]:
    # os.environ's own bytes mapping: copying through os.environ decodes every name and value
    # (it doubled a trivial task's time on the worker).
    data = getattr(os.environ, "_data", None)
    return dict(data) if isinstance(data, dict) else dict(os.environ)


def _restore_environ(saved: dict[Any, Any]) -> None:
    current = _environ_snapshot()
    if current == saved:
        return
    key = getattr(os.environ, "decodekey", lambda k: k)
    value = getattr(os.environ, "decodevalue", lambda v: v)
    for name in current.keys() - saved.keys():
        del os.environ[key(name)]
    for name, was in saved.items():
        if current.get(name) != was:
            os.environ[key(name)] = value(was)


def _reset_matplotlib(rc: dict[str, Any] | None) -> None:
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is None:
        return
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        pyplot.close("all")
    if rc is None:  # imported by this task: back to what a fresh import reads
        backend = matplotlib.rcParams["backend"]
        matplotlib.rc_file_defaults()
        dict.__setitem__(matplotlib.rcParams, "backend", backend)
    elif dict(matplotlib.rcParams) != rc:
        dict.update(matplotlib.rcParams, rc)  # values as they were, validated already


@contextlib.contextmanager
def _capturing(collector: OutputCollector) -> Iterator[None]:
    global _ACTIVE
    previous = (_ACTIVE, sys.stdout, sys.stderr)
    _ACTIVE = collector
    sys.stdout = _STDOUT
    sys.stderr = _STDERR
    try:
        yield
    finally:
        _ACTIVE, sys.stdout, sys.stderr = previous


def _error_line(exc: BaseException, code_name_prefix: str) -> int | None:
    """The line inside this cell where the error happened (innermost frame in the cell)."""
    if isinstance(exc, SyntaxError):
        return exc.lineno
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename.startswith(code_name_prefix):
            line = lineno
    return line


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TaskTimeout):
        return "timeout"
    if isinstance(exc, MemoryError):
        return "memory"
    return "error"


def describe_value(value: Any) -> dict[str, Any]:
    from dask.sizeof import sizeof

    kind = type(value)
    try:
        size = int(sizeof(value))
    except Exception:
        size = None
    info: dict[str, Any] = {"type": f"{kind.__module__}.{kind.__qualname__}", "size": size}
    summary = summarize_value(value)
    if summary:
        info["summary"] = summary
    return info


def summarize_value(value: Any) -> dict[str, Any]:
    """A short, JSON-able description for lineage: shape, dtype, columns, length."""
    summary: dict[str, Any] = {}
    try:
        shape = getattr(value, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
            summary["shape"] = list(shape)
        dtype = getattr(value, "dtype", None)
        if dtype is not None:
            summary["dtype"] = str(dtype)
        columns = getattr(value, "columns", None)
        if columns is not None and not callable(columns):
            summary["columns"] = [str(c) for c in list(columns)[:50]]
        if not summary and isinstance(value, list | tuple | dict | set | str | bytes):
            summary["len"] = len(value)
    except Exception:  # describing is best effort; the value itself is what matters
        return {}
    return summary


def _run_source(
    shell: Any, source: str, collector: OutputCollector, shown: list[Any] | None = None
) -> BaseException | None:
    """Run one cell; the exception it raised (already recorded as an error output) or None.
    `shown` gets the result the cell displayed (None if none), as the kernel's `_` has it."""
    with _capturing(collector):
        result = shell.run_cell(source, store_history=True, silent=False)
    if shown is not None:
        shown.append(result.result)
    error = result.error_before_exec or result.error_in_exec
    return error


# compile/dag.py OUTPUT_HISTORY_PREFIX: `_kiln_out_<execution count>_<cell index>` is the result
# that cell displayed, handed from its task to one that reads `_` or `Out[n]`.
_HISTORY_NAME = re.compile(r"_kiln_out_(\d+)_(\d+)")


def _bind_output_history(ns: dict[str, Any], inputs: Mapping[str, Any]) -> None:
    """The kernel's output history as a top-to-bottom run has it when the task starts: `Out`
    and `_<n>` hold each non-None result by execution count, `_`, `__`, `___` the last three."""
    history = sorted(
        (int(m.group(1)), value)
        for name, value in inputs.items()
        if (m := _HISTORY_NAME.fullmatch(name)) and value is not None
    )
    if not history and not any(_HISTORY_NAME.fullmatch(n) for n in inputs):
        return
    ns["Out"] = ns["_oh"] = dict(history)
    for n, value in history:
        ns[f"_{n}"] = value
    last = [value for _, value in history[-3:]]
    for name, value in zip(("___", "__", "_"), [""] * (3 - len(last)) + last, strict=True):
        ns[name] = value


def _shown(ns: dict[str, Any], value: Any) -> None:
    """A cell of this task displayed `value`: `_` moves on, as in the kernel (whose own cache
    is off on workers, InteractiveShell.cache_size = 0)."""
    if value is None:
        return
    ns["___"], ns["__"], ns["_"] = ns.get("__", ""), ns.get("_", ""), value


# -- the task --------------------------------------------------------------------------------


def execute_task(payload: dict[str, Any], *upstream_outcomes: dict[str, Any]) -> dict[str, Any]:
    """Run one task's cells; return {"values": outputs, "record": what happened}.

    `payload` is plain data built by the runner (see runner.task_payload); `upstream_outcomes`
    are the outcomes of the tasks that produce its inputs, resolved by Dask on this worker.
    Raises TaskFailed (carrying the record) when a cell raises.
    """
    with task_running():  # large outputs' writes wait for a quiet moment (store_writes.py)
        return _execute_task(payload, upstream_outcomes)


def _execute_task(
    payload: dict[str, Any], upstream_outcomes: tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    started = time.time()
    cpu_started = _cpu_seconds()
    worker = _current_worker()
    address = getattr(worker, "address", None)
    memory_limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    topic = payload.get("event_topic")
    _log_event(
        worker,
        topic,
        {
            "kind": "running",
            "key": payload["key"],
            "task": payload["task"],
            "attempt": payload["attempt"],
            "address": address,
        },
    )

    inputs = {
        name: upstream_outcomes[position]["values"][name]
        for name, position in payload["inputs"].items()
    }
    injected = {**payload["parameters"], **inputs}
    shell = get_shell()
    fresh_namespace(shell, injected)
    monitor = TaskMonitor(payload)  # kiln.log_metric, metric values, input profiles

    cells = [
        {"cell_id": c["cell_id"], "cell_index": c["cell_index"], "outputs": [], "status": "not_run"}
        for c in payload["cells"]
    ]
    error: dict[str, Any] | None = None
    guard = TaskGuard(
        payload.get("timeout"), memory_threshold_for(memory_limit), payload.get("cell_timeout")
    )
    # papermill's engine follows each cell (saves, --log-output); `kiln run` needs only tasks.
    cell_topic = topic if payload.get("cell_events") else None
    current: dict[str, Any] | None = None  # the cell running now, for errors raised between cells
    changed_inputs: list[dict[str, Any]] = []  # received values changed in place, where
    check: InputCheck | None = None
    with _isolated(), _in_notebook_folder(payload):
        try:
            with guard, monitor.watching():
                if payload.get("setup", "").strip():
                    setup_out = OutputCollector()
                    exc = _run_source(shell, payload["setup"], setup_out)
                    if exc is not None:
                        error = _error_record(exc, None, setup_out, "<ipython-input-none-")
                        if cells:  # show it where the user looks: the task's first cell
                            cells[0]["outputs"] = [setup_out.outputs[-1]]
                            cells[0]["status"] = "error"
                    shell.user_ns.update(injected)  # parameters and inputs win over setup
                bind_to_namespace(shell.user_ns, list(inputs))
                _bind_output_history(shell.user_ns, inputs)
                # Results this task's cells display that a later task reads as `_`/`Out[n]`.
                history_outputs = {
                    int(m.group(2)): name
                    for name in payload["outputs"]
                    if (m := _HISTORY_NAME.fullmatch(name))
                }
                # Inputs the compiler saw no change to: digested now and after each cell, so a
                # change it could not see (an unknown method, a library call) is reported.
                watched = {n: v for n, v in inputs.items() if n not in payload["outputs"]}
                check = InputCheck(watched, payload.get("input_digests"))
                for spec_cell, cell in zip(payload["cells"], cells, strict=True):
                    if error is not None:
                        break
                    if current is not None and current.get("status") == "ok":
                        changed_inputs += check.after_cell(current, last=False)
                    current = cell
                    monitor.in_cell(spec_cell["cell_index"])
                    collector = OutputCollector()
                    cell["outputs"] = collector.outputs
                    prefix = f"<ipython-input-{shell.execution_count}-"
                    cell["started"] = time.time()
                    _log_cell_event(worker, cell_topic, payload, cell, "cell_started")
                    cell_started = guard.cell_started = time.monotonic()
                    shown: list[Any] = []
                    exc = _run_source(shell, spec_cell["source"], collector, shown)
                    guard.cell_started = 0.0
                    if exc is None and shown:
                        _shown(shell.user_ns, shown[0])
                        if spec_cell["cell_index"] in history_outputs:
                            shell.user_ns[history_outputs[spec_cell["cell_index"]]] = shown[0]
                    cell["duration"] = time.monotonic() - cell_started
                    cell["status"] = "error" if exc is not None else "ok"
                    if exc is not None:
                        error = _error_record(exc, spec_cell, collector, prefix)
                    _log_cell_event(worker, cell_topic, payload, cell, "cell_finished")
                if current is not None and error is None:
                    changed_inputs += check.after_cell(current, last=True)
                current = None
        except (TaskTimeout, MemoryError) as exc:
            # Delivered outside the cell's own code (between cells, in IPython internals).
            where = current or (cells[-1] if cells else None)
            collector = OutputCollector()
            collector.add(_error_output(exc))
            if where is not None:
                where["outputs"].extend(collector.outputs)
                where["status"] = "error"
            spec_cell = next(
                (c for c in payload["cells"] if where and c["cell_id"] == where["cell_id"]), None
            )
            error = _error_record(exc, spec_cell, collector, "<ipython-input-none-")

        values: dict[str, Any] = {}
        if error is None:
            missing = [name for name in payload["outputs"] if name not in shell.user_ns]
            if missing:
                last = payload["cells"][-1] if payload["cells"] else None
                error = {
                    "cell_index": last["cell_index"] if last else None,
                    "cell_id": last["cell_id"] if last else None,
                    "line": None,
                    "ename": "NameError",
                    "evalue": f"task {payload['task']!r} did not define {', '.join(missing)}, "
                    "which downstream tasks read",
                    "traceback": [],
                    "reason": "error",
                    "where": "outputs",
                }
            else:
                values = {name: shell.user_ns[name] for name in payload["outputs"]}
                # A received value changed in place, still bound to its name: handed on as an
                # output like any other, since later cells of the notebook see the change (the
                # run re-plans their inputs, state.py `_reexport`).
                for change in changed_inputs:
                    name = change["name"]
                    if name not in values and shell.user_ns.get(name) is inputs.get(name):
                        values[name] = inputs[name]
        monitored = monitor.collect(shell.user_ns, values) if error is None else {}
        fresh_namespace(shell, {})  # drop references so memory is freed between tasks

    record: dict[str, Any] = {
        "task": payload["task"],
        "key": payload["key"],
        "attempt": payload["attempt"],
        "worker": address,
        "memory_limit": memory_limit,
        "started": started,
        "duration": time.time() - started,
        "peak_memory": guard.peak_rss or None,
        # Process CPU time: workers run one task at a time, so this is the task's (plus a
        # little of Dask's own threads); the watchdog's 100 ms RSS samples give the average.
        "cpu_seconds": _cpu_seconds() - cpu_started,
        "average_memory": guard.average_rss,
        "cells": cells,
        "error": error,
        "outputs": {},
        "changed_inputs": changed_inputs,
        # Digests as the inputs arrived (state.py compares them with their producers'), and
        # what the input-change check cost.
        "input_digests": check.arrival if check is not None else {},
        "check_seconds": check.seconds if check is not None else 0.0,
        **monitored,
    }
    if error is not None:
        _log_event(worker, topic, {"kind": "failed", **record})
        raise TaskFailed(record)

    record["outputs"], digest_seconds, deferred = _describe_and_store(
        values, payload.get("store_url"), on_worker=worker is not None
    )
    if deferred:
        record["deferred_writes"] = deferred  # the worker writes its manifest (store_writes.py)
    record["check_seconds"] += digest_seconds  # its readers' check starts from these digests
    _log_event(worker, topic, {"kind": "record", **record})
    return {"values": values, "record": record}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (`!cmd` cells)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def evaluate_parameters(payload: dict[str, Any]) -> dict[str, Any]:
    """Evaluate parameter defaults that are expressions (`run_date = date.today()`), once per
    run, in a worker like any task: the setup code they read, then the parameters cell.
    Returns {name: value}; raises ValueError naming the line that failed or the value that
    cannot travel to the tasks."""
    import pickle

    shell = get_shell()
    fresh_namespace(shell, {})
    try:
        with _isolated(), _in_notebook_folder(payload):
            for where, source in (
                ("setup code", payload.get("setup", "")),
                ("parameters cell", payload.get("source", "")),
            ):
                if not source.strip():
                    continue
                prefix = f"<ipython-input-{shell.execution_count}-"
                exc = _run_source(shell, source, OutputCollector())
                if exc is not None:
                    line = _error_line(exc, prefix)
                    at = f", line {line}" if line is not None else ""
                    raise ValueError(
                        f"the {where}{at} failed while computing parameter defaults: "
                        f"{type(exc).__name__}: {exc}"
                    )
            values = {name: shell.user_ns.get(name) for name in payload["names"]}
        for name, value in values.items():
            try:
                pickle.dumps(value)
            except Exception as exc:
                raise ValueError(
                    f"parameter {name!r}: its computed default ({type(value).__name__}) cannot "
                    f"be sent to the tasks: {exc}; pass a value with -p"
                ) from None
        return values
    finally:
        fresh_namespace(shell, {})


def _describe_and_store(
    values: Mapping[str, Any], store_url: str | None, *, on_worker: bool
) -> tuple[dict[str, Any], float, list[str]]:
    """Each output's description and store digest, the seconds its content digests took, and
    the digests still being written (a large value on a worker: store_writes.py)."""
    described: dict[str, Any] = {}
    store = store_at(store_url) if store_url else None
    seconds = 0.0
    deferred: list[str] = []
    for name, value in values.items():
        info = describe_value(value)
        # The content digest compares a task's value with a top-to-bottom run (`kiln verify`)
        # and is where its readers' input-change check starts; the store's digest is of the
        # stored bytes.
        deferred_write = store is not None and on_worker and should_defer(value)
        started = time.perf_counter()
        # A large value stored later is hashed twice now, for both digests: the content digest
        # is taken in another thread meanwhile (xxhash lets go of the GIL), 500 MB: ~0.03 s for
        # both instead of ~0.043 s, where a core is free.
        content = _digest_in_thread(value) if deferred_write else None
        if content is None:
            info["content_digest"] = value_digest(value)
            seconds += time.perf_counter() - started
        info["digest"] = None
        if store is not None and store_url is not None:
            try:
                if deferred_write:
                    # Named now, written after the task returned (its reader need not wait).
                    try:
                        info["digest"], info["stored_bytes"] = store.value_digest(value)
                    finally:
                        if content is not None:
                            info["content_digest"] = content.result()
                            seconds += time.perf_counter() - started
                    if not store.has_artifact(info["digest"]):
                        store_later(store_url, value, info["digest"])
                        deferred.append(info["digest"])
                else:
                    info["digest"], info["stored_bytes"] = store.put_value(value)
            except Exception as exc:  # unpicklable values still flow in memory, uncached
                info["store_error"] = f"{type(exc).__name__}: {exc}"
        described[name] = info
    return described, seconds, deferred


_DIGESTS: ThreadPoolExecutor | None = None


def _digest_in_thread(value: Any) -> Future[str | None]:
    global _DIGESTS
    if _DIGESTS is None:
        _DIGESTS = ThreadPoolExecutor(1, thread_name_prefix="kiln-digest")
    return _DIGESTS.submit(value_digest, value)


def _error_output(exc: BaseException) -> dict[str, Any]:
    return {
        "output_type": "error",
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": traceback.format_exception(exc),
    }


def _shown_as_usage_error(exc: BaseException, collector: OutputCollector) -> bool:
    if type(exc).__name__ != "UsageError":
        return False
    return any(
        o["output_type"] == "stream" and o["name"] == "stderr" and "UsageError" in o["text"]
        for o in collector.outputs
    )


def _error_record(
    exc: BaseException,
    spec_cell: Mapping[str, Any] | None,
    collector: OutputCollector,
    code_name_prefix: str,
) -> dict[str, Any]:
    shown = [o for o in collector.outputs if o["output_type"] == "error"]
    if not shown and _shown_as_usage_error(exc, collector):
        # A bad magic: IPython prints "UsageError: ..." to stderr and, in Jupyter, the cell
        # gets no error output; the run still records it as the cell's error.
        shown = [{"traceback": [f"UsageError: {exc}"]}]
    elif not shown:
        shown = [_error_output(exc)]
        collector.add(shown[0])
    return {
        "cell_index": spec_cell["cell_index"] if spec_cell else None,
        "cell_id": spec_cell["cell_id"] if spec_cell else None,
        "line": _error_line(exc, code_name_prefix),
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": shown[-1]["traceback"],
        "reason": _error_kind(exc),
        "where": "cell" if spec_cell else "setup",
    }
