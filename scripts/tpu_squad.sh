#!/usr/bin/env bash
# SQuAD 2.0 on a Cloud TPU: the seed README's recipe (bfloat16, sequence length 512, global batch 48,
# learning rate 3e-5, layer-wise decay 0.75, 8000 steps with 1000 warmup), then prediction and evaluation
# with every checkpoint. A TPU v2-8 suffices for the base models, the large ones (B8-8-8H1024,
# B10-10-10H1024) need a v3-8. Run scripts/prepro_squad.sh first with OUTPUT_DIR=${GS_PROC_DATA_DIR}.
# The TPU reads checkpoints and tfrecords from Google Storage.
# Usage: bash scripts/tpu_squad.sh [more squad.py flags...]   (every variable below can be set from outside)
set -euo pipefail

TPU_NAME="${TPU_NAME:-}"
NUM_HOSTS="${NUM_HOSTS:-1}"
NUM_CORE_PER_HOST="${NUM_CORE_PER_HOST:-8}"
GS_ROOT="${GS_ROOT:-gs://YOUR_BUCKET}"
# Released checkpoint copied to Google Storage: net_config.json, model.ckpt, vocab.uncased.txt.
GS_INIT_CKPT_DIR="${GS_INIT_CKPT_DIR:-${GS_ROOT}/pretrained_ckpt/B6-6-6H768-ELEC-TF}"
GS_PROC_DATA_DIR="${GS_PROC_DATA_DIR:-${GS_ROOT}/proc_data/squad}"
GS_MODEL_DIR="${GS_MODEL_DIR:-${GS_ROOT}/exp/squad}"
# The raw json, local (prediction reads the paragraphs to write the answer texts).
DATA_DIR="${DATA_DIR:-data/squad}"
NUM_PROC="${NUM_PROC:-$(nproc)}"
PYTHON="${PYTHON:-python}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON}" "${root}/tensorflow/squad.py" \
  --use_tpu=True \
  --tpu="${TPU_NAME}" \
  --use_bfloat16=True \
  --num_hosts="${NUM_HOSTS}" \
  --num_core_per_host="${NUM_CORE_PER_HOST}" \
  --model_config="${GS_INIT_CKPT_DIR}/net_config.json" \
  --init_checkpoint="${GS_INIT_CKPT_DIR}/model.ckpt" \
  --tokenizer_type=word_piece \
  --tokenizer_path="${GS_INIT_CKPT_DIR}/vocab.uncased.txt" \
  --uncased=True \
  --train_file="${DATA_DIR}/train-v2.0.json" \
  --predict_file="${DATA_DIR}/dev-v2.0.json" \
  --output_dir="${GS_PROC_DATA_DIR}" \
  --num_proc="${NUM_PROC}" \
  --model_dir="${GS_MODEL_DIR}" \
  --predict_dir="${GS_MODEL_DIR}/predict" \
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
