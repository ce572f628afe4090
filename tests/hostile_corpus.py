"""A deterministic corpus of malformed and hostile notebooks, as an attacker or a careless user
writes them: broken JSON and nbformat shapes, JSON nested far too deep, lone surrogates, code
nested beyond what CPython compiles, line-break characters inside strings, bad tag values,
conflicting tags, odd file names, duplicate cell ids.

Every notebook's code would leave a marker file if it ever ran (compiling must not run it).
`corpus(seed, marker)` returns the cases; each says what `kiln check`/`kiln compile` must do.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

OK, ERRORS, UNREADABLE = 0, 1, 2


@dataclass
class Case:
    name: str
    file_name: str
    content: bytes
    exit: int | None  # None: 0 or 1 are both right (the notebook may or may not compile)
    # Substrings of which at least one must appear in the output when the exit is not 0
    # (the place: a cell index and id, or a field).
    places: tuple[str, ...] = ()  # regular expressions
    # Text that must appear in tasks.py when the notebook compiles (e.g. a kept string).
    module_has: tuple[str, ...] = field(default=())


def _cell(source: str, tags: list[str] | None = None, cell_id: str | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "id": cell_id or "x",
        "metadata": {"tags": tags} if tags else {},
        "outputs": [],
        "source": source,
    }
    return cell


def _notebook(cells: list[dict[str, Any]]) -> dict[str, Any]:
    for i, cell in enumerate(cells):
        if cell.get("id") == "x":
            cell["id"] = f"cell{i}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def at(index: int, field: str | None = None) -> str:
    """The place a message must name: 'cell 3, line 2, col 1 (id cell3)' as diagnostics render
    it, 'cell 3 (id cell3), field source' as load errors do."""
    where = rf"cell {index}\b[^()\n]*\(id cell{index}\)"
    return where + (rf", field {re.escape(field)}" if field else "")


def _dump(nb: Any) -> bytes:
    return json.dumps(nb, indent=1, ensure_ascii=True).encode()


class Builder:
    def __init__(self, rng: random.Random, marker: str):
        self.rng = rng
        self.marker = marker
        self.cases: list[Case] = []

    def payload(self) -> str:
        """Code that leaves the marker if it runs."""
        return self.rng.choice(
            [
                f"open({self.marker!r}, 'w').write('ran')\n",
                f"__import__('os').system('touch {self.marker}')\n",
                f"import pathlib; pathlib.Path({self.marker!r}).touch()\n",
            ]
        )

    def base_cells(self) -> list[dict[str, Any]]:
        """A realistic small pipeline: setup, parameters, three tasks."""
        n = self.rng.randint(2, 50)
        return [
            _cell("import math\n" + self.payload(), ["setup"]),
            _cell(f"n = {n}\nscale = 1.5\n", ["parameters"]),
            _cell("values = [math.sqrt(i) * scale for i in range(n)]\n", ["task:load"]),
            _cell("total = sum(values)\n" + self.payload(), ["task:total"]),
            _cell("report = f'{total:.2f}'\nprint(report)\n", ["task:report"]),
        ]

    def add(
        self,
        name: str,
        content: bytes | dict[str, Any],
        exit: int | None,
        *places: str,
        file_name: str | None = None,
        module_has: tuple[str, ...] = (),
    ) -> None:
        data = content if isinstance(content, bytes) else _dump(content)
        index = len(self.cases)
        self.cases.append(
            Case(
                name=f"{index:04d}-{name}",
                file_name=file_name or f"nb{index:04d}.ipynb",
                content=data,
                exit=exit,
                places=places,
                module_has=module_has,
            )
        )


def _json_level(b: Builder) -> Iterator[None]:
    rng = b.rng
    valid = _dump(_notebook(b.base_cells()))
    cut = rng.randint(1, len(valid) - 2)
    b.add("truncated-json", valid[:cut], UNREADABLE, "invalid JSON at line")
    yield
    b.add("empty-file", b"", UNREADABLE, "invalid JSON")
    yield
    b.add(
        "not-utf8",
        b"\xff\xfe" + bytes(rng.randrange(256) for _ in range(40)),
        UNREADABLE,
        "cannot be read",
        "invalid JSON",
    )
    yield
    b.add("json-array", b"[1, 2, 3]", UNREADABLE, "no 'cells' list")
    yield
    b.add("json-string", json.dumps("cells").encode(), UNREADABLE, "no 'cells' list")
    yield
    nb = _notebook(b.base_cells())
    nb["cells"] = {"0": nb["cells"][0]}
    b.add("cells-not-a-list", nb, UNREADABLE, "field cells")
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i] = rng.choice([None, 3, "print(1)", [1, 2]])
    b.add("cell-not-an-object", nb, UNREADABLE, rf"cell {i}: not a JSON object")
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i]["cell_type"] = rng.choice(["python", "", None, 1, ["code"]])
    b.add("bad-cell-type", nb, UNREADABLE, at(i, "cell_type"))
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i]["source"] = rng.choice([None, 42, {"a": 1}, ["x = 1\n", 2], [["x"]]])
    b.add("bad-source", nb, UNREADABLE, at(i, "source"))
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i]["metadata"] = rng.choice([None, [], "tags", 5])
    b.add("bad-metadata", nb, UNREADABLE, at(i, "metadata"))
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i]["metadata"] = {
        "tags": rng.choice(["setup", {"a": 1}, [1], [["task:a"]], [None]])
    }
    b.add("bad-tags", nb, UNREADABLE, at(i, "metadata.tags"))
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i]["id"] = rng.choice([7, None, ["a"], {"a": 1}])
    b.add("bad-cell-id", nb, UNREADABLE, rf"cell {i}\b")
    yield
    nb = _notebook(b.base_cells())
    i = rng.randrange(len(nb["cells"]))
    nb["cells"][i]["id"] = rng.choice(["has space", "", "x" * 100, "a/b", "ü"])
    b.add("invalid-cell-id", nb, UNREADABLE, rf"cell {i} \(id .*\), field id")
    yield
    # JSON nested far deeper than any notebook, in a cell's metadata, an output or the top.
    depth = rng.choice([100, 1_000, 5_000, 100_000])
    where = rng.choice(["cell-metadata", "output", "notebook-metadata"])
    deep = "[" * depth + "]" * depth
    nb = _notebook(b.base_cells())
    placeholder = "DEEP-PLACEHOLDER"
    if where == "cell-metadata":
        nb["cells"][2]["metadata"]["deep"] = placeholder
        places: tuple[str, ...] = (at(2), "nested")
    elif where == "output":
        nb["cells"][3]["outputs"] = [
            {
                "output_type": "execute_result",
                "data": {"application/json": placeholder},
                "metadata": {},
                "execution_count": 1,
            }
        ]
        places = (at(3), "nested")
    else:
        nb["metadata"]["deep"] = placeholder
        places = ("field metadata", "nested")
    text = _dump(nb).replace(json.dumps(placeholder).encode(), deep.encode())
    b.add(f"deep-json-{where}-{depth}", text, UNREADABLE, *places)
    yield
    # A lone surrogate: valid JSON ('\ud800'), not text UTF-8 can hold.
    nb = _notebook(b.base_cells())
    i = rng.randrange(2, len(nb["cells"]))
    surrogate = rng.choice(["\ud800", "\udfff", "\udc80"])
    field_name = rng.choice(["source", "tags", "metadata"])
    if field_name == "source":
        nb["cells"][i]["source"] = f"x = '{surrogate}'\n"
    elif field_name == "tags":
        nb["cells"][i]["metadata"]["tags"] = [f"task:t{surrogate}"]
    else:
        nb["cells"][i]["metadata"]["note"] = surrogate
    b.add(f"lone-surrogate-{field_name}", nb, UNREADABLE, at(i), "surrogate")
    yield
    nb = _notebook(b.base_cells())
    nb["nbformat"] = rng.choice(["four", None, 99, -1, 3.5])
    b.add("bad-nbformat-version", nb, UNREADABLE, "not a valid notebook")
    yield
    nb = _notebook(b.base_cells())
    del nb["metadata"]
    nb["nbformat_minor"] = rng.choice(["x", None])
    b.add("bad-top-level", nb, UNREADABLE, "not a valid notebook")
    yield
    nb = _notebook(b.base_cells())
    nb["cells"][rng.randrange(5)]["outputs"] = rng.choice(
        [[{"output_type": "nonsense"}], [None], "out", [{"output_type": "stream"}]]
    )
    b.add("bad-outputs", nb, UNREADABLE, r"cell \d \(id cell\d\), field outputs")
    yield
    digits = rng.choice([400, 5_000])
    nb = _notebook(b.base_cells())
    nb["cells"][2]["metadata"]["big"] = "BIG-PLACEHOLDER"
    text = _dump(nb).replace(b'"BIG-PLACEHOLDER"', b"7" * digits)
    # Python refuses integers over 4,300 digits (a denial-of-service guard).
    b.add(f"huge-number-{digits}", text, OK if digits < 4300 else UNREADABLE, "not a notebook")
    yield


def _code_level(b: Builder) -> Iterator[None]:
    rng = b.rng
    # Code nested beyond CPython's limits: the parser raises RecursionError or MemoryError.
    terms = rng.choice([3_000, 10_000])
    deep = rng.choice(
        [
            " + ".join(["1"] * terms),
            "-" * terms + "1",
            "not " * terms + "x",
            "lambda: " * 1_000 + "1",
            "a" + ".b" * terms,
            "f" + "()" * terms,
            " if c else ".join(["x"] * (terms // 2)),
            "(" * terms + "1" + ")" * terms,
            "[" * 1_000 + "]" * 1_000,
        ]
    )
    cells = b.base_cells()
    i = rng.choice([0, 2, 3, 4])
    cells[i]["source"] = f"x_{i} = " + deep + "\n" + cells[i]["source"]
    b.add("deep-code", _notebook(cells), ERRORS, at(i))
    yield
    # Indentation nested to CPython's limit (100): fine in the cell, one too many in tasks.py.
    levels = rng.choice([98, 99, 100, 101, 120])
    body = "".join("    " * k + "if True:\n" for k in range(levels)) + "    " * levels + "y = 1\n"
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    cells[i]["source"] = body + cells[i]["source"]
    b.add(f"indent-{levels}", _notebook(cells), ERRORS, at(i))
    yield
    # Characters str.splitlines() breaks at but Python does not: inside strings they are text.
    breaker = rng.choice(["\u2028", "\u2029", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\x0b"])
    cells = b.base_cells()
    i = rng.choice([0, 2, 3])
    literal = f"label_{i} = 'a{breaker}b'\n"
    cells[i]["source"] = literal + cells[i]["source"]
    cells[4]["source"] += f"print(label_{i})\n"  # used by a task, so setup keeps it
    b.add(f"line-break-char-{ord(breaker):04x}", _notebook(cells), OK, module_has=("label_",))
    yield
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    cells[i]["source"] = (
        rng.choice(
            [
                "x = (\n",
                "def f(:\n    pass\n",
                "x = 1 +\n",
                "return 5\n",
                "print('a'\n",
                "x = 'unterminated\n",
                "class A\n",
                "x = 1\x00\n",
                "\tif x:\n  y = 1\n",
            ]
        )
        + cells[i]["source"]
    )
    b.add("syntax-error", _notebook(cells), ERRORS, at(i))
    yield
    # Magics: option parsing that used to give a tasks.py that does not parse.
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    magic = rng.choice(
        [
            "%timeit -n -r -p x = 1\n",
            "%timeit -n3 -r2 x = sum(range(10))\n",
            "%time -q\n",
            "%time\n",
            "%prun -s -l\n",
            "%%time\n",
            "%timeit\n",
            "%timeit -n 3\n",
            "%prun -s cumulative -l 5 sum(range(3))\n",
            "!echo hi\n",
            "%load_ext autoreload\n",
            "x = %env HOME\n",
        ]
    )
    cells[i]["source"] = (
        magic + cells[i]["source"]
        if not magic.startswith("%%")
        else (magic + "z = 1\n" + cells[i]["source"])
    )
    b.add("magic", _notebook(cells), None, at(i))
    yield
    if rng.random() > 0.25:
        return  # ruff takes ~1 s on such a line: a few of them are enough
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    statements = rng.choice([1_000, 3_000])
    cells[i]["source"] = (
        "; ".join(f"v{k} = {k}" for k in range(statements)) + "\n" + cells[i]["source"]
    )
    b.add(f"long-line-{statements}", _notebook(cells), OK)
    yield


def _tag_level(b: Builder) -> Iterator[None]:
    rng = b.rng
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    bad = rng.choice(
        [
            "resources:cpu=nan",
            "resources:cpu=inf",
            "resources:cpu=-inf",
            "resources:cpu=-4",
            "resources:cpu=0",
            "resources:cpu=1e999",
            "resources:cpu=0m",
            "resources:memory=0",
            "resources:memory=nanGiB",
            "resources:memory=-1GiB",
            "resources:memory=1e999",
            "resources:gpu=-1",
            "resources:gpu=1.5",
            "resources:gpu=nan",
            "resources:disk=1",
            "resources:cpu",
            "limit:cpu:-1",
            "limit:memory:0",
            "limit:nvidia.com/gpu:-2",
            "timeout:0",
            "timeout:-5s",
            "timeout:nan",
            "timeout:infs",
            "timeout:1e999",
            "retries:-1",
            "retries:1e3",
            "retries:99999999999",
            "retries:two",
            "cache:maybe",
        ]
    )
    cells[i]["metadata"]["tags"] = [*cells[i]["metadata"]["tags"], bad]
    b.add("bad-tag-value", _notebook(cells), ERRORS, at(i))
    yield
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    name = rng.choice(
        [
            "t" * rng.choice([101, 201, 300, 5000]),
            "1abc",
            "-x",
            "a b",
            "a.b",
            "ünïcode",
            "",
            "a/b",
            "a;b",
            "a:b",
            "$x",
        ]
    )
    cells[i]["metadata"]["tags"] = [f"task:{name}"]
    b.add("bad-task-name", _notebook(cells), ERRORS, at(i))
    yield
    cells = b.base_cells()
    i = rng.choice([2, 3, 4])
    extra = rng.choice(
        [["task:other"], ["setup"], ["parameters"], ["skip"], ["step:another"], ["imports"]]
    )
    cells[i]["metadata"]["tags"] = [*cells[i]["metadata"]["tags"], *extra]
    b.add("conflicting-tags", _notebook(cells), ERRORS, at(i))
    yield
    cells = b.base_cells()
    cells[0]["metadata"]["tags"] = ["setup", rng.choice(["parameters", "task:s"])]
    b.add("conflicting-role-tags", _notebook(cells), ERRORS, at(0))
    yield
    cells = b.base_cells()
    cells[4]["metadata"]["tags"] = ["task:load"]
    b.add("duplicate-task", _notebook(cells), ERRORS, at(4))
    yield
    cells = b.base_cells()
    cells[2]["metadata"]["tags"] = ["task:load", "after:report"]
    b.add("cycle", _notebook(cells), ERRORS, r"cell \d\b.*\(id cell\d\).*cycle")
    yield
    cells = b.base_cells()
    cells[3]["metadata"]["tags"] = ["task:total", f"after:{rng.choice(['nowhere', 'x' * 300])}"]
    b.add("unknown-after", _notebook(cells), ERRORS, at(3))
    yield


def _valid_but_odd(b: Builder) -> Iterator[None]:
    """Notebooks that must compile, to schema-valid output."""
    rng = b.rng
    cells = b.base_cells()
    cells[3]["metadata"]["tags"] = [*cells[3]["metadata"]["tags"], "x" * rng.choice([10, 3000])]
    b.add("unknown-tag", _notebook(cells), OK)
    yield
    cells = b.base_cells()
    cells[3]["metadata"]["tags"] = [
        "task:total",
        "resources:cpu=2;memory=1GiB",
        "timeout:90s",
        "retries:2",
        "limit:nvidia.com/gpu:0",
    ]
    b.add("good-tags", _notebook(cells), OK)
    yield
    cells = [
        _cell("import math\n" + b.payload()),
        _cell("x = math.pi\n"),
        _cell("y = x * 2\n"),
    ]
    stem = rng.choice(
        ["1-analysis", "2024_report", "ünï", "my notebook", "-dash", "a" * 200, "x.y.z", "9"]
    )
    b.add("untagged-odd-name", _notebook(cells), OK, file_name=f"{stem}-{len(b.cases)}.ipynb")
    yield
    cells = b.base_cells()
    dup = rng.choice(["same", "cell2"])
    for c in cells[1:4]:
        c["id"] = dup
    b.add("duplicate-cell-ids", _notebook(cells), OK)
    yield
    nb = _notebook(b.base_cells())
    for c in nb["cells"]:
        del c["id"]
    nb["nbformat_minor"] = rng.choice([0, 4])
    b.add("no-cell-ids", nb, OK)
    yield


# (generator, times per round): the hostile ones more often than the valid ones, whose compile
# runs ruff (three processes) and dominates the corpus's time.
GENERATORS: list[tuple[Callable[[Builder], Iterator[None]], int]] = [
    (_json_level, 2),
    (_code_level, 2),
    (_tag_level, 4),
    (_valid_but_odd, 1),
]


def corpus(seed: int, marker: str, size: int = 1_100) -> list[Case]:
    """`size` cases (deterministic for a seed): rounds of every generator, each round drawing
    new values from the seeded random source."""
    b = Builder(random.Random(seed), marker)
    while len(b.cases) < size:
        for make, times in GENERATORS:
            for _ in range(times):
                for _ in make(b):
                    if len(b.cases) >= size:
                        return b.cases
    return b.cases
