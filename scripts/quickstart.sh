#!/usr/bin/env bash
# The main job on a built-in default: finetune the tiny golden Funnel-Transformer checkpoint on a built-in
# MRPC-format paraphrase task, evaluate every saved checkpoint and write the GLUE submission file.
# Installs what it needs into .venv first. Outputs land in demo/ (data, tfrecords, checkpoints, results).
# Usage: bash scripts/quickstart.sh [extra classifier.py flags...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh requirements.txt
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
py=.venv/bin/python
ckpt=tests/fixtures/golden/tiny_relshift
$py scripts/make_demo_data.py --output_dir=demo
$py tensorflow/classifier.py \
  --task_name=mrpc \
  --do_train=True --do_eval=True --do_submit=True \
  --data_dir=demo/MRPC --output_dir=demo/proc_data --model_dir=demo/exp \
  --overwrite_data=True --overwrite=True \
  --tokenizer_type=word_piece --tokenizer_path=demo/vocab.txt --uncased=True \
  --model_config=$ckpt/net_config.json --init_checkpoint=$ckpt/model.ckpt \
  --max_seq_length=32 --train_batch_size=16 --eval_batch_size=16 \
  --learning_rate=3e-4 --train_steps=600 --warmup_steps=60 --retain_best=True \
  --iterations=100 --save_steps=200 --log_freq=100 \
  --num_hosts=1 --num_core_per_host=1 "$@"
echo
echo "best result: $(cat demo/exp/best_result.json)"
