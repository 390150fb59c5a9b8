"""NodeCore driven directly: typed messages in with explicit times, effects out. No sockets, no
clocks, no bytes (the codec has its own tests in test_wire.py)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from zcraq.callers import Caller, Role
from zcraq.effects import PeerRequest, Relink, Respond, SendDown, SendUp, Subscribe
from zcraq.messages import (PROTOCOL_VERSION, TOMBSTONE, CatchupRequest, CommitFrame, Confirm, ConfirmMany, Delete,
                            DeleteMany, Error, Malformed, Ok, Read, ReadMany, ResyncFrame, VersionQuery, Write,
                            WriteFrame, WriteMany, WriteRecord)
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.store import MemoryStore
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(60)

TIMINGS = NodeTimings(heartbeat_interval=0.5, request_timeout=2.0, write_timeout=10.0,
                      resend_interval=1.0, catchup_page_items=2, peer_lease=0.5)
FENCE_OVER = 0.2 + TIMINGS.peer_lease + 0.01  # a fence begun at 0.2 is over
LEASE_MS = 3000


def member(name: str) -> Member:
    return Member(name, f"{name}/service", f"{name}/write", f"{name}/ack")


A, B, C, D = (member(name) for name in "abcd")


def topo(epoch: int, *members: Member, learner: Member | None = None) -> Topology:
    return Topology(epoch, tuple(members), learner)


# ---------------------------------------------------------------------------------- helpers


class Answer:
    """A reply effect, seen the way a client sees it: ok or an error code, the header's fields."""

    def __init__(self, effect: Respond) -> None:
        self.ok = type(effect.reply) is Ok
        self.id = effect.reply.id
        self.header = msgspec.to_builtins(effect.reply)  # UNSET fields are left out
        self.code = self.header.get("code")
        self.values = list(effect.values)


def peer_requests(effects: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.endpoint, msgspec.to_builtins(e.request)) for e in effects if isinstance(e, PeerRequest)]


def call_id(effects: list[Any], kind: str) -> int:
    ids = [header["id"] for _, header in peer_requests(effects) if header["type"] == kind]
    assert len(ids) == 1, f"expected one {kind} call, got {peer_requests(effects)}"
    return ids[0]


def replies(effects: list[Any]) -> list[tuple[Any, Answer]]:
    return [(e.client, Answer(e)) for e in effects if isinstance(e, Respond)]


def only_reply(effects: list[Any]) -> Answer:
    found = replies(effects)
    assert len(found) == 1, found
    return found[0][1]


def downs(effects: list[Any]) -> list[WriteFrame]:
    return [e.frame for e in effects if isinstance(e, SendDown)]


def ups(effects: list[Any]) -> list[CommitFrame | ResyncFrame]:
    return [e.frame for e in effects if isinstance(e, SendUp)]


def kind(frame: WriteFrame | CommitFrame | ResyncFrame) -> str:
    """The frame's ``t`` on the wire."""
    return {WriteFrame: "w", CommitFrame: "c", ResyncFrame: "r"}[type(frame)]


def sent(node: NodeCore) -> list[tuple[str, int]]:
    """The node's sent list: forwarded and not yet committed."""
    return [(r.key, r.version) for r in node.links.sent.records()]


def join(me: Member, topology: Topology, now: float = 0.0, store: MemoryStore | None = None,
         lease: bool = True, unsafe: frozenset[str] = frozenset()) -> NodeCore:
    """A node whose join the coordinator answered with ``topology``, optionally with a lease."""
    node = NodeCore(me, store if store is not None else MemoryStore(), timings=TIMINGS, unsafe=unsafe)
    node.start(now - TIMINGS.peer_lease)  # started long enough ago that its start-up fence is over
    assert call_id(node.ready(), "join") == 1
    node.on_peer_reply(Ok(1, topology=topology, publish="coord/pub"), [], now)
    node.ready()
    if lease:
        grant_lease(node, now)
    return node


def grant_lease(node: NodeCore, now: float, lease_ms: int = LEASE_MS) -> None:
    node.tick(now)
    heartbeat = call_id(node.ready(), "heartbeat")
    node.on_peer_reply(Ok(heartbeat, epoch=node.topology.epoch, status="member", lease_ms=lease_ms), [], now)
    node.ready()


def rec(key: str, version: int, value: bytes | None = None, committed: bool = False,
        tombstone: bool = False) -> WriteRecord:
    return WriteRecord(key, version, value if value is not None else f"{key}{version}".encode(),
                       committed, tombstone)


def wframe(sender: str, epoch: int, seq: int, *records: WriteRecord) -> WriteFrame:
    return WriteFrame(sender, epoch, seq, tuple(records))


def cframe(sender: str, epoch: int, seq: int, *commits: tuple[str, int]) -> CommitFrame:
    return CommitFrame(sender, epoch, seq, tuple(commits))


def rframe(sender: str, epoch: int, seq: int) -> ResyncFrame:
    return ResyncFrame(sender, epoch, seq)


def write(node: NodeCore, key: str, value: bytes, now: float, request_id: Any = "w", client: Any = "cl") -> list[Any]:
    node.on_request(client, Write(key, value, id=request_id), now)
    return node.ready()


def read(node: NodeCore, key: str, now: float, mode: str | None = None, request_id: Any = "r") -> list[Any]:
    request = Read(key, id=request_id, mode=mode) if mode else Read(key, id=request_id)  # type: ignore[arg-type]
    node.on_request("reader", request, now)
    return node.ready()


def store_view(node: NodeCore, key: str) -> list[tuple[int, bool]]:
    return [(v, node.store.get(key, v).committed) for v in node.store.versions(key)]


# ---------------------------------------------------------------------------------- joining


def test_join_helper_makes_a_serving_member():
    node = NodeCore(A, MemoryStore(), timings=TIMINGS)
    node.start(0.0)
    [(endpoint, header)] = peer_requests(node.ready())
    assert endpoint == "coordinator" and header["type"] == "join" and header["id"] == 1
    assert header["node"] == A.to_dict() and header["protocol"] == PROTOCOL_VERSION
    node.on_peer_reply(Ok(1, topology=topo(1, A, B), publish="coord/pub"), [], 0.0)
    effects = node.ready()
    assert Subscribe("coord/pub") in effects
    assert Relink(down=B.write_in, up=None) in effects
    assert node.role == "head" and not node.serving(0.0)
    grant_lease(node, 0.0)
    assert node.serving(0.0)


@pytest.mark.parametrize("code, level", [("busy", logging.INFO), ("incompatible", logging.ERROR)])
def test_refused_join_is_logged_and_asked_again(code, level, caplog):
    """"busy" (another node is catching up) is routine; "incompatible" (another release) needs an
    operator. Either way the node stays out and asks again after a request timeout."""
    node = NodeCore(A, MemoryStore(), timings=TIMINGS)
    node.start(0.0)
    assert call_id(node.ready(), "join") == 1
    with caplog.at_level(logging.INFO, logger="zcraq"):
        node.on_peer_reply(Error(1, code, "refused for a reason"), [], 0.1)
    assert [r.levelno for r in caplog.records if "refused for a reason" in r.getMessage()] == [level]
    assert node.role == "joining" and not node.serving(0.1)
    node.tick(0.0 + TIMINGS.request_timeout - 0.01)
    assert [h["type"] for _, h in peer_requests(node.ready())] == []
    node.tick(0.0 + TIMINGS.request_timeout)
    assert [h["type"] for _, h in peer_requests(node.ready())] == ["join"]


