"""PartitionHost (zcraq/nodehost.py): which replicas a node runs, and how requests, chain frames and
replies find theirs. The protocol itself is each replica's NodeCore, tested elsewhere."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import UNSET

from zcraq.effects import PeerRequest, Respond, Subscribe
from zcraq.messages import (PROTOCOL_VERSION, CommitFrame, Confirm, ConfirmMany, Error, Heartbeat, Join, Malformed, Ok,
                            Read, ReadMany, Scan, StatusRequest, TopologyRequest, Write)
from zcraq.nodehost import PartitionHost, Push, PushTargets
from zcraq.partitioning import partition_of
from zcraq.store.memory import MemoryStore
from zcraq.topology import Member, Topology

pytestmark = pytest.mark.timeout(10)

P = 4


def member(index: int) -> Member:
    base = 21000 + 10 * index
    return Member(f"node{index}", f"tcp://127.0.0.1:{base}", f"tcp://127.0.0.1:{base + 1}",
                  f"tcp://127.0.0.1:{base + 2}")


class Stores:
    def __init__(self, holding: tuple[int, ...] = ()) -> None:
        self.stores: dict[int, MemoryStore] = {p: MemoryStore() for p in holding}
        self.dropped: list[int] = []
        self.released: list[int] = []
        self.commits = 0

    def store(self, partition: int) -> MemoryStore:
        return self.stores.setdefault(partition, MemoryStore())

    def partitions(self) -> list[int]:
        return sorted(self.stores)

    def release(self, partition: int) -> None:
        self.released.append(partition)

    def drop(self, partition: int) -> None:
        self.stores.pop(partition, None)
        self.dropped.append(partition)

    def commit(self) -> None:
        self.commits += 1


def table(version: int, chains: dict[int, list[int]], assigned: dict[int, int] | None = None) -> dict[str, Any]:
    assigned = assigned or {}
    return {"version": version, "nodes": [], "replication": 3,
            "partitions": [{"partition": p,
                            "topology": Topology(1 if chains.get(p) else 0,
                                                 tuple(member(i) for i in chains.get(p, []))).to_dict(),
                            "assigned": f"node{assigned[p]}" if p in assigned else None} for p in range(P)]}


def host(stores: Stores | None = None) -> PartitionHost:
    return PartitionHost(member(1), "zone-a", P, stores or Stores())


def replies(effects: list[Any]) -> list[Any]:
    return [e.reply for e in effects if isinstance(e, Respond)]


def key_of(partition: int) -> str:
    return next(k for k in (f"k{i}" for i in range(1000)) if partition_of(k, P) == partition)


def test_registers_with_its_zone_and_follows_the_table_version_it_is_told():
    h = host()
    h.start(0.0)
    [register] = [e for e in h.ready(0.0) if isinstance(e, PeerRequest)]
    assert register.endpoint == "coordinator"
    assert isinstance(register.request, Join) and register.request.zone == "zone-a"
    assert register.request.partition is UNSET
    h.on_peer_reply(Ok(register.request.id, publish="tcp://127.0.0.1:5", lease_ms=1000, table_version=3), [], 0.1)
    effects = h.ready(0.1)
    assert Subscribe("tcp://127.0.0.1:5") in effects
    [ask] = [e for e in effects if isinstance(e, PeerRequest)]
    assert isinstance(ask.request, TopologyRequest) and ask.request.partition is UNSET
    h.on_peer_reply(Ok(ask.request.id, table=table(3, {0: [1, 2, 3]})), [], 0.2)
    assert sorted(h.cores) == [0]
    h.tick(5.0)
    beats = [e.request for e in h.ready(5.0) if isinstance(e, PeerRequest) and isinstance(e.request, Heartbeat)]
    assert any(b.partition is UNSET for b in beats)  # the node's own, naming no partition


def test_a_table_starts_and_stops_replicas_and_keeps_their_data_until_whole_elsewhere():
    stores = Stores(holding=(0, 2, 3))
    h = host(stores)
    h.on_table(table(1, {0: [1, 2], 1: [2, 3], 2: [2, 3, 4]}, assigned={1: 1}), 0.0)
    assert sorted(h.cores) == [0, 1]
    # Held from an earlier run: partition 2 has its 3 replicas elsewhere, so its data go; partition
    # 3 has none, so what is here may be its last copy: kept.
    assert stores.dropped == [2] and 3 in stores.stores
    joins = [e.request for e in h.ready(0.0) if isinstance(e, PeerRequest) and isinstance(e.request, Join)]
    assert sorted(j.partition for j in joins) == [0, 1]  # each replica joins its own partition
    h.on_table(table(2, {0: [2, 3], 1: [1, 2, 3], 3: [2]}), 1.0)
    assert sorted(h.cores) == [1]
    assert stores.released == [0] and stores.dropped == [2]  # 0 stopped, kept: it has 2 replicas elsewhere
    h.on_table(table(3, {0: [2, 3, 4], 1: [1, 2, 3], 3: [2]}), 2.0)
    assert stores.dropped == [2, 0]  # now whole elsewhere
    h.on_table(table(4, {0: [2, 3, 4], 1: [1, 2, 3], 3: [2, 1]}), 3.0)
    assert sorted(h.cores) == [1, 3] and 3 in stores.stores  # placed here again: starts from what it kept
    h.on_table(table(1, {0: [1, 2, 3]}), 4.0)  # older than the one seen: ignored
    assert sorted(h.cores) == [1, 3]


def test_a_malformed_or_misshapen_table_changes_nothing():
    h = host()
    h.on_table({"version": "x"}, 0.0)
    h.on_table({"version": 1, "partitions": [{"partition": 0, "topology": {}, "assigned": None}]}, 0.0)
    assert h.cores == {} and h.counters["bad_messages"] == 2
    good = table(1, {0: [1, 2, 3]})
    h.on_table({**good, "version": 5, "partitions": good["partitions"][:2]}, 0.0)  # another shape: ignored whole
    h.on_table(good, 0.0)  # so a good table of a lower version still counts
    assert sorted(h.cores) == [0] and h.counters["bad_messages"] == 3


def test_requests_go_to_their_keys_partition_or_are_refused_clearly():
    h = host()
    h.on_table(table(1, {0: [1, 2, 3], 1: [1, 2, 3]}), 0.0)
    h.ready(0.0)
    hosted, other = key_of(0), key_of(2)
    h.on_request("c1", Read(other, id=1), 0.1)
    h.on_request("c2", Read(hosted, id=2, partition=2), 0.1)  # the field wins over the key
    h.on_request("c3", ReadMany([hosted, other], id=3), 0.1)
    h.on_request("c4", Scan(id=4), 0.1)
    h.on_request("c5", Read(hosted, id=5), 0.1)  # hosted, but not serving yet: the core answers
    h.on_request("c6", Malformed("bad_request", "nonsense", 6), 0.1)
    got = {r.id: r for r in replies(h.ready(0.1))}
    assert got[1].code == "wrong_partition" and got[2].code == "wrong_partition"
    assert got[3].code == "bad_request" and "partitions" in got[3].message
    assert got[4].code == "bad_request" and "names its partition" in got[4].message
    assert got[5].code == "unavailable"
    assert got[6].code == "bad_request"


def test_status_names_every_replica():
    h = host()
    h.on_table(table(1, {1: [1, 2, 3], 3: [2, 1, 3]}), 0.0)
    h.on_request("c", StatusRequest(id=9), 0.1)
    [reply] = replies(h.ready(0.1))
    assert isinstance(reply, Ok) and reply.node == "node1"
    assert [r["partition"] for r in reply.replicas] == [1, 3]
    assert "wrong_partition" in reply.counters


def test_calls_of_replicas_go_out_stamped_under_node_wide_ids_and_replies_come_back():
    h = host()
    h.on_table(table(1, {0: [1, 2, 3], 1: [1, 2, 3]}), 0.0)
    calls = [e.request for e in h.ready(0.0) if isinstance(e, PeerRequest)]
    assert len({c.id for c in calls}) == len(calls)
    assert {c.partition for c in calls} == {0, 1}
    join = next(c for c in calls if isinstance(c, Join) and c.partition == 1)
    topology = Topology(1, tuple(member(i) for i in (1, 2, 3)))
    h.on_peer_reply(Ok(join.id, topology=topology, publish="tcp://127.0.0.1:5", lease_ms=1000), [], 0.1)
    assert h.cores[1].joined and not h.cores[0].joined
    assert all(not isinstance(e, Subscribe) for e in h.ready(0.1))  # the node follows the table
    h.on_peer_reply(Ok(join.id), [], 0.2)  # a second answer to one call: dropped
    h.on_peer_reply(Error(12345, "x", "y"), [], 0.2)
    h.on_peer_reply(Malformed("bad_reply", "z", join.id), [], 0.2)


def test_chain_frames_reach_their_partitions_replica_and_go_out_with_it():
    h = host()
    h.on_table(table(1, {2: [1, 2, 3]}), 0.0)
    effects = h.ready(0.0)
    join = next(e.request for e in effects if isinstance(e, PeerRequest) and isinstance(e.request, Join))
    topology = Topology(1, tuple(member(i) for i in (1, 2, 3)))
    h.on_peer_reply(Ok(join.id, topology=topology, publish="tcp://127.0.0.1:5", lease_ms=60000), [], 0.0)
    h.tick(10.0)  # the fence of a fresh incarnation is over: the links open and sync
    effects = h.ready(10.0)
    assert PushTargets(frozenset({(member(2).write_in, None)})) in effects
    pushes = [e for e in effects if isinstance(e, Push)]
    assert pushes and all(p.endpoint == member(2).write_in and p.frame.partition == 2 for p in pushes)
    h.on_ack_frame(CommitFrame("node2", 1, 1, (), partition=3), 10.1)  # no replica of 3 here
    h.on_ack_frame(Malformed("bad_request", "junk"), 10.1)
    assert h.counters["stale_chain_frames"] == 1 and h.counters["bad_messages"] == 1
    h.on_request("c", Write(key_of(2), b"v", id=1), 10.2)
    h.ready(10.2)  # the head forwards it down (or refuses it): nothing is lost or crashes


def test_join_of_the_node_as_a_whole_names_no_partition_but_its_replicas_do():
    h = host()
    h.start(0.0)
    h.on_table(table(1, {0: [1]}), 0.0)
    joins = [e.request for e in h.ready(0.0) if isinstance(e, PeerRequest) and isinstance(e.request, Join)]
    assert sorted((j.partition is UNSET, j.protocol) for j in joins) == [
        (False, PROTOCOL_VERSION), (True, PROTOCOL_VERSION)]


def joined_host(chain: tuple[int, ...], partitions: tuple[int, ...], epoch: int = 1) -> PartitionHost:
    """A host whose replicas of ``partitions`` all joined ``chain`` in ``epoch``, fences over."""
    h = host()
    h.on_table(table(1, {p: list(chain) for p in partitions}), 0.0)
    topology = Topology(epoch, tuple(member(i) for i in chain))
    for effect in h.ready(0.0):
        if isinstance(effect, PeerRequest) and isinstance(effect.request, Join):
            h.on_peer_reply(Ok(effect.request.id, topology=topology, publish="tcp://127.0.0.1:5",
                               lease_ms=60000), [], 0.0)
    assert all(core.joined for core in h.cores.values())
    h.ready(0.0)
    return h


def test_the_replicas_confirm_rounds_go_to_each_peer_as_one_confirm_many():
    h = joined_host((1, 2, 3), (0, 1, 2))
    h.tick(10.0)
    asked = [e for e in h.ready(10.0) if isinstance(e, PeerRequest) and isinstance(e.request, (Confirm, ConfirmMany))]
    assert sorted(e.endpoint for e in asked) == [member(2).service, member(3).service]
    assert all(isinstance(e.request, ConfirmMany) and e.request.node_id == "node1"
               and e.request.partition is UNSET and sorted(e.request.epochs) == [(0, 1), (1, 1), (2, 1)]
               for e in asked)
    to2, to3 = sorted(asked, key=lambda e: e.endpoint)
    order = [p for p, _epoch in to2.request.epochs]
    h.on_peer_reply(Ok(to2.request.id, results=["ok" if p != 2 else "wrong_epoch" for p in order],
                       epochs=[1 if p != 2 else 7 for p in order], lease_ms=1000), [], 10.05)
    h.on_peer_reply(Ok(to3.request.id, results=["ok"] * 3, epochs=[1] * 3, lease_ms=1000), [], 10.05)
    peers = (member(2), member(3))
    assert h.cores[0].leases.peers_confirm(10.5, peers) and h.cores[1].leases.peers_confirm(10.5, peers)
    assert not h.cores[2].leases.peers_confirm(10.5, peers)  # node2 is in a newer epoch of partition 2
    assert not h.cores[0].leases.peers_confirm(11.1, peers)  # counted from when it was asked: 10.0 + 1 s
    effects = h.ready(10.05)
    asks = [e.request for e in effects if isinstance(e, PeerRequest) and isinstance(e.request, TopologyRequest)]
    assert [a.partition for a in asks] == [2]  # told of a newer epoch, the replica asks for it


def test_a_confirm_many_the_peer_refuses_whole_confirms_nothing():
    h = joined_host((1, 2), (0, 1))
    h.tick(10.0)
    [ask] = [e.request for e in h.ready(10.0) if isinstance(e, PeerRequest) and isinstance(e.request, ConfirmMany)]
    h.on_peer_reply(Error(ask.id, "bad_request", "unknown request type"), [], 10.05)
    h.on_peer_reply(Ok(ask.id, results=["ok"], epochs=[1], lease_ms=1000), [], 10.05)  # late, and short
    assert not any(core.leases.peers_confirm(10.5, (member(2),)) for core in h.cores.values())


def test_a_confirm_many_is_answered_pair_by_pair_as_each_replica_answers_confirm():
    h = joined_host((2, 1, 3), (0, 1))
    h.on_request("c", ConfirmMany("node2", [(0, 1), (1, 5), (3, 1), (1, 1)], id=7), 1.0)
    h.on_request("d", ConfirmMany("node9", [(0, 1)], id=8), 1.0)  # not a member of that epoch
    got = {r.id: r for r in replies(h.ready(1.0))}
    assert got[7] == Ok(7, results=["ok", "wrong_epoch", "wrong_partition", "ok"], epochs=[1, 1, 0, 1], lease_ms=1000)
    assert got[8].results == ["wrong_epoch"]


def test_a_confirm_many_needs_a_node_key_and_each_pair_the_askers_own():
    from zcraq.callers import Caller, Role

    h = joined_host((2, 1, 3), (0,))
    client = Caller("client-key", frozenset({Role.CLIENT}))
    h.on_request("c", ConfirmMany("node2", [(0, 1)], id=1), 1.0, client)
    other_node = Caller("node3-key", frozenset({Role.NODE}))  # node2's members carry no such key
    h.on_request("c", ConfirmMany("node2", [(0, 1)], id=2), 1.0, other_node)
    got = {r.id: r for r in replies(h.ready(1.0))}
    assert isinstance(got[1], Error) and got[1].code == "forbidden"
    assert got[2].results == ["forbidden"] and h.cores[0].counters["forbidden"] == 1
