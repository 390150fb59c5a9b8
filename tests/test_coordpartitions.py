"""The partitioned coordinator's core (zcraq/coordpartitions.py), driven by simulated nodes that
do what a node process does with a partition table: register, keep their node lease, join each
partition the table assigns them, heartbeat every partition they are in, and report caught up at
once (no data here). Time is simulated; every reply is routed back to the node that asked."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from msgspec import UNSET

from zcraq import coordpartitions
from zcraq.coordcore import CoordinatorTimings
from zcraq.coordpartitions import PartitionedCoordinator, PublishTable, Shape
from zcraq.effects import PeerRequest, Respond
from zcraq.hosting import Hosting
from zcraq.messages import PROTOCOL_VERSION, CaughtUp, Error, Heartbeat, Join, Leave, Ok, Write
from zcraq.partitioning import partition_of
from zcraq.topology import Topology

pytestmark = pytest.mark.timeout(60)

STEP = 0.05  # simulated seconds per turn
BEAT = 0.2


class MemoryTable:
    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        return self.saved

    def save(self, state: dict[str, Any]) -> None:
        self.saved = state


class SimNode:
    def __init__(self, index: int, zone: str = "") -> None:
        self.id = f"node{index}"
        self.zone = zone
        base = 20000 + 10 * index
        self.member = {"id": self.id, "service": f"tcp://127.0.0.1:{base}", "write_in": f"tcp://127.0.0.1:{base + 1}",
                       "ack_in": f"tcp://127.0.0.1:{base + 2}"}
        self.registered = False
        self.joined: set[int] = set()
        self.asking: set[int] = set()
        self.next_beat = 0.0
        self.alive = True


class Sim:
    def __init__(self, partitions: int, nodes: int, replication: int = 3, max_moves: int = 2) -> None:
        self.now = 0.0
        self.store = MemoryTable()
        self.shape = Shape(partitions, replication, max_moves)
        self.timings = CoordinatorTimings(lease=1.0)
        self.coordinator = self._start()
        self.nodes = [SimNode(i) for i in range(1, nodes + 1)]
        self.table: dict[str, Any] | None = None
        self.forwarded: list[PeerRequest] = []
        self.replies: dict[Any, Any] = {}
        self.most_in_flight = 0
        self.leased: dict[tuple[str, int], float] = {}  # (node, partition) -> when last granted a lease
        self.early_removals: list[str] = []  # members taken out while a lease they were granted ran
        self.shown_retiring: set[tuple[str, int]] = set()  # (node, partition) a published table showed retiring
        self.unshown_retiring: list[str] = []  # retiring members the last published table did not show

    def _start(self) -> PartitionedCoordinator:
        return PartitionedCoordinator("tcp://127.0.0.1:19999", self.store, self.now, self.shape, self.timings)

    def restart_coordinator(self) -> None:
        self.coordinator = self._start()

    def topologies(self) -> list[Topology]:
        return [core.topology for core in self.coordinator.chains]

    def turn(self) -> None:
        c = self.coordinator
        before = self.topologies()
        for node in self.nodes:
            if not node.alive:
                continue
            if not node.registered:
                c.register((node.id, "register", None), Join(node.member, PROTOCOL_VERSION, id=1), node.zone, self.now)
            if self.table is not None:
                for entry in self.table["partitions"]:
                    p, topology = entry["partition"], Topology.from_dict(entry["topology"])
                    placed = topology.member(node.id) is not None
                    if p in node.joined and not placed and entry["assigned"] != node.id:
                        node.joined.discard(p)  # removed: the replica is dropped
                    elif p in node.joined and topology.learner is not None and topology.learner.id == node.id:
                        c.on_partition_request((node.id, "caught_up", p), p,
                                               CaughtUp(node.id, topology.epoch, id=3), self.now)
                    elif p not in node.joined and p not in node.asking and (entry["assigned"] == node.id or placed):
                        node.asking.add(p)
                        c.on_partition_request((node.id, "join", p), p, Join(node.member, PROTOCOL_VERSION, id=2),
                                               self.now)
            if self.now >= node.next_beat:
                node.next_beat = self.now + BEAT
                c.node_heartbeat((node.id, "beat", None), Heartbeat(node.id, 0, PROTOCOL_VERSION, id=4), self.now)
                for p in sorted(node.joined):
                    epoch = c.chains[p].topology.epoch
                    c.on_partition_request((node.id, "beat", p), p, Heartbeat(node.id, epoch, PROTOCOL_VERSION, id=5),
                                           self.now)
        c.tick(self.now)
        for effect in c.ready(self.now):
            match effect:
                case PublishTable():
                    self.table = effect.table
                    self.shown_retiring |= {(node_id, entry["partition"]) for entry in effect.table["partitions"]
                                            for node_id in entry["retiring"]}
                case Respond():
                    self._reply(effect.client, effect.reply)
                case PeerRequest():
                    self.forwarded.append(effect)
        in_flight = sum(1 for t in self.topologies() if t.learner) + sum(
            1 for p, a in c.assigned.items() if self.topologies()[p].learner is None)
        self.most_in_flight = max(self.most_in_flight, in_flight)
        self._check_removals(before)
        if self.table is not None:
            self.unshown_retiring += [f"{node_id} in p{p} at {self.now:.2f}" for p, core in enumerate(c.chains)
                                      for node_id in core.retiring
                                      if node_id not in self.table["partitions"][p]["retiring"]]
        self.now += STEP

    def _check_removals(self, before: list[Topology]) -> None:
        """A member taken out of a chain must hold no lease any more (counted generously, from
        when the coordinator granted it): else, had it missed its removal, it could serve stale
        reads while the others commit."""
        for p, (old, new) in enumerate(zip(before, self.topologies())):
            for gone in {m.id for m in old.members} - {m.id for m in new.members}:
                granted = self.leased.get((gone, p), float("-inf"))
                if self.now - granted <= self.timings.lease:
                    self.early_removals.append(f"{gone} out of p{p} at {self.now:.2f}, leased at {granted:.2f}")

    def _reply(self, client: Any, reply: Any) -> None:
        self.replies[client] = reply
        if isinstance(client, tuple) and len(client) == 3 and client[1] == "beat" and client[2] is not None \
                and isinstance(reply, Ok) and reply.lease_ms is not UNSET:
            self.leased[(client[0], client[2])] = self.now
        if not isinstance(client, tuple) or len(client) != 3:
            return
        node = next((n for n in self.nodes if n.id == client[0]), None)
        if node is None:
            return
        kind, p = client[1], client[2]
        if kind == "register":
            node.registered = isinstance(reply, Ok)
        elif kind == "join":
            node.asking.discard(p)
            if isinstance(reply, Ok):
                node.joined.add(p)
        elif kind == "beat" and isinstance(reply, Error) and reply.code == "unknown_node":
            if p is None:
                node.registered = False
            else:
                node.joined.discard(p)

    def run_until(self, condition, seconds: float = 60.0) -> None:
        deadline = self.now + seconds
        while self.now < deadline:
            self.turn()
            if condition():
                return
        raise AssertionError(f"not reached in {seconds} simulated seconds: {self.describe()}")

    def describe(self) -> str:
        return "; ".join(f"p{p} {[m.id for m in t.members]} learner {t.learner and t.learner.id}"
                         for p, t in enumerate(self.topologies()))

    def settled(self, alive_ids: set[str] | None = None) -> bool:
        c = self.coordinator
        serving = {n.member.id for n in c.nodes.values() if not n.draining}
        if alive_ids is not None:
            serving &= alive_ids
        want = min(self.shape.replication, len(serving))
        topologies = self.topologies()
        if c.assigned or any(t.learner for t in topologies):
            return False
        if any(len(t.members) != want or not {m.id for m in t.members} <= serving for t in topologies):
            return False
        load = Counter(m.id for t in topologies for m in t.members)
        return max(load[n] for n in serving) - min(load[n] for n in serving) <= 1

    def per_node(self) -> tuple[Counter[str], Counter[str], Counter[str]]:
        topologies = self.topologies()
        return (Counter(m.id for t in topologies for m in t.members), Counter(t.members[0].id for t in topologies),
                Counter(t.members[-1].id for t in topologies))


def test_a_new_cluster_forms_every_partition_over_its_nodes() -> None:
    sim = Sim(partitions=8, nodes=3)
    sim.run_until(sim.settled)
    load, heads, tails = sim.per_node()
    assert load == {"node1": 8, "node2": 8, "node3": 8}
    assert max(heads.values()) - min(heads.values()) <= 1, heads
    assert max(tails.values()) - min(tails.values()) <= 2, tails
    assert sim.most_in_flight <= 2 + 8  # formation: the first member of each chain joins an empty one


def test_joining_nodes_get_an_even_share_with_at_most_two_moves_at_once() -> None:
    sim = Sim(partitions=8, nodes=3)
    sim.run_until(sim.settled)
    sim.most_in_flight = 0
    sim.nodes += [SimNode(4), SimNode(5)]
    sim.run_until(lambda: len(sim.coordinator.nodes) == 5 and sim.settled())
    load, _, _ = sim.per_node()
    assert sorted(load.values()) == [4, 5, 5, 5, 5]
    assert sim.most_in_flight <= 2
    counters = sim.coordinator.counters
    assert counters["placement_removals"] + counters["rotations"] > 0
    assert sim.early_removals == []  # every replica moved off a live node was retired first
    assert sim.unshown_retiring == []  # and the table showed it retiring from the start
    assert sim.shown_retiring


def test_a_dead_nodes_replicas_are_recreated_on_the_others() -> None:
    sim = Sim(partitions=6, nodes=4)
    sim.run_until(sim.settled)
    sim.nodes[1].alive = False
    alive = {n.id for n in sim.nodes if n.alive}
    sim.run_until(lambda: "node2" not in sim.coordinator.nodes and sim.settled(alive))
    assert all(len(t.members) == 3 and "node2" not in {m.id for m in t.members} for t in sim.topologies())


def test_a_drained_node_ends_with_no_replica() -> None:
    sim = Sim(partitions=6, nodes=4)
    sim.run_until(sim.settled)
    sim.coordinator.drain(("admin", "drain", None), 9, "node3")
    sim.run_until(lambda: sim.settled() and sim.per_node()[0]["node3"] == 0)
    assert sim.replies[("admin", "drain", None)] == Ok(9)
    assert sim.early_removals == []


def test_a_drained_node_that_goes_away_and_comes_back_is_still_draining() -> None:
    sim = Sim(partitions=6, nodes=4)
    sim.run_until(sim.settled)
    sim.coordinator.drain(("admin", "drain", None), 9, "node3")
    sim.nodes[2].alive = False  # restarted for maintenance, say: silent past the removal time
    sim.run_until(lambda: "node3" not in sim.coordinator.nodes)
    assert sim.coordinator.drained_away == {"node3"}
    sim.restart_coordinator()  # the mark is in the saved state
    node = sim.nodes[2]
    node.alive, node.registered, node.joined, node.asking = True, False, set(), set()
    sim.run_until(lambda: "node3" in sim.coordinator.nodes)
    assert sim.coordinator.nodes["node3"].draining and not sim.coordinator.drained_away
    sim.run_until(lambda: sim.settled() and sim.per_node()[0]["node3"] == 0)
    # Undone while the node is away: it comes back serving.
    node.alive = False
    sim.run_until(lambda: "node3" not in sim.coordinator.nodes)
    sim.coordinator.drain(("admin", "undo", None), 10, "node3", draining=False)
    sim.turn()
    assert sim.replies[("admin", "undo", None)] == Ok(10) and not sim.coordinator.drained_away
    node.alive, node.registered, node.joined, node.asking = True, False, set(), set()
    sim.run_until(lambda: "node3" in sim.coordinator.nodes and sim.settled() and sim.per_node()[0]["node3"] > 0)


def test_a_restarted_coordinator_keeps_the_table_and_the_registry() -> None:
    sim = Sim(partitions=4, nodes=3)
    sim.run_until(sim.settled)
    sim.coordinator.drain(("admin", "drain", None), 1, "node1")
    sim.turn()
    before = sim.topologies()
    sim.restart_coordinator()
    assert sim.topologies() == before and all(len(t.members) == 3 for t in before)
    version = sim.table["version"]
    assert version > 1 and sim.coordinator.version == version  # saved, and only changes bump it
    sim.turn()
    assert sim.table["version"] == version + 1  # a restarted coordinator's first table is a new one
    for _ in range(40):  # two seconds: the chains are republished, the table is the same
        sim.turn()
    assert sim.table["version"] == version + 1
    assert sim.coordinator.nodes["node1"].draining and set(sim.coordinator.nodes) == {"node1", "node2", "node3"}
    # It goes on from there: node1's replicas move off once the cluster has somewhere to put them.
    sim.nodes.append(SimNode(4))
    sim.run_until(lambda: sim.settled() and sim.per_node()[0]["node1"] == 0)
    with pytest.raises(ValueError, match="shape is fixed"):
        PartitionedCoordinator("tcp://127.0.0.1:19999", sim.store, 0.0, Shape(8, 3))


def test_a_join_for_a_partition_not_placed_on_the_node_is_refused() -> None:
    sim = Sim(partitions=4, nodes=3)
    sim.run_until(sim.settled)
    stranger = SimNode(7)
    sim.coordinator.register(("node7", "register", None), Join(stranger.member, PROTOCOL_VERSION, id=1), "", sim.now)
    sim.coordinator.on_partition_request(("node7", "x", 0), 0, Join(stranger.member, PROTOCOL_VERSION, id=8), sim.now)
    sim.coordinator.on_partition_request(("node7", "y", 9), 9, Join(stranger.member, PROTOCOL_VERSION, id=9), sim.now)
    odd = {**stranger.member, "id": ["not", "a", "string"]}  # any JSON: never a crash
    sim.coordinator.on_partition_request(("node7", "z", 0), 0, Join(odd, PROTOCOL_VERSION, id=10), sim.now)
    effects = sim.coordinator.ready(sim.now)
    replies = {e.client: e.reply for e in effects if isinstance(e, Respond)}
    assert isinstance(replies[("node7", "x", 0)], Error) and replies[("node7", "x", 0)].code == "not_assigned"
    assert replies[("node7", "z", 0)].code == "not_assigned"
    assert replies[("node7", "y", 9)].code == "bad_request"
    sim.coordinator.register(("node8", "register", None), Join(SimNode(8).member, 1, id=1), "", sim.now)
    old = [e.reply for e in sim.coordinator.ready(sim.now) if isinstance(e, Respond)]
    assert [r.code for r in old] == ["incompatible"] and "node8" not in sim.coordinator.nodes


def test_the_registry_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordpartitions, "MAX_NODES", 3)
    sim = Sim(partitions=2, nodes=3)
    sim.run_until(sim.settled)
    sim.coordinator.register(("node4", "register", None), Join(SimNode(4).member, PROTOCOL_VERSION, id=1), "",
                             sim.now)
    replies = [e.reply for e in sim.coordinator.ready(sim.now) if isinstance(e, Respond)]
    assert [r.code for r in replies] == ["busy"] and "node4" not in sim.coordinator.nodes


def test_a_write_goes_to_its_partitions_head_and_the_answer_back_to_its_client() -> None:
    sim = Sim(partitions=4, nodes=3)
    sim.run_until(sim.settled)
    c = sim.coordinator
    ids = []
    for key in ("a", "b", "c", "d", "e"):
        c.forward_write(("client", key), Write(key, b"v", id=f"w-{key}"), sim.now)
        sent = [e for e in c.ready(sim.now) if isinstance(e, PeerRequest)]
        assert len(sent) == 1
        head = sim.topologies()[partition_of(key, 4)].members[0]
        assert sent[0].endpoint == head.service
        ids.append(sent[0].request.id)
        c.on_peer_reply(Ok(sent[0].request.id, version=1), [], sim.now)
        answers = [e for e in c.ready(sim.now) if isinstance(e, Respond)]
        assert [(a.client, a.reply.id) for a in answers] == [(("client", key), f"w-{key}")]
    assert len(set(ids)) == 5  # unique over the partitions' cores
    # A write whose head never answers: its client hears unknown_outcome, and nothing is kept.
    c.forward_write(("client", "lost"), Write("lost", b"v", id="w-lost"), sim.now)
    assert len([e for e in c.ready(sim.now) if isinstance(e, PeerRequest)]) == 1 and len(c.forwards) == 1
    c.tick(sim.now + sim.timings.request_timeout + 0.1)
    answers = [e.reply for e in c.ready(sim.now) if isinstance(e, Respond)]
    assert [(a.id, a.code) for a in answers] == [("w-lost", "unknown_outcome")] and c.forwards == {}


def test_a_leaving_node_is_taken_out_of_every_chain_and_replaced() -> None:
    sim = Sim(partitions=4, nodes=4)
    sim.run_until(sim.settled)
    sim.nodes[3].alive = False
    sim.coordinator.leave(("node4", "leave", None), Leave("node4", id=6), sim.now)
    sim.turn()
    assert all("node4" not in {m.id for m in t.members} for t in sim.topologies())
    sim.run_until(lambda: sim.settled({"node1", "node2", "node3"}))


# -- A node's side: which replicas it hosts ------------------------------------------------------


def test_nodes_host_what_the_tables_place_on_them_and_ignore_older_tables() -> None:
    sim = Sim(partitions=6, nodes=3)
    sim.run_until(sim.settled)
    hostings = {n.id: Hosting(n.id) for n in sim.nodes}
    first = sim.table
    for node_id, hosting in hostings.items():
        changes = hosting.on_table(first)
        assert changes is not None and changes.start == list(range(6)) and changes.stop == []
        assert all(t.member(node_id) is not None for t in changes.topologies.values())
    sim.nodes.append(SimNode(4))
    hostings["node4"] = Hosting("node4")
    sim.run_until(lambda: len(sim.coordinator.nodes) == 4 and sim.settled())
    moved_out = {}
    for node_id, hosting in hostings.items():
        changes = hosting.on_table(sim.table)
        assert changes is not None
        moved_out[node_id] = changes.stop
        assert hosting.hosted == {p for p, t in enumerate(sim.topologies()) if t.member(node_id) is not None}
    assert sum(len(stop) for stop in moved_out.values()) == len(hostings["node4"].hosted) > 0
    assert hostings["node1"].on_table(first) is None  # older: ignored
    # An assignment alone is reason to start: the node must join to be listed.
    table = {**sim.table, "version": sim.table["version"] + 1}
    table["partitions"] = [{**e, "assigned": "node9"} for e in table["partitions"]]
    assert Hosting("node9").on_table(table).start == list(range(6))


@pytest.mark.parametrize("bad", [None, [], {"version": -1, "partitions": []}, {"version": 1},
                                 {"version": 1, "partitions": [{"partition": 0, "topology": {"epoch": 1}}]},
                                 {"version": 1, "partitions": [{"partition": 4096, "topology": None}]},
                                 {"version": 1, "partitions": [{"partition": 0, "assigned": 5,
                                                                "topology": {"epoch": 1, "members": []}}]}])
def test_a_malformed_table_is_refused_before_anything_changes(bad: object) -> None:
    hosting = Hosting("node1")
    with pytest.raises(ValueError):
        hosting.on_table(bad)
    assert hosting.version == -1 and hosting.hosted == set()


def test_node_level_requests_need_the_right_key() -> None:
    from zcraq.callers import Caller, Role

    sim = Sim(partitions=2, nodes=3)
    sim.run_until(sim.settled)
    c = sim.coordinator
    client = Caller("c" * 40, frozenset({Role.CLIENT}))
    other_node = Caller("o" * 40, frozenset({Role.NODE}))
    admin = Caller("a" * 40, frozenset({Role.ADMIN}))
    c.register("r", Join(SimNode(5).member, PROTOCOL_VERSION, id=1), "", sim.now, client)
    c.register("k", Join({**SimNode(6).member, "key": "k" * 40}, PROTOCOL_VERSION, id=7), "", sim.now, other_node)
    c.node_heartbeat("h", Heartbeat("node1", 0, PROTOCOL_VERSION, id=2), sim.now, client)
    c.leave("l", Leave("node1", id=3), sim.now, client)
    c.drain("d", 4, "node1", caller=other_node)
    refused = {e.client: e.reply.code for e in c.ready(sim.now) if isinstance(e, Respond)}
    assert refused == {"r": "forbidden", "h": "forbidden", "l": "forbidden", "d": "forbidden", "k": "forbidden"}
    assert "node1" in c.nodes and not c.nodes["node1"].draining and not {"node5", "node6"} & set(c.nodes)
    c.drain("d", 5, "node1", caller=admin)
    c.leave("l", Leave("node2", id=6), sim.now, admin)
    allowed = {e.client: e.reply for e in c.ready(sim.now) if isinstance(e, Respond)}
    assert allowed == {"d": Ok(5), "l": Ok(6)} and c.nodes["node1"].draining and "node2" not in c.nodes