def test_refused_heartbeats_renew_no_lease_and_are_logged_once_every_10_s(caplog):
    """A coordinator of another release refuses every heartbeat: the node's lease is not renewed
    (peer confirmations alone may keep it serving, as when the coordinator is down) and the
    refusal is logged as an error, once every 10 s with a count rather than twice a second."""
    node = join(A, topo(1, A, B), lease=False)
    lease_before = node.leases.coordinator_until
    with caplog.at_level(logging.INFO, logger="zcraq"):
        for step in range(1, 241):  # two minutes of heartbeats
            now = step * TIMINGS.heartbeat_interval
            node.tick(now)
            [header] = [h for _, h in peer_requests(node.ready()) if h["type"] == "heartbeat"]
            assert header["protocol"] == PROTOCOL_VERSION
            node.on_peer_reply(Error(header["id"], "incompatible", "speaks protocol 7"), [], now)
    assert node.leases.coordinator_until == lease_before
    errors = [r for r in caplog.records if "speaks protocol 7" in r.getMessage()]
    assert [r.levelno for r in errors] == [logging.ERROR] * 12  # at 0.5 s, 10.5 s, ... 110.5 s
    assert errors[1].getMessage().endswith("(19 more like this in the last 10 s)")


# ---------------------------------------------------------------------------------- head writes


def test_head_assigns_latest_plus_one_per_key():
    head = join(A, topo(1, A, B))
    sent = []
    for index, key in enumerate(["k", "k", "j", "k"]):
        effects = write(head, key, f"v{index}".encode(), 0.1, request_id=index)
        assert replies(effects) == []
        [frame] = downs(effects)
        sent.extend(frame.records)
    assert [(r.key, r.version, r.value, r.committed) for r in sent] == [
        ("k", 1, b"v0", False), ("k", 2, b"v1", False), ("j", 1, b"v2", False), ("k", 3, b"v3", False)]
    assert store_view(head, "k") == [(1, False), (2, False), (3, False)]


def test_head_answers_a_write_only_when_its_commit_arrives():
    head = join(A, topo(1, A, B))
    write(head, "k", b"x", 0.1, request_id="req-1", client="client-1")
    head.on_ack_frame(cframe("b", 1, 0, ("other", 1)), 0.2)
    assert replies(head.ready()) == []
    head.on_ack_frame(cframe("b", 1, 1, ("k", 1)), 0.3)
    [(client, reply)] = replies(head.ready())
    assert client == "client-1" and reply.ok and reply.id == "req-1" and reply.header["version"] == 1
    assert store_view(head, "k") == [(1, True)]


def test_newer_commit_acknowledges_an_older_pending_write():
    head = join(A, topo(1, A, B))
    write(head, "k", b"one", 0.1, request_id=1)
    write(head, "k", b"two", 0.1, request_id=2)
    head.on_ack_frame(cframe("b", 1, 0, ("k", 2)), 0.2)
    answered = {reply.id: reply.header["version"] for _, reply in replies(head.ready())}
    assert answered == {1: 1, 2: 2}
    assert store_view(head, "k") == [(2, True)]
    assert sent(head) == []


def test_single_member_chain_answers_writes_at_once_with_committed_versions():
    node = join(A, topo(1, A))
    assert node.role == "head+tail"
    for expected in (1, 2):
        effects = write(node, "k", f"v{expected}".encode(), 0.1)
        reply = only_reply(effects)
        assert reply.ok and reply.header["version"] == expected
        assert downs(effects) == [] and ups(effects) == []
    assert store_view(node, "k") == [(2, True)]
    node.on_request("cl", Delete("k", id="d"), 0.1)
    assert only_reply(node.ready()).header == {"type": "ok", "id": "d", "version": 3, "existed": True}
    assert only_reply(read(node, "k", 0.2)).code == "not_found"
    # Deleting what is deleted, or was never written, is a version too; the reply says so.
    for key, version in (("k", 4), ("never", 1)):
        node.on_request("cl", Delete(key, id="d"), 0.3)
        assert only_reply(node.ready()).header == {"type": "ok", "id": "d", "version": version, "existed": False}


def test_a_deletion_behind_an_uncommitted_write_says_the_key_existed():
    head = join(A, topo(1, A, B))
    head.on_request("cl", Delete("k", id="d1"), 0.1)
    write(head, "k", b"v", 0.1, request_id="w")
    head.on_request("cl", Delete("k", id="d2"), 0.1)
    assert replies(head.ready()) == []
    head.on_ack_frame(cframe("b", 1, 0, ("k", 3)), 0.2)  # one commit acknowledges all three
    answered = {reply.id: (reply.header["version"], reply.header.get("existed")) for _, reply in replies(head.ready())}
    assert answered == {"d1": (1, False), "w": (2, None), "d2": (3, True)}


# ---------------------------------------------------------------------------------- middle and tail


def test_middle_stores_dirty_and_forwards_exactly_the_record():
    middle = join(B, topo(1, A, B, C))
    record = rec("k", 4, b"\x00value", tombstone=False)
    tomb = rec("gone", 2, b"", tombstone=True)
    middle.on_write_frame(wframe("a", 1, 0, record, tomb), 0.1)
    effects = middle.ready()
    assert store_view(middle, "k") == [(4, False)]
    assert middle.store.get("gone", 2).tombstone
    [frame] = downs(effects)
    assert (kind(frame), frame.sender, frame.epoch) == ("w", "b", 1)
    assert frame.records == (record, tomb)
    assert ups(effects) == []


def test_middle_commits_prunes_and_forwards_the_commit_upstream():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1), rec("k", 2), rec("k", 3)), 0.1)
    middle.ready()
    middle.on_ack_frame(cframe("c", 1, 0, ("k", 2)), 0.2)
    effects = middle.ready()
    assert store_view(middle, "k") == [(2, True), (3, False)]
    [frame] = ups(effects)
    assert (kind(frame), frame.sender, frame.epoch, frame.commits) == ("c", "b", 1, (("k", 2),))
    assert sent(middle) == [("k", 3)]


def test_tail_commits_on_receipt_and_sends_the_commit_upstream():
    tail = join(C, topo(1, A, B, C))
    tail.on_write_frame(wframe("b", 1, 0, rec("k", 1), rec("j", 5)), 0.1)
    effects = tail.ready()
    assert store_view(tail, "k") == [(1, True)] and store_view(tail, "j") == [(5, True)]
    [frame] = ups(effects)
    assert (kind(frame), frame.sender, frame.epoch) == ("c", "c", 1)
    assert frame.commits == (("k", 1), ("j", 5))
    assert downs(effects) == []


def test_duplicate_write_of_a_committed_version_makes_the_tail_echo_the_commit():
    tail = join(C, topo(1, A, B, C))
    tail.on_write_frame(wframe("b", 1, 0, rec("k", 1)), 0.1)
    tail.on_write_frame(wframe("b", 1, 1, rec("k", 2)), 0.1)
    tail.ready()
    tail.on_write_frame(wframe("b", 1, 2, rec("k", 1, b"stale")), 0.2)
    effects = tail.ready()
    assert store_view(tail, "k") == [(2, True)]
    assert [f.commits for f in ups(effects)] == [(("k", 1),)]


