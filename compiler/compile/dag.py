"""The pipeline IR: tasks built from cell analyses, joined by data flow and `after:` edges.

Pure functions over the frozen records of `analysis.py`; nothing is parsed or executed here.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from compiler.compile.analysis import (
    BUILTIN_NAMES,
    CellAnalysis,
    FunctionSummary,
    NameEvent,
    Statement,
    analyse_cell,
)
from compiler.compile.effects import call_effects
from compiler.compile.metrics import Monitoring, pipeline_monitoring
from compiler.compile.notebook import Cell, Notebook
from compiler.compile.tags import (
    METRICS,
    PARAMETERS,
    SETUP,
    SKIP,
    CellTags,
    parse_cell_tags,
    python_name,
)
from compiler.model.diagnostics import Diagnostic
from compiler.model.hashing import short_digest
from compiler.model.validation import task_name_from


@dataclass(frozen=True)
class ParameterDef:
    name: str
    default: Any
    literal: bool


@dataclass(frozen=True)
class SetupStatement:
    cell: Cell
    statement: Statement
    reads: tuple[NameEvent, ...]  # immediate and deferred reads of the statement


@dataclass
class Task:
    name: str
    cells: list[CellAnalysis]
    tags: CellTags  # tags of the task's first cell (policies live there)
    after: list[str] = field(default_factory=list)
    # Filled by the fold over the cells' events:
    reads: dict[str, NameEvent] = field(default_factory=dict)  # external names, first use
    binds: list[str] = field(default_factory=list)  # names later tasks may read from this one
    mutated: list[str] = field(default_factory=list)  # received names the task changes in place
    # Filled by resolution:
    inputs: dict[str, str] = field(default_factory=dict)
    parameters: list[str] = field(default_factory=list)
    setup: list[SetupStatement] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    reads_files: list[str] = field(default_factory=list)
    writes_files: list[str] = field(default_factory=list)
    version: str = ""
    # Filled by the notebook-order pass over events (expand_events):
    events: list[NameEvent] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # names `del` unbinds for later tasks
    opaque: list[NameEvent] = field(default_factory=list)  # binds names nobody can see
    order_after: list[str] = field(default_factory=list)  # order-only edges (no value flows)
    prev_outputs: list[NameEvent] = field(default_factory=list)  # reads of `_`, `Out[n]`


@dataclass
class Pipeline:
    name: str
    notebook: Notebook
    parameters: list[ParameterDef]
    parameters_source: str
    tasks: list[Task]  # topological order
    diagnostics: list[Diagnostic]
    version: str = ""
    # Setup code that parameter defaults computed at run time read (`import datetime`, ...).
    parameters_setup: str = ""
    monitoring: Monitoring = field(default_factory=Monitoring)  # metrics, checks, drift

    @property
    def computed_parameters(self) -> list[str]:
        """Parameters whose default is an expression, evaluated once when a run starts."""
        return [p.name for p in self.parameters if not p.literal]


def short_hash(payload: Any) -> str:
    return short_digest(payload)


def _diag(
    severity: str,
    code: str,
    message: str,
    cell: Cell | None = None,
    line: int | None = None,
    col: int | None = None,
) -> Diagnostic:
    return Diagnostic(
        severity,  # type: ignore[arg-type]
        code,
        message,
        cell.index if cell else None,
        cell.id if cell else None,
        line,
        col,
    )


# --- 1. cells -> roles and tasks -----------------------------------------------------------------


@dataclass
class _Unit:
    """A run of the notebook in order: a setup cell, the parameters cell, or a task."""

    kind: str  # "setup" | "parameters" | "task"
    cells: list[CellAnalysis]
    task: Task | None = None


def group_cells(notebook: Notebook) -> tuple[list[_Unit], list[Diagnostic]]:
    diagnostics: list[Diagnostic] = []
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    tagged = [(c, parse_cell_tags(c)) for c in code_cells]
    for cell, tags in tagged:
        for p in tags.problems:
            diagnostics.append(
                _diag(
                    p.severity,
                    "bad-tag" if p.severity == "error" else "unknown-tag",
                    p.message,
                    cell,
                )
            )
    has_tasks = any(t.task for _, t in tagged)
    units: list[_Unit] = []
    current: Task | None = None
    seen_names: dict[str, tuple[Cell, str]] = {}
    for cell, tags in tagged:
        if tags.role in (SKIP, METRICS):  # the metrics cell is read by metrics.py, not run
            continue
        if not cell.source.strip() and not tags.task:
            continue  # an empty cell that names a task still starts it
        analysis = analyse_cell(cell)
        owner = tags.task or (current.name if current else None)
        if not has_tasks:
            owner = notebook.name
        owner = None if tags.role else owner
        diagnostics.extend(_in_task(d, owner, tags.role) for d in analysis.diagnostics)
        if tags.role == SETUP:
            units.append(_Unit("setup", [analysis]))
            continue
        if tags.role == PARAMETERS:
            units.append(_Unit("parameters", [analysis]))
            continue
        if not has_tasks:
            if current is None:
                current = Task(task_name_from(notebook.name), [], tags)
                units.append(_Unit("task", current.cells, current))
            current.cells.append(analysis)
            continue
        if tags.task:
            key = python_name(tags.task)  # 'a-b' and 'a_b' would be one function in tasks.py
            if key in seen_names:
                first, first_name = seen_names[key]
                same = "" if first_name == tags.task else f" as {first_name!r} (one Python name)"
                diagnostics.append(
                    _diag(
                        "error",
                        "duplicate-task",
                        f"task {tags.task!r} is already defined{same} in cell {first.index}",
                        cell,
                    )
                )
            seen_names[key] = (cell, tags.task)
            current = Task(tags.task, [analysis], tags, after=list(tags.after))
            units.append(_Unit("task", current.cells, current))
        elif current is None:
            diagnostics.append(
                _diag(
                    "info",
                    "before-first-task",
                    "cell runs before the first task: treated as setup",
                    cell,
                )
            )
            units.append(_Unit("setup", [analysis]))
        else:
            current.cells.append(analysis)
            current.after.extend(a for a in tags.after if a not in current.after)
    return units, diagnostics


def _in_task(diag: Diagnostic, task: str | None, role: str | None) -> Diagnostic:
    """A cell's own diagnostic (a syntax error) with the task or role the cell belongs to."""
    from dataclasses import replace

    if task:
        return replace(diag, message=f"task {task!r}: {diag.message}")
    if role:
        return replace(diag, message=f"{role} cell: {diag.message}")
    return diag


