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

from compiler.compile.effects import effects_table
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
# Script magics: their body is another language; `--out NAME` binds the script's output.
SCRIPT_CELL_MAGICS = frozenset(
    {"bash", "sh", "script", "perl", "ruby", "python2", "python3", "pypy"}
)
_CELL_MAGIC_RE = re.compile(r"^\s*%%(\w+)[ \t]*([^\n]*)\n?")


@dataclass(frozen=True)
class CallSite:
    """One call, as written: what `effects.py` needs to say which objects it may change.

    `df.fillna(0, inplace=True)`: func ("df", "fillna"), receiver "df", method "fillna".
    `random.shuffle(deck)`: func ("random", "shuffle"), receiver "random" (a module, resolved by
    the compiler), args (("0", "deck"),). `d.setdefault(k, []).append(v)`: func (), receiver "d"
    (reached through the setdefault call), method "append".
    """

    func: tuple[str, ...]  # the callee as a dotted chain of plain names, () otherwise
    receiver: str | None  # the name a method is called on (through attributes, subscripts, views)
    method: str  # the called attribute; "" for a plain function call
    args: tuple[tuple[str, str], ...]  # (position or keyword, name the argument is rooted in)
    inplace: bool  # inplace=True


@dataclass(frozen=True)
class FunctionSummary:
    """What calling a function defined in the notebook does to module names (late binding)."""

    params: tuple[str, ...]  # positional parameters, in order
    reads: tuple[tuple[str, bool], ...]  # (free name the body reads, read only in a branch)
    writes: tuple[str, ...]  # module names the body assigns (`global x`)
    mutates: tuple[str, ...]  # parameters or free names the body changes in place directly
    calls: tuple[CallSite, ...]  # the body's calls, judged where the function is called


@dataclass(frozen=True)
class NameEvent:
    """One thing a statement does with a name, in execution order.

    kinds: "read", "def", "mutate", "deferred" (a free name of a function or class body),
    "del", "call" (`call` says what is called), "alias" (the name may share an object with
    `sources`), "opaque" (the statement binds names the compiler cannot see; `name` says how),
    "prev-output" (`_`, `Out[n]`: the value an earlier cell displayed).
    """

    kind: str
    name: str
    line: int  # 1-based, in the cell
    col: int  # 1-based
    stmt: int  # index of the top-level statement in the cell
    weak: bool = False  # a read or a binding that may not happen (a branch, a loop, a try)
    call: CallSite | None = None
    summary: FunctionSummary | None = None  # on the "def" of a function
    sources: tuple[str, ...] = ()  # for "alias"
    module: str = ""  # on a "def" by an import: the qualified name imported
    called: bool = False  # on a "read": the name is called right there (`f(x)`)
    probe: bool = False  # on a "read": inside `try: ... except NameError:` (asks if it exists)


@dataclass(frozen=True)
class Statement:
    """A top-level statement: the unit setup cells are sliced into."""

    source: str  # Python source (after IPython's transformer)
    first_line: int
    defs: tuple[str, ...]
    # Changes process state that every later cell sees (`%env X=1`, `sys.path.insert`,
    # `%load_ext`): the compiler replays it before each later task.
    state: bool = False


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
    return _parsed_python(source)[0]


