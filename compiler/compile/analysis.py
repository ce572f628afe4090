"""Per-cell analysis: what each cell binds, reads and mutates, as an ordered list of events.

Each code cell is analysed once into a frozen `CellAnalysis`; `dag.py` only folds and joins these
records. Nothing here executes notebook code: it is all `ast` and ast-grep over the source.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from compiler.compile.io_rules import EMPTY_SCAN, IOScan, scan_io
from compiler.compile.notebook import Cell
from compiler.compile.source_text import source_lines
from compiler.model.diagnostics import Diagnostic

# Names that exist in every IPython namespace without being bound by the notebook.
IPYTHON_NAMES = frozenset({"get_ipython", "display", "In", "Out", "exit", "quit", "_", "__", "___"})
BUILTIN_NAMES = frozenset(dir(builtins)) | IPYTHON_NAMES

# Cell magics whose body is Python that runs in the user namespace; every other cell magic
# (%%bash, %%html, %%writefile, %%javascript...) is opaque to the analysis.
PYTHON_BODY_CELL_MAGICS = frozenset({"time", "timeit", "prun"})
# %%capture runs its body as Python too, but people also wrap shell-ish or broken snippets in it
# to silence them: its body is analysed when it parses, and otherwise left alone.
CAPTURE = "capture"
_CELL_MAGIC_RE = re.compile(r"^\s*%%(\w+)[ \t]*([^\n]*)\n?")


@dataclass(frozen=True)
class NameEvent:
    """One thing a statement does with a name, in execution order."""

    kind: str  # "read" | "def" | "mutate" | "deferred" (free name in a function body)
    name: str
    line: int  # 1-based, in the cell
    col: int  # 1-based
    stmt: int  # index of the top-level statement in the cell


@dataclass(frozen=True)
class Statement:
    """A top-level statement: the unit setup cells are sliced into."""

    source: str  # Python source (after IPython's transformer)
    first_line: int
    defs: tuple[str, ...]


@dataclass(frozen=True)
class CellAnalysis:
    cell: Cell
    python: str  # the cell's source as Python (magics transformed)
    body_python: str  # what the analysis read: the body of a %%time/%%capture cell, else python
    cell_magic: tuple[str, str] | None  # (name, argument line) of a %% cell
    normalized: str  # AST dump without positions: comments and formatting do not count
    events: tuple[NameEvent, ...]
    statements: tuple[Statement, ...]
    io: IOScan
    diagnostics: tuple[Diagnostic, ...]


@lru_cache(maxsize=1)
def _transformer() -> Any:
    # IPython is imported on the first cell that needs it: most notebooks are plain Python, and
    # the import is a fifth of a cold `kiln run`'s compile time.
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def to_python(source: str) -> str:
    """Cell source -> Python, with IPython's own input transformer (magics, !shell, help?).

    Plain Python is returned as is: the transformer is slow (~0.4 ms a cell) and only needed when
    the source is not already valid Python.
    """
    try:
        ast.parse(source)
        return source
    except SyntaxError:
        return _transformer().transform_cell(source)


def _cell_magic(source: str) -> tuple[str, str, int] | None:
    """(magic name, its argument line, line offset of the body) for a %% cell, else None."""
    m = _CELL_MAGIC_RE.match(source)
    if not m:
        return None
    offset = source[: m.start(1)].count("\n") + 1
    return m.group(1), m.group(2).strip(), offset


def analyse_cell(cell: Cell) -> CellAnalysis:
    try:
        return _analyse_cell_cached(cell)
    except (SyntaxError, ValueError) as exc:  # from IPython's transformer (tokenize)
        diag = Diagnostic(
            "error",
            "syntax-error",
            f"syntax error: {getattr(exc, 'msg', None) or exc}",
            cell.index,
            cell.id,
            getattr(exc, "lineno", None) or 1,
            getattr(exc, "offset", None) or 1,
        )
        return CellAnalysis(cell, "", "", None, "", (), (), EMPTY_SCAN, (diag,))
    except (RecursionError, MemoryError):
        # CPython's parser gives up on very deep nesting (10,000 unary minus, long operator or
        # call chains) with these instead of a SyntaxError; Python could not run the cell either.
        diag = Diagnostic(
            "error",
            "too-complex",
            "the cell's code is nested too deeply for Python to compile (split the expression)",
            cell.index,
            cell.id,
            1,
            1,
        )
        return CellAnalysis(cell, "", "", None, "", (), (), EMPTY_SCAN, (diag,))


# Keyed by the cell record (index, id, source, tags): the Jupyter server recompiles on every
# edit, and only edited cells are analysed again.
@lru_cache(maxsize=16384)
def _analyse_cell_cached(cell: Cell) -> CellAnalysis:
    python = to_python(cell.source)
    magic = _cell_magic(cell.source)
    body_python, line_offset = python, 0
    opaque_binds: tuple[str, ...] = ()
    cell_magic = None
    if magic is not None:
        name, args, offset = magic
        cell_magic = (name, args)
        body = to_python(cell.source.split("\n", offset)[-1] if offset else "")
        if name in PYTHON_BODY_CELL_MAGICS:
            body_python, line_offset = body, offset
        elif name == CAPTURE:
            opaque_binds = tuple(a for a in args.split() if not a.startswith("-"))[:1]
            if _parses(body):
                body_python, line_offset = body, offset
    try:
        tree = ast.parse(body_python)
        if _DEEP_INDENT.search(body_python):
            _parse_two_levels_down(body_python)
        if "return" in body_python or "yield" in body_python:
            _no_return_outside_a_function(tree)
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte, on some Pythons
        line = (getattr(exc, "lineno", None) or 1) + line_offset
        message = getattr(exc, "msg", None) or str(exc)
        diag = Diagnostic(
            "error",
            "syntax-error",
            f"syntax error: {message}",
            cell.index,
            cell.id,
            line,
            getattr(exc, "offset", None) or 1,
        )
        return CellAnalysis(cell, python, body_python, cell_magic, "", (), (), EMPTY_SCAN, (diag,))

    visitor = _EventVisitor(line_offset)
    for i, stmt in enumerate(tree.body):
        visitor.stmt = i
        visitor.visit(stmt)
    events = list(visitor.events)
    for name in opaque_binds:
        events.append(NameEvent("def", name, 1, 1, 0))

    statements = tuple(_statements(body_python, tree, line_offset, events))
    normalized = ast.dump(
        ast.parse(python) if body_python is not python else tree,
        annotate_fields=False,
        include_attributes=False,
    )
    io = scan_io(body_python)
    if line_offset:
        io = _shift_scan(io, line_offset)
    return CellAnalysis(
        cell, python, body_python, cell_magic, normalized, tuple(events), statements, io, ()
    )


# Python allows 100 indentation levels. tasks.py puts a cell inside a function (and %%capture
# inside a `with`), two levels more: a cell indented 98 deep parses alone but not there. Only
# cells with a line indented that far (rare) pay for a second parse.
_DEEP_INDENT = re.compile(r"^[ \t]{97,}\S", re.MULTILINE)


def _parse_two_levels_down(python: str) -> None:
    """Raise SyntaxError (IndentationError) when `python` does not parse two blocks deeper."""
    import textwrap

    try:
        ast.parse("def _task():\n with _capture:\n" + textwrap.indent(python, "  "))
    except SyntaxError as exc:
        if "indentation" in (exc.msg or ""):
            raise SyntaxError(
                "too many levels of indentation for tasks.py (Python allows 100; the task "
                "function adds up to 2)",
                (None, max(1, (exc.lineno or 3) - 2), 1, None),
            ) from None


def _no_return_outside_a_function(tree: ast.Module) -> None:
    """Raise SyntaxError for `return`/`yield` at the cell's top level: ast.parse accepts them,
    Python refuses to run the cell, and inside a task function they would end the task early
    (without its outputs)."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Return | ast.Yield | ast.YieldFrom):
            word = "return" if isinstance(node, ast.Return) else "yield"
            raise SyntaxError(
                f"'{word}' outside function", (None, node.lineno, node.col_offset + 1, None)
            )
        stack.extend(ast.iter_child_nodes(node))


