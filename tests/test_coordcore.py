"""CoordinatorCore driven directly: typed requests in with explicit times, effects out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from zcraq.callers import Caller, Role
from zcraq.coordcore import CoordinatorCore, CoordinatorTimings
from zcraq.effects import PeerRequest, Publish, Respond
from zcraq.messages import (PROTOCOL_VERSION, CaughtUp, Delete, Error, Heartbeat, Join, Leave, Malformed, Ok,
                            StatusRequest, TopologyRequest, Write)
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(60)

TIMINGS = CoordinatorTimings(lease=3.0, republish_interval=1.0, request_timeout=5.0)
REMOVAL = TIMINGS.removal_after  # 3.3


def ACCEPT_ANY(endpoint: str) -> None:  # noqa: N802 - a constant-like policy
    """These tests name endpoints "a/service"; real endpoints are checked by the default."""


def member(name: str) -> Member:
    return Member(name, f"{name}/service", f"{name}/write", f"{name}/ack")


A, B, C, D = (member(name) for name in "abcd")


@dataclass
class Persisted:
    """Stands, in an effect list, for a save the core made before handing the effects over."""

    topology: Topology

    @property
    def state(self) -> dict[str, Any]:
        return {"topology": self.topology.to_dict()}


class RecordingState:
    """A StateStore that remembers every save."""

    def __init__(self, topology: Topology | None = None) -> None:
        self.topology = topology
        self.saves: list[Topology] = []

    def load(self) -> Topology | None:
        return self.topology

    def save(self, topology: Topology) -> None:
        self.saves.append(topology)
        self.topology = topology


def new_core(state: Topology | None = None, now: float = 0.0, **options: Any) -> CoordinatorCore:
    core = CoordinatorCore("coord/pub", RecordingState(state), now, **{"timings": TIMINGS,
                                                                         "check_endpoint": ACCEPT_ANY, **options})
    return core


def drain(core: CoordinatorCore) -> list[Any]:
    """The turn's effects, preceded by what ready() saved first."""
    state = core.state
    assert isinstance(state, RecordingState)
    before = len(state.saves)
    effects = core.ready()
    return [Persisted(t) for t in state.saves[before:]] + effects


def ids(members: tuple[Member, ...]) -> list[str]:
    return [m.id for m in members]


class Answer:
    def __init__(self, effect: Respond) -> None:
        self.ok = type(effect.reply) is Ok
        self.id = effect.reply.id
        self.header = msgspec.to_builtins(effect.reply)
        self.code = self.header.get("code")
        self.message = self.header.get("message", "")
        self.values = list(effect.values)


def replies(effects: list[Any]) -> list[tuple[Any, Answer]]:
    return [(e.client, Answer(e)) for e in effects if isinstance(e, Respond)]


def only_reply(effects: list[Any]) -> Answer:
    found = replies(effects)
    assert len(found) == 1, found
    return found[0][1]


def kinds(effects: list[Any]) -> list[str]:
    return [type(e).__name__ for e in effects]


REQUESTS = {"join": Join, "heartbeat": Heartbeat, "caught_up": CaughtUp, "leave": Leave, "topology": TopologyRequest,
            "status": StatusRequest, "write": Write, "delete": Delete}


def request(core: CoordinatorCore, kind: str, now: float, value: bytes | None = None, client: Any = "cl",
            request_id: Any = 1, **fields: Any) -> list[Any]:
    if kind == "write":
        fields["value"] = value
    core.on_request(client, REQUESTS[kind](**fields, id=request_id), now)
    return drain(core)


def join(core: CoordinatorCore, node: Member, now: float) -> Answer:
    return only_reply(request(core, "join", now, node=node.to_dict(), protocol=PROTOCOL_VERSION))


def heartbeat(core: CoordinatorCore, node_id: str, now: float) -> Answer:
    return only_reply(request(core, "heartbeat", now, node_id=node_id, epoch=core.topology.epoch,
                              protocol=PROTOCOL_VERSION))


def chain(*nodes: Member, now: float = 0.0) -> CoordinatorCore:
    """A coordinator whose chain is ``nodes`` in order, built through joins and catch-ups."""
    core = new_core(now=now)
    for node in nodes:
        join(core, node, now)
        if core.topology.learner is not None:
            request(core, "caught_up", now, node_id=node.id, epoch=core.topology.epoch)
    assert ids(core.topology.members) == [n.id for n in nodes]
    return core


# ---------------------------------------------------------------------------------- membership