def _parsed_python(source: str) -> tuple[str, ast.Module | None]:
    """`to_python`, and the tree when the source was plain Python (parsed once, not twice)."""
    try:
        return source, ast.parse(source)
    except SyntaxError:
        return _transformer().transform_cell(source), None


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
    python, parsed = _parsed_python(cell.source)
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
        elif name in SCRIPT_CELL_MAGICS:
            # %%bash --out shell_out --err shell_err: the script's output is bound to names.
            words = args.split()
            opaque_binds = tuple(
                words[i + 1]
                for i, w in enumerate(words[:-1])
                if w in ("--out", "--err", "--proc") and words[i + 1].isidentifier()
            )
    try:
        tree = parsed if parsed is not None and body_python is python else ast.parse(body_python)
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
    if magic is not None and magic[0] == "timeit":
        visitor.no_defs = 1  # %%timeit runs its body in a namespace of its own
    if magic is not None:
        visitor._interpolate(magic[1], ast.Pass(lineno=1, col_offset=0))
    for i, stmt in enumerate(tree.body):
        visitor.stmt = i
        visitor.visit(stmt)
    events = list(visitor.events)
    for name in opaque_binds:
        events.append(NameEvent("def", name, 1, 1, 0))

    state = visitor.state_stmts | _state_statements(tree)
    statements = tuple(_statements(body_python, tree, line_offset, events, state))
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


def _state_statements(tree: ast.Module) -> set[int]:
    """Top-level statements that change state of the process rather than names: sys.path
    changes, os.environ assignments, os.chdir. Later cells see their effect in a kernel."""
    found: set[int] = set()
    for i, stmt in enumerate(tree.body):
        target: ast.expr | None = None
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            dotted = _dotted(func)
            if dotted[:2] in (("sys", "path"), ("os", "environ")) or dotted in (
                ("os", "chdir"),
                ("os", "putenv"),
            ):
                found.add(i)
        elif isinstance(stmt, ast.Assign | ast.AugAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, ast.Subscript) and _dotted(target.value) == (
                    "os",
                    "environ",
                ):
                    found.add(i)
        del target
    return found


