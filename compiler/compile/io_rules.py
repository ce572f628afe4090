"""A task's external files and run-time hazards, found by the ast-grep rules in `rules/*.yml`.

`scan_io(python_source)` reports the files a cell reads and writes through literal paths
(`pd.read_csv("x.csv")`, `open("out.txt", "w")`, `fig.savefig("a.png")` ...), the calls that cannot
work inside a pipeline task (`input()`, `%pip install`), the calls that draw random numbers and the
lines that seed them. Whether a task is unseeded is decided by the compiler for the whole task
(its cells and the setup code they use), so this module only reports the two halves.

The rules are ast-grep rules with Kiln's meaning attached (see `rules/reads.yml` for the format).
ast-grep-py compiles a rule's patterns and regexes again on every search, which costs far more
than matching them, so one scan is a single `find_all` over one parse, with only the rules (and
`any:` branches) that can match this source: a pattern can only match where every word it spells
out appears in the source.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from ast_grep_py import Config, SgNode, SgRoot

RULES_DIR = Path(__file__).with_name("rules")
RULE_FINDS = frozenset({"read", "write", "open", "hazard", "random", "seed"})
UNSEEDED_RANDOM = "unseeded-random"

# Each live rule is wrapped with a capture of the matched node under this name plus the rule's
# index: ast-grep says which node matched an `any:`, not which branch did.
_MARKER = "KILN_RULE_"
# Words, with the dot in front of an attribute name kept: `$X.seed(...)` needs ".seed" in the
# source, which `random_state=seed` does not have.
_WORD = re.compile(r"\.?\w+")
_SPACE_AROUND_DOT = re.compile(r"\s*\.\s*")
_SPACED_DOT = re.compile(r"\s\.|\.\s")
_METAVARIABLE = re.compile(r"\$+[A-Z0-9_]*")
_RELATIONS = ("has", "inside", "precedes", "follows")
_PATH_CONSTRUCTORS = frozenset({"Path", "pathlib.Path", "PurePath", "pathlib.PurePath"})
_PATH_CARRIERS = _PATH_CONSTRUCTORS | {"open"}


@dataclass(frozen=True)
class FileAccess:
    path: str  # the literal path as written
    api: str  # e.g. "pandas.read_csv", "open", "numpy.save", "matplotlib.savefig"
    line: int  # 1-based line of the path literal in the scanned source
    col: int  # 1-based column


@dataclass(frozen=True)
class Hazard:
    kind: str  # "input", "pip-install", "unseeded-random"
    message: str  # a sentence for users
    line: int  # 1-based line of the call
    col: int  # 1-based column


@dataclass(frozen=True)
class IOScan:
    reads: tuple[FileAccess, ...]
    writes: tuple[FileAccess, ...]
    hazards: tuple[Hazard, ...]  # input(), package installs; never unseeded-random
    random_uses: tuple[Hazard, ...]  # kind "unseeded-random": calls that draw random numbers
    seeds: tuple[int, ...]  # lines of seeding calls


EMPTY_SCAN = IOScan((), (), (), (), ())


class RuleFileError(ValueError):
    """A rule file Kiln cannot use; raised when the rules are first loaded."""


@dataclass(frozen=True)
class ArgumentSpec:
    """Where a matched call keeps a value: a captured metavariable, a position or a keyword."""

    metavar: str | None = None
    position: int | None = None
    keywords: tuple[str, ...] = ()
    default: str | None = None


# eq=False: rules are compared (and cached) by identity; their ast-grep part is a plain dict.
@dataclass(frozen=True, eq=False)
class IORule:
    id: str
    finds: str  # one of RULE_FINDS
    rule: Mapping[str, Any]  # the ast-grep rule, as written
    words: frozenset[str]  # every word some pattern of the rule spells out
    api: str = ""
    path: ArgumentSpec | None = None
    mode: ArgumentSpec | None = None
    hazard: str = ""
    message: str = ""
    seeded_by: ArgumentSpec | None = None  # for `random`: passing this keyword seeds the call


# --- loading the rule files ----------------------------------------------------------------------


@cache
def load_rules() -> tuple[IORule, ...]:
    """Every rule in `rules/*.yml`, in file-name order then file order."""
    rules: list[IORule] = []
    for rule_file in sorted(RULES_DIR.glob("*.yml")):
        entries = yaml.safe_load(rule_file.read_text(encoding="utf-8")) or []
        if not isinstance(entries, list):
            raise RuleFileError(f"{rule_file.name}: expected a list of rules")
        rules += [_parse_rule(entry, rule_file.name) for entry in entries]
    ids = [r.id for r in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise RuleFileError(f"rule ids used twice: {', '.join(duplicates)}")
    return tuple(rules)


def _parse_rule(entry: Any, file_name: str) -> IORule:
    name = entry.get("id", "?") if isinstance(entry, dict) else repr(entry)
    where = f"{file_name}: rule {name}"
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        raise RuleFileError(f"{where}: each rule needs an `id`")
    if "constraints" in entry:
        # ast-grep applies constraints to the whole config, and all rules share one config.
        raise RuleFileError(f"{where}: `constraints` cannot be used; put the condition in the rule")
    finds, rule = entry.get("finds"), entry.get("rule")
    if finds not in RULE_FINDS:
        raise RuleFileError(f"{where}: `finds` must be one of {sorted(RULE_FINDS)}")
    if not isinstance(rule, dict):
        raise RuleFileError(f"{where}: `rule` must be an ast-grep rule mapping")
    parsed = IORule(
        id=entry["id"],
        finds=finds,
        rule=rule,
        words=frozenset(_rule_words(rule)),
        api=entry.get("api", ""),
        path=_argument_spec(entry.get("path"), where),
        mode=_argument_spec(entry.get("mode"), where),
        hazard=entry.get("hazard", ""),
        message=entry.get("message", ""),
        seeded_by=_argument_spec({"keyword": entry["seeded_by"]}, where)
        if "seeded_by" in entry
        else None,
    )
    missing = {
        "read": ("api", "path"),
        "write": ("api", "path"),
        "open": ("api", "path", "mode"),
        "hazard": ("hazard", "message"),
        "random": ("message",),
        "seed": (),
    }[finds]
    for field in missing:
        if not getattr(parsed, field):
            raise RuleFileError(f"{where}: a `finds: {finds}` rule needs `{field}`")
    return parsed


def _argument_spec(raw: Any, where: str) -> ArgumentSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not ({"metavar", "arg", "keyword"} & raw.keys()):
        raise RuleFileError(f"{where}: expected {{metavar: NAME}} or {{arg: N, keyword: [...]}}")
    keywords = raw.get("keyword", [])
    return ArgumentSpec(
        metavar=raw.get("metavar"),
        position=raw.get("arg"),
        keywords=tuple([keywords] if isinstance(keywords, str) else keywords),
        default=raw.get("default"),
    )


def _words(source: str) -> frozenset[str]:
    """Words and `.attribute` names; `np . random` is read as `np.random`, as Python does."""
    if _SPACED_DOT.search(source):
        source = _SPACE_AROUND_DOT.sub(".", source)
    return frozenset(_WORD.findall(source))


def _pattern_words(pattern: str) -> frozenset[str]:
    """The words a pattern spells out; source without one of them cannot match it."""
    return _words(_METAVARIABLE.sub(" ", pattern))


def _rule_words(rule: Any) -> Iterable[str]:
    if isinstance(rule, dict):
        for key, value in rule.items():
            if key == "pattern" and isinstance(value, str):
                yield from _pattern_words(value)
            else:
                yield from _rule_words(value)
    elif isinstance(rule, list):
        for item in rule:
            yield from _rule_words(item)


# --- keeping only what can match -----------------------------------------------------------------

# A pruned rule is an ast-grep rule mapping, or True (matches wherever the rest of its enclosing
# rule does: what `not` of an impossible rule becomes), or False (cannot match in this source).
Pruned = Mapping[str, Any] | bool


@lru_cache(maxsize=4096)
def _live_rule(rule: IORule, present_words: frozenset[str]) -> Pruned:
    """`rule` without the branches that need a word absent from the source.

    `present_words` is only the part of the source's words that the rule mentions, so sources that
    differ elsewhere share one cache entry.
    """
    return _prune(rule.rule, present_words)


def _prune(rule: Mapping[str, Any], present: frozenset[str]) -> Pruned:
    """The rule's keys are all required (an implicit `all`): one impossible key sinks the rule."""
    kept: dict[str, Any] = {}
    for key, value in rule.items():
        pruned = _prune_value(key, value, present)
        if pruned is False:
            return False
        if pruned is not True:
            kept[key] = pruned
    return kept or True


