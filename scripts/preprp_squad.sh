#!/usr/bin/env bash
# The seed README's spelling of scripts/prepro_squad.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/prepro_squad.sh" "$@"
