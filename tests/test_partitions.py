"""A partitioned cluster of real processes: chains form over the nodes, keys find their partition,
replicas move onto a new node and off a drained one, and a node killed during a move is repaired,
all under a concurrent workload whose history is checked (linearizable per key, no acknowledged
write lost, every replica of a key's partition holding the same newest committed version)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cluster import wait_for
from zcraq.chaos.analysis import analyse
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.workload import Workload, final_reads
from zcraq.cluster import Cluster
from zcraq.layout import COORDINATOR
from zcraq.partitioning import partition_of
from zcraq.store import LevelDBStore
from zcraq.store.shared import SharedLevelDB

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 8
SHAPE = {"partitions": PARTITIONS, "formation_grace_ms": 1000}
KEYS = [f"k{i}" for i in range(12)]  # over most of the partitions


def completed(history: HistoryWriter) -> int:
    return history.counts["ok"]


def final_states(cluster: Cluster, history: HistoryWriter, nodes: list[str]) -> dict[str, dict[str, Any]]:
    """Each key read at every replica of its partition."""
    chains = {entry.partition: [m.id for m in entry.topology.members] for entry in cluster.partitions()}
    states: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        members = chains[partition_of(key, PARTITIONS)]
        assert set(members) <= set(nodes)
        states.update(final_reads(cluster.coordinator_endpoint, history, [key],
                                  {m: cluster.service(m) for m in members}))
    return states


def check(cluster: Cluster, history: HistoryWriter, tmp_path: Path, nodes: list[str]) -> None:
    states = final_states(cluster, history, nodes)
    history.close()
    analysis = analyse(tmp_path / "history.jsonl", states)
    assert analysis.ok, "\n".join(analysis.problems())
    assert history.counts["write ok"] > 50 and history.counts["read ok"] > 50


def heads(cluster: Cluster) -> Counter[str]:
    return Counter(entry.topology.members[0].id for entry in cluster.partitions())


def test_chains_form_over_the_nodes_and_every_key_is_served(make_cluster):
    cluster = make_cluster(3, cluster=SHAPE).start_partitioned()
    spread = heads(cluster)
    assert sorted(spread) == ["node1", "node2", "node3"] and max(spread.values()) - min(spread.values()) <= 1
    client = cluster.client()
    for i in range(100):
        client.write(f"key{i}", f"value{i}")
    assert [client.read(f"key{i}") for i in range(100)] == [f"value{i}".encode() for i in range(100)]
    assert client.read_many([f"key{i}" for i in range(0, 100, 7)]) == [f"value{i}".encode()
                                                                        for i in range(0, 100, 7)]
    listed = subprocess.run([sys.executable, "-m", "zcraq", "client", "--coordinator",
                             cluster.coordinator_endpoint, "partitions", "--json"],
                            capture_output=True, text=True, timeout=30, check=True)
    entries = json.loads(listed.stdout)
    assert [e["partition"] for e in entries] == list(range(PARTITIONS))
    assert all(len(e["chain"]) == 3 and e["epoch"] > 0 for e in entries)


def test_a_new_node_takes_replicas_and_a_drained_one_gives_them_up_under_load(make_cluster, tmp_path):
    cluster = make_cluster(3, cluster=SHAPE).start_partitioned()
    history = HistoryWriter(tmp_path / "history.jsonl")
    workload = Workload(cluster.coordinator_endpoint, history, clients=4, keys=KEYS, seed=11, timeout=3.0)
    workload.start()
    try:
        wait_for(lambda: completed(history) >= 200, 30, "operations before the new node")
        cluster.add_node("node4")
        cluster.start("node4")
        cluster.wait_placed(["node1", "node2", "node3", "node4"], timeout=120)
        shares = Counter(m.id for entry in cluster.partitions() for m in entry.topology.members)
        assert max(shares.values()) - min(shares.values()) <= 1  # 24 replicas over 4 nodes: 6 each
        subprocess.run([sys.executable, "-m", "zcraq", "admin", "--coordinator", cluster.coordinator_endpoint,
                        "drain", "node1"], capture_output=True, text=True, timeout=30, check=True)
        cluster.wait_placed(["node2", "node3", "node4"], timeout=120)
        after = completed(history)
        wait_for(lambda: completed(history) >= after + 100, 60, "operations after the moves")
    finally:
        assert workload.stop(), "a client is stuck past its deadline"
    check(cluster, history, tmp_path, ["node2", "node3", "node4"])


def test_a_node_killed_during_a_move_is_replaced_and_nothing_acknowledged_is_lost(make_cluster, tmp_path):
    cluster = make_cluster(3, cluster=SHAPE, coordinator={"lease_ms": 1500}).start_partitioned()
    history = HistoryWriter(tmp_path / "history.jsonl")
    workload = Workload(cluster.coordinator_endpoint, history, clients=4, keys=KEYS, seed=5, timeout=3.0)
    workload.start()
    try:
        wait_for(lambda: completed(history) >= 200, 30, "operations before the move")
        cluster.add_node("node4")
        cluster.start("node4")
        wait_for(lambda: any(e.topology.learner is not None or e.assigned is not None for e in cluster.partitions()),
                 30, "a move under way")
        cluster.kill("node2")
        cluster.wait_placed(["node1", "node3", "node4"], timeout=120)
        after = completed(history)
        wait_for(lambda: completed(history) >= after + 100, 60, "operations after the repair")
    finally:
        assert workload.stop(), "a client is stuck past its deadline"
    check(cluster, history, tmp_path, ["node1", "node3", "node4"])


def test_a_data_directory_of_a_one_chain_node_is_refused_clearly(make_cluster):
    cluster = make_cluster(1, cluster=SHAPE)
    with LevelDBStore(cluster.data_dir("node1")) as store:  # what a one-chain node left there
        store.put("kept", 1, b"one chain", committed=True)
    cluster.start(COORDINATOR)
    cluster.start("node1")
    assert cluster.processes["node1"].wait(30) == 2
    assert "holds the store of a one-chain cluster's node" in cluster.log("node1")
    with LevelDBStore(cluster.data_dir("node1")) as store:  # untouched
        assert store.latest_committed("kept").value == b"one chain"


def test_a_data_directory_of_a_partitioned_node_is_refused_by_a_one_chain_cluster(make_cluster):
    cluster = make_cluster(1)
    shared = SharedLevelDB(cluster.data_dir("node1"))
    shared.store(3).put("kept", 1, b"partition 3", committed=True)
    shared.close()
    cluster.start(COORDINATOR)
    cluster.start("node1")
    assert cluster.processes["node1"].wait(30) == 2
    assert "holds the replicas of a partitioned cluster's node" in cluster.log("node1")
    shared = SharedLevelDB(cluster.data_dir("node1"))
    assert shared.partitions() == [3]
    shared.close()
