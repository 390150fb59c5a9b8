"""The size of a store's directory on disk, measured at most every ``every`` seconds however often
it is asked for (a scrape must not make the machine walk a directory at every request)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

SAMPLE_EVERY = 10.0


def directory_bytes(path: Path) -> int | None:
    """Bytes of the files in ``path`` and below; None when the directory is not there. A file
    LevelDB deletes while it is being measured (a compaction) simply does not count."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return None
    while entries:
        entry = entries.pop()
        try:
            if entry.is_dir(follow_symlinks=False):
                entries.extend(os.scandir(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


class DirectorySize:
    """``directory_bytes`` of one directory, remeasured at most every ``every`` seconds; safe to ask
    from several threads."""

    def __init__(self, path: Path, every: float = SAMPLE_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._due = float("-inf")
        self._value: int | None = None

    def bytes(self) -> int | None:
        with self._lock:
            now = self._clock()
            if now >= self._due:
                self._value = directory_bytes(self.path)
                self._due = now + self.every
            return self._value
