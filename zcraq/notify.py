"""systemd's notification protocol (sd_notify(3)), spoken directly: one datagram of ``NAME=value``
lines to the unix socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace). A unit with ``Type=notify`` counts as started at ``READY=1``, shows ``STATUS=`` in
``systemctl status``, and with ``WatchdogSec=`` restarts a process that stops sending
``WATCHDOG=1``. Until it is ready, every new status is progress (a node's catch-up counts the keys
it copied), and comes with ``EXTEND_TIMEOUT_USEC``: a long catch-up is never cut off by the unit's
start timeout, one that stops making progress is.

Without ``$NOTIFY_SOCKET`` every call does nothing. Sending never blocks and never raises: a socket
that is full or gone costs that one message (logged once), and the process goes on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("zcraq.notify")

START_PROGRESS_GRACE_USEC = 300_000_000  # 5 min more to start, from each sign of progress


def _address(name: str) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET``: a path, or the abstract name after ``@``."""
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None  # systemd also knows vsock: addresses; a zcraq process never runs in a VM's guest for it


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 messages: half of ``$WATCHDOG_USEC``, if it is meant for us."""
    usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is another process's (we were started by it)
    try:
        interval = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None
    return interval / 2_000_000 if interval > 0 else None


class Notifier:
    """What this process tells systemd: ready once, its status when it changes, the watchdog at half
    its interval, and that it is stopping."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._name = name = environ.get("NOTIFY_SOCKET", "")
        self._address = _address(name) if name else None
        if name and self._address is None:
            log.warning("ignoring NOTIFY_SOCKET=%r: expected an absolute path or @name", name)
        self._watchdog_every = _watchdog_interval(environ) if self._address else None
        self._watchdog_due = float("-inf")
        self._sock: socket.socket | None = None
        self._ready = False
        self._status: str | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def report(self, status: str, ready: bool) -> None:
        """``STATUS=status`` if it changed, with ``READY=1`` the first time ``ready`` holds (and
        before that, with more time to start)."""
        if self._address is None:
            return
        lines = []
        if ready and not self._ready:
            lines.append("READY=1")
        if status != self._status:
            lines.append(f"STATUS={status}")
            if not ready and not self._ready:
                lines.append(f"EXTEND_TIMEOUT_USEC={START_PROGRESS_GRACE_USEC}")
        if lines and self._send("\n".join(lines)):
            self._ready = self._ready or ready
            self._status = status

    def watchdog(self, now: float) -> None:
        """Call every loop turn: sends WATCHDOG=1 when half the watchdog interval has passed, so a
        loop that stops turning is noticed by systemd."""
        if self._watchdog_every is not None and now >= self._watchdog_due:
            self._watchdog_due = now + self._watchdog_every
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        if self._address is not None:
            self._send("STOPPING=1")

    def _send(self, message: str) -> bool:
        assert self._address is not None
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._address)
        except OSError as error:
            if not self._failed:  # once: a socket that is gone stays gone
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", self._name, error)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
