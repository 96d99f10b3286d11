#!/usr/bin/env bash
# Downloads the released Funnel-Transformer TensorFlow checkpoints into CKPT_DIR (default: ckpts), one
# directory per model holding net_config.json, vocab.uncased.txt and the checkpoint files.
#
# Usage: bash data-scripts/download_ckpts.sh [CKPT_DIR] [KIND] [MODEL ...]
#   KIND: TF (core-only: encoder + decoder, for finetuning; default) or FULL-TF (discriminator, generator
#         and optimizer states, to continue ELECTRA pretraining)
#   MODEL: B4-4-4H768 B6-3x2-3x2H768 B6-6-6H768 B8-8-8H1024 B10-10-10H1024 (default: all five)
#   e.g. bash data-scripts/download_ckpts.sh ckpts TF B4-4-4H768
# FUNNEL_CKPT_URL overrides the download location (a mirror).
set -euo pipefail

ckpt_dir="${1:-ckpts}"
kind="${2:-TF}"
shift 2 || shift $#
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(B4-4-4H768 B6-3x2-3x2H768 B6-6-6H768 B8-8-8H1024 B10-10-10H1024)
fi
case "${kind}" in
  TF | FULL-TF) ;;
  *) echo "download_ckpts.sh: KIND must be TF or FULL-TF, got '${kind}'" >&2; exit 2 ;;
esac

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
base_url="${FUNNEL_CKPT_URL:-http://storage.googleapis.com/funnel-transformer/funnel_ckpts_all}"
mkdir -p "${ckpt_dir}"
for model in "${models[@]}"; do
  name="${model}-ELEC-${kind}"
  echo "Downloading ${name} into ${ckpt_dir}/${name}"
  fetch "${base_url}/${name}.tar.gz" "${tmp}/${name}.tar.gz"
  # Unpack beside the target and move into place, so an interrupted download leaves nothing behind.
  mkdir -p "${tmp}/${name}"
  tar -xzf "${tmp}/${name}.tar.gz" -C "${tmp}/${name}"
  src="${tmp}/${name}"
  # The archives hold one top-level folder; use it when present.
  if [ "$(find "${src}" -mindepth 1 -maxdepth 1 | wc -l)" -eq 1 ] && [ -d "$(find "${src}" -mindepth 1 -maxdepth 1)" ]; then
    src="$(find "${src}" -mindepth 1 -maxdepth 1)"
  fi
  rm -rf "${ckpt_dir:?}/${name}"
  mv "${src}" "${ckpt_dir}/${name}"
  rm -f "${tmp}/${name}.tar.gz"
done
echo "Done. Finetune with --model_config=${ckpt_dir}/<model>/net_config.json" \
  "--init_checkpoint=${ckpt_dir}/<model>/model.ckpt --tokenizer_path=${ckpt_dir}/<model>/vocab.uncased.txt"
