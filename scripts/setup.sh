#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install dit-sparse with its test tools into it.
#   VENV        where the environment lives (default: .venv in the repository)
#   TORCH_SPEC  the torch to install first when none is there (default: torch==2.13.0, the CPU build
#               this project is tested with; on a GPU machine install your CUDA build of torch first)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# torch before anything that depends on it: a bare 'torch' requirement with no torch installed pulls a
# multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[test]"
