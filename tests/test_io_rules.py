"""The ast-grep rules that find a cell's files, hazards, random draws and seeds.

Each test writes a cell as a user would (magics included), passes it through IPython's input
transformer as the compiler does, and checks what a user would see: paths, API names, lines and
columns (1-based, pointing at the path literal for files and at the call for everything else).
"""

from __future__ import annotations

import textwrap

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from compiler.compile import io_rules
from compiler.compile.io_rules import EMPTY_SCAN, FileAccess, Hazard, IOScan, RuleFileError, scan_io


def scan(cell: str) -> IOScan:
    """Scan a notebook cell the way the compiler does: magics first become Python."""
    return scan_io(TransformerManager().transform_cell(textwrap.dedent(cell)))


def reads(cell: str) -> list[tuple[str, str, int, int]]:
    return [(a.path, a.api, a.line, a.col) for a in scan(cell).reads]


def writes(cell: str) -> list[tuple[str, str, int, int]]:
    return [(a.path, a.api, a.line, a.col) for a in scan(cell).writes]


def hazards(cell: str) -> list[tuple[str, int, int]]:
    return [(h.kind, h.line, h.col) for h in scan(cell).hazards]


def random_uses(cell: str) -> list[tuple[str, int, int]]:
    return [(h.message, h.line, h.col) for h in scan(cell).random_uses]


# --- reads -------------------------------------------------------------------------------------


def test_pandas_readers_with_positional_and_keyword_paths():
    cell = """\
        import pandas as pd
        a = pd.read_csv("data/a.csv", sep=";")
        b = pandas.read_parquet(path="data/b.parquet")
        c = pd.read_json(f"data/c.json")
        d = pd.read_excel(io="data/d.xlsx", sheet_name=0)
        e = pd.read_feather('data/e.feather')
        f = pd.read_pickle(filepath_or_buffer=r"data\\f.pkl")
        g = pd.read_table(Path("data/g.tsv"))
        """
    assert reads(cell) == [
        ("data/a.csv", "pandas.read_csv", 2, 17),
        ("data/b.parquet", "pandas.read_parquet", 3, 30),
        ("data/c.json", "pandas.read_json", 4, 18),
        ("data/d.xlsx", "pandas.read_excel", 5, 22),
        ("data/e.feather", "pandas.read_feather", 6, 21),
        ("data\\f.pkl", "pandas.read_pickle", 7, 39),
        ("data/g.tsv", "pandas.read_table", 8, 24),
    ]
    assert scan(cell).writes == ()


def test_numpy_loaders():
    cell = """\
        x = np.load("x.npy")
        y = numpy.loadtxt("y.txt", delimiter=",")
        z = np.genfromtxt(fname="z.csv")
        w = np.fromfile("w.bin", dtype=np.uint8)
        """
    assert reads(cell) == [
        ("x.npy", "numpy.load", 1, 13),
        ("y.txt", "numpy.loadtxt", 2, 19),
        ("z.csv", "numpy.genfromtxt", 3, 25),
        ("w.bin", "numpy.fromfile", 4, 17),
    ]


def test_open_for_reading_in_every_spelling():
    cell = """\
        a = open("a.txt").read()
        b = open("b.txt", "r").read()
        c = open("c.bin", "rb").read()
        d = open("d.txt", mode="r").read()
        with open("e.cfg") as fh, open('f.cfg', encoding="utf-8") as gh:
            pass
        """
    assert reads(cell) == [
        ("a.txt", "open", 1, 10),
        ("b.txt", "open", 2, 10),
        ("c.bin", "open", 3, 10),
        ("d.txt", "open", 4, 10),
        ("e.cfg", "open", 5, 11),
        ("f.cfg", "open", 5, 32),
    ]
    assert scan(cell).writes == ()


def test_deserializers_are_reported_once_under_their_own_name():
    cell = """\
        config = json.load(open("config.json"))
        model = pickle.load(open("model.pkl", "rb"))
        scaler = joblib.load("scaler.joblib")
        """
    assert reads(cell) == [
        ("config.json", "json.load", 1, 25),
        ("model.pkl", "pickle.load", 2, 26),
        ("scaler.joblib", "joblib.load", 3, 22),
    ]


def test_pathlib_reads():
    cell = """\
        notes = Path("notes.md").read_text()
        blob = pathlib.Path("blob.bin").read_bytes()
        """
    assert reads(cell) == [
        ("notes.md", "pathlib.Path.read_text", 1, 14),
        ("blob.bin", "pathlib.Path.read_bytes", 2, 21),
    ]


