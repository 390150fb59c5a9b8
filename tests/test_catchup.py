"""Catch-up's fast paths, held to the slow ones they replace.

A page is served by one pass of one LevelDB iterator (``committed_rows``) instead of a lookup of
each key's newest committed version; here it must equal, page for page, what the per-key lookups
give, on random stores with tombstones, dirty versions, buffered and flushed data and every index
setting. A learner stores a page with one ``put_committed`` call instead of a put per item; here
it must change the store exactly as the puts would. And the learner that asks for the next page
before storing this one must still never let a page replace what the live stream brought.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zcraq.effects import PeerRequest
from zcraq.messages import TOMBSTONE, CatchupRequest, Ok, WriteFrame, WriteRecord
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.store import LevelDBStore, MemoryStore
from zcraq.store.base import Item, Page, Row
from zcraq.store.version_index import DEFAULT_MAX_KEYS
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(120)

KEYS = ["", "a", "a\x00", "a\x00b", "b", "\x00", "é", "k1", "k10", "k2", "z"]
CAPS = pytest.mark.parametrize("cap", [DEFAULT_MAX_KEYS, 2, 0], ids=["index", "index2", "noindex"])


def random_store(path: Path, cap: int, rng: random.Random, steps: int = 300) -> LevelDBStore:
    """A LevelDB store after random puts (some committed, some tombstones), commits, prunes and
    deletes, part of it flushed and part still buffered."""
    store = LevelDBStore(path, "async", index_max_keys=cap)
    for _ in range(steps):
        key, version = rng.choice(KEYS), rng.randint(1, 12)
        op = rng.choices(["put", "commit", "prune", "delete", "flush"], weights=[50, 25, 4, 3, 6])[0]
        if op == "put":
            store.put(key, version, rng.randbytes(rng.randint(0, 3)), committed=rng.random() < 0.3,
                      tombstone=rng.random() < 0.2)
        elif op == "commit":
            store.commit(key, version)
        elif op == "prune":
            store.prune(key, version)
        elif op == "delete":
            store.delete(key)
        else:
            store.flush()
    return store


def per_key_pages(store: LevelDBStore, limit: int) -> list[Page]:
    """Pages as they were served before one pass: each key's newest committed version looked up
    on its own, in the store's key order."""
    newest = [item for key in sorted(KEYS, key=lambda k: k.encode("utf-8"))
              if (item := store.latest_committed(key)) is not None]
    chunks = [newest[i:i + limit] for i in range(0, len(newest), limit)] or [[]]
    return [Page(chunk, chunk[-1].key if n < len(chunks) - 1 else None) for n, chunk in enumerate(chunks)]


def served_pages(store: LevelDBStore, limit: int) -> Iterator[Page]:
    cursor: str | None = None
    while True:
        page = store.committed_page(cursor, limit)
        rows = store.committed_rows(cursor, limit)
        assert rows.cursor == page.cursor
        assert [Item(k, v, value, True, t) for k, v, value, t in rows.rows] == page.items
        yield page
        if page.cursor is None:
            return
        cursor = page.cursor


@CAPS
@pytest.mark.parametrize("seed", range(10))
def test_pages_of_one_pass_equal_the_pages_of_a_lookup_per_key(tmp_path: Path, cap: int, seed: int) -> None:
    rng = random.Random(seed)
    store = random_store(tmp_path / "db", cap, rng)
    try:
        assert any(store.latest_committed(k) for k in KEYS) and any(store.versions(k) for k in KEYS)
        for limit in (1, 2, 3, 1000):
            assert list(served_pages(store, limit)) == per_key_pages(store, limit), f"limit {limit}"
        store.flush()  # and once all of it is on disk
        assert list(served_pages(store, 3)) == per_key_pages(store, 3)
    finally:
        store.close()


def random_rows(rng: random.Random, count: int) -> list[Row]:
    return [(rng.choice(KEYS), rng.randint(1, 12), rng.randbytes(rng.randint(0, 3)), rng.random() < 0.2)
            for _ in range(count)]


@CAPS
@pytest.mark.parametrize("seed", range(10))
def test_put_committed_changes_the_store_as_a_committed_put_per_row(tmp_path: Path, cap: int, seed: int) -> None:
    rng = random.Random(seed)
    one_call = random_store(tmp_path / "one", cap, random.Random(seed))
    one_put_each = random_store(tmp_path / "each", cap, random.Random(seed))
    try:
        for _ in range(5):
            rows = random_rows(rng, rng.randint(0, 8))
            stored = [one_put_each.put(k, v, value, committed=True, tombstone=t) for k, v, value, t in rows]
            assert one_call.put_committed(rows) == sum(stored)
            if rng.random() < 0.5:
                one_call.flush()
                one_put_each.flush()
        for key in KEYS:
            assert one_call.versions(key) == one_put_each.versions(key), key
            assert [one_call.get(key, v) for v in one_call.versions(key)] == \
                [one_put_each.get(key, v) for v in one_put_each.versions(key)], key
        assert list(one_call.dirty_items()) == list(one_put_each.dirty_items())
        one_call.close()
        reopened = LevelDBStore(tmp_path / "one", "async", index_max_keys=cap)  # and durably so
        assert [reopened.latest(k) for k in KEYS] == [one_put_each.latest(k) for k in KEYS]
        reopened.close()
    finally:
        one_call.close()
        one_put_each.close()


