#!/usr/bin/env bash
# SQuAD 2.0 preprocessing: downloads train-v2.0.json and dev-v2.0.json into DATA_DIR when missing, then writes
# the training tfrecords in NUM_PROC shards run in parallel (squad.py --prepro_split=train --proc_id=i) and
# the evaluation tfrecord with its feature file (--prepro_split=eval) into OUTPUT_DIR.
# Every question is aligned; each shard logs its counts. The shards are what squad.py --do_train reads.
# Usage: bash scripts/prepro_squad.sh [more squad.py flags...]   (every variable below can be set from outside)
set -euo pipefail

# Where the raw json goes (local).
DATA_DIR="${DATA_DIR:-data/squad}"
# The tokenizer of the released checkpoint (local or gs://): vocab.uncased.txt for word_piece.
TOKENIZER_PATH="${TOKENIZER_PATH:-ckpts/B6-6-6H768-ELEC-TF/vocab.uncased.txt}"
TOKENIZER_TYPE="${TOKENIZER_TYPE:-word_piece}"
# The preprocessed tfrecords (local, or gs:// for a TPU).
OUTPUT_DIR="${OUTPUT_DIR:-proc_data/squad}"
VERSION="${VERSION:-v2}"
MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-512}"
NUM_PROC="${NUM_PROC:-$(nproc)}"
SQUAD_URL="${SQUAD_URL:-https://rajpurkar.github.io/SQuAD-explorer/dataset}"
PYTHON="${PYTHON:-python}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${VERSION}" = "v2" ]; then
  files=(train-v2.0.json dev-v2.0.json)
else
  files=(train-v1.1.json dev-v1.1.json)
fi
mkdir -p "${DATA_DIR}"
source "${root}/data-scripts/common.sh"
for name in "${files[@]}"; do
  if [ ! -s "${DATA_DIR}/${name}" ]; then
    echo "Downloading ${name} into ${DATA_DIR}"
    # fetch resumes DATA_DIR/NAME.part after an interruption; NAME appears only complete.
    rm -f "${DATA_DIR:?}/${name}"
    fetch "${SQUAD_URL}/${name}" "${DATA_DIR}/${name}"
  fi
done

common=(
  --output_dir="${OUTPUT_DIR}"
  --tokenizer_type="${TOKENIZER_TYPE}"
  --tokenizer_path="${TOKENIZER_PATH}"
  --uncased=True
  --max_seq_length="${MAX_SEQ_LENGTH}"
  --max_query_length=64
  --doc_stride=128
  --train_version="${VERSION}"
  --eval_version="${VERSION}"
  --train_file="${DATA_DIR}/${files[0]}"
  --predict_file="${DATA_DIR}/${files[1]}"
)
# One process per shard, each on one core.
pids=()
for ((proc_id = 0; proc_id < NUM_PROC; proc_id++)); do
  "${PYTHON}" "${root}/tensorflow/squad.py" "${common[@]}" --prepro_split=train \
    --num_proc="${NUM_PROC}" --proc_id="${proc_id}" --num_workers=1 "$@" &
  pids+=($!)
done
"${PYTHON}" "${root}/tensorflow/squad.py" "${common[@]}" --prepro_split=eval "$@"
for pid in "${pids[@]}"; do
  wait "${pid}"
done