# --- 2. notebook-order effects, then the per-task fold of name events ---------------------------


class _Aliases:
    """Names that may share an object: `b = a`, `combine = [train, test]`, `for d in combine`,
    `fig, ax = plt.subplots()`. Changing one in place may change them all."""

    def __init__(self) -> None:
        self.group: dict[str, set[str]] = {}

    def of(self, name: str) -> set[str]:
        return self.group.get(name) or {name}

    def leave(self, name: str) -> None:
        members = self.group.pop(name, None)
        if members is not None:
            members.discard(name)
            if len(members) == 1:
                self.group.pop(next(iter(members)), None)

    def join(self, name: str, sources: Iterable[str]) -> None:
        merged = set(self.of(name))
        for source in sources:
            merged |= self.of(source)
        if len(merged) > 1:
            for member in merged:
                self.group[member] = merged


class _EffectsWalk:
    """The notebook-order state behind `expand_events`: imports, notebook functions, aliases."""

    def __init__(self) -> None:
        self.imported: dict[str, str] = {}
        self.functions: dict[str, FunctionSummary] = {}
        self.aliases = _Aliases()
        self.out: list[NameEvent] = []
        self.cell: Cell | None = None

    def emit(self, kind: str, name: str, ev: NameEvent, weak: bool, **extra: Any) -> None:
        self.out.append(
            _CellEvent(kind, name, ev.line, ev.col, ev.stmt, weak, cell=self.cell, **extra)
        )

    def mutate(self, name: str, ev: NameEvent, weak: bool) -> None:
        if name in self.imported:
            return  # calls on a module never change the module
        group = self.aliases.of(name)
        for member in sorted(group):
            if member not in self.imported:
                self.emit("mutate", member, ev, weak, sources=tuple(sorted(group)))

    def use_function(
        self, summary: FunctionSummary, ev: NameEvent, called: bool, seen: set[int] | None = None
    ) -> None:
        seen = set() if seen is None else seen
        if id(summary) in seen:
            return
        seen.add(id(summary))
        for name, in_branch in summary.reads:
            # A function passed on or stored (`df.apply(f)`) may never be called: its reads
            # are definite only where it is called, and outside the body's branches.
            self.emit("read", name, ev, in_branch or not called or ev.weak)
            inner = self.functions.get(name)
            if inner is not None:
                self.use_function(inner, ev, called and not in_branch, seen)
        for name in summary.writes:
            self.emit("def", name, ev, True)
            self.imported.pop(name, None)
            self.aliases.leave(name)
        for name in summary.mutates:
            if name not in summary.params:
                self.mutate(name, ev, True)

    def event(self, ev: NameEvent) -> None:
        kind, name = ev.kind, ev.name
        assert self.cell is not None
        if kind == "def":
            if ev.module:
                self.imported[name] = ev.module
            elif not ev.weak:
                self.imported.pop(name, None)
            if ev.summary is not None:
                self.functions[name] = ev.summary
            elif not ev.weak:
                self.functions.pop(name, None)
            if ev.sources != (name,) and not ev.weak:
                self.aliases.leave(name)
            self.out.append(_with_cell(ev, self.cell))
        elif kind == "alias":
            self.aliases.join(name, ev.sources)
        elif kind == "read":
            self.out.append(_with_cell(ev, self.cell))
            summary = self.functions.get(name)
            if summary is not None:
                self.use_function(summary, ev, ev.called)
        elif kind == "call" and ev.call is not None:
            changed, called = call_effects(ev.call, self.imported, self.functions.get)
            for changed_name in dict.fromkeys(changed):
                self.mutate(changed_name, ev, ev.weak)
            for summary in called[1:]:  # the first is the callee: its read came before
                self.use_function(summary, ev, True)
        elif kind == "mutate":
            self.mutate(name, ev, ev.weak)
        elif kind == "del":
            self.out.append(_with_cell(ev, self.cell))
            self.aliases.leave(name)
            self.functions.pop(name, None)
            self.imported.pop(name, None)
        else:  # deferred, fn-free, opaque, prev-output
            self.out.append(_with_cell(ev, self.cell))


