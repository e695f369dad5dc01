#!/usr/bin/env bash
# Set up, then run the whole test suite (including one real `flwr run .` simulation).
# Arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