def _prune_value(key: str, value: Any, present: frozenset[str]) -> Any:
    """The pruned value of one rule key, or True (the key always holds) or False (never)."""
    if key == "pattern":
        return value if not isinstance(value, str) or _pattern_words(value) <= present else False
    if key == "any":
        branches = [_prune(branch, present) for branch in value]
        if True in branches:
            return True
        live = [branch for branch in branches if branch is not False]
        return live or False
    if key == "all":
        parts = [_prune(part, present) for part in value]
        if False in parts:
            return False
        return [part for part in parts if part is not True] or True
    if key == "not":
        inner = _prune(value, present)
        return (not inner) if isinstance(inner, bool) else inner
    if key in _RELATIONS:
        target = {k: v for k, v in value.items() if k not in ("stopBy", "field")}
        # A relation to an impossible node is impossible; any other is kept as written.
        return False if _prune(target, present) is False else value
    return value  # kind, regex, nthChild, range, matches: nothing to prune


@cache
def _rules_by_word() -> tuple[tuple[IORule, ...], dict[str, tuple[int, ...]], frozenset[int]]:
    """The rules, which of them each word can bring to life, and those that may match a source
    with none of their words: a cell then looks at its few candidate rules, not at all."""
    rules = load_rules()
    by_word: dict[str, list[int]] = {}
    for index, rule in enumerate(rules):
        for word in rule.words:
            by_word.setdefault(word, []).append(index)
    wordless = frozenset(i for i, r in enumerate(rules) if _live_rule(r, frozenset()) is not False)
    return rules, {w: tuple(i) for w, i in by_word.items()}, wordless


