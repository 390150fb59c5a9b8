"""CoordinatorCore driven directly: requests in with explicit times, effects out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from zcraq import wire
from zcraq.coordcore import CoordinatorCore, CoordinatorTimings
from zcraq.effects import PeerRequest, Persist, Publish, Reply
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(60)

TIMINGS = CoordinatorTimings(lease=3.0, republish_interval=1.0, request_timeout=5.0)
REMOVAL = TIMINGS.removal_after  # 3.3


def ACCEPT_ANY(endpoint: str) -> None:  # noqa: N802 - a constant-like policy
    """These tests name endpoints "a/service"; real endpoints are checked by the default."""



def member(name: str) -> Member:
    return Member(name, f"{name}/service", f"{name}/write", f"{name}/ack")


A, B, C, D = (member(name) for name in "abcd")


def ids(members: tuple[Member, ...]) -> list[str]:
    return [m.id for m in members]


def replies(effects: list[Any]) -> list[tuple[Any, wire.Reply]]:
    return [(e.client, wire.decode_reply(e.frames)) for e in effects if isinstance(e, Reply)]


def only_reply(effects: list[Any]) -> wire.Reply:
    found = replies(effects)
    assert len(found) == 1, found
    return found[0][1]


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


def request(core: CoordinatorCore, kind: str, now: float, value: bytes | None = None, client: Any = "cl",
            request_id: Any = 1, **fields: Any) -> list[Any]:
    core.on_request(client, wire.encode_request(kind, request_id, value, **fields), now)
    return core.drain()


def join(core: CoordinatorCore, node: Member, now: float) -> wire.Reply:
    return only_reply(request(core, "join", now, node=node.to_dict(), protocol=wire.PROTOCOL_VERSION))


def heartbeat(core: CoordinatorCore, node_id: str, now: float) -> wire.Reply:
    return only_reply(request(core, "heartbeat", now, node_id=node_id, epoch=core.topology.epoch,
                              protocol=wire.PROTOCOL_VERSION))


def chain(*nodes: Member, now: float = 0.0) -> CoordinatorCore:
    """A coordinator whose chain is ``nodes`` in order, built through joins and catch-ups."""
    core = CoordinatorCore("coord/pub", None, now, timings=TIMINGS, check_endpoint=ACCEPT_ANY)
    for node in nodes:
        join(core, node, now)
        if core.topology.learner is not None:
            request(core, "caught_up", now, node_id=node.id, epoch=core.topology.epoch)
    assert ids(core.topology.members) == [n.id for n in nodes]
    return core


# ---------------------------------------------------------------------------------- membership


def test_first_join_makes_the_sole_member_at_epoch_1():
    core = CoordinatorCore("coord/pub", None, 0.0, timings=TIMINGS, check_endpoint=ACCEPT_ANY)
    effects = request(core, "join", 0.0, node=A.to_dict(), request_id="j", protocol=wire.PROTOCOL_VERSION)
    assert kinds(effects) == ["Persist", "Publish", "Reply"]
    assert effects[0].state == {"topology": core.topology.to_dict()}
    assert effects[1].topology == core.topology == Topology(1, (A,))
    reply = only_reply(effects)
    assert reply.ok and reply.id == "j"
    assert Topology.from_dict(reply.header["topology"]) == Topology(1, (A,))
    assert reply.header["publish"] == "coord/pub" and reply.header["lease_ms"] == 3000


def test_next_joins_become_the_learner_one_at_a_time():
    core = chain(A)
    assert join(core, B, 0.1).ok
    assert core.topology == Topology(2, (A,), B)
    effects = request(core, "join", 0.2, node=C.to_dict(), protocol=wire.PROTOCOL_VERSION)
    reply = only_reply(effects)
    assert reply.code == "busy" and kinds(effects) == ["Reply"]
    assert core.topology == Topology(2, (A,), B)


def test_caught_up_in_the_right_epoch_promotes_the_learner_to_tail():
    core = chain(A)
    join(core, B, 0.1)
    effects = request(core, "caught_up", 0.2, node_id="b", epoch=2)
    assert kinds(effects) == ["Persist", "Publish", "Reply"]
    assert core.topology == Topology(3, (A, B))
    assert effects[0].state["topology"]["epoch"] == 3 and effects[1].topology.epoch == 3
    reply = only_reply(effects)
    assert reply.ok and reply.header["epoch"] == 3
    # A repeated report from the promoted node is simply acknowledged.
    effects = request(core, "caught_up", 0.3, node_id="b", epoch=2)
    assert kinds(effects) == ["Reply"] and only_reply(effects).ok and core.topology.epoch == 3


def test_caught_up_in_a_wrong_epoch_or_from_a_non_learner_is_refused():
    core = chain(A)
    join(core, B, 0.1)
    for node_id, epoch in (("b", 1), ("b", 3), ("c", 2)):
        effects = request(core, "caught_up", 0.2, node_id=node_id, epoch=epoch)
        reply = only_reply(effects)
        assert reply.code == "wrong_epoch" and reply.header["epoch"] == 2
        assert kinds(effects) == ["Reply"]
    assert core.topology == Topology(2, (A,), B)


def test_heartbeat_grants_a_lease_to_members_and_refuses_unknown_nodes():
    core = chain(A)
    join(core, B, 0.1)
    reply = heartbeat(core, "a", 0.5)
    assert reply.ok and reply.header["status"] == "member"
    assert reply.header["lease_ms"] == 3000 and reply.header["epoch"] == 2
    assert heartbeat(core, "b", 0.5).header["status"] == "learner"
    reply = heartbeat(core, "zz", 0.5)
    assert not reply.ok and reply.code == "unknown_node"


def test_silent_member_is_removed_only_after_removal_after():
    core = chain(A, B, C, now=0.0)
    start = 0.0  # last heard from at the joins
    heartbeat(core, "a", start + REMOVAL)
    heartbeat(core, "c", start + REMOVAL)
    core.tick(start + REMOVAL)
    assert "Persist" not in kinds(core.drain()) and core.topology.epoch == 5
    core.tick(start + REMOVAL + 0.01)
    effects = core.drain()
    assert kinds(effects)[:2] == ["Persist", "Publish"]
    assert core.topology == Topology(6, (A, C))
    assert core.counters["removals"] == 1


def test_last_member_is_never_removed():
    core = chain(A)
    core.tick(1000.0)
    assert [k for k in kinds(core.drain()) if k == "Persist"] == []
    assert core.topology == Topology(1, (A,))
    core.tick(2000.0)
    assert core.topology == Topology(1, (A,))


def test_all_members_silent_keeps_the_last_one():
    core = chain(A, B)
    core.tick(100.0)
    core.drain()
    assert ids(core.topology.members) == ["b"]


def test_silent_learner_is_dropped():
    core = chain(A)
    join(core, B, 1.0)
    heartbeat(core, "a", 1.0 + REMOVAL + 0.5)
    core.tick(1.0 + REMOVAL + 0.5)
    assert "Persist" in kinds(core.drain())
    assert core.topology == Topology(3, (A,))


def test_restarted_coordinator_removes_nobody_until_removal_after_since_its_start():
    persisted = {"topology": Topology(7, (A, B, C), D).to_dict()}
    start = 1000.0  # every node has been silent for far longer than a lease
    core = CoordinatorCore("coord/pub", persisted, start, timings=TIMINGS, check_endpoint=ACCEPT_ANY)
    assert core.topology == Topology(7, (A, B, C), D)
    # A full lease for the previous run's leases, plus time for the nodes to reconnect.
    silent_limit = REMOVAL + TIMINGS.restart_grace
    for now in (start, start + 1.0, start + REMOVAL, start + silent_limit):
        core.tick(now)
        assert "Persist" not in kinds(core.drain())
    assert core.topology.epoch == 7
    heartbeat(core, "b", start + silent_limit)
    core.tick(start + silent_limit + 0.01)
    core.drain()
    assert core.topology.members == (B,) and core.topology.learner is None


def test_leave_removes_a_member_or_learner_at_once():
    core = chain(A, B, C)
    effects = request(core, "leave", 0.1, node_id="b")
    assert kinds(effects) == ["Persist", "Publish", "Reply"]
    assert core.topology == Topology(6, (A, C))
    assert only_reply(effects).header["epoch"] == 6
    join(core, D, 0.2)
    request(core, "leave", 0.3, node_id="d")
    assert core.topology == Topology(8, (A, C))
    effects = request(core, "leave", 0.4, node_id="nobody")
    assert kinds(effects) == ["Reply"] and only_reply(effects).ok


def test_join_of_a_listed_member_removes_it_and_readds_it_as_learner():
    core = chain(A, B, C)
    reply = join(core, B, 0.1)
    assert reply.ok
    assert core.topology.members == (A, C) and core.topology.learner == B
    assert core.topology.epoch == 7  # one epoch for the removal, one for the new learner
    assert Topology.from_dict(reply.header["topology"]) == core.topology


def test_join_of_the_listed_learner_readmits_it_as_learner():
    core = chain(A)
    join(core, B, 0.1)
    assert join(core, B, 0.2).ok
    assert core.topology.members == (A,) and core.topology.learner == B and core.topology.epoch == 4


def test_join_of_the_restarted_last_member_makes_it_the_sole_member_again():
    core = chain(A)
    reply = join(core, A, 0.1)
    assert reply.ok
    assert core.topology.members == (A,) and core.topology.learner is None
    assert core.topology.epoch > 1


def test_restart_of_the_last_member_never_persists_or_publishes_an_empty_chain():
    # The last member holds the only copy of the data: a persisted empty chain would let an empty
    # node become the sole member if the coordinator crashed before the next Persist.
    core = chain(A)
    effects = request(core, "join", 0.1, node=A.to_dict(), protocol=wire.PROTOCOL_VERSION)
    assert only_reply(effects).ok
    persisted = [e.state["topology"]["members"] for e in effects if isinstance(e, Persist)]
    published = [e.topology.members for e in effects if isinstance(e, Publish)]
    assert persisted and all(persisted)
    assert published and all(published)


def test_join_with_an_endpoint_clash_is_bad_request():
    core = chain(A)
    clash = Member("x", "x/service", A.write_in, "x/ack")
    effects = request(core, "join", 0.1, node=clash.to_dict(), protocol=wire.PROTOCOL_VERSION)
    reply = only_reply(effects)
    assert reply.code == "bad_request" and A.write_in in reply.message
    assert kinds(effects) == ["Reply"] and core.topology == Topology(1, (A,))
    # A node may keep its own endpoints when it rejoins.
    assert join(core, A, 0.2).ok


@pytest.mark.parametrize("node", [
    {"id": "x", "service": "x/service", "write_in": "x/write"},
    {"id": "x" * 65, "service": "x/service", "write_in": "x/write", "ack_in": "x/ack"},
    {"id": "", "service": "x/service", "write_in": "x/write", "ack_in": "x/ack"},
])
def test_join_with_a_bad_member_is_bad_request(node):
    core = chain(A)
    effects = request(core, "join", 0.1, node=node, protocol=wire.PROTOCOL_VERSION)
    assert only_reply(effects).code == "bad_request" and kinds(effects) == ["Reply"]


@pytest.mark.parametrize("protocol", [wire.PROTOCOL_VERSION - 1, wire.PROTOCOL_VERSION + 1])
def test_join_speaking_another_protocol_version_is_refused(protocol):
    """Processes of different releases must never share a chain: the join says which protocol the
    node speaks, and a different one is refused before anything changes."""
    core = chain(A)
    effects = request(core, "join", 0.1, node=B.to_dict(), protocol=protocol)
    reply = only_reply(effects)
    assert reply.code == "incompatible" and str(protocol) in reply.message
    assert kinds(effects) == ["Reply"] and core.topology == Topology(1, (A,))
    effects = request(core, "join", 0.1, node=B.to_dict())  # a release from before the version field
    assert only_reply(effects).code == "bad_request" and core.topology == Topology(1, (A,))


def test_heartbeat_speaking_another_protocol_version_renews_nothing():
    """A coordinator restarted on another release must not keep nodes of the old one in its chain:
    their heartbeats are refused, so they are removed as silent once their lease is over."""
    core = chain(A, B)
    epoch = core.topology.epoch
    for t in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        assert heartbeat(core, A.id, t).ok
        reply = only_reply(request(core, "heartbeat", t, node_id=B.id, epoch=epoch,
                                   protocol=wire.PROTOCOL_VERSION + 1))
        assert reply.code == "incompatible"
        core.tick(t)
        core.drain()
    assert ids(core.topology.members) == [A.id] and core.topology.epoch > epoch


def test_malformed_request_is_bad_request():
    core = chain(A)
    core.on_request("cl", [b"{not json"], 0.1)
    assert only_reply(core.drain()).code == "bad_request"
    effects = request(core, "read", 0.1, key="k", request_id=4)  # nodes serve reads, not the coordinator
    reply = only_reply(effects)
    assert (reply.id, reply.code) == (4, "bad_request")
    assert core.counters["bad_messages"] == 2


# ---------------------------------------------------------------------------------- client writes


def test_write_is_forwarded_to_the_head_and_its_reply_relayed_with_the_client_id():
    core = chain(A, B)
    effects = request(core, "write", 0.1, b"value", client="client-9", request_id="mine", key="k")
    [forward] = [e for e in effects if isinstance(e, PeerRequest)]
    assert forward.endpoint == "a/service"
    header = orjson.loads(forward.frames[0])
    assert (header["type"], header["key"]) == ("write", "k") and forward.frames[1:] == [b"value"]
    assert replies(effects) == []
    core.on_peer_reply(wire.encode_reply(header["id"], {"version": 4}), 0.2)
    [(client, reply)] = replies(core.drain())
    assert client == "client-9" and reply.ok and reply.id == "mine" and reply.header["version"] == 4


def test_delete_is_forwarded_and_an_error_from_the_head_is_relayed():
    core = chain(A)
    effects = request(core, "delete", 0.1, client="c2", request_id=77, key="k")
    [forward] = [e for e in effects if isinstance(e, PeerRequest)]
    header = orjson.loads(forward.frames[0])
    assert (header["type"], header["key"]) == ("delete", "k") and len(forward.frames) == 1
    core.on_peer_reply(wire.encode_error(header["id"], "unavailable", "no lease"), 0.2)
    [(client, reply)] = replies(core.drain())
    assert (client, reply.id, reply.code) == ("c2", 77, "unavailable")


def test_forwarded_write_without_an_answer_is_unknown_outcome():
    core = chain(A)
    effects = request(core, "write", 1.0, b"v", client="c3", request_id="late", key="k")
    forward_id = orjson.loads(effects[0].frames[0])["id"]
    core.tick(1.0 + TIMINGS.request_timeout - 0.01)
    assert replies(core.drain()) == []
    core.tick(1.0 + TIMINGS.request_timeout)
    [(client, reply)] = replies(core.drain())
    assert (client, reply.id, reply.code) == ("c3", "late", "unknown_outcome")
    core.on_peer_reply(wire.encode_reply(forward_id, {"version": 1}), 7.0)  # too late: dropped
    assert replies(core.drain()) == []


def test_write_with_no_members_is_unavailable():
    core = CoordinatorCore("coord/pub", None, 0.0, timings=TIMINGS, check_endpoint=ACCEPT_ANY)
    effects = request(core, "write", 0.1, b"v", request_id=3, key="k")
    reply = only_reply(effects)
    assert (reply.id, reply.code) == (3, "unavailable")
    assert [e for e in effects if isinstance(e, PeerRequest)] == []


def test_malformed_reply_from_the_head_is_counted():
    core = chain(A)
    request(core, "write", 0.1, b"v", key="k")
    core.on_peer_reply([b"garbage"], 0.2)
    assert replies(core.drain()) == [] and core.counters["bad_messages"] == 1


# ---------------------------------------------------------------------------------- publishing


def test_topology_is_republished_every_republish_interval():
    core = chain(A)
    published = []
    for step in range(31):
        now = 5.0 + step / 10
        core.tick(now)
        published += [round(now, 2) for e in core.drain() if isinstance(e, Publish)]
    assert published == [5.0, 6.0, 7.0, 8.0]


def test_topology_request_returns_the_current_topology():
    core = chain(A, B)
    reply = only_reply(request(core, "topology", 0.1))
    assert Topology.from_dict(reply.header["topology"]) == core.topology


def test_join_with_an_unusable_endpoint_is_refused_by_default():
    core = CoordinatorCore("tcp://127.0.0.1:7001", None, 0.0, timings=TIMINGS)
    node = {"id": "x", "service": "tcp://127.0.0.1:9", "write_in": "garbage", "ack_in": "tcp://127.0.0.1:11"}
    core.on_request("cl", wire.encode_request("join", 1, node=node, protocol=wire.PROTOCOL_VERSION), 0.0)
    [effect] = core.drain()
    reply = wire.decode_reply(effect.frames)
    assert reply.code == "bad_request" and "garbage" in reply.message
    assert core.topology.epoch == 0
