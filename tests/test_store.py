from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import plyvel
import pytest

pytest.register_assert_rewrite("zcraq.store.conformance")

from zcraq.store import (  # noqa: E402
    Item,
    LevelDBStore,
    MemoryStore,
    StoreClosedError,
    StoreError,
    open_store,
)
from zcraq.store.base import Store  # noqa: E402
from zcraq.store.conformance import CHECKS, Check, PathFactory, StoreFactory  # noqa: E402
from zcraq.store.leveldb import decode_key, encode_key  # noqa: E402
from zcraq.store.shared import SharedLevelDB  # noqa: E402
from zcraq.store.version_index import DEFAULT_MAX_KEYS  # noqa: E402

pytestmark = pytest.mark.timeout(60)


class MemoryFactory:
    """Memory stores "persist" through reopen via crash_copy, which holds what was flushed."""

    def __init__(self) -> None:
        self._opened: list[MemoryStore] = []

    def new(self) -> MemoryStore:
        self._opened.append(MemoryStore())
        return self._opened[-1]

    def reopen(self) -> MemoryStore:
        last = self._opened[-1]
        last.close()
        self._opened.append(last.crash_copy())
        return self._opened[-1]

    def crash_reopen(self) -> MemoryStore:
        last = self._opened[-1]
        self._opened.append(last.crash_copy())  # before close(), which would flush
        last.close()
        return self._opened[-1]

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


def leveldb_factory(index_max_keys: int) -> Callable[[Path], PathFactory]:
    def crash(store: Store) -> None:
        assert isinstance(store, LevelDBStore)
        store.close_without_flush()

    return lambda tmp: PathFactory(tmp, lambda path: LevelDBStore(path, index_max_keys=index_max_keys), crash)


class SharedPartitionStore:
    """Partition 1's store in a database shared with partitions 0 and 2, which hold the same keys
    with other values (so a leak between prefixes shows); closing it closes the database."""

    def __init__(self, path: Path, index_max_keys: int, group_commit: bool = False) -> None:
        self.shared = SharedLevelDB(path, group_commit=group_commit)
        for neighbour in (0, 2):
            if neighbour not in self.shared.partitions():
                noise = self.shared.store(neighbour)
                for key in ("a", "b", "k", "key", "x", "\x00"):
                    noise.put(key, 7, f"p{neighbour}".encode(), committed=True)
                    noise.put(key, 9, b"dirty")
                noise.close()
        self.shared.commit()
        self.store = self.shared.store(1, index_max_keys)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def flush(self) -> None:
        """As a partitioned node's turn ends: every store flushed, then one commit."""
        self.store.flush()
        self.shared.commit()

    def close(self) -> None:
        self.store.close()
        self.shared.close()

    def close_without_flush(self) -> None:
        self.store.close_without_flush()
        self.shared.close()


def shared_factory(index_max_keys: int, group_commit: bool = False) -> Callable[[Path], PathFactory]:
    def crash(store: Store) -> None:
        assert isinstance(store, SharedPartitionStore)
        store.close_without_flush()

    return lambda tmp: PathFactory(tmp, lambda path: SharedPartitionStore(  # type: ignore
        path, index_max_keys, group_commit), crash)


# LevelDB three ways: with the version index, with one so small that keys keep falling out of it
# (and are found again by iterating), and without one; and a partition's store in a shared database.
FACTORIES: dict[str, Callable[[Path], MemoryFactory | PathFactory]] = {
    "memory": lambda tmp: MemoryFactory(),
    "leveldb": leveldb_factory(DEFAULT_MAX_KEYS),
    "leveldb-index2": leveldb_factory(2),
    "leveldb-noindex": leveldb_factory(0),
    "leveldb-shared": shared_factory(DEFAULT_MAX_KEYS),
    "leveldb-shared-noindex": shared_factory(0),
    "leveldb-shared-group": shared_factory(DEFAULT_MAX_KEYS, group_commit=True),
}


@pytest.fixture(params=list(FACTORIES))
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made = FACTORIES[request.param](tmp_path)
    yield made
    made.close_all()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_conformance(factory: StoreFactory, check: Check) -> None:
    check(factory)


# -- LevelDB specifics ---------------------------------------------------------------------------


