#!/usr/bin/env bash
# The project's GPU check: one CUDA GPU, no network, no Flower installed (the GPU machines
# lent to this project have torch, torchvision, timm, onnxruntime, tqdm and pyyaml, and lack
# the prototype weights, lightly and flwr). Under 8 minutes. Run from the repository root after
#   bash simulations/gpu_check_prepare.sh      # here: wheels into .whl/, data into .gpu-data/
# with .whl and .gpu-data carried to the GPU machine; it prints everything and also writes
# $OUT/gpu_check.log (OUT defaults to /tmp/gpu-check). A machine with several GPUs also runs
# the student under DDP, one process per GPU.
#   DEVICE=cpu bash simulations/gpu_check.sh   # smoke-tests the script itself on a CPU machine
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}   # 1: tiny sizes, for the CPU smoke test
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/coopt-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/coopt-site:$PWD
else
  export PYTHONPATH=$PWD
fi
[ -d .gpu-data ] && export COOPT_FASHION_MNIST_DIR=$PWD/.gpu-data
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ "$SMALL" = 1 ]; then N_ENC=256; N_TRAIN=300; N_ROUND=400; SIZE=64; else N_ENC=8192; N_TRAIN=10000; N_ROUND=10000; SIZE=224; fi
BYOL_FLAG=""; $PY -c "import lightly" 2>/dev/null || BYOL_FLAG="--skip-byol"

step() {  # step NAME SECONDS COMMAND...: one line of status per step, whatever happens
  local name=$1 limit=$2; shift 2
  echo; echo "== $name ($(date -u +%H:%M:%S))"
  timeout "$limit" "$@"; local rc=$?
  echo "== $name: exit $rc"
}
{
  date -u
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
  step "encode, fp32 ($N_ENC images at $SIZE px)" 120 $PY -m simulations.encode_bench encode \
    --prototypes efficientnet-lite0 --device "$DEVICE" --num-images $N_ENC --image-size $SIZE --batch-size 256 --repeats 3
  step "encode, bf16 autocast" 120 $PY -m simulations.encode_bench encode \
    --prototypes efficientnet-lite0 --device "$DEVICE" --precision bf16 --num-images $N_ENC --image-size $SIZE --batch-size 256 --repeats 3
  step "student training speed ($N_TRAIN images, small-cnn, batch 256)" 150 $PY -m simulations.train_speed \
    --device "$DEVICE" --num-images $N_TRAIN --batch-size 256 --repeats 2 --threads 0 $BYOL_FLAG
  step "a whole round in one process, 2 participants sharing the device ($N_ROUND samples)" 120 \
    $PY -m simulations.encode_bench round --in-process-only --prototypes efficientnet-lite0,random:efficientnet-lite1 \
    --device "$DEVICE" --num-samples $N_ROUND --image-size $SIZE --repeats 1 --keep-dataset "$OUT/round-dataset"
  # DDP across the machine's GPUs (nccl, a process per GPU) against one GPU, on that round's data;
  # DDP_GPUS=2 DEVICE=cpu smoke-tests it with gloo on a CPU machine.
  GPUS=${DDP_GPUS:-$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)}
  if [ "$GPUS" -ge 2 ] && [ -d "$OUT/round-dataset/round-001" ]; then
    step "student training, DDP on $GPUS devices against 1 (small-cnn, batch 256)" 240 \
      $PY -m simulations.ddp_bench --dataset "$OUT/round-dataset/round-001" --device "$DEVICE" --processes "$GPUS" \
      --arch small-cnn --batch-size 256 --image-size 32 --epochs 1 --out "$OUT/ddp_bench.json"
  elif [ "$GPUS" -ge 2 ]; then
    echo; echo "== student training, DDP: skipped (the round step left no dataset in $OUT/round-dataset/round-001)"
  else
    echo; echo "== student training, DDP: skipped ($GPUS GPU(s) on this machine; it needs 2 or more)"
  fi
  if $PY -c "import flwr" 2>/dev/null; then
    step "2-SuperNode deployment sharing the device" 240 $PY -m pytest -q -x tests/test_deployment.py
  else
    echo; echo "== 2-SuperNode deployment: skipped (flwr is not installed on this machine)"
  fi
} 2>&1 | tee "$OUT/gpu_check.log"