# --- writes ------------------------------------------------------------------------------------


def test_dataframe_writers_on_any_receiver():
    cell = """\
        df.to_csv("out/a.csv", index=False)
        result.frame.to_parquet(path="out/b.parquet")
        series.to_json("out/c.json")
        df.to_excel("out/d.xlsx")
        df.to_pickle("out/e.pkl")
        df.reset_index().to_feather("out/f.feather")
        """
    assert writes(cell) == [
        ("out/a.csv", "DataFrame.to_csv", 1, 11),
        ("out/b.parquet", "DataFrame.to_parquet", 2, 30),
        ("out/c.json", "DataFrame.to_json", 3, 16),
        ("out/d.xlsx", "DataFrame.to_excel", 4, 13),
        ("out/e.pkl", "DataFrame.to_pickle", 5, 14),
        ("out/f.feather", "DataFrame.to_feather", 6, 29),
    ]
    assert scan(cell).reads == ()


def test_numpy_savers_and_figures():
    cell = """\
        np.save("arr.npy", arr)
        numpy.savez("arrs.npz", a=a, b=b)
        np.savetxt("arr.txt", arr, fmt="%d")
        plt.savefig("plot.png", dpi=150)
        fig.savefig(fname="fig.svg")
        """
    assert writes(cell) == [
        ("arr.npy", "numpy.save", 1, 9),
        ("arrs.npz", "numpy.savez", 2, 13),
        ("arr.txt", "numpy.savetxt", 3, 12),
        ("plot.png", "matplotlib.savefig", 4, 13),
        ("fig.svg", "matplotlib.savefig", 5, 19),
    ]


def test_open_for_writing_is_a_write_and_not_a_read():
    cell = """\
        scores = {"accuracy": 0.9}
        with open("metrics.json", "w") as f:
            json.dump(scores, f, indent=2)
        open("log.txt", "a").write("done")
        open("model.bin", mode="wb").write(blob)
        open("fresh.txt", "x")
        """
    assert writes(cell) == [
        ("metrics.json", "open", 2, 11),
        ("log.txt", "open", 4, 6),
        ("model.bin", "open", 5, 6),
        ("fresh.txt", "open", 6, 6),
    ]
    assert scan(cell).reads == ()


def test_open_for_update_both_reads_and_writes():
    scanned = scan('db = open("state.db", "r+b")')
    assert scanned.reads == scanned.writes == (FileAccess("state.db", "open", 1, 11),)


def test_serializers_are_reported_once_under_their_own_name():
    cell = """\
        json.dump(scores, open("scores.json", "w"))
        pickle.dump(model, open("model.pkl", "wb"))
        joblib.dump(model, "model.joblib")
        Path("README.txt").write_text("hello")
        pathlib.Path("blob.bin").write_bytes(b"x")
        """
    assert writes(cell) == [
        ("scores.json", "json.dump", 1, 24),
        ("model.pkl", "pickle.dump", 2, 25),
        ("model.joblib", "joblib.dump", 3, 20),
        ("README.txt", "pathlib.Path.write_text", 4, 6),
        ("blob.bin", "pathlib.Path.write_bytes", 5, 14),
    ]
    assert scan(cell).reads == ()


# --- what counts as a literal path ---------------------------------------------------------------


def test_paths_given_as_variables_or_computed_are_not_reported():
    cell = """\
        path = "data/x.csv"
        a = pd.read_csv(path)
        b = pd.read_csv(f"data/{name}.csv")
        df.to_csv(out_dir + "/x.csv")
        open(name, "w")
        open("x.txt", mode)
        text = df.to_json()
        """
    assert scan(cell) == EMPTY_SCAN


def test_string_spellings_resolve_to_the_path_they_name():
    cell = '''\
        a = pd.read_csv("""triple.csv""")
        b = pd.read_csv("data/" "joined.csv")
        c = np.load(b"bytes.npy")
        d = pd.read_csv("tab\\tname.csv")
        e = pd.read_csv(Path("data") / "nested" / "file.csv")
        f = pd.read_csv(f"braces{{1}}.csv")
        '''
    assert [(path, line, col) for path, _, line, col in reads(cell)] == [
        ("triple.csv", 1, 17),
        ("data/joined.csv", 2, 17),
        ("bytes.npy", 3, 13),
        ("tab\tname.csv", 4, 17),
        ("data/nested/file.csv", 5, 22),
        ("braces{1}.csv", 6, 17),
    ]


def test_columns_count_characters_not_bytes():
    assert reads('label = "café"; df = pd.read_csv("x.csv")') == [
        ("x.csv", "pandas.read_csv", 1, 34)
    ]