def test_duplicate_write_of_a_committed_version_makes_the_middle_echo_the_commit():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1)), 0.1)
    middle.on_ack_frame(cframe("c", 1, 0, ("k", 1)), 0.1)
    middle.ready()
    middle.on_write_frame(wframe("a", 1, 1, rec("k", 1)), 0.2)
    effects = middle.ready()
    assert store_view(middle, "k") == [(1, True)]
    assert downs(effects) == []
    assert [f.commits for f in ups(effects)] == [(("k", 1),)]


# ---------------------------------------------------------------------------------- reads


def middle_with(records: list[WriteRecord], commits: list[tuple[str, int]] = (), **kw: Any) -> NodeCore:
    node = join(B, topo(1, A, B, C), **kw)
    node.on_write_frame(wframe("a", 1, 0, *records), 0.1)
    if commits:
        node.on_ack_frame(cframe("c", 1, 0, *commits), 0.1)
    node.ready()
    return node


def test_strong_read_of_a_clean_key_is_answered_locally():
    node = middle_with([rec("k", 1, b"clean")], [("k", 1)])
    effects = read(node, "k", 0.2)
    assert peer_requests(effects) == []
    reply = only_reply(effects)
    assert reply.ok and reply.values == [b"clean"] and reply.header["version"] == 1
    assert only_reply(read(node, "never", 0.2)).code == "not_found"


def test_strong_read_of_a_dirty_key_asks_the_tail_and_answers_its_version():
    node = middle_with([rec("k", 1, b"old"), rec("k", 2, b"new")], [("k", 1)])
    effects = read(node, "k", 0.2, request_id="q")
    assert replies(effects) == []
    [(endpoint, header)] = peer_requests(effects)
    assert endpoint == "c/service"
    assert (header["type"], header["key"], header["epoch"]) == ("version", "k", 1)
    node.on_peer_reply(Ok(header["id"], version=2), [], 0.3)
    reply = only_reply(node.ready())
    assert reply.id == "q" and reply.values == [b"new"] and reply.header["version"] == 2
    assert node.counters["dirty_reads"] == 1


def test_dirty_reads_of_a_key_in_one_turn_share_one_version_query():
    node = middle_with([rec("k", 1, b"old"), rec("k", 2, b"new"), rec("j", 1, b"j1")], [("k", 1)])
    for request_id in ("q1", "q2"):
        node.on_request("reader", Read("k", id=request_id), 0.2)
    node.on_request("reader", Read("j", id="q3"), 0.2)
    queries = peer_requests(node.ready())
    assert sorted(header["key"] for _, header in queries) == ["j", "k"]  # one query per key
    k_query = next(header["id"] for _, header in queries if header["key"] == "k")
    node.on_peer_reply(Ok(k_query, version=1), [], 0.3)
    answered = {reply.id: (reply.header["version"], reply.values) for _, reply in replies(node.ready())}
    assert answered == {"q1": (1, [b"old"]), "q2": (1, [b"old"])}
    # A read that arrives while a query for its key is out asks again: the answer on its way may
    # predate a write acknowledged before this read began.
    node.on_request("reader", Read("j", id="q4"), 0.4)
    assert [header["key"] for _, header in peer_requests(node.ready())] == ["j"]
    assert node.counters["dirty_reads"] == 4


def test_strong_read_answers_the_older_version_the_tail_reports():
    node = middle_with([rec("k", 1, b"old"), rec("k", 2, b"new")], [("k", 1)])
    header = peer_requests(read(node, "k", 0.2))[0][1]
    node.on_peer_reply(Ok(header["id"], version=1), [], 0.3)
    reply = only_reply(node.ready())
    assert reply.values == [b"old"] and reply.header["version"] == 1


def test_strong_read_race_newer_commit_prunes_the_asked_version():
    # Only dirty versions when the read starts: the tail will report 1, but by then version 2 has
    # committed here and pruned 1. The answer must be version 2, never not_found.
    node = middle_with([rec("k", 1, b"first")])
    header = peer_requests(read(node, "k", 0.2))[0][1]
    node.on_write_frame(wframe("a", 1, 1, rec("k", 2, b"second")), 0.25)
    node.on_ack_frame(cframe("c", 1, 0, ("k", 2)), 0.25)
    node.ready()
    assert node.store.versions("k") == [2]
    node.on_peer_reply(Ok(header["id"], version=1), [], 0.3)
    reply = only_reply(node.ready())
    assert reply.ok and reply.values == [b"second"] and reply.header["version"] == 2


def test_strong_read_tail_reports_nothing_committed_gives_not_found():
    node = middle_with([rec("k", 1)])
    header = peer_requests(read(node, "k", 0.2))[0][1]
    node.on_peer_reply(Ok(header["id"], version=0), [], 0.3)
    assert only_reply(node.ready()).code == "not_found"


def test_strong_read_tail_error_or_silence_gives_unavailable():
    node = middle_with([rec("k", 1)])
    header = peer_requests(read(node, "k", 0.2, request_id="e"))[0][1]
    node.on_peer_reply(Error(header["id"], "not_tail", "no", epoch=1), [], 0.3)
    reply = only_reply(node.ready())
    assert (reply.id, reply.code) == ("e", "unavailable")
    read(node, "k", 0.4, request_id="t")
    node.tick(0.4 + TIMINGS.request_timeout - 0.01)
    assert replies(node.ready()) == []
    node.tick(0.4 + TIMINGS.request_timeout)
    reply = only_reply(node.ready())
    assert (reply.id, reply.code) == ("t", "unavailable")


@pytest.mark.parametrize("reply", [Ok(0), Malformed("bad_request", "malformed reply: Expected `int` >= 0", 0)])
def test_strong_read_with_a_malformed_version_reply_is_unavailable_at_once(reply):
    """A reply without a usable version (missing, or one the codec refused: -1, "2", 1.0, true)."""
    node = middle_with([rec("k", 1), rec("k", 2)])
    header = peer_requests(read(node, "k", 0.2))[0][1]
    reply = Ok(header["id"]) if isinstance(reply, Ok) else Malformed(reply.code, reply.message, header["id"])
    node.on_peer_reply(reply, [], 0.3)
    assert only_reply(node.ready()).code == "unavailable"


def test_strong_read_tail_error_with_newer_epoch_asks_for_the_topology():
    node = middle_with([rec("k", 1)])
    header = peer_requests(read(node, "k", 0.2))[0][1]
    node.on_peer_reply(Error(header["id"], "wrong_epoch", "no", epoch=5), [], 0.3)
    effects = node.ready()
    assert only_reply(effects).code == "unavailable"
    assert [h["type"] for endpoint, h in peer_requests(effects) if endpoint == "coordinator"] == ["topology"]


def test_eventual_read_answers_newest_committed_without_asking_the_tail():
    node = middle_with([rec("k", 1, b"committed"), rec("k", 2, b"dirty"), rec("j", 1)], [("k", 1)])
    effects = read(node, "k", 0.2, mode="eventual")
    assert peer_requests(effects) == []
    assert only_reply(effects).values == [b"committed"]
    effects = read(node, "j", 0.2, mode="eventual")
    assert peer_requests(effects) == [] and only_reply(effects).code == "not_found"


def test_dirty_read_local_fault_answers_dirty_values_without_the_tail():
    node = middle_with([rec("k", 1, b"committed"), rec("k", 2, b"dirty")], [("k", 1)],
                       unsafe=frozenset({"dirty_read_local"}))
    effects = read(node, "k", 0.2)
    assert peer_requests(effects) == []
    assert only_reply(effects).values == [b"dirty"]


