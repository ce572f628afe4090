#!/usr/bin/env bash
# Install everything and run Kiln's whole test suite: frontend build, lint, types, tests.
# The README's test command and .ci/run call exactly this script. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the suites use: Chromium (browser tests), PostgreSQL (lineage on a real
# server), Graphviz (`kiln graph --format svg`). Tests that need a missing one skip and say so.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: not root, cannot install ${need[*]}; the tests that need them will skip" >&2
  fi
fi

echo "== python environment"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# JupyterLab 4.5 builds the extension here (4.6's builder looks packages up online).
.venv/bin/python -m pip install --quiet 'jupyterlab>=4.5,<4.6' hatchling hatch-jupyter-builder editables

echo "== frontend (npm ci from the committed lock file, tsc, labextension build)"
npm ci --no-audit --no-fund --loglevel=error
PATH="$PWD/.venv/bin:$PATH" npm run --silent build

echo "== install nbkiln"
# The frontend was just built: hatch-jupyter-builder would rebuild it for an editable install.
SKIP_JUPYTER_BUILDER=1 .venv/bin/python -m pip install --quiet --no-build-isolation -e '.[test]'
# papermill's default engine needs a kernel named python3 inside this environment.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
.venv/bin/jupyter labextension list 2>&1 | grep -q "nbkiln.*enabled.*OK" \
  || { echo "the JupyterLab extension is not enabled" >&2; exit 1; }

echo "== ruff"
.venv/bin/ruff check compiler jupyter_ext tests
.venv/bin/ruff format --check compiler jupyter_ext tests
echo "== mypy"
.venv/bin/mypy compiler
echo "== import contract (pyproject's [tool.importlinter]: the layers of ARCHITECTURE.md)"
.venv/bin/lint-imports --no-cache

echo "== pytest"
set +e
.venv/bin/pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
[ "$status" -eq 0 ] || exit "$status"

echo "== compile benchmark (smoke)"
.venv/bin/python tests/benchmarks/compile_bench.py --quick
