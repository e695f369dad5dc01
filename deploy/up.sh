#!/usr/bin/env bash
# Thin wrapper: python -m deploy.cluster up "$@" with the project's .venv (see README,
# "Deployment on separate machines"; `python -m deploy.cluster up --help` for options).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${COOPT_VENV:-$ROOT/.venv}/bin/python" -m deploy.cluster up "$@"
