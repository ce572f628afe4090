#!/usr/bin/env bash
# Install everything into .venv and run Kiln's whole test suite: lint, types, tests, benchmark smoke.
# The README's test command and .ci/run call exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# papermill needs a kernel named python3 inside this venv.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null

echo "== ruff"
.venv/bin/ruff check compiler jupyter_ext tests
.venv/bin/ruff format --check compiler jupyter_ext tests
echo "== mypy"
.venv/bin/mypy compiler

echo "== pytest"
set +e
.venv/bin/pytest -q "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
