"""Runs model-written Python programs (HumanEval completions) away from the studio's process.

Each program gets its own subprocess:

* ``python -I`` (no user site, no PYTHON* variables, no script folder on ``sys.path``), an empty
  environment, a fresh temporary working directory (removed afterwards), stdin from ``/dev/null``;
* resource limits set inside the child before the program starts: CPU seconds, address space, the
  size of any file it writes, open files, processes, and no core dumps;
* a wall-clock timeout that kills the child's whole process group (``start_new_session``);
* no network: the child runs in fresh user, network and PID namespaces (``unshare -rnp``) where this
  machine allows them (probed once). In the PID namespace the program runs under a small init, so a
  timeout's kill ends every process it started, detached ones too; in the user namespace the process
  limit counts only the sandbox's own processes. Without namespaces the process limit counts all of
  this user's processes, so it is set just above their number when the program starts. The kernel
  never applies the process limit to root: there the PID namespace's kill is what ends a fork loop.
  ``network_isolation()`` says whether the network is cut, and reports carry it.

Programs run in parallel on a small pool of threads, each waiting on its own subprocess.

What this does not stop: reading files this user can read, and writing many files each under the
file-size limit within the time limit. Run untrusted code on a machine where that is acceptable.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

ISOLATED = "isolated"
# Room above the user's current process count when there is no namespace of our own to count in.
SHARED_PROCESS_MARGIN = 32
STDERR_TAIL = 2000
# A program killed by a signal exits from the sandbox's init with 128 + the signal's number.
SIGNAL_EXIT_BASE = 128
# How long the sandbox waits for a killed program's processes to be gone.
GROUP_EXIT_PATIENCE = 30.0

# Runs first in the child. Limits are set here, not with preexec_fn (unsafe while the parent has
# threads), and inside the new user namespace, where the process limit counts only the sandbox's
# processes. In a PID namespace this process is the namespace's init: the program runs in a child
# (an init ignores its own fatal signals, so CPU limits would not end it), and when the init ends,
# the kernel ends every process left in the namespace, detached ones included.
BOOTSTRAP = """
import json, os, resource, runpy, sys
setup = json.loads(sys.argv[1])
def run():
    for name, value in setup["limits"].items():
        which = getattr(resource, name)
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
if not setup["init"]:
    run()
    sys.exit(0)
child = os.fork()
if child == 0:
    try:
        run()
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)
while True:
    pid, status = os.waitpid(-1, 0)
    if pid == child:
        break
os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


@dataclass
class Limits:
    """What one program may use."""

    timeout: float = 10.0  # wall-clock seconds
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space
    file_bytes: int = 16 << 20  # the largest file it may write
    open_files: int = 64
    processes: int = 16  # inside its own namespace; above the user's count without one


@dataclass
class Outcome:
    """How a program ended: ``status`` is "passed" (exit 0), "failed", or "timed out"."""

    status: str
    returncode: int | None
    seconds: float
    detail: str = ""  # the last line of stderr, or the signal that ended it
    stderr: str = field(default="", repr=False)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Launcher:
    prefix: tuple[str, ...]  # the command that wraps the interpreter (empty: none)
    network: str  # "isolated" or "not isolated: <why>"
    pid_namespace: bool


