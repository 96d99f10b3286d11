#!/usr/bin/env bash
# Creates .venv at the repository root when missing and installs the given requirements file into it.
# Usage: bash scripts/setup_venv.sh [requirements-file]   (default: requirements.txt)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="${1:-requirements.txt}"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
# A stamp file marks an install; it is stale when a requirements file changed after it.
fresh() {
  [ -f "$1" ] && [ ! "$root/$req" -nt "$1" ] && [ ! "$root/requirements.txt" -nt "$1" ]
}
stamp="$root/.venv/.installed-$(basename "$req")"
dev_stamp="$root/.venv/.installed-requirements-dev.txt"
# requirements-dev.txt includes requirements.txt, so after scripts/test.sh the quick start installs nothing.
if fresh "$stamp" || { [ "$req" = "requirements.txt" ] && fresh "$dev_stamp"; }; then
  exit 0
fi
"$root/.venv/bin/python" -m pip install -q --upgrade pip
"$root/.venv/bin/python" -m pip install -q -r "$root/$req"
if [ "$req" = "requirements-dev.txt" ]; then
  "$root/.venv/bin/python" -m pip install -q --no-deps -r "$root/requirements-nodeps.txt"
fi
touch "$stamp"
