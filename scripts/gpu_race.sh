#!/usr/bin/env bash
# RACE on GPU: the seed README's recipe (sequence length 512, global batch 16, learning rate 2e-5, 24000
# steps with 2400 warmup, a checkpoint every 2400 steps), then evaluation of every checkpoint on dev.
# A global batch of 16 questions is 64 sequences of 512: a base model needs a large-memory GPU; spread it
# over several GPUs (NUM_CORE_PER_HOST, which must divide 16) or use PRECISION=float16 on smaller ones.
# Usage: bash scripts/gpu_race.sh [more race.py flags...]   (every variable below can be set from outside)
set -euo pipefail

# Released checkpoint (data-scripts/download_ckpts.sh): net_config.json, model.ckpt, vocab.uncased.txt.
MODEL_DIR="${MODEL_DIR:-ckpts/B6-6-6H768-ELEC-TF}"
# Unpacked RACE: ${RACE_DIR}/{train,dev,test}/{middle,high}/*.txt
RACE_DIR="${RACE_DIR:-data/RACE}"
PROC_DATA_DIR="${PROC_DATA_DIR:-proc_data/race}"
EXP_DIR="${EXP_DIR:-exp/race}"
NUM_CORE_PER_HOST="${NUM_CORE_PER_HOST:-1}"
PRECISION="${PRECISION:-float32}"
PYTHON="${PYTHON:-python}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${PYTHON}" "${root}/tensorflow/race.py" \
  --use_tpu=False \
  --num_hosts=1 \
  --num_core_per_host="${NUM_CORE_PER_HOST}" \
  --precision="${PRECISION}" \
  --data_dir="${RACE_DIR}" \
  --output_dir="${PROC_DATA_DIR}" \
  --model_dir="${EXP_DIR}" \
  --uncased=True \
  --tokenizer_type=word_piece \
  --tokenizer_path="${MODEL_DIR}/vocab.uncased.txt" \
  --model_config="${MODEL_DIR}/net_config.json" \
  --init_checkpoint="${MODEL_DIR}/model.ckpt" \
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
