"""Three coordinators keeping the state in a real 3-member etcd (zcraq/coordinator_engine.py), with
real nodes and clients configured with every coordinator.

One coordinator leads, the others answer ``not_leader`` naming it; when the leader is killed
another takes over from the state in etcd and repairs the chain; throughout, a concurrent workload
runs and its history is checked (linearizable, no lost acknowledged write, replicas agree).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import orjson
import pytest

from cluster import wait_for
from engine_cluster import KEYS, checked, completed, leader
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.workload import Workload
from zcraq.engine.etcd import EtcdClient
from zcraq.engine.local import LocalEtcd

pytestmark = pytest.mark.timeout(240)



@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    cluster = LocalEtcd(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()


def test_one_coordinator_leads_and_the_others_name_it(make_cluster, engine):
    cluster = make_cluster(3, engine=engine.endpoints).start_all()
    first = wait_for(lambda: leader(cluster), 20, "one leader, named by the others")
    # The state is the engine's: the chain is there, under this cluster's prefix.
    prefix = cluster.coordinator_config.engine.prefix  # type: ignore[union-attr]
    with EtcdClient(engine.endpoints) as etcd:
        found, _ = etcd.get((prefix + "state").encode())
        assert found is not None
        assert [m["id"] for m in orjson.loads(found.value)["topology"]["members"]] == ["node1", "node2", "node3"]
        held, _ = etcd.get((prefix + "leader").encode())
        assert held is not None and held.value.decode() == cluster.coordinator_configs[first].endpoint
    # A client configured with every coordinator finds the leader, whichever it asks first.
    with cluster.client() as zclient:
        zclient.write("hello", "world")
        assert zclient.read("hello") == b"world"
        assert zclient.coordinator == cluster.coordinator_configs[first].endpoint

    # SIGTERM gives the lease back: another leads at once, not a lease later.
    stopped = time.monotonic()
    cluster.stop(first)
    second = wait_for(lambda: leader(cluster), 20, "a new leader")
    assert second != first and time.monotonic() - stopped < 5
    with cluster.client() as zclient:
        assert [m.id for m in zclient.topology().members] == ["node1", "node2", "node3"]


def test_kill_9_of_the_leader_under_load_then_a_node_failure_is_repaired_by_the_new_leader(
        make_cluster, engine, tmp_path):
    cluster = make_cluster(3, engine=engine.endpoints).start_all()
    first = wait_for(lambda: leader(cluster), 20, "one leader")
    history = HistoryWriter(tmp_path / "history.jsonl")
    workload = Workload(None, history, clients=4, keys=KEYS, seed=7, timeout=3.0, config=cluster.client_config)
    workload.start()
    try:
        wait_for(lambda: completed(history) >= 200, 30, "operations before the fault")
        killed = time.monotonic()
        cluster.kill(first)
        second = wait_for(lambda: leader(cluster), 30, "a new leader")
        took = time.monotonic() - killed
        assert second != first
        # The new leader repairs: the tail dies and is taken out of the chain.
        victim = wait_for(lambda: cluster.members()[-1], 10, "the chain from the new leader")
        cluster.kill(victim)
        wait_for(lambda: victim not in cluster.members(), 30, f"{victim} to be removed by the new leader")
        after = completed(history)
        wait_for(lambda: completed(history) >= after + 200, 60, "operations after the repair")
    finally:
        assert workload.stop(), "a client is stuck past its deadline"
    print(f"a new leader {took:.2f} s after kill -9 of the old one")
    checked(cluster, history, tmp_path / "history.jsonl", members=2)
    # The killed coordinator comes back as a standby naming the leader.
    cluster.start(first)
    wait_for(lambda: leader(cluster) == second, 20, "the restarted coordinator to stand by")


def test_a_leader_that_loses_a_state_write_stands_by(make_cluster, engine):
    """A leader whose state changed under it in the engine (as if another had decided) stops
    deciding on its next save, stands by, and the leader after it starts from the engine's state."""
    cluster = make_cluster(3, engine=engine.endpoints).start_all()
    first = wait_for(lambda: leader(cluster), 20, "one leader")
    prefix = cluster.coordinator_config.engine.prefix  # type: ignore[union-attr]
    key = (prefix + "state").encode()
    with EtcdClient(engine.endpoints) as etcd:
        found, _ = etcd.get(key)
        assert found is not None
        etcd.put(key, found.value)  # the same document at a newer revision: the leader's base is stale
    cluster.signal("node3", signal.SIGTERM)  # a leave: the leader must save a new epoch, and cannot
    wait_for(lambda: "node3" not in cluster.members(), 30, "node3 to leave through a leader that could save")
    assert cluster.alive(first)  # it stood by (and perhaps leads again): it did not exit
    assert "stops leading" in cluster.log(first)
    with cluster.client() as zclient:
        zclient.write("after", "the conflict")
        assert zclient.read("after") == b"the conflict"


def test_an_etcd_member_lost_under_load_then_a_node_failure_is_still_repaired(make_cluster, tmp_path):
    """An etcd member killed (the engine keeps its majority): the coordinators go on with the others,
    the chain is repaired as before, and the member rejoins. Its own etcd: killing a member of the
    shared one would disturb the other tests."""
    engine = LocalEtcd(tmp_path / "etcd")
    try:
        engine.start(timeout=60)
        cluster = make_cluster(3, engine=engine.endpoints).start_all()
        first = wait_for(lambda: leader(cluster), 20, "one leader")
        history = HistoryWriter(tmp_path / "history.jsonl")
        workload = Workload(None, history, clients=4, keys=KEYS, seed=11, timeout=3.0, config=cluster.client_config)
        workload.start()
        try:
            wait_for(lambda: completed(history) >= 200, 30, "operations before the fault")
            engine.kill_member(0)  # the member every coordinator asks first
            victim = wait_for(lambda: cluster.members()[-1], 10, "the chain")
            cluster.kill(victim)
            wait_for(lambda: victim not in cluster.members(), 30, f"{victim} to be removed with an etcd member down")
            assert leader(cluster) is not None
            after = completed(history)
            wait_for(lambda: completed(history) >= after + 200, 60, "operations after the repair")
            engine.start_member(0)
            engine.wait_ready(30)
            cluster.start(victim)
            wait_for(lambda: victim in cluster.members(), 60, f"{victim} to rejoin")
        finally:
            assert workload.stop(), "a client is stuck past its deadline"
        print(f"{first} led first; {leader(cluster)} leads at the end")
        checked(cluster, history, tmp_path / "history.jsonl", members=3)
    finally:
        engine.stop()
