"""A LevelDB store (via plyvel) with buffered, atomically flushed mutations.

Key layout (LevelDB orders keys bytewise, so the layout is chosen to make that order meaningful)::

    item:      b"d" + escape(utf8(key)) + b"\\x00\\x00" + version as 8-byte big-endian unsigned
    metadata:  b"m" + name                 (reserved for node metadata; unused so far)

``escape`` replaces every 0x00 byte of the key with 0x00 0xFF, and ``0x00 0x00`` terminates the
key. That makes the encoding unambiguous ("a" and "a\\x00b" never share a prefix) while keeping
LevelDB's byte order equal to (UTF-8 key bytes, numeric version) order: the terminator sorts below
both any escaped 0x00 (0x00 0xFF) and any other byte, so a key sorts before every longer key it is
a prefix of. One key's versions are therefore contiguous and ascending: reading them all is one short
iteration over the key's prefix.

Value record: one flags byte (bit 0: committed, bit 1: tombstone; the version index's ``FLAGS``)
followed by the raw value bytes.

Mutations go to an in-memory overlay (per key: version -> record, or None for a deletion) and
reach LevelDB as one atomic write batch on ``flush()``. Reads see the overlay over LevelDB.

A version index (``version_index.py``) knows, in memory, which versions each key holds (overlay
included) and their flags, so the store decides every put, commit, prune and delete from memory and
reads a value with one point lookup (or from the overlay) instead of iterating over the key's
versions. One pass over every item at open fills it, in key order, up to ``index_max_keys`` keys
(0.2 to 0.3 s per 100,000 keys of one 64-byte value); beyond the cap the least recently used keys
fall out, and a key the index does not know is read by that iteration and goes back in. With
``index_max_keys=0`` every operation iterates, as without an index. The index also tracks, for every
key and whatever the cap, which keys hold a dirty version, so ``dirty_items`` and
``drop_uncommitted`` visit only those.

The records of dirty versions also stay in memory after the flush, until they commit or are
deleted (up to 64 MiB, ``DIRTY_RECORDS_BYTES``): a commit rewrites the record with its flag set and
takes it from there rather than reading it back from LevelDB. Dirty versions are the writes in
flight, which the chain's sent lists hold in memory too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import plyvel

from .base import Item, Page, Row, Rows
from .errors import MAX_VERSION, StoreClosedError, StoreError, check_key, check_value, check_version
from .version_index import (
    COMMITTED,
    DEFAULT_MAX_KEYS,
    FLAGS,
    TOMBSTONE,
    Entry,
    VersionIndex,
    below,
    find,
    newest_committed,
    pack,
    version_of,
)

DATA = b"d"
META = b"m"  # reserved namespace; nothing lives here yet
_DATA_END = b"e"  # first byte past the item namespace
DIRTY_RECORDS_BYTES = 64 << 20  # dirty versions' records kept in memory until they commit
_TERMINATOR = b"\x00\x00"
DURABILITIES = ("sync", "async")

K = TypeVar("K", int, bytes)
Record = bytes | None  # None marks a buffered deletion


def key_prefix(key: str) -> bytes:
    """The prefix shared by every stored version of ``key``."""
    return DATA + check_key(key).replace(b"\x00", b"\x00\xff") + _TERMINATOR


def encode_key(key: str, version: int) -> bytes:
    return key_prefix(key) + version.to_bytes(8, "big")


def _encode_checked_key(key: str, version: int) -> bytes:
    """``encode_key`` for a key already checked: once per operation is enough on the hot path."""
    return DATA + key.encode("utf-8").replace(b"\x00", b"\x00\xff") + _TERMINATOR + version.to_bytes(8, "big")


def decode_key(raw: bytes) -> tuple[str, int]:
    body = raw[len(DATA) : -8 - len(_TERMINATOR)]
    return body.replace(b"\x00\xff", b"\x00").decode("utf-8"), int.from_bytes(raw[-8:], "big")


def encode_record(value: bytes, committed: bool, tombstone: bool) -> bytes:
    flags = (COMMITTED if committed else 0) | (TOMBSTONE if tombstone else 0)
    return bytes([flags]) + value


def decode_record(key: str, version: int, record: bytes) -> Item:
    flags = record[0]
    return Item(key, version, record[1:], bool(flags & COMMITTED), bool(flags & TOMBSTONE))


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


def open_database(path: Path, what: str) -> plyvel.DB:
    """A LevelDB database at ``path``, created if missing; StoreError says why it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return plyvel.DB(str(path), create_if_missing=True)
    except (plyvel.Error, OSError) as exc:
        # Typically the LOCK file is held by another process (or another handle here).
        raise StoreError(f"cannot open LevelDB {what} at {path}: {exc}") from exc


