#!/usr/bin/env bash
# Sets up .venv when needed, then opens the studio (on the embedded sample workspace when the
# current folder is not a workspace). Arguments go to `studio`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/studio" "$@"
