"""Inference a reviewer can trust: each pattern a small notebook with every cell its own task.

The compile tests assert the edges a top-to-bottom run needs (and, for precision, the ones it
does not); the run test executes one notebook of these patterns as a pipeline on the shared
Dask cluster and in one kernel (papermill), and compares what every cell printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from compiler.compile.api import compile_notebook
from tests.nbutil import make_notebook


def _tasks(tmp_path: Path, cells: list[str], setup: str | None = None):
    """Compile `cells`, each its own task t0, t1, ...; return (tasks by name, diagnostics)."""
    tagged: list = [(setup, ["setup"])] if setup else []
    tagged += [(source, [f"task:t{i}"]) for i, source in enumerate(cells)]
    result = compile_notebook(make_notebook(tmp_path / "p.ipynb", tagged))
    return {t.name: t for t in result.pipeline.tasks}, result.diagnostics


def _ancestors(tasks, name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(tasks[name].upstream)
    while stack:
        up = stack.pop()
        if up not in seen:
            seen.add(up)
            stack.extend(tasks[up].upstream)
    return seen


# (cells, {reader: {name: producer}}): the producer each reader must take each name from.
SOUNDNESS = {
    "alias-append": (
        ["a = [1, 2]", "b = a", "b.append(3)", "print(a)"],
        {"t3": {"a": "t2"}, "t2": {"a": "t1", "b": "t1"}},
    ),
    "titanic-loop-over-container": (
        [
            "train = {'n': 1}\ntest = {'n': 2}",
            "combine = [train, test]",
            "for dataset in combine:\n    dataset['title'] = 'x'",
            "print(train)",
        ],
        {"t3": {"train": "t2"}},
    ),
    "fitted-scaler": (
        [
            "from sklearn.preprocessing import StandardScaler\n"
            "scaler = StandardScaler()\nX = [[1.0], [3.0]]",
            "X_s = scaler.fit_transform(X)",
            "print(scaler.transform(X))",
        ],
        {"t2": {"scaler": "t1", "X": "t0"}},
    ),
    "module-function-mutates-argument": (
        ["import random\ndeck = [1, 2, 3]", "random.shuffle(deck)", "print(deck)"],
        {"t2": {"deck": "t1"}},
    ),
    "heapq-bisect": (
        ["import heapq, bisect\nh = []", "heapq.heappush(h, 3)", "bisect.insort(h, 1)", "h"],
        {"t2": {"h": "t1"}, "t3": {"h": "t2"}},
    ),
    "numpy-out-and-augmented": (
        ["import numpy as np\narr = np.zeros(3)", "np.add(arr, 1, out=arr)", "arr += 1", "arr"],
        {"t2": {"arr": "t1"}, "t3": {"arr": "t2"}},
    ),
    "helper-mutates-argument": (
        ["def add(x, v):\n    x.append(v)", "items = []", "add(items, 1)", "print(items)"],
        {"t3": {"items": "t2"}},
    ),
    "helper-mutates-global": (
        ["REG = []\ndef reg(v):\n    REG.append(v)", "reg(2)", "print(REG)"],
        {"t2": {"REG": "t1"}},
    ),
    "decorator-registers": (
        [
            "REG = {}\ndef register(f):\n    REG[f.__name__] = f\n    return f",
            "@register\ndef g():\n    return 1",
            "print(sorted(REG))",
        ],
        {"t2": {"REG": "t1"}},
    ),
    "setattr-and-vars": (
        [
            "class Box:\n    pass\nbox = Box()",
            "setattr(box, 'size', 3)",
            "vars(box).update(colour='red')",
            "print(box.size, box.colour)",
        ],
        {"t2": {"box": "t1"}, "t3": {"box": "t2"}},
    ),
    "late-binding-global": (
        ["def rate():\n    return RATE", "RATE = 2", "print(rate())"],
        {"t2": {"rate": "t0", "RATE": "t1"}},
    ),
    "setdefault-chain": (
        ["d = {}", "d.setdefault('k', []).append(1)", "print(d)"],
        {"t2": {"d": "t1"}},
    ),
    "comprehension-of-appends": (
        ["results = []", "[results.append(i) for i in range(3)]", "print(results)"],
        {"t2": {"results": "t1"}},
    ),
    "pop-with-result-used": (
        ["frame = {'a': 1, 'target': 2}", "y = frame.pop('target')", "print(frame)"],
        {"t2": {"frame": "t1"}},
    ),
    "generator-draws": (
        [
            "import numpy as np\nrng = np.random.default_rng(0)",
            "a = rng.random()",
            "b = rng.random()",
            "print(a, b)",
        ],
        {"t2": {"rng": "t1"}},
    ),
    "pipeline-step-alias": (
        [
            "from sklearn.pipeline import make_pipeline\n"
            "from sklearn.linear_model import LinearRegression\n"
            "pipe = make_pipeline(LinearRegression())",
            "clf = pipe[-1]",
            "pipe.fit([[1], [2]], [1, 2])",
            "print(clf.coef_)",
        ],
        {"t3": {"clf": "t2"}, "t2": {"pipe": "t1", "clf": "t1"}},
    ),
    "class-built-from-an-object-holds-it": (
        [
            "from sklearn.pipeline import Pipeline\n"
            "from sklearn.preprocessing import StandardScaler\n"
            "from sklearn.linear_model import LinearRegression\nscaler = StandardScaler()",
            "pipe = Pipeline([('scale', scaler), ('model', LinearRegression())])",
            "pipe.fit([[1.0], [2.0]], [1, 2])",
            "print(scaler.mean_)",
        ],
        {"t3": {"scaler": "t2"}, "t2": {"pipe": "t1", "scaler": "t1"}},
    ),
    "figure-and-axes": (
        [
            "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()",
            "ax.plot([1, 2])",
            "print(len(fig.axes[0].lines))",
        ],
        {"t2": {"fig": "t1"}},
    ),
    "binding-that-may-not-happen": (
        ["z = 0\nflag = False", "if flag:\n    z = 1", "print(z)"],
        {"t1": {"z": "t0", "flag": "t0"}, "t2": {"z": "t1"}},
    ),
    "walrus-in-comprehension": (
        ["data = [1, 2, 3]", "big = [w for v in data if (w := v * 2) > 4]", "print(w, big)"],
        {"t2": {"w": "t1", "big": "t1"}},
    ),
    "timeit-binds-nothing": (
        ["x = 1", "%timeit -n1 -r1 x = 2", "%%timeit -n1 -r1\nx = 3", "print(x)"],
        {"t3": {"x": "t0"}},
    ),
    "shell-interpolation-reads": (
        ["name = 'kiln'", "!echo {name} $name"],
        {"t1": {"name": "t0"}},
    ),
    "script-magic-binds-its-output": (
        ["%%bash --out shell_out\necho hi", "print(shell_out)"],
        {"t1": {"shell_out": "t0"}},
    ),
    "globals-subscript-binds": (
        ["globals()['x'] = 1", "print(x)"],
        {"t1": {"x": "t0"}},
    ),
    "try-name-error-idiom": (
        ["try:\n    total\nexcept NameError:\n    total = 0", "print(total)"],
        {"t1": {"total": "t0"}},
    ),
}


@pytest.mark.parametrize("pattern", sorted(SOUNDNESS))
def test_each_value_flow_of_the_pattern_is_an_input(tmp_path, pattern):
    cells, expected = SOUNDNESS[pattern]
    tasks, diagnostics = _tasks(tmp_path, cells)
    assert not [d for d in diagnostics if d.severity == "error"], [d.render() for d in diagnostics]
    for reader, inputs in expected.items():
        for name, producer in inputs.items():
            assert tasks[reader].inputs.get(name) == producer, (pattern, reader, name)


def test_a_task_that_changes_a_value_runs_after_the_tasks_that_read_it_before(tmp_path):
    tasks, _ = _tasks(tmp_path, ["x = [1]", "print(x)", "x.append(2)", "print(x)"])
    # On one worker the two tasks share the object: the reader must see it unchanged.
    assert "t1" in tasks["t2"].upstream
    assert tasks["t3"].inputs == {"x": "t2"}


def test_a_file_written_and_read_by_literal_path_is_an_edge(tmp_path):
    tasks, _ = _tasks(
        tmp_path,
        [
            "frame = pd.DataFrame({'a': [1]})",
            "frame.to_csv('clean.csv')",
            "back = pd.read_csv('clean.csv')",
            "pd.DataFrame({'a': [2]}).to_csv('clean.csv')",
        ],
        setup="import pandas as pd",
    )
    assert "t1" in tasks["t2"].upstream  # writer before reader
    assert {"t1", "t2"} <= set(tasks["t3"].upstream)  # a later writer after both
    assert tasks["t2"].reads_files == ["clean.csv"]  # the file is in the reader's cache key


def test_del_unbinds_for_later_cells(tmp_path):
    tasks, diagnostics = _tasks(tmp_path, ["big = [1]", "print(len(big))", "del big", "big"])
    assert tasks["t2"].inputs == {"big": "t0"}  # del needs the name where it runs
    errors = [d for d in diagnostics if d.code == "undefined-name"]
    assert len(errors) == 1 and "deleted" in errors[0].message and errors[0].cell_index == 3


def test_state_changes_are_replayed_before_later_tasks(tmp_path):
    tagged = [
        ("%env KILN_FLAG=1\nimport sys\nsys.path.insert(0, 'lib')", ["task:a"]),
        ("import os\nprint(os.environ['KILN_FLAG'])", ["task:b"]),
    ]
    spec = compile_notebook(make_notebook(tmp_path / "s.ipynb", tagged)).spec
    b = next(t for t in spec["tasks"] if t["name"] == "b")
    assert "run_line_magic('env', 'KILN_FLAG=1')" in b["setup"]
    assert "sys.path.insert(0, 'lib')" in b["setup"]


def test_names_the_compiler_cannot_see_are_warnings_naming_the_cell(tmp_path):
    tasks, diagnostics = _tasks(
        tmp_path,
        ["exec('y = 2')", "print(y)", "%run helpers.py", "print(thing)", "from math import *"],
    )
    unseen = {d.cell_index: d.message for d in diagnostics if d.code == "unseen-names"}
    assert "exec" in unseen[0] and "'y'" in unseen[0]
    assert "%run helpers.py" in unseen[2] and "'thing'" in unseen[2]
    assert tasks["t1"].inputs == {"y": "t0"} and tasks["t3"].inputs == {"thing": "t2"}
    assert "sqrt" in tasks["t4"].binds  # resolved against the installed module
    assert not [d for d in diagnostics if d.severity == "error"]


def test_a_star_import_of_the_notebooks_own_package_is_never_imported_at_compile_time(
    tmp_path, monkeypatch
):
    # The notebook's folder is on sys.path (`kiln check` run from it): find_spec("mylib.tools")
    # would import mylib, running the notebook's own code.
    package = tmp_path / "mylib"
    package.mkdir()
    marker = tmp_path / "imported.txt"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (package / "tools.py").write_text("def helper():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks, diagnostics = _tasks(tmp_path, ["from mylib.tools import *", "from json import *"])
    assert not marker.exists()
    assert any(d.code == "unseen-names" and d.cell_index == 0 for d in diagnostics)
    assert "loads" in tasks["t1"].binds  # an installed module's names still resolve


def test_extensions_stores_and_namespace_updates_warn_and_provide_names(tmp_path):
    tasks, diagnostics = _tasks(
        tmp_path,
        [
            "%load_ext lineapy",
            "print(lineapy.__name__)",
            "%store -r saved",
            "print(saved)",
            "vars().update(q=1)",
            "print(q)",
        ],
    )
    unseen = {d.cell_index: d.message for d in diagnostics if d.code == "unseen-names"}
    assert set(unseen) == {0, 2, 4}, [d.render() for d in diagnostics]
    assert "%load_ext lineapy" in unseen[0] and "'lineapy'" in unseen[0]
    assert tasks["t1"].inputs == {"lineapy": "t0"}
    assert tasks["t3"].inputs == {"saved": "t2"} and tasks["t5"].inputs == {"q": "t4"}
    # The extension is loaded again before each later task, as the kernel has it loaded.
    assert "load_ext" in tasks["t5"].setup[0].statement.source
    assert not [d for d in diagnostics if d.severity == "error"]


def test_a_read_in_a_branch_is_a_warning_when_nothing_binds_it(tmp_path):
    tasks, diagnostics = _tasks(
        tmp_path, ["DEBUG = False", "if DEBUG:\n    print(debug_state)\nprint(DEBUG)"]
    )
    assert [d.code for d in diagnostics] == ["undefined-in-branch"]
    assert diagnostics[0].cell_index == 1 and diagnostics[0].line == 2
    assert tasks["t1"].inputs == {"DEBUG": "t0"}


def test_the_output_history_is_an_edge_from_the_cell_that_showed_it(tmp_path):
    tasks, diagnostics = _tasks(
        tmp_path, ["1 + 1", "x = 3", "print('hi')", "x * 2;", "print(_, Out[1])"]
    )
    # `_` is cell 0's result (cells 1-3 show nothing); Out[1] is the same cell, execution 1.
    assert tasks["t4"].inputs == {"_kiln_out_1_0": "t0"}
    assert tasks["t0"].outputs == ["_kiln_out_1_0"]
    assert not [d for d in diagnostics if d.code == "previous-output"]


HISTORY_CELLS = [
    "import numpy as np\nvalues = np.arange(4)",
    "values.sum()",
    "values * 2",
    "print('plain', _, __)",
    "len(values);",
    "print('out', Out[2], _3.tolist())",
    "'text'",
    "print('last', _, __, ___)",
]


@pytest.mark.timeout(300)
def test_the_output_history_a_task_reads_is_the_kernels(tmp_path, capsys, dask_scheduler_address):
    papermill = pytest.importorskip("papermill")
    from compiler.cli import main as cli

    cells = [(source, [f"task:t{i}"]) for i, source in enumerate(HISTORY_CELLS)]
    notebook = make_notebook(tmp_path / "history.ipynb", cells)
    kernel_out = tmp_path / "kernel.ipynb"
    papermill.execute_notebook(
        str(notebook), str(kernel_out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False
    )
    expected = _printed(kernel_out)
    assert expected[5] == "out 6 [0, 2, 4, 6]\n"
    code = cli.main(["run", str(notebook), "--json", "--scheduler", dask_scheduler_address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    got = _printed(Path(json.loads(captured.out)["output_notebook"]))
    assert [got[i] for i in (3, 5, 7)] == [expected[i] for i in (3, 5, 7)]


def test_a_helper_reading_a_global_gets_it_delivered_at_its_call_site(tmp_path):
    tasks, diagnostics = _tasks(
        tmp_path,
        [
            "def price(v):\n    return v * RATE",
            "RATE = 3",
            "print(price(2))",
            "RATE = 4",
            "print(price(2))",
        ],
    )
    assert not diagnostics
    assert tasks["t0"].inputs == {}  # defining it reads nothing yet
    assert tasks["t2"].inputs == {"price": "t0", "RATE": "t1"}
    assert tasks["t4"].inputs == {"price": "t0", "RATE": "t3"}


# --- precision: what does not change an object makes no edge ------------------------------------


def test_looking_at_data_orders_nothing_after_it(tmp_path):
    tasks, _ = _tasks(
        tmp_path,
        [
            "df = pd.DataFrame({'a': [1, 2], 'b': [3, 4]})",
            "df.head(10)",
            "df.describe()",
            "df.columns",
            "sns.pairplot(df)",
            "len(df), sorted(df.columns)",
            "df.groupby('a').agg('sum')",
            "clean = df.dropna().sort_values('a')",
            "print(df.shape)",
        ],
        setup="import pandas as pd\nimport seaborn as sns",
    )
    for reader in ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"):
        assert tasks[reader].upstream == ["t0"], reader
        assert tasks[reader].outputs == [] or reader == "t7"


def test_predicting_with_a_fitted_model_does_not_order_other_predictions(tmp_path):
    tasks, _ = _tasks(
        tmp_path,
        [
            "X = [[0.0], [1.0], [2.0]]\ny = [0, 1, 1]\nmodel = LogisticRegression()",
            "model.fit(X, y)",
            "print(model.predict(X))",
            "print(model.score(X, y))",
        ],
        setup="from sklearn.linear_model import LogisticRegression",
    )
    assert tasks["t2"].inputs == {"model": "t1", "X": "t0"}
    assert tasks["t3"].upstream == ["t1", "t0"]  # not after t2


def test_kale_block_tag_without_a_name_joins_the_step_above(tmp_path):
    nb = make_notebook(
        tmp_path / "kale.ipynb",
        [
            ("x = 1", ["block:load"]),
            ("y = x + 1", ["block:"]),
            ("print(y)", ["step:report", "prev:load"]),
        ],
    )
    result = compile_notebook(nb)
    assert result.ok, [d.render() for d in result.diagnostics]
    tasks = {t["name"]: t for t in result.spec["tasks"]}
    assert [c["cell_index"] for c in tasks["load"]["code"]] == [0, 1]
    assert tasks["report"]["inputs"] == {"y": "load"}


def test_a_syntax_error_names_its_task(tmp_path):
    nb = make_notebook(tmp_path / "s.ipynb", [("x = 1", ["task:load"]), "y = (", "z = 2"])
    errors = [d for d in compile_notebook(nb).diagnostics if d.code == "syntax-error"]
    assert errors[0].message.startswith("task 'load': syntax error")
    assert errors[0].cell_index == 1


# --- run time: the pipeline prints what the kernel prints ------------------------------------

RUN_CELLS = [
    "a = [1, 2]",
    "b = a",
    "b.append(3)",
    "print('alias', a)",
    "train = {'n': 1}\ntest = {'n': 2}",
    "combine = [train, test]",
    "for dataset in combine:\n    dataset['title'] = 'x'",
    "print('titanic', train)",
    "import random\ndeck = list(range(6))",
    "random.seed(3)\nrandom.shuffle(deck)",
    "print('deck', deck)",
    "import numpy as np\narr = np.zeros(3)",
    "np.add(arr, 1, out=arr)",
    "arr += 1",
    "print('arr', arr.tolist())",
    "def add(x, v):\n    x.append(v)",
    "add(a, 4)",
    "print('helper', a, b)",
    "def rate_of(v):\n    return v * RATE",
    "RATE = 3",
    "print('late', rate_of(2))",
    "d = {}",
    "d.setdefault('k', []).append(1)",
    "print('setdefault', d)",
    "results = []",
    "[results.append(i) for i in range(3)]",
    "print('comprehension', results)",
    "from sklearn.preprocessing import StandardScaler\nscaler = StandardScaler()\n"
    "X = [[1.0], [3.0]]",
    "X_s = scaler.fit_transform(X)",
    "print('scaler', scaler.transform([[2.0]]).tolist())",
    "from sklearn.pipeline import Pipeline\nfrom sklearn.linear_model import LinearRegression\n"
    "inner = StandardScaler()\npipe = Pipeline([('s', inner), ('m', LinearRegression())])",
    "pipe.fit([[1.0], [3.0]], [1, 2])",
    "print('pipeline step', inner.mean_.tolist())",
    "z = 0\nflag = False",
    "if flag:\n    z = 1",
    "print('maybe', z)",
    "x = 1",
    "%timeit -n1 -r1 x = 2",
    "print('timeit', x)",
    "big = [1, 2, 3]",
    "print('big', len(big))",
    "del big",
    "with open('note.txt', 'w') as f:\n    f.write('written')",
    "print('file', open('note.txt').read())",
]


def _printed(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    return [
        "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


@pytest.mark.timeout(300)
def test_the_pipeline_prints_what_a_top_to_bottom_kernel_run_prints(
    tmp_path, capsys, dask_scheduler_address
):
    papermill = pytest.importorskip("papermill")
    from compiler.cli import main as cli

    cells = [(source, [f"task:t{i}"]) for i, source in enumerate(RUN_CELLS)]
    notebook = make_notebook(tmp_path / "patterns.ipynb", cells)
    kernel_out = tmp_path / "kernel.ipynb"
    papermill.execute_notebook(
        str(notebook), str(kernel_out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False
    )
    (tmp_path / "note.txt").unlink()

    code = cli.main(["run", str(notebook), "--json", "--scheduler", dask_scheduler_address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    expected = [text for text in _printed(kernel_out)]
    got = _printed(Path(summary["output_notebook"]))
    printing = [i for i, source in enumerate(RUN_CELLS) if source.startswith("print(")]
    assert [got[i] for i in printing] == [expected[i] for i in printing]
    assert "alias [1, 2, 3]" in expected[3] and "titanic {'n': 1, 'title': 'x'}" in expected[7]

    # A rerun of the readers alone takes the changed values from the cache, not stale ones.
    readers = ["t3", "t7", "t17", "t29", "t32"]
    code = cli.main(
        ["run", str(notebook), "--json", "--scheduler", dask_scheduler_address, "--force", *readers]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    again = _printed(Path(json.loads(captured.out)["output_notebook"]))
    assert [again[int(r[1:])] for r in readers] == [expected[int(r[1:])] for r in readers]


# --- run time: a change the compiler cannot see -----------------------------------------------


UNSEEN_CELLS = [
    # Every cell its own task. The compiler cannot see `grow` change items and arr: the
    # methods are looked up by name (getattr), so nothing tells it they mutate.
    "import numpy as np\nitems = [1, 2]\narr = np.zeros(3)",
    "print('before', len(items), arr.sum())",
    "add = getattr(items, 'append')\nadd(3)\ngetattr(arr, '__iadd__')(2.0)",
    "print('after', items, arr.sum())",
    "total = len(items) + float(arr.sum())",
    "print('total', total)",
]


@pytest.mark.timeout(300)
def test_a_change_the_compiler_cannot_see_is_handed_on_as_the_kernel_has_it(
    tmp_path, capsys, dask_scheduler_address
):
    papermill = pytest.importorskip("papermill")
    from compiler.cli import main as cli

    cells = [(source, [f"task:t{i}"]) for i, source in enumerate(UNSEEN_CELLS)]
    notebook = make_notebook(tmp_path / "unseen.ipynb", cells)
    kernel_out = tmp_path / "kernel.ipynb"
    papermill.execute_notebook(
        str(notebook), str(kernel_out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False
    )
    expected = _printed(kernel_out)
    assert expected[1] == "before 2 0.0\n" and expected[3] == "after [1, 2, 3] 6.0\n"

    for attempt in ("first", "cached", "forced"):
        extra = ["--force", "t2", "t1"] if attempt == "forced" else []
        code = cli.main(
            ["run", str(notebook), "--json", "--scheduler", dask_scheduler_address, *extra]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err
        summary = json.loads(captured.out)
        assert summary["status"] == "succeeded"
        got = _printed(Path(summary["output_notebook"]))
        assert got == expected, attempt  # earlier readers unchanged, later ones changed
        grow = next(t for t in summary["tasks"] if t["name"] == "t2")
        names = sorted(w["name"] for w in grow["warnings"])
        assert names == ["arr", "items"], attempt
        # The changed values are t2's outputs now, stored like any other.
        assert grow["outputs"]["items"]["digest"] and grow["outputs"]["arr"]["digest"]
        message = next(w["message"] for w in grow["warnings"] if w["name"] == "items")
        assert "task 't2' changed 'items' in place (cell 2)" in message
        assert "from 't0'" in message and "`items = items`" in message
        assert "kiln: warning: task 't2' changed" in captured.err

    # `kiln check` says the same, from the last run's recorded warnings.
    code = cli.main(["check", str(notebook)])
    out = capsys.readouterr().out
    assert "cell 2: warning: the last run" in out and "`items = items`" in out

    # The fix the warning names: the compiler then makes t2 the producer, nothing is re-exported.
    fixed_cells = list(cells)
    fixed_cells[2] = (UNSEEN_CELLS[2] + "\nitems = items\narr = arr", ["task:t2"])
    fixed = make_notebook(tmp_path / "fixed.ipynb", fixed_cells)
    code = cli.main(["run", str(fixed), "--json", "--scheduler", dask_scheduler_address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert _printed(Path(summary["output_notebook"])) == expected
    assert all(not t["warnings"] for t in summary["tasks"])


@pytest.mark.timeout(300)
def test_kiln_verify_compares_each_task_with_a_top_to_bottom_run(
    tmp_path, capsys, dask_scheduler_address
):
    pytest.importorskip("papermill")
    from compiler.cli import main as cli

    good = make_notebook(
        tmp_path / "good.ipynb",
        [
            ("import numpy as np\narr = np.arange(4.0)\nitems = [1]", ["task:make"]),
            ("arr += 1\nitems.append(2)", ["task:change"]),
            ("total = float(arr.sum()) + len(items)", ["task:report"]),
        ],
    )
    code = cli.main(["verify", str(good), "--scheduler", dask_scheduler_address])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "make: same arr, items" in out and "change: same arr, items" in out

    bad = make_notebook(
        tmp_path / "bad.ipynb",
        [
            ("items = [1, 2]", ["task:make"]),
            ("add = getattr(items, 'append')\nadd(3)", ["task:grow"]),
            ("n = len(items)", ["task:report"]),
            ("print(n)", ["task:show"]),
        ],
    )
    code = cli.main(["verify", str(bad), "--scheduler", dask_scheduler_address])
    out = capsys.readouterr().out
    # The change the compiler did not see is re-exported: the pipeline equals the notebook,
    # and verify says what to add so the compiler sees it.
    assert code == 0, out
    assert "report: same n" in out
    assert "kiln: warning: task 'grow' changed 'items' in place" in out


def _changing_pipeline(*, early_reader: bool = False, gate: bool = False):
    """make -> grow (changes `items` in place, unseen) -> report, every cell its own task;
    `look` (optional) reads `items` before grow in notebook order; `gate` makes report wait
    for another task so it has not run when grow reports."""
    from tests.test_runtime_state import pipeline, task

    tasks = [task("make")]
    if early_reader:
        tasks.append(task("look", inputs={"items": "make"}))
    tasks.append(task("grow", inputs={"items": "make"}))
    if gate:
        tasks.append(task("slow"))
    report = task("report", inputs={"items": "make"})
    if gate:
        report["upstream"] = ["make", "slow"]
    tasks.append(report)
    for i, t in enumerate(tasks):
        t["code"][0]["cell_index"] = i
    return pipeline(*tasks)


def _out(name: str, digest: str, content: str) -> dict[str, Any]:
    return {name: {"digest": digest, "content_digest": content}}


MADE = {"duration": 0.1, "cells": [], "worker": "tcp://w1", "outputs": _out("items", "d" * 32, "1")}
GREW = {
    **MADE,
    "outputs": _out("items", "e" * 32, "2"),  # the executor hands the changed value on
    "changed_inputs": [{"name": "items", "cell_index": 2, "cell_id": "c-grow"}],
    "input_digests": {"items": "1"},
}


def test_a_reader_that_ran_before_an_unseen_change_reruns_with_the_changed_value():
    from compiler.runtime.state import AttemptSucceeded, Started
    from tests.test_runtime_state import OK, key_of, state_for, statuses, submits

    state = state_for(_changing_pipeline())
    state.handle(Started(0.0))
    after_make = state.handle(AttemptSucceeded("make", key_of(state, "make"), MADE, 0.1))
    assert submits(after_make) == ["grow", "report"]  # both read make's items, in parallel
    first_report = key_of(state, "report")
    state.handle(
        AttemptSucceeded("report", first_report, {**OK, "input_digests": {"items": "1"}}, 0.2)
    )
    decided = state.handle(AttemptSucceeded("grow", key_of(state, "grow"), GREW, 0.3))
    assert ("grow", "done") in statuses(decided)
    assert ("report", "retrying") in statuses(decided) and submits(decided) == ["report"]
    # The rerun receives items from grow, which handed the changed value on.
    assert state.producers_of("report") == {"items": "grow"}
    assert key_of(state, "report") != first_report
    state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.4))
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.status == "succeeded"
    (warning,) = result.task("grow").warnings
    assert warning["name"] == "items" and warning["rerun"] == ["report"]
    assert "changed 'items' in place (cell 2)" in warning["message"]
    assert "`items = items`" in warning["message"]
    # A later run served from the cache re-exports it again (the manifest says so).
    grow_manifest = next(
        i.manifest for i in decided if type(i).__name__ == "StoreManifest" and i.task == "grow"
    )
    assert grow_manifest["reexports"][0]["name"] == "items"


def test_a_reader_not_yet_run_is_replanned_to_wait_for_the_changed_value():
    from compiler.runtime.state import AttemptSucceeded, Started
    from tests.test_runtime_state import OK, key_of, state_for, statuses, submits

    state = state_for(_changing_pipeline(gate=True))
    state.handle(Started(0.0))
    state.handle(AttemptSucceeded("make", key_of(state, "make"), MADE, 0.1))
    decided = state.handle(AttemptSucceeded("grow", key_of(state, "grow"), GREW, 0.2))
    assert "report" not in submits(decided)  # still waits for slow
    assert ("report", "retrying") not in statuses(decided)
    after_slow = state.handle(AttemptSucceeded("slow", key_of(state, "slow"), OK, 0.3))
    assert submits(after_slow) == ["report"]
    assert state.producers_of("report") == {"items": "grow"}
    state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.4))
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.status == "succeeded" and result.task("report").attempts == 1
    assert result.task("grow").warnings[0]["replanned"] == ["report"]


def test_an_earlier_reader_that_shared_the_changed_object_reruns_from_the_store():
    from compiler.runtime.state import AttemptSucceeded, Started
    from tests.test_runtime_state import OK, key_of, state_for, statuses, submits

    state = state_for(_changing_pipeline(early_reader=True))
    state.handle(Started(0.0))
    state.handle(AttemptSucceeded("make", key_of(state, "make"), MADE, 0.1))
    state.handle(AttemptSucceeded("grow", key_of(state, "grow"), GREW, 0.2))
    # look ran after grow on the same worker: it got the changed object, which the notebook
    # never shows it (look comes before grow). Its input digest gives it away.
    stale = {**OK, "input_digests": {"items": "2"}}
    decided = state.handle(AttemptSucceeded("look", key_of(state, "look"), stale, 0.3))
    assert ("look", "retrying") in statuses(decided) and submits(decided) == ["look"]
    assert state.producers_of("look") == {"items": "make"}
    assert state.from_store("look") == {"make"}  # the stored, unchanged value
    fresh = {**OK, "input_digests": {"items": "1"}}
    state.handle(AttemptSucceeded("look", key_of(state, "look"), fresh, 0.4))
    # report was running with make's items when grow reported: its attempt is let finish
    # (what it changes in place still counts), then it runs again with grow's.
    voided = state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.5))
    assert ("report", "retrying") in statuses(voided) and submits(voided) == ["report"]
    assert state.producers_of("report") == {"items": "grow"}
    state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.6))
    assert state.result(parameters={}, dashboard=None, store_url=None).status == "succeeded"


def test_without_a_store_an_earlier_reader_gets_the_value_recomputed():
    from compiler.runtime.plan import PlannedTask, RunPlan
    from compiler.runtime.state import AttemptSucceeded, RunState, Started
    from tests.test_runtime_state import OK, RUN_ID, key_of, statuses, submits

    spec = _changing_pipeline(early_reader=True, gate=True)
    spec.task("look")  # exists
    look = next(t for t in spec.tasks if t.name == "look")
    assert look.inputs == {"items": "make"}
    plan = RunPlan(
        {t.name: PlannedTask(f"{t.name}-key-0123", None, None, None) for t in spec.tasks},
        [t.name for t in spec.tasks],
    )
    state = RunState(spec, plan, run_id=RUN_ID, use_cache=False)
    state.handle(Started(0.0))
    unstored = {**MADE, "outputs": {"items": {"digest": None, "content_digest": "1"}}}
    state.handle(AttemptSucceeded("make", key_of(state, "make"), unstored, 0.1))
    grew = {**GREW, "outputs": {"items": {"digest": None, "content_digest": "2"}}}
    stale = {**OK, "input_digests": {"items": "2"}}
    state.handle(AttemptSucceeded("grow", key_of(state, "grow"), grew, 0.2))
    decided = state.handle(AttemptSucceeded("look", key_of(state, "look"), stale, 0.3))
    # No stored copy of make's items: make runs again, and look waits for it.
    assert ("make", "retrying") in statuses(decided) and submits(decided) == ["make"]
    again = state.handle(AttemptSucceeded("make", key_of(state, "make"), unstored, 0.4))
    assert "look" in submits(again) and ("grow", "retrying") not in statuses(again)
    state.handle(AttemptSucceeded("look", key_of(state, "look"), OK, 0.5))
    state.handle(AttemptSucceeded("slow", key_of(state, "slow"), OK, 0.6))
    state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.7))
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.status == "succeeded"
    assert state.producers_of("report") == {"items": "grow"}


def test_a_cached_run_replays_the_reexport_and_keeps_the_readers_cache_hit():
    from compiler.runtime.state import Started
    from tests.test_runtime_state import state_for, statuses

    grow_hit = {
        "outputs": _out("items", "e" * 32, "2"),
        "cells": [],
        "sources": {"items": "make"},
        "reexports": [{"name": "items", "cell_index": 2, "cell_id": "c-grow", "line": None}],
    }
    report_hit = {"outputs": {}, "cells": [], "sources": {"items": "grow"}}
    make_hit = {"outputs": _out("items", "d" * 32, "1"), "cells": []}
    state = state_for(
        _changing_pipeline(), hits={"make": make_hit, "grow": grow_hit, "report": report_hit}
    )
    decided = state.handle(Started(0.0))
    assert [s for s in statuses(decided) if s[1] != "waiting"] == [
        ("make", "cached"),
        ("grow", "cached"),
        ("report", "cached"),
    ]
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.task("grow").warnings[0]["name"] == "items"


def test_a_change_seen_first_by_a_reader_it_reached_is_put_right_when_its_author_reports():
    """grow changed make's items while a transfer copied it to look's worker; look (before grow
    in the notebook, its arrival digest unknown: arrays start from the producer's digest)
    reports the change first and is taken for its author. When grow reports, look reruns from
    the store and what it re-exported goes back to make."""
    from compiler.runtime.state import AttemptSucceeded, Started
    from tests.test_runtime_state import OK, key_of, state_for, statuses, submits

    state = state_for(_changing_pipeline(early_reader=True))
    state.handle(Started(0.0))
    state.handle(AttemptSucceeded("make", key_of(state, "make"), MADE, 0.1))
    seen = {**GREW, "changed_inputs": [{"name": "items", "cell_index": 1, "cell_id": "c-look"}]}
    seen.pop("input_digests")
    state.handle(AttemptSucceeded("look", key_of(state, "look"), seen, 0.2))
    assert state.producers_of("grow") == {"items": "make"}  # its attempt in flight
    grew = {**GREW}
    grew.pop("input_digests")
    decided = state.handle(AttemptSucceeded("grow", key_of(state, "grow"), grew, 0.3))
    assert ("look", "retrying") in statuses(decided) and ("grow", "retrying") in statuses(decided)
    assert state.from_store("look") == {"make"}
    assert state.producers_of("look") == {"items": "make"}
    assert state.producers_of("grow") == {"items": "make"}  # look's re-export is undone
    assert set(submits(decided)) >= {"look", "grow"}
    state.handle(AttemptSucceeded("look", key_of(state, "look"), OK, 0.4))
    state.handle(AttemptSucceeded("grow", key_of(state, "grow"), GREW, 0.5))
    state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.6))
    if state.current_key("report") is not None:  # voided: it ran while things changed
        state.handle(AttemptSucceeded("report", key_of(state, "report"), OK, 0.7))
    result = state.result(parameters={}, dashboard=None, store_url=None)
    assert result.status == "succeeded"
    assert state.producers_of("report") == {"items": "grow"}
    assert [w["task"] for w in result.task("grow").warnings] == ["grow"]
    assert not result.task("look").warnings