def _probe(unshare: str, flags: list[str]) -> tuple[bool, str]:
    code = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    try:
        proc = subprocess.run([unshare, *flags, "--", sys.executable, "-I", "-c", code], capture_output=True,
                              text=True, timeout=30, env={}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"unshare failed to start ({exc})"
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    if proc.stdout.strip() != "['lo']":
        return False, f"the new network namespace has interfaces {proc.stdout.strip()}"
    return True, ""


@functools.lru_cache(maxsize=1)
def launcher() -> Launcher:
    """How programs are started on this machine, probed once: in new user, network and PID namespaces
    when allowed, else user and network only, else directly (and then the network is not isolated)."""
    if not sys.platform.startswith("linux"):
        return Launcher((), f"not isolated: network namespaces are Linux only (this is {sys.platform})", False)
    unshare = shutil.which("unshare")
    if unshare is None:
        return Launcher((), "not isolated: the unshare command (util-linux) is not installed", False)
    full = ["-rnp", "--fork", "--kill-child"]
    ok, why = _probe(unshare, full)
    if ok:
        return Launcher((unshare, *full, "--"), ISOLATED, True)
    ok, why_net = _probe(unshare, ["-rn"])
    if ok:
        return Launcher((unshare, "-rn", "--"), ISOLATED, False)
    return Launcher((), f"not isolated: unshare -rn is not allowed here ({why_net or why})", False)


def network_isolation() -> str:
    """"isolated" when programs run in their own network namespace, else "not isolated: <why>"."""
    return launcher().network


def sandbox_report() -> dict:
    """What a report says about the sandbox."""
    return {"network": network_isolation()}


def _user_processes() -> int:
    """Tasks (threads included, as the kernel counts them for RLIMIT_NPROC) owned by this user."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def _rlimits(limits: Limits, own_namespace: bool) -> dict[str, int]:
    processes = limits.processes if own_namespace else _user_processes() + SHARED_PROCESS_MARGIN
    return {"RLIMIT_CPU": int(limits.cpu_seconds), "RLIMIT_AS": int(limits.memory_bytes),
            "RLIMIT_FSIZE": int(limits.file_bytes), "RLIMIT_NOFILE": int(limits.open_files),
            "RLIMIT_CORE": 0, "RLIMIT_NPROC": int(processes)}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _live_members(group: int) -> bool:
    """Whether a process of ``group`` is still running (zombies, already ended, do not count)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            # Fields after the command's closing parenthesis: state, ppid, pgrp, ...
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 2 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
                return True
    return False


def _end_group(group: int, patience: float = GROUP_EXIT_PATIENCE) -> None:
    """SIGKILL every process of ``group`` and wait until none runs. A fork loop may have left
    hundreds, and on a busy machine they take a while to be scheduled and die."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if not _live_members(group) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def run_program(source: str, limits: Limits | None = None) -> Outcome:
    """Run one program in the sandbox and say how it ended."""
    limits = limits or Limits()
    how = launcher()
    folder = Path(tempfile.mkdtemp(prefix="studio-sandbox-"))
    try:
        program = folder / "program.py"
        program.write_text(source, encoding="utf-8")
        setup = {"limits": _rlimits(limits, own_namespace=bool(how.prefix)), "init": how.pid_namespace}
        command = [*how.prefix, sys.executable, "-I", "-c", BOOTSTRAP, json.dumps(setup), program.name]
        started = time.monotonic()
        with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
            proc = subprocess.Popen(command, cwd=folder, env={}, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # The whole group goes, whether the program ended or not: it may have left children.
                _end_group(proc.pid)
                proc.wait()
        seconds = time.monotonic() - started
        stderr = (folder / "stderr").read_bytes()[-STDERR_TAIL:].decode("utf-8", errors="replace")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if timed_out:
        return Outcome("timed out", None, seconds, f"killed after {limits.timeout:g} s", stderr)
    code = proc.returncode
    if code == 0:
        return Outcome("passed", 0, seconds, "", stderr)
    number = -code if code < 0 else code - SIGNAL_EXIT_BASE if how.pid_namespace and code > SIGNAL_EXIT_BASE else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return Outcome("failed", code, seconds, f"killed by {name}", stderr)
    return Outcome("failed", code, seconds, _last_line(stderr) or f"exit status {code}", stderr)


def run_programs(sources: Sequence[str], limits: Limits | None = None, workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
    """Run each program in its own sandbox, a few at a time; outcomes in the order given."""
    limits = limits or Limits()
    launcher()  # probe once, before the pool starts
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    outcomes: list[Outcome | None] = [None] * len(sources)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        futures = {pool.submit(run_program, source, limits): index for index, source in enumerate(sources)}
        for done, future in enumerate(as_completed(futures), start=1):
            outcomes[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(sources))  # may raise to stop: the programs not started are dropped
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [o for o in outcomes if o is not None]