def _statements(
    python: str,
    tree: ast.Module,
    line_offset: int,
    events: list[NameEvent],
    state: set[int] = frozenset(),  # type: ignore[assignment]
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
        out.append(
            Statement(source, first + line_offset, tuple(sorted(defs.get(i, ()))), i in state)
        )
    return out


def _base_name(node: ast.expr) -> ast.Name | None:
    """`df` for df["c"], df.a.b, df[0][1]; None for anything not rooted in a plain name."""
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
        node = node.value
    return node if isinstance(node, ast.Name) else None


def _object_root(node: ast.expr) -> ast.Name | None:
    """The name whose object `node` may be part of: through attributes, subscripts and calls of
    methods whose result may share the receiver's data (`d.setdefault(k, [])`, `a.reshape(2)`,
    an unknown method); None where a call makes a new object (`df.copy()`, `df.head()`)."""
    table = effects_table()
    while True:
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in table.pure_methods and method not in table.view_methods:
                return None
            node = node.func.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            # vars(obj).update(...), getattr(obj, "x").append(...): the object is the argument.
            if node.func.id in ("vars", "getattr") and node.args:
                node = node.args[0]
            else:
                return None
        else:
            return node if isinstance(node, ast.Name) else None


def _dotted(node: ast.expr) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ()
    parts.append(node.id)
    return tuple(reversed(parts))


def _alias_sources(value: ast.expr) -> list[ast.Name]:
    """Names whose objects the value of `value` may hold or be: `a`, `a[0]`, `a.b`, `[a, b]`,
    `(a, *b)`, `{"k": a}`, `a if c else b`, `model.fit(X)` (fit returns the model)."""
    if isinstance(value, ast.Name):
        return [value]
    if isinstance(value, ast.Attribute | ast.Subscript | ast.Starred):
        root = _object_root(value)
        return [root] if root is not None else []
    if isinstance(value, ast.List | ast.Tuple | ast.Set):
        return [n for elt in value.elts for n in _alias_sources(elt)]
    if isinstance(value, ast.Dict):
        return [n for v in value.values if v is not None for n in _alias_sources(v)]
    if isinstance(value, ast.IfExp):
        return _alias_sources(value.body) + _alias_sources(value.orelse)
    if isinstance(value, ast.NamedExpr):
        return _alias_sources(value.value)
    if isinstance(value, ast.Call):
        dotted = _dotted(value.func)
        if dotted and dotted[-1][:1].isupper():
            # A class built from objects may hold them: Pipeline([("s", scaler)]) fits the
            # scaler itself; pd.DataFrame(array) may share the array's memory.
            held = [*value.args, *(k.value for k in value.keywords)]
            return [n for arg in held for n in _held(arg)]
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
        if value.func.attr in effects_table().returns_self:
            root = _object_root(value.func.value)
            return [root] if root is not None else []
        if value.func.attr in effects_table().view_methods:
            root = _object_root(value.func.value)
            return [root] if root is not None else []
    return []


def _held(arg: ast.expr) -> list[ast.Name]:
    """Names an argument passes by reference, inside list, tuple and dict literals too."""
    if isinstance(arg, ast.List | ast.Tuple | ast.Set):
        return [n for elt in arg.elts for n in _held(elt)]
    if isinstance(arg, ast.Dict):
        return [n for v in arg.values if v is not None for n in _held(v)]
    if isinstance(arg, ast.Name | ast.Attribute | ast.Subscript | ast.Starred):
        root = _object_root(arg)
        return [root] if root is not None else []
    return []


# Names the shell expands in `!cmd {expr} $name` and in magic lines (IPython's var_expand).
_DOLLAR_NAME = re.compile(r"(?<!\$)\$([A-Za-z_]\w*)")
_BRACED = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")
# Magics whose arguments hold names the notebook binds elsewhere: their line is not expanded
# as a template of variables by the kiln analysis (their own options say what they do).
_SHELL_CALLS = frozenset({"system", "getoutput"})
_ENV_ASSIGN = re.compile(r"^\s*[A-Za-z_]\w*\s*[= ]\s*\S")
_STATE_MAGICS = frozenset({"load_ext", "reload_ext"})
_OPAQUE_MAGICS = frozenset({"run", "load_ext", "reload_ext", "store"})


def _interpolated(text: str) -> list[str]:
    """Python expressions a shell line or magic line interpolates."""
    found = [m.group(1) for m in _DOLLAR_NAME.finditer(text)]
    found += [m.group(1) for m in _BRACED.finditer(text)]
    return found


def _is_get_ipython_call(func: ast.expr, methods: frozenset[str] | set[str]) -> str | None:
    if (
        isinstance(func, ast.Attribute)
        and func.attr in methods
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "get_ipython"
    ):
        return func.attr
    return None


def _string_args(call: ast.Call) -> list[str] | None:
    if all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in call.args):
        return [a.value for a in call.args]  # type: ignore[attr-defined]
    return None


_OUTPUT_NAME = re.compile(r"_\d+")


def _catches_name_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type
        names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
        if any(isinstance(n, ast.Name) and n.id in ("NameError", "Exception") for n in names):
            return True
        if kinds is None:
            return True
    return False