def test_tail_answers_reads_from_its_committed_state():
    tail = join(C, topo(1, A, B, C))
    tail.on_write_frame(wframe("b", 1, 0, rec("k", 1, b"v")), 0.1)
    tail.ready()
    effects = read(tail, "k", 0.2)
    assert peer_requests(effects) == [] and only_reply(effects).values == [b"v"]


# ---------------------------------------------------------------------------------- not serving


def test_no_lease_means_unavailable():
    head = join(A, topo(1, A, B), lease=False)
    assert only_reply(read(head, "k", 0.1)).code == "unavailable"
    effects = write(head, "k", b"x", 0.1)
    assert only_reply(effects).code == "unavailable" and downs(effects) == []
    assert head.store.versions("k") == []


def test_lease_runs_from_the_heartbeat_send_time_and_expires():
    head = join(A, topo(1, A, B), lease=False)
    head.tick(1.0)
    heartbeat = call_id(head.ready(), "heartbeat")
    head.on_peer_reply(Ok(heartbeat, epoch=1, status="member", lease_ms=2000), [], 1.5)
    head.ready()
    assert head.serving(2.99)
    assert only_reply(read(head, "k", 2.99)).code == "not_found"
    assert not head.serving(3.0)
    assert only_reply(read(head, "k", 3.0)).code == "unavailable"
    assert only_reply(write(head, "k", b"x", 3.0)).code == "unavailable"


def test_heartbeat_reply_for_another_epoch_or_status_grants_no_lease():
    head = join(A, topo(1, A, B), lease=False)
    head.tick(0.0)
    first = call_id(head.ready(), "heartbeat")
    head.on_peer_reply(Ok(first, epoch=2, status="member", lease_ms=3000), [], 0.0)
    head.ready()
    head.tick(0.5)
    second = call_id(head.ready(), "heartbeat")
    head.on_peer_reply(Ok(second, epoch=1, status="learner", lease_ms=3000), [], 0.5)
    head.ready()
    assert not head.serving(0.6)


def test_unjoined_node_refuses_reads_and_writes():
    node = NodeCore(A, MemoryStore(), timings=TIMINGS)
    node.start(0.0)
    node.ready()
    assert only_reply(read(node, "k", 0.1)).code == "unavailable"
    reply = only_reply(write(node, "k", b"x", 0.1))
    assert reply.code == "not_head" and reply.header["head"] is None


def test_write_at_a_non_head_is_not_head_with_the_head_hint():
    middle = join(B, topo(1, A, B, C))
    effects = write(middle, "k", b"x", 0.1, request_id=7)
    reply = only_reply(effects)
    assert (reply.id, reply.code, reply.header["head"]) == (7, "not_head", "a/service")
    assert middle.store.versions("k") == [] and downs(effects) == []


def test_learner_refuses_reads_and_writes():
    learner = join(B, topo(2, A, learner=B))
    assert learner.role == "learner"
    assert only_reply(read(learner, "k", 0.1)).code == "unavailable"
    assert only_reply(read(learner, "k", 0.1, mode="eventual")).code == "unavailable"
    reply = only_reply(write(learner, "k", b"x", 0.1))
    assert reply.code == "not_head" and reply.header["head"] == "a/service"


def test_removed_node_fails_pending_writes_rejoins_and_refuses_requests():
    head = join(A, topo(1, A, B))
    write(head, "k", b"x", 0.1, request_id="pending")
    head.on_topology(topo(2, B), 0.2)
    effects = head.ready()
    reply = only_reply(effects)
    assert (reply.id, reply.code) == ("pending", "unknown_outcome")
    assert Relink(down=None, up=None) in effects
    assert [h["type"] for _, h in peer_requests(effects)] == ["join"]
    assert not head.joined and head.role == "joining"
    assert only_reply(read(head, "k", 0.3)).code == "unavailable"
    reply = only_reply(write(head, "k", b"y", 0.3))
    assert reply.code == "not_head" and reply.header["head"] == "b/service"


def test_pending_write_times_out_as_unknown_outcome():
    head = join(A, topo(1, A, B))
    write(head, "k", b"x", 1.0, request_id="slow")
    head.tick(1.0 + TIMINGS.write_timeout - 0.01)
    assert replies(head.ready()) == []
    head.tick(1.0 + TIMINGS.write_timeout)
    reply = only_reply(head.ready())
    assert (reply.id, reply.code) == ("slow", "unknown_outcome")


# ---------------------------------------------------------------------------------- batched requests


def test_read_many_answers_clean_keys_at_once_and_dirty_ones_after_the_tail():
    node = middle_with([rec("clean", 1, b"c"), rec("dirty", 1, b"old"), rec("dirty", 2, b"new"),
                        rec("gone", 1, b"", tombstone=True)], [("clean", 1), ("dirty", 1), ("gone", 1)])
    node.on_request("batcher", ReadMany(["clean", "dirty", "never", "gone"], id="b"), 0.2)
    effects = node.ready()
    assert replies(effects) == []  # one key waits for the tail: the batch waits with it
    [(endpoint, header)] = peer_requests(effects)
    assert (endpoint, header["type"], header["key"]) == ("c/service", "version", "dirty")
    node.on_peer_reply(Ok(header["id"], version=1), [], 0.3)
    [(client, reply)] = replies(node.ready())
    assert client == "batcher" and reply.id == "b"
    assert reply.header["results"] == [1, 1, "not_found", "not_found"] and reply.header["sizes"] == [1, 3, 0, 0]
    assert reply.values == [b"cold"]
    assert node.counters["reads"] == 4 and node.counters["dirty_reads"] == 1


def test_read_many_fails_per_key_when_the_tail_does_not_answer():
    node = middle_with([rec("clean", 1, b"c"), rec("dirty", 1, b"new")], [("clean", 1)])
    node.on_request("batcher", ReadMany(["clean", "dirty"], id="b"), 0.2)
    node.ready()
    node.tick(0.2 + TIMINGS.request_timeout + 0.01)
    reply = only_reply(node.ready())
    assert reply.header["results"] == [1, "unavailable"] and reply.values == [b"c"]


def test_write_many_commits_each_key_and_answers_when_all_are_committed():
    head = join(A, topo(1, A, B))
    write(head, "k", b"before", 0.1, request_id="single")
    head.on_request("batcher", WriteMany(["k", "j", "k"], (b"1", b"2", b"3"), id="b"), 0.1)
    effects = head.ready()
    [frame] = downs(effects)  # the batch's records travel in one frame
    assert [(r.key, r.version, r.value) for r in frame.records] == [("k", 2, b"1"), ("j", 1, b"2"), ("k", 3, b"3")]
    head.on_ack_frame(cframe("b", 1, 0, ("j", 1)), 0.2)
    assert replies(head.ready()) == []
    head.on_ack_frame(cframe("b", 1, 1, ("k", 3)), 0.3)
    answered = {reply.id: reply.header for _, reply in replies(head.ready())}
    assert answered["single"]["version"] == 1
    assert answered["b"]["results"] == [2, 1, 3] and "existed" not in answered["b"]


