#!/usr/bin/env bash
# The test command: the library's tests, then every notebook at the smoke profile via nbval.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${CLAMU_VENV:-.venv}/bin/python
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
"$PY" -m pytest -q --timeout=900 tests "$@"
CLAMU_PROFILE=smoke "$PY" -m pytest -q --timeout=900 --nbval-lax notebooks
