#!/usr/bin/env bash
# Create .venv with pinned CPU-only dependencies and install ditpareto in editable mode.
# Safe to rerun: an existing venv is reused and pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, from the local CPU wheel (pip; uv does not look there), with uv; then everything else under the
# constraints file, by uv (about 10 s instead of pip's 60 s; the same versions), or by pip where uv cannot run.
"$PY" -m pip install -q torch==2.13.0 uv==0.13.9 2>&1 | grep -v "is ignored" || true
if ! "$VENV/bin/uv" pip install -q --python "$PY" -c envs/constraints.txt -e ".[workflow,dev]"; then
    echo "setup.sh: uv failed; installing with pip" >&2
    "$PY" -m pip install -q -c envs/constraints.txt -e ".[workflow,dev]" 2>&1 | grep -v "is ignored" || true
fi
"$PY" -c "import ditpareto.compat, torch, torchvision, torch_fidelity, diffusers, papermill, ipykernel; print('ditpareto env ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