def test_write_many_is_refused_whole_or_unknown_per_key():
    middle = join(B, topo(1, A, B))
    middle.on_request("batcher", WriteMany(["k"], (b"1",), id="b"), 0.1)
    reply = only_reply(middle.ready())
    assert (reply.code, reply.header["head"]) == ("not_head", "a/service")
    assert middle.store.latest("k") is None

    head = join(A, topo(1, A, B))
    head.on_request("batcher", DeleteMany(["k", "j"], id="d"), 1.0)
    head.ready()
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 1.1)
    assert replies(head.ready()) == []
    head.tick(1.0 + TIMINGS.write_timeout)
    reply = only_reply(head.ready())
    assert reply.header["results"] == [1, "unknown_outcome"] and reply.header["existed"] == [False, None]


# ---------------------------------------------------------------------------------- version queries


def version_query(node: NodeCore, key: str, epoch: int, now: float) -> Answer:
    node.on_request("peer", VersionQuery(key, epoch, id=9), now)
    return only_reply(node.ready())


def test_version_query_at_the_tail():
    tail = join(C, topo(1, A, B, C))
    tail.on_write_frame(wframe("b", 1, 0, rec("k", 3)), 0.1)
    tail.ready()
    reply = version_query(tail, "k", 1, 0.2)
    assert reply.ok and reply.header["version"] == 3
    assert version_query(tail, "never", 1, 0.2).header["version"] == 0
    reply = version_query(tail, "k", 2, 0.2)
    assert reply.code == "wrong_epoch" and reply.header["epoch"] == 1


def test_version_query_at_a_non_tail_is_not_tail():
    middle = join(B, topo(1, A, B, C))
    reply = version_query(middle, "k", 1, 0.2)
    assert reply.code == "not_tail" and reply.header["epoch"] == 1


def test_version_query_at_an_unsynced_tail_is_not_tail():
    tail = join(C, topo(1, A, B, C))  # no sync frame from b yet
    assert version_query(tail, "k", 1, 0.2).code == "not_tail"


# ---------------------------------------------------------------------------------- link checks


def test_write_frames_from_a_non_predecessor_or_another_epoch_are_ignored():
    middle = join(B, topo(2, A, B, C))
    middle.on_write_frame(wframe("c", 2, 0, rec("k", 1)), 0.1)  # the successor, not the predecessor
    middle.on_write_frame(wframe("d", 2, 0, rec("k", 1)), 0.1)  # a stranger
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1)), 0.1)  # an old epoch
    effects = middle.ready()
    assert middle.store.versions("k") == []
    assert middle.counters["stale_chain_frames"] == 3
    assert downs(effects) == [] and peer_requests(effects) == []


def test_ack_frames_from_a_non_successor_or_another_epoch_are_ignored():
    head = join(A, topo(2, A, B, C))
    write(head, "k", b"x", 0.1)
    head.on_ack_frame(cframe("c", 2, 0, ("k", 1)), 0.2)  # not the successor
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 0.2)  # old epoch
    effects = head.ready()
    assert replies(effects) == [] and store_view(head, "k") == [(1, False)]
    assert head.counters["stale_chain_frames"] == 2


def test_chain_frame_with_a_higher_epoch_asks_the_coordinator_for_the_topology():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 3, 0, rec("k", 1)), 0.1)
    middle.on_ack_frame(cframe("c", 3, 0, ("k", 1)), 0.1)
    effects = middle.ready()
    assert middle.store.versions("k") == []
    assert middle.counters["stale_chain_frames"] == 2
    # One topology call at a time.
    assert [(e, h["type"]) for e, h in peer_requests(effects)] == [("coordinator", "topology")]


def test_gap_in_the_write_link_requests_a_resync_upstream():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1)), 0.1)
    middle.on_write_frame(wframe("a", 1, 1, rec("k", 2)), 0.2)
    assert [kind(f) for f in ups(middle.ready())] == []
    middle.on_write_frame(wframe("a", 1, 3, rec("k", 4)), 1.0)  # frame 2 was lost
    effects = middle.ready()
    assert [(kind(f), f.sender, f.epoch) for f in ups(effects)] == [("r", "b", 1)]
    assert middle.store.versions("k") == [1, 2, 4]  # the frame's records still count
    assert middle.counters["resyncs"] == 0


def test_resync_request_from_the_successor_resends_the_whole_sent_list_as_frame_zero():
    head = join(A, topo(1, A, B))
    write(head, "k", b"1", 0.1)
    write(head, "j", b"1", 0.1)
    write(head, "k", b"2", 0.1)
    head.on_ack_frame(cframe("b", 1, 0, ("j", 1)), 0.2)
    head.ready()
    head.on_ack_frame(rframe("b", 1, 1), 0.3)
    effects = head.ready()
    [frame] = downs(effects)
    assert (kind(frame), frame.seq, frame.epoch) == ("w", 0, 1)
    assert [(r.key, r.version) for r in frame.records] == [("k", 1), ("k", 2)]
    assert head.counters["resyncs"] == 1


def test_resync_request_does_not_make_the_next_commit_frame_look_like_a_gap():
    # The successor numbers "r" and "c" frames on one sequence, so after r(seq 0) its next commit
    # frame is seq 1: that is not a loss and must not trigger a second full resend.
    head = join(A, topo(1, A, B))
    write(head, "k", b"1", 0.1)
    write(head, "j", b"1", 0.1)
    head.on_ack_frame(rframe("b", 1, 0), 0.2)
    assert len(downs(head.ready())) == 1
    head.on_ack_frame(cframe("b", 1, 1, ("k", 1)), 0.3)
    assert downs(head.ready()) == []


def test_uncommitted_sent_entries_are_resent_after_resend_interval():
    head = join(A, topo(1, A, B))
    write(head, "k", b"x", 1.0)
    head.tick(1.0 + TIMINGS.resend_interval - 0.01)
    assert downs(head.ready()) == []
    head.tick(1.0 + TIMINGS.resend_interval)
    [frame] = downs(head.ready())
    assert [(r.key, r.version, r.value) for r in frame.records] == [("k", 1, b"x")]
    assert frame.seq > 0 and head.counters["resends"] == 1
    head.on_ack_frame(cframe("b", 1, 0, ("k", 1)), 2.1)
    head.ready()
    head.tick(5.0)
    assert downs(head.ready()) == []


# ---------------------------------------------------------------------------------- reconfiguration


def test_new_tail_commits_everything_sent_and_serves_only_after_sync():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1, b"one"), rec("j", 1)), 0.1)
    middle.ready()
    middle.on_topology(topo(2, A, B), 0.2)  # the tail c was removed
    assert ups(middle.ready()) == []
    # c may still serve on our earlier confirmation: no commit until the fence is over.
    assert store_view(middle, "k") == [(1, False)] and not middle.serving(0.3)
    middle.tick(FENCE_OVER)
    effects = middle.ready()
    assert middle.role == "tail"
    assert store_view(middle, "k") == [(1, True)] and store_view(middle, "j") == [(1, True)]
    commits = [c for f in ups(effects) if kind(f) == "c" for c in f.commits]
    assert sorted(commits) == [("j", 1), ("k", 1)]
    assert all(f.epoch == 2 for f in ups(effects))
    assert "r" in [kind(f) for f in ups(effects)]
    assert sent(middle) == []
    # The lease still holds, but no reads until frame 0 of epoch 2 from a arrives.
    assert not middle.serving(FENCE_OVER + 0.1)
    assert only_reply(read(middle, "k", FENCE_OVER + 0.1)).code == "unavailable"
    middle.on_write_frame(wframe("a", 1, 5, rec("k", 2)), FENCE_OVER + 0.1)  # old epoch: no sync
    middle.on_write_frame(wframe("a", 2, 1), FENCE_OVER + 0.1)  # not frame 0
    middle.ready()
    assert not middle.serving(FENCE_OVER + 0.1)
    middle.on_write_frame(wframe("a", 2, 0, rec("k", 2, b"two")), FENCE_OVER + 0.2)
    middle.ready()
    assert middle.serving(FENCE_OVER + 0.2)
    assert only_reply(read(middle, "k", FENCE_OVER + 0.2)).values == [b"two"]


