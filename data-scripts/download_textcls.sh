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
# Usage: bash data-scripts/download_textcls.sh [-h|--help] [DATA_DIR] [TASK ...]
#   TASK: imdb yelp5 yelp2 amazon5 amazon2 ag dbpedia (default: all)
#   e.g. bash data-scripts/download_textcls.sh data/text_cls imdb ag
#
# A task directory appears only once it is complete; one that exists already is skipped (delete it to
# download it again). Downloads go to DATA_DIR/<archive>.part first: an interrupted run leaves that file
# and the next run resumes it. Every archive is verified against the sha256 pinned in this script.
# A failure is one line on stderr (the URL and the cause) and exit status 1; a usage error exits 2.
#
# Environment:
#   FUNNEL_IMDB_URL      where aclImdb_v1.tar.gz is (default https://ai.stanford.edu/~amaas/data/sentiment)
#   FUNNEL_TEXTCLS_URL   where the csv archives are (default https://s3.amazonaws.com/fast-ai-nlp)
#   FUNNEL_SHA256        NAME=SHA256 entries overriding the pinned sums (NAME= turns one off)
#   FUNNEL_DOWNLOADER    wget or curl (default: wget when installed)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

all_tasks=(imdb yelp5 yelp2 amazon5 amazon2 ag dbpedia)
imdb_url="${FUNNEL_IMDB_URL:-https://ai.stanford.edu/~amaas/data/sentiment}"
textcls_url="${FUNNEL_TEXTCLS_URL:-https://s3.amazonaws.com/fast-ai-nlp}"

# sha256 of the archives (NAME=SHA256). aclImdb_v1.tar.gz: tensorflow/datasets url_checksums/imdb_reviews.txt.
# The fast.ai archives: FluxML/FastAI.jl src/datasets/fastaidatasets.jl (these s3 URLs); the two Yelp ones
# also in huggingface/datasets (datasets/yelp_review_full/dataset_infos.json, yelp_polarity) and
# tensorflow/datasets url_checksums/yelp_polarity_reviews.txt.
sha256_sums="
aclImdb_v1.tar.gz=c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe
yelp_review_full_csv.tgz=56006b0a17a370f1e366504b1f2c3e3754e4a3dda17d3e718a885c552869a559
yelp_review_polarity_csv.tgz=528f22e286cad085948acbc3bea7e58188416546b0e364d0ae4ca0ce666abe35
amazon_review_full_csv.tgz=4af62eeee139d0142e0747340b68646d23483d9475c33ea0641ee9175b423443
amazon_review_polarity_csv.tgz=d2a3ee7a214497a5d1b8eaed7c8d7ba2737de00ada3b0ec46243983efa100361
ag_news_csv.tgz=9a8c300eabb45750237fcc669f61cb8a3448f3ef6f6098e1ce340e444f6872be
dbpedia_csv.tgz=42db5221ddedddb673a4cabcc5f3a7d869714c878bcfe4ba94b29d14aa38e417
"

parse_tasks data/text_cls "${all_tasks[@]}" -- "$@"

imdb() {
  local archive="${data_dir}/aclImdb_v1.tar.gz"
  fetch "${imdb_url}/aclImdb_v1.tar.gz" "${archive}"
  new_stage "${data_dir}"
  unpack "${archive}" "${stage}"
  if [ ! -d "${stage}/aclImdb/train/pos" ] || [ ! -d "${stage}/aclImdb/test/neg" ]; then
    rm -f "${archive}"
    die "unexpected contents of aclImdb_v1.tar.gz from ${imdb_url}: no aclImdb/{train,test}/{neg,pos} (removed; rerun to download it again)"
  fi
  install_dir "${stage}/aclImdb" "${data_dir}/imdb"
  rm -f "${archive}"
}

# csv TASK NAME: NAME.tgz holds NAME/{train,test}.csv.
csv() {
  local task="$1" name="$2" archive="${data_dir}/$2.tgz"
  fetch "${textcls_url}/${name}.tgz" "${archive}"
  new_stage "${data_dir}"
  unpack "${archive}" "${stage}"
  if [ ! -f "${stage}/${name}/train.csv" ] || [ ! -f "${stage}/${name}/test.csv" ]; then
    rm -f "${archive}"
    die "unexpected contents of ${name}.tgz from ${textcls_url}: no ${name}/train.csv and test.csv (removed; rerun to download it again)"
  fi
  mkdir "${stage}/${task}"
  mv "${stage}/${name}/train.csv" "${stage}/${name}/test.csv" "${stage}/${task}/"
  install_dir "${stage}/${task}" "${data_dir}/${task}"
  rm -f "${archive}"
}

make_target_dir "${data_dir}"
for task in "${tasks[@]}"; do
  if [ -e "${data_dir}/${task}" ]; then
    echo "${task}: ${data_dir}/${task} exists, skipped (delete it to download it again)"
    continue
  fi
  echo "Downloading ${task} into ${data_dir}/${task}"
  case "${task}" in
    imdb) imdb ;;
    yelp5) csv yelp5 yelp_review_full_csv ;;
    yelp2) csv yelp2 yelp_review_polarity_csv ;;
    amazon5) csv amazon5 amazon_review_full_csv ;;
    amazon2) csv amazon2 amazon_review_polarity_csv ;;
    ag) csv ag ag_news_csv ;;
    dbpedia) csv dbpedia dbpedia_csv ;;
  esac
done
echo "Done: ${data_dir}"
