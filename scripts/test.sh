#!/usr/bin/env bash
# Every check CI runs, in order: lint (ruff), formatting (ruff format), types (mypy), then the
# tests (pytest; extra arguments go to pytest). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=(packages tests bench examples scripts)
.venv/bin/ruff check "${SRC[@]}"
.venv/bin/ruff format --check "${SRC[@]}"
.venv/bin/mypy packages/*/src examples/*/src
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
