#!/usr/bin/env bash
# The GPU measurements of the README's performance section, as one short run (about 10 minutes on one
# recent GPU): the largest float16 training batch of B8-8-8H1024 at T 64/128/256/512 within a 16 GB
# logical device (the original's V100), with and without --recompute, and the float16/bfloat16 training
# throughput of B4-4-4H768 and B8-8-8H1024 at T 512. Results: ${OUT_DIR}/memory_search.json,
# memory_search_recompute.json, throughput.json, and the printed tables.
# Usage: bash scripts/gpu_benchmark.sh   (OUT_DIR, PYTHON and MEMORY_LIMIT_MB can be set from outside)
set -euo pipefail

OUT_DIR="${OUT_DIR:-benchmark_gpu}"
PYTHON="${PYTHON:-python}"
MEMORY_LIMIT_MB="${MEMORY_LIMIT_MB:-16000}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${root}/tensorflow/benchmark.py"
mkdir -p "${OUT_DIR}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

for recompute in false true; do
  suffix=""
  [ "${recompute}" = true ] && suffix="_recompute"
  "${PYTHON}" "${bench}" --memory_search --search_model=B8-8-8H1024 --search_precision=float16 \
    --search_seq_lens=64,128,256,512 --memory_limit_mb="${MEMORY_LIMIT_MB}" \
    --recompute="${recompute}" --output="${OUT_DIR}/memory_search${suffix}.json"
done

"${PYTHON}" "${bench}" --models=B4-4-4H768,B8-8-8H1024 --seq_lens=512 --modes=train \
  --precisions=float16,bfloat16 --batch_size=16 --steps=5 --compare_precision=false \
  --compare_jit=false --compare_standard=false --rel_attn_cost=false \
  --output="${OUT_DIR}/throughput.json"
