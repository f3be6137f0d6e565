#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite plus the lint checks. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export VENV
bash scripts/setup.sh
"$VENV/bin/python" -m ruff check .
"$VENV/bin/python" -m ruff format --check .
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -n 2 -p no:cacheprovider "$@"
