# shellcheck shell=bash
# Shared by the download scripts (sourced, not run; the caller has `set -euo pipefail`). It gives them:
#   parse_args "$@"       -h/--help prints the caller's header comment (its usage) and exits 0; any other
#                         option is a one-line error (exit 2); the other arguments are left in `args`.
#   die MSG               one line "SCRIPT: error: MSG" on stderr, exit 1 (usage_error: the same, exit 2).
#   make_target_dir DIR   mkdir -p DIR; the folders it made are removed again at exit if they are empty
#                         (so a run that failed before writing anything leaves no directory behind).
#   fetch URL FILE        downloads URL into FILE.part (resuming what an interrupted run left there),
#                         checks it against the sha256 pinned for the file's name and only then renames
#                         it to FILE: FILE exists only complete. A failure is one line naming the URL and
#                         the cause. An existing FILE is taken as already downloaded.
#   check_name KIND NAME VALID...  a one-line error (exit 2) listing VALID unless NAME is one of them.
#   new_stage DIR         sets `stage` to a new hidden folder in DIR, removed at exit: results are built
#                         there and moved into place (`install_dir SRC DEST`) only when complete.
#   unpack ARCHIVE DIR    unpacks a .zip/.tar.gz/.tgz; a damaged archive is removed and reported in one line.
#   tmp                   a temporary folder, removed at exit.
#
# Checksums: the caller sets `sha256_sums` to its table of NAME=SHA256 entries (whitespace-separated;
# NAME is the file name at the end of the URL). An empty sum (NAME=) or a missing entry means "not
# pinned": the file is used unverified and its sha256 is printed. FUNNEL_SHA256 (same format) overrides
# entries of the table, e.g. FUNNEL_SHA256="CoLA.zip=<sha256> QQP.zip=".
# FUNNEL_DOWNLOADER=wget|curl picks the download tool (default: GNU wget if installed, else curl).

script_name="$(basename "$0")"

die() {
  echo "${script_name}: error: $*" >&2
  exit 1
}

usage_error() {
  echo "${script_name}: error: $*" >&2
  exit 2
}

usage() {
  # The header comment of the script that was run, from its second line to the first non-comment line.
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

parse_args() {
  args=()
  local arg only_operands=0
  for arg in "$@"; do
    if [ "${only_operands}" = 1 ]; then
      args+=("${arg}")
      continue
    fi
    case "${arg}" in
      -h | --help)
        usage
        exit 0
        ;;
      --) only_operands=1 ;;
      -*) usage_error "unknown option '${arg}' (see --help)" ;;
      *) args+=("${arg}") ;;
    esac
  done
}

# check_name KIND NAME VALID...: a one-line error (exit 2) listing the valid names unless NAME is one.
check_name() {
  local kind="$1" name="$2" valid
  shift 2
  for valid in "$@"; do
    [ "${name}" = "${valid}" ] && return 0
  done
  usage_error "unknown ${kind} '${name}': choose from $*"
}

# parse_tasks DEFAULT_DIR ALL_TASKS... -- ARGS...: sets data_dir (the first operand, else DEFAULT_DIR)
# and tasks (the other operands, each checked, else ALL_TASKS).
parse_tasks() {
  local default_dir="$1" task
  shift
  local all=()
  while [ "$1" != "--" ]; do
    all+=("$1")
    shift
  done
  shift
  parse_args "$@"
  # shellcheck disable=SC2034 # read by the sourcing script
  data_dir="${args[0]:-${default_dir}}"
  if [ "${#args[@]}" -gt 1 ]; then
    tasks=("${args[@]:1}")
  else
    tasks=("${all[@]}")
  fi
  for task in "${tasks[@]}"; do
    check_name task "${task}" "${all[@]}"
  done
}

tmp="$(mktemp -d)"
made_dirs=()
stages=()
current_part=""

