"""Run `studio serve` as a background subprocess and wait until it listens.

This is the embedded default endpoint of synthetic-data generation: when no API is configured, the
generator starts one of these on loopback and talks to it with the ordinary OpenAI client.

    with start_background_server("embedded") as server:
        client = OpenAI(base_url=server.base_url, api_key="unused")
        client.chat.completions.create(model=server.model_name, messages=[...])
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from studio.serving.processes import stop_process

SERVING_LINE = re.compile(r"^Serving (?P<name>.+) at (?P<url>http://\S+/v1)\s*$", re.MULTILINE)
KEY_VARIABLE = "STUDIO_SERVE_API_KEY"


class ServerStartError(RuntimeError):
    pass


class BackgroundServer:
    """A running `studio serve` subprocess; ``stop()`` (or leaving the ``with`` block) ends it."""

    def __init__(self, process: subprocess.Popen, log_dir: Path, base_url: str, model_name: str):
        self.process, self.base_url, self.model_name = process, base_url, model_name
        self._log_dir = log_dir
        self._logs: str | None = None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def logs(self) -> str:
        """What the server wrote to stdout and stderr so far (kept after ``stop()``)."""
        if self._logs is not None:
            return self._logs
        return _read(self._log_dir / "stdout") + _read(self._log_dir / "stderr")

    def stop(self, timeout: float = 10.0) -> None:
        """Close the server's stdin (it shuts down cleanly then), then SIGTERM, then SIGKILL: every
        wait bounded, the process always reaped."""
        if self._logs is not None:
            return
        stdin = self.process.stdin
        stop_process(self.process, before=stdin.close if stdin else None, signals=(signal.SIGTERM,),
                     wait=timeout / 2)
        self._logs = self.logs()
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # a forgotten server must not outlive its owner
        try:
            if self._logs is None and self.process.poll() is None:
                self.process.kill()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def build_event_text(event: dict[str, Any]) -> str | None:
    """One line for a ``model_build`` event (the embedded model built on first use), or None."""
    stage = event.get("stage")
    if stage == "start":
        return (f"building the embedded {event.get('size')} model ({event.get('why')}; a minute or so, once) "
                f"into {event.get('path')}")
    if stage == "corpus":
        return (f"  corpus: {event.get('conversations')} conversations and {event.get('texts')} texts from "
                f"{event.get('files')} sample files")
    if stage == "pretrain":
        return f"  pretraining step {event.get('step')}/{event.get('steps')}, loss {event.get('loss')}"
    if stage == "done":
        return f"  built in {event.get('seconds')} s: {event.get('parameters') or 0:,} parameters"
    return None


def start_background_server(model_ref: str = "embedded", *, name: str | None = None, api_key: str | None = None,
                            trust_remote_code: bool = False, timeout: float = 300.0,
                            env: dict[str, str] | None = None,
                            emit: Callable[[dict[str, Any]], None] | None = None,
                            options: list[str] | None = None) -> BackgroundServer:
    """Start ``python -m studio serve MODEL --port 0`` on 127.0.0.1 and return once it listens.

    The API key, if any, reaches the child through an environment variable, never its command
    line. ``timeout`` covers model loading and, on first use, building the embedded model; that
    build's ``model_build`` events reach ``emit`` as they happen. ``options`` are more `studio serve`
    options (``["--max-batch", "8"]``)."""
    command = [sys.executable, "-m", "studio", "serve", str(model_ref), "--host", "127.0.0.1", "--port", "0",
               "--exit-with-stdin"]
    if emit is not None:
        command.append("--events")
    child_env = {**os.environ, **(env or {})}
    if name:
        command += ["--name", name]
    if trust_remote_code:
        command.append("--trust-remote-code")
    command += options or []
    if api_key:
        child_env[KEY_VARIABLE] = api_key
        command += ["--api-key-env", KEY_VARIABLE]
    log_dir = Path(tempfile.mkdtemp(prefix="studio-serve-"))
    # Output goes to files, not pipes: nobody reads them while serving, and a full pipe would block it.
    with open(log_dir / "stdout", "wb") as out, open(log_dir / "stderr", "wb") as err:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, env=child_env)
    deadline = time.monotonic() + timeout
    reported = 0  # stdout lines already read for events
    while True:
        stdout = _read(log_dir / "stdout")
        if emit is not None:
            lines = stdout.split("\n")[:-1]  # complete lines only
            for line in lines[reported:]:
                if line.startswith("{"):
                    try:
                        emit(json.loads(line))
                    except ValueError:
                        pass  # not an event line
            reported = len(lines)
        match = SERVING_LINE.search(stdout)
        if match:
            return BackgroundServer(process, log_dir, match["url"], match["name"])
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
                why = f"did not report listening within {timeout:.0f} s"
            else:
                why = f"exited with status {process.returncode}"
            tail = "\n".join(_read(log_dir / "stderr").strip().splitlines()[-20:])
            shutil.rmtree(log_dir, ignore_errors=True)
            raise ServerStartError(f"`studio serve {model_ref}` {why}" + (f":\n{tail}" if tail else ""))
        time.sleep(0.05)
