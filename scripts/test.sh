#!/usr/bin/env bash
# Sets up .venv when needed, then runs the whole test suite offline. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
exec "$root/.venv/bin/python" -m pytest "$@"