def _live_rules(source: str) -> list[tuple[int, IORule, Mapping[str, Any]]]:
    """(index, rule, what of it can match) for each rule that can match `source`."""
    present = _words(source)
    rules, by_word, wordless = _rules_by_word()
    candidates = set(wordless)
    for word in present & by_word.keys():
        candidates.update(by_word[word])
    live: list[tuple[int, IORule, Mapping[str, Any]]] = []
    for index in sorted(candidates):
        rule = rules[index]
        pruned = _live_rule(rule, rule.words & present)
        if pruned is True:  # nothing positive left to anchor on: keep the rule whole
            pruned = rule.rule
        if pruned is not False:
            live.append((index, rule, pruned))
    return live


# --- scanning ------------------------------------------------------------------------------------


def scan_io(python_source: str) -> IOScan:
    """Files read and written through literal paths, hazards, random draws and seeds in a cell.

    `python_source` is plain Python: a cell already passed through IPython's input transformer.
    Positions are 1-based and relative to `python_source`; each tuple is sorted by position.
    """
    live = _live_rules(python_source)
    if not live:
        return EMPTY_SCAN
    root = SgRoot(python_source, "python").root()
    # First finding wins: ast-grep visits an outer call before the calls inside it, so
    # json.load(open("x")) is reported as json.load, not also as open.
    reads: dict[tuple[str, int, int], FileAccess] = {}
    writes: dict[tuple[str, int, int], FileAccess] = {}
    hazards: dict[tuple[str, int, int], Hazard] = {}
    random_uses: dict[tuple[str, int, int], Hazard] = {}
    seeds: set[int] = set()
    for node in root.find_all(_combined_config(live)):
        rule = _matched_rule(node, live)
        line, col = _position(node)
        if rule.finds == "seed" or (rule.finds == "random" and _is_seeded(node, rule)):
            seeds.add(line)
        elif rule.finds == "random":
            use = Hazard(UNSEEDED_RANDOM, _render(rule.message, node), line, col)
            random_uses.setdefault((use.kind, line, col), use)
        elif rule.finds == "hazard":
            hazard = Hazard(rule.hazard, _render(rule.message, node), line, col)
            hazards.setdefault((hazard.kind, line, col), hazard)
        else:
            for direction, access in _file_accesses(node, rule):
                found = reads if direction == "read" else writes
                found.setdefault((access.path, access.line, access.col), access)
    return IOScan(
        reads=_by_position(reads.values()),
        writes=_by_position(writes.values()),
        hazards=_by_position(hazards.values()),
        random_uses=_by_position(random_uses.values()),
        seeds=tuple(sorted(seeds)),
    )