def expand_events(units: list[_Unit]) -> None:
    """Walk the notebook in order and give each task its events as they act on the namespace:
    calls judged by the effects table, changes spread over aliases, and notebook functions' free
    names read (and their globals bound or changed) where the function is used, not defined."""
    walk = _EffectsWalk()
    for unit in units:
        for analysis in unit.cells:
            walk.out, walk.cell = [], analysis.cell
            for ev in analysis.events:
                walk.event(ev)
            if unit.task is not None:
                unit.task.events.extend(walk.out)


def fold_task_events(task: Task) -> None:
    """Sequential semantics inside a task: what it reads from outside and what it leaves bound."""
    local: set[str] = set()
    binds: list[str] = []
    mutated: list[str] = []
    reads: dict[str, NameEvent] = {}
    deferred: list[NameEvent] = []
    deletes: list[str] = []
    opaque: list[NameEvent] = []
    prev_outputs: list[NameEvent] = []

    def need(ev: NameEvent, kind: str | None = None) -> None:
        first = reads.get(ev.name)
        if kind is not None:
            ev = _CellEvent(kind, ev.name, ev.line, ev.col, ev.stmt, True, cell=_event_cell(ev))
        if first is None or (first.weak and not ev.weak):
            reads[ev.name] = ev

    for ev in task.events:
        if ev.kind == "read":
            if ev.name not in local:
                need(ev)
        elif ev.kind == "def":
            if ev.name not in local:
                if ev.weak or ev.sources == (ev.name,):
                    # A binding that may not happen joins the one before it: the task takes the
                    # earlier value in and hands on whichever it ends with.
                    need(ev, "join")
                local.add(ev.name)
                if ev.name in deletes:
                    deletes.remove(ev.name)
                if ev.name not in binds:
                    binds.append(ev.name)
        elif ev.kind == "mutate":
            if ev.name not in local:
                need(ev, "join")
                if ev.name not in mutated:
                    mutated.append(ev.name)
        elif ev.kind == "del":
            local.discard(ev.name)
            if ev.name in binds:
                binds.remove(ev.name)
            if ev.name in mutated:
                mutated.remove(ev.name)
            if ev.name not in deletes:
                deletes.append(ev.name)
        elif ev.kind == "deferred":
            deferred.append(ev)
        elif ev.kind == "opaque":
            opaque.append(ev)
        elif ev.kind == "prev-output":
            prev_outputs.append(ev)
    for ev in deferred:
        if ev.name not in local and ev.name not in reads:
            reads[ev.name] = ev
    task.reads = reads
    task.binds = binds
    task.mutated = mutated
    task.deletes = deletes
    task.opaque = opaque
    task.prev_outputs = prev_outputs


@dataclass(frozen=True)
class _CellEvent(NameEvent):
    cell: Cell | None = None


def _with_cell(ev: NameEvent, cell: Cell) -> NameEvent:
    return _CellEvent(
        ev.kind,
        ev.name,
        ev.line,
        ev.col,
        ev.stmt,
        ev.weak,
        ev.call,
        ev.summary,
        ev.sources,
        ev.module,
        ev.called,
        ev.probe,
        cell=cell,
    )


def _event_cell(ev: NameEvent) -> Cell | None:
    return getattr(ev, "cell", None)


# --- 3. parameters -----------------------------------------------------------------------------


def parameter_defs(analysis: CellAnalysis) -> tuple[list[ParameterDef], list[Diagnostic]]:
    params: list[ParameterDef] = []
    diagnostics: list[Diagnostic] = []
    try:
        tree = ast.parse(analysis.python)
    except SyntaxError:
        return params, diagnostics
    for stmt in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        for target in targets:
            if not isinstance(target, ast.Name) or value is None:
                continue
            try:
                default, literal = ast.literal_eval(value), True
                # The spec is JSON and versions hash it: a set (its order depends on the hash
                # seed), bytes or a complex number has no stable JSON form.
                json.dumps(default, allow_nan=False)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                default, literal = None, False
                diagnostics.append(
                    _diag(
                        "warning",
                        "parameter-computed",
                        f"parameter {target.id!r} has no literal default: it is computed once "
                        "when each run starts, and tasks that read it rerun when its value "
                        "changes",
                        analysis.cell,
                        stmt.lineno,
                        stmt.col_offset + 1,
                    )
                )
            params.append(ParameterDef(target.id, default, literal))
    return params, diagnostics


