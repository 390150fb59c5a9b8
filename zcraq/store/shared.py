"""One LevelDB database holding the stores of many partitions, each under a prefix of its own.

A node of a partitioned cluster hosts replicas of several partitions; each replica's core has a
store of its own, and they all live in one database (one directory, one lock, one write-ahead
log), each store's whole layout (zcraq/store/leveldb.py) under ``b"p" + partition as 2 bytes big
endian``. A store sees only its prefix, so each replica behaves as if it had a database to itself,
and a replica that moves away is dropped by deleting its prefix.

A one-chain node keeps its store unprefixed, as it always has (``LevelDBStore(path)``).

With ``group_commit``, the stores' flushes are gathered and written by ``commit()`` in one batch:
a node's loop turn then costs one sync however many partitions it wrote to.
"""

from __future__ import annotations

from pathlib import Path

import plyvel

from zcraq.partitioning import MAX_PARTITIONS

from .errors import StoreError
from .leveldb import DURABILITIES, LevelDBStore, open_database
from .version_index import DEFAULT_MAX_KEYS

_DROP_BATCH = 10_000  # keys deleted per write batch when a partition is dropped


def holds_one_chain(db: plyvel.DB) -> bool:
    """Does ``db`` hold a one-chain node's store (zcraq/store/leveldb.py keeps it under b"d" and b"m")?"""
    return _holds(db, b"d") or _holds(db, b"m")


def holds_partitions(db: plyvel.DB) -> bool:
    """Does ``db`` hold partitions' stores (each under b"p" and its number)?"""
    return _holds(db, b"p")


def _holds(db: plyvel.DB, prefix: bytes) -> bool:
    with db.iterator(prefix=prefix, include_value=False) as it:
        return next(it, None) is not None


def partition_prefix(partition: int) -> bytes:
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} out of range")
    return b"p" + partition.to_bytes(2, "big")


class SharedLevelDB:
    def __init__(self, path: str | Path, durability: str = "sync", group_commit: bool = False,
                 db: plyvel.DB | None = None) -> None:
        """``db``: the database at ``path``, opened already (it is closed with this object); a
        database holding a one-chain node's store is refused (StoreError)."""
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self._db: plyvel.DB | None = db if db is not None else open_database(self.path, "database")
        if holds_one_chain(self._db):
            self._db.close()
            self._db = None
            raise StoreError(f"{self.path} holds the store of a one-chain cluster's node, not the replicas of a "
                             f"partitioned cluster's: a node's data belongs to the cluster it was created in")
        self._open: dict[int, LevelDBStore] = {}
        self._group: list[tuple[bytes, bytes | None]] | None = [] if group_commit else None

    def store(self, partition: int, index_max_keys: int = DEFAULT_MAX_KEYS) -> LevelDBStore:
        """The store of ``partition`` (one open store per partition at a time)."""
        db = self._check_open()
        held = self._open.get(partition)
        if held is not None and not held.closed:
            raise StoreError(f"partition {partition}'s store is already open")
        store = LevelDBStore(self.path / f"p{partition}", self.durability, index_max_keys,
                             within=(db, partition_prefix(partition)), group=self._group)
        self._open[partition] = store
        return store

    def release(self, partition: int) -> None:
        """Close ``partition``'s store if it is open (flushed), keeping what it holds."""
        held = self._open.pop(partition, None)
        if held is not None:
            held.close()

    def partitions(self) -> list[int]:
        """The partitions that hold anything, in order: one seek per partition found."""
        db = self._check_open()
        found: list[int] = []
        seek = b"p"
        with db.iterator(include_value=False) as it:
            while True:
                it.seek(seek)
                key = next(it, None)
                if key is None or not key.startswith(b"p") or len(key) < 3:
                    return found
                partition = int.from_bytes(key[1:3], "big")
                found.append(partition)
                if partition + 1 >= 1 << 16:
                    return found
                seek = b"p" + (partition + 1).to_bytes(2, "big")

    def drop(self, partition: int) -> int:
        """Delete everything ``partition`` holds (its store must be closed); returns the keys deleted."""
        db = self._check_open()
        held = self._open.get(partition)
        if held is not None and not held.closed:
            raise StoreError(f"close partition {partition}'s store before dropping it")
        self.commit()  # what its store flushed last goes first, then everything
        prefix = partition_prefix(partition)
        deleted = 0
        while True:
            with db.iterator(prefix=prefix, include_value=False) as it:
                keys = [key for key, _ in zip(it, range(_DROP_BATCH))]
            if not keys:
                return deleted
            with db.write_batch(sync=self.durability == "sync") as batch:
                for key in keys:
                    batch.delete(key)
            deleted += len(keys)

    def commit(self) -> None:
        """Write what the stores have flushed since the last commit, in one batch (group commit)."""
        group = self._group
        if not group:
            return
        db = self._check_open()
        # transaction=True: an exception while filling the batch writes nothing.
        with db.write_batch(transaction=True, sync=self.durability == "sync") as batch:
            put, delete = batch.put, batch.delete
            for key, record in group:
                if record is None:
                    delete(key)
                else:
                    put(key, record)
        group.clear()

    def close(self) -> None:
        """Close every store still open (flushing it), then the database."""
        if self._db is None:
            return
        try:
            for store in self._open.values():
                store.close()
            self.commit()
        finally:
            self._db.close()
            self._db = None
            self._open.clear()

    def _check_open(self) -> plyvel.DB:
        if self._db is None:
            raise StoreError(f"the LevelDB database at {self.path} is closed")
        return self._db


__all__ = ["SharedLevelDB", "partition_prefix"]