cleanup() {
  local i
  rm -rf "${tmp}"
  for i in ${stages[@]+"${stages[@]}"}; do
    rm -rf "${i}"
  done
  # An empty .part (a download that failed before its first byte) is no use for resuming.
  if [ -n "${current_part}" ] && [ -f "${current_part}" ] && [ ! -s "${current_part}" ]; then
    rm -f "${current_part}"
  fi
  # Deepest first; rmdir leaves a folder that holds anything (results, a .part to resume).
  for ((i = ${#made_dirs[@]} - 1; i >= 0; i--)); do
    rmdir "${made_dirs[i]}" 2> /dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

make_target_dir() {
  local dir="$1" missing=()
  while [ ! -d "${dir}" ]; do
    missing+=("${dir}")
    [ "${dir}" = "$(dirname "${dir}")" ] && break
    dir="$(dirname "${dir}")"
  done
  mkdir -p "$1" 2> "${tmp}/mkdir.log" || die "cannot create $1: $(tail -n 1 "${tmp}/mkdir.log")"
  # Outermost first, so cleanup (which goes backwards) removes the deepest first.
  local i
  for ((i = ${#missing[@]} - 1; i >= 0; i--)); do
    made_dirs+=("${missing[i]}")
  done
}

new_stage() {
  stage="$(mktemp -d "$1/.partial.XXXXXX")"
  stages+=("${stage}")
}

# install_dir SRC DEST: moves the complete folder SRC to DEST (same file system: one rename).
install_dir() {
  rm -rf "${2:?}"
  mv "$1" "$2"
}

sha256_of() {
  if command -v sha256sum > /dev/null 2>&1; then
    sha256sum "$1" | awk '{ print $1 }'
  elif command -v shasum > /dev/null 2>&1; then
    shasum -a 256 "$1" | awk '{ print $1 }'
  else
    die "cannot compute sha256 sums: neither sha256sum nor shasum is installed"
  fi
}

# pinned_sha256 NAME: the pinned sum of NAME (lower case), or nothing when it is not pinned.
file_size() {
  if [ -f "$1" ]; then
    wc -c < "$1" | tr -d ' '
  else
    echo 0
  fi
}

pinned_sha256() {
  local name="$1" entry sum=""
  # Word splitting of the tables is intended (entries are whitespace-separated); no globbing.
  set -f
  # shellcheck disable=SC2086
  for entry in ${sha256_sums:-} ${FUNNEL_SHA256:-}; do
    if [ "${entry%%=*}" = "${name}" ]; then
      sum="${entry#*=}"
    fi
  done
  set +f
  sum="$(printf '%s' "${sum}" | tr 'A-F' 'a-f')"
  case "${sum}" in
    "") ;;
    *[!0-9a-f]*) die "the sha256 given for ${name} is not a sha256 (64 hex digits): '${sum}'" ;;
    *) [ "${#sum}" -eq 64 ] || die "the sha256 given for ${name} is not a sha256 (64 hex digits): '${sum}'" ;;
  esac
  printf '%s' "${sum}"
}

pick_downloader() {
  downloader="${FUNNEL_DOWNLOADER:-}"
  if [ -z "${downloader}" ]; then
    if command -v wget > /dev/null 2>&1 && wget --version 2> /dev/null | grep -q "GNU Wget"; then
      downloader=wget
    elif command -v curl > /dev/null 2>&1; then
      downloader=curl
    else
      die "neither GNU wget nor curl is installed: install one of them to download"
    fi
  fi
  case "${downloader}" in
    wget | curl) command -v "${downloader}" > /dev/null 2>&1 || die "FUNNEL_DOWNLOADER=${downloader}: not installed" ;;
    *) usage_error "FUNNEL_DOWNLOADER must be wget or curl, got '${downloader}'" ;;
  esac
}

http_reason() {
  case "$1" in
    400) echo "Bad Request" ;;
    401) echo "Unauthorized" ;;
    403) echo "Forbidden" ;;
    404) echo "Not Found" ;;
    410) echo "Gone" ;;
    429) echo "Too Many Requests" ;;
    500) echo "Internal Server Error" ;;
    502) echo "Bad Gateway" ;;
    503) echo "Service Unavailable" ;;
    504) echo "Gateway Timeout" ;;
  esac
}

