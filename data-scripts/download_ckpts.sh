#!/usr/bin/env bash
# Downloads the released Funnel-Transformer TensorFlow checkpoints into CKPT_DIR (default: ckpts), one
# directory per model holding net_config.json, vocab.uncased.txt and the checkpoint files.
#
# Usage: bash data-scripts/download_ckpts.sh [-h|--help] [CKPT_DIR] [KIND] [MODEL ...]
#   KIND: TF (core-only: encoder + decoder, for finetuning; default) or FULL-TF (discriminator, generator
#         and optimizer states, to continue ELECTRA pretraining)
#   MODEL: B4-4-4H768 B6-3x2-3x2H768 B6-6-6H768 B8-8-8H1024 B10-10-10H1024 (default: all five)
#   e.g. bash data-scripts/download_ckpts.sh ckpts TF B4-4-4H768
#
# A model directory (CKPT_DIR/MODEL-ELEC-KIND) appears only once it is complete; one that exists already
# is skipped (delete it to download it again). Downloads go to CKPT_DIR/<archive>.part first: an
# interrupted run leaves that file and the next run resumes it. Archives whose sha256 is pinned in this
# script are verified (none is yet: no sums were published; each download prints its sum).
# A failure is one line on stderr (the URL and the cause) and exit status 1; a usage error exits 2.
#
# Environment:
#   FUNNEL_CKPT_URL      where the archives are, a mirror
#                        (default http://storage.googleapis.com/funnel-transformer/funnel_ckpts_all)
#   FUNNEL_SHA256        NAME=SHA256 entries overriding the pinned sums, e.g. B4-4-4H768-ELEC-TF.tar.gz=<sum>
#   FUNNEL_DOWNLOADER    wget or curl (default: wget when installed)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

all_kinds=(TF FULL-TF)
all_models=(B4-4-4H768 B6-3x2-3x2H768 B6-6-6H768 B8-8-8H1024 B10-10-10H1024)
base_url="${FUNNEL_CKPT_URL:-http://storage.googleapis.com/funnel-transformer/funnel_ckpts_all}"

# sha256 of the released archives (NAME=SHA256; empty: not pinned). The release published no sums and
# none was found elsewhere, so none is pinned; fill one in from a download you trust (its sum is printed).
sha256_sums="
B4-4-4H768-ELEC-TF.tar.gz=
B6-3x2-3x2H768-ELEC-TF.tar.gz=
B6-6-6H768-ELEC-TF.tar.gz=
B8-8-8H1024-ELEC-TF.tar.gz=
B10-10-10H1024-ELEC-TF.tar.gz=
B4-4-4H768-ELEC-FULL-TF.tar.gz=
B6-3x2-3x2H768-ELEC-FULL-TF.tar.gz=
B6-6-6H768-ELEC-FULL-TF.tar.gz=
B8-8-8H1024-ELEC-FULL-TF.tar.gz=
B10-10-10H1024-ELEC-FULL-TF.tar.gz=
"

parse_args "$@"
ckpt_dir="${args[0]:-ckpts}"
kind="${args[1]:-TF}"
if [ "${#args[@]}" -gt 2 ]; then
  models=("${args[@]:2}")
else
  models=("${all_models[@]}")
fi
check_name KIND "${kind}" "${all_kinds[@]}"
for model in "${models[@]}"; do
  check_name model "${model}" "${all_models[@]}"
done

make_target_dir "${ckpt_dir}"
for model in "${models[@]}"; do
  name="${model}-ELEC-${kind}"
  if [ -e "${ckpt_dir}/${name}" ]; then
    echo "${name}: ${ckpt_dir}/${name} exists, skipped (delete it to download it again)"
    continue
  fi
  echo "Downloading ${name} into ${ckpt_dir}/${name}"
  archive="${ckpt_dir}/${name}.tar.gz"
  fetch "${base_url}/${name}.tar.gz" "${archive}"
  new_stage "${ckpt_dir}"
  mkdir "${stage}/unpacked"
  unpack "${archive}" "${stage}/unpacked"
  src="${stage}/unpacked"
  # The archives hold one top-level folder; use it when present.
  if [ "$(find "${src}" -mindepth 1 -maxdepth 1 | wc -l)" -eq 1 ] && [ -d "$(find "${src}" -mindepth 1 -maxdepth 1)" ]; then
    src="$(find "${src}" -mindepth 1 -maxdepth 1)"
  fi
  if [ -z "$(find "${src}" -mindepth 1 -maxdepth 1)" ]; then
    rm -f "${archive}"
    die "${name}.tar.gz from ${base_url} is empty (removed; rerun to download it again)"
  fi
  if [ ! -f "${src}/net_config.json" ]; then
    echo "  note: ${name} has no net_config.json"
  fi
  install_dir "${src}" "${ckpt_dir}/${name}"
  rm -f "${archive}"
done
echo "Done. Finetune with --model_config=${ckpt_dir}/<model>/net_config.json" \
  "--init_checkpoint=${ckpt_dir}/<model>/model.ckpt --tokenizer_path=${ckpt_dir}/<model>/vocab.uncased.txt"
