"""The changes committed at this node, in the order they committed here: what watchers read.

Every version that commits here is appended once, with its value (or as a deletion), under the
next sequence number. A key's versions commit in version order at every node, so a key's entries
are in version order, and versions are dense (every version the head assigns commits, or is
assigned again): a watcher that sees version v after v-2 of a key knows v-1 is missing here.

Bounded by the number of entries and by their values' bytes: beyond either, the oldest entries are
dropped (``first`` moves on). A watcher that asks for entries older than ``first`` was too slow
and must resynchronize (PROTOCOL.md §8.10).

``token`` names this log's continuity. It changes whenever the node's data changed in a way the log
does not show: at start, and whenever the node leaves the chain (it catches up by copying, which is
not logged). Positions from another token mean nothing here.
"""

from __future__ import annotations

from bisect import bisect_right

Change = tuple[str, int, bool, bytes]  # key, version, deletion, value

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 64 << 20
_ENTRY_OVERHEAD = 100  # bytes an entry costs besides its key and value, roughly


class ChangeLog:
    def __init__(self, boot: str, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._boot = boot
        self._generation = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: list[Change] = []
        self._head = 0  # index in _entries of the oldest entry kept (dropped ones are compacted away later)
        self.first = 1  # sequence number of the oldest entry kept
        self.last = 0  # sequence number of the newest entry (first - 1 when none is kept)
        self._bytes = 0
        self._by_key: dict[str, list[int]] = {}  # each key's entries' sequence numbers, oldest first
        self.token = f"{boot}.0"

    def __len__(self) -> int:
        return self.last - self.first + 1

    @property
    def size(self) -> int:
        """Bytes the entries kept take, roughly."""
        return self._bytes

    def reset(self) -> None:
        """Forget every entry and start a new continuity (a new token; positions go on growing)."""
        self._generation += 1
        self.token = f"{self._boot}.{self._generation}"
        self._entries.clear()
        self._head = 0
        self._by_key.clear()
        self._bytes = 0
        self.first = self.last + 1

    def add(self, key: str, version: int, tombstone: bool, value: bytes) -> None:
        if self.max_entries <= 0:
            self.first = self.last = self.last + 1  # nothing kept: every position is pruned at once
            return
        self.last += 1
        self._entries.append((key, version, tombstone, value))
        seqs = self._by_key.get(key)
        if seqs is None:
            self._by_key[key] = [self.last]
        else:
            seqs.append(self.last)
        self._bytes += len(key) + len(value) + _ENTRY_OVERHEAD
        while self.last - self.first + 1 > self.max_entries or (self._bytes > self.max_bytes and self.first < self.last):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        key, _version, _tombstone, value = self._entries[self._head]
        self._entries[self._head] = ("", 0, False, b"")  # let the value go now
        self._head += 1
        self._bytes -= len(key) + len(value) + _ENTRY_OVERHEAD
        seqs = self._by_key[key]
        del seqs[0]
        if not seqs:
            del self._by_key[key]
        self.first += 1
        if self._head > 1024 and self._head * 2 > len(self._entries):
            del self._entries[:self._head]
            self._head = 0

    def entry(self, seq: int) -> Change:
        return self._entries[self._head + seq - self.first]

    def of_key(self, key: str, after: int, limit: int, max_bytes: int) -> tuple[list[tuple[int, Change]], int]:
        """Entries of ``key`` after position ``after`` (at most ``limit``, and ``max_bytes`` of values
        unless that is one entry) and the position this answer reaches."""
        seqs = self._by_key.get(key, ())
        found: list[tuple[int, Change]] = []
        size = 0
        for seq in seqs[bisect_right(seqs, after):] if seqs else ():
            change = self.entry(seq)
            if found and (len(found) >= limit or size + len(change[3]) > max_bytes):
                return found, found[-1][0]
            found.append((seq, change))
            size += len(change[3])
        return found, self.last

    def with_prefix(self, prefix: str, after: int, limit: int, max_bytes: int,
                    max_examined: int) -> tuple[list[tuple[int, Change]], int]:
        """Entries whose key begins with ``prefix`` after position ``after``, looking at no more than
        ``max_examined`` entries, and the position this answer reaches."""
        found: list[tuple[int, Change]] = []
        size = 0
        seq = max(after, self.first - 1)
        stop = min(self.last, seq + max_examined)
        while seq < stop:
            change = self.entry(seq + 1)
            if change[0].startswith(prefix):
                if found and (len(found) >= limit or size + len(change[3]) > max_bytes):
                    return found, seq
                found.append((seq + 1, change))
                size += len(change[3])
            seq += 1
        return found, seq
