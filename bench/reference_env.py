"""Isolated virtual environments for reference implementations a benchmark measures against.

References (lm-evaluation-harness, trl's last PPO) are never dependencies of the studio: each lives in
its own venv under ``bench/envs/NAME`` (ignored by git), made on first use by the benchmark itself.

    python = ensure_env("lm-eval-0.4.13", [["torch==2.13.0"], ["lm-eval[hf]==0.4.13", "transformers>=5,<6"]])

Each inner list is one ``pip install``; torch goes first so its CPU build is the one taken.
"""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

# STUDIO_BENCH_ENVS shares one set of reference venvs between checkouts (each is over 1 GB).
ENVS = Path(os.environ.get("STUDIO_BENCH_ENVS") or Path(__file__).resolve().parent / "envs")


def ensure_env(name: str, installs: list[list[str]], log=print) -> Path:
    """The python of ``bench/envs/NAME``, created and filled on first use (a marker says it is done)."""
    folder = ENVS / name
    python = folder / "bin" / "python"
    marker = folder / ".installed"
    wanted = "\n".join(" ".join(step) for step in installs)
    if marker.is_file() and marker.read_text() == wanted:
        return python
    log(f"setting up the reference environment {folder} (once) ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    for step in installs:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *step], check=True)
    marker.write_text(wanted)
    return python


LM_EVAL = ("lm-eval-0.4.13", [["torch==2.13.0"], ["lm-eval[hf,api]==0.4.13", "transformers>=5,<6"]])


def lm_eval_python(log=print) -> Path:
    return ensure_env(*LM_EVAL, log=log)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "lm-eval"
    print(lm_eval_python() if which == "lm-eval" else "unknown reference")
