#!/usr/bin/env bash
# Downloads the GLUE tasks into DATA_DIR (default: data/glue), one directory per task, in the layout
# classifier.py reads: CoLA, SST-2, MRPC, QQP, STS-B, MNLI, SNLI, QNLI, RTE, WNLI and diagnostic.
#
# Usage: bash data-scripts/download_glue.sh [-h|--help] [DATA_DIR] [TASK ...]
#   TASK: CoLA SST-2 MRPC QQP STS-B MNLI SNLI QNLI RTE WNLI diagnostic (default: all)
#   e.g. bash data-scripts/download_glue.sh data/glue MRPC STS-B
#
# A task directory appears only once it is complete; one that exists already is skipped (delete it to
# download it again). Downloads go to DATA_DIR/<file>.part first: an interrupted run leaves that file
# and the next run resumes it. Every file whose sha256 is pinned in this script is verified.
# A failure is one line on stderr (the URL and the cause) and exit status 1; a usage error exits 2.
#
# Environment:
#   FUNNEL_GLUE_URL      where GLUE's files are (default https://dl.fbaipublicfiles.com/glue/data)
#   FUNNEL_SENTEVAL_URL  where SentEval's MRPC files are
#                        (default https://dl.fbaipublicfiles.com/senteval/senteval_data)
#   FUNNEL_SHA256        NAME=SHA256 entries overriding the pinned sums (NAME= turns one off)
#   FUNNEL_DOWNLOADER    wget or curl (default: wget when installed)
#
# MRPC is not redistributed by GLUE: its train/test files come from SentEval's copy of the Microsoft
# Research Paraphrase Corpus and are split into train/dev with GLUE's list of dev ids.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

all_tasks=(CoLA SST-2 MRPC QQP STS-B MNLI SNLI QNLI RTE WNLI diagnostic)
glue_url="${FUNNEL_GLUE_URL:-https://dl.fbaipublicfiles.com/glue/data}"
senteval_url="${FUNNEL_SENTEVAL_URL:-https://dl.fbaipublicfiles.com/senteval/senteval_data}"

# sha256 of the released files (NAME=SHA256), from huggingface/datasets datasets/glue/dataset_infos.json
# (for these very URLs); tensorflow/datasets url_checksums/glue.txt has the same sums (for SentEval's
# files at these URLs, for the others at their former firebasestorage address, which TFDS found to hold
# the same files). Not pinned (empty): QQP.zip and SNLI.zip, for which no sum of these URLs is published.
# (TFDS found the QQP.zip here smaller than the former firebasestorage one, so that file's sum does not
# apply; GLUE's own downloader now fetches QQP-clean.zip, whose published sum is 40e7c862...)
sha256_sums="
CoLA.zip=f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff
SST-2.zip=d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa
QQP.zip=
STS-B.zip=e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85
MNLI.zip=e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633
SNLI.zip=
QNLIv2.zip=e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5
RTE.zip=6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee
WNLI.zip=ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46
AX.tsv=0e13510b1bb14436ff7e2ee82338f0efb0133ecf2e73507a697dc210db3f05fd
mrpc_dev_ids.tsv=971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7
msr_paraphrase_train.txt=60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89
msr_paraphrase_test.txt=a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784
"

parse_tasks data/glue "${all_tasks[@]}" -- "$@"

# The zip of one task holds a folder named after it (QNLIv2.zip: QNLI) with train.tsv, dev*.tsv, test*.tsv.
glue_zip() {
  local task="$1" zip="$2" src
  fetch "${glue_url}/${zip}" "${data_dir}/${zip}"
  new_stage "${data_dir}"
  unpack "${data_dir}/${zip}" "${stage}"
  src="${stage}/${task}"
  if [ ! -f "${src}/train.tsv" ]; then
    rm -f "${data_dir:?}/${zip}"
    die "unexpected contents of ${zip} from ${glue_url}: no ${task}/train.tsv (removed; rerun to download it again)"
  fi
  install_dir "${src}" "${data_dir}/${task}"
  rm -f "${data_dir:?}/${zip}"
}

mrpc() {
  local out train="${data_dir}/msr_paraphrase_train.txt" test="${data_dir}/msr_paraphrase_test.txt"
  local ids="${data_dir}/mrpc_dev_ids.tsv"
  fetch "${senteval_url}/msr_paraphrase_train.txt" "${train}"
  fetch "${senteval_url}/msr_paraphrase_test.txt" "${test}"
  fetch "${glue_url}/mrpc_dev_ids.tsv" "${ids}"
  new_stage "${data_dir}"
  out="${stage}/MRPC"
  mkdir "${out}"
  tr -d '\r' < "${train}" > "${stage}/train.lf"
  tr -d '\r' < "${test}" > "${stage}/test.lf"
  tr -d '\r' < "${ids}" > "${stage}/dev_ids.lf"
  # Rows whose (#1 ID, #2 ID) pair is in GLUE's dev list form dev.tsv, the others train.tsv.
  awk -F '\t' -v train="${out}/train.tsv" -v dev="${out}/dev.tsv" '
    NR == FNR { is_dev[$1 "\t" $2] = 1; next }
    FNR == 1 { print > train; print > dev; next }
    { if (($2 "\t" $3) in is_dev) print > dev; else print > train }
  ' "${stage}/dev_ids.lf" "${stage}/train.lf"
  awk -F '\t' 'BEGIN { OFS = "\t"; print "index", "#1 ID", "#2 ID", "#1 String", "#2 String" }
    NR > 1 { print NR - 2, $2, $3, $4, $5 }' "${stage}/test.lf" > "${out}/test.tsv"
  install_dir "${out}" "${data_dir}/MRPC"
  rm -f "${train}" "${test}" "${ids}"
}

diagnostic() {
  fetch "${glue_url}/AX.tsv" "${data_dir}/AX.tsv"
  new_stage "${data_dir}"
  mkdir "${stage}/diagnostic"
  mv "${data_dir}/AX.tsv" "${stage}/diagnostic/diagnostic.tsv"
  install_dir "${stage}/diagnostic" "${data_dir}/diagnostic"
}

make_target_dir "${data_dir}"
for task in "${tasks[@]}"; do
  if [ -e "${data_dir}/${task}" ]; then
    echo "${task}: ${data_dir}/${task} exists, skipped (delete it to download it again)"
    continue
  fi
  echo "Downloading ${task} into ${data_dir}/${task}"
  case "${task}" in
    MRPC) mrpc ;;
    diagnostic) diagnostic ;;
    QNLI) glue_zip QNLI QNLIv2.zip ;;
    *) glue_zip "${task}" "${task}.zip" ;;
  esac
done
echo "Done: ${data_dir}"