# --- 4. resolution: inputs, parameters, setup, edges ---------------------------------------------


# What a setup statement needs wherever it is replayed: its reads and its functions' free names.
_SETUP_READS = ("read", "deferred", "fn-free")


def _setup_statements(
    units: list[_Unit], param_names: frozenset[str] = frozenset()
) -> dict[int, list[SetupStatement]]:
    """Setup statements by the index of their unit, each with the names it reads.

    A parameters cell contributes the statements that bind something other than parameters
    (`import datetime`, `low, high = 0, 10`, a helper `def`): the kernel runs that cell, so
    what it binds is there for later cells, as in papermill."""
    out: dict[int, list[SetupStatement]] = {}
    for i, unit in enumerate(units):
        if unit.kind not in ("setup", "parameters"):
            continue
        analysis = unit.cells[0]
        by_stmt: dict[int, list[NameEvent]] = {}
        for ev in analysis.events:
            if ev.kind in _SETUP_READS:
                by_stmt.setdefault(ev.stmt, []).append(_with_cell(ev, analysis.cell))
        out[i] = [
            SetupStatement(analysis.cell, stmt, tuple(by_stmt.get(j, ())))
            for j, stmt in enumerate(analysis.statements)
            if unit.kind == "setup" or (stmt.defs and not set(stmt.defs) & param_names)
        ]
    return out


@dataclass
class _Opaque:
    """A statement that binds names the compiler cannot see (`%run x.py`, `exec(...)`)."""

    event: NameEvent
    task: Task | None
    setup: SetupStatement | None
    names: list[str] = field(default_factory=list)  # the reads it was taken to provide


@dataclass
class _Resolution:
    """The state of the notebook-order walk: what each name is bound to at this point."""

    # name -> ("task", task) | ("param", None) | ("setup", SetupStatement) | ("deleted", task)
    bindings: dict[str, tuple[str, Any]] = field(default_factory=dict)
    opaque: list[_Opaque] = field(default_factory=list)
    # Statements in task cells that change process state, replayed before every later task.
    state: list[SetupStatement] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)  # task name -> notebook position
    tasks: dict[str, Task] = field(default_factory=dict)  # by name
    # (name, producing task) -> tasks that received that value, in notebook order
    readers: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    order: dict[int, tuple[int, int]] = field(default_factory=dict)  # setup statement order
    # Every code cell so far, in notebook order, with its task (None: setup, parameters): where
    # `_` and `Out[n]` come from in a top-to-bottom run.
    cells: list[tuple[CellAnalysis, Task | None]] = field(default_factory=list)


# A displayed result handed on to a task that reads `_` or `Out[n]`: `_kiln_out_<n>_<cell>`,
# n the cell's execution count in a top-to-bottom run (runtime/executor.py binds the history).
OUTPUT_HISTORY_PREFIX = "_kiln_out_"
_SURELY_SHOWN = (
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.BoolOp,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.Set,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.JoinedStr,
)


def _displayed(analysis: CellAnalysis) -> tuple[bool, bool]:
    """(shows a result, surely not None): the cell ends in an expression not silenced by `;`.
    A call may return None (which the kernel does not keep); `print(...)` surely does."""
    try:
        tree = ast.parse(analysis.body_python)
    except (SyntaxError, ValueError):
        return False, False
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False, False
    if analysis.cell.source.rstrip().endswith(";"):
        return False, False
    value = tree.body[-1].value
    if isinstance(value, ast.Call):
        name = value.func.id if isinstance(value.func, ast.Name) else None
        return name not in ("print", "display", "exec"), False
    if isinstance(value, ast.Constant):
        return value.value is not None, value.value is not None
    return True, isinstance(value, _SURELY_SHOWN)


