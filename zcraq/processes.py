"""Child processes of a launcher: how they are started, so that they die with it, and how they are
stopped: SIGTERM with a grace period, then SIGKILL.

The cluster launcher (zcraq/cluster.py) and the benchmark's echo servers start their children
here, so there is one answer to "what if the launcher is killed?" and one to "what if a child
ignores SIGTERM?".
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1

_prctl: Any
try:
    # Looked up now: after a fork, only the call itself is safe to make.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None

# PR_SET_PDEATHSIG fires when the *thread* that forked a child ends, not only its process: a child
# started from a short-lived thread (the chaos nemesis restarts processes from its own) would die
# with that thread. So every child is forked by this one thread, which lasts as long as the process.
_forker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zcraq-forker")


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent ends (SIGKILL, so that a paused child
    dies too). With ``parent``: exit at once if that parent is gone already (it died first)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def spawn(argv: Sequence[str], *, log: Path | None = None, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log`` (None: this process's own).

    The child runs in a session of its own, so a Ctrl-C in the terminal reaches only the launcher,
    which then stops its children in order; it dies with the launcher (see die_with_parent); and it
    starts with no signal blocked, whatever the launcher blocks while it waits."""
    environment = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    parent = os.getpid()

    def child_setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        die_with_parent(parent)

    def start() -> subprocess.Popen[bytes]:
        output = open(log, "ab") if log is not None else None
        try:
            return subprocess.Popen(list(argv), stdout=output, stderr=subprocess.STDOUT if output else None,
                                    stdin=subprocess.DEVNULL, env=environment, cwd=cwd,
                                    start_new_session=True, preexec_fn=child_setup)
        finally:
            if output is not None:
                output.close()

    return _forker.submit(start).result()


def kill(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    """SIGKILL and reap (a crash: nothing is flushed); the exit code, None if it outlived ``timeout``."""
    if process.poll() is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def terminate(processes: Iterable[subprocess.Popen[bytes]], grace: float = 10.0) -> list[int | None]:
    """Stop every process at once: SIGCONT (a paused one could not act on SIGTERM) and SIGTERM, then
    SIGKILL whatever still runs after ``grace`` seconds. Their exit codes, in the same order."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGCONT)
                process.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    codes: list[int | None] = []
    for process in processes:
        try:
            codes.append(process.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(kill(process))
    return codes
