#!/usr/bin/env bash
# Create .venv with pinned CPU-only dependencies and install ditpareto in editable mode.
# Safe to rerun: an existing venv is reused and pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the local CPU wheel; everything else under the constraints file.
"$PY" -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
"$PY" -m pip install -q -c envs/constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
"$PY" -c "import ditpareto.compat, torch, torchvision, torch_fidelity, diffusers, papermill, ipykernel; print('ditpareto env ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
