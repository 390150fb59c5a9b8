"""A client written from PROTOCOL.md alone: raw pyzmq REQ/DEALER/SUB sockets and orjson, nothing
from zcraq. Only the test harness (make_cluster) is used to start a real 3-node cluster.

Every socket has a receive timeout and LINGER 0, and is closed after use, so a protocol mismatch
fails the test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import zmq

pytestmark = pytest.mark.timeout(90)

TIMEOUT_MS = 5000


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def req(ctx: zmq.Context, endpoint: str, header: dict[str, Any], *values: bytes,
        timeout_ms: int = TIMEOUT_MS) -> tuple[dict[str, Any], list[bytes]]:
    """One request over a fresh REQ socket: header frame, then value frames. Returns the decoded
    reply header and the reply's value frames."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    sock.connect(endpoint)
    try:
        sock.send_multipart([orjson.dumps(header), *values])
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            raise AssertionError(f"no reply from {endpoint} to {header} within {timeout_ms} ms") from None
    finally:
        sock.close(0)
    reply = orjson.loads(frames[0])
    assert isinstance(reply, dict) and reply.get("type") in ("ok", "error"), reply
    return reply, frames[1:]


def get_topology(ctx: zmq.Context, coordinator: str) -> dict[str, Any]:
    reply, values = req(ctx, coordinator, {"type": "topology", "id": "topo"})
    assert reply["type"] == "ok" and reply["id"] == "topo" and values == []
    return reply["topology"]


def assert_error(reply: dict[str, Any], code: str, request_id: Any) -> None:
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert reply["id"] == request_id, reply
    assert isinstance(reply["message"], str) and reply["message"], reply


