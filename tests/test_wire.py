"""The wire codec (zcraq/wire.py): PROTOCOL.md's bytes exactly, and one answer per input.

Request headers are decoded in one msgspec pass, and the step-by-step rules of PROTOCOL.md §3.2
(``_explain_request``) name the error when that pass fails. The property test below holds the two
against each other on thousands of generated and mutated headers: same acceptance, same error code,
id and message.
"""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import orjson
import pytest

from zcraq import wire
from zcraq.messages import (UNSET, CatchupRequest, CommitFrame, ConfirmMany, Delete, Error, Malformed, Ok, Read,
                            ResyncFrame, StatusRequest, Write, WriteFrame, WriteRecord, request_type)
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(120)

LIMITS = wire.Limits()
ALL = wire.NODE_REQUESTS | wire.COORDINATOR_REQUESTS

# ---------------------------------------------------------------------------------- PROTOCOL.md §12


def test_chain_frames_are_byte_for_byte_those_of_protocol_md():
    sync = wire.encode_chain(WriteFrame("node1", 5, 0, (WriteRecord("hello", 1, b"world"),)))
    assert sync == (b'\x00\x00\x00\x2a{"t":"w","from":"node1","epoch":5,"seq":0}'
                    b'\x00\x00\x00\x0d["hello",1,0]\x00\x00\x00\x05world')
    commit = wire.encode_chain(CommitFrame("node2", 5, 3, (("hello", 1),)))
    assert commit == b'\x00\x00\x00\x42{"t":"c","from":"node2","epoch":5,"seq":3,"commits":[["hello",1]]}'
    resync = wire.encode_chain(ResyncFrame("node2", 5, 0))
    assert resync == b'\x00\x00\x00\x2a{"t":"r","from":"node2","epoch":5,"seq":0}'
    assert (len(sync), len(commit), len(resync)) == (72, 70, 46)
    for data in (sync, commit, resync):
        assert wire.encode_chain(wire.decode_chain(data, LIMITS)) == data


def test_replies_are_those_of_protocol_md():
    assert wire.encode_reply(Ok(1, version=1)) == [b'{"type":"ok","id":1,"version":1}']
    assert wire.encode_reply(Ok(2, version=1), (b"world",)) == [b'{"type":"ok","id":2,"version":1}', b"world"]
    assert orjson.loads(wire.encode_reply(Error(6, "not_head", "writes go to the head of the chain",
                                                head="tcp://127.0.0.1:7101"))[0]) == {
        "type": "error", "id": 6, "code": "not_head", "message": "writes go to the head of the chain",
        "head": "tcp://127.0.0.1:7101"}
    # A last catch-up page says so with an explicit null cursor.
    page = orjson.loads(wire.encode_reply(Ok(3, items=[("a", 1, 0)], cursor=None))[0])
    assert page == {"type": "ok", "id": 3, "items": [["a", 1, 0]], "cursor": None}


def test_a_catchup_page_may_carry_the_source_estimate_of_its_progress():
    page = wire.encode_reply(Ok(3, items=[("a", 1, 0)], cursor="a", progress=0.4))
    assert orjson.loads(page[0]) == {"type": "ok", "id": 3, "items": [["a", 1, 0]], "cursor": "a", "progress": 0.4}
    for progress in (0, 1, 0.25):
        reply, _ = wire.read_reply([orjson.dumps({"type": "ok", "id": 3, "progress": progress})])
        assert isinstance(reply, Ok) and reply.progress == progress
    last, _ = wire.read_reply([b'{"type":"ok","id":3,"items":[],"cursor":null}'])
    assert isinstance(last, Ok) and last.progress is UNSET
    for bad in (1.5, -0.1, "0.5", True, None):
        reply, _ = wire.read_reply([orjson.dumps({"type": "ok", "id": 3, "progress": bad})])
        assert isinstance(reply, Malformed) and "progress" in reply.message


def test_requests_round_trip_with_their_value_in_its_own_frame():
    frames = wire.encode_request(Write("hello", b"\x00world", id=1))
    assert orjson.loads(frames[0]) == {"type": "write", "key": "hello", "id": 1} and frames[1] == b"\x00world"
    for request in (Write("k", b"v", id="w"), Read("k", id=2, mode="eventual"), Delete("k", id=None),
                    CatchupRequest(10, 4, "b", id=7), StatusRequest(id=8)):
        assert wire.decode_request(wire.encode_request(request), LIMITS, ALL) == request


