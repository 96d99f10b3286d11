#!/usr/bin/env bash
# Runs lint and the whole test suite, installing what it needs into .venv first.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh requirements-dev.txt
.venv/bin/ruff check tensorflow tests scripts
.venv/bin/ruff format --check tensorflow tests scripts
exec .venv/bin/python -m pytest -q "$@"
