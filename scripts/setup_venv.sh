#!/usr/bin/env bash
# Creates .venv at the repository root when missing and installs the given requirements file into it.
# Usage: bash scripts/setup_venv.sh [requirements-file]   (default: requirements.txt)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="${1:-requirements.txt}"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.installed-$(basename "$req")"
if [ ! -f "$stamp" ] || [ "$root/$req" -nt "$stamp" ] || [ "$root/requirements.txt" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install -q --upgrade pip
  "$root/.venv/bin/python" -m pip install -q -r "$root/$req"
  if [ "$req" = "requirements-dev.txt" ]; then
    "$root/.venv/bin/python" -m pip install -q --no-deps -r "$root/requirements-nodeps.txt"
  fi
  touch "$stamp"
fi