def _parses(python: str) -> bool:
    try:
        ast.parse(python)
    except SyntaxError:
        return False
    return True


def _shift_scan(scan: IOScan, offset: int) -> IOScan:
    from dataclasses import replace

    def shift(items: tuple) -> tuple:
        return tuple(replace(i, line=i.line + offset) for i in items)

    return IOScan(
        shift(scan.reads),
        shift(scan.writes),
        shift(scan.hazards),
        shift(scan.random_uses),
        tuple(s + offset for s in scan.seeds),
    )


def _statements(
    python: str, tree: ast.Module, line_offset: int, events: list[NameEvent]
) -> list[Statement]:
    defs: dict[int, set[str]] = {}
    for ev in events:
        if ev.kind == "def":
            defs.setdefault(ev.stmt, set()).add(ev.name)
    lines = source_lines(python)
    out = []
    for i, stmt in enumerate(tree.body):
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        last = stmt.end_lineno or stmt.lineno
        source = "\n".join(lines[first - 1 : last])
        out.append(Statement(source, first + line_offset, tuple(sorted(defs.get(i, ())))))
    return out


def _base_name(node: ast.expr) -> ast.Name | None:
    """`df` for df["c"], df.a.b, df[0][1]; None for anything not rooted in a plain name."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node if isinstance(node, ast.Name) else None


class _EventVisitor(ast.NodeVisitor):
    """Module-level name events of one statement, in the order Python evaluates them."""

    def __init__(self, line_offset: int):
        self.line_offset = line_offset
        self.events: list[NameEvent] = []
        self.stmt = 0

    def _emit(self, kind: str, name: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 1) + self.line_offset
        col = getattr(node, "col_offset", 0) + 1
        self.events.append(NameEvent(kind, name, line, col, self.stmt))

    # --- plain names ---------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._emit("read", node.id, node)
        elif isinstance(node.ctx, ast.Store):
            self._emit("def", node.id, node)

    # --- assignment targets ------------------------------------------------------------------
    def _target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self._emit("def", target.id, target)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                self._target(elt)
        elif isinstance(target, ast.Starred):
            self._target(target.value)
        elif isinstance(target, ast.Attribute | ast.Subscript):
            # df["c"] = ... / model.coef_ = ...: reads the object, then mutates it.
            self.visit(target)
            base = _base_name(target)
            if base is not None:
                self._emit("mutate", base.id, base)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self._target(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._emit("read", node.target.id, node.target)
        self._target(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self._target(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._target(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self._target(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._target(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if isinstance(target, ast.Attribute | ast.Subscript):
                self._target(target)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._emit("def", node.name, node)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._emit("def", alias.asname or alias.name.split(".")[0], node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._emit("def", alias.asname or alias.name, node)

    # --- mutation through calls ----------------------------------------------------------------
    def visit_Expr(self, node: ast.Expr) -> None:
        self.visit(node.value)
        # A method call whose result is dropped is called for its effect: lst.append(x),
        # model.fit(X, y), df.drop(columns=..., inplace=True).
        call = node.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
            base = _base_name(call.func.value)
            if base is not None:
                self._emit("mutate", base.id, base)

    def visit_Call(self, node: ast.Call) -> None:
        inline = python_line_magic(node)
        if inline is not None:
            self._visit_inline_code(inline, node)
            return
        self.generic_visit(node)
        inplace = any(
            k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if inplace and isinstance(node.func, ast.Attribute):
            base = _base_name(node.func.value)
            if base is not None:
                self._emit("mutate", base.id, base)

    def _visit_inline_code(self, code: str, call: ast.Call) -> None:
        """`%time x = f()` runs `x = f()` in the user namespace: analyse it in place."""
        try:
            inner = ast.parse(code)
        except SyntaxError:
            return
        for sub in ast.walk(inner):
            if hasattr(sub, "lineno"):
                # The code sits inside a string: its place is the magic's line.
                setattr(sub, "lineno", call.lineno)  # noqa: B010
                setattr(sub, "col_offset", call.col_offset)  # noqa: B010
        for stmt in inner.body:
            self.visit(stmt)

    # --- nested scopes -------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        self._visit_arguments_outer(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self._emit("def", node.name, node)
        self._deferred(node.body, _argument_names(node.args), node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_arguments_outer(node.args)
        self._deferred([node.body], _argument_names(node.args), node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(expr)
        self._emit("def", node.name, node)
        self._deferred(node.body, set(), node)

    def _visit_arguments_outer(self, args: ast.arguments) -> None:
        # Defaults and annotations are evaluated when the def runs, in the enclosing scope.
        for expr in list(args.defaults) + [d for d in args.kw_defaults if d is not None]:
            self.visit(expr)
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        for arg in every:
            if arg is not None and arg.annotation is not None:
                self.visit(arg.annotation)

    def _deferred(self, body: list, bound: set[str], owner: ast.AST) -> None:
        """Free names of a function/class body: read when it is called, not when defined."""
        local, used, globals_ = _scope_names(body)
        local |= bound
        for name, node in used:
            if name not in local or name in globals_:
                self._emit("deferred", name, node)
        for name in globals_ & local:
            # `global x; x = ...` inside a function binds a module name.
            self._emit("def", name, owner)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        # The first iterable is evaluated in the enclosing scope; the rest is the comprehension's
        # own scope, nested comprehensions and lambdas included. `:=` binds in the enclosing one.
        first, *others = node.generators
        self.visit(first.iter)
        elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        scope = [first.target, *first.ifs, *others, *elements]
        walrus = [
            sub.target
            for part in scope
            for sub in ast.walk(part)
            if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name)
        ]
        local, used, _ = _scope_names(scope)
        local -= {target.id for target in walrus}
        for name, sub in used:
            if name not in local:
                self._emit("read", name, sub)
        for target in walrus:
            self._emit("def", target.id, target)

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_GeneratorExp = _comprehension
    visit_DictComp = _comprehension

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._emit("def", node.name, node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._emit("def", node.name, node)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self._emit("def", node.rest, node)

    def visit_Global(self, node: ast.Global) -> None:
        return None


def python_line_magic(call: ast.Call) -> str | None:
    """The code of `get_ipython().run_line_magic('time', 'code')` for magics that run Python."""
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr == "run_line_magic"
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
        and len(call.args) == 2
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args)
    ):
        return None
    magic = call.args[0].value  # type: ignore[attr-defined]
    code = call.args[1].value  # type: ignore[attr-defined]
    if magic not in PYTHON_BODY_CELL_MAGICS:
        return None
    return strip_magic_options(magic, code)


# Options of the Python-running line magics that take a value (`-n 3` or `-n3`).
_OPTIONS_WITH_VALUE = {"timeit": frozenset("nrp"), "prun": frozenset("slTD")}


def strip_magic_options(magic: str, code: str) -> str:
    """The statement after the magic's own options: `-n3 -r 2 x = f()` -> `x = f()`."""
    with_value = _OPTIONS_WITH_VALUE.get(magic, frozenset())
    code = code.lstrip()
    while code.startswith("-"):
        option, _, code = code.partition(" ")
        if len(option) == 2 and option[1] in with_value:  # the value is the next word
            _, _, code = code.lstrip().partition(" ")
        code = code.lstrip()
    return code


def _argument_names(args: ast.arguments) -> set[str]:
    all_args = args.posonlyargs + args.args + args.kwonlyargs
    names = {a.arg for a in all_args}
    if args.vararg:
        names.add(args.vararg.arg)
    if args.kwarg:
        names.add(args.kwarg.arg)
    return names


def _scope_names(body: list) -> tuple[set[str], list[tuple[str, ast.AST]], set[str]]:
    """(names bound anywhere inside, names loaded with their first node, names declared global).

    Nested scopes are merged into one: a small over-approximation of what is local that keeps
    this a single pass over the body.
    """
    local: set[str] = set()
    used: dict[str, ast.AST] = {}
    globals_: set[str] = set()
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
                    used.setdefault(node.id, node)
                else:
                    local.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                local.add(node.name)
            elif isinstance(node, ast.arg):
                local.add(node.arg)
            elif isinstance(node, ast.alias):
                if node.name != "*":
                    local.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.ExceptHandler) and node.name:
                local.add(node.name)
            elif isinstance(node, ast.Global | ast.Nonlocal):
                if isinstance(node, ast.Global):
                    globals_.update(node.names)
            elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
                local.add(node.name)
    return local, list(used.items()), globals_
