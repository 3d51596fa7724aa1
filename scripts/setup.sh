#!/usr/bin/env bash
# Creates .venv (once) with the studio and its stack. Safe to run repeatedly: it only
# installs when pyproject.toml or setup.py changed since the last successful run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.studio-installed"
want="$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch must be installed before anything that depends on it: otherwise pip resolves the newest
# CUDA build (several GB) even on a machine with no GPU.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${pip[@]}" "torch>=2.6"
else
  "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e ".[dev,ray]"
# The editable finder maps only the plugin packages that existed at install time; putting
# plugins/ on sys.path lets a newly written built-in plugin import without reinstalling.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$root/plugins" > "$site/studio-builtin-plugins.pth"
echo "$want" > "$stamp"
