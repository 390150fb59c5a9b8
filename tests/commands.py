"""The ``zcraq`` command run as a user runs it: a separate process, its exit code and its output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cluster import wait_for

CONSOLE_SCRIPT = Path(sys.executable).with_name("zcraq")
ZCRAQ = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "zcraq"]


def zcraq(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None,
          cwd: Path | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command to completion, its output as text; a hang fails the test at ``timeout``."""
    result = zcraq_binary(*args, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))


def zcraq_binary(*args: str | bytes, timeout: float = 30.0, env: dict[str, str] | None = None,
                 cwd: Path | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the command to completion, its output as the bytes it wrote; a hang fails the test at
    ``timeout`` (the child is killed)."""
    environment = {k: v for k, v in os.environ.items() if k != "ZCRAQ_COORDINATOR"}
    environment.update(env or {})
    with subprocess.Popen([*ZCRAQ, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
                          cwd=cwd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE) as process:
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            raise AssertionError(f"`zcraq {args!r}` did not finish within {timeout:g}s; it printed:\n"
                                 f"{stdout[:2000]!r}{stderr[:2000]!r}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_exit(result: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes], code: int) -> None:
    """The command exited with ``code`` and printed no traceback."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
    stdout = result.stdout if isinstance(result.stdout, str) else repr(result.stdout[:2000])
    assert result.returncode == code, f"exit {result.returncode}, expected {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr, stderr


class ForegroundRun:
    """``zcraq run --config-dir DIR`` as a terminal's foreground job (a process group of its own),
    its output collected line by line; stopped and reaped on leaving the ``with``."""

    def __init__(self, config_dir: Path) -> None:
        self.process = subprocess.Popen([*ZCRAQ, "run", "--config-dir", str(config_dir)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for_line(self, text: str, timeout: float, times: int = 1) -> str:
        """Until ``text`` has been printed ``times`` times; the last line holding it."""
        wait_for(lambda: self.count(text) >= times or self.process.poll() is not None,
                 timeout, f"zcraq run to print {text!r}")
        assert self.count(text) >= times, self.output()
        return [line for line in self.lines if text in line][times - 1]

    def wait(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code

    def ctrl_c(self) -> int:
        """What a terminal's Ctrl-C does: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.wait()

    def __enter__(self) -> ForegroundRun:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()  # its children die with it
            self.wait()


def pid_running(config: Path) -> int | None:
    """The pid of the process started with ``config``, if one runs."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(config).encode() in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return None
