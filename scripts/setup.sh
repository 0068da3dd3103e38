#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install every cryospin package
# editable, with every optional extra (plots: healpy, tensorboard; grid[slurm]: submitit) so the
# tests cover them, and the test and development tools. Safe to run repeatedly.
# (Users install with `pip install .` at the repository root: see README.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt \
  -e packages/cryospin-core -e packages/cryospin-io \
  -e packages/cryospin-encoders -e packages/cryospin-decoders \
  -e examples/cryospin-example-plugin \
  -e "packages/cryospin-core[test,plots,tensorboard]" -e "packages/cryospin-grid[slurm]"