def test_first_join_makes_the_sole_member_at_epoch_1():
    core = new_core()
    effects = request(core, "join", 0.0, node=A.to_dict(), request_id="j", protocol=PROTOCOL_VERSION)
    assert kinds(effects) == ["Persisted", "Publish", "Respond"]
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
    effects = request(core, "join", 0.2, node=C.to_dict(), protocol=PROTOCOL_VERSION)
    reply = only_reply(effects)
    assert reply.code == "busy" and kinds(effects) == ["Respond"]
    assert core.topology == Topology(2, (A,), B)


def test_caught_up_in_the_right_epoch_promotes_the_learner_to_tail():
    core = chain(A)
    join(core, B, 0.1)
    effects = request(core, "caught_up", 0.2, node_id="b", epoch=2)
    assert kinds(effects) == ["Persisted", "Publish", "Respond"]
    assert core.topology == Topology(3, (A, B))
    assert effects[0].state["topology"]["epoch"] == 3 and effects[1].topology.epoch == 3
    reply = only_reply(effects)
    assert reply.ok and reply.header["epoch"] == 3
    # A repeated report from the promoted node is simply acknowledged.
    effects = request(core, "caught_up", 0.3, node_id="b", epoch=2)
    assert kinds(effects) == ["Respond"] and only_reply(effects).ok and core.topology.epoch == 3


def test_caught_up_in_a_wrong_epoch_or_from_a_non_learner_is_refused():
    core = chain(A)
    join(core, B, 0.1)
    for node_id, epoch in (("b", 1), ("b", 3), ("c", 2)):
        effects = request(core, "caught_up", 0.2, node_id=node_id, epoch=epoch)
        reply = only_reply(effects)
        assert reply.code == "wrong_epoch" and reply.header["epoch"] == 2
        assert kinds(effects) == ["Respond"]
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
    assert "Persisted" not in kinds(drain(core)) and core.topology.epoch == 5
    core.tick(start + REMOVAL + 0.01)
    effects = drain(core)
    assert kinds(effects)[:2] == ["Persisted", "Publish"]
    assert core.topology == Topology(6, (A, C))
    assert core.counters["removals"] == 1


def test_a_retired_member_loses_its_lease_and_goes_once_it_has_surely_run_out():
    """Placement takes replicas off live nodes: removed at once, one that missed its removal could
    serve reads on its lease while the others commit."""
    core = chain(A, B, C, now=0.0)
    heard = 1.0
    for node in "abc":
        heartbeat(core, node, heard)
    drain(core)
    core.retire("b", "moved by placement")
    assert kinds(drain(core)) == ["Publish"]  # a partition table shows who is retiring
    core.retire("b", "asked again")  # idempotent
    assert "lease_ms" not in heartbeat(core, "b", heard + 0.5).header  # no lease, not a sign of life
    assert heartbeat(core, "b", heard + 0.5).header["status"] == "member"
    heartbeat(core, "a", heard + REMOVAL)
    heartbeat(core, "c", heard + REMOVAL)
    core.tick(heard + REMOVAL)  # its last lease, granted at `heard`, may still run
    assert ids(core.topology.members) == ["a", "b", "c"] and set(core.retiring) == {"b"}
    core.tick(heard + REMOVAL + 0.01)
    assert ids(core.topology.members) == ["a", "c"] and core.retiring == {}
    join(core, D, heard + REMOVAL + 0.1)
    core.retire("d", "moved by placement")  # a learner serves nothing: out at once
    assert core.topology.learner is None and core.retiring == {}


def test_a_retiring_member_stays_when_the_chain_loses_another_meanwhile():
    core = chain(A, B, C, now=0.0)
    core.retire("b", "moved by placement", keep=2)  # goes only if two others stay
    heartbeat(core, "a", REMOVAL)  # c falls silent
    core.tick(REMOVAL + 0.01)
    assert ids(core.topology.members) == ["a", "b"] and core.retiring == {}  # c out, b kept
    assert heartbeat(core, "b", REMOVAL + 0.02).header["lease_ms"] == 3000  # leased again
    heartbeat(core, "a", 2 * REMOVAL)
    core.tick(2 * REMOVAL)
    assert ids(core.topology.members) == ["a", "b"]