def _output_history_inputs(task: Task, state: _Resolution, diagnostics: list[Diagnostic]) -> None:
    """A task reading `_`, `__`, `___`, `_<n>` or `Out[...]` receives the results the cells
    before it displayed, from their tasks: the cells up to the third surely shown result for
    `_`, the cell with that execution count for `_<n>`, every one for `Out`."""
    first = min(a.cell.index for a in task.cells)
    shown: list[tuple[int, CellAnalysis, Task | None, bool]] = []
    count = 0
    for analysis, owner in state.cells:
        if analysis.cell.index >= first:
            break
        if not analysis.cell.source.strip():
            continue  # Jupyter does not execute an empty cell: no execution count
        count += 1
        displays, sure = _displayed(analysis)
        if displays:
            shown.append((count, analysis, owner, sure))
    wanted: dict[int, tuple[CellAnalysis, Task | None]] = {}
    names = {ev.name for ev in task.prev_outputs}
    if "Out" in names:
        wanted.update((n, (a, o)) for n, a, o, _ in shown)
    for name in names:
        if _OUTPUT_NAME_RE.fullmatch(name):
            n = int(name[1:])
            wanted.update((k, (a, o)) for k, a, o, _ in shown if k == n)
    if names & {"_", "__", "___"}:
        sure_seen = 0
        for n, a, o, sure in reversed(shown):
            wanted[n] = (a, o)
            sure_seen += sure
            if sure_seen >= 3:
                break
    for n, (analysis, owner) in sorted(wanted.items()):
        if owner is None:
            ev = task.prev_outputs[0]
            diagnostics.append(
                _diag(
                    "warning",
                    "previous-output",
                    f"task {task.name!r} reads {ev.name!r}, the output history, and cell "
                    f"{analysis.cell.index} (setup) shows a result that no task hands on; "
                    "assign that value to a name and read the name",
                    _event_cell(ev),
                    ev.line,
                    ev.col,
                )
            )
            continue
        if owner is not task:
            task.inputs[f"{OUTPUT_HISTORY_PREFIX}{n}_{analysis.cell.index}"] = owner.name


_OUTPUT_NAME_RE = re.compile(r"_\d+")


def resolve(units: list[_Unit], params: list[ParameterDef]) -> list[Diagnostic]:
    """Walk the notebook in order, binding names; each task's reads meet their latest binding."""
    diagnostics: list[Diagnostic] = []
    param_names = frozenset(p.name for p in params)
    setup_by_unit = _setup_statements(units, param_names)
    state = _Resolution()
    for i, stmts in setup_by_unit.items():
        for k, st in enumerate(stmts):
            state.order[id(st)] = (i, k)

    for i, unit in enumerate(units):
        state.cells.extend((analysis, unit.task) for analysis in unit.cells)
        if unit.kind in ("setup", "parameters"):
            by_stmt = {ev.stmt: ev for ev in unit.cells[0].events if ev.kind == "opaque"}
            for st in setup_by_unit[i]:
                for name in st.statement.defs:
                    state.bindings[name] = ("setup", st)
                stmt_index = unit.cells[0].statements.index(st.statement)
                if stmt_index in by_stmt:
                    ev = _with_cell(by_stmt[stmt_index], st.cell)
                    state.opaque.append(_Opaque(ev, None, st))
            if unit.kind == "parameters":
                for ev in unit.cells[0].events:
                    if ev.kind == "def" and ev.name in param_names:
                        state.bindings[ev.name] = ("param", None)
        else:
            task = unit.task
            assert task is not None
            state.position[task.name] = i
            state.tasks[task.name] = task
            earlier = {k: stmts for k, stmts in setup_by_unit.items() if k < i}
            _resolve_task(task, state, earlier, diagnostics)
            if task.prev_outputs:
                _output_history_inputs(task, state, diagnostics)
            for name in task.binds:
                state.bindings[name] = ("task", task)
            for name in task.deletes:
                state.bindings[name] = ("deleted", task)
            for ev in task.opaque:
                state.opaque.append(_Opaque(ev, task, None))
            for analysis in task.cells:
                for k, stmt in enumerate(analysis.statements):
                    if stmt.state:
                        reads = tuple(
                            _with_cell(ev, analysis.cell)
                            for ev in analysis.events
                            if ev.stmt == k and ev.kind in _SETUP_READS
                        )
                        st = SetupStatement(analysis.cell, stmt, reads)
                        state.order[id(st)] = (i, analysis.cell.index * 10000 + k)
                        state.state.append(st)
    for source in state.opaque:
        ev = source.event
        cell = _event_cell(ev)
        owner = f"task {source.task.name!r}" if source.task else "setup"
        message = (
            f"cell {cell.index if cell else '?'} ({owner}) runs {ev.name}, which may bind names "
            "the compiler cannot see"
        )
        if source.names:
            names = ", ".join(repr(n) for n in sorted(source.names))
            verb = "is" if len(source.names) == 1 else "are"
            message += f"; {names} {verb} taken from it, as nothing else binds them"
        else:
            message += "; no later cell reads a name only it could bind"
        diagnostics.append(_diag("warning", "unseen-names", message, cell, ev.line, ev.col))
    return diagnostics


def parameters_setup(units: list[_Unit]) -> str:
    """The setup statements that the parameters cells read (imports, helper functions), in
    notebook order: what a runner runs before evaluating defaults that are expressions."""
    setup_by_unit = _setup_statements(units)
    bindings: dict[str, SetupStatement] = {}
    needed: dict[int, SetupStatement] = {}
    for i, unit in enumerate(units):
        if unit.kind == "setup":
            for st in setup_by_unit[i]:
                bindings.update((name, st) for name in st.statement.defs)
        elif unit.kind == "parameters":
            pending = [ev for ev in unit.cells[0].events if ev.kind in _SETUP_READS]
            while pending:
                source = bindings.get(pending.pop().name)
                if source is not None and id(source) not in needed:
                    needed[id(source)] = source
                    pending.extend(source.reads)
    order = {id(st): k for k, st in enumerate(s for stmts in setup_by_unit.values() for s in stmts)}
    statements = sorted(needed.values(), key=lambda st: order[id(st)])
    return "".join(st.statement.source.rstrip("\n") + "\n" for st in statements)


