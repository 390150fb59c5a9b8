"""Malformed input at every endpoint of a real cluster: the node service ROUTER, the node write-in
and ack-in PULLs, the coordinator ROUTER (and garbage at the transport level everywhere).

Where a reply is possible (ROUTER endpoints) it must be an error with the right code; every
process must stay up, keep the data written before, and go on serving reads and writes. The PULL
endpoints cannot answer, so their node's counters (``bad_messages``, ``stale_chain_frames``) show
that each frame arrived and was dropped.

Default limits apply (the test cluster writes no [limits] table): keys up to 1024 bytes of UTF-8,
values up to 1 MiB, request header frames up to 64 KiB.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from cluster import wait_for
from zcraq import KeyNotFound
from zcraq.cluster import Cluster
from zcraq.messages import PROTOCOL_VERSION
from zcraq.wire import MAX_CHAIN_MESSAGE_FRAMES

pytestmark = pytest.mark.timeout(120)

MAX_KEY = 1024
MAX_VALUE = 1 << 20
MAX_HEADER = 64 * 1024
# MAXMSGSIZE of the ROUTER endpoints: far above the limits (zcraq/sockets.py request_cap), so that
# a request over the limits still arrives and is answered too_large.
ROUTER_MAX_MESSAGE = max(16 << 20, 4 * (MAX_VALUE + MAX_KEY)) + 64 * 1024
PULL_MAX_MESSAGE = 256 * 1024 * 1024
TIMEOUT_MS = 5000
U32 = struct.Struct(">I")


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


# ------------------------------------------------------------------------------------ helpers


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock.connect(endpoint)
    return sock


def exchange(sock: zmq.Socket, body: list[bytes]) -> dict[str, Any]:
    """Send ``body`` behind the empty delimiter frame; return the reply header."""
    sock.send_multipart([b"", *body])
    try:
        frames = sock.recv_multipart()
    except zmq.Again:
        raise AssertionError(f"no reply to {[f[:80] for f in body]}") from None
    assert frames[0] == b"", frames
    header = orjson.loads(frames[1])
    assert isinstance(header, dict), header
    return header


def j(value: Any) -> bytes:
    return orjson.dumps(value)


def chain(header: dict[str, Any] | bytes, *records: tuple[Any, bytes]) -> bytes:
    """A chain frame built by hand from PROTOCOL.md: u32 length + header, then for each record
    u32 length + meta, u32 length + value (all lengths big-endian)."""
    head = header if isinstance(header, bytes) else orjson.dumps(header)
    out = U32.pack(len(head)) + head
    for meta, value in records:
        meta_bytes = meta if isinstance(meta, bytes) else orjson.dumps(meta)
        out += U32.pack(len(meta_bytes)) + meta_bytes + U32.pack(len(value)) + value
    return out


def topology(cluster: Cluster) -> dict[str, Any]:
    with cluster.client(timeout=5) as zclient:
        return zclient.topology().to_dict()


def seed(cluster: Cluster) -> dict[str, tuple[bytes, int] | None]:
    """Data written before the abuse: key -> (value, version), or None for a deleted key."""
    client = cluster.client()
    client.write("keep-1", b"one")
    client.write("keep-2", b"two-old")
    client.write("keep-2", bytes(range(256)))
    client.write("keep-3", b"doomed")
    client.delete("keep-3")
    return {"keep-1": (b"one", 1), "keep-2": (bytes(range(256)), 2), "keep-3": None}


def assert_healthy(cluster: Cluster, baseline: dict[str, tuple[bytes, int] | None], probe: str) -> None:
    """Every process up, the old data unchanged at every node, and a new write readable everywhere."""
    for name in cluster.processes:
        assert cluster.alive(name), f"{name} died:\n{cluster.log(name)[-3000:]}"
    assert cluster.members() == ["node1", "node2", "node3"]
    client = cluster.client()
    nodes = ("node1", "node2", "node3")
    for node in nodes:
        for key, expected in baseline.items():
            if expected is None:
                with pytest.raises(KeyNotFound):
                    client.read(key, node)
            else:
                assert client.read_versioned(key, node) == expected, (node, key)
            for mode in ("strong", "eventual"):
                if expected is not None:
                    assert client.read(key, node, mode=mode) == expected[0]
    assert client.write(probe, b"still-works") == 1
    for node in nodes:
        assert client.read_versioned(probe, node) == (b"still-works", 1)


def counters(cluster: Cluster, node: str) -> dict[str, int]:
    return cluster.node_status(node)["counters"]


# ------------------------------------------------------------------- request-level malformations


def common_bad_requests(read_type: str) -> list[tuple[str, list[bytes], str, Any]]:
    """(what, frames after the delimiter, expected code, expected id) for any ROUTER endpoint.
    ``read_type`` is a request type that endpoint accepts and that takes a key and no value."""
    return [
        ("empty body", [], "bad_request", None),
        ("empty header frame", [b""], "bad_request", None),
        ("not JSON", [b"hello there"], "bad_request", None),
        ("garbage bytes", [b"\xff\xfe\x00\x01garbage\x80"], "bad_request", None),
        ("truncated JSON", [b'{"type": "status", "id": 1'], "bad_request", None),
        ("JSON array", [b'["status", 1]'], "bad_request", None),
        ("JSON string", [b'"status"'], "bad_request", None),
        ("JSON number", [b"42"], "bad_request", None),
        ("JSON null", [b"null"], "bad_request", None),
        ("lone surrogate", [b'{"type": "status", "id": "\\ud800"}'], "bad_request", None),
        ("id is a bool", [j({"type": "status", "id": True})], "bad_request", None),
        ("id is a float", [j({"type": "status", "id": 1.5})], "bad_request", None),
        ("id is an object", [j({"type": "status", "id": {"a": 1}})], "bad_request", None),
        ("id is a list", [j({"type": "status", "id": [1]})], "bad_request", None),
        ("id too long", [j({"type": "status", "id": "x" * 129})], "bad_request", None),
        ("no type", [j({"id": 1})], "bad_request", 1),
        ("unknown type", [j({"type": "frobnicate", "id": 2})], "bad_request", 2),
        ("type is a number", [j({"type": 5, "id": 3})], "bad_request", 3),
        ("type is a list", [j({"type": ["status"], "id": 4})], "bad_request", 4),
        ("type reply-only", [j({"type": "ok", "id": 5})], "bad_request", 5),
        ("missing key", [j({"type": read_type, "id": 6})], "bad_request", 6),
        ("empty key", [j({"type": read_type, "id": 7, "key": ""})], "bad_request", 7),
        ("key is a number", [j({"type": read_type, "id": 8, "key": 8})], "bad_request", 8),
        ("key is a bool", [j({"type": read_type, "id": 9, "key": True})], "bad_request", 9),
        ("key is a list", [j({"type": read_type, "id": 10, "key": ["k"]})], "bad_request", 10),
        ("key is null", [j({"type": read_type, "id": 11, "key": None})], "bad_request", 11),
        ("key too long", [j({"type": read_type, "id": 12, "key": "k" * (MAX_KEY + 1)})], "too_large", 12),
        ("key too long in UTF-8", [j({"type": read_type, "id": 13, "key": "é" * (MAX_KEY // 2 + 1)})],
         "too_large", 13),
        ("header too large", [j({"type": "status", "id": 14, "pad": "p" * MAX_HEADER})], "too_large", None),
        ("three frames", [j({"type": "write", "id": 15, "key": "k"}), b"v", b"extra"], "bad_request", None),
        ("many frames", [j({"type": "status", "id": 16})] + [b"x"] * 50, "bad_request", None),
        ("write without value frame", [j({"type": "write", "id": 17, "key": "keep-1"})], "bad_request", 17),
        ("status with a value frame", [j({"type": "status", "id": 18}), b"v"], "bad_request", 18),
        ("delete with a value frame", [j({"type": "delete", "id": 19, "key": "keep-1"}), b"v"],
         "bad_request", 19),
        ("value too large", [j({"type": "write", "id": 20, "key": "keep-1"}), b"v" * (MAX_VALUE + 1)],
         "too_large", 20),
        ("write with a bool key", [j({"type": "write", "id": 21, "key": False}), b"v"], "bad_request", 21),
        ("delete without key", [j({"type": "delete", "id": 22})], "bad_request", 22),
    ]


def node_bad_requests(epoch: int) -> list[tuple[str, list[bytes], str, Any]]:
    return common_bad_requests("read") + [
        ("coordinator-only type", [j({"type": "join", "id": 30, "node": {}})], "bad_request", 30),
        ("heartbeat at a node", [j({"type": "heartbeat", "id": 31, "node_id": "n", "epoch": 1})],
         "bad_request", 31),
        ("unknown read mode", [j({"type": "read", "id": 32, "key": "keep-1", "mode": "fast"})], "bad_request", 32),
        ("mode is a number", [j({"type": "read", "id": 33, "key": "keep-1", "mode": 1})], "bad_request", 33),
        ("mode is a bool", [j({"type": "read", "id": 34, "key": "keep-1", "mode": True})], "bad_request", 34),
        ("mode is null", [j({"type": "read", "id": 35, "key": "keep-1", "mode": None})], "bad_request", 35),
        ("read with a value frame", [j({"type": "read", "id": 36, "key": "keep-1"}), b"v"], "bad_request", 36),
        ("version without epoch", [j({"type": "version", "id": 37, "key": "keep-1"})], "bad_request", 37),
        ("version epoch is a bool", [j({"type": "version", "id": 38, "key": "keep-1", "epoch": True})],
         "bad_request", 38),
        ("version epoch is a string", [j({"type": "version", "id": 39, "key": "keep-1", "epoch": str(epoch)})],
         "bad_request", 39),
        ("version epoch is a float", [j({"type": "version", "id": 40, "key": "keep-1", "epoch": 1.0})],
         "bad_request", 40),
        ("version epoch negative", [j({"type": "version", "id": 41, "key": "keep-1", "epoch": -1})],
         "bad_request", 41),
        ("version without key", [j({"type": "version", "id": 42, "epoch": epoch})], "bad_request", 42),
        ("catchup without limit", [j({"type": "catchup", "id": 43, "epoch": epoch})], "bad_request", 43),
        ("catchup without epoch", [j({"type": "catchup", "id": 44, "limit": 10})], "bad_request", 44),
        ("catchup limit zero", [j({"type": "catchup", "id": 45, "limit": 0, "epoch": epoch})], "bad_request", 45),
        ("catchup limit too big", [j({"type": "catchup", "id": 46, "limit": 100_001, "epoch": epoch})],
         "bad_request", 46),
        ("catchup limit is a bool", [j({"type": "catchup", "id": 47, "limit": True, "epoch": epoch})],
         "bad_request", 47),
        ("catchup after is a number", [j({"type": "catchup", "id": 48, "limit": 5, "epoch": epoch, "after": 3})],
         "bad_request", 48),
        ("catchup epoch negative", [j({"type": "catchup", "id": 49, "limit": 5, "epoch": -3})], "bad_request", 49),
    ] + batch_bad_requests()


def batch_bad_requests() -> list[tuple[str, list[bytes], str, Any]]:
    """read_many, write_many and delete_many (PROTOCOL.md §8.8)."""
    def many(kind: str, request_id: int, **fields: Any) -> bytes:
        return j({"type": kind, "id": request_id, **fields})

    return [
        ("read_many without keys", [many("read_many", 60)], "bad_request", 60),
        ("read_many keys empty", [many("read_many", 61, keys=[])], "bad_request", 61),
        ("read_many keys a string", [many("read_many", 62, keys="keep-1")], "bad_request", 62),
        ("read_many 1001 keys", [many("read_many", 63, keys=["k"] * 1001)], "bad_request", 63),
        ("read_many an empty key", [many("read_many", 64, keys=["keep-1", ""])], "bad_request", 64),
        ("read_many a number key", [many("read_many", 65, keys=["keep-1", 5])], "bad_request", 65),
        ("read_many a key too long", [many("read_many", 66, keys=["keep-1", "k" * (MAX_KEY + 1)])], "too_large", 66),
        ("read_many bad mode", [many("read_many", 67, keys=["keep-1"], mode="fast")], "bad_request", 67),
        ("read_many with a value frame", [many("read_many", 68, keys=["keep-1"]), b"v"], "bad_request", 68),
        ("write_many without sizes", [many("write_many", 69, keys=["keep-1"]), b"v"], "bad_request", 69),
        ("write_many without value frame", [many("write_many", 70, keys=["keep-1"], sizes=[0])], "bad_request", 70),
        ("write_many sizes and keys differ", [many("write_many", 71, keys=["keep-1", "x"], sizes=[1]), b"v"],
         "bad_request", 71),
        ("write_many sizes and frame differ", [many("write_many", 72, keys=["keep-1"], sizes=[2]), b"v"],
         "bad_request", 72),
        ("write_many negative size", [many("write_many", 73, keys=["keep-1", "x"], sizes=[2, -1]), b"v"],
         "bad_request", 73),
        ("write_many size is a bool", [many("write_many", 74, keys=["keep-1"], sizes=[True]), b"v"],
         "bad_request", 74),
        ("write_many a value too large", [many("write_many", 75, keys=["keep-1"], sizes=[MAX_VALUE + 1]),
                                          b"v" * (MAX_VALUE + 1)], "too_large", 75),
        ("write_many values too large together",
         [many("write_many", 76, keys=[f"big{i}" for i in range(17)], sizes=[MAX_VALUE] * 16 + [1]),
          b"v" * (16 * MAX_VALUE + 1)], "too_large", 76),
        ("delete_many with a value frame", [many("delete_many", 77, keys=["keep-1"]), b"v"], "bad_request", 77),
        ("delete_many keys null", [many("delete_many", 78, keys=None)], "bad_request", 78),
    ]


def coordinator_bad_requests(node1: dict[str, str]) -> list[tuple[str, list[bytes], str, Any]]:
    def join(request_id: int, node: Any) -> list[bytes]:
        return [j({"type": "join", "id": request_id, "node": node, "protocol": PROTOCOL_VERSION})]

    def heartbeat(request_id: int, **fields: Any) -> list[bytes]:
        header = {"type": "heartbeat", "id": request_id, "protocol": PROTOCOL_VERSION, **fields}
        return [j({k: v for k, v in header.items() if v is not None})]

    return common_bad_requests("delete") + [
        ("read at the coordinator", [j({"type": "read", "id": 50, "key": "keep-1"})], "bad_request", 50),
        ("version at the coordinator", [j({"type": "version", "id": 51, "key": "k", "epoch": 1})], "bad_request", 51),
        ("catchup at the coordinator", [j({"type": "catchup", "id": 52, "limit": 1, "epoch": 1})], "bad_request", 52),
        ("read_many at the coordinator", [j({"type": "read_many", "id": 79, "keys": ["keep-1"]})], "bad_request", 79),
        ("write_many at the coordinator", [j({"type": "write_many", "id": 80, "keys": ["k"], "sizes": [1]}), b"v"],
         "bad_request", 80),
        ("join without node", [j({"type": "join", "id": 53})], "bad_request", 53),
        ("join node is a string", join(54, "node9"), "bad_request", 54),
        ("join node is a list", join(55, ["node9"]), "bad_request", 55),
        ("join node without endpoints", join(56, {"id": "node9"}), "bad_request", 56),
        ("join node endpoint empty",
         join(57, {"id": "node9", "service": "", "write_in": "tcp://127.0.0.1:1", "ack_in": "tcp://127.0.0.1:2"}),
         "bad_request", 57),
        ("join node endpoint a number",
         join(58, {"id": "node9", "service": 5, "write_in": "tcp://127.0.0.1:1", "ack_in": "tcp://127.0.0.1:2"}),
         "bad_request", 58),
        ("join node id too long",
         join(59, {"id": "n" * 65, "service": "tcp://127.0.0.1:1", "write_in": "tcp://127.0.0.1:2",
                   "ack_in": "tcp://127.0.0.1:3"}), "bad_request", 59),
        ("join with another node's endpoints",
         join(60, {"id": "node9", "service": node1["service"], "write_in": "tcp://127.0.0.1:2",
                   "ack_in": "tcp://127.0.0.1:3"}), "bad_request", 60),
        ("join with a value frame", join(61, {"id": "node9"}) + [b"v"], "bad_request", 61),
        ("join without protocol version",
         [j({"type": "join", "id": 90, "node": {"id": "node9", "service": "tcp://127.0.0.1:1",
                                                 "write_in": "tcp://127.0.0.1:2", "ack_in": "tcp://127.0.0.1:3"}})],
         "bad_request", 90),
        ("join speaking another protocol version",
         [j({"type": "join", "id": 91, "protocol": PROTOCOL_VERSION + 1,
             "node": {"id": "node9", "service": "tcp://127.0.0.1:1", "write_in": "tcp://127.0.0.1:2",
                      "ack_in": "tcp://127.0.0.1:3"}})],
         "incompatible", 91),
        ("heartbeat without node_id", heartbeat(62, epoch=1), "bad_request", 62),
        ("heartbeat node_id empty", heartbeat(63, node_id="", epoch=1), "bad_request", 63),
        ("heartbeat node_id too long", heartbeat(64, node_id="n" * 65, epoch=1), "bad_request", 64),
        ("heartbeat node_id a number", heartbeat(65, node_id=1, epoch=1), "bad_request", 65),
        ("heartbeat epoch a bool", heartbeat(66, node_id="node9", epoch=False), "bad_request", 66),
        ("heartbeat epoch negative", heartbeat(67, node_id="node9", epoch=-1), "bad_request", 67),
        ("heartbeat without epoch", heartbeat(68, node_id="node9"), "bad_request", 68),
        ("heartbeat without protocol version", heartbeat(92, node_id="node1", epoch=1, protocol=None),
         "bad_request", 92),
        ("heartbeat speaking another protocol version",
         heartbeat(93, node_id="node1", epoch=1, protocol=PROTOCOL_VERSION + 1), "incompatible", 93),
        ("heartbeat of an unknown node", heartbeat(69, node_id="node9", epoch=1), "unknown_node", 69),
        ("caught_up without epoch", [j({"type": "caught_up", "id": 70, "node_id": "node9"})], "bad_request", 70),
        ("caught_up of a non-learner", [j({"type": "caught_up", "id": 71, "node_id": "node9", "epoch": 1})],
         "wrong_epoch", 71),
        ("leave without node_id", [j({"type": "leave", "id": 72})], "bad_request", 72),
        ("leave node_id a list", [j({"type": "leave", "id": 73, "node_id": ["node1"]})], "bad_request", 73),
        ("write key too long",
         [j({"type": "write", "id": 74, "key": "k" * (MAX_KEY + 1)}), b"v"], "too_large", 74),
    ]


def check_cases(sock: zmq.Socket, cases: list[tuple[str, list[bytes], str, Any]]) -> None:
    for what, body, code, request_id in cases:
        reply = exchange(sock, body)
        assert reply.get("type") == "error", (what, reply)
        assert reply.get("code") == code, (what, reply)
        assert reply.get("id") == request_id, (what, reply)
        assert isinstance(reply.get("message"), str) and reply["message"], (what, reply)


def test_node_service_answers_malformed_requests_with_errors(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    baseline = seed(cluster)
    topo = topology(cluster)
    epoch = topo["epoch"]
    cases = node_bad_requests(epoch)
    before = {m["id"]: counters(cluster, m["id"])["bad_messages"] for m in topo["members"]}
    for member in topo["members"]:
        sock = dealer(ctx, member["service"])
        try:
            check_cases(sock, cases)
            # Well-formed requests on the same connection still work afterwards.
            reply = exchange(sock, [j({"type": "read", "id": "ok", "key": "keep-1"})])
            assert reply == {"type": "ok", "id": "ok", "version": 1}
            # Without the delimiter frame (a bare DEALER), a clear error still comes back.
            sock.send(j({"type": "read", "id": 1, "key": "keep-1"}))
            frames = sock.recv_multipart()
            assert frames[0] == b""
            reply = orjson.loads(frames[1])
            assert reply["type"] == "error" and reply["code"] == "bad_request" and reply["id"] is None
            assert "delimiter" in reply["message"]
        finally:
            sock.close(0)
        # Every bad request was counted, and nothing else was.
        assert counters(cluster, member["id"])["bad_messages"] == before[member["id"]] + len(cases) + 1

    # A REQ socket gets the same errors (its envelope is added and removed by ZeroMQ).
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    req.connect(topo["members"][0]["service"])
    try:
        req.send(b"{not json")
        reply = orjson.loads(req.recv())
        assert reply["type"] == "error" and reply["code"] == "bad_request"
        req.send_multipart([j({"type": "write", "id": 9, "key": "keep-1"}), b"v" * (MAX_VALUE + 1)])
        reply = orjson.loads(req.recv())
        assert reply == {**reply, "type": "error", "code": "too_large", "id": 9}
    finally:
        req.close(0)

    # Odd but valid: ids at the ends of their ranges, keys with NUL and non-BMP characters.
    sock = dealer(ctx, topo["members"][0]["service"])
    try:
        for request_id, key in ((2**64 - 1, "a\x00b"), (-(2**63), "\U0001F600" * (MAX_KEY // 4)),
                                ("", "\uffff"), ("i" * 128, "\x00")):
            reply = exchange(sock, [j({"type": "write", "id": request_id, "key": key}), key.encode()])
            assert reply == {"type": "ok", "id": request_id, "version": 1}, key
            reply = exchange(sock, [j({"type": "read", "id": request_id, "key": key})])
            assert reply == {"type": "ok", "id": request_id, "version": 1}, key
        reply = exchange(sock, [j({"type": "read", "id": 1, "key": "a"})])
        assert reply["type"] == "error" and reply["code"] == "not_found"
    finally:
        sock.close(0)

    # Limits are inclusive: a 1024-byte key and a 1 MiB value are accepted.
    client = cluster.client()
    long_key = "k" * MAX_KEY
    assert client.write(long_key, b"v" * MAX_VALUE) == 1
    assert client.read(long_key, "node3") == b"v" * MAX_VALUE
    assert_healthy(cluster, baseline, "probe-service")


def test_coordinator_answers_malformed_requests_with_errors(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    baseline = seed(cluster)
    topo = topology(cluster)
    cases = coordinator_bad_requests(topo["members"][0])
    with cluster.client() as zclient:
        before = zclient.status()["counters"]["bad_messages"]
    sock = dealer(ctx, cluster.coordinator_endpoint)
    try:
        check_cases(sock, cases)
        reply = exchange(sock, [j({"type": "topology", "id": "t"})])
        assert reply["type"] == "ok" and reply["topology"] == topo
        sock.send(j({"type": "topology", "id": 1}))
        frames = sock.recv_multipart()
        assert frames[0] == b"" and orjson.loads(frames[1])["code"] == "bad_request"
        # Harmless well-formed requests about nodes that do not exist change nothing.
        reply = exchange(sock, [j({"type": "leave", "id": "l", "node_id": "node9"})])
        assert reply == {"type": "ok", "id": "l", "epoch": topo["epoch"]}
        # The coordinator checks a write's limits itself, before forwarding it to the head.
        reply = exchange(sock, [j({"type": "write", "id": "fw", "key": "keep-1"}), b"v" * (MAX_VALUE + 1)])
        assert reply["type"] == "error" and reply["code"] == "too_large" and reply["id"] == "fw"
    finally:
        sock.close(0)
    with cluster.client() as zclient:
        status = zclient.status()
    # Requests the coordinator could not decode are counted; refusals of well-formed requests
    # (the nine join/heartbeat/caught_up cases its handlers reject) are not.
    assert status["counters"]["bad_messages"] == before + (len(cases) - 9) + 1 + 1
    assert status["topology"] == topo
    assert_healthy(cluster, baseline, "probe-coordinator")


# -------------------------------------------------------------------------- chain PULL endpoints


def header_errors(kind: str, sender: str, epoch: int) -> list[bytes]:
    """Chain frames whose header is wrong, from the right sender where a sender is given."""
    good = {"t": kind, "from": sender, "epoch": epoch, "seq": 5}
    if kind == "c":
        good["commits"] = []
    frames = [
        b"",
        b"\x00",
        b"\x00\x00\x00",
        U32.pack(0),  # empty header
        U32.pack(100) + b"{}",  # header length beyond the frame
        U32.pack(0xFFFFFFFF) + b"{}",
        U32.pack(8) + b"not json",
        chain(b"[1, 2, 3]"),
        chain(b'"w"'),
        chain(b"\xff\xfe\xfd"),
        chain({**good, "t": "x"}),
        chain({**good, "t": None}),
        chain({k: v for k, v in good.items() if k != "t"}),
        chain({k: v for k, v in good.items() if k != "from"}),
        chain({**good, "from": ""}),
        chain({**good, "from": 7}),
        chain({**good, "from": "n" * 65}),
        chain({k: v for k, v in good.items() if k != "epoch"}),
        chain({**good, "epoch": -1}),
        chain({**good, "epoch": True}),
        chain({**good, "epoch": str(epoch)}),
        chain({**good, "epoch": 1.0}),
        chain({k: v for k, v in good.items() if k != "seq"}),
        chain({**good, "seq": -1}),
        chain({**good, "seq": False}),
        chain({**good, "seq": 2.5}),
    ]
    return frames


def write_frame_errors(sender: str, epoch: int) -> list[bytes]:
    header = {"t": "w", "from": sender, "epoch": epoch, "seq": 7}
    head = chain(header)
    good_meta = j(["keep-1", 99, 1])
    return header_errors("w", sender, epoch) + [
        head + b"\x00",  # truncated before a record's meta length
        head + U32.pack(50) + good_meta,  # meta length beyond the frame
        head + U32.pack(len(good_meta)) + good_meta,  # no value length
        head + U32.pack(len(good_meta)) + good_meta + b"\x00\x00",  # truncated value length
        head + U32.pack(len(good_meta)) + good_meta + U32.pack(10) + b"short",  # value beyond the frame
        chain(header, (b"not json", b"forged")),
        chain(header, (b'{"key": "keep-1"}', b"forged")),
        chain(header, (["keep-1", 99], b"forged")),
        chain(header, (["keep-1", 99, 1, 0], b"forged")),
        chain(header, (["", 99, 1], b"forged")),
        chain(header, ([5, 99, 1], b"forged")),
        chain(header, (["k" * (MAX_KEY + 1), 99, 1], b"forged")),
        chain(header, (["keep-1", 0, 1], b"forged")),
        chain(header, (["keep-1", -4, 1], b"forged")),
        chain(header, (["keep-1", True, 1], b"forged")),
        chain(header, (["keep-1", "99", 1], b"forged")),
        chain(header, (["keep-1", 99.0, 1], b"forged")),
        chain(header, (["keep-1", 99, 4], b"forged")),
        chain(header, (["keep-1", 99, -1], b"forged")),
        chain(header, (["keep-1", 99, "1"], b"forged")),
        chain(header, (["keep-1", 99, True], b"forged")),
        chain(header, (["keep-1", 99, 1], b"v" * (MAX_VALUE + 1))),
        # One bad record spoils the whole frame, good records before it included.
        chain(header, (["keep-2", 99, 1], b"forged"), (["keep-1", 0, 1], b"forged")),
        # Commit and resync frames do not belong on a write-in link.
        chain({"t": "c", "from": sender, "epoch": epoch, "seq": 1, "commits": [["keep-1", 99]]}),
        chain({"t": "r", "from": sender, "epoch": epoch, "seq": 1}),
    ]


def ack_frame_errors(sender: str, epoch: int) -> list[bytes]:
    base = {"t": "c", "from": sender, "epoch": epoch, "seq": 7}
    return header_errors("c", sender, epoch) + [
        chain({k: v for k, v in base.items()}),  # no commits list
        chain({**base, "commits": None}),
        chain({**base, "commits": {"keep-1": 99}}),
        chain({**base, "commits": [["keep-1"]]}),
        chain({**base, "commits": [["keep-1", 99, 1]]}),
        chain({**base, "commits": [["keep-1", 0]]}),
        chain({**base, "commits": [["keep-1", True]]}),
        chain({**base, "commits": [["keep-1", "99"]]}),
        chain({**base, "commits": [["", 99]]}),
        chain({**base, "commits": [[99, 99]]}),
        chain({**base, "commits": [["k" * (MAX_KEY + 1), 99]]}),
        chain({**base, "commits": ["keep-1"]}),
        chain({**base, "commits": [["keep-1", 99]]}) + b"\x00",  # trailing bytes after a header-only frame
        chain({"t": "r", "from": sender, "epoch": epoch, "seq": 7}) + b"xyz",
        # A write frame does not belong on an ack-in link.
        chain({"t": "w", "from": sender, "epoch": epoch, "seq": 1}, (["keep-1", 99, 1], b"forged")),
    ]


def garbage(count: int) -> list[bytes]:
    rng = random.Random(20240229)
    frames = [b"\xde\xad\xbe\xef" * 16, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(1000)]
    for size in (1, 2, 3, 5, 17, 64, 300, 4096)[:count]:
        frame = rng.randbytes(size)
        frames.append(b"\xff" + frame[1:])  # a first length byte of 0xff: always beyond the frame
    return frames


def stale_write_frames(pred: str | None, epoch: int) -> list[bytes]:
    """Well-formed write frames that must be ignored: unknown sender, or the right sender in
    another epoch. Each carries a forged committed version of keep-1."""
    forged = (["keep-1", 99, 1], b"forged")
    frames = [
        chain({"t": "w", "from": "mallory", "epoch": epoch, "seq": 0}, forged),
        chain({"t": "w", "from": "mallory", "epoch": epoch, "seq": 1}, forged),
    ]
    if pred is not None:
        frames += [
            chain({"t": "w", "from": pred, "epoch": epoch - 1, "seq": 0}, forged),
            chain({"t": "w", "from": pred, "epoch": epoch + 3, "seq": 0}, forged),
            chain({"t": "w", "from": pred, "epoch": 0, "seq": 1}, forged),
        ]
    return frames


def stale_ack_frames(succ: str | None, epoch: int) -> list[bytes]:
    frames = [
        chain({"t": "c", "from": "mallory", "epoch": epoch, "seq": 0, "commits": [["keep-1", 99]]}),
        chain({"t": "r", "from": "mallory", "epoch": epoch, "seq": 0}),
    ]
    if succ is not None:
        frames += [
            chain({"t": "c", "from": succ, "epoch": epoch - 1, "seq": 0, "commits": [["keep-1", 99]]}),
            chain({"t": "r", "from": succ, "epoch": epoch + 2, "seq": 0}),
        ]
    return frames


def push(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    sock.connect(endpoint)
    return sock


def test_chain_endpoints_drop_malformed_and_foreign_frames(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    baseline = seed(cluster)
    topo = topology(cluster)
    epoch = topo["epoch"]
    ids = [m["id"] for m in topo["members"]]
    open_sockets: list[zmq.Socket] = []
    expected: dict[str, tuple[int, int]] = {}
    try:
        for index, member in enumerate(topo["members"]):
            node = member["id"]
            pred = ids[index - 1] if index > 0 else None
            succ = ids[index + 1] if index + 1 < len(ids) else None
            before = counters(cluster, node)
            write_bad = write_frame_errors(pred or "node0", epoch) + garbage(8)
            ack_bad = ack_frame_errors(succ or "node9", epoch) + garbage(4)
            write_stale = stale_write_frames(pred, epoch)
            ack_stale = stale_ack_frames(succ, epoch)

            write_in = push(ctx, member["write_in"])
            ack_in = push(ctx, member["ack_in"])
            open_sockets += [write_in, ack_in]
            for frame in write_bad + write_stale:
                write_in.send(frame)
            for frame in ack_bad + ack_stale:
                ack_in.send(frame)
            # A chain message is 1 to MAX_CHAIN_MESSAGE_FRAMES chain frames, each judged alone;
            # a longer one is dropped whole.
            write_in.send_multipart([b"a", b"b"])
            ack_in.send_multipart([b"a", b"b", b"c"])
            ack_in.send_multipart([b"x"] * (MAX_CHAIN_MESSAGE_FRAMES + 1))
            bad = len(write_bad) + len(ack_bad) + 2 + 3 + 1
            stale = len(write_stale) + len(ack_stale)
            expected[node] = (before["bad_messages"] + bad, before["stale_chain_frames"] + stale)

        def all_counted() -> bool:
            for node, (bad, stale) in expected.items():
                now = counters(cluster, node)
                if now["bad_messages"] < bad or now["stale_chain_frames"] < stale:
                    return False
            return True

        wait_for(all_counted, 20, "every node to count the dropped chain frames")
        for node, (bad, stale) in expected.items():
            now = counters(cluster, node)
            assert (now["bad_messages"], now["stale_chain_frames"]) == (bad, stale), node
    finally:
        for sock in open_sockets:
            sock.close(0)
    assert topology(cluster)["epoch"] == epoch
    assert_healthy(cluster, baseline, "probe-chain")


# ------------------------------------------------------------------------ transport-level abuse


def wait_disconnected(monitor: zmq.Socket, what: str) -> None:
    """Block (with a deadline) until the monitored socket sees its peer drop the connection."""
    monitor.setsockopt(zmq.RCVTIMEO, 10_000)
    while True:
        try:
            event = recv_monitor_message(monitor)
        except zmq.Again:
            raise AssertionError(f"{what}: the receiver did not drop the connection") from None
        if event["event"] == zmq.EVENT_DISCONNECTED:
            return


def send_oversized(ctx: zmq.Context, kind: int, endpoint: str, frames: list[bytes]) -> None:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames, copy=False)
        wait_disconnected(monitor, endpoint)
        if kind == zmq.DEALER:
            assert not sock.poll(200), "an oversized message got an answer"
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def raw_tcp(endpoint: str, payload: bytes) -> None:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        try:
            conn.sendall(payload)
            conn.settimeout(0.2)
            conn.recv(4096)  # whatever the peer says (a ZMTP greeting), if anything
        except OSError:
            pass  # the peer hung up on us: fine


def test_a_request_over_the_limits_is_answered_too_large_at_once(make_cluster, ctx):
    cluster = make_cluster(1).start_all()
    service = cluster.service("node1")
    for endpoint in (service, cluster.coordinator_endpoint):
        sock = dealer(ctx, endpoint)
        try:
            for size in (MAX_VALUE + 1, MAX_VALUE + 64 * 1024 + 1, 3 * MAX_VALUE, ROUTER_MAX_MESSAGE - 64 * 1024):
                reply = exchange(sock, [j({"type": "write", "id": size, "key": "big"}), bytes(size)])
                assert (reply["code"], reply["id"]) == ("too_large", size), (endpoint, size, reply)
        finally:
            sock.close(0)
    with cluster.client() as client:
        client.topology()
        assert client.limits is not None and client.limits.max_value_bytes == MAX_VALUE
        from zcraq.errors import TooLarge
        with pytest.raises(TooLarge):  # refused by the client itself, before sending
            client.write("big", bytes(MAX_VALUE + 1))
        assert client.write("big", bytes(MAX_VALUE)) == 1


def test_oversized_messages_and_transport_garbage(make_cluster, ctx):
    cluster = make_cluster(3).start_all()
    baseline = seed(cluster)
    topo = topology(cluster)
    oversized_request = bytes(ROUTER_MAX_MESSAGE + 1)
    oversized_chain = bytes(PULL_MAX_MESSAGE + 1)
    for member in topo["members"]:
        send_oversized(ctx, zmq.DEALER, member["service"],
                       [b"", j({"type": "write", "id": 1, "key": "keep-1"}), oversized_request])
        send_oversized(ctx, zmq.DEALER, member["service"], [b"", oversized_request])
        send_oversized(ctx, zmq.PUSH, member["write_in"], [oversized_chain])
        send_oversized(ctx, zmq.PUSH, member["ack_in"], [oversized_chain])
    send_oversized(ctx, zmq.DEALER, cluster.coordinator_endpoint,
                   [b"", j({"type": "write", "id": 1, "key": "keep-1"}), oversized_request])
    send_oversized(ctx, zmq.DEALER, cluster.coordinator_endpoint, [b"", oversized_request])

    # Bytes that are not ZMTP at all, at every TCP endpoint, the topology publisher included.
    endpoints = [cluster.coordinator_endpoint, cluster.publish_endpoint]
    for member in topo["members"]:
        endpoints += [member["service"], member["write_in"], member["ack_in"]]
    rng = random.Random(7)
    for endpoint in endpoints:
        raw_tcp(endpoint, b"GET / HTTP/1.1\r\nHost: zcraq\r\n\r\n")
        raw_tcp(endpoint, rng.randbytes(512))
        raw_tcp(endpoint, b"\xff" + bytes(8) + b"\x7f" + rng.randbytes(200))  # a ZMTP-looking start
        raw_tcp(endpoint, b"")

    # ZeroMQ sockets of the wrong type: the handshake fails, nothing is delivered.
    for member in topo["members"]:
        wrong = ctx.socket(zmq.REQ)
        wrong.setsockopt(zmq.LINGER, 0)
        wrong.connect(member["write_in"])
        wrong.send(chain({"t": "w", "from": "mallory", "epoch": topo["epoch"], "seq": 0}))
        assert not wrong.poll(300)
        wrong.close(0)
        wrong = ctx.socket(zmq.PUB)
        wrong.setsockopt(zmq.LINGER, 0)
        wrong.connect(member["service"])
        wrong.send(j({"type": "status"}))
        wrong.close(0)

    # The same connections work normally again.
    sock = dealer(ctx, topo["members"][0]["service"])
    try:
        assert exchange(sock, [j({"type": "read", "id": 1, "key": "keep-1"})])["version"] == 1
    finally:
        sock.close(0)
    assert topology(cluster)["epoch"] == topo["epoch"]
    assert_healthy(cluster, baseline, "probe-transport")


# ------------------------------------------------------------------- join with unusable endpoints


@pytest.mark.parametrize("endpoint", ["garbage", "tcp://127.0.0.1", "tcp://127.0.0.1:notaport"])
def test_join_with_unusable_endpoints_is_refused(make_cluster, ctx, endpoint):
    """Other nodes connect to a learner's endpoints, so a join must not smuggle in one that a
    ZeroMQ connect rejects: that would bring the tail down."""
    cluster = make_cluster(3).start_all()
    baseline = seed(cluster)
    epoch = topology(cluster)["epoch"]
    node = {"id": "intruder", "service": "tcp://127.0.0.1:9", "write_in": "tcp://127.0.0.1:10",
            "ack_in": "tcp://127.0.0.1:11"}
    sock = dealer(ctx, cluster.coordinator_endpoint)
    try:
        for field in ("write_in", "service", "ack_in"):
            reply = exchange(sock, [j({"type": "join", "id": field, "node": {**node, field: endpoint},
                                         "protocol": PROTOCOL_VERSION})])
            assert reply["type"] == "error" and reply["code"] == "bad_request" and reply["id"] == field, reply
    finally:
        sock.close(0)
    assert topology(cluster)["epoch"] == epoch
    assert_healthy(cluster, baseline, "probe-join")
