#!/usr/bin/env bash
# Downloads the GLUE tasks into DATA_DIR (default: data/glue), one directory per task, in the layout
# classifier.py reads: CoLA, SST-2, MRPC, QQP, STS-B, MNLI, SNLI, QNLI, RTE, WNLI and diagnostic.
#
# Usage: bash data-scripts/download_glue.sh [DATA_DIR] [TASK ...]
#   e.g. bash data-scripts/download_glue.sh data/glue MRPC STS-B
#
# MRPC is not redistributed by GLUE: its train/test files come from SentEval's copy of the Microsoft
# Research Paraphrase Corpus and are split into train/dev with GLUE's list of dev ids.
set -euo pipefail

data_dir="${1:-data/glue}"
shift || true
tasks=("$@")
if [ ${#tasks[@]} -eq 0 ]; then
  tasks=(CoLA SST-2 MRPC QQP STS-B MNLI SNLI QNLI RTE WNLI diagnostic)
fi

glue_url="https://dl.fbaipublicfiles.com/glue/data"
senteval_url="https://dl.fbaipublicfiles.com/senteval/senteval_data"

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mkdir -p "${data_dir}"

for task in "${tasks[@]}"; do
  echo "Downloading ${task} into ${data_dir}"
  case "${task}" in
    MRPC)
      out="${data_dir}/MRPC"
      mkdir -p "${out}"
      fetch "${senteval_url}/msr_paraphrase_train.txt" "${tmp}/train.txt"
      fetch "${senteval_url}/msr_paraphrase_test.txt" "${tmp}/test.txt"
      fetch "${glue_url}/mrpc_dev_ids.tsv" "${tmp}/dev_ids.tsv"
      tr -d '\r' < "${tmp}/train.txt" > "${tmp}/train.lf"
      tr -d '\r' < "${tmp}/test.txt" > "${tmp}/test.lf"
      tr -d '\r' < "${tmp}/dev_ids.tsv" > "${tmp}/dev_ids.lf"
      # Rows whose (#1 ID, #2 ID) pair is in GLUE's dev list form dev.tsv, the others train.tsv.
      awk -F '\t' -v train="${out}/train.tsv" -v dev="${out}/dev.tsv" '
        NR == FNR { is_dev[$1 "\t" $2] = 1; next }
        FNR == 1 { print > train; print > dev; next }
        { if (($2 "\t" $3) in is_dev) print > dev; else print > train }
      ' "${tmp}/dev_ids.lf" "${tmp}/train.lf"
      awk -F '\t' 'BEGIN { OFS = "\t"; print "index", "#1 ID", "#2 ID", "#1 String", "#2 String" }
        NR > 1 { print NR - 2, $2, $3, $4, $5 }' "${tmp}/test.lf" > "${out}/test.tsv"
      ;;
    diagnostic)
      mkdir -p "${data_dir}/diagnostic"
      fetch "${glue_url}/AX.tsv" "${data_dir}/diagnostic/diagnostic.tsv"
      ;;
    CoLA | SST-2 | QQP | STS-B | MNLI | SNLI | RTE | WNLI)
      fetch "${glue_url}/${task}.zip" "${tmp}/${task}.zip"
      unzip -q -o "${tmp}/${task}.zip" -d "${data_dir}"
      ;;
    QNLI)
      fetch "${glue_url}/QNLIv2.zip" "${tmp}/QNLI.zip"
      unzip -q -o "${tmp}/QNLI.zip" -d "${data_dir}"
      ;;
    *)
      echo "unknown task ${task}: choose from CoLA SST-2 MRPC QQP STS-B MNLI SNLI QNLI RTE WNLI diagnostic" >&2
      exit 1
      ;;
  esac
done
echo "Done: ${data_dir}"