# download URL PART: appends URL to PART, which holds what an earlier try got (resuming with a range
# request). On failure sets download_error (the cause, one line) and returns 1.
download() {
  local url="$1" part="$2" log="${tmp}/download.log" rc=0 detail code
  : > "${log}"
  if [ "${downloader}" = wget ]; then
    local progress=()
    if [ -t 2 ]; then
      progress=(--show-progress)
    fi
    LC_ALL=C wget -c -nv --tries=5 --timeout=60 --waitretry=2 -o "${log}" \
      ${progress[@]+"${progress[@]}"} -O "${part}" "${url}" || rc=$?
    case "${rc}" in
      0) return 0 ;;
      4)
        if detail="$(grep -o "unable to resolve host address.*" "${log}" | tail -n 1)" && [ -n "${detail}" ]; then
          download_error="could not resolve the host (offline?): ${detail}"
        elif detail="$(grep -o "failed: .*" "${log}" | tail -n 1)" && [ -n "${detail}" ]; then
          detail="${detail#failed: }"
          download_error="could not connect (offline?): ${detail%.}"
        else
          download_error="network failure (offline?): $(tail -n 1 "${log}")"
        fi
        if [ -s "${part}" ]; then
          download_error="${download_error}; rerun to resume"
        fi
        ;;
      5) download_error="SSL/TLS failure: $(tail -n 1 "${log}")" ;;
      8)
        detail="$(grep -o "ERROR [0-9][0-9]*: .*" "${log}" | tail -n 1)"
        if [ -n "${detail}" ]; then
          detail="${detail#ERROR }"
          detail="${detail%.}"
          download_error="HTTP ${detail/: / }"
        else
          download_error="the server answered with an error: $(tail -n 1 "${log}")"
        fi
        ;;
      *) download_error="wget failed (exit ${rc}): $(tail -n 1 "${log}")" ;;
    esac
    return 1
  fi

  # On a terminal curl draws its progress bar (and may print its own error line above ours).
  local quiet=(-sS) errors="${log}"
  if [ -t 2 ]; then
    quiet=(--progress-bar)
    errors=/dev/stderr
  fi
  code="$(curl -fL "${quiet[@]}" --retry 3 --connect-timeout 60 -C - -o "${part}" -w '%{http_code}' \
    "${url}" 2> "${errors}")" || rc=$?
  if [ "${rc}" = 33 ]; then
    # The server ignores range requests: start again from the first byte.
    rm -f "${part}"
    rc=0
    code="$(curl -fL "${quiet[@]}" --retry 3 --connect-timeout 60 -o "${part}" -w '%{http_code}' \
      "${url}" 2> "${errors}")" || rc=$?
  fi
  detail="$(tail -n 1 "${log}" | sed 's/^curl: ([0-9]*) //')"
  detail="${detail:+: ${detail}}"
  case "${rc}" in
    0) return 0 ;;
    6) download_error="could not resolve the host (offline?)${detail}" ;;
    7) download_error="could not connect (offline?)${detail}" ;;
    28) download_error="timed out (offline or slow network?); rerun to resume" ;;
    18 | 56) download_error="the transfer was cut off after $(file_size "${part}") bytes; rerun to resume" ;;
    35 | 51 | 58 | 59 | 60 | 77 | 83 | 90 | 91) download_error="SSL/TLS failure${detail}" ;;
    22)
      if [ "${code}" = 416 ] && [ -s "${part}" ]; then
        # "Range not satisfiable" for a resumed file: it was complete already (the checksum decides).
        return 0
      fi
      download_error="HTTP ${code} $(http_reason "${code}")"
      download_error="${download_error% }"
      ;;
    *) download_error="curl failed (exit ${rc})${detail}" ;;
  esac
  return 1
}

fetch() {
  local url="$1" dest="$2" name want got part
  name="${url##*/}"
  name="${name%%\?*}"
  want="$(pinned_sha256 "${name}")"
  if [ -f "${dest}" ]; then
    # Downloaded (and checked) by an earlier run that stopped before using it.
    if [ -z "${want}" ] || [ "$(sha256_of "${dest}")" = "${want}" ]; then
      echo "  ${name}: already downloaded"
      return 0
    fi
    rm -f "${dest}"
  fi
  [ -n "${downloader:-}" ] || pick_downloader
  part="${dest}.part"
  if [ -s "${part}" ]; then
    echo "  ${name}: resuming after $(file_size "${part}") bytes"
  fi
  current_part="${part}"
  local download_error=""
  if ! download "${url}" "${part}"; then
    if [ ! -s "${part}" ]; then
      rm -f "${part}"
    fi
    die "cannot download ${url}: ${download_error}"
  fi
  got="$(sha256_of "${part}")"
  if [ -z "${want}" ]; then
    echo "  ${name}: sha256 ${got} (not pinned, so not verified)"
  elif [ "${got}" != "${want}" ]; then
    rm -f "${part}"
    die "checksum mismatch for ${name} from ${url}: sha256 ${got}, expected ${want} (download removed; rerun to try again)"
  else
    echo "  ${name}: sha256 verified"
  fi
  mv -f "${part}" "${dest}"
  current_part=""
}

# unpack ARCHIVE DIR: a .zip, .tar.gz or .tgz into DIR; a damaged archive is removed (rerun to download it
# again) and reported in one line.
unpack() {
  local archive="$1" dir="$2" rc=0
  case "${archive}" in
    *.zip)
      if command -v unzip > /dev/null 2>&1; then
        unzip -q -o "${archive}" -d "${dir}" > "${tmp}/unpack.log" 2>&1 || rc=$?
      elif command -v python3 > /dev/null 2>&1; then
        python3 -m zipfile -e "${archive}" "${dir}" > "${tmp}/unpack.log" 2>&1 || rc=$?
      else
        die "cannot unpack ${archive}: neither unzip nor python3 is installed"
      fi
      ;;
    *) tar -xzf "${archive}" -C "${dir}" > "${tmp}/unpack.log" 2>&1 || rc=$? ;;
  esac
  if [ "${rc}" != 0 ]; then
    rm -f "${archive}"
    die "cannot unpack $(basename "${archive}") (removed; rerun to download it again): $(grep -v '^$' "${tmp}/unpack.log" | tail -n 1)"
  fi
}
