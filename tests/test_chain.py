"""A real 3-node chain: processes, ZeroMQ sockets on loopback, LevelDB files."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from cluster import wait_for
from zcraq import KeyNotFound, ZClient
from zcraq.messages import Ok, Write

pytestmark = pytest.mark.timeout(120)


def test_writes_through_coordinator_and_head_are_read_at_every_node(make_cluster):
    cluster = make_cluster(3).start_all()
    assert cluster.members() == ["node1", "node2", "node3"]
    client = cluster.client()
    # Straight to the head (the client's default path).
    assert client.write("hello", "world") == 1
    # Through the coordinator, which forwards to the head (go-craq's path), with a plain DEALER.
    coordinator_only = ZClient(cluster.coordinator_endpoint, timeout=5)
    try:
        coordinator_only._topology = None  # noqa: SLF001 - force the coordinator path below
        reply, _values = coordinator_only._call(  # noqa: SLF001
            cluster.coordinator_endpoint, Write("k2", b"via-coordinator", id=1), time.monotonic() + 5)
        assert reply == Ok(1, version=1)
    finally:
        coordinator_only.close()
    for node in ("node1", "node2", "node3"):
        assert client.read("hello", node) == b"world"
        assert client.read("k2", node) == b"via-coordinator"
    assert client.write("hello", b"again") == 2
    for node in ("node1", "node2", "node3"):
        assert client.read_versioned("hello", node) == (b"again", 2)
    assert client.delete("hello") == 3
    for node in ("node1", "node2", "node3"):
        with pytest.raises(KeyNotFound):
            client.read("hello", node)
    with pytest.raises(KeyNotFound):
        client.read("never-written")


def test_dirty_read_asks_the_tail_and_returns_the_committed_value(make_cluster):
    cluster = make_cluster(3, lease_ms=5000).start_all()
    client = cluster.client()
    client.write("k", "v1")
    before = cluster.node_status("node1")["counters"]["dirty_reads"]
    # Freeze the middle node: the next write is stored dirty at the head and goes no further, so
    # it cannot commit until the middle resumes.
    cluster.signal("node2", signal.SIGSTOP)
    outcome: dict[str, object] = {}
    writer = threading.Thread(target=lambda: outcome.update(version=cluster.client(timeout=20).write("k", "v2")))
    try:
        writer.start()
        head = cluster.client()
        wait_for(lambda: cluster.node_status("node1")["sent"] >= 1, 5, "the head to hold the dirty write")
        assert head.read_versioned("k", "node1") == (b"v1", 1)
        assert cluster.node_status("node1")["counters"]["dirty_reads"] == before + 1
    finally:
        cluster.signal("node2", signal.SIGCONT)
        writer.join(20)
    assert outcome["version"] == 2
    for node in ("node1", "node2", "node3"):
        assert client.read("k", node) == b"v2"


def test_plain_dealer_without_delimiter_gets_a_clear_error(make_cluster):
    import zmq

    cluster = make_cluster(1).start_all()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.service("node1"))
    try:
        sock.send(b'{"type":"read","key":"x"}')
        assert sock.poll(5000)
        frames = sock.recv_multipart()
        assert frames[0] == b"" and b"delimiter" in frames[1]
    finally:
        sock.close()
        ctx.term()