# --- hazards -----------------------------------------------------------------------------------


def test_pip_magic_inside_a_task_is_a_hazard_on_its_line():
    cell = """\
        import numpy as np
        %pip install --quiet tabulate
        x = np.arange(3)
        """
    scanned = scan(cell)
    assert [(h.kind, h.line, h.col) for h in scanned.hazards] == [("pip-install", 2, 1)]
    assert "%pip install" in scanned.hazards[0].message


@pytest.mark.parametrize(
    "cell",
    [
        "!pip install tabulate",
        "!pip3 install -U tabulate",
        "!python -m pip install tabulate",
        "!{sys.executable} -m pip install tabulate",
        "%conda install -y tabulate",
        "%pip uninstall -y tabulate",
        "%%capture\n%pip install tabulate",
        "%%bash\npip install tabulate",
        'subprocess.check_call([sys.executable, "-m", "pip", "install", "tabulate"])',
        'os.system("pip install tabulate")',
    ],
)
def test_every_way_of_installing_a_package_is_a_hazard(cell):
    assert hazards(cell) == [("pip-install", 1, 1)]


def test_a_captured_shell_install_points_at_the_command():
    assert hazards("out = !pip install tabulate") == [("pip-install", 1, 7)]


@pytest.mark.parametrize("cell", ["%pip list", "!pip freeze > req.txt", "!ls", "%%bash\nls"])
def test_package_commands_that_install_nothing_are_fine(cell):
    assert hazards(cell) == []


def test_input_waits_for_a_user():
    scanned = scan("name = input('who?')\ninput_path = 'x'")
    assert scanned.hazards == (
        Hazard("input", "input() waits for a user: a pipeline task cannot answer it", 1, 8),
    )


# --- random draws and seeds ----------------------------------------------------------------------


def test_global_numpy_python_and_torch_draws_are_random_uses():
    cell = """\
        a = np.random.rand(3)
        b = numpy.random.choice(items)
        np.random.shuffle(items)
        c = random.randint(1, 6)
        d = torch.randn(2, 2)
        e = tf.random.uniform((2,))
        """
    assert random_uses(cell) == [
        ("np.random.rand() draws from NumPy's global random generator", 1, 5),
        ("numpy.random.choice() draws from NumPy's global random generator", 2, 5),
        ("np.random.shuffle() draws from NumPy's global random generator", 3, 1),
        ("random.randint() draws from Python's global random generator", 4, 5),
        ("torch.randn() draws from torch's global random generator", 5, 5),
        ("tf.random.uniform() draws from TensorFlow's global random generator", 6, 5),
    ]
    assert scan(cell).seeds == ()


def test_seeding_calls_are_seeds_and_not_draws():
    cell = """\
        np.random.seed(0)
        random.seed(1)
        torch.manual_seed(2)
        tf.random.set_seed(3)
        rng = np.random.default_rng(42)
        legacy = np.random.RandomState(7)
        y = rng.normal(size=3)
        """
    scanned = scan(cell)
    assert scanned.seeds == (1, 2, 3, 4, 5, 6)
    assert scanned.random_uses == ()
    assert scanned.hazards == ()  # unseeded randomness is the compiler's call, per task


def test_a_generator_without_a_seed_is_a_random_use():
    assert random_uses("rng = np.random.default_rng()\nx = rng.normal()") == [
        ("np.random.default_rng() without a seed starts from fresh entropy on every run", 1, 7)
    ]


def test_sklearn_calls_without_random_state_are_random_uses():
    cell = """\
        X_train, X_test = train_test_split(X, test_size=0.2)
        forest = RandomForestClassifier(n_estimators=10)
        boost = ensemble.GradientBoostingRegressor()
        km = KMeans(n_clusters=3, random_state=None)
        """
    scanned = scan(cell)
    assert [(h.message, h.line, h.col) for h in scanned.random_uses] == [
        ("train_test_split() without random_state= gives a different result on every run", 1, 19),
        (
            "RandomForestClassifier() without random_state= gives a different result on every run",
            2,
            10,
        ),
        (
            "ensemble.GradientBoostingRegressor() without random_state= gives a different result"
            " on every run",
            3,
            9,
        ),
        ("KMeans() without random_state= gives a different result on every run", 4, 6),
    ]
    assert scanned.seeds == ()


def test_sklearn_calls_with_random_state_are_seeds():
    cell = """\
        X_train, X_test = train_test_split(
            X, test_size=0.2, random_state=seed
        )
        forest = RandomForestClassifier(n_estimators=10, random_state=0)
        """
    scanned = scan(cell)
    assert scanned.random_uses == ()
    assert scanned.seeds == (1, 4)


