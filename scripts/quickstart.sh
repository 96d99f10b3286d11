#!/usr/bin/env bash
# The main job on a built-in default: finetune the tiny golden Funnel-Transformer checkpoint on a built-in
# MRPC-format paraphrase task, evaluate every saved checkpoint, write the GLUE submission file and print a
# summary. Installs what it needs into .venv first. Outputs land in demo/ (data, tfrecords, checkpoints,
# results); the console shows the progress, demo/classifier.log keeps classifier.py's whole log.
# Usage: bash scripts/quickstart.sh [extra classifier.py flags...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh requirements.txt
py=.venv/bin/python
ckpt=tests/fixtures/golden/tiny_relshift
log=demo/classifier.log
echo "Quick start: finetune ${ckpt} on a built-in MRPC-format task, in demo/"
$py scripts/make_demo_data.py --output_dir=demo
# classifier.py logs every example it writes and every variable it loads; the filter passes its progress,
# warnings and errors to the console and everything to the log file.
if ! PYTHONUNBUFFERED=1 $py tensorflow/classifier.py \
  --task_name=mrpc \
  --do_train=True --do_eval=True --do_submit=True \
  --data_dir=demo/MRPC --output_dir=demo/proc_data --model_dir=demo/exp \
  --overwrite_data=True --overwrite=True \
  --tokenizer_type=word_piece --tokenizer_path=demo/vocab.txt --uncased=True \
  --model_config=$ckpt/net_config.json --init_checkpoint=$ckpt/model.ckpt \
  --max_seq_length=32 --train_batch_size=16 --eval_batch_size=16 \
  --learning_rate=3e-4 --train_steps=1200 --warmup_steps=120 --retain_best=True \
  --iterations=100 --save_steps=300 --log_freq=200 \
  --num_hosts=1 --num_core_per_host=1 "$@" 2>&1 | $py scripts/quickstart_report.py progress "$log"; then
  echo "quickstart.sh: classifier.py failed; its whole log is in $log" >&2
  exit 1
fi
$py scripts/quickstart_report.py summary --model_dir=demo/exp --log="$log"
