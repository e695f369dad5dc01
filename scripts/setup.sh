#!/usr/bin/env bash
# Install what coopt-flower needs, offline except the package registries. Idempotent: a second
# call only checks. Creates ./.venv (override with COOPT_VENV).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${COOPT_VENV:-.venv}

# The embedded default dataset: Debian's Fashion-MNIST package.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${COOPT_FASHION_MNIST_DIR:-}" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing dataset-fashion-mnist (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.coopt-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch and torchvision first, pinned as a pair (a bare torch would pull another build).
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