class _EventVisitor(ast.NodeVisitor):
    """Module-level name events of one statement, in the order Python evaluates them."""

    def __init__(self, line_offset: int):
        self.line_offset = line_offset
        self.events: list[NameEvent] = []
        self.stmt = 0
        self.branch = 0  # > 0 inside code that may not run (if, loops, try, match)
        self.guarded = 0  # > 0 inside `try: ... except NameError:` (a read there is a probe)
        self.no_defs = 0  # > 0 in %timeit code: it runs in a namespace of its own
        self.state_stmts: set[int] = set()  # statements that change process state (%env...)

    def _emit(self, kind: str, name: str, node: ast.AST, **extra: Any) -> None:
        if kind == "def" and self.no_defs:
            return
        line = getattr(node, "lineno", 1) + self.line_offset
        col = getattr(node, "col_offset", 0) + 1
        if self.branch and kind in ("read", "def"):
            extra.setdefault("weak", True)
        if self.guarded and kind == "read":
            extra["weak"] = True
            extra["probe"] = True
        self.events.append(NameEvent(kind, name, line, col, self.stmt, **extra))

    def _mutate(self, node: ast.expr | None) -> None:
        base = _object_root(node) if node is not None else None
        if base is not None:
            self._emit("mutate", base.id, base)

    # --- plain names ---------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id[0] in "_O" and (
                node.id in ("_", "__", "___", "Out") or _OUTPUT_NAME.fullmatch(node.id)
            ):
                self._emit("prev-output", node.id, node)
            self._emit("read", node.id, node)
        elif isinstance(node.ctx, ast.Store):
            self._emit("def", node.id, node)

    # --- code that may not run -----------------------------------------------------------------
    def _branch(self, nodes: list) -> None:
        self.branch += 1
        for n in nodes:
            self.visit(n)
        self.branch -= 1

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self._branch(node.body + node.orelse)

    def visit_While(self, node: ast.While) -> None:
        self._branch([node.test, *node.body, *node.orelse])

    def visit_Try(self, node: ast.Try) -> None:
        probe = _catches_name_error(node)
        self.guarded += probe
        self._branch(node.body)
        self.guarded -= probe
        self._branch(node.handlers + node.orelse)
        for stmt in node.finalbody:
            self.visit(stmt)

    visit_TryStar = visit_Try  # type: ignore[assignment]

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        self._branch(node.cases)

    # --- assignment targets ------------------------------------------------------------------
    def _target(self, target: ast.expr, sources: list[ast.Name] | None = None) -> None:
        if isinstance(target, ast.Name):
            self._emit("def", target.id, target)
            if sources:
                names = tuple(dict.fromkeys(s.id for s in sources if s.id != target.id))
                if names:
                    self._emit("alias", target.id, target, sources=names)
        elif isinstance(target, ast.Tuple | ast.List):
            # a, b = x: each may hold a part of x; fig, ax = plt.subplots(): one object graph.
            elements = [elt for elt in target.elts if isinstance(elt, ast.Name | ast.Starred)]
            for elt in target.elts:
                self._target(elt, sources)
            plain = [_base_name(n) for n in elements]
            linked = [n for n in plain if n is not None]
            if len(linked) > 1:
                for n in linked[1:]:
                    self._emit("alias", n.id, n, sources=(linked[0].id,))
        elif isinstance(target, ast.Starred):
            self._target(target.value, sources)
        elif isinstance(target, ast.Attribute | ast.Subscript):
            # df["c"] = ... / model.coef_ = ...: reads the object, then mutates it.
            self.visit(target)
            self._global_store(target)
            self._mutate(target)
            if sources:
                base = _object_root(target)
                if base is not None:
                    # combine[0] = train: the container now holds train's object.
                    names = tuple(s.id for s in sources if s.id != base.id)
                    if names:
                        self._emit("alias", base.id, base, sources=names)

    def _global_store(self, target: ast.Attribute | ast.Subscript) -> None:
        """`globals()["x"] = 1` binds x; with a key that is not a literal, something unseen."""
        value = target.value
        if (
            isinstance(target, ast.Subscript)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in ("globals", "vars", "locals")
            and not value.args
        ):
            key = target.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                self._emit("def", key.value, target)
            else:
                self._emit("opaque", f"{value.func.id}()[...] = ...", target)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        sources = _alias_sources(node.value)
        for target in node.targets:
            self._target(target, sources)
        if len(node.targets) > 1:  # a = b = []: one object
            names = [t for t in node.targets if isinstance(t, ast.Name)]
            for t in names[1:]:
                self._emit("alias", t.id, t, sources=(names[0].id,))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            # arr += 1, lst += [x]: in place for mutable objects, so every alias sees it.
            # (sources=(itself,): the name keeps its object and the objects it shares.)
            name = node.target.id
            self._emit("read", name, node.target)
            self._emit("mutate", name, node.target)
            self._emit("def", name, node.target, sources=(name,))
        else:
            self._target(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self._target(node.target, _alias_sources(node.value))

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._target(node.target, _alias_sources(node.value))

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.branch += 1  # the loop may run no time: its bindings may not happen
        # for dataset in combine: dataset is each of combine's objects in turn.
        sources = _alias_sources(node.iter)
        if not sources:
            # for k, v in d.items(), for i, x in enumerate(xs): still the iterable's objects.
            call = node.iter
            if isinstance(call, ast.Call):
                for arg in call.args:
                    sources += _alias_sources(arg)
        self._target(node.target, [s for s in sources if isinstance(s, ast.Name)])
        for stmt in node.body + node.orelse:
            self.visit(stmt)
        self.branch -= 1

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
                self.visit(target)
                self._mutate(target)
            elif isinstance(target, ast.Name):
                # `del big` needs big where it runs, and unbinds it for every later cell.
                self._emit("read", target.id, target)
                self._emit("del", target.id, target)
            elif isinstance(target, ast.Tuple | ast.List):
                self.visit_Delete(ast.Delete(targets=target.elts))

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._emit("def", node.name, node)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._emit("def", alias.asname, node, module=alias.name)
            else:
                top = alias.name.split(".")[0]
                self._emit("def", top, node, module=top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = ("." * node.level) + (node.module or "")
        for alias in node.names:
            if alias.name != "*":
                self._emit("def", alias.asname or alias.name, node, module=f"{module}.{alias.name}")
                continue
            names = star_import_names(module) if not node.level else None
            if names is None:
                self._emit("opaque", f"from {module} import *", node)
            else:
                for name in names:
                    self._emit("def", name, node, module=f"{module}.{name}")

    # --- calls ---------------------------------------------------------------------------------
    def visit_Expr(self, node: ast.Expr) -> None:
        self.visit(node.value)

    def visit_Call(self, node: ast.Call) -> None:
        if self._ipython_call(node):
            return
        func = node.func
        if isinstance(func, ast.Name) and func.id == "exec":
            self._emit("opaque", "exec(...)", node)
        if isinstance(func, ast.Name):
            self._emit("read", func.id, func, called=True)
            for child in [*node.args, *node.keywords]:
                self.visit(child)
        else:
            self.generic_visit(node)
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "update"
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id in ("globals", "vars", "locals")
            and not func.value.args
        ):
            self._emit("opaque", f"{func.value.func.id}().update(...)", node)
            return
        self._call_site(node)

    def _call_site(self, node: ast.Call) -> None:
        func = node.func
        receiver: str | None = None
        method = ""
        if isinstance(func, ast.Attribute):
            method = func.attr
            root = _object_root(func.value)
            receiver = root.id if root is not None else None
        args: list[tuple[str, str]] = []
        position = 0
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                position = -1
                root = _object_root(arg.value)
                if root is not None:
                    args.append(("*", root.id))
                continue
            root = _object_root(arg)
            if root is not None:
                args.append((str(position) if position >= 0 else "*", root.id))
            if position >= 0:
                position += 1
        inplace = False
        for kw in node.keywords:
            if kw.arg == "inplace":
                inplace = isinstance(kw.value, ast.Constant) and kw.value.value is True
                continue
            root = _object_root(kw.value)
            if root is not None:
                args.append((kw.arg or "**", root.id))
        site = CallSite(_dotted(func), receiver, method, tuple(args), inplace)
        if receiver is None and not site.func and not args:
            return  # a call on a new object with nothing from the namespace: no effect to judge
        self._emit("call", receiver or (site.func[0] if site.func else ""), node, call=site)

    def _ipython_call(self, node: ast.Call) -> bool:
        """get_ipython().run_line_magic / run_cell_magic / system / getoutput: True if handled."""
        kind = _is_get_ipython_call(
            node.func, {"run_line_magic", "run_cell_magic", "system", "getoutput"}
        )
        if kind is None:
            return False
        strings = _string_args(node)
        if strings is None:
            self.generic_visit(node)
            return True
        if kind in _SHELL_CALLS:
            self._interpolate(strings[0], node)
            return True
        magic, line = strings[0], strings[1] if len(strings) > 1 else ""
        if kind == "run_line_magic" and magic in PYTHON_BODY_CELL_MAGICS:
            self._interpolate(line, node)
            self._visit_inline_code(strip_magic_options(magic, line), node, magic == "timeit")
            return True
        self._interpolate(line, node)
        if magic == "env" and _ENV_ASSIGN.match(line):
            self.state_stmts.add(self.stmt)
        elif magic in _STATE_MAGICS:
            self.state_stmts.add(self.stmt)
        if magic == "store":
            words = line.split()
            if words[:1] == ["-r"]:
                if len(words) > 1:
                    for name in words[1:]:
                        self._emit("def", name, node)
                        self._emit("opaque", f"%store -r {name}", node, weak=True)
                else:
                    self._emit("opaque", "%store -r", node)
        elif magic in _OPAQUE_MAGICS:
            self._emit("opaque", f"%{magic} {line}".strip(), node)
        return True

    def _interpolate(self, text: str, node: ast.AST) -> None:
        for expr in _interpolated(text):
            try:
                inner = ast.parse(expr.strip(), mode="eval")
            except SyntaxError:
                continue
            for sub in ast.walk(inner):
                if hasattr(sub, "lineno"):
                    setattr(sub, "lineno", getattr(node, "lineno", 1))  # noqa: B010
                    setattr(sub, "col_offset", getattr(node, "col_offset", 0))  # noqa: B010
            self.visit(inner.body)

    def _visit_inline_code(self, code: str, call: ast.Call, timeit: bool = False) -> None:
        """`%time x = f()` runs `x = f()` in the user namespace: analyse it in place. `%timeit`
        runs it in a namespace of its own: it reads and changes objects but binds nothing."""
        try:
            inner = ast.parse(code)
        except SyntaxError:
            return
        for sub in ast.walk(inner):
            if hasattr(sub, "lineno"):
                # The code sits inside a string: its place is the magic's line.
                setattr(sub, "lineno", call.lineno)  # noqa: B010
                setattr(sub, "col_offset", call.col_offset)  # noqa: B010
        self.no_defs += timeit
        for stmt in inner.body:
            self.visit(stmt)
        self.no_defs -= timeit

    # --- nested scopes -------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        self._visit_arguments_outer(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        scope = _scope_names(node.body)  # one pass, for the summary and the free names
        self._emit("def", node.name, node, summary=_function_summary(node, scope))
        for dec in node.decorator_list:
            # @register: the decorator is called with the function.
            if isinstance(dec, ast.Name | ast.Attribute):
                site = CallSite(_dotted(dec), None, "", (("0", node.name),), False)
                self._emit("call", site.func[0] if site.func else "", dec, call=site)
        # The body's free names are read where the function is called (its summary); for
        # setup code, which is replayed in each task, they are what the statement needs.
        self._deferred(node.body, _argument_names(node.args), node, "fn-free", scope)

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

    def _deferred(
        self,
        body: list,
        bound: set[str],
        owner: ast.AST,
        kind: str = "deferred",
        scope: tuple[set[str], list[tuple[str, ast.AST]], set[str]] | None = None,
    ) -> None:
        """Free names of a function/class body: read when it is called, not when defined."""
        local, used, globals_ = scope if scope is not None else _scope_names(body)
        local = local | bound
        for name, node in used:
            if name not in local or name in globals_:
                self._emit(kind, name, node)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        # The first iterable is evaluated in the enclosing scope; the rest is the comprehension's
        # own scope, nested comprehensions and lambdas included. `:=` binds in the enclosing one,
        # before the element that reads it, and only if the loop runs at all.
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
        bound_here = local - {target.id for target in walrus}
        walrus_names = {target.id for target in walrus}
        for name, sub in used:
            if name not in bound_here and name not in walrus_names:
                self._emit("read", name, sub)
        for target in walrus:
            self._emit("def", target.id, target, weak=True)
        # Calls inside the comprehension run with its variables: [out.append(i) for i in xs].
        self.branch += 1
        probe = _EventVisitor(self.line_offset)
        for part in scope:
            for sub in ast.walk(part):
                if isinstance(sub, ast.Call):
                    probe._call_site(sub)
                elif isinstance(sub, ast.Subscript | ast.Attribute) and isinstance(
                    sub.ctx, ast.Store
                ):
                    probe._mutate(sub)
        for ev in probe.events:
            if ev.name in bound_here:
                continue
            call = ev.call
            if call is not None:
                args = tuple(a for a in call.args if a[1] not in bound_here)
                call = CallSite(call.func, call.receiver, call.method, args, call.inplace)
            self.events.append(
                NameEvent(ev.kind, ev.name, ev.line, ev.col, self.stmt, weak=True, call=call)
            )
        self.branch -= 1

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


def _function_summary(
    node: ast.FunctionDef | ast.AsyncFunctionDef,
    scope: tuple[set[str], list[tuple[str, ast.AST]], set[str]],
) -> FunctionSummary:
    """What a call of this function reads, binds and changes among module names."""
    args = node.args
    params = tuple(a.arg for a in [*args.posonlyargs, *args.args])
    local, _, globals_ = scope
    local = local | _argument_names(args)
    body = _EventVisitor(0)
    for stmt in node.body:
        body.visit(stmt)
    reads: dict[str, bool] = {}
    mutates: list[str] = []
    calls: list[CallSite] = []
    names_of_interest = set(params)
    for ev in body.events:
        free = ev.name not in local or ev.name in globals_
        if ev.kind in ("read", "deferred", "fn-free") and free:
            reads[ev.name] = reads.get(ev.name, True) and ev.weak
        elif ev.kind == "mutate" and (free or ev.name in names_of_interest):
            if ev.name not in mutates:
                mutates.append(ev.name)
        elif ev.kind == "call" and ev.call is not None:
            c = ev.call

            def keep(name: str | None) -> bool:
                return name is not None and (name not in local or name in names_of_interest)

            site = CallSite(
                c.func if c.func and keep(c.func[0]) else (),
                c.receiver if keep(c.receiver) else None,
                c.method,
                tuple(a for a in c.args if keep(a[1])),
                c.inplace,
            )
            if site.receiver or site.args or site.func:
                calls.append(site)
    writes = tuple(sorted(globals_ & local))
    return FunctionSummary(params, tuple(reads.items()), writes, tuple(mutates), tuple(calls))


@lru_cache(maxsize=256)
def star_import_names(module: str) -> tuple[str, ...] | None:
    """The names `from module import *` binds, for a module of the standard library or an
    installed package (never a notebook's own code: importing it would run it); else None."""
    import importlib
    import importlib.util
    import sysconfig

    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}

    def installed(name: str) -> bool:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return False
        origin = (spec.origin or "") if spec is not None else ""
        if origin in ("built-in", "frozen"):
            return True
        return any(origin.startswith(root.rstrip("/") + "/") for root in roots)

    # The top-level package first: find_spec("pkg.sub") imports `pkg`, which for a package
    # beside the notebook would run the notebook's own code at compile time.
    top = module.partition(".")[0]
    if not installed(top) or (top != module and not installed(module)):
        return None
    try:
        imported = importlib.import_module(module)
    except Exception:  # a library that fails to import: its names stay unknown
        return None
    names = getattr(imported, "__all__", None)
    if names is None:
        names = [n for n in vars(imported) if not n.startswith("_")]
    return tuple(str(n) for n in names)


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
