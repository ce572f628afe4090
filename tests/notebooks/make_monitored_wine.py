"""Writes monitored_wine.ipynb (run from the repository root): kept so the notebook's cells
are readable in review. `python tests/notebooks/make_monitored_wine.py`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from nbutil import make_notebook  # noqa: E402

CELLS = [
    "# md: # Wine classifier, monitored\n"
    "Each run records accuracy and F1; the cell tagged `metrics` names them and checks them.",
    (
        "import pandas as pd\n"
        "import kiln\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.metrics import accuracy_score, f1_score\n"
        "from sklearn.model_selection import train_test_split\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler",
        ["setup"],
    ),
    ("C = 1.0\nn_features = 13\ntest_size = 0.3\nseed = 0", ["parameters"]),
    ('raw = pd.read_csv("data/wine.csv")\nraw.shape', ["task:load", "drift:raw<0.3"]),
    (
        'features = raw.drop(columns=["target"]).iloc[:, :n_features]\n'
        "X_train, X_test, y_train, y_test = train_test_split(\n"
        '    features, raw["target"], test_size=test_size, random_state=seed, '
        'stratify=raw["target"]\n'
        ")",
        ["task:split"],
    ),
    (
        "model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500))\n"
        "model.fit(X_train, y_train)\n"
        "predicted = model.predict(X_test)\n"
        "accuracy = float(accuracy_score(y_test, predicted))\n"
        'scores = {"logreg": {"f1": float(f1_score(y_test, predicted, average="macro"))}}\n'
        "for label in sorted(set(y_test)):\n"
        '    kiln.log_metric(f"recall.class_{label}", '
        "float((predicted[y_test == label] == label).mean()))\n"
        'kiln.log_metric("train_rows", len(X_train))',
        ["task:train"],
    ),
    "# md: ## Metrics\nWhat the pipeline reports; the tags hold the checks.",
    (
        "accuracy\nscores",
        [
            "metrics",
            "check:accuracy>=0.5",
            "check:accuracy>=baseline-0.25",
            "warn:scores.logreg.f1>=0.8",
        ],
    ),
]

if __name__ == "__main__":
    make_notebook(Path(__file__).with_name("monitored_wine.ipynb"), CELLS)