def test_a_member_kept_after_the_chain_shrank_earlier_is_published():
    """Kept in a later tick than the other member's removal: the table must still say so."""
    core = chain(A, B, C, now=0.0)
    heartbeat(core, "b", 0.5)  # its removal falls due after c's
    core.retire("b", "moved by placement", keep=2)
    heartbeat(core, "a", REMOVAL)
    core.tick(REMOVAL + 0.01)
    assert ids(core.topology.members) == ["a", "b"] and set(core.retiring) == {"b"}
    drain(core)
    heartbeat(core, "a", 0.5 + REMOVAL)
    core.tick(0.5 + REMOVAL + 0.01)
    assert core.retiring == {} and kinds(drain(core)) == ["Publish"]


def test_last_member_is_never_removed():
    core = chain(A)
    core.tick(1000.0)
    assert [k for k in kinds(drain(core)) if k == "Persisted"] == []
    assert core.topology == Topology(1, (A,))
    core.tick(2000.0)
    assert core.topology == Topology(1, (A,))


def test_all_members_silent_keeps_the_last_one():
    core = chain(A, B)
    core.tick(100.0)
    drain(core)
    assert ids(core.topology.members) == ["b"]


def test_silent_learner_is_dropped():
    core = chain(A)
    join(core, B, 1.0)
    heartbeat(core, "a", 1.0 + REMOVAL + 0.5)
    core.tick(1.0 + REMOVAL + 0.5)
    assert "Persisted" in kinds(drain(core))
    assert core.topology == Topology(3, (A,))


def test_restarted_coordinator_removes_nobody_until_removal_after_since_its_start():
    start = 1000.0  # every node has been silent for far longer than a lease
    core = new_core(Topology(7, (A, B, C), D), now=start)
    assert core.topology == Topology(7, (A, B, C), D)
    # A full lease for the previous run's leases, plus time for the nodes to reconnect.
    silent_limit = REMOVAL + TIMINGS.restart_grace
    for now in (start, start + 1.0, start + REMOVAL, start + silent_limit):
        core.tick(now)
        assert "Persisted" not in kinds(drain(core))
    assert core.topology.epoch == 7
    heartbeat(core, "b", start + silent_limit)
    core.tick(start + silent_limit + 0.01)
    drain(core)
    assert core.topology.members == (B,) and core.topology.learner is None


def test_leave_removes_a_member_or_learner_at_once():
    core = chain(A, B, C)
    effects = request(core, "leave", 0.1, node_id="b")
    assert kinds(effects) == ["Persisted", "Publish", "Respond"]
    assert core.topology == Topology(6, (A, C))
    assert only_reply(effects).header["epoch"] == 6
    join(core, D, 0.2)
    request(core, "leave", 0.3, node_id="d")
    assert core.topology == Topology(8, (A, C))
    effects = request(core, "leave", 0.4, node_id="nobody")
    assert kinds(effects) == ["Respond"] and only_reply(effects).ok


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
    effects = request(core, "join", 0.1, node=A.to_dict(), protocol=PROTOCOL_VERSION)
    assert only_reply(effects).ok
    persisted = [e.state["topology"]["members"] for e in effects if isinstance(e, Persisted)]
    published = [e.topology.members for e in effects if isinstance(e, Publish)]
    assert persisted and all(persisted)
    assert published and all(published)


def test_join_with_an_endpoint_clash_is_bad_request():
    core = chain(A)
    clash = Member("x", "x/service", A.write_in, "x/ack")
    effects = request(core, "join", 0.1, node=clash.to_dict(), protocol=PROTOCOL_VERSION)
    reply = only_reply(effects)
    assert reply.code == "bad_request" and A.write_in in reply.message
    assert kinds(effects) == ["Respond"] and core.topology == Topology(1, (A,))
    # A node may keep its own endpoints when it rejoins.
    assert join(core, A, 0.2).ok


@pytest.mark.parametrize("node", [
    {"id": "x", "service": "x/service", "write_in": "x/write"},
    {"id": "x" * 65, "service": "x/service", "write_in": "x/write", "ack_in": "x/ack"},
    {"id": "", "service": "x/service", "write_in": "x/write", "ack_in": "x/ack"},
])
def test_join_with_a_bad_member_is_bad_request(node):
    core = chain(A)
    effects = request(core, "join", 0.1, node=node, protocol=PROTOCOL_VERSION)
    assert only_reply(effects).code == "bad_request" and kinds(effects) == ["Respond"]


@pytest.mark.parametrize("protocol", [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1])
def test_join_speaking_another_protocol_version_is_refused(protocol):
    """Processes of different releases must never share a chain: the join says which protocol the
    node speaks, and a different one is refused before anything changes."""
    core = chain(A)
    effects = request(core, "join", 0.1, node=B.to_dict(), protocol=protocol)
    reply = only_reply(effects)
    assert reply.code == "incompatible" and str(protocol) in reply.message
    assert kinds(effects) == ["Respond"] and core.topology == Topology(1, (A,))