def test_head_left_alone_commits_its_pending_writes_and_answers_them():
    head = join(A, topo(1, A, B))
    write(head, "k", b"x", 0.1, request_id="w1")
    head.on_topology(topo(2, A), 0.2)
    assert replies(head.ready()) == []  # fenced: b may still serve on our confirmation
    head.tick(FENCE_OVER)
    reply = only_reply(head.ready())
    assert reply.ok and (reply.id, reply.header["version"]) == ("w1", 1)
    assert store_view(head, "k") == [(1, True)]


def test_learner_copies_pages_follows_the_cursor_then_reports_caught_up():
    learner = NodeCore(B, MemoryStore(), timings=TIMINGS)
    learner.start(0.0)
    learner.ready()
    learner.on_peer_reply(Ok(1, topology=topo(2, A, learner=B)), [], 0.0)
    effects = learner.ready()
    assert Relink(down=None, up=A.ack_in) in effects
    [(endpoint, first)] = peer_requests(effects)
    assert endpoint == "a/service"
    assert (first["type"], first["after"], first["epoch"], first["limit"]) == ("catchup", None, 2, 2)
    learner.on_peer_reply(Ok(first["id"], items=[["j", 4, 0], ["k", 2, 0]], cursor="k"), [b"jv", b"kv"], 0.1)
    # The next page is asked for at once; this one is stored at a tick of a later turn, while the
    # source reads the next.
    assert learner.catchup.page_waiting
    learner.tick(0.1)  # the same turn: not yet
    [(endpoint, second)] = [r for r in peer_requests(learner.ready()) if r[1]["type"] == "catchup"]
    assert (endpoint, second["type"], second["after"], second["epoch"]) == ("a/service", "catchup", "k", 2)
    assert learner.store.versions("j") == [] and learner.catchup.page_waiting
    learner.tick(0.11)
    learner.ready()
    assert store_view(learner, "j") == [(4, True)] and store_view(learner, "k") == [(2, True)]
    assert not learner.catchup.page_waiting and not learner.caught_up
    learner.on_peer_reply(Ok(second["id"], items=[["z", 3, TOMBSTONE]], cursor=None), [b""], 0.2)
    assert "catchup" not in [h["type"] for _, h in peer_requests(learner.ready())]  # the last page
    learner.tick(0.21)
    learner.ready()
    assert learner.store.get("z", 3) is not None
    assert not learner.caught_up  # pages done, but the live stream from the tail is not in sync yet
    learner.tick(FENCE_OVER)  # its start-up fence ends: it asks the tail for a sync frame
    learner.ready()
    learner.on_write_frame(wframe("a", 2, 0), FENCE_OVER)
    learner.tick(FENCE_OVER + 0.01)
    [(endpoint, report)] = [r for r in peer_requests(learner.ready()) if r[1]["type"] == "caught_up"]
    assert endpoint == "coordinator"
    assert (report["type"], report["node_id"], report["epoch"]) == ("caught_up", "b", 2)
    assert learner.caught_up and learner.store.get("z", 3).tombstone
    assert learner.store.get("z", 3).committed
    # The report is repeated until the coordinator promotes the learner.
    learner.tick(FENCE_OVER + 1.0)
    assert "caught_up" in [h["type"] for _, h in peer_requests(learner.ready())]


def test_learner_ignores_a_catchup_page_of_an_older_epoch():
    learner = NodeCore(B, MemoryStore(), timings=TIMINGS)
    learner.start(0.0)
    learner.ready()
    learner.on_peer_reply(Ok(1, topology=topo(2, A, learner=B)), [], 0.0)
    first = call_id(learner.ready(), "catchup")
    learner.on_topology(topo(3, C, learner=B), 0.1)  # a new source: copying starts over
    second = call_id(learner.ready(), "catchup")
    learner.on_peer_reply(Ok(first, items=[["k", 1, 0]], cursor=None), [b"x"], 0.2)
    assert learner.store.versions("k") == [] and not learner.caught_up
    assert peer_requests(learner.ready()) == []
    assert second != first


def test_tail_forwards_committed_writes_to_the_learner_and_answers_once_it_has_them():
    node = join(A, topo(2, A, learner=B))
    effects = write(node, "k", b"x", 0.1)
    # Not committed, not answered, not readable until the learner holds it: no reader may see a
    # version that would be lost with this node.
    assert replies(effects) == [] and store_view(node, "k") == [(1, False)]
    assert only_reply(read(node, "k", 0.15)).code == "not_found"
    [frame] = downs(effects)
    assert frame.sender == "a" and frame.records == (WriteRecord("k", 1, b"x", True, False),)
    assert sent(node) == [("k", 1)]
    node.on_ack_frame(cframe("b", 2, 0, ("k", 1)), 0.2)
    assert only_reply(node.ready()).header["version"] == 1
    assert sent(node) == [] and store_view(node, "k") == [(1, True)]


def test_learner_stores_forwarded_writes_committed_and_acks_them():
    learner = join(B, topo(2, A, learner=B), lease=False)
    learner.on_write_frame(wframe("a", 2, 0, rec("k", 1, committed=True), rec("j", 2, committed=True)), 0.1)
    effects = learner.ready()
    assert store_view(learner, "k") == [(1, True)] and store_view(learner, "j") == [(2, True)]
    assert [(kind(f), f.commits) for f in ups(effects)] == [("c", (("k", 1), ("j", 2)))]
    assert downs(effects) == []


def test_promoted_learner_serves_after_the_sync_from_the_old_tail():
    learner = join(B, topo(2, A, learner=B), lease=False)
    learner.on_topology(topo(3, A, B), 0.5)
    learner.ready()
    assert learner.role == "tail" and learner.caught_up
    grant_lease(learner, 0.5)
    assert not learner.serving(0.5)
    learner.on_write_frame(wframe("a", 3, 0), 0.6)
    assert learner.serving(0.6)


def leftover_store() -> MemoryStore:
    store = MemoryStore()
    store.put("k", 1, b"committed", committed=True)
    store.put("k", 2, b"dirty")
    store.put("j", 1, b"dirty-only")
    return store


def test_node_restarted_as_learner_drops_leftover_dirty_versions():
    node = join(B, topo(5, A, learner=B), store=leftover_store(), lease=False)
    assert store_view(node, "k") == [(1, True)]
    assert node.store.versions("j") == []


def test_node_restarted_as_the_only_member_commits_leftover_dirty_versions():
    node = join(A, topo(5, A), store=leftover_store())
    assert store_view(node, "k") == [(2, True)] and store_view(node, "j") == [(1, True)]
    assert only_reply(read(node, "k", 0.1)).values == [b"dirty"]
    # The next write continues after the committed leftover.
    assert only_reply(write(node, "k", b"new", 0.1)).header["version"] == 3