def test_topology_round_trips_and_refuses_a_node_listed_twice():
    a, b = (Member(n, f"tcp://h:{i}1", f"tcp://h:{i}2", f"tcp://h:{i}3") for i, n in enumerate("ab"))
    topology = Topology(3, (a,), b)
    assert wire.decode_topology(wire.encode_topology(topology)) == topology
    with pytest.raises(wire.WireError, match="twice"):
        wire.decode_topology(orjson.dumps({"epoch": 1, "members": [a.to_dict(), a.to_dict()]}))


def test_a_malformed_reply_keeps_its_id_when_it_can_be_found():
    reply, values = wire.read_reply([b'{"type":"ok","id":"r-7","version":"x"}', b"v"])
    assert isinstance(reply, Malformed) and reply.id == "r-7" and values == []
    reply, _ = wire.read_reply([b"not json"])
    assert isinstance(reply, Malformed) and reply.id is None
    assert wire.read_reply([])[0] == Malformed("bad_request", "empty reply")


# ---------------------------------------------------------------------------------- chain frames

U32 = struct.Struct(">I")


def dumps(value: Any) -> bytes:
    """JSON as any client may write it, integers of any size included."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def chain(header: dict[str, Any] | bytes, *records: tuple[Any, bytes]) -> bytes:
    head = header if isinstance(header, bytes) else dumps(header)
    out = U32.pack(len(head)) + head
    for meta, value in records:
        meta_bytes = dumps(meta)
        out += U32.pack(len(meta_bytes)) + meta_bytes + U32.pack(len(value)) + value
    return out


W = {"t": "w", "from": "n1", "epoch": 5, "seq": 7}
C = {"t": "c", "from": "n2", "epoch": 5, "seq": 7, "commits": [["k", 9]]}


@pytest.mark.parametrize("data", [
    b"", b"\x00\x00\x00", U32.pack(100) + b"{}", chain(b"[1]"), chain({**W, "t": "x"}),
    chain({k: v for k, v in W.items() if k != "from"}), chain({**W, "from": ""}), chain({**W, "from": "n" * 65}),
    chain({k: v for k, v in W.items() if k != "epoch"}), chain({**W, "epoch": -1}), chain({**W, "epoch": True}),
    chain({**W, "seq": 2.5}), chain({**W, "epoch": 2**64}), chain({**W, "seq": 2**70}),
    chain(W, (["k", 1, 0, 0], b"v")),  # a meta array with an extra element
    chain(W, (["k", 0, 0], b"v")), chain(W, (["k", 2**64, 0], b"v")), chain(W, (["k", 1, 4], b"v")),
    chain(W, (["", 1, 0], b"v")), chain(W, (["k" * 1025, 1, 0], b"v")), chain(W, (["k", 1, 0], b"v" * ((1 << 20) + 1))),
    chain(W, (["k", 1, 0], b"v"))[:-1], chain(W, (["k", True, 0], b"v")),
    chain({k: v for k, v in C.items() if k != "commits"}), chain({**C, "commits": [["k"]]}),
    chain({**C, "commits": [["k", 9, 1]]}), chain({**C, "commits": [["k", 2**64]]}), chain(C) + b"\x00",
    chain({"t": "r", "from": "n2", "epoch": 5, "seq": 1}) + b"x",
])
def test_malformed_chain_frames_are_refused(data):
    assert isinstance(wire.read_chain(data, LIMITS), Malformed)


def test_chain_limits_are_inclusive():
    frame = wire.decode_chain(chain(W, (["k" * 1024, 2**64 - 1, 3], b"v" * (1 << 20))), LIMITS)
    assert isinstance(frame, WriteFrame)
    assert frame.records[0].version == 2**64 - 1 and frame.records[0].committed and frame.records[0].tombstone


# ---------------------------------------------------------------------------------- requests vs the rules

TYPES = sorted(ALL)
ODD_VALUES: list[Any] = [None, True, False, 0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
                         1.0, 2.5, "", "x", "k" * 1025, "n" * 65, "i" * 128, "i" * 129, "\u00e9", "\U0001F600",
                         [], {}, [1], {"a": 1}, "strong", "eventual", "bogus", 100_000, 100_001]


def valid_header(rng: random.Random, kind: str) -> dict[str, Any]:
    header: dict[str, Any] = {"type": kind, "id": rng.choice([1, "r", None, 2**64 - 1, -(2**63)])}
    if kind in ("read", "write", "delete", "version"):
        header["key"] = rng.choice(["k", "key-1", "a\x00b", "\U0001F600"])
    if kind == "read" and rng.random() < 0.5:
        header["mode"] = rng.choice(["strong", "eventual"])
    if kind in ("version", "catchup", "heartbeat", "caught_up", "confirm"):
        header["epoch"] = rng.randrange(0, 10)
    if kind == "catchup":
        header["limit"] = rng.randrange(1, 1000)
        header["after"] = rng.choice([None, "b"])
    if kind in ("heartbeat", "caught_up", "leave", "confirm"):
        header["node_id"] = rng.choice(["node1", "n"])
    if kind in ("join", "heartbeat"):
        header["protocol"] = 1
    if kind == "join":
        header["node"] = {"id": "n", "service": "tcp://a:1", "write_in": "tcp://a:2", "ack_in": "tcp://a:3"}
        if rng.random() < 0.3:
            header["zone"] = rng.choice(["", "rack-1", "z" * 64, "z" * 65])
    if rng.random() < 0.2:
        header["partition"] = rng.choice([0, 1, 4095, 4096, -1])
    if kind in ("watch", "watch_state"):
        header[rng.choice(["key", "prefix"])] = rng.choice(["k", "", "p/"])
        if rng.random() < 0.1:
            header["prefix" if "key" in header else "key"] = "k"
        if kind == "watch":
            header.update(log=rng.choice(["a.0", ""]), after=rng.choice([0, 5, -1]))
            if rng.random() < 0.5:
                header["wait_ms"] = rng.choice([0, 1000, 60_001])
        elif rng.random() < 0.5:
            header.update(after=rng.choice([None, "k"]), values=rng.choice([True, False, 1]))
    return header


def generated_bodies(count: int, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    bodies = []
    while len(bodies) < count:
        header = valid_header(rng, rng.choice(TYPES))
        if rng.random() < 0.05:
            header["type"] = rng.choice(ODD_VALUES)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            name = rng.choice([*header, "key", "id", "mode", "epoch", "limit", "after", "node_id", "protocol",
                               "node", "type", "partition", "zone"])
            if rng.random() < 0.75:
                header[name] = rng.choice(ODD_VALUES)
            else:
                header.pop(name, None)
        raw = dumps(header)
        roll = rng.random()
        if roll < 0.04:
            raw = raw[:-1]
        elif roll < 0.07:
            raw += b" x"
        elif roll < 0.09:
            raw = raw.replace(b'"k"', b'"\\ud800"')
        elif roll < 0.1:
            raw = b"[" + raw + b"]"
        body = [raw]
        if (header.get("type") == "write" and rng.random() < 0.9) or rng.random() < 0.05:
            body.append(rng.choice([b"v", b"", b"x" * (1 << 20), b"x" * ((1 << 20) + 1)]))
        if rng.random() < 0.02:
            body.append(b"extra")
        bodies.append(body if rng.random() > 0.005 else [])
    return bodies


@pytest.mark.parametrize("accepted", [wire.NODE_REQUESTS, wire.COORDINATOR_REQUESTS], ids=["node", "coordinator"])
def test_request_decoding_agrees_with_the_rules_of_protocol_md(accepted):
    accepted_count = 0
    for body in generated_bodies(12_000, seed=len(accepted)):
        try:
            wire._explain_request(body, LIMITS, accepted)  # noqa: SLF001 - the reference
            expected: wire.WireError | None = None
        except wire.WireError as error:
            expected = error
        try:
            request = wire.decode_request(body, LIMITS, accepted)
        except wire.WireError as error:
            assert expected is not None, (body, error)
            assert (error.code, error.request_id, str(error)) == (expected.code, expected.request_id,
                                                                   str(expected)), body
            continue
        assert expected is None, (body, expected)
        accepted_count += 1
        header = json.loads(body[0])
        assert request_type(request) == header["type"] and request.id == header.get("id")
        for name in ("key", "mode", "epoch", "limit", "after", "node_id", "protocol", "node", "partition", "zone"):
            if name in header and hasattr(request, name):
                assert getattr(request, name) == header[name], (body, name)
        if isinstance(request, Write):
            assert request.value == body[1]
    assert accepted_count > 1000  # the generator reaches the accepting paths too


def test_unused_fields_are_ignored_beyond_json_syntax():
    """PROTOCOL.md §3.1: a field a request does not use is not validated beyond JSON syntax."""
    for extra in (b'"x":1e400', b'"x":"\xff"', b'"x":{"a":[1,2]}', b'"value":"abc"'):
        request = wire.decode_request([b'{"type":"read","id":1,"key":"k",' + extra + b"}"], LIMITS, ALL)
        assert request == Read("k", id=1)
    for broken in (b'"x":[1,]', b'"x":NaN', b'"x":"\\ud800"', b'"x":01'):
        with pytest.raises(wire.WireError, match="not valid JSON"):
            wire.decode_request([b'{"type":"read","id":1,"key":"k",' + broken + b"}"], LIMITS, ALL)


def test_the_partition_travels_in_requests_and_chain_frames():
    write = wire.decode_request([b'{"type":"write","id":1,"key":"k","partition":7}', b"v"], LIMITS, ALL)
    assert write == Write("k", b"v", id=1, partition=7)
    assert wire.encode_request(write)[0] == b'{"type":"write","key":"k","id":1,"partition":7}'
    assert wire.encode_request(Write("k", b"v", id=1))[0] == b'{"type":"write","key":"k","id":1}'
    for bad in (b"4096", b"-1", b"1.0", b'"1"', b"true"):
        with pytest.raises(wire.WireError) as raised:
            wire.decode_request([b'{"type":"read","id":2,"key":"k","partition":' + bad + b"}"], LIMITS, ALL)
        assert raised.value.request_id == 2 and "partition" in str(raised.value)
    frame = CommitFrame("node2", 5, 3, (("hello", 1),), partition=12)
    data = wire.encode_chain(frame)
    assert data[4:] == b'{"t":"c","from":"node2","epoch":5,"seq":3,"commits":[["hello",1]],"p":12}'
    assert wire.decode_chain(data, LIMITS) == frame
    assert wire.decode_chain(wire.encode_chain(WriteFrame("n", 1, 0, partition=3)), LIMITS).partition == 3
    assert wire.read_chain(_frame_of(b'{"t":"r","from":"n","epoch":1,"seq":0,"p":4095}'), LIMITS).partition == 4095
    assert isinstance(wire.read_chain(_frame_of(b'{"t":"r","from":"n","epoch":1,"seq":0,"p":4096}'), LIMITS), Malformed)


def _frame_of(header: bytes) -> bytes:
    return struct.pack(">I", len(header)) + header


# ---------------------------------------------------------------------------------- drain


def test_drain_is_a_coordinator_request():
    from zcraq.messages import Drain

    drain = wire.decode_request([b'{"type":"drain","id":1,"node_id":"node2"}'], LIMITS, wire.COORDINATOR_REQUESTS)
    assert drain == Drain("node2", True, id=1)
    undo = wire.decode_request([b'{"type":"drain","id":2,"node_id":"n","draining":false}'], LIMITS,
                               wire.COORDINATOR_REQUESTS)
    assert undo == Drain("n", False, id=2)
    assert wire.encode_request(undo) == [b'{"type":"drain","node_id":"n","draining":false,"id":2}']
    for body, message in ((b'{"type":"drain","id":3}', "drain needs field 'node_id'"),
                          (b'{"type":"drain","id":3,"node_id":"n","draining":1}',
                           "field 'draining' has the wrong type"),
                          (b'{"type":"drain","id":3,"node_id":""}', "node_id must be 1 to 64 characters")):
        with pytest.raises(wire.WireError) as raised:
            wire.decode_request([body], LIMITS, wire.COORDINATOR_REQUESTS)
        assert (raised.value.code, raised.value.request_id, str(raised.value)) == ("bad_request", 3, message)
    with pytest.raises(wire.WireError, match="unknown request type 'drain'"):
        wire.decode_request([b'{"type":"drain","id":4,"node_id":"n"}'], LIMITS, wire.NODE_REQUESTS)


def decoded_as_the_rules_say(body: list[bytes], accepted: frozenset[str]) -> Any:
    """``body`` decoded, or None when refused; either way exactly as the one-rule-at-a-time
    explanation of PROTOCOL.md §3.2 (the reference) says, error message included."""
    try:
        wire._explain_request(body, LIMITS, accepted)  # noqa: SLF001 - the reference
        expected: wire.WireError | None = None
    except wire.WireError as error:
        expected = error
    try:
        request = wire.decode_request(body, LIMITS, accepted)
    except wire.WireError as error:
        assert expected is not None and (error.code, error.request_id, str(error)) == (
            expected.code, expected.request_id, str(expected)), (body, error)
        return None
    assert expected is None, (body, expected)
    return request


def test_drain_decoding_agrees_with_the_rules():
    rng = random.Random(7)
    accepted = 0
    for _ in range(3000):
        header: dict[str, Any] = {"type": "drain", "id": rng.choice([1, "r", None]), "node_id": "node1"}
        if rng.random() < 0.5:
            header["draining"] = rng.choice([True, False])
        for _ in range(rng.choice([0, 1, 1, 2])):
            name = rng.choice(["node_id", "draining", "id", "partition"])
            if rng.random() < 0.75:
                header[name] = rng.choice(ODD_VALUES)
            else:
                header.pop(name, None)
        request = decoded_as_the_rules_say([dumps(header)], wire.COORDINATOR_REQUESTS)
        if request is None:
            continue
        accepted += 1
        assert (request.node_id, request.draining) == (header["node_id"], header.get("draining", True))
    assert accepted > 500


# ---------------------------------------------------------------------------------- confirm_many


def test_confirm_many_carries_partition_epoch_pairs_and_its_reply_one_answer_each():
    body = [b'{"type":"confirm_many","id":5,"node_id":"node1","epochs":[[0,3],[4095,0]]}']
    request = wire.decode_request(body, LIMITS, wire.NODE_REQUESTS)
    assert request == ConfirmMany("node1", [(0, 3), (4095, 0)], id=5)
    assert wire.encode_request(request) == [
        b'{"type":"confirm_many","node_id":"node1","epochs":[[0,3],[4095,0]],"id":5}']
    reply = Ok(5, results=["ok", "wrong_epoch"], epochs=[3, 4], lease_ms=1000)
    assert wire.encode_reply(reply) == [b'{"type":"ok","id":5,"results":["ok","wrong_epoch"],"epochs":[3,4],'
                                        b'"lease_ms":1000}']
    assert wire.decode_reply(wire.encode_reply(reply)) == (reply, [])
    with pytest.raises(wire.WireError, match="unknown request type 'confirm_many'"):
        wire.decode_request(body, LIMITS, wire.COORDINATOR_REQUESTS)


def test_confirm_many_decoding_agrees_with_the_rules():
    rng = random.Random(11)
    odd_pairs: list[Any] = [[0, 1], [4095, 2**64 - 1], [4096, 1], [-1, 1], [1, -1], [1, 2**64], [1], [1, 2, 3],
                            [1.0, 2], [True, 1], "x", None, {}, [1, "2"]]
    accepted = 0
    for _ in range(4000):
        pairs = [rng.choice(odd_pairs) if rng.random() < 0.1 else [rng.randrange(0, 4096), rng.randrange(0, 9)]
                 for _ in range(rng.choice([0, 1, 2, 5]))]
        header: dict[str, Any] = {"type": "confirm_many", "id": rng.choice([1, "r", None]), "node_id": "node1",
                                  "epochs": pairs}
        for _ in range(rng.choice([0, 0, 1, 2])):
            name = rng.choice(["node_id", "epochs", "id", "partition"])
            if rng.random() < 0.75:
                header[name] = rng.choice(ODD_VALUES)
            else:
                header.pop(name, None)
        request = decoded_as_the_rules_say([dumps(header)], wire.NODE_REQUESTS)
        if request is None:
            continue
        accepted += 1
        assert [list(pair) for pair in request.epochs] == header["epochs"]
    assert accepted > 1000
    too_many = dumps({"type": "confirm_many", "id": 1, "node_id": "n", "epochs": [[0, 1]] * 4097})
    with pytest.raises(wire.WireError, match="1 to 4096"):
        wire.decode_request([too_many], LIMITS, wire.NODE_REQUESTS)
