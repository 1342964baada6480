#!/usr/bin/env bash
# Every GPU figure of bench/gpu_results.json in one go, from the repository root, on a machine
# with torch (no Ray needed):   bash bench/run_gpu.sh [quick]
# "quick" halves the data (for a short device lease); the defaults are the full-size settings.
set -euo pipefail
export PYTHONPATH=.
if [ "${1:-}" = "quick" ]; then
  python bench/trial_speed.py --n 20000 --epochs 2 --compile
  python bench/packing.py --ks 1,2,4,8 --n 10000
  python bench/fused.py --ks 2,4,8,16 --n 10000
else
  python bench/trial_speed.py --compile
  python bench/packing.py --ks 1,2,4,8
  python bench/fused.py --ks 2,4,8,16
  python bench/fused.py --ks 8 --compile
fi
cat bench/gpu_results.json