# ---------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("malformed", [
    Malformed("bad_request", "header frame is not valid JSON"),
    Malformed("bad_request", "write needs a value frame after the header", 5),
    Malformed("too_large", "value is larger than 1048576 bytes", "w-6"),
])
def test_malformed_request_is_answered_counted_and_stores_nothing(malformed):
    node = join(A, topo(1, A))
    node.on_request("cl", malformed, 0.1)
    effects = node.ready()
    reply = only_reply(effects)
    assert not reply.ok and (reply.code, reply.id) == (malformed.code, malformed.id)
    assert reply.header["message"] == malformed.message
    assert node.store.versions("k") == [] and downs(effects) == []
    assert node.counters["bad_messages"] == 1


def test_malformed_chain_frame_is_counted_and_stores_nothing():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0), 0.1)
    middle.ready()
    middle.on_write_frame(Malformed("bad_request", "chain frame truncated inside record value"), 0.2)
    middle.on_ack_frame(Malformed("bad_request", "malformed chain header"), 0.2)
    effects = middle.ready()
    assert middle.counters["bad_messages"] == 2
    assert middle.store.versions("k") == [] and downs(effects) == [] and ups(effects) == []


def test_chain_frame_of_the_wrong_kind_for_the_link_is_counted():
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(cframe("a", 1, 0, ("k", 1)), 0.1)
    middle.on_ack_frame(wframe("c", 1, 0, rec("k", 1)), 0.1)
    middle.ready()
    assert middle.counters["bad_messages"] == 2 and middle.store.versions("k") == []


def learner_waiting_for_a_page() -> tuple[NodeCore, int]:
    learner = NodeCore(B, MemoryStore(), timings=TIMINGS)
    learner.start(0.0)
    learner.ready()
    learner.on_peer_reply(Ok(1, topology=topo(2, A, learner=B)), [], 0.0)
    return learner, call_id(learner.ready(), "catchup")


@pytest.mark.parametrize("reply, values", [
    (Ok(1, items=[("k", 1, 0)], cursor=None), []),  # values do not match the items
    (Malformed("bad_request", "malformed reply: Expected `int` >= 1 - at `$.items[0][1]`", 1), []),
])
def test_malformed_catchup_page_is_counted_stores_nothing_and_is_retried(reply, values):
    learner, page = learner_waiting_for_a_page()
    learner.on_peer_reply(msgspec.structs.replace(reply, id=page) if isinstance(reply, Ok)
                          else Malformed(reply.code, reply.message, page), values, 0.1)
    assert learner.counters["bad_messages"] == 1
    assert learner.store.versions("k") == [] and not learner.caught_up
    assert peer_requests(learner.ready()) == []
    learner.tick(0.25)
    assert [h["type"] for _, h in peer_requests(learner.ready()) if h["type"] == "catchup"] == ["catchup"]


def test_catchup_source_serves_committed_pages_in_its_epoch_only():
    tail = join(C, topo(2, A, B, C))
    tail.on_write_frame(wframe("b", 2, 0, rec("a", 1), rec("b", 2), rec("c", 3, tombstone=True)), 0.1)
    tail.ready()
    tail.on_request("learner", CatchupRequest(2, 2, None, id=1), 0.2)
    reply = only_reply(tail.ready())
    assert reply.header["items"] == [("a", 1, 0), ("b", 2, 0)] and reply.header["cursor"] == "b"
    assert reply.values == [b"a1", b"b2"]
    tail.on_request("learner", CatchupRequest(2, 2, "b", id=2), 0.2)
    reply = only_reply(tail.ready())
    assert reply.header["items"] == [("c", 3, TOMBSTONE)] and reply.header["cursor"] is None
    tail.on_request("learner", CatchupRequest(2, 1, None, id=3), 0.2)
    assert only_reply(tail.ready()).code == "wrong_epoch"


def test_catchup_pages_carry_the_source_estimate_of_how_far_they_reach():
    tail = join(C, topo(2, A, B, C))
    tail.on_write_frame(wframe("b", 2, 0, *(rec(k, 1) for k in "abcde")), 0.1)
    tail.ready()
    tail.on_request("learner", CatchupRequest(2, 2, None, id=1), 0.2)
    assert only_reply(tail.ready()).header["progress"] == 0.4
    tail.on_request("learner", CatchupRequest(2, 2, "d", id=2), 0.2)
    assert only_reply(tail.ready()).header["progress"] == 1.0
    # A store that cannot tell (as the simulator's): the field is left out.
    quiet = join(C, topo(2, A, B, C), store=MemoryStore(estimates=False))
    quiet.on_write_frame(wframe("b", 2, 0, rec("a", 1)), 0.1)
    quiet.ready()
    quiet.on_request("learner", CatchupRequest(2, 2, None, id=1), 0.2)
    assert "progress" not in only_reply(quiet.ready()).header


def copy_pages(learner: NodeCore, pages: list[tuple[int, float | None]], step: float) -> None:
    """Answer the learner's page requests: ``pages`` of (keys, progress), one every ``step`` s."""
    now, key = 0.0, 0
    for index, (count, progress) in enumerate(pages):
        page = call_id(learner.ready(), "catchup")
        items = [[f"k{key + i:06d}", 1, 0] for i in range(count)]
        key += count
        last = index == len(pages) - 1
        now += step
        extra = {} if progress is None else {"progress": progress}
        learner.on_peer_reply(Ok(page, items=items, cursor=None if last else items[-1][0], **extra),
                              [b"v"] * count, now)
        learner.tick(now + 1e-6)  # the next turn stores the page


def new_learner() -> NodeCore:
    learner = NodeCore(B, MemoryStore(), timings=TIMINGS)
    learner.start(0.0)
    learner.ready()
    learner.on_peer_reply(Ok(1, topology=topo(2, A, learner=B)), [], 0.0)
    return learner


def catchup_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("catch-up from")]


def test_learner_logs_catchup_progress_every_2_s_and_the_total_at_the_end(caplog):
    learner = new_learner()
    with caplog.at_level(logging.INFO, logger="zcraq.node"):
        # 10 pages of 1,000 keys, one every 0.5 s, the source's estimate growing by a tenth.
        copy_pages(learner, [(1000, (i + 1) / 10) for i in range(10)], 0.5)
    assert catchup_lines(caplog) == [
        "catch-up from a: 4,000 keys copied (40%), 2,000 keys/s",  # at 2.0 s
        "catch-up from a: 8,000 keys copied (80%), 2,000 keys/s",  # at 4.0 s
        "catch-up from a: 10,000 keys copied in 5.0 s (2,000 keys/s)",
    ]
    assert learner.catchup.copied == 10_000 and learner.catchup.fraction == 1.0


def test_catchup_progress_without_an_estimate_has_no_percentage(caplog):
    learner = new_learner()
    with caplog.at_level(logging.INFO, logger="zcraq.node"):
        copy_pages(learner, [(500, None)] * 6, 1.0)
    assert catchup_lines(caplog) == [
        "catch-up from a: 1,000 keys copied, 500 keys/s",
        "catch-up from a: 2,000 keys copied, 500 keys/s",
        "catch-up from a: 3,000 keys copied in 6.0 s (500 keys/s)",
    ]
    assert learner.catchup.fraction is None