def _combined_config(live: list[tuple[int, IORule, Mapping[str, Any]]]) -> Config:
    """One ast-grep config for all live rules, each tagged with a capture naming the rule."""
    if len(live) == 1:  # nothing to tell apart
        return cast(Config, {"rule": live[0][2]})
    branches = [{"all": [pruned, {"pattern": f"${_MARKER}{index}"}]} for index, _, pruned in live]
    return cast(Config, {"rule": {"any": branches}})


def _matched_rule(node: SgNode, live: list[tuple[int, IORule, Mapping[str, Any]]]) -> IORule:
    if len(live) == 1:
        return live[0][1]
    for index, rule, _ in live:
        if node.get_match(f"{_MARKER}{index}") is not None:
            return rule
    raise AssertionError(f"no rule marker on a match: {node.text()!r}")


def _is_seeded(call: SgNode, rule: IORule) -> bool:
    """Whether the call passes the keyword that seeds it (random_state=None seeds nothing)."""
    if rule.seeded_by is None:
        return False
    seed = _argument(call, rule.seeded_by)
    return seed is not None and seed.kind() != "none"


_Finding = TypeVar("_Finding", FileAccess, Hazard)


def _by_position(items: Iterable[_Finding]) -> tuple[_Finding, ...]:
    return tuple(sorted(items, key=lambda item: (item.line, item.col)))


def _position(node: SgNode) -> tuple[int, int]:
    start = node.range().start
    return start.line + 1, start.column + 1


def _callee(call: SgNode) -> str:
    """The called expression as written, on one line: `np.random.rand`, `df.to_csv`."""
    function = call.field("function")
    return " ".join(_SPACE_AROUND_DOT.sub(".", (function or call).text()).split())


def _render(template: str, call: SgNode) -> str:
    """Fill `{callee}` (the callee as written) and `{name}` (its last part) in a rule's text."""
    callee = _callee(call)
    return template.replace("{callee}", callee).replace("{name}", callee.rpartition(".")[2])


# --- files ---------------------------------------------------------------------------------------


def _file_accesses(call: SgNode, rule: IORule) -> list[tuple[str, FileAccess]]:
    """("read" | "write", access) for the file `call` touches, if its path is a literal."""
    assert rule.path is not None
    path_node = _argument(call, rule.path)
    literal = _literal_path(path_node) if path_node is not None else None
    if literal is None:
        return []
    path, literal_node = literal
    line, col = _position(literal_node)
    access = FileAccess(path, _render(rule.api, call), line, col)
    if rule.finds != "open":
        return [(rule.finds, access)]
    assert rule.mode is not None
    mode_node = _argument(call, rule.mode)
    mode = rule.mode.default if mode_node is None else _string_value(mode_node)
    return [(direction, access) for direction in _open_directions(mode)]


