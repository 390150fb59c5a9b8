"""A LevelDB store (via plyvel) with buffered, atomically flushed mutations.

Key layout (LevelDB orders keys bytewise, so the layout is chosen to make that order meaningful)::

    item:      b"d" + escape(utf8(key)) + b"\\x00\\x00" + version as 8-byte big-endian unsigned
    metadata:  b"m" + name                 (reserved for node metadata; unused so far)

``escape`` replaces every 0x00 byte of the key with 0x00 0xFF, and ``0x00 0x00`` terminates the
key. That makes the encoding unambiguous ("a" and "a\\x00b" never share a prefix) while keeping
LevelDB's byte order equal to (UTF-8 key bytes, numeric version) order: the terminator sorts below
both any escaped 0x00 (0x00 0xFF) and any other byte, so a key sorts before every longer key it is
a prefix of. One key's versions are therefore contiguous and ascending, so ``latest`` is one short
reverse iteration over the key's prefix.

Value record: one flags byte (bit 0: committed, bit 1: tombstone) followed by the raw value bytes.

Mutations go to an in-memory overlay (per key: version -> record, or None for a deletion) and
reach LevelDB as one atomic write batch on ``flush()``. Every read merges the overlay over LevelDB.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import plyvel

from .base import Item, Page
from .errors import StoreClosedError, StoreError, check_key, check_value, check_version

DATA = b"d"
META = b"m"  # reserved namespace; nothing lives here yet
_DATA_END = b"e"  # first byte past the item namespace
_TERMINATOR = b"\x00\x00"
_COMMITTED = 0x01
_TOMBSTONE = 0x02
DURABILITIES = ("sync", "async")

K = TypeVar("K", int, bytes)
Record = bytes | None  # None marks a buffered deletion


def key_prefix(key: str) -> bytes:
    """The prefix shared by every stored version of ``key``."""
    return DATA + check_key(key).replace(b"\x00", b"\x00\xff") + _TERMINATOR


def encode_key(key: str, version: int) -> bytes:
    return key_prefix(key) + version.to_bytes(8, "big")


def decode_key(raw: bytes) -> tuple[str, int]:
    body = raw[len(DATA) : -8 - len(_TERMINATOR)]
    return body.replace(b"\x00\xff", b"\x00").decode("utf-8"), int.from_bytes(raw[-8:], "big")


def encode_record(value: bytes, committed: bool, tombstone: bool) -> bytes:
    flags = (_COMMITTED if committed else 0) | (_TOMBSTONE if tombstone else 0)
    return bytes([flags]) + value


def decode_record(key: str, version: int, record: bytes) -> Item:
    flags = record[0]
    return Item(key, version, record[1:], bool(flags & _COMMITTED), bool(flags & _TOMBSTONE))


def _merge(
    base: Iterable[tuple[K, bytes]], overlay: list[tuple[K, Record]], reverse: bool
) -> Iterator[tuple[K, bytes]]:
    """Merge two streams sorted the same way; the overlay wins ties and None entries hide."""
    it = iter(base)
    head = next(it, None)
    for okey, orec in overlay:
        while head is not None and (head[0] > okey if reverse else head[0] < okey):
            yield head
            head = next(it, None)
        if head is not None and head[0] == okey:
            head = next(it, None)
        if orec is not None:
            yield okey, orec
    while head is not None:
        yield head
        head = next(it, None)


class LevelDBStore:
    def __init__(self, path: str | Path, durability: str = "sync") -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self._pending: dict[str, dict[int, Record]] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: plyvel.DB | None = plyvel.DB(str(self.path), create_if_missing=True)
        except (plyvel.Error, OSError) as exc:
            # Typically the LOCK file is held by another process (or another handle here).
            raise StoreError(f"cannot open LevelDB store at {self.path}: {exc}") from exc

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        version: int,
        value: bytes,
        *,
        committed: bool = False,
        tombstone: bool = False,
    ) -> bool:
        self._check_open()
        check_version(version)
        value = check_value(value)
        held = self._held(key)
        if version in held:
            return False
        newest = _newest_committed(held)
        if newest is not None and version <= newest:
            return False
        self._stage(key, version, encode_record(value, committed, tombstone))
        if committed:
            for v in held:
                if v < version:
                    self._stage(key, v, None)
        return True

    def commit(self, key: str, version: int) -> bool:
        self._check_open()
        check_version(version)
        held = self._held(key)
        item = held.get(version)
        if item is None:
            return False
        newest = _newest_committed(held)
        if newest is not None and newest >= version:
            return False
        self._stage(key, version, encode_record(item.value, True, item.tombstone))
        for v in held:
            if v < version:
                self._stage(key, v, None)
        return True

    def prune(self, key: str, below: int) -> int:
        self._check_open()
        doomed = [v for v in self._held(key) if v < below]
        for v in doomed:
            self._stage(key, v, None)
        return len(doomed)

    def drop_uncommitted(self) -> int:
        self._check_open()
        dirty = list(self.dirty_items())
        for item in dirty:
            self._stage(item.key, item.version, None)
        return len(dirty)

    def delete(self, key: str) -> None:
        self._check_open()
        for v in self._held(key):
            self._stage(key, v, None)

    # -- reads -------------------------------------------------------------------------------

    def latest(self, key: str) -> Item | None:
        self._check_open()
        for version, record in self._key_versions(key, reverse=True):
            return decode_record(key, version, record)
        return None

    def latest_committed(self, key: str) -> Item | None:
        self._check_open()
        for version, record in self._key_versions(key, reverse=True):
            if record[0] & _COMMITTED:
                return decode_record(key, version, record)
        return None

    def get(self, key: str, version: int) -> Item | None:
        db = self._check_open()
        check_version(version)
        pending = self._pending.get(key, {})
        record = pending[version] if version in pending else db.get(encode_key(key, version))
        return None if record is None else decode_record(key, version, record)

    def versions(self, key: str) -> list[int]:
        self._check_open()
        return [v for v, _ in self._key_versions(key)]

    def committed_page(self, after: str | None, limit: int) -> Page:
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        items: list[Item] = []
        for key in self._keys_after(after):
            item = self.latest_committed(key)
            if item is None:
                continue
            if len(items) == limit:
                # Another committed key exists, so the caller must ask again.
                return Page(items, items[-1].key)
            items.append(item)
        return Page(items, None)

    def committed_share(self, through: str) -> float | None:
        """LevelDB's estimate of the bytes on disk up to ``through``'s last version, over those of
        every item. Writes still in the memtable (or not flushed) have no size on disk yet: None
        while nothing is on disk."""
        db = self._check_open()
        end_of_key = key_prefix(through)[:-1] + b"\x01"  # past every version of ``through``
        total, upto = db.approximate_sizes((DATA, _DATA_END), (DATA, end_of_key))
        if total <= 0:
            return None
        return min(1.0, upto / total)

    def dirty_items(self) -> Iterator[Item]:
        db = self._check_open()
        overlay = sorted(
            (encode_key(key, v), rec)
            for key, held in self._pending.items()
            for v, rec in held.items()
        )
        dirty: list[Item] = []
        with db.iterator(prefix=DATA) as it:
            for raw, record in _merge(it, overlay, reverse=False):
                if not record[0] & _COMMITTED:
                    dirty.append(decode_record(*decode_key(raw), record))
        # Built eagerly so callers may mutate the store while iterating.
        return iter(dirty)

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self) -> None:
        db = self._check_open()
        if not self._pending:
            return
        # transaction=True: an exception while filling the batch writes nothing.
        with db.write_batch(transaction=True, sync=self.durability == "sync") as batch:
            for key, held in self._pending.items():
                for version, record in held.items():
                    if record is None:
                        batch.delete(encode_key(key, version))
                    else:
                        batch.put(encode_key(key, version), record)
        self._pending.clear()

    def close(self) -> None:
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            self._db.close()
            self._db = None

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> plyvel.DB:
        if self._db is None:
            raise StoreClosedError(f"LevelDB store at {self.path} is closed")
        return self._db

    def _stage(self, key: str, version: int, record: Record) -> None:
        self._pending.setdefault(key, {})[version] = record

    def _key_versions(self, key: str, reverse: bool = False) -> Iterator[tuple[int, bytes]]:
        """(version, record) for every version of ``key``, overlay merged over LevelDB."""
        db = self._check_open()
        prefix = key_prefix(key)
        overlay = sorted(self._pending.get(key, {}).items(), reverse=reverse)
        with db.iterator(prefix=prefix, reverse=reverse) as it:
            base = ((int.from_bytes(raw[-8:], "big"), rec) for raw, rec in it)
            yield from _merge(base, overlay, reverse)

    def _held(self, key: str) -> dict[int, Item]:
        return {v: decode_record(key, v, rec) for v, rec in self._key_versions(key)}

    def _keys_after(self, after: str | None) -> Iterator[str]:
        """Every key with a stored or buffered entry strictly after ``after``, in store order.
        Keys whose entries are all buffered deletions may appear; callers check their versions."""
        db = self._check_open()
        start = DATA if after is None else key_prefix(after)[:-1] + b"\x01"
        buffered = sorted(p for p in map(key_prefix, self._pending) if p >= start)
        with db.iterator(start=start, stop=_DATA_END, include_value=False) as it:
            previous = None
            for prefix in heapq.merge((raw[:-8] for raw in it), buffered):
                if prefix != previous:  # one entry per version: report each key once
                    previous = prefix
                    yield decode_key(prefix + bytes(8))[0]


def _newest_committed(held: dict[int, Item]) -> int | None:
    return max((v for v, it in held.items() if it.committed), default=None)
