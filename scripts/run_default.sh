#!/usr/bin/env bash
# The main job: set up, then `flwr run .` in local simulation on the embedded default
# (Fashion-MNIST, 4 participants: efficientnet-lite0/1/2 and Open-NSFW). Extra arguments are
# passed on as run-config overrides, e.g.  bash scripts/run_default.sh num-samples=0
# Flower's default simulated federation has 2 SuperNodes; each hosts two of the four prototypes
# (COOPT_SUPERNODES=4 gives one per SuperNode: the same dataset, byte for byte).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${COOPT_OUTPUT_DIR:-$PWD/outputs/default}
args=(--num-supernodes "${COOPT_SUPERNODES:-2}" --run-config "output-dir=$OUT" --run-config "overwrite=true")
for kv in "$@"; do args+=(--run-config "$kv"); done
.venv/bin/python -m simulations.local_run "${args[@]}"
echo
echo "Optimized dataset and report: $OUT/round-001 (report.md)"
