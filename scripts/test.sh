#!/usr/bin/env bash
# The whole test suite, on a fresh machine: builds .venv, installs carbonspan with what the tests
# need, then runs ruff and pytest. Safe to re-run: it reuses .venv and only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
