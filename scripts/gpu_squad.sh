#!/usr/bin/env bash
# SQuAD 2.0 on one machine's GPUs: the seed README's recipe (sequence length 512, global batch 48, learning
# rate 3e-5, layer-wise decay 0.75, 8000 steps with 1000 warmup), then prediction and evaluation with every
# checkpoint. Run scripts/prepro_squad.sh first (same OUTPUT_DIR, tokenizer and NUM_PROC).
# Batch 48 at length 512 needs about 40 GB for a base model in float32: spread it over GPUs
# (NUM_CORE_PER_HOST must divide 48), use PRECISION=float16 or bfloat16, or --recompute.
# Usage: bash scripts/gpu_squad.sh [more squad.py flags...]   (every variable below can be set from outside)
set -euo pipefail

# Released checkpoint (data-scripts/download_ckpts.sh): net_config.json, model.ckpt, vocab.uncased.txt.
MODEL_DIR="${MODEL_DIR:-ckpts/B6-6-6H768-ELEC-TF}"
DATA_DIR="${DATA_DIR:-data/squad}"
OUTPUT_DIR="${OUTPUT_DIR:-proc_data/squad}"
EXP_DIR="${EXP_DIR:-exp/squad}"
NUM_PROC="${NUM_PROC:-$(nproc)}"
NUM_CORE_PER_HOST="${NUM_CORE_PER_HOST:-1}"
PRECISION="${PRECISION:-float32}"
PYTHON="${PYTHON:-python}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON}" "${root}/tensorflow/squad.py" \
  --use_tpu=False \
  --num_hosts=1 \
  --num_core_per_host="${NUM_CORE_PER_HOST}" \
  --precision="${PRECISION}" \
  --model_config="${MODEL_DIR}/net_config.json" \
  --init_checkpoint="${MODEL_DIR}/model.ckpt" \
  --tokenizer_type=word_piece \
  --tokenizer_path="${MODEL_DIR}/vocab.uncased.txt" \
  --uncased=True \
  --train_file="${DATA_DIR}/train-v2.0.json" \
  --predict_file="${DATA_DIR}/dev-v2.0.json" \
  --output_dir="${OUTPUT_DIR}" \
  --num_proc="${NUM_PROC}" \
  --model_dir="${EXP_DIR}" \
  --max_seq_length=512 \
  --max_query_length=64 \
  --doc_stride=128 \
  --max_answer_length=64 \
  --do_train=True \
  --do_predict=True \
  --train_batch_size=48 \
  --predict_batch_size=32 \
  --train_steps=8000 \
  --warmup_steps=1000 \
  --learning_rate=3e-5 \
  --lr_layer_decay_rate=0.75 \
  --save_steps=1000 \
  --iterations=1000 \
  "$@"