def test_a_quick_catchup_logs_only_its_total(caplog):
    learner = new_learner()
    with caplog.at_level(logging.INFO, logger="zcraq.node"):
        copy_pages(learner, [(2, 0.5), (1, 1.0)], 0.25)
    assert catchup_lines(caplog) == ["catch-up from a: 3 keys copied in 0.5 s (6 keys/s)"]


def test_heartbeat_answered_unknown_node_makes_the_node_rejoin():
    head = join(A, topo(1, A, B))
    head.tick(1.0)
    heartbeat = call_id(head.ready(), "heartbeat")
    head.on_peer_reply(Error(heartbeat, "unknown_node", "join again"), [], 1.0)
    effects = head.ready()
    assert not head.joined and not head.serving(1.0)
    assert [h["type"] for _, h in peer_requests(effects)] == ["join"]


def test_unanswered_join_is_repeated_after_request_timeout():
    node = NodeCore(A, MemoryStore(), timings=TIMINGS)
    node.start(0.0)
    node.ready()
    node.tick(TIMINGS.request_timeout - 0.01)
    assert peer_requests(node.ready()) == []
    node.tick(TIMINGS.request_timeout)
    assert [h["type"] for _, h in peer_requests(node.ready())] == ["join"]
    node.on_peer_reply(Error(1, "bad_request", "endpoint clash"), [], 2.5)
    assert not node.joined


# ---------------------------------------------------------------------------------- defense in depth


def test_a_record_held_with_another_value_is_refused_counted_and_logged(caplog):
    tail = join(C, topo(1, A, B, C))
    tail.on_write_frame(wframe("b", 1, 0, rec("k", 1, b"forged")), 0.1)
    tail.ready()
    with caplog.at_level(logging.ERROR, logger="zcraq"):
        tail.on_write_frame(wframe("b", 1, 1, rec("k", 1, b"real")), 0.2)
        effects = tail.ready()
    assert ups(effects) == [] and tail.store.get("k", 1).value == b"forged"
    assert tail.counters["conflicting_records"] == 1
    assert any("another value" in r.getMessage() for r in caplog.records)
    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1, b"one")), 0.1)
    middle.ready()
    middle.on_write_frame(wframe("a", 1, 1, rec("k", 1, b"two")), 0.2)
    effects = middle.ready()
    assert downs(effects) == [] and ups(effects) == [] and middle.counters["conflicting_records"] == 1
    # A repeat with the same value is an ordinary duplicate.
    middle.on_write_frame(wframe("a", 1, 2, rec("k", 1, b"one")), 0.3)
    middle.ready()
    assert middle.counters["conflicting_records"] == 1


def test_a_record_too_far_beyond_the_versions_held_is_refused():
    from zcraq.nodecore.replication import MAX_VERSION_STEP

    middle = join(B, topo(1, A, B, C))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 3)), 0.1)
    middle.ready()
    middle.on_write_frame(wframe("a", 1, 1, rec("k", 3 + MAX_VERSION_STEP + 1), rec("j", 2**64 - 1)), 0.2)
    effects = middle.ready()
    assert middle.store.versions("k") == [3] and middle.store.versions("j") == []
    assert middle.counters["conflicting_records"] == 2
    assert [r.version for f in downs(effects) for r in f.records] == []
    # Within the step, and at a learner still copying (pages bring the keys later), records count.
    middle.on_write_frame(wframe("a", 1, 2, rec("k", 3 + MAX_VERSION_STEP)), 0.3)
    assert middle.store.versions("k") == [3, 3 + MAX_VERSION_STEP]
    learner = NodeCore(B, MemoryStore(), timings=TIMINGS)
    learner.start(-1.0)
    learner.ready()
    learner.on_peer_reply(Ok(1, topology=topo(2, A, learner=B)), [], 0.0)
    learner.ready()
    learner.on_write_frame(wframe("a", 2, 0, rec("j", 5 * MAX_VERSION_STEP, committed=True)), 0.1)
    assert learner.store.versions("j") == [5 * MAX_VERSION_STEP]


def test_a_commit_for_a_version_the_head_never_assigned_is_counted_and_logged(caplog):
    head = join(A, topo(1, A, B))
    write(head, "k", b"x", 0.1)
    with caplog.at_level(logging.ERROR, logger="zcraq"):
        head.on_ack_frame(cframe("b", 1, 0, ("k", 2**64 - 1)), 0.2)
        head.ready()
    assert head.counters["foreign_commits"] == 1
    assert any("never assigned" in r.getMessage() for r in caplog.records)
    assert head.store.latest("k").version == 1


# ---------------------------------------------------------------------------------- authorization


def caller(*roles: str, key: str = "k" * 40) -> Caller:
    return Caller(key, frozenset(Role(r) for r in roles))


def keyed(name: str) -> Member:
    return Member(name, f"{name}/service", f"{name}/write", f"{name}/ack", name[0] * 40)


def test_requests_are_refused_by_role_with_forbidden():
    ka, kb, kc = keyed("a"), keyed("b"), keyed("c")
    node = join(kb, topo(1, ka, kb, kc))
    node.on_request("cl", Read("k", id=1), 0.1, caller("node", key=ka.key))
    node.on_request("cl", VersionQuery("k", 1, id=2), 0.1, caller("client"))
    node.on_request("cl", Confirm("a", 1, id=3), 0.1, caller("node", key=kc.key))  # claims to be a
    effects = node.ready()
    assert [(a.id, a.code) for _, a in replies(effects)] == [(1, "forbidden"), (2, "forbidden"), (3, "forbidden")]
    assert node.counters["forbidden"] == 3
    node.on_request("cl", Read("k", id=4), 0.1, caller("client"))
    node.on_request("cl", Confirm("a", 1, id=5), 0.1, caller("node", key=ka.key))
    assert [(a.id, a.code) for _, a in replies(node.ready())] == [(4, "not_found"), (5, None)]


def test_chain_frames_count_only_from_the_key_of_the_node_they_name():
    ka, kb, kc = keyed("a"), keyed("b"), keyed("c")
    middle = join(kb, topo(1, ka, kb, kc))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1)), 0.1, caller("node", key=kc.key))
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1)), 0.1, caller("client", key=ka.key))
    assert middle.store.versions("k") == [] and middle.counters["forbidden"] == 2
    middle.on_write_frame(wframe("a", 1, 0, rec("k", 1)), 0.1, caller("node", key=ka.key))
    assert middle.store.versions("k") == [1]


def test_confirm_rounds_keep_to_quarters_of_the_clock_so_replicas_of_one_node_ask_together():
    from zcraq.nodecore.leases import Leases

    early, late = Leases(1.0), Leases(1.0)
    assert early.confirm_round_due(0.01) and late.confirm_round_due(0.2)
    assert not early.confirm_round_due(0.2) and not late.confirm_round_due(0.24)
    assert early.confirm_round_due(0.25) and late.confirm_round_due(0.25)  # the next quarter: both
    assert not early.confirm_round_due(0.49) and early.confirm_round_due(0.5)


def test_a_one_chain_node_refuses_confirm_many_clearly():
    core = NodeCore(Member("n1", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"), MemoryStore())
    core.on_request("c", ConfirmMany("n2", [(0, 1)], id=4), 0.0)
    [reply] = [e.reply for e in core.ready() if isinstance(e, Respond)]
    assert isinstance(reply, Error) and reply.code == "bad_request" and "partitioned" in reply.message
