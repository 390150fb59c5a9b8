"""Log output of a zcraq process: every line names the process, as text or as JSON.

``zcraq run`` and a cluster's log directory put the lines of several processes side by side, so
each line says whose it is: the node id, or "coordinator". Two formats (config ``log_format``):

- ``text``: ``2026-11-30 23:00:00,123 INFO    node1 zcraq.node: message``; the lines of a
  traceback follow, each prefixed with the process name too.
- ``json``: one object per line, for log collectors: ``ts`` (ISO 8601, UTC, milliseconds),
  ``level``, ``process``, ``logger``, ``msg`` and, when there is one, ``exc`` (the traceback).

A node of a partitioned cluster runs a replica per partition: their lines name the partition too
(text: ``node1/p3``; JSON: ``"partition": 3``).

An uncaught exception is logged the same way, so that even a crash leaves lines of the format.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import TextIO

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(zcraq_process)s %(name)s: %(message)s"

# The partition whose replica is logging, in a node hosting many (zcraq/nodehost.py): its lines say so.
_PARTITION: ContextVar[int | None] = ContextVar("zcraq_partition", default=None)


class for_partition:  # noqa: N801 - used as a function: ``with for_partition(3): ...``
    """Lines logged inside name ``partition`` (text: ``node1/p3``; JSON: ``"partition": 3``). A class,
    not a generator: entered for every message a partitioned node handles."""

    __slots__ = ("partition", "_token")

    def __init__(self, partition: int) -> None:
        self.partition = partition

    def __enter__(self) -> None:
        self._token = _PARTITION.set(self.partition)

    def __exit__(self, *_exc: object) -> None:
        _PARTITION.reset(self._token)


class TextFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__(TEXT_FORMAT, defaults={"zcraq_process": process})
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        partition = _PARTITION.get()
        if partition is not None:
            record.zcraq_process = f"{self.process}/p{partition}"
        first, *more = super().format(record).split("\n")
        # Tracebacks span lines: each keeps the process name, so interleaved output stays readable.
        return "\n".join([first, *(f"{self.process} | {line}" for line in more)])


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str | int] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "process": self.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        partition = _PARTITION.get()
        if partition is not None:
            line["partition"] = partition
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line).decode()


def utc_timestamp(created: float) -> str:
    """``2026-11-30T23:00:00.123Z``: ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


FORMATTERS: dict[str, type[TextFormatter] | type[JsonFormatter]] = {"text": TextFormatter, "json": JsonFormatter}


def formatter(process: str, log_format: str) -> logging.Formatter:
    """The formatter of a ``log_format`` (zcraq/config.py has validated the name)."""
    if log_format not in FORMATTERS:
        raise ValueError(f"log format must be one of {sorted(FORMATTERS)}, got {log_format!r}")
    return FORMATTERS[log_format](process)


def setup_logging(process: str, level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every log record of this process, from ``level`` up, to ``stream`` (stderr) in
    ``log_format``, each line naming ``process``; an uncaught exception too. Replaces any handler
    set up before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(process, log_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    """A crash's traceback in the process's format (one JSON object, not loose lines)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("zcraq").critical("uncaught exception: the process stops", exc_info=(kind, value, traceback))