def _open_directions(mode: str | None) -> tuple[str, ...]:
    """What opening a file with `mode` does to it; nothing is known of a non-literal mode."""
    if mode is None:
        return ()
    writes = any(flag in mode for flag in "wax")
    updates = "+" in mode
    if writes:
        return ("write",)
    return ("read", "write") if updates else ("read",)


def _argument(call: SgNode, spec: ArgumentSpec) -> SgNode | None:
    """The node `spec` points at in a matched call: a capture, a keyword or a positional slot."""
    if spec.metavar:
        return call.get_match(spec.metavar)
    arguments = call.field("arguments")
    if arguments is None or arguments.kind() != "argument_list":
        return None
    position = 0
    found = None
    for argument in arguments.named_children():
        kind = argument.kind()
        if kind == "keyword_argument":
            name = argument.field("name")
            if name is not None and name.text() in spec.keywords:
                return argument.field("value")
        elif kind in ("list_splat", "dictionary_splat"):
            position = -1  # after *args no position is known
        elif kind != "comment" and position >= 0:
            if position == spec.position:
                found = argument
            position += 1
    return found


def _literal_path(node: SgNode) -> tuple[str, SgNode] | None:
    """The path `node` spells out, and the string literal it starts at; None if not a literal.

    Literal: a string without placeholders, Path("x"), Path("a") / "b", and open("x") (what
    json.load(open("x")) is handed).
    """
    kind = node.kind()
    if kind in ("string", "concatenated_string"):
        value = _string_value(node)
        return (value, node) if value is not None else None
    if kind == "parenthesized_expression":
        inner = node.named_children()
        return _literal_path(inner[0]) if len(inner) == 1 else None
    if kind == "call" and _callee(node) in _PATH_CARRIERS:
        arguments = node.field("arguments")
        first = arguments.named_children() if arguments is not None else []
        if first and first[0].kind() not in ("keyword_argument", "list_splat"):
            return _literal_path(first[0])
        return None
    if kind == "binary_operator":
        operator = node.field("operator")
        left, right = node.field("left"), node.field("right")
        if operator is None or operator.text() != "/" or left is None or right is None:
            return None
        head, tail = _literal_path(left), _literal_path(right)
        if head is None or tail is None:
            return None
        return f"{head[0].rstrip('/')}/{tail[0]}", head[1]
    return None


def _string_value(node: SgNode) -> str | None:
    """The value of a string literal, or None for anything else (f-strings with placeholders)."""
    kind = node.kind()
    if kind == "concatenated_string":
        parts = [_string_value(part) for part in node.named_children()]
        return None if None in parts else "".join(cast(list[str], parts))
    if kind != "string":
        return None
    text = node.text()
    if "f" in _string_prefix(text).lower() and any(
        c.kind() == "interpolation" for c in node.children()
    ):
        return None
    return _literal_value(text)


def _literal_value(text: str) -> str | None:
    """The value of one string literal's source text: prefixes, quotes and escapes resolved.

    Bytes are decoded as file names are; `{{` in an f-string is one brace.
    """
    prefix = _string_prefix(text).lower()
    body_start = len(prefix)
    quote = text[body_start : body_start + 3]
    if quote not in ('"""', "'''"):
        quote = text[body_start : body_start + 1]
    body = text[body_start + len(quote) : len(text) - len(quote)]
    if "\\" in body and "r" not in prefix:
        # Escapes: let Python resolve them (rare in paths, so the slow way is fine).
        try:
            value = ast.literal_eval(prefix.replace("f", "") + text[body_start:])
        except (ValueError, SyntaxError):
            return None
        body = os.fsdecode(value) if isinstance(value, bytes) else str(value)
    return body.replace("{{", "{").replace("}}", "}") if "f" in prefix else body


def _string_prefix(text: str) -> str:
    """The letters before a string literal's opening quote: r, b, u, f in any case and order."""
    return text[: len(text) - len(text.lstrip("rRbBuUfF"))]
