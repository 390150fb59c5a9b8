"""Placement of partition replicas over nodes (zcraq/placement.py) and the key hash."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from dataclasses import replace

import pytest

from zcraq.partitioning import check_partition_count, partition_of
from zcraq.placement import AddLearner, Form, NodeSpec, RemoveReplica, Replicas, Rotate, plan

pytestmark = pytest.mark.timeout(60)


def test_partition_of_is_crc32_of_the_utf8_key() -> None:
    assert partition_of("anything", 1) == 0
    assert partition_of("hello", 16) == zlib.crc32(b"hello") % 16 == 0x3610A686 % 16
    assert partition_of("clé", 7) == zlib.crc32("clé".encode()) % 7
    spread = Counter(partition_of(f"key{i}", 8) for i in range(8000))
    assert len(spread) == 8 and min(spread.values()) > 900  # about 1000 each
    for bad in (0, -1, 4097, 2.0, "3", True):
        with pytest.raises(ValueError):
            check_partition_count(bad)


class Cluster:
    """A partition table that steps are applied to, as the coordinator would: learners catch up
    when ``catch_up`` is called; invariants are checked at every step."""

    def __init__(self, nodes: list[NodeSpec], partitions: int, replication: int, max_moves: int) -> None:
        self.nodes = nodes
        self.table = [Replicas() for _ in range(partitions)]
        self.replication, self.max_moves = replication, max_moves
        self.moves = 0

    def step(self) -> list:
        steps = plan(self.nodes, self.table, self.replication, self.max_moves)
        assert len({s.partition for s in steps}) == len(steps), "one step per partition"
        for s in steps:
            r = self.table[s.partition]
            match s:
                case Form():
                    assert not r.hosts and len(set(s.chain)) == len(s.chain)
                    self.table[s.partition] = Replicas(s.chain)
                case AddLearner():
                    assert r.learner is None and s.node not in r.hosts and r.chain
                    assert not self.spec(s.node).draining
                    self.table[s.partition] = Replicas(r.chain, s.node)
                    self.moves += 1
                case RemoveReplica():
                    assert r.learner is None and s.node in r.chain
                    assert len(r.chain) - 1 >= self.replication, "a removal leaves R members"
                    self.table[s.partition] = Replicas(tuple(n for n in r.chain if n != s.node))
                case Rotate():
                    assert r.learner is None and s.node in r.chain[:-1]
                    self.table[s.partition] = Replicas(tuple(n for n in r.chain if n != s.node), s.node)
                    self.moves += 1
        assert sum(1 for r in self.table if r.learner) <= self.max_moves
        return steps

    def spec(self, node: str) -> NodeSpec:
        return next(n for n in self.nodes if n.id == node)

    def catch_up(self) -> None:
        self.table = [Replicas(r.chain + (r.learner,)) if r.learner else r for r in self.table]

    def settle(self, rounds: int = 2000) -> int:
        for n in range(rounds):
            if not self.step() and all(r.learner is None for r in self.table):
                return n
            self.catch_up()
        raise AssertionError("placement did not settle")

    def kill(self, node: str) -> None:
        """The failure detector removes a dead node from every chain (it never empties one)."""
        self.nodes = [n for n in self.nodes if n.id != node]
        self.table = [Replicas(tuple(h for h in r.chain if h != node) or r.chain,
                               None if r.learner == node else r.learner) for r in self.table]

    def per_node(self) -> tuple[Counter[str], Counter[str], Counter[str]]:
        load, heads, tails = Counter(), Counter(), Counter()
        for r in self.table:
            load.update(r.chain)
            heads[r.chain[0]] += 1
            tails[r.chain[-1]] += 1
        return load, heads, tails

    def assert_even(self, heads_within: int = 1, tails_within: int = 2) -> None:
        serving = [n.id for n in self.nodes if not n.draining]
        want = min(self.replication, len(serving))
        for p, r in enumerate(self.table):
            assert len(r.chain) == want and len(set(r.chain)) == want, (p, r)
            assert all(not self.spec(h).draining for h in r.chain)
        load, heads, tails = self.per_node()
        spread = lambda c: max(c[n] for n in serving) - min(c[n] for n in serving)  # noqa: E731
        assert spread(load) <= 1, load
        assert spread(heads) <= heads_within and spread(tails) <= tails_within, (heads, tails)


def nodes(count: int, zones: int = 0) -> list[NodeSpec]:
    return [NodeSpec(f"n{i}", f"z{i % zones}" if zones else "") for i in range(1, count + 1)]


def test_a_new_cluster_forms_every_partition_evenly_in_one_step() -> None:
    cluster = Cluster(nodes(3), partitions=12, replication=3, max_moves=1)
    steps = cluster.step()
    assert all(isinstance(s, Form) for s in steps) and len(steps) == 12
    assert cluster.settle() == 0
    cluster.assert_even(heads_within=0, tails_within=0)  # 4 heads and 4 tails each


def test_a_fourth_and_fifth_node_take_an_even_share_one_move_at_a_time() -> None:
    cluster = Cluster(nodes(3), partitions=16, replication=3, max_moves=1)
    cluster.settle()
    cluster.nodes = nodes(5)
    cluster.settle()
    cluster.assert_even()
    load, _, _ = cluster.per_node()
    assert sorted(load.values()) == [9, 9, 10, 10, 10]  # 48 replicas over 5 nodes


def test_a_drained_node_ends_with_nothing_and_every_partition_keeps_three() -> None:
    cluster = Cluster(nodes(4), partitions=8, replication=3, max_moves=2)
    cluster.settle()
    cluster.nodes = [replace(n, draining=n.id == "n2") for n in cluster.nodes]
    cluster.settle()
    cluster.assert_even()
    assert cluster.per_node()[0]["n2"] == 0


def test_the_replicas_of_a_dead_node_are_recreated_elsewhere() -> None:
    cluster = Cluster(nodes(5), partitions=10, replication=3, max_moves=3)
    cluster.settle()
    cluster.kill("n3")
    short = sum(1 for r in cluster.table if len(r.chain) < 3)
    assert short == 6  # 30 replicas over 5 nodes: n3 had 6
    steps = cluster.step()
    assert [s.reason for s in steps if isinstance(s, AddLearner)] == ["repair"] * 3  # the throttle
    cluster.settle()
    cluster.assert_even()


def test_zones_are_spread_before_load() -> None:
    # Six nodes in three zones: every partition gets one replica per zone.
    cluster = Cluster(nodes(6, zones=3), partitions=12, replication=3, max_moves=2)
    cluster.settle()
    for r in cluster.table:
        assert len({cluster.spec(h).zone for h in r.chain}) == 3
    cluster.assert_even()


def test_fewer_nodes_than_replicas_and_a_single_node() -> None:
    cluster = Cluster(nodes(1), partitions=4, replication=3, max_moves=1)
    cluster.settle()
    assert all(r.chain == ("n1",) for r in cluster.table)
    cluster.nodes = nodes(2)
    cluster.settle()
    cluster.assert_even()
    cluster.nodes = [replace(n, draining=True) for n in cluster.nodes]
    assert cluster.step() == []  # nowhere to move to: the chains stay as they are


@pytest.mark.parametrize("seed", range(40))
def test_random_histories_settle_even(seed: int) -> None:
    rng = random.Random(seed)
    replication = rng.choice([1, 2, 3])
    cluster = Cluster(nodes(rng.randint(replication, 5), zones=rng.choice([0, 2, 3])),
                      partitions=rng.choice([1, 4, 7, 16]), replication=replication, max_moves=rng.randint(1, 3))
    next_id = 100
    for _ in range(rng.randint(1, 6)):
        cluster.settle()
        event = rng.random()
        serving = [n for n in cluster.nodes if not n.draining]
        if event < 0.4:
            next_id += 1
            cluster.nodes = [*cluster.nodes, NodeSpec(f"n{next_id}", rng.choice(["", "z0", "z1"]))]
        elif event < 0.7 and len(serving) > replication:
            victim = rng.choice(serving).id
            cluster.nodes = [replace(n, draining=n.draining or n.id == victim) for n in cluster.nodes]
        elif len(serving) > replication and all(len(r.chain) > 1 for r in cluster.table):
            cluster.kill(rng.choice(serving).id)
        # Moves in flight: the next event may come before learners catch up.
        cluster.step()
    cluster.settle()
    serving = [n for n in cluster.nodes if not n.draining]
    for r in cluster.table:
        assert len(r.chain) == min(replication, len(serving))
        assert all(not cluster.spec(h).draining for h in r.chain)
    load, heads, tails = cluster.per_node()
    for counts, within in ((load, 1), (heads, 1), (tails, 2)):
        assert max(counts[n.id] for n in serving) - min(counts[n.id] for n in serving) <= within, counts
