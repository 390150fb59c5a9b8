"""One LevelDB database holding the stores of many partitions, each under a prefix of its own.

A node of a partitioned cluster hosts replicas of several partitions; each replica's core has a
store of its own, and they all live in one database (one directory, one lock, one write-ahead
log), each store's whole layout (zcraq/store/leveldb.py) under ``b"p" + partition as 2 bytes big
endian``. A store sees only its prefix, so each replica behaves as if it had a database to itself,
and a replica that moves away is dropped by deleting its prefix.

A one-chain node keeps its store unprefixed, as it always has (``LevelDBStore(path)``).
"""

from __future__ import annotations

from pathlib import Path

import plyvel

from zcraq.partitioning import MAX_PARTITIONS

from .errors import StoreError
from .leveldb import DURABILITIES, LevelDBStore, open_database
from .version_index import DEFAULT_MAX_KEYS

_DROP_BATCH = 10_000  # keys deleted per write batch when a partition is dropped


def partition_prefix(partition: int) -> bytes:
    if not 0 <= partition < MAX_PARTITIONS:
        raise ValueError(f"partition {partition} out of range")
    return b"p" + partition.to_bytes(2, "big")


class SharedLevelDB:
    def __init__(self, path: str | Path, durability: str = "sync") -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, got {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self._db: plyvel.DB | None = open_database(self.path, "database")
        self._open: dict[int, LevelDBStore] = {}

    def store(self, partition: int, index_max_keys: int = DEFAULT_MAX_KEYS) -> LevelDBStore:
        """The store of ``partition`` (one open store per partition at a time)."""
        db = self._check_open()
        held = self._open.get(partition)
        if held is not None and not held.closed:
            raise StoreError(f"partition {partition}'s store is already open")
        store = LevelDBStore(self.path / f"p{partition}", self.durability, index_max_keys,
                             within=(db, partition_prefix(partition)))
        self._open[partition] = store
        return store

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

    def close(self) -> None:
        """Close every store still open (flushing it), then the database."""
        if self._db is None:
            return
        try:
            for store in self._open.values():
                store.close()
        finally:
            self._db.close()
            self._db = None
            self._open.clear()

    def _check_open(self) -> plyvel.DB:
        if self._db is None:
            raise StoreError(f"the LevelDB database at {self.path} is closed")
        return self._db


__all__ = ["SharedLevelDB", "partition_prefix"]
