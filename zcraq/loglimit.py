"""Bounded logs: a line per kind of event per interval, however often the event happens.

Anything a remote peer can trigger at will (malformed or forbidden messages, refused handshakes)
is logged through a LogLimiter: the first occurrence of a kind is logged at once, later ones within
``interval`` seconds are only counted, and the next line of that kind says how many were left out.
Counters (a node's ``counters``, its metrics) keep the full numbers.

The time is passed in, so the protocol cores stay free of clocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

DEFAULT_INTERVAL = 10.0


@dataclass(slots=True)
class _Kind:
    next_at: float
    suppressed: int = 0


class LogLimiter:
    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._kinds: dict[str, _Kind] = {}

    def log(self, level: int, kind: str, now: float, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log ``message % args`` unless a line of ``kind`` went out less than ``interval`` ago."""
        state = self._kinds.get(kind)
        if state is not None and now < state.next_at:
            state.suppressed += 1
            return
        if state is not None and state.suppressed:
            message += " (%d more like it in the last %.0f s not logged)"
            args = (*args, state.suppressed, self.interval)
        self._kinds[kind] = _Kind(now + self.interval)
        self.logger.log(level, message, *args, exc_info=exc_info)

    def warning(self, kind: str, now: float, message: str, *args: Any) -> None:
        self.log(logging.WARNING, kind, now, message, *args)

    def error(self, kind: str, now: float, message: str, *args: Any) -> None:
        self.log(logging.ERROR, kind, now, message, *args)
