#!/usr/bin/env bash
# The checks a CUDA GPU makes possible, in one run (a few minutes on one large GPU):
# 1. the decode cost of every method on a random model of llava-1.5-7b-hf's full size (32 + 24 layers,
#    float16, 7.1 B parameters: ~15 GB of GPU memory), B = 1 and 8, beside the GPU's measured limits,
#    greedy and AvisC with compile=True among them;
# 2. every notebook on the CUDA replicas of the real checkpoints, as a GPU user runs them
#    (tests/notebooks/test_notebooks_replicas.py with AVISC_TEST_DEVICE=cuda).
#
#    bash scripts/gpu_check.sh [OUT_DIR]     # default build/gpu_check; needs the ".[dev]" install
#
# OUT_DIR gets gpu.txt (the machine), RESULTS.md (results/RESULTS.md with the GPU's proxy section),
# speed.log, replicas.log and replicas.xml (junit). Copy the section into results/RESULTS.md by hand.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/gpu_check}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python=${PYTHON:-python3}
status=0

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $python -c 'import platform, torch, transformers; print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$out/gpu.txt"

echo "== 1. decode cost at llava-1.5-7b's full size"
cp results/RESULTS.md "$out/RESULTS.md"
timeout "${SPEED_TIMEOUT:-240}" $python scripts/decode_speed.py --model proxy --layers 32 --vision-layers 24 \
  --device cuda --dtype float16 --batches 1 8 --rounds 3 --threads 4 --out "$out/RESULTS.md" 2>&1 \
  | tee "$out/speed.log" || status=1

echo "== 2. every notebook on the CUDA replicas"
# SIGINT at the time limit: pytest then still prints the failures it has and the short summary.
AVISC_TEST_DEVICE=cuda timeout -s INT "${NOTEBOOK_TIMEOUT:-300}" $python -m pytest tests/notebooks/test_notebooks_replicas.py \
  -n "${WORKERS:-8}" -v --tb=short -rf -p no:cacheprovider --durations=12 --junitxml="$out/replicas.xml" 2>&1 \
  | tee "$out/replicas.log" || status=1
exit $status
