"""The history of a chaos run, written as it happens in the JSON Lines format the checker reads.

One event per line: ``{"process", "type": invoke|ok|fail|info, "f": read|write|cas|delete, "key",
"value", "time"}`` (a cas's value is ``[expected, new]``) with ``time`` from ``time.monotonic_ns()``.
Events are stamped and written under one lock, so the file is in time order and every process's
events are in its own order. The file is flushed every second, so a run that dies still leaves its
history behind.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson


class HistoryWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")
        self._lock = threading.Lock()
        self._flushed = time.monotonic()
        self.counts: Counter[str] = Counter()  # "invoke", "ok", "fail", "info", and "<f> <type>"

    def record(self, process: Any, kind: str, f: str, key: str, value: Any, at: int | None = None,
               **extra: Any) -> int:
        """Stamp (now, or ``at``: an earlier monotonic_ns) and write one event; returns its time.
        ``extra``: further fields of the event (a bounded read's ``staleness``)."""
        with self._lock:
            now = time.monotonic_ns() if at is None else at
            if self._file.closed:  # a client thread finishing after an aborted run
                return now
            self._file.write(orjson.dumps({"process": process, "type": kind, "f": f, "key": key,
                                           "value": value, "time": now, **extra}) + b"\n")
            self.counts[kind] += 1
            if kind != "invoke":
                self.counts[f"{f} {kind}"] += 1
            if now / 1e9 - self._flushed >= 1.0:
                self._file.flush()
                self._flushed = now / 1e9
            return now

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