def _resolve_task(
    task: Task,
    state: _Resolution,
    earlier_setup: dict[int, list[SetupStatement]],
    diagnostics: list[Diagnostic],
) -> None:
    bindings = state.bindings
    needed_setup: dict[int, SetupStatement] = {}
    pending: list[NameEvent] = list(task.reads.values())
    # Setup statements with no bindings (np.random.seed(0), %matplotlib inline, warnings...)
    # configure every task after them, as they do when the notebook runs top to bottom; so do
    # the state changes of earlier tasks' cells (`%env`, `sys.path.insert`, `%load_ext`).
    for stmts in [*earlier_setup.values(), state.state]:
        for st in stmts:
            if not st.statement.defs or st.statement.state:
                needed_setup[id(st)] = st
                pending.extend(st.reads)
    seen: set[str] = set()
    while pending:
        ev = pending.pop(0)
        if ev.name in seen:
            continue
        seen.add(ev.name)
        bound = bindings.get(ev.name)
        if bound is None and ev.name not in BUILTIN_NAMES and not ev.weak:
            # Only a read that surely happens: the producer must then hand the name on, and
            # fails loudly if its unseen code did not bind it (as the kernel would at the read).
            bound = _from_opaque(ev, task, state)
        if bound is None or bound[0] == "deleted":
            if ev.name in BUILTIN_NAMES and bound is None:
                continue
            if bound is None and _OUTPUT_NAME_RE.fullmatch(ev.name) and task.prev_outputs:
                continue  # `_<n>`: the output history (`_output_history_inputs`)
            if ev.kind in ("deferred", "fn-free") and ev.name in task.binds:
                # A setup function reads its globals when called: one the task binds itself
                # (`frame = ...; summarize()`) is there by then.
                continue
            _unbound(task, ev, bound, diagnostics)
            continue
        kind, source = bound
        if ev.name in task.mutated and ev.name not in task.binds and kind in ("task", "setup"):
            # Changing a received object in place re-exports it: later readers must see the
            # changed version. (Modules are never changed by calls on them: `plt.title(...)`
            # or `np.random.seed(...)` export nothing.)
            task.binds.append(ev.name)
        if kind == "task":
            if source is not task:
                task.inputs[ev.name] = source.name
        elif kind == "param":
            task.parameters.append(ev.name)
        else:
            if id(source) not in needed_setup:
                needed_setup[id(source)] = source
                pending.extend(source.reads)
    _same_producer_for_aliases(task, state)
    for name, producer in task.inputs.items():
        readers = state.readers.setdefault((name, producer), [])
        if name in task.mutated:
            # The task changes the object in place: tasks that read the value before it must
            # run first (on one worker they share the object).
            task.order_after.extend(r for r in readers if r not in task.order_after)
        readers.append(task.name)
    task.setup = sorted(needed_setup.values(), key=lambda st: state.order[id(st)])
    task.parameters = sorted(set(task.parameters))


def _from_opaque(ev: NameEvent, task: Task, state: _Resolution) -> tuple[str, Any] | None:
    """A name nothing visible binds, taken from the latest statement that binds unseen names."""
    for source in reversed(state.opaque):
        if source.task is task:
            continue
        if ev.name not in source.names:
            source.names.append(ev.name)
        if source.task is not None:
            return ("task", source.task)
        return ("setup", source.setup)
    return None


def _unbound(
    task: Task, ev: NameEvent, bound: tuple[str, Any] | None, diagnostics: list[Diagnostic]
) -> None:
    cell = _event_cell(ev)
    where = f"cell {cell.index}, line {ev.line}" if cell else f"line {ev.line}"
    if ev.kind in ("join", "fn-free") or ev.probe:
        # The earlier value a binding joins, a function's global, `try: x except NameError:`:
        # each only if there is one.
        return
    if bound is not None:  # deleted
        deleter = bound[1]
        message = f"task {task.name!r} reads {ev.name!r} ({where}) after task {deleter.name!r} "
        message += "deleted it (del)"
    else:
        message = (
            f"task {task.name!r} reads {ev.name!r} ({where}) but no earlier task, "
            "setup cell or parameter binds it"
        )
    if ev.weak:
        # A read in a branch (`if DEBUG: print(debug_state)`) or one a try guards: the notebook
        # runs while the branch does not.
        diagnostics.append(
            _diag(
                "warning",
                "undefined-in-branch",
                message + ": it fails if that code runs",
                cell,
                ev.line,
                ev.col,
            )
        )
        return
    diagnostics.append(_diag("error", "undefined-name", message, cell, ev.line, ev.col))


