"""Conditional writes (``if_version``) decided at the head, driven through NodeCore directly: when
a condition holds, when it fails and with which current version, and what waits for a dirty key."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_nodecore import A, B, TIMINGS, cframe, downs, grant_lease, join, only_reply, replies, topo
from zcraq import wire
from zcraq.messages import Delete, Malformed, Write
from zcraq.nodecore import NodeCore

pytestmark = pytest.mark.timeout(60)


def cas(node: NodeCore, key: str, value: bytes | None, if_version: int, now: float, request_id: Any = "c") -> list[Any]:
    """A conditional write (``value``) or deletion (None)."""
    request = Delete(key, id=request_id, if_version=if_version) if value is None else \
        Write(key, value, id=request_id, if_version=if_version)
    node.on_request("cl", request, now)
    return node.ready()


def outcome(effects: list[Any]) -> tuple[str, int]:
    """("ok", version) or (error code, the current version it names)."""
    reply = only_reply(effects)
    return ("ok" if reply.ok else reply.code), reply.header.get("version")


def test_a_sole_member_compares_the_current_version_where_deleted_counts_as_0():
    node = join(A, topo(1, A))
    assert outcome(cas(node, "k", b"a", 0, 0.1)) == ("ok", 1)  # absent: 0 holds
    assert outcome(cas(node, "k", b"b", 0, 0.1)) == ("condition_failed", 1)
    assert outcome(cas(node, "k", b"b", 2, 0.1)) == ("condition_failed", 1)
    assert outcome(cas(node, "k", b"b", 1, 0.1)) == ("ok", 2)
    assert outcome(cas(node, "k", None, 1, 0.1)) == ("condition_failed", 2)
    effects = cas(node, "k", None, 2, 0.1)
    assert only_reply(effects).header == {"type": "ok", "id": "c", "version": 3, "existed": True}
    # Deleted: the tombstone's version 3 is not the key's current version; 0 is.
    assert outcome(cas(node, "k", b"c", 3, 0.1)) == ("condition_failed", 0)
    assert outcome(cas(node, "k", b"c", 0, 0.1)) == ("ok", 4)
    assert outcome(cas(node, "never", None, 0, 0.1)) == ("ok", 1)
    assert node.counters["conditions_failed"] == 4


def test_a_condition_on_the_newest_dirty_version_is_applied_at_once():
    head = join(A, topo(1, A, B))
    head.on_request("cl", Write("k", b"one", id="w"), 0.1)
    head.ready()
    effects = cas(head, "k", b"two", 1, 0.1)
    assert [(r.key, r.version, r.value) for f in downs(effects) for r in f.records] == [("k", 2, b"two")]
    head.on_ack_frame(cframe("b", 1, 0, ("k", 2)), 0.2)
    assert {reply.id: reply.header["version"] for _, reply in replies(head.ready())} == {"w": 1, "c": 2}


def test_two_creates_of_one_key_have_one_winner_the_other_waits_for_the_commit():
    head = join(A, topo(1, A, B))
    first = cas(head, "k", b"mine", 0, 0.1, request_id="first")
    assert [r.version for f in downs(first) for r in f.records] == [1]
    second = cas(head, "k", b"yours", 0, 0.1, request_id="second")
    assert replies(second) == [] and downs(second) == []  # dirty and not matching: held
    head.tick(0.15)
    assert replies(head.ready()) == []  # still dirty
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 0.2)
    head.tick(0.2)
    answered = {reply.id: (reply.code or "ok", reply.header.get("version")) for _, reply in replies(head.ready())}
    assert answered == {"first": ("ok", 1), "second": ("condition_failed", 1)}


def test_held_conditions_are_decided_in_arrival_order():
    head = join(A, topo(1, A, B))
    cas(head, "k", b"a", 0, 0.1, request_id=1)  # version 1, dirty
    assert replies(cas(head, "k", b"b", 5, 0.1, request_id=2)) == []  # held
    # Matches the newest held version, but another condition waits before it: it waits too.
    effects = cas(head, "k", b"c", 1, 0.1, request_id=3)
    assert replies(effects) == [] and downs(effects) == []
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 0.2)
    head.tick(0.2)
    effects = head.ready()
    answered = {reply.id: (reply.code or "ok", reply.header.get("version")) for _, reply in replies(effects)}
    assert answered == {1: ("ok", 1), 2: ("condition_failed", 1)}
    assert [r.version for f in downs(effects) for r in f.records] == [2]  # request 3, applied


def test_a_held_condition_is_refused_unapplied_at_its_deadline_or_when_the_head_leaves():
    head = join(A, topo(1, A, B))
    cas(head, "k", b"a", 0, 1.0, request_id="applied")
    cas(head, "k", b"b", 7, 1.0, request_id="held")
    head.tick(1.0 + TIMINGS.write_timeout)
    codes = {reply.id: reply.code for _, reply in replies(head.ready())}
    assert codes == {"applied": "unknown_outcome", "held": "unavailable"}
    grant_lease(head, 20.0)
    cas(head, "j", b"a", 0, 20.0, request_id="applied")
    cas(head, "j", b"b", 7, 20.0, request_id="held")
    head.on_topology(topo(2, B), 20.1)
    codes = {reply.id: reply.code for _, reply in replies(head.ready())}
    assert codes == {"applied": "unknown_outcome", "held": "unavailable"}


def test_a_head_without_a_lease_decides_no_held_condition():
    head = join(A, topo(1, A, B), lease=True)
    cas(head, "k", b"a", 0, 0.1, request_id=1)
    cas(head, "k", b"b", 0, 0.1, request_id=2)
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 0.2)
    late = 0.1 + 3.5  # past the coordinator's lease (3 s) and without peer confirmations
    assert not head.serving(late)
    head.tick(late)
    answered = {reply.id: reply.code for _, reply in replies(head.ready())}
    assert answered == {1: None}  # the write's acknowledgement; the condition is not decided


@pytest.mark.parametrize("header, problem", [
    (b'{"type":"write","key":"k","if_version":-1}', "if_version must be non-negative"),
    (b'{"type":"write","key":"k","if_version":null}', "wrong type"),
    (b'{"type":"delete","key":"k","if_version":"1"}', "wrong type"),
    (b'{"type":"delete","key":"k","if_version":1.0}', "wrong type"),
    (b'{"type":"write","key":"k","if_version":18446744073709551616}', "wrong type"),
])
def test_a_bad_if_version_is_a_bad_request(header: bytes, problem: str):
    frames = [header, b"v"] if b'"write"' in header else [header]
    request = wire.read_node_request(frames, wire.Limits())
    assert isinstance(request, Malformed) and request.code == "bad_request" and problem in request.message


def test_if_version_travels_through_the_codec():
    for request in (Write("k", b"v", id=1, if_version=0), Delete("k", id=2, if_version=2**64 - 1),
                    Write("k", b"v", id=3)):
        assert wire.read_node_request(wire.encode_request(request), wire.Limits()) == request
        assert wire.read_coordinator_request(wire.encode_request(request), wire.Limits()) == request


def test_held_conditions_are_bounded_by_count_and_bytes(monkeypatch):
    from zcraq.nodecore import replication
    monkeypatch.setattr(replication, "MAX_HELD_BYTES", 10)
    head = join(A, topo(1, A, B))
    cas(head, "k", b"a", 0, 0.1, request_id="applied")  # version 1, dirty
    assert replies(cas(head, "k", b"123456", 5, 0.1, request_id="held")) == []
    refused = only_reply(cas(head, "k", b"123456", 5, 0.1, request_id="over"))
    assert refused.code == "unavailable" and "not applied" in refused.header["message"]
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 0.2)
    head.tick(0.2)
    assert {reply.id: reply.code for _, reply in replies(head.ready())} == {"applied": None,
                                                                            "held": "condition_failed"}
    cas(head, "k", b"b", 1, 0.3, request_id="applied again")  # version 2, dirty
    assert replies(cas(head, "k", b"123456", 5, 0.3, request_id="held again")) == []  # its bytes were freed