def test_put_committed_keeps_a_newer_committed_version_and_prunes_an_older_one(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db", "async") as store:
        store.put("live", 5, b"from the live stream", committed=True)
        store.put("old", 1, b"old", committed=True)
        store.put("old", 3, b"dirty")
        store.flush()
        rows: list[Row] = [("live", 3, b"older page item", False), ("old", 2, b"page", False), ("new", 1, b"", True)]
        assert store.put_committed(rows) == 2
        assert store.latest_committed("live") == Item("live", 5, b"from the live stream", committed=True)
        assert store.versions("old") == [2, 3]  # the older committed version pruned, the newer dirty one kept
        assert store.latest_committed("new") == Item("new", 1, b"", committed=True, tombstone=True)


# ------------------------------------------------------------------------------- the learner


TIMINGS = NodeTimings(heartbeat_interval=0.5, request_timeout=2.0, write_timeout=10.0, resend_interval=1.0,
                      catchup_page_items=2, peer_lease=0.5)
A = Member("a", "a/service", "a/write", "a/ack")
B = Member("b", "b/service", "b/write", "b/ack")


class CountingStore(MemoryStore):
    """A memory store that counts the calls a learner makes to store pages."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def put(self, key: str, version: int, value: bytes, **flags: Any) -> bool:
        self.calls.append("put")
        return super().put(key, version, value, **flags)

    def put_committed(self, rows: Any) -> int:
        rows = list(rows)
        self.calls.append(f"put_committed({len(rows)})")
        return sum(MemoryStore.put(self, k, v, value, committed=True, tombstone=t) for k, v, value, t in rows)


def learner(store: MemoryStore | LevelDBStore) -> tuple[NodeCore, int]:
    """A node just made the learner of epoch 2 behind ``a``, and the id of its first page request."""
    node = NodeCore(B, store, timings=TIMINGS)
    node.start(-TIMINGS.peer_lease)  # started long enough ago that its start-up fence is over
    node.ready()
    node.on_peer_reply(Ok(1, topology=Topology(2, (A,), B)), [], 0.0)
    return node, page_request(node.ready())


def page_request(effects: list[Any]) -> int:
    [call] = [e.request.id for e in effects if isinstance(e, PeerRequest) and isinstance(e.request, CatchupRequest)]
    return call


def test_a_learner_stores_a_page_with_one_call() -> None:
    store = CountingStore()
    node, page = learner(store)
    node.on_peer_reply(Ok(page, items=[["j", 4, 0], ["k", 2, TOMBSTONE]], cursor=None), [b"jv", b""], 0.1)
    node.tick(0.12)
    node.ready()
    assert store.calls == ["put_committed(2)"]
    assert store.latest_committed("k") == Item("k", 2, b"", committed=True, tombstone=True)


def test_pages_are_stored_in_order_when_the_next_comes_before_the_tick() -> None:
    store = CountingStore()
    node, first = learner(store)
    node.on_peer_reply(Ok(first, items=[["a", 1, 0], ["b", 1, 0]], cursor="b"), [b"a", b"b"], 0.1)
    second = page_request(node.ready())
    assert store.calls == []  # asked for the next page first
    node.on_peer_reply(Ok(second, items=[["c", 1, 0]], cursor=None), [b"c"], 0.1)
    assert store.calls == ["put_committed(2)"]  # the waiting page first, so the keys stay in order
    node.tick(0.2)
    node.ready()
    assert store.calls == ["put_committed(2)", "put_committed(1)"] and node.catchup.cursor is None
    assert node.catchup.copied == 3


def test_a_waiting_page_is_dropped_with_its_epoch_and_asked_for_again() -> None:
    node, first = learner(MemoryStore())
    node.on_peer_reply(Ok(first, items=[["a", 1, 0], ["b", 1, 0]], cursor="b"), [b"a", b"b"], 0.1)
    node.ready()
    node.on_topology(Topology(3, (A,), B), 0.15)  # the same source in a new epoch
    again = [e.request for e in node.ready() if isinstance(e, PeerRequest) and isinstance(e.request, CatchupRequest)]
    assert [(r.after, r.epoch) for r in again] == [(None, 3)]  # from the last key stored
    node.tick(0.2)
    assert node.store.versions("a") == [] and not node.catchup.page_waiting


@pytest.mark.parametrize("kind", ["memory", "leveldb"])
def test_a_page_never_replaces_what_the_live_stream_brought(tmp_path: Path, kind: str) -> None:
    store = MemoryStore() if kind == "memory" else LevelDBStore(tmp_path / "db", "async")
    try:
        node, page = learner(store)
        node.on_peer_reply(Ok(page, items=[["k", 3, 0], ["n", 1, 0]], cursor=None), [b"page k3", b"page n1"], 0.1)
        node.ready()  # the page waits; meanwhile the tail forwards a newer write of k
        node.on_write_frame(WriteFrame("a", 2, 0, (WriteRecord("k", 5, b"live k5", True, False),)), 0.1)
        assert store.latest_committed("k") == Item("k", 5, b"live k5", committed=True)
        node.ready()
        node.tick(0.2)  # now the page is stored
        node.ready()
        assert store.latest_committed("k") == Item("k", 5, b"live k5", committed=True)
        assert store.versions("k") == [5]
        assert store.latest_committed("n") == Item("n", 1, b"page n1", committed=True)
    finally:
        store.close()