def _same_producer_for_aliases(task: Task, state: _Resolution) -> None:
    """Names that share one object must reach a task that changes it from one producer, or
    they arrive as separate copies and the change reaches only one of them."""
    groups: dict[tuple[str, ...], None] = {}
    for ev in task.events:
        if ev.kind == "mutate" and len(ev.sources) > 1:
            groups[ev.sources] = None
    for group in groups:
        members = [m for m in group if m in task.inputs]
        if len(members) < 2:
            continue
        latest = max((state.position.get(task.inputs[m], -1), task.inputs[m]) for m in members)[1]
        producer = state.tasks.get(latest)
        if producer is None:
            continue
        for m in members:
            if m in producer.inputs or m in producer.binds:
                task.inputs[m] = latest


def link_tasks(tasks: list[Task]) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    by_name = {t.name: t for t in tasks}
    for task in tasks:
        upstream = list(dict.fromkeys(task.inputs.values()))
        for name in task.after:
            if name not in by_name:
                first = task.cells[0].cell
                diagnostics.append(
                    _diag(
                        "error",
                        "unknown-after",
                        f"task {task.name!r} is after {name!r}, which is not a "
                        f"task (tasks: {', '.join(sorted(by_name))})",
                        first,
                    )
                )
            elif name not in upstream and name != task.name:
                upstream.append(name)
            elif name == task.name:
                diagnostics.append(
                    _diag("error", "cycle", f"task {name!r} is after itself", task.cells[0].cell)
                )
        for name in task.order_after:
            if name not in upstream and name != task.name:
                upstream.append(name)
        task.upstream = upstream
    _file_edges(tasks)
    for task in tasks:
        for name, producer in task.inputs.items():
            p = by_name.get(producer)
            if p is not None and name not in p.outputs:
                p.outputs.append(name)
    for task in tasks:
        order = {n: i for i, n in enumerate(task.binds)}
        task.outputs.sort(key=lambda n: order.get(n, len(order)))
    return diagnostics


def _file_edges(tasks: list[Task]) -> None:
    """A file one task writes and another reads (literal paths): they run in notebook order,
    the writer before later readers and after earlier ones (the reader's cache key has the
    file's digest, and the writer's key through the edge)."""
    writer: dict[str, Task] = {}
    readers: dict[str, list[Task]] = {}
    for task in tasks:
        before: list[Task] = []
        for path in task.reads_files:
            if path in writer:
                before.append(writer[path])
        for path in task.writes_files:
            before += readers.get(path, [])
            if path in writer:
                before.append(writer[path])
        for other in before:
            if other is not task and other.name not in task.upstream:
                task.upstream.append(other.name)
        for path in task.reads_files:
            readers.setdefault(path, []).append(task)
        for path in task.writes_files:
            writer[path] = task
            readers[path] = []