def test_heartbeat_speaking_another_protocol_version_renews_nothing():
    """A coordinator restarted on another release must not keep nodes of the old one in its chain:
    their heartbeats are refused, so they are removed as silent once their lease is over."""
    core = chain(A, B)
    epoch = core.topology.epoch
    for t in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        assert heartbeat(core, A.id, t).ok
        reply = only_reply(request(core, "heartbeat", t, node_id=B.id, epoch=epoch,
                                   protocol=PROTOCOL_VERSION + 1))
        assert reply.code == "incompatible"
        core.tick(t)
        drain(core)
    assert ids(core.topology.members) == [A.id] and core.topology.epoch > epoch


def test_malformed_request_is_bad_request():
    core = chain(A)
    core.on_request("cl", Malformed("bad_request", "header frame is not valid JSON"), 0.1)
    assert only_reply(drain(core)).code == "bad_request"
    # Nodes serve reads, not the coordinator: its codec refuses a read as an unknown type.
    core.on_request("cl", Malformed("bad_request", "unknown request type 'read'", 4), 0.1)
    effects = drain(core)
    reply = only_reply(effects)
    assert (reply.id, reply.code, reply.message) == (4, "bad_request", "unknown request type 'read'")
    assert kinds(effects) == ["Respond"] and core.counters["bad_messages"] == 2


# ---------------------------------------------------------------------------------- client writes


def test_write_is_forwarded_to_the_head_and_its_reply_relayed_with_the_client_id():
    core = chain(A, B)
    effects = request(core, "write", 0.1, b"value", client="client-9", request_id="mine", key="k")
    [forward] = [e for e in effects if isinstance(e, PeerRequest)]
    assert forward.endpoint == "a/service"
    assert forward.request == Write("k", b"value", id=forward.request.id) and forward.request.id != "mine"
    assert replies(effects) == []
    core.on_peer_reply(Ok(forward.request.id, version=4), [], 0.2)
    [(client, reply)] = replies(drain(core))
    assert client == "client-9" and reply.ok and reply.id == "mine" and reply.header["version"] == 4


def test_delete_is_forwarded_and_an_error_from_the_head_is_relayed():
    core = chain(A)
    effects = request(core, "delete", 0.1, client="c2", request_id=77, key="k")
    [forward] = [e for e in effects if isinstance(e, PeerRequest)]
    assert forward.request == Delete("k", id=forward.request.id)
    core.on_peer_reply(Error(forward.request.id, "unavailable", "no lease"), [], 0.2)
    [(client, reply)] = replies(drain(core))
    assert (client, reply.id, reply.code) == ("c2", 77, "unavailable")


def test_forwarded_write_without_an_answer_is_unknown_outcome():
    core = chain(A)
    effects = request(core, "write", 1.0, b"v", client="c3", request_id="late", key="k")
    forward_id = effects[0].request.id
    core.tick(1.0 + TIMINGS.request_timeout - 0.01)
    assert replies(drain(core)) == []
    core.tick(1.0 + TIMINGS.request_timeout)
    [(client, reply)] = replies(drain(core))
    assert (client, reply.id, reply.code) == ("c3", "late", "unknown_outcome")
    core.on_peer_reply(Ok(forward_id, version=1), [], 7.0)  # too late: dropped
    assert replies(drain(core)) == []


def test_write_with_no_members_is_unavailable():
    core = new_core()
    effects = request(core, "write", 0.1, b"v", request_id=3, key="k")
    reply = only_reply(effects)
    assert (reply.id, reply.code) == (3, "unavailable")
    assert [e for e in effects if isinstance(e, PeerRequest)] == []


def test_malformed_reply_from_the_head_is_counted():
    core = chain(A)
    request(core, "write", 0.1, b"v", key="k")
    core.on_peer_reply(Malformed("bad_request", "malformed reply: JSON is malformed"), [], 0.2)
    assert replies(drain(core)) == [] and core.counters["bad_messages"] == 1


# ---------------------------------------------------------------------------------- publishing


def test_topology_is_republished_every_republish_interval():
    core = chain(A)
    published = []
    for step in range(31):
        now = 5.0 + step / 10
        core.tick(now)
        published += [round(now, 2) for e in drain(core) if isinstance(e, Publish)]
    assert published == [5.0, 6.0, 7.0, 8.0]


