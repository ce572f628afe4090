"""The compiler on realistic notebooks: exact edges, outputs, datasets and diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import nbformat
import pytest

from compiler.compile.api import compile_notebook, compile_notebook_json
from compiler.compile.emit import pipeline_schema
from compiler.model.diagnostics import NotebookLoadError
from tests.nbutil import make_notebook

NOTEBOOKS = Path(__file__).parent / "notebooks"


def tasks_of(spec):
    return {t["name"]: t for t in spec["tasks"]}


def diag_tuples(result):
    return [(d.severity, d.code, d.cell_index, d.line, d.col) for d in result.diagnostics]


# --- train-two-models: the shape of real ML work ------------------------------------------------


def test_two_models_notebook_compiles_to_the_expected_dag():
    result = compile_notebook(NOTEBOOKS / "train_two_models.ipynb")
    assert result.ok, [d.render() for d in result.diagnostics]
    spec = result.spec
    jsonschema.validate(spec, pipeline_schema())
    tasks = tasks_of(spec)
    assert [t["name"] for t in spec["tasks"]] == [
        "load",
        "clean",
        "features",
        "train_logreg",
        "train_forest",
        "evaluate",
    ]
    assert tasks["load"]["upstream"] == []
    assert tasks["clean"]["inputs"] == {"raw": "load"}
    assert tasks["features"]["inputs"] == {"clean": "clean"}
    assert tasks["features"]["parameters"] == ["seed", "test_size"]
    # The two models only need the features: they are parallel branches.
    assert tasks["train_logreg"]["inputs"] == {"X_train_s": "features", "y_train": "features"}
    assert tasks["train_forest"]["inputs"] == {"X_train": "features", "y_train": "features"}
    assert tasks["train_forest"]["parameters"] == ["n_trees", "seed"]
    assert tasks["evaluate"]["upstream"] == ["features", "train_logreg", "train_forest"]
    # Only what downstream reads is an output.
    assert tasks["features"]["outputs"] == [
        "X_train",
        "X_test",
        "y_train",
        "y_test",
        "X_train_s",
        "X_test_s",
    ]
    assert tasks["load"]["outputs"] == ["raw"]
    assert tasks["evaluate"]["outputs"] == []
    # Two cells belong to `clean` (the untagged one follows it); the skip cell belongs to nobody.
    assert len(tasks["clean"]["cells"]) == 2
    assert all("X_train.shape" not in c["source"] for t in spec["tasks"] for c in t["code"])
    # Policies from tags.
    assert tasks["train_logreg"]["resources"] == {"cpu": 1.0}
    assert tasks["train_logreg"]["retries"] == 2
    assert tasks["train_forest"]["resources"] == {"cpu": 1.0, "memory": 1024**3}
    assert tasks["train_forest"]["timeout"] == 600.0
    # External datasets found by the ast-grep rules.
    assert tasks["load"]["datasets"] == {"reads": ["data/wine.csv"], "writes": []}
    assert tasks["evaluate"]["datasets"] == {
        "reads": [],
        "writes": ["metrics.json", "accuracy.png"],
    }
    # Parameters and only the setup a task uses.
    assert spec["parameters"] == {"test_size": 0.25, "seed": 7, "n_trees": 50}
    assert "summarize" in tasks["load"]["setup"]
    assert "RandomForestClassifier" not in tasks["load"]["setup"]
    assert "import pandas as pd" in tasks["load"]["setup"]
    assert "from sklearn.ensemble import RandomForestClassifier" in tasks["train_forest"]["setup"]


def test_spec_json_is_stable_and_keyed_in_documented_order(tmp_path):
    a = compile_notebook(NOTEBOOKS / "train_two_models.ipynb").spec
    b = compile_notebook(NOTEBOOKS / "train_two_models.ipynb").spec
    assert json.dumps(a) == json.dumps(b)
    assert list(a) == [
        "schema_version",
        "name",
        "version",
        "notebook",
        "parameters",
        "parameters_source",
        "computed_parameters",
        "parameters_setup",
        "tasks",
    ]
    assert list(a["tasks"][0])[:4] == ["name", "version", "upstream", "inputs"]


# --- mutation chains --------------------------------------------------------------------------


def test_mutating_a_received_name_re_exports_it():
    spec = compile_notebook(NOTEBOOKS / "mutation_chain.ipynb").spec
    tasks = tasks_of(spec)
    assert tasks["add_column"]["inputs"] == {"df": "make"}  # df["b"] = ...
    assert tasks["add_column"]["outputs"] == ["df"]
    assert tasks["collect"]["inputs"] == {"items": "make", "df": "add_column"}  # items.append
    assert tasks["drop"]["inputs"] == {"df": "add_column"}  # inplace=True
    assert tasks["label"]["inputs"] == {"items": "collect", "box": "drop"}  # box.size = ...
    # The reader at the end sees every mutated version, not the original.
    assert tasks["report"]["inputs"] == {"df": "drop", "box": "label", "items": "collect"}
    assert tasks["report"]["upstream"] == ["drop", "label", "collect"]


def test_calling_a_module_function_does_not_export_the_module(tmp_path):
    nb = make_notebook(
        tmp_path / "m.ipynb",
        [
            ("import numpy as np\nimport matplotlib.pyplot as plt", ["setup"]),
            ("np.random.seed(0)\nx = np.random.rand(3)\nplt.plot(x)", ["task:a"]),
            ("y = np.sum(x)", ["task:b"]),
        ],
    )
    tasks = tasks_of(compile_notebook(nb).spec)
    assert tasks["a"]["outputs"] == ["x"]
    assert tasks["b"]["inputs"] == {"x": "a"}


# --- magics and shell lines -----------------------------------------------------------------------


def test_magics_and_shell_lines_are_understood_not_parsed_as_python():
    result = compile_notebook(NOTEBOOKS / "magics.ipynb")
    assert result.ok, [d.render() for d in result.diagnostics]
    tasks = tasks_of(result.spec)
    assert tasks["prepare"]["outputs"] == ["values"]  # bound by `%time values = ...`
    assert tasks["shell"]["inputs"] == {}  # a %%bash body is not Python
    # %%capture runs its body as Python: it reads `values` and binds its NAME.
    assert tasks["capture"]["inputs"] == {"values": "prepare"}
    assert tasks["capture"]["outputs"] == ["captured"]
    assert tasks["report"]["inputs"] == {"values": "prepare", "captured": "capture"}  # %%time body
    assert "get_ipython().run_line_magic('matplotlib', 'inline')" in tasks["prepare"]["setup"]
    # The original cell source (magics included) is what the runner executes.
    assert tasks["shell"]["code"][0]["source"].startswith("%%bash")
    pip = [d for d in result.diagnostics if d.code == "pip-install"]
    assert [(d.severity, d.cell_index, d.line) for d in pip] == [("warning", 1, 1)]


# --- Kale-tagged notebooks ------------------------------------------------------------------------


def test_a_capture_body_that_is_not_python_is_left_alone(tmp_path):
    nb = make_notebook(
        tmp_path / "cap.ipynb",
        [
            ("%%capture\n!make all\nthis is not python (", ["task:quiet"]),
        ],
    )
    result = compile_notebook(nb)
    assert result.ok and result.diagnostics == []


def test_kale_tags_compile_without_retagging():
    result = compile_notebook(NOTEBOOKS / "kale_tagged.ipynb")
    assert result.ok, [d.render() for d in result.diagnostics]
    spec = result.spec
    tasks = tasks_of(spec)
    # Kale's pipeline-metrics cell names metrics; it is not a step (Kale does not make it one).
    assert list(tasks) == ["loaddata", "transform", "train-model"]
    assert spec["metrics"] == [{"name": "peak", "task": "train-model", "source": "cell"}]
    assert spec["parameters"] == {"factor": 3, "n": 5}
    assert tasks["transform"]["upstream"] == ["loaddata"]
    assert tasks["transform"]["resources"] == {"gpu": 1}
    assert tasks["train-model"]["resources"] == {"memory": 2 * 1024**3}
    assert tasks["transform"]["parameters"] == ["factor"]
    assert "def scale(x, factor):" in tasks["transform"]["setup"]
    assert all("data.head()" not in c["source"] for t in spec["tasks"] for c in t["code"])


def test_untagged_notebook_is_one_task_named_after_the_file():
    spec = compile_notebook(NOTEBOOKS / "untagged.ipynb").spec
    assert [t["name"] for t in spec["tasks"]] == ["untagged"]
    assert len(spec["tasks"][0]["cells"]) == 3


# --- errors, each with its place ---------------------------------------------------------------


@pytest.mark.parametrize(
    "notebook, expected",
    [
        ("error_undefined", [("error", "undefined-name", 2, 1, 9)]),
        ("error_cycle", [("error", "cycle", 1, None, None)]),
        ("error_syntax", [("error", "syntax-error", 1, 1, 8)]),
        ("error_duplicate", [("error", "duplicate-task", 1, None, None)]),
        (
            "error_unknown_after",
            [("error", "unknown-after", 0, None, None), ("warning", "unknown-tag", 1, None, None)],
        ),
    ],
)
def test_each_error_names_its_cell_and_line(notebook, expected):
    result = compile_notebook(NOTEBOOKS / f"{notebook}.ipynb")
    assert not result.ok
    assert result.spec is None
    assert diag_tuples(result) == expected


def test_error_messages_say_what_is_wrong():
    undefined = compile_notebook(NOTEBOOKS / "error_undefined.ipynb").diagnostics[0]
    assert "'c'" in undefined.message and "second" in undefined.message
    cycle = compile_notebook(NOTEBOOKS / "error_cycle.ipynb").diagnostics[0]
    assert cycle.message == "tasks form a cycle: second -> third -> first -> second"
    unknown = compile_notebook(NOTEBOOKS / "error_unknown_after.ipynb").diagnostics
    assert "'nowhere'" in unknown[0].message
    assert "'retires:3'" in unknown[1].message


def test_not_a_notebook_is_a_load_error():
    with pytest.raises(NotebookLoadError, match="not a notebook"):
        compile_notebook(NOTEBOOKS / "not_a_notebook.ipynb")
    with pytest.raises(NotebookLoadError, match="no such file"):
        compile_notebook(NOTEBOOKS / "missing.ipynb")


def test_invalid_nbformat_is_a_load_error(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text(
        json.dumps(
            {"cells": [{"cell_type": "code"}], "nbformat": 4, "nbformat_minor": 5, "metadata": {}}
        )
    )
    with pytest.raises(NotebookLoadError, match="not a valid notebook"):
        compile_notebook(bad)


def test_name_read_before_its_task_binds_it_is_an_error(tmp_path):
    nb = make_notebook(
        tmp_path / "order.ipynb",
        [
            ("total = x + 1", ["task:use"]),
            ("x = 1", ["task:make"]),
        ],
    )
    result = compile_notebook(nb)
    assert diag_tuples(result) == [("error", "undefined-name", 0, 1, 9)]


def test_hazards_are_warnings_with_positions(tmp_path):
    nb = make_notebook(
        tmp_path / "hz.ipynb",
        [
            ("import random", ["setup"]),
            ("name = input('who?')\nvalue = random.random()", ["task:ask"]),
            ("random.seed(1)\nother = random.random()", ["task:seeded"]),
        ],
    )
    result = compile_notebook(nb)
    assert result.ok
    assert [(d.code, d.cell_index, d.line) for d in result.diagnostics] == [
        ("input", 1, 1),
        ("unseeded-random", 1, 2),
    ]


def test_bad_policy_tags_are_errors(tmp_path):
    nb = make_notebook(
        tmp_path / "p.ipynb",
        [
            ("x = 1", ["task:a", "resources:memory=lots"]),
            ("y = x", ["task:b", "timeout:soon"]),
        ],
    )
    result = compile_notebook(nb)
    assert [(d.code, d.cell_index) for d in result.diagnostics] == [("bad-tag", 0), ("bad-tag", 1)]
    assert "lots" in result.diagnostics[0].message


def test_after_tags_add_edges_and_are_listed_with_semicolons(tmp_path):
    nb = make_notebook(
        tmp_path / "after.ipynb",
        [
            ("a = 1", ["task:a"]),
            ("b = 2", ["task:b"]),
            ("print('done')", ["task:c", "after:a;b"]),
            ("print('really done')", ["task:d", "after:a", "after:c"]),
        ],
    )
    tasks = tasks_of(compile_notebook(nb).spec)
    assert tasks["c"]["upstream"] == ["a", "b"]
    assert tasks["d"]["upstream"] == ["a", "c"]
    assert tasks["c"]["inputs"] == {}


def test_functions_read_globals_when_called(tmp_path):
    nb = make_notebook(
        tmp_path / "fn.ipynb",
        [
            ("LIMIT = 3", ["parameters"]),
            ("def clip(v):\n    return min(v, LIMIT)", ["setup"]),
            ("values = [clip(v) for v in range(10)]", ["task:a"]),
            ("def helper():\n    return values[0]\n\nfirst = helper()", ["task:b"]),
        ],
    )
    tasks = tasks_of(compile_notebook(nb).spec)
    assert tasks["a"]["parameters"] == ["LIMIT"]  # through the setup function's body
    assert tasks["b"]["inputs"] == {"values": "a"}  # through its own function's body


def test_compile_unsaved_content():
    nb = nbformat.read(NOTEBOOKS / "mutation_chain.ipynb", as_version=4)
    result = compile_notebook_json(dict(nb), "mutation_chain.ipynb")
    assert result.ok
    assert result.spec["name"] == "mutation_chain"


# --- versions ------------------------------------------------------------------------------------


def _versions(path):
    return {t["name"]: t["version"] for t in compile_notebook(path).spec["tasks"]}


def test_formatting_and_comments_do_not_change_versions(tmp_path):
    base = [
        ("import math", ["setup"]),
        ("a = [1, 2, 3]", ["task:a"]),
        ("b = sum(a)", ["task:b"]),
        ("c = math.sqrt(b)", ["task:c"]),
    ]
    restyled = [
        ("import math  # for sqrt", ["setup"]),
        ("# the data\na = [1,2,3]", ["task:a"]),
        ("b = sum( a )\n\n", ["task:b"]),
        ("c = math.sqrt(\n    b\n)", ["task:c"]),
    ]
    v1 = _versions(make_notebook(tmp_path / "one.ipynb", base))
    v2 = _versions(make_notebook(tmp_path / "two.ipynb", restyled))
    assert v1 == v2


def test_a_change_moves_its_task_and_downstream_only(tmp_path):
    cells = [
        ("a = [1, 2, 3]", ["task:a"]),
        ("b = sum(a)", ["task:b"]),
        ("c = b * 2", ["task:c"]),
        ("d = len(a)", ["task:d"]),
    ]
    v1 = _versions(make_notebook(tmp_path / "one.ipynb", cells))
    cells[1] = ("b = sum(a) + 1", ["task:b"])
    v2 = _versions(make_notebook(tmp_path / "two.ipynb", cells))
    assert v1["a"] == v2["a"] and v1["d"] == v2["d"]
    assert v1["b"] != v2["b"] and v1["c"] != v2["c"]


def test_pipeline_version_changes_with_policies(tmp_path):
    a = compile_notebook(make_notebook(tmp_path / "a.ipynb", [("x = 1", ["task:t"])])).spec
    b = compile_notebook(
        make_notebook(tmp_path / "b.ipynb", [("x = 1", ["task:t", "retries:2"])])
    ).spec
    assert a["tasks"][0]["version"] == b["tasks"][0]["version"]
    assert a["version"] != b["version"]


@pytest.mark.parametrize(
    ("code", "inputs"),
    [
        ("z = [[y for y in r] for r in rows]", {"rows": "a"}),
        ("z = [(lambda q: q)(x) for x in rows]", {"rows": "a"}),
        ("z = {i: sum(v for v in r) for i, r in enumerate(rows)}", {"rows": "a"}),
        ("z = [t := t + len(r) for r in rows]", {"rows": "a", "t": "a"}),
        ("z = [rows for rows in rows]", {"rows": "a"}),  # the first iterable is read outside
    ],
)
def test_comprehension_scopes_read_only_what_comes_from_outside(tmp_path, code, inputs):
    nb = make_notebook(
        tmp_path / "comp.ipynb", [("rows = [[1], [2]]\nt = 0", ["task:a"]), (code, ["task:b"])]
    )
    result = compile_notebook(nb)
    assert [d.render() for d in result.diagnostics if d.severity == "error"] == []
    assert tasks_of(result.spec)["b"]["inputs"] == inputs


def test_a_setup_function_brings_the_imports_its_annotations_use(tmp_path):
    nb = make_notebook(
        tmp_path / "ann.ipynb",
        [
            ("import pandas as pd\nimport math", ["setup"]),
            ("def width(frame: pd.DataFrame) -> int:\n    return len(frame.columns)", ["setup"]),
            ("w = width(pd.DataFrame({'a': [1]}))", ["task:a"]),
        ],
    )
    setup = "".join(tasks_of(compile_notebook(nb).spec)["a"]["setup"])
    assert "import pandas as pd" in setup and "import math" not in setup


def test_an_empty_cell_tagged_as_a_task_still_starts_it(tmp_path):
    nb = make_notebook(
        tmp_path / "empty.ipynb",
        [("x = 1", ["task:a"]), ("", ["task:b"]), ("y = x", []), ("z = y", ["task:c", "after:b"])],
    )
    result = compile_notebook(nb)
    assert result.ok, [d.render() for d in result.diagnostics]
    tasks = tasks_of(result.spec)
    assert tasks["b"]["inputs"] == {"x": "a"} and tasks["c"]["inputs"] == {"y": "b"}


def test_tasks_whose_names_make_one_python_name_are_duplicates(tmp_path):
    nb = make_notebook(
        tmp_path / "dup.ipynb", [("x = 1", ["task:load-data"]), ("y = x", ["task:load_data"])]
    )
    result = compile_notebook(nb)
    assert not result.ok
    (dup,) = [d for d in result.diagnostics if d.code == "duplicate-task"]
    assert dup.cell_index == 1
    assert "'load_data' is already defined as 'load-data' (one Python name) in cell 0" in (
        dup.message
    )


def test_a_parameter_default_without_a_json_form_is_not_a_literal(tmp_path):
    nb = make_notebook(
        tmp_path / "p.ipynb",
        [("cols = {'alpha', 'beta', 'gamma'}\nn = 3", ["parameters"]), ("y = n", ["task:a"])],
    )
    result = compile_notebook(nb)
    assert result.spec["parameters"] == {"cols": None, "n": 3}
    assert result.spec["computed_parameters"] == ["cols"]
    assert [d.code for d in result.diagnostics] == ["parameter-computed"]


def test_computed_parameter_defaults_carry_the_setup_code_they_read(tmp_path):
    nb = make_notebook(
        tmp_path / "p.ipynb",
        [
            ("import datetime\nimport pandas as pd\nfrom pathlib import Path", ["setup"]),
            ("def day_before(d):\n    return d - datetime.timedelta(days=1)", ["setup"]),
            ("run_date = day_before(datetime.date.today())\nrows = 10", ["parameters"]),
            ("n = rows", ["task:a"]),
        ],
    )
    spec = compile_notebook(nb).spec
    assert spec["parameters"] == {"run_date": None, "rows": 10}
    assert spec["computed_parameters"] == ["run_date"]
    # Only what the defaults read (the helper and the module it uses), in notebook order.
    assert spec["parameters_setup"] == (
        "import datetime\ndef day_before(d):\n    return d - datetime.timedelta(days=1)\n"
    )


def test_timing_magics_with_options_are_analysed_after_their_options(tmp_path):
    nb = make_notebook(
        tmp_path / "timed.ipynb",
        [
            ("values = list(range(1000))\nscale = 3", ["task:load"]),
            ("%timeit -n3 -r 1 total = sum(v * scale for v in values)", ["task:bench"]),
            ("%prun -s cumulative -l 5 ranked = sorted(values)\nbest = ranked[-1]", ["task:rank"]),
        ],
    )
    result = compile_notebook(nb)
    assert result.ok, [d.render() for d in result.diagnostics]
    tasks = {t["name"]: t for t in result.spec["tasks"]}
    assert tasks["bench"]["inputs"] == {"scale": "load", "values": "load"}
    assert tasks["rank"]["inputs"] == {"values": "load"}


def test_what_a_parameters_cell_binds_besides_parameters_is_there_for_later_tasks(tmp_path):
    nb = make_notebook(
        tmp_path / "p.ipynb",
        [
            (
                "import datetime\nrun_date = '2026-01-01'\nlow, high = 0, 10\nprint('loaded')",
                ["parameters"],
            ),
            ("day = datetime.date.fromisoformat(run_date)\nspan = high - low", ["task:a"]),
        ],
    )
    result = compile_notebook(nb)
    assert result.ok, [d.render() for d in result.diagnostics]
    assert result.spec["parameters"] == {"run_date": "2026-01-01"}
    [task] = result.spec["tasks"]
    assert task["parameters"] == ["run_date"]
    # The import and the tuple run as the task's setup; the print and the parameter do not.
    assert task["setup"] == "import datetime\nlow, high = 0, 10\n"


def test_a_setup_cell_configures_only_the_tasks_after_it(tmp_path):
    nb = make_notebook(
        tmp_path / "seeded.ipynb",
        [
            ("import numpy as np", ["setup"]),
            ("before = np.random.rand(3)", ["task:before"]),
            ("np.random.seed(0)", ["setup"]),
            ("after = np.random.rand(3)", ["task:after"]),
        ],
    )
    tasks = {t["name"]: t for t in compile_notebook(nb).spec["tasks"]}
    # As when the notebook runs top to bottom: the seed is set after `before` ran.
    assert tasks["before"]["setup"] == "import numpy as np\n"
    assert tasks["after"]["setup"] == "import numpy as np\nnp.random.seed(0)\n"


def test_a_setup_function_may_read_a_global_that_the_calling_task_binds(tmp_path):
    nb = make_notebook(
        tmp_path / "helpers.ipynb",
        [
            ("def summarize():\n    return len(frame)", ["setup"]),
            ("frame = [1, 2, 3]\nn = summarize()", ["task:a"]),
            ("m = summarize()", ["task:b"]),  # reads a's frame through the function
        ],
    )
    result = compile_notebook(nb)
    assert result.ok, [d.render() for d in result.diagnostics]
    tasks = {t["name"]: t for t in result.spec["tasks"]}
    assert tasks["a"]["inputs"] == {}
    assert tasks["b"]["inputs"] == {"frame": "a"}

    lone = make_notebook(
        tmp_path / "lone.ipynb", [("def f():\n    return g\n", ["setup"]), ("x = f()", ["task:t"])]
    )
    assert [d.code for d in compile_notebook(lone).diagnostics] == ["undefined-name"]


def test_hazards_in_setup_cells_are_reported_once_at_the_cell(tmp_path):
    nb = make_notebook(
        tmp_path / "setup_hazards.ipynb",
        [
            ("%pip install lightgbm\nimport json", ["setup"]),
            ("token = input('token?')", ["parameters"]),
            ("a = json.dumps([1])", ["task:a"]),
            ("b = json.dumps([2])", ["task:b"]),
        ],
    )
    found = [
        (d.code, d.cell_index, d.line)
        for d in compile_notebook(nb).diagnostics
        if d.severity == "warning"
    ]
    assert ("pip-install", 0, 1) in found and ("input", 1, 1) in found
    assert sum(code == "pip-install" for code, _, _ in found) == 1  # not once per task