def test_leveldb_async_durability(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db", durability="async")
    store.put("k", 1, b"v", committed=True)
    store.flush()
    store.close()
    with LevelDBStore(tmp_path / "db", durability="async") as again:
        assert again.latest_committed("k") == Item("k", 1, b"v", committed=True)


@pytest.mark.parametrize("durability", ["", "fsync", "SYNC", "none"])
def test_leveldb_rejects_unknown_durability(tmp_path: Path, durability: str) -> None:
    with pytest.raises(ValueError, match="durability"):
        LevelDBStore(tmp_path / "db", durability=durability)


@pytest.mark.parametrize("cap", [-1, 1.5, "10"])
def test_leveldb_rejects_a_bad_index_cap(tmp_path: Path, cap: object) -> None:
    with pytest.raises(ValueError, match="index_max_keys"):
        LevelDBStore(tmp_path / "db", index_max_keys=cap)  # type: ignore[arg-type]
    assert not (tmp_path / "db").exists()  # refused before anything was created


def test_leveldb_fills_its_index_at_open_up_to_the_cap(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as store:
        for i in range(5):
            store.put(f"k{i}", 1, b"v", committed=True)
            store.put(f"k{i}", 2, b"dirty")
        assert store.indexed_keys == 5
    for cap, known in ((10, 5), (5, 5), (2, 2), (0, 0)):
        with LevelDBStore(tmp_path / "db", index_max_keys=cap) as store:
            assert store.indexed_keys == known and store.index_fill_seconds >= 0
            assert [it.key for it in store.dirty_items()] == [f"k{i}" for i in range(5)]
            assert [store.versions(f"k{i}") for i in range(5)] == [[1, 2]] * 5
            assert store.indexed_keys == known  # the keys searched for went in, others fell out


def test_leveldb_with_damaged_data_says_so_and_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "db"
    LevelDBStore(path).close()
    raw = plyvel.DB(str(path))
    raw.put(b"d\xff\xfe" + b"\x00\x00" + (1).to_bytes(8, "big"), b"\x01v")  # a key that is not UTF-8
    raw.close()
    with pytest.raises(StoreError, match="cannot read LevelDB store"):
        LevelDBStore(path)
    LevelDBStore(path, index_max_keys=0).close()  # the failed open released the directory


def test_leveldb_locked_directory(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBStore(path):
        with pytest.raises(StoreError) as info:
            LevelDBStore(path)
    assert str(path) in str(info.value)
    # Released on close: the directory opens again.
    LevelDBStore(path).close()


def test_leveldb_closed_store_raises(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        store.latest("k")
    with pytest.raises(RuntimeError):
        store.put("k", 1, b"v")


def test_leveldb_key_encoding_orders_by_key_then_version() -> None:
    rng = random.Random(7)
    alphabet = ["", "\x00", "\x01", "a", "b", "\xff", "é", "🔑"]
    versions = [1, 9, 10, 256, 2**64 - 1]
    pairs = {
        ("".join(rng.choice(alphabet) for _ in range(rng.randrange(4))), rng.choice(versions))
        for _ in range(500)
    }
    for key, version in pairs:
        assert decode_key(encode_key(key, version)) == (key, version)
    by_bytes = sorted(pairs, key=lambda p: encode_key(*p))
    assert by_bytes == sorted(pairs, key=lambda p: (p[0].encode("utf-8"), p[1]))


def test_leveldb_flush_survives_crash_without_close(tmp_path: Path) -> None:
    # Dropping the handle without close() loses only what was never flushed.
    store = LevelDBStore(tmp_path / "db")
    store.put("kept", 1, b"v", committed=True)
    store.flush()
    store.put("lost", 1, b"v")
    assert store.versions("lost") == [1]
    store.close_without_flush()
    with LevelDBStore(tmp_path / "db") as again:
        assert again.versions("kept") == [1]
        assert again.versions("lost") == []


def test_leveldb_committed_share_is_estimated_from_the_data_on_disk(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as store:
        assert store.committed_share("k") is None  # empty
        for i in range(20_000):
            store.put(f"k{i:05d}", 1, bytes([i % 251]) * 100, committed=True)
        store.flush()
        assert store.committed_share("k10000") is None  # all still in the memtable: no size on disk
    with LevelDBStore(tmp_path / "db") as store:  # reopening writes the log to a table on disk
        shares = [store.committed_share(f"k{i:05d}") for i in (0, 5_000, 10_000, 15_000, 19_999)]
    assert all(share is not None for share in shares), shares
    assert shares == sorted(shares)
    assert shares[0] < 0.05 and 0.4 < shares[2] < 0.6 and shares[-1] > 0.95, shares


# -- MemoryStore specifics -----------------------------------------------------------------------


def test_memory_crash_copy_drops_unflushed_writes() -> None:
    store = MemoryStore()
    store.put("a", 1, b"a1", committed=True)
    store.put("b", 1, b"b1")
    store.flush()
    store.put("c", 1, b"c1")
    store.commit("b", 1)
    store.delete("a")
    crashed = store.crash_copy()
    assert crashed.latest("a") == Item("a", 1, b"a1", committed=True)
    assert crashed.latest("b") == Item("b", 1, b"b1")
    assert crashed.latest("c") is None
    # The copy is independent of the original.
    crashed.put("d", 1, b"d1")
    assert store.latest("d") is None
    assert store.latest("a") is None


def test_memory_crash_copy_is_deterministic() -> None:
    def build() -> list[Item]:
        store = MemoryStore()
        for i in range(200):
            store.put(f"key{i * 7919 % 200}", i + 1, b"x")
            if i % 3:
                store.commit(f"key{i * 7919 % 200}", i + 1)
        store.flush()
        copy = store.crash_copy()
        return [*copy.committed_page(None, 1000).items, *copy.dirty_items()]

    assert build() == build()


def test_memory_committed_share_counts_keys_unless_switched_off() -> None:
    store = MemoryStore()
    assert store.committed_share("a") is None  # empty
    for key in "abcd":
        store.put(key, 1, b"v", committed=True)
    assert [store.committed_share(k) for k in ("", "a", "b", "bb", "d", "z")] == [0.0, 0.25, 0.5, 0.5, 1.0, 1.0]
    store.flush()
    assert store.crash_copy().committed_share("b") == 0.5
    quiet = MemoryStore(estimates=False)
    quiet.put("a", 1, b"v", committed=True)
    quiet.flush()
    assert quiet.committed_share("a") is None and quiet.crash_copy().committed_share("a") is None


# -- open_store ----------------------------------------------------------------------------------


def test_open_store(tmp_path: Path) -> None:
    mem = open_store("memory", None, "sync")
    assert isinstance(mem, MemoryStore)
    db = open_store("leveldb", tmp_path / "db", "async")
    assert isinstance(db, LevelDBStore) and db.durability == "async"
    assert db.index_max_keys == DEFAULT_MAX_KEYS
    db.close()
    db = open_store("leveldb", tmp_path / "db", "async", 0)
    assert isinstance(db, LevelDBStore) and db.index_max_keys == 0
    db.close()
    with pytest.raises(ValueError):
        open_store("rocksdb", tmp_path / "x", "sync")
    with pytest.raises(ValueError):
        open_store("leveldb", None, "sync")


# -- Many partitions in one database ---------------------------------------------------------------


def test_shared_database_lists_drops_and_reopens_partitions(tmp_path: Path) -> None:
    shared = SharedLevelDB(tmp_path / "db")
    for partition in (5, 0, 4095, 300):
        store = shared.store(partition)
        for i in range(3 if partition != 300 else 25_000):
            store.put(f"k{i}", 1, str(partition).encode(), committed=True)
        store.close()
    assert shared.partitions() == [0, 5, 300, 4095]
    with pytest.raises(StoreError, match="already open"):
        held = shared.store(5)
        shared.store(5)
    with pytest.raises(StoreError, match="close partition 5"):
        shared.drop(5)
    shared.release(5)  # closes the open store, keeps its data
    assert held.closed and shared.partitions() == [0, 5, 300, 4095]
    assert shared.drop(300) == 25_000 and shared.drop(300) == 0
    assert shared.partitions() == [0, 5, 4095]
    shared.close()
    shared = SharedLevelDB(tmp_path / "db")
    assert shared.partitions() == [0, 5, 4095]
    store = shared.store(4095)
    assert store.latest_committed("k2") == Item("k2", 1, b"4095", committed=True)
    assert shared.store(300).latest("k1") is None
    shared.close()
    assert store.closed
    shared = SharedLevelDB(tmp_path / "db")
    with pytest.raises(ValueError):
        shared.store(4096)
    shared.close()


def test_group_commit_writes_every_partitions_flush_in_one_commit(tmp_path: Path) -> None:
    shared = SharedLevelDB(tmp_path / "db", group_commit=True)
    one, two = shared.store(1), shared.store(2)
    one.put("a", 1, b"one", committed=True)
    two.put("a", 1, b"two", committed=True)
    one.flush()
    two.flush()
    assert shared.partitions() == []  # staged, not written: nothing may be sent yet
    shared.commit()
    assert shared.partitions() == [1, 2]
    two.put("b", 1, b"gone", committed=True)
    two.close()  # flushed into the group, then the partition dropped: its writes must not come back
    shared.drop(2)
    shared.commit()
    assert shared.partitions() == [1]
    one.put("c", 1, b"at close", committed=True)
    shared.close()
    shared = SharedLevelDB(tmp_path / "db")
    assert shared.store(1).latest_committed("c") == Item("c", 1, b"at close", committed=True)
    shared.close()