class LevelDBStore:
    def __init__(
        self, path: str | Path, durability: str = "sync", index_max_keys: int = DEFAULT_MAX_KEYS,
        *, within: tuple[plyvel.DB, bytes] | None = None, group: list[tuple[bytes, bytes | None]] | None = None
    ) -> None:
        """``index_max_keys``: how many keys the version index holds at most (0: no index).
        ``within``: a database opened elsewhere and the prefix under which this store keeps its
        whole layout (zcraq/store/shared.py: many partitions' stores in one database); closing
        the store then leaves that database open. ``group`` (with ``within`` only): a flush appends
        its writes, prefixed, to this list instead of writing them; the database's holder writes
        the list of every store in one batch (one sync for many partitions) before anything that
        depends on them is sent. A flushed store then reads its own writes only after that."""
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        if not isinstance(index_max_keys, int) or isinstance(index_max_keys, bool) or index_max_keys < 0:
            raise ValueError(f"index_max_keys must be an integer of at least 0, got {index_max_keys!r}")
        self.path = Path(path)
        self.durability = durability
        self.index_max_keys = index_max_keys
        self._pending: dict[str, dict[int, Record]] = {}
        # The records of dirty versions, kept after the flush until they commit or go: a commit
        # rewrites the record with its committed flag, and would otherwise read it back from
        # LevelDB (a point read per commit at every node but the tail). At most
        # DIRTY_RECORDS_BYTES; past that, commits read LevelDB.
        self._dirty_records: dict[tuple[str, int], bytes] = {}
        self._dirty_bytes = 0
        self._db: plyvel.DB | None
        self._owns_db = within is None
        self._group = group
        if within is not None:
            self._root, self._prefix = within
            # No prefix: the whole database, as an unshared store has it (without a wrapper's cost).
            self._db = self._root.prefixed_db(self._prefix) if self._prefix else self._root
        else:
            self._db = self._root = open_database(self.path, "store")
            self._prefix = b""
        started = time.perf_counter()
        self._index = VersionIndex(index_max_keys)
        try:
            self._fill_index(self._db)
        except BaseException as exc:
            self._release()  # or the directory would stay locked by this half-open handle
            if isinstance(exc, (plyvel.Error, UnicodeDecodeError)):  # damaged data
                raise StoreError(f"cannot read LevelDB store at {self.path}: {exc}") from exc
            raise
        self.index_fill_seconds = time.perf_counter() - started

    @property
    def closed(self) -> bool:
        return self._db is None

    @property
    def indexed_keys(self) -> int:
        """How many keys the version index knows now."""
        return len(self._index)

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
        check_key(key)
        check_version(version)
        value = check_value(value)
        entry = self._entry(key)
        if find(entry, version) >= 0:
            return False
        newest = newest_committed(entry)
        if newest >= 0 and version <= version_of(entry[newest]):
            return False
        record = encode_record(value, committed, tombstone)
        self._stage(key, version, record)
        if not committed and self._dirty_bytes + len(record) <= DIRTY_RECORDS_BYTES:
            self._dirty_records[(key, version)] = record
            self._dirty_bytes += len(record)
        older = below(entry, version)
        if committed:
            self._stage_deletions(key, entry[:older])
            entry = (pack(version, record[0]), *entry[older:])
        else:
            entry = (*entry[:older], pack(version, record[0]), *entry[older:])
        self._index.set(key, entry)
        return True

    def put_committed(self, rows: Iterable[Row]) -> int:
        """``put(..., committed=True)`` of each row, with the lookups bound and the index told once
        for the whole page rather than once per row."""
        self._check_open()
        changed: dict[str, Entry] = {}  # what the index is told at the end; a later row sees it first
        try:
            return self._stage_committed(rows, changed)
        finally:  # a bad row raises, and what the rows before it staged must be indexed all the same
            self._index.set_many(changed.items())

    def _stage_committed(self, rows: Iterable[Row], changed: dict[str, Entry]) -> int:
        index, pending = self._index, self._pending
        stored = 0
        for key, version, value, tombstone in rows:
            check_key(key)
            if type(version) is not int or not 0 < version <= MAX_VERSION:  # check_version's test, inlined
                check_version(version)
            if type(value) is not bytes:
                value = check_value(value)
            entry = changed.get(key)
            if entry is None:
                entry = index.get(key, touch=False)
                if entry is None:
                    entry = self._scan(key)
            newer: Entry = ()
            if entry:
                if find(entry, version) >= 0:
                    continue
                newest = newest_committed(entry)
                if newest >= 0 and version <= version_of(entry[newest]):
                    continue
                older = below(entry, version)
                self._stage_deletions(key, entry[:older])
                newer = entry[older:]
            flags = (COMMITTED | TOMBSTONE) if tombstone else COMMITTED
            held = pending.get(key)
            if held is None:
                pending[key] = {version: bytes((flags,)) + value}
            else:
                held[version] = bytes((flags,)) + value
            changed[key] = (pack(version, flags), *newer)
            stored += 1
        return stored

    def commit(self, key: str, version: int) -> bool:
        self._check_open()
        check_key(key)
        check_version(version)
        entry = self._entry(key)
        at = find(entry, version)
        if at < 0:
            return False
        newest = newest_committed(entry)
        if newest >= at:
            return False
        record = self._record(key, version)
        self._stage(key, version, encode_record(record[1:], True, bool(record[0] & TOMBSTONE)))
        self._stage_deletions(key, entry[:at])
        self._index.set(key, (entry[at] | COMMITTED, *entry[at + 1 :]))
        return True

    def prune(self, key: str, below_version: int) -> int:
        self._check_open()
        check_key(key)
        entry = self._entry(key)
        older = below(entry, below_version)
        if older:
            self._stage_deletions(key, entry[:older])
            self._index.set(key, entry[older:])
        return older

    def drop_uncommitted(self) -> int:
        self._check_open()
        dropped = 0
        for key in self._dirty_keys():
            entry = self._entry(key)
            dirty = tuple(p for p in entry if not p & COMMITTED)
            self._stage_deletions(key, dirty)
            self._index.set(key, tuple(p for p in entry if p & COMMITTED))
            dropped += len(dirty)
        return dropped

    def delete(self, key: str) -> None:
        self._check_open()
        check_key(key)
        entry = self._entry(key)
        if entry:
            self._stage_deletions(key, entry)
            self._index.set(key, ())

    # -- reads -------------------------------------------------------------------------------

    def latest(self, key: str) -> Item | None:
        self._check_open()
        check_key(key)
        entry = self._entry(key)
        return self._item(key, entry[-1]) if entry else None

    def latest_version(self, key: str) -> tuple[int, bool] | None:
        self._check_open()
        check_key(key)
        entry = self._entry(key)
        return (version_of(entry[-1]), bool(entry[-1] & TOMBSTONE)) if entry else None

    def latest_committed(self, key: str) -> Item | None:
        self._check_open()
        check_key(key)
        return self._latest_committed(key, self._entry(key))

    def get(self, key: str, version: int) -> Item | None:
        db = self._check_open()
        check_version(version)
        pending = self._pending.get(key, {})
        record = pending[version] if version in pending else db.get(encode_key(key, version))
        return None if record is None else decode_record(key, version, record)

    def versions(self, key: str) -> list[int]:
        self._check_open()
        check_key(key)
        return [version_of(p) for p in self._entry(key)]

    def committed_page(self, after: str | None, limit: int) -> Page:
        page = self.committed_rows(after, limit)
        return Page([Item(key, version, value, True, tombstone) for key, version, value, tombstone in page.rows],
                    page.cursor)

    def committed_rows(self, after: str | None, limit: int) -> Rows:
        """One pass of one LevelDB iterator (merged with the overlay) over the keys after the cursor,
        values included: a key's versions are contiguous and ascending, so its newest committed one
        is the last committed record before the next key starts. No lookup per key, and the index
        is left alone (a walk through every key must not push the busy ones out of it)."""
        db = self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        start = DATA if after is None else key_prefix(after)[:-1] + b"\x01"
        overlay = sorted(
            (raw, rec) for key, held in self._pending.items() for v, rec in held.items()
            if (raw := _encode_checked_key(key, v)) >= start
        )
        rows: list[Row] = []
        prefix = b""
        newest: tuple[bytes, bytes] | None = None  # (stored key, record) of this key's newest committed
        with db.iterator(start=start, stop=_DATA_END) as it:
            for raw, record in _merge(it, overlay, reverse=False) if overlay else it:
                if raw[:-8] != prefix:
                    if newest is not None:
                        if len(rows) == limit:
                            # Another committed key exists, so the caller must ask again.
                            return Rows(rows, rows[-1][0])
                        rows.append(_committed_row(*newest))
                        newest = None
                    prefix = raw[:-8]
                if record[0] & COMMITTED:
                    newest = raw, record
        if newest is not None:
            if len(rows) == limit:
                return Rows(rows, rows[-1][0])
            rows.append(_committed_row(*newest))
        return Rows(rows, None)

    def keys(self, start: str, end: str | None, prefix: str, limit: int) -> list[str]:
        """One iterator pass (merged with the overlay) from ``max(start, prefix)``: a key's versions
        are contiguous, so each new key prefix is the next key."""
        db = self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        first = max(start, prefix)
        begin = DATA + first.encode("utf-8").replace(b"\x00", b"\x00\xff")
        overlay = sorted(
            (raw, rec) for key, held in self._pending.items() for v, rec in held.items()
            if (raw := _encode_checked_key(key, v)) >= begin
        )
        found: list[str] = []
        last = b""
        with db.iterator(start=begin, stop=_DATA_END) as it:
            for raw, _record in _merge(it, overlay, reverse=False) if overlay else it:
                if raw[:-8] == last:
                    continue
                last = raw[:-8]
                key = decode_key(raw)[0]
                if not key.startswith(prefix) or (end is not None and key >= end):
                    break
                found.append(key)
                if len(found) == limit:
                    break
        return found

    def committed_share(self, through: str) -> float | None:
        """LevelDB's estimate of the bytes on disk up to ``through``'s last version, over those of
        every item. Writes still in the memtable (or not flushed) have no size on disk yet: None
        while nothing is on disk."""
        self._check_open()
        end_of_key = key_prefix(through)[:-1] + b"\x01"  # past every version of ``through``
        start, prefix = self._prefix + DATA, self._prefix
        total, upto = self._root.approximate_sizes((start, prefix + _DATA_END), (start, prefix + end_of_key))
        if total <= 0:
            return None
        return min(1.0, upto / total)

    def dirty_items(self) -> Iterator[Item]:
        self._check_open()
        dirty: list[Item] = []
        for key in self._dirty_keys():
            dirty.extend(self._item(key, p) for p in self._entry(key) if not p & COMMITTED)
        # Built eagerly so callers may mutate the store while iterating.
        return iter(dirty)

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self) -> None:
        db = self._check_open()
        if not self._pending:
            return
        if self._group is not None:
            self._flush_into(self._group)
            return
        # transaction=True: an exception while filling the batch writes nothing.
        with db.write_batch(transaction=True, sync=self.durability == "sync") as batch:
            put, delete = batch.put, batch.delete
            for key, held in self._pending.items():
                prefix = DATA + key.encode("utf-8").replace(b"\x00", b"\x00\xff") + _TERMINATOR  # key_prefix, inlined
                for version, record in held.items():
                    if record is None:
                        delete(prefix + version.to_bytes(8, "big"))
                    else:
                        put(prefix + version.to_bytes(8, "big"), record)
        self._pending.clear()

    def _flush_into(self, group: list[tuple[bytes, bytes | None]]) -> None:
        stage = group.append
        outer = self._prefix + DATA
        for key, held in self._pending.items():
            prefix = outer + key.encode("utf-8").replace(b"\x00", b"\x00\xff") + _TERMINATOR  # key_prefix, inlined
            for version, record in held.items():
                stage((prefix + version.to_bytes(8, "big"), record))
        self._pending.clear()

    def close(self) -> None:
        if self._db is None:
            return
        try:
            self.flush()
        finally:
            self._release()

    def close_without_flush(self) -> None:
        """Release the store and lose every buffered mutation, as a crash would."""
        if self._db is not None:
            self._pending.clear()
            self._release()  # the dirty records kept go too: a crash loses memory

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> plyvel.DB:
        if self._db is None:
            raise StoreClosedError(f"LevelDB store at {self.path} is closed")
        return self._db

    def _release(self) -> None:
        assert self._db is not None
        if self._owns_db:  # a shared database is closed by its holder
            self._db.close()
        self._db = None
        self._index = VersionIndex(0)  # frees its memory; nothing may use it any more
        self._dirty_records.clear()
        self._dirty_bytes = 0

    def _stage(self, key: str, version: int, record: Record) -> None:
        """Buffer a version's new record (None: its deletion) until the flush."""
        self._pending.setdefault(key, {})[version] = record
        if self._dirty_records:
            dropped = self._dirty_records.pop((key, version), None)  # committed or deleted now
            if dropped is not None:
                self._dirty_bytes -= len(dropped)

    def _stage_deletions(self, key: str, entry: Entry) -> None:
        for packed in entry:
            self._stage(key, version_of(packed), None)

    def _entry(self, key: str, remember: bool = True) -> Entry:
        """The key's versions and flags: from the index, or read from LevelDB and the overlay
        (and, if ``remember``, handed to the index)."""
        entry = self._index.get(key, touch=remember)
        if entry is None:
            entry = self._scan(key)
            if remember:
                self._index.set(key, entry)
        return entry

    def _scan(self, key: str) -> Entry:
        """The key's versions and flags read from LevelDB, the overlay merged over them."""
        db = self._check_open()
        overlay = sorted(self._pending.get(key, {}).items())
        with db.iterator(prefix=key_prefix(key)) as it:
            base = ((int.from_bytes(raw[-8:], "big"), rec) for raw, rec in it)
            return tuple(pack(v, rec[0] & FLAGS) for v, rec in _merge(base, overlay, reverse=False))

    def _record(self, key: str, version: int) -> bytes:
        """The stored record of a version the key's entry holds: one point read at most."""
        pending = self._pending.get(key)
        if pending is not None and version in pending:
            record = pending[version]
        else:
            record = self._dirty_records.get((key, version)) or self._check_open().get(
                _encode_checked_key(key, version))
        if record is None:
            raise StoreError(f"LevelDB store at {self.path}: version {version} of {key!r} is indexed but not stored")
        return record

    def _item(self, key: str, packed: int) -> Item:
        version = version_of(packed)
        return decode_record(key, version, self._record(key, version))

    def _latest_committed(self, key: str, entry: Entry) -> Item | None:
        newest = newest_committed(entry)
        return None if newest < 0 else self._item(key, entry[newest])

    def _dirty_keys(self) -> list[str]:
        """Every key holding an uncommitted version, in store order: from the index when it is on,
        else from one pass over LevelDB and the overlay."""
        if self._index.enabled:
            return self._index.dirty_keys()
        db = self._check_open()
        overlay = sorted(
            (encode_key(key, v), rec) for key, held in self._pending.items() for v, rec in held.items()
        )
        keys: list[str] = []
        with db.iterator(prefix=DATA) as it:
            for raw, record in _merge(it, overlay, reverse=False):
                if not record[0] & COMMITTED:
                    key = _decode_prefix(raw[:-8])
                    if not keys or keys[-1] != key:
                        keys.append(key)
        return keys

    def _fill_index(self, db: plyvel.DB) -> None:
        """One pass over every item at open: the index takes keys in store order up to its cap,
        and learns which keys are dirty from all of them."""
        if self._index.enabled:
            self._index.fill(_stored_entries(db))


def _stored_entries(db: plyvel.DB) -> Iterator[tuple[str, Entry]]:
    """(key, entry) for every key stored, in store order, from one iteration over every item."""
    prefix = b""
    entry: list[int] = []
    with db.iterator(prefix=DATA) as it:
        for raw, record in it:
            if raw[:-8] != prefix:
                if entry:
                    yield _decode_prefix(prefix), tuple(entry)
                prefix = raw[:-8]
                entry = []
            entry.append(pack(int.from_bytes(raw[-8:], "big"), record[0] & FLAGS))
    if entry:
        yield _decode_prefix(prefix), tuple(entry)


def _committed_row(raw: bytes, record: bytes) -> Row:
    return _decode_prefix(raw[:-8]), int.from_bytes(raw[-8:], "big"), record[1:], bool(record[0] & TOMBSTONE)


def _decode_prefix(prefix: bytes) -> str:
    """The key whose ``key_prefix`` this is."""
    return prefix[len(DATA) : -len(_TERMINATOR)].replace(b"\x00\xff", b"\x00").decode("utf-8")