def test_kfold_is_random_only_when_it_shuffles():
    cell = """\
        plain = KFold(5)
        shuffled = KFold(5, shuffle=True)
        seeded = StratifiedKFold(5, shuffle=True, random_state=0)
        """
    scanned = scan(cell)
    assert [(h.line, h.col) for h in scanned.random_uses] == [(2, 12)]
    assert scanned.seeds == (3,)


def test_dataframe_sample_needs_random_state():
    cell = """\
        some = df.sample(frac=0.5)
        same = df.sample(frac=0.5, random_state=0)
        picks = random.sample(items, 2)
        """
    scanned = scan(cell)
    assert [(h.message, h.line) for h in scanned.random_uses] == [
        ("df.sample() without random_state= picks different rows on every run", 1),
        ("random.sample() draws from Python's global random generator", 3),
    ]
    assert scanned.seeds == (2,)


# --- the scan as a whole -------------------------------------------------------------------------


def test_a_realistic_task_cell():
    cell = """\
        %pip install -q seaborn
        raw = pd.read_csv("data/wine.csv")
        X_train, X_test, y_train, y_test = train_test_split(raw, raw.target, random_state=seed)
        model = RandomForestClassifier().fit(X_train, y_train)
        with open("metrics.json", "w") as f:
            json.dump({"score": model.score(X_test, y_test)}, f)
        fig.savefig("accuracy.png")
        """
    scanned = scan(cell)
    assert [(a.path, a.line) for a in scanned.reads] == [("data/wine.csv", 2)]
    assert [(a.path, a.line) for a in scanned.writes] == [
        ("metrics.json", 5),
        ("accuracy.png", 7),
    ]
    assert [(h.kind, h.line) for h in scanned.hazards] == [("pip-install", 1)]
    assert [h.line for h in scanned.random_uses] == [4]
    assert scanned.seeds == (3,)


def test_a_cell_without_files_or_hazards_is_empty():
    assert scan("x = 1\ny = [i * x for i in range(10)]\nprint(y)") == EMPTY_SCAN
    assert scan_io("") == EMPTY_SCAN


@pytest.mark.parametrize(
    "cell",
    [
        'a = pd.read_csv("a.csv")\nnp.random.seed(0)\nx = np.random.rand(3)\nrandom_state = seed',
        'with open("m.json", "w") as f:\n    json.dump(s, f)\nplt.savefig("p.png")',
        "%pip install x\nname = input()\nkf = KFold(3, shuffle=True)\nr = random.random()",
        "df.sample(frac=1)\ntorch.manual_seed(0)\nrng = default_rng()\nrng2 = default_rng(3)",
    ],
)
def test_skipping_rules_that_cannot_match_changes_nothing(cell, monkeypatch):
    # Rules are pruned by the words of the source before ast-grep compiles them; with every rule
    # kept whole the scan must be the same.
    pruned = scan(cell)
    monkeypatch.setattr(io_rules, "_live_rule", lambda rule, present: rule.rule)
    assert scan(cell) == pruned


# --- the rule files ------------------------------------------------------------------------------


def test_rule_files_ship_inside_the_package_and_load():
    rules = io_rules.load_rules()
    assert io_rules.RULES_DIR.parent.parent.name == "compiler"  # compiler/compile/rules
    assert {path.name for path in io_rules.RULES_DIR.glob("*.yml")} == {
        "hazards.yml",
        "open.yml",
        "random.yml",
        "random_state.yml",
        "reads.yml",
        "writes.yml",
    }
    assert len({rule.id for rule in rules}) == len(rules)
    assert {rule.finds for rule in rules} == io_rules.RULE_FINDS


def test_a_rule_using_constraints_is_rejected_naming_its_file(tmp_path, monkeypatch):
    (tmp_path / "bad.yml").write_text(
        "- id: reader\n"
        "  finds: read\n"
        "  api: x.read\n"
        "  path: {arg: 0}\n"
        "  rule: {pattern: $M.$F($$$)}\n"
        "  constraints: {F: {regex: ^read}}\n"
    )
    monkeypatch.setattr(io_rules, "RULES_DIR", tmp_path)
    io_rules.load_rules.cache_clear()
    try:
        with pytest.raises(
            RuleFileError, match="bad.yml: rule reader: `constraints` cannot be used"
        ):
            io_rules.load_rules()
    finally:
        monkeypatch.undo()
        io_rules.load_rules.cache_clear()
