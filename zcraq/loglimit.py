"""Bounded logs: a line per kind of event per interval, however often the event happens.

Anything a remote peer can trigger at will (malformed or forbidden messages, refused handshakes),
and anything that repeats until an operator acts, is logged through a LogLimiter: the first
occurrence of a kind is logged at once; later ones within ``interval`` seconds are only counted.
When the interval is over, the count comes out: either with the next line of that kind, or, if
none comes, from ``flush`` (which the process shells call every loop turn) as the last line left
out, e.g. ``dropped a malformed chain frame: ... (36 more like this in the last 10 s)``. Counters
(a node's ``counters``) keep the full numbers.

The time is passed in, so the protocol cores stay free of clocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

DEFAULT_INTERVAL = 10.0
COUNT_NOTE = " (%d more like this in the last %.0f s)"


@dataclass(slots=True)
class _Left:
    """The newest line of a kind left out, kept to be logged by ``flush``. Its traceback is not
    kept: formatting one for every line left out would cost what limiting saves."""

    level: int
    message: str
    args: tuple[Any, ...]


@dataclass(slots=True)
class _Kind:
    logged_at: float  # when the last line of this kind went out
    quiet_until: float  # until then, lines of this kind are only counted
    left_out: int = 0
    newest: _Left | None = None


class LogLimiter:
    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._kinds: dict[str, _Kind] = {}

    def log(self, level: int, kind: str, now: float, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log ``message % args`` unless a line of ``kind`` went out less than ``interval`` ago."""
        state = self._kinds.get(kind)
        if state is not None and now < state.quiet_until:
            state.left_out += 1
            state.newest = _Left(level, message, args)
            return
        if state is not None and state.left_out:
            message += COUNT_NOTE
            args = (*args, state.left_out, now - state.logged_at)
        self._emit(kind, now, level, message, args, exc_info)

    def warning(self, kind: str, now: float, message: str, *args: Any) -> None:
        self.log(logging.WARNING, kind, now, message, *args)

    def error(self, kind: str, now: float, message: str, *args: Any) -> None:
        self.log(logging.ERROR, kind, now, message, *args)

    def info(self, kind: str, now: float, message: str, *args: Any) -> None:
        self.log(logging.INFO, kind, now, message, *args)

    def flush(self, now: float) -> None:
        """Log the newest line left out of each kind whose interval is over, with the count of the
        others; forget kinds that have been quiet for an interval (the table stays small)."""
        for kind, state in list(self._kinds.items()):
            if now < state.quiet_until:
                continue
            newest = state.newest
            if newest is None:
                del self._kinds[kind]
                continue
            message, args = newest.message, newest.args
            if state.left_out > 1:
                message += COUNT_NOTE
                args = (*args, state.left_out - 1, now - state.logged_at)
            self._emit(kind, now, newest.level, message, args, False)

    def _emit(self, kind: str, now: float, level: int, message: str, args: tuple[Any, ...], exc_info: bool) -> None:
        self._kinds[kind] = _Kind(now, now + self.interval)
        self.logger.log(level, message, *args, exc_info=exc_info)