def topological_order(tasks: list[Task]) -> tuple[list[Task], list[str] | None]:
    """Kahn's algorithm, notebook order among ready tasks; returns (order, a cycle or None)."""
    position = {t.name: i for i, t in enumerate(tasks)}
    by_name = {t.name: t for t in tasks}
    indegree = {t.name: 0 for t in tasks}
    children: dict[str, list[str]] = {t.name: [] for t in tasks}
    for t in tasks:
        for u in t.upstream:
            if u in by_name:
                indegree[t.name] += 1
                children[u].append(t.name)
    import heapq

    ready = [(position[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[Task] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(by_name[name])
        for c in children[name]:
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(ready, (position[c], c))
    if len(order) == len(tasks):
        return order, None
    return order, _find_cycle({n for n, d in indegree.items() if d > 0}, by_name)


def _find_cycle(remaining: set[str], by_name: dict[str, Task]) -> list[str]:
    start = min(remaining, key=lambda n: n)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(u for u in by_name[node].upstream if u in remaining)
    cycle = path[seen[node] :]
    cycle.reverse()  # upstream-first reads naturally: a -> b -> a
    return cycle + [cycle[0]]


# --- 5. datasets and hazards -------------------------------------------------------------------


def setup_hazards(units: list[_Unit]) -> list[Diagnostic]:
    """Hazards in setup and parameters cells, once per cell: their code runs ahead of the
    tasks that use it, so `input()` or `%pip install` there stalls or changes every one."""
    diagnostics: list[Diagnostic] = []
    for unit in units:
        if unit.kind not in ("setup", "parameters"):
            continue
        for analysis in unit.cells:
            for h in analysis.io.hazards:
                diagnostics.append(
                    _diag(
                        "warning",
                        h.kind,
                        f"{unit.kind} cell (runs before the tasks that use it): {h.message}",
                        analysis.cell,
                        h.line,
                        h.col,
                    )
                )
    return diagnostics


def task_datasets_and_hazards(task: Task) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    reads: list[str] = []
    writes: list[str] = []
    random_uses: list[tuple[Cell, Any]] = []
    seeded = False
    for st in task.setup:
        # Setup statements are scanned through their cell's scan, limited to their lines.
        scan = analyse_cell(st.cell).io
        lo = st.statement.first_line
        hi = lo + st.statement.source.count("\n")
        reads += [a.path for a in scan.reads if lo <= a.line <= hi]
        writes += [a.path for a in scan.writes if lo <= a.line <= hi]
        seeded = seeded or any(lo <= s <= hi for s in scan.seeds)
    for analysis in task.cells:
        scan = analysis.io
        reads += [a.path for a in scan.reads]
        writes += [a.path for a in scan.writes]
        seeded = seeded or bool(scan.seeds)
        random_uses += [(analysis.cell, r) for r in scan.random_uses]
        for h in scan.hazards:
            diagnostics.append(
                _diag(
                    "warning",
                    h.kind,
                    f"task {task.name!r}: {h.message}",
                    analysis.cell,
                    h.line,
                    h.col,
                )
            )
    if random_uses and not seeded:
        cell, use = random_uses[0]
        diagnostics.append(
            _diag(
                "warning",
                "unseeded-random",
                f"task {task.name!r} draws random numbers without a seed, so its results change "
                f"from run to run: {use.message}",
                cell,
                use.line,
                use.col,
            )
        )
    task.reads_files = list(dict.fromkeys(reads))
    task.writes_files = list(dict.fromkeys(writes))
    return diagnostics


# --- 6. versions -------------------------------------------------------------------------------


def assign_versions(tasks_in_order: Iterable[Task], params: list[ParameterDef]) -> str:
    versions: dict[str, str] = {}
    policies = []
    for task in tasks_in_order:
        task.version = short_hash(
            {
                "code": [a.normalized for a in task.cells],
                "setup": [
                    st.statement.source and _normalize(st.statement.source) for st in task.setup
                ],
                "parameters": task.parameters,
                "outputs": sorted(task.outputs),
                "upstream": sorted(versions[u] for u in task.upstream if u in versions),
            }
        )
        versions[task.name] = task.version
        policies.append([task.name, task.version, sorted(task.upstream), task_policy(task)])
    defaults = {p.name: p.default for p in params}
    return short_hash({"tasks": policies, "parameters": defaults})


@lru_cache(maxsize=8192)
def _normalize(source: str) -> str:
    try:
        return ast.dump(ast.parse(source), annotate_fields=False, include_attributes=False)
    except SyntaxError:
        return source


def task_policy(task: Task) -> dict[str, Any]:
    tags = task.tags
    resources: dict[str, Any] = {}
    for key, value in tags.resources:
        if key == "memory":
            resources["memory"] = int(value)
        elif key == "gpu":
            if value:
                resources["gpu"] = int(value)
        else:
            resources[key] = value
    return {
        "resources": resources,
        "retries": tags.retries if tags.retries is not None else 0,
        "timeout": tags.timeout,
        "cache": tags.cache if tags.cache is not None else True,
    }


# --- the whole build ----------------------------------------------------------------------------


def build_pipeline(notebook: Notebook) -> Pipeline:
    units, diagnostics = group_cells(notebook)
    params: list[ParameterDef] = []
    params_source = ""
    param_units = [u for u in units if u.kind == "parameters"]
    for u in param_units:
        defs, diags = parameter_defs(u.cells[0])
        params.extend(defs)
        diagnostics.extend(diags)
        params_source += u.cells[0].python.rstrip("\n") + "\n"
    tasks = [u.task for u in units if u.task is not None]
    if any(d.code == "duplicate-task" for d in diagnostics):
        # Edges between same-named tasks are meaningless; report the names and stop here.
        return Pipeline(
            notebook.name, notebook, params, params_source, tasks, _sorted(diagnostics), ""
        )
    expand_events(units)
    for task in tasks:
        fold_task_events(task)
    diagnostics += resolve(units, params)
    for task in tasks:
        diagnostics += task_datasets_and_hazards(task)
    diagnostics += link_tasks(tasks)
    ordered, cycle = topological_order(tasks)
    if cycle:
        first = next(t for t in tasks if t.name == cycle[0]).cells[0].cell
        diagnostics.append(
            _diag("error", "cycle", "tasks form a cycle: " + " -> ".join(cycle), first)
        )
        ordered = tasks
    diagnostics += setup_hazards(units)
    monitoring, monitor_diagnostics = pipeline_monitoring(
        notebook, ordered, {p.name: p.default for p in params}
    )
    diagnostics += monitor_diagnostics
    version = assign_versions(ordered, params)
    return Pipeline(
        notebook.name,
        notebook,
        params,
        params_source,
        ordered,
        _sorted(diagnostics),
        version,
        parameters_setup(units) if any(not p.literal for p in params) else "",
        monitoring,
    )


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(
        diagnostics,
        key=lambda d: (d.cell_index if d.cell_index is not None else -1, d.line or 0, d.col or 0),
    )
