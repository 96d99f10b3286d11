#!/usr/bin/env bash
# RACE on a Cloud TPU: the seed README's command (bfloat16, sequence length 512, global batch 16, learning
# rate 2e-5, 24000 steps with 2400 warmup, a checkpoint every 2400 steps), then evaluation on dev.
# A TPU v2-8 suffices for the base models (B4-4-4H768, B6-3x2-3x2H768, B6-6-6H768); the large ones need a
# v3-16 for batch 16. Checkpoints and tfrecords must be on Google Storage (the TPU reads them from there).
# Usage: bash scripts/tpu_race.sh [more race.py flags...]   (every variable below can be set from outside)
set -euo pipefail

TPU_NAME="${TPU_NAME:-}"
NUM_HOSTS="${NUM_HOSTS:-1}"
NUM_CORE_PER_HOST="${NUM_CORE_PER_HOST:-8}"
GS_ROOT="${GS_ROOT:-gs://YOUR_BUCKET}"
# Released checkpoint copied to Google Storage: net_config.json, model.ckpt, vocab.uncased.txt.
GS_INIT_CKPT_DIR="${GS_INIT_CKPT_DIR:-${GS_ROOT}/pretrained_ckpt/B6-6-6H768-ELEC-TF}"
GS_PROC_DATA_DIR="${GS_PROC_DATA_DIR:-${GS_ROOT}/proc_data/race}"
GS_MODEL_DIR="${GS_MODEL_DIR:-${GS_ROOT}/exp/race}"
# Unpacked RACE, local: ${RACE_DIR}/{train,dev,test}/{middle,high}/*.txt
RACE_DIR="${RACE_DIR:-data/RACE}"
PYTHON="${PYTHON:-python}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON}" "${root}/tensorflow/race.py" \
  --use_tpu=True \
  --tpu="${TPU_NAME}" \
  --use_bfloat16=True \
  --num_hosts="${NUM_HOSTS}" \
  --num_core_per_host="${NUM_CORE_PER_HOST}" \
  --data_dir="${RACE_DIR}" \
  --output_dir="${GS_PROC_DATA_DIR}" \
  --model_dir="${GS_MODEL_DIR}" \
  --uncased=True \
  --tokenizer_type=word_piece \
  --tokenizer_path="${GS_INIT_CKPT_DIR}/vocab.uncased.txt" \
  --model_config="${GS_INIT_CKPT_DIR}/net_config.json" \
  --init_checkpoint="${GS_INIT_CKPT_DIR}/model.ckpt" \
  --max_seq_length=512 \
  --max_qa_length=128 \
  --do_train=True \
  --do_eval=True \
  --train_batch_size=16 \
  --eval_batch_size=16 \
  --train_steps=24000 \
  --save_steps=2400 \
  --iterations=2400 \
  --warmup_steps=2400 \
  --learning_rate=2e-5 \
  "$@"
