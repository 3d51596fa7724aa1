"""The real `studio` console script in a real terminal (tmux): plain `studio` outside a
workspace opens the app on the embedded sample workspace."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_for(session: str, text: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    screen = ""
    while time.time() < deadline:
        screen = capture(session)
        if text in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared; last screen:\n{screen}")


def test_studio_opens_the_sample_workspace_in_a_terminal(tmp_path):
    studio = Path(sys.executable).parent / "studio"
    session = f"studio-test-{os.getpid()}"
    env_args = []
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        env_args += ["-e", f"{key}=1"]
    env_args += ["-e", f"STUDIO_HOME={tmp_path / 'home'}", "-e", "TERM=xterm-256color"]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "36", "-c", str(tmp_path),
                    *env_args, str(studio)], check=True)
    try:
        # Wait for a later row of the list itself, not a half-drawn frame (the terminal may be
        # shorter than asked for when tmux runs detached, so not the last row).
        screen = wait_for(session, "openai_chat")
        assert "alpaca" in screen and "dolly" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "F1"], check=True)
        wait_for(session, "Keys")
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"])
        time.sleep(0.5)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert (tmp_path / "home" / "sample-workspace" / "studio.yaml").is_file()