def test_plain_req_client_reads_and_writes(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    coordinator = cluster.coordinator_endpoint

    # The topology: epoch, members head first, no learner once the chain is settled.
    topology = get_topology(ctx, coordinator)
    assert isinstance(topology["epoch"], int) and topology["epoch"] > 0
    assert [m["id"] for m in topology["members"]] == ["node1", "node2", "node3"]
    assert topology["learner"] is None
    for member in topology["members"]:
        for endpoint in ("service", "write_in", "ack_in"):
            assert member[endpoint].startswith("tcp://"), member
    services = [m["service"] for m in topology["members"]]
    head = services[0]

    # Write to the head: answered once committed at every node.
    reply, values = req(ctx, head, {"type": "write", "id": 1, "key": "hello"}, b"world")
    assert reply == {"type": "ok", "id": 1, "version": 1} and values == []

    # A write to a non-head is refused before anything happens, with a hint where the head is.
    for other in services[1:]:
        reply, _ = req(ctx, other, {"type": "write", "id": 2, "key": "hello"}, b"nope")
        assert_error(reply, "not_head", 2)
        assert reply["head"] == head

    # Write through the coordinator, which forwards to the head; the reply carries our id.
    reply, values = req(ctx, coordinator, {"type": "write", "id": "via-coord", "key": "k2"}, b"via-coordinator")
    assert reply == {"type": "ok", "id": "via-coord", "version": 1} and values == []

    # Binary values travel untouched; an empty value is a value.
    binary = bytes(range(256)) * 3
    reply, _ = req(ctx, head, {"type": "write", "id": 3, "key": "bin"}, binary)
    assert reply["type"] == "ok" and reply["version"] == 1
    reply, _ = req(ctx, head, {"type": "write", "id": 4, "key": "empty"}, b"")
    assert reply["type"] == "ok" and reply["version"] == 1

    # Read at every node, in both modes; the id is optional (echoed as null).
    for service in services:
        for mode in ("strong", "eventual"):
            reply, values = req(ctx, service, {"type": "read", "id": 10, "key": "hello", "mode": mode})
            assert reply == {"type": "ok", "id": 10, "version": 1} and values == [b"world"]
        reply, values = req(ctx, service, {"type": "read", "key": "k2"})
        assert reply == {"type": "ok", "id": None, "version": 1} and values == [b"via-coordinator"]
        reply, values = req(ctx, service, {"type": "read", "id": "b", "key": "bin"})
        assert reply["type"] == "ok" and values == [binary]
        reply, values = req(ctx, service, {"type": "read", "id": "e", "key": "empty"})
        assert reply["type"] == "ok" and values == [b""]

    # A key never written: not_found at every node.
    for service in services:
        reply, values = req(ctx, service, {"type": "read", "id": 11, "key": "never-written"})
        assert_error(reply, "not_found", 11)
        assert values == []

    # Overwrite, then delete: versions count up per key, a delete is a (tombstone) version.
    reply, _ = req(ctx, head, {"type": "write", "id": 12, "key": "hello"}, b"again")
    assert reply == {"type": "ok", "id": 12, "version": 2}
    for service in services:
        reply, values = req(ctx, service, {"type": "read", "id": 13, "key": "hello"})
        assert reply["version"] == 2 and values == [b"again"]
    reply, values = req(ctx, head, {"type": "delete", "id": 14, "key": "hello"})
    assert reply == {"type": "ok", "id": 14, "version": 3, "existed": True} and values == []
    for service in services:
        for mode in ("strong", "eventual"):
            reply, _ = req(ctx, service, {"type": "read", "id": 15, "key": "hello", "mode": mode})
            assert_error(reply, "not_found", 15)
    # Deleting a key never written is a version too; the reply says the key did not exist.
    reply, _ = req(ctx, head, {"type": "delete", "id": 19, "key": "never-written"})
    assert reply == {"type": "ok", "id": 19, "version": 1, "existed": False}
    # Delete through the coordinator; writing again continues after the tombstone's version.
    reply, _ = req(ctx, coordinator, {"type": "delete", "id": 16, "key": "k2"})
    assert reply == {"type": "ok", "id": 16, "version": 2, "existed": True}
    reply, _ = req(ctx, head, {"type": "write", "id": 17, "key": "hello"}, b"back")
    assert reply == {"type": "ok", "id": 17, "version": 4}
    reply, values = req(ctx, services[-1], {"type": "read", "id": 18, "key": "hello"})
    assert reply["version"] == 4 and values == [b"back"]


def test_plain_req_conditional_writes(make_cluster, ctx):
    """PROTOCOL.md §7 and §8.2: if_version against the key's current version (0: no value)."""
    cluster = make_cluster(3).start_all()
    coordinator = cluster.coordinator_endpoint
    head = get_topology(ctx, coordinator)["members"][0]["service"]
    reply, _ = req(ctx, head, {"type": "write", "id": 1, "key": "c", "if_version": 0}, b"one")
    assert reply == {"type": "ok", "id": 1, "version": 1}
    reply, values = req(ctx, head, {"type": "write", "id": 2, "key": "c", "if_version": 0}, b"two")
    assert_error(reply, "condition_failed", 2)
    assert reply["version"] == 1 and values == []
    # Through the coordinator, which forwards if_version with the request.
    reply, _ = req(ctx, coordinator, {"type": "write", "id": 3, "key": "c", "if_version": 1}, b"two")
    assert reply == {"type": "ok", "id": 3, "version": 2}
    reply, _ = req(ctx, coordinator, {"type": "write", "id": 4, "key": "c", "if_version": 1}, b"three")
    assert_error(reply, "condition_failed", 4)
    assert reply["version"] == 2
    reply, _ = req(ctx, head, {"type": "delete", "id": 5, "key": "c", "if_version": 2})
    assert reply == {"type": "ok", "id": 5, "version": 3, "existed": True}
    reply, _ = req(ctx, head, {"type": "delete", "id": 6, "key": "c", "if_version": 3})
    assert_error(reply, "condition_failed", 6)
    assert reply["version"] == 0  # deleted: no value, whatever the tombstone's version
    reply, _ = req(ctx, head, {"type": "write", "id": 7, "key": "c", "if_version": -1}, b"x")
    assert_error(reply, "bad_request", 7)
    reply, _ = req(ctx, head, {"type": "write", "id": 8, "key": "c", "if_version": None}, b"x")
    assert_error(reply, "bad_request", 8)
    for member in get_topology(ctx, coordinator)["members"]:
        reply, _ = req(ctx, member["service"], {"type": "read", "id": 9, "key": "c"})
        assert_error(reply, "not_found", 9)


def test_plain_req_status_at_every_request_endpoint(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    coordinator = cluster.coordinator_endpoint

    reply, values = req(ctx, coordinator, {"type": "status", "id": "s"})
    assert reply["type"] == "ok" and reply["id"] == "s" and values == []
    topology = reply["topology"]
    assert [m["id"] for m in topology["members"]] == ["node1", "node2", "node3"]
    assert isinstance(reply["lease_ms"], int) and reply["lease_ms"] > 0
    assert isinstance(reply["counters"], dict)

    roles = {"node1": "head", "node2": "middle", "node3": "tail"}
    for member in topology["members"]:
        reply, values = req(ctx, member["service"], {"type": "status", "id": member["id"]})
        assert reply["type"] == "ok" and reply["id"] == member["id"] and values == []
        assert reply["node"] == member["id"]
        assert reply["role"] == roles[member["id"]]
        assert reply["epoch"] == topology["epoch"]
        assert reply["serving"] is True and reply["caught_up"] is True
        assert isinstance(reply["sent"], int)
        for counter in ("reads", "writes", "commits", "bad_messages", "stale_chain_frames"):
            assert isinstance(reply["counters"][counter], int)


def test_dealer_envelope_and_node_to_node_requests(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    topology = get_topology(ctx, cluster.coordinator_endpoint)
    epoch = topology["epoch"]
    head, middle, tail = (m["service"] for m in topology["members"])
    for key, value in (("a", b"1"), ("b", b"2"), ("c", b"3")):
        reply, _ = req(ctx, head, {"type": "write", "id": key, "key": key}, value)
        assert reply["type"] == "ok"
    reply, _ = req(ctx, head, {"type": "delete", "id": "del", "key": "b"})
    assert reply == {"type": "ok", "id": "del", "version": 2, "existed": True}

    # DEALER: an empty delimiter frame first; the reply comes back behind one too. Several
    # requests may be in flight; ids tell the replies apart.
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    dealer.connect(tail)
    try:
        for index, key in enumerate(("a", "c", "zz")):
            dealer.send_multipart([b"", orjson.dumps({"type": "read", "id": index, "key": key})])
        replies = {}
        for _ in range(3):
            frames = dealer.recv_multipart()
            assert frames[0] == b""
            header = orjson.loads(frames[1])
            replies[header["id"]] = (header, frames[2:])
    finally:
        dealer.close(0)
    assert replies[0][0]["version"] == 1 and replies[0][1] == [b"1"]
    assert replies[1][0]["version"] == 1 and replies[1][1] == [b"3"]
    assert replies[2][0]["code"] == "not_found"

    # version: the tail's committed version of a key, in the asker's epoch only.
    reply, _ = req(ctx, tail, {"type": "version", "id": 1, "key": "a", "epoch": epoch})
    assert reply == {"type": "ok", "id": 1, "version": 1}
    reply, _ = req(ctx, tail, {"type": "version", "id": 2, "key": "b", "epoch": epoch})
    assert reply == {"type": "ok", "id": 2, "version": 2}  # the tombstone's version
    reply, _ = req(ctx, tail, {"type": "version", "id": 3, "key": "nothing", "epoch": epoch})
    assert reply == {"type": "ok", "id": 3, "version": 0}
    reply, _ = req(ctx, tail, {"type": "version", "id": 4, "key": "a", "epoch": epoch + 7})
    assert_error(reply, "wrong_epoch", 4)
    assert reply["epoch"] == epoch
    reply, _ = req(ctx, middle, {"type": "version", "id": 5, "key": "a", "epoch": epoch})
    assert_error(reply, "not_tail", 5)
    assert reply["epoch"] == epoch

    # catchup: pages of committed items in key order, tombstones included, one value frame per
    # item; the cursor is the last key of a page, null on the last page.
    pages = []
    after = None
    while True:
        reply, values = req(ctx, tail, {"type": "catchup", "id": "p", "after": after, "limit": 2, "epoch": epoch})
        assert reply["type"] == "ok" and len(reply["items"]) == len(values)
        pages.append((reply["items"], values))
        after = reply["cursor"]
        if after is None:
            break
        assert after == reply["items"][-1][0]
    items = [item for page, _ in pages for item in page]
    values = [value for _, page_values in pages for value in page_values]
    assert items == [["a", 1, 0], ["b", 2, 2], ["c", 1, 0]]
    assert values == [b"1", b"", b"3"]
    assert [len(page) for page, _ in pages] == [2, 1]
    reply, _ = req(ctx, tail, {"type": "catchup", "id": "q", "after": None, "limit": 10, "epoch": epoch - 1})
    assert_error(reply, "wrong_epoch", "q")
    assert reply["epoch"] == epoch


def test_topology_publisher_clone_pattern(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    publish = cluster.publish_endpoint
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sub.setsockopt(zmq.SUBSCRIBE, b"topology")
    sub.connect(publish)
    try:
        # Subscribe first, then ask for a snapshot; apply only newer epochs from then on.
        snapshot = get_topology(ctx, cluster.coordinator_endpoint)
        current = snapshot
        # The coordinator republishes periodically, so a message arrives without any change.
        deadline = time.monotonic() + 10
        received = 0
        while received < 2 and time.monotonic() < deadline:
            topic, body = sub.recv_multipart()
            assert topic == b"topology"
            published = orjson.loads(body)
            assert set(published) == {"epoch", "members", "learner"}
            if published["epoch"] > current["epoch"]:
                current = published
            received += 1
        assert received == 2
        assert current["epoch"] == snapshot["epoch"]
        assert [m["id"] for m in current["members"]] == ["node1", "node2", "node3"]
    finally:
        sub.close(0)


def test_plain_req_partition_field(make_cluster, ctx):
    """PROTOCOL.md §3.1: a one-partition cluster has partition 0 only; §10.5: a chain frame of
    another partition is dropped as a bad message."""
    cluster = make_cluster(1).start_all()
    coordinator = cluster.coordinator_endpoint
    node = get_topology(ctx, coordinator)["members"][0]
    reply, _ = req(ctx, node["service"], {"type": "write", "id": 1, "key": "p", "partition": 0}, b"v")
    assert reply == {"type": "ok", "id": 1, "version": 1}
    reply, values = req(ctx, node["service"], {"type": "read", "id": 2, "key": "p", "partition": 0})
    assert reply["type"] == "ok" and values == [b"v"]
    reply, _ = req(ctx, node["service"], {"type": "read", "id": 3, "key": "p", "partition": 1})
    assert_error(reply, "wrong_partition", 3)
    reply, _ = req(ctx, coordinator, {"type": "write", "id": 4, "key": "p", "partition": 2}, b"w")
    assert_error(reply, "wrong_partition", 4)
    reply, _ = req(ctx, node["service"], {"type": "read", "id": 5, "key": "p", "partition": 4096})
    assert_error(reply, "bad_request", 5)
    before = req(ctx, node["service"], {"type": "status", "id": 6})[0]["counters"].get("bad_messages", 0)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(node["ack_in"])
    header = orjson.dumps({"t": "r", "from": "node9", "epoch": 1, "seq": 0, "p": 1})
    push.send(len(header).to_bytes(4, "big") + header)
    deadline = time.monotonic() + 10
    while req(ctx, node["service"], {"type": "status", "id": 7})[0]["counters"].get("bad_messages", 0) == before:
        assert time.monotonic() < deadline, "the frame of partition 1 was not counted as a bad message"
        time.sleep(0.05)
    push.close(0)
    reply, values = req(ctx, node["service"], {"type": "read", "id": 8, "key": "p"})
    assert values == [b"v"]