def test_topology_request_returns_the_current_topology():
    core = chain(A, B)
    reply = only_reply(request(core, "topology", 0.1))
    assert Topology.from_dict(reply.header["topology"]) == core.topology


def test_join_with_an_unusable_endpoint_is_refused_by_default():
    core = CoordinatorCore("tcp://127.0.0.1:7001", RecordingState(), 0.0, timings=TIMINGS)
    node = {"id": "x", "service": "tcp://127.0.0.1:9", "write_in": "garbage", "ack_in": "tcp://127.0.0.1:11"}
    core.on_request("cl", Join(node, PROTOCOL_VERSION, id=1), 0.0)
    [effect] = drain(core)
    assert effect.reply.code == "bad_request" and "garbage" in effect.reply.message
    assert core.topology.epoch == 0


# ---------------------------------------------------------------------------------- node ids and keys


def moved(node: Member, port: int) -> Member:
    return Member(node.id, f"{node.id}/service{port}", f"{node.id}/write{port}", f"{node.id}/ack{port}", node.key)


def test_a_second_process_with_a_listed_id_is_refused_while_the_first_holds_a_lease():
    core = chain(A, B, C)
    heartbeat(core, "b", 1.0)
    effects = request(core, "join", 1.5, node=moved(B, 2).to_dict(), protocol=PROTOCOL_VERSION)
    reply = only_reply(effects)
    assert reply.code == "node_id_taken" and "second process" in reply.message and "b/service" in reply.message
    assert kinds(effects) == ["Respond"] and ids(core.topology.members) == ["a", "b", "c"]
    assert core.counters["refused_joins"] == 1
    # Once b's lease is surely over, the newcomer is taken for b restarted elsewhere.
    assert join(core, moved(B, 2), 1.0 + REMOVAL + 0.1).ok
    # Same id, same endpoints, within the lease: a restart, as always.
    assert join(core, moved(B, 2), 1.0 + REMOVAL + 0.2).ok


def keyed(name: str, key_char: str | None = None) -> Member:
    return Member(name, f"{name}/service", f"{name}/write", f"{name}/ack", (key_char or name[0]) * 40)


def node_caller(member: Member) -> Caller:
    return Caller(member.key, frozenset({Role.NODE}))


def secure_join(core: CoordinatorCore, node: Member, now: float, as_key: str | None = None) -> Answer:
    caller = Caller(as_key or node.key, frozenset({Role.NODE}))
    core.on_request("cl", Join(node.to_dict(), PROTOCOL_VERSION, id=1), now, caller)
    return only_reply(drain(core))


def test_with_keys_an_id_belongs_to_the_key_that_registered_it():
    core = new_core()
    ka, kb = keyed("a"), keyed("b")
    assert secure_join(core, ka, 0.0).ok
    assert core.topology.members[0].key == ka.key
    # Another key for a: refused, whatever the lease.
    reply = secure_join(core, keyed("a", "z"), 100.0)
    assert reply.code == "node_id_taken" and "another key" in reply.message
    # a's key for another id: refused (one key, one node).
    reply = secure_join(core, Member("b", "b/service", "b/write", "b/ack", ka.key), 0.1)
    assert reply.code == "node_id_taken" and "registered as a" in reply.message
    # A join naming a key other than its connection's: forbidden.
    reply = secure_join(core, kb, 0.2, as_key="y" * 40)
    assert reply.code == "forbidden"
    assert secure_join(core, kb, 0.3).ok and core.topology.learner == kb


def test_membership_requests_need_the_registered_key():
    core = new_core()
    ka, kb = keyed("a"), keyed("b")
    secure_join(core, ka, 0.0)
    secure_join(core, kb, 0.0)
    for request, caller in ((Heartbeat("a", 2, PROTOCOL_VERSION, id=1), node_caller(kb)),
                            (CaughtUp("b", 2, id=2), node_caller(ka)),
                            (Leave("a", id=3), node_caller(kb)),
                            (Leave("a", id=4), Caller("c" * 40, frozenset({Role.CLIENT}))),
                            (Write("k", b"v", id=5), node_caller(ka))):
        core.on_request("cl", request, 0.1, caller)
        assert only_reply(drain(core)).code == "forbidden", request
    core.on_request("cl", Leave("b", id=6), 0.2, Caller("d" * 40, frozenset({Role.ADMIN})))
    assert only_reply(drain(core)).ok and core.topology.learner is None
    assert core.counters["forbidden"] == 5
