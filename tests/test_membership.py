"""Nodes joining, catching up, restarting and leaving, with real processes and LevelDB."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster import wait_for
from zcraq import KeyNotFound
from zcraq.store import LevelDBStore

pytestmark = pytest.mark.timeout(180)

KEYS = 10_000


def _fill(cluster, count: int) -> None:
    def writer(part: int) -> None:
        with cluster.client(timeout=10) as client:
            for index in range(part, count, 8):
                client.write(f"key-{index:05d}", f"value-{index}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))


def test_fourth_node_catches_up_on_10000_keys_then_becomes_tail(make_cluster):
    cluster = make_cluster(3, node={"catchup_page_items": 500}).start_all()
    _fill(cluster, KEYS)
    client = cluster.client(timeout=10)
    client.delete("key-00007")  # a tombstone must be copied too
    cluster.add_node("node4")
    cluster.start("node4")
    # Writes keep arriving while node4 copies: they reach it through the live stream.
    for index in range(10, 60):
        client.write(f"key-{index:05d}", f"updated-{index}")
    cluster.wait_member("node4", timeout=60)
    assert cluster.members() == ["node1", "node2", "node3", "node4"]
    status = cluster.node_status("node4")
    assert status["role"] == "tail" and status["serving"]
    for index in range(KEYS):
        key = f"key-{index:05d}"
        if index == 7:
            with pytest.raises(KeyNotFound):
                client.read(key, "node4", mode="eventual")
            continue
        expected = f"updated-{index}" if 10 <= index < 60 else f"value-{index}"
        assert client.read(key, "node4", mode="eventual") == expected.encode(), key
    # And it takes part in new writes as the tail.
    assert client.write("after-join", "x") == 1
    assert client.read("after-join", "node4") == b"x"


def test_node_restarted_on_its_leveldb_keeps_committed_data(make_cluster):
    cluster = make_cluster(1).start_all()
    client = cluster.client()
    for index in range(100):
        client.write(f"k{index}", f"v{index}")
    assert cluster.stop("node1") == 0
    # The files themselves hold the committed data.
    store = LevelDBStore(cluster.data_dir("node1"))
    try:
        assert store.latest_committed("k42").value == b"v42"
    finally:
        store.close()
    # The only member comes back with its data: nothing else could have supplied it.
    cluster.start("node1")
    cluster.wait_member("node1")
    for index in range(100):
        assert client.read(f"k{index}") == f"v{index}".encode()
    assert client.write("k1", "newer") == 2


def test_restarted_middle_node_rejoins_at_the_tail(make_cluster):
    cluster = make_cluster(3).start_all()
    client = cluster.client()
    client.write("a", "1")
    cluster.stop("node2")
    wait_for(lambda: cluster.members() == ["node1", "node3"], 10, "node2 to leave")
    client.write("a", "2")  # node2 misses this one
    client.write("b", "3")
    cluster.start("node2")
    cluster.wait_member("node2")
    assert cluster.members() == ["node1", "node3", "node2"]
    assert client.read_versioned("a", "node2") == (b"2", 2)
    assert client.read("b", "node2") == b"3"


def test_sigterm_makes_a_node_leave_at_once(make_cluster):
    cluster = make_cluster(3, lease_ms=10_000).start_all()
    client = cluster.client()
    client.write("x", "1")
    cluster.signal("node3", signal.SIGTERM)
    # Far sooner than the 10 s lease: the node told the coordinator it was going.
    wait_for(lambda: cluster.members() == ["node1", "node2"], 3, "node3 to be removed")
    assert client.write("x", "2") == 2
    assert client.read("x", "node2") == b"2"


def test_concurrent_writers_on_few_keys(make_cluster):
    cluster = make_cluster(3).start_all()
    keys = ["hot0", "hot1", "hot2"]
    acknowledged: list[list[tuple[str, int, str]]] = [[] for _ in range(8)]

    def writer(worker: int) -> None:
        with cluster.client(timeout=10) as client:
            for round_ in range(60):
                key = keys[(worker + round_) % len(keys)]
                value = f"w{worker}-r{round_}"
                acknowledged[worker].append((key, client.write(key, value), value))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    last: dict[str, tuple[int, str]] = {}
    for per_worker in acknowledged:
        assert len(per_worker) == 60  # every write acknowledged exactly once
        seen: dict[str, int] = {}
        for key, version, value in per_worker:
            assert version > seen.get(key, 0), "a writer saw a key's version go backwards"
            seen[key] = version
            if version > last.get(key, (0, ""))[0]:
                last[key] = (version, value)
    versions = sorted(v for per_worker in acknowledged for k, v, _ in per_worker if k == "hot0")
    assert len(versions) == len(set(versions)), "two writes got the same version"
    client = cluster.client()
    for key, (version, value) in last.items():
        for node in ("node1", "node2", "node3"):
            assert client.read_versioned(key, node) == (value.encode(), version)
