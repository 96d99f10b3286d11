#!/usr/bin/env bash
# Downloads the text classification datasets into DATA_DIR (default: data/text_cls), one directory per
# --task_name of classifier.py:
#   imdb      aclImdb_v1 (train|test/{neg,pos}/*.txt)
#   yelp5     Yelp review full          (train.csv, test.csv)
#   yelp2     Yelp review polarity
#   amazon5   Amazon review full
#   amazon2   Amazon review polarity
#   ag        AG news
#   dbpedia   DBpedia ontology
# The csv datasets are Zhang et al.'s (2015) release; the original pointed to its Google-Drive folder
# https://drive.google.com/drive/u/1/folders/0Bz8a_Dbh9Qhbfll6bVpmNUtUcFdjYmF2SEpmZUZUcVNiMUw1TWN6RDV3a0JHT3kxLVhVR2M
# and this script fetches the same archives from fast.ai's public mirror.
#
# Usage: bash data-scripts/download_textcls.sh [DATA_DIR] [TASK ...]
#   e.g. bash data-scripts/download_textcls.sh data/text_cls imdb ag
set -euo pipefail

data_dir="${1:-data/text_cls}"
shift || true
tasks=("$@")
if [ ${#tasks[@]} -eq 0 ]; then
  tasks=(imdb yelp5 yelp2 amazon5 amazon2 ag dbpedia)
fi

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mkdir -p "${data_dir}"

for task in "${tasks[@]}"; do
  echo "Downloading ${task} into ${data_dir}/${task}"
  case "${task}" in
    imdb)
      fetch "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz" "${tmp}/imdb.tar.gz"
      tar xzf "${tmp}/imdb.tar.gz" -C "${tmp}"
      rm -rf "${data_dir}/imdb"
      mv "${tmp}/aclImdb" "${data_dir}/imdb"
      continue
      ;;
    yelp5) archive=yelp_review_full_csv ;;
    yelp2) archive=yelp_review_polarity_csv ;;
    amazon5) archive=amazon_review_full_csv ;;
    amazon2) archive=amazon_review_polarity_csv ;;
    ag) archive=ag_news_csv ;;
    dbpedia) archive=dbpedia_csv ;;
    *)
      echo "unknown task ${task}: choose from imdb yelp5 yelp2 amazon5 amazon2 ag dbpedia" >&2
      exit 1
      ;;
  esac
  fetch "https://s3.amazonaws.com/fast-ai-nlp/${archive}.tgz" "${tmp}/${archive}.tgz"
  tar xzf "${tmp}/${archive}.tgz" -C "${tmp}"
  mkdir -p "${data_dir}/${task}"
  mv "${tmp}/${archive}/train.csv" "${tmp}/${archive}/test.csv" "${data_dir}/${task}/"
done
echo "Done: ${data_dir}"
