"""The leading coordinator cut off from the engine (etcd) while it still reaches the nodes, and a node
killed meanwhile: the dangerous case of PROTOCOL.md section 14 (safety rule 2).

Every process runs in a network namespace of its own (zcraq/chaos/netns.py), the three etcd members
too, each bound to its namespace's address; the test itself reaches them all through the host link.
The cut is a blackhole route, in each etcd member's namespace, to the leader's address (only ``ip``
is needed): the leader's packets still reach etcd (with rp_filter off, the default in a new
namespace), so a renewal may be applied, but nothing etcd sends comes back: to the leader the engine falls
silent (no refused connection, no error) while nodes, clients and the other coordinators still reach
it. It must stop deciding before its lease can run out in etcd; another coordinator takes over from
the engine's state and removes the dead node; the workload's history stays linearizable with no
lost write; once the cut is healed, the old leader stands by and names the new one.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from cluster import wait_for
from engine_cluster import KEYS, ask, checked, completed, leader
from zcraq.chaos.cluster import NetnsHook
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.netns import Network, unavailable_reason
from zcraq.chaos.workload import Workload
from zcraq.cluster import Cluster
from zcraq.engine.etcd import EngineError, EtcdClient
from zcraq.engine.local import etcd_binary
from zcraq.layout import Generated
from zcraq.processes import spawn, terminate
from zcraq.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

COORDINATORS = ["coordinator1", "coordinator2", "coordinator3"]
NODES = ["node1", "node2", "node3"]
MEMBERS = ["etcd1", "etcd2", "etcd3"]
CLIENT_PORT, PEER_PORT = 2379, 2380
BOUND = 20.0  # seconds from the cut by which another coordinator leads and the dead node is out


# ---------------------------------------------------------------------- etcd in the namespaces


def client_url(network: Network, member: str) -> str:
    return f"http://{network.addresses[member]}:{CLIENT_PORT}"


def start_etcd(network: Network, directory: Path) -> list[subprocess.Popen[bytes]]:
    """One etcd member in each of MEMBERS' namespaces, bound to its address; started, not waited for."""
    binary = etcd_binary()
    peers = ",".join(f"{m}=http://{network.addresses[m]}:{PEER_PORT}" for m in MEMBERS)
    processes = []
    for member in MEMBERS:
        client, peer = client_url(network, member), f"http://{network.addresses[member]}:{PEER_PORT}"
        data = directory / member
        data.mkdir(parents=True, exist_ok=True)
        processes.append(spawn([
            *network.exec_prefix(member), binary, "--name", member, "--data-dir", str(data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"zcraq-{network.prefix}", "--log-level", "warn",
        ], log=directory / f"{member}.log"))
    return processes


def wait_etcd(network: Network, processes: list[subprocess.Popen[bytes]], directory: Path) -> None:
    """Until the members (asked from the root namespace, over the host link) apply a write."""
    with EtcdClient([client_url(network, m) for m in MEMBERS], timeout=1.0) as client:
        def applied() -> bool:
            if all(p.poll() is not None for p in processes):
                raise OSError(f"every etcd member exited; see {directory}/etcd*.log")
            client.put(b"zcraq/engine-ready", b"")
            return True

        wait_until(applied, 60, "the etcd members to apply a write", interval=0.1, retry_on=(EngineError,))


def route(network: Network, member: str, action: str, address: str) -> None:
    """Add or delete, in ``member``'s namespace, a blackhole route to ``address``."""
    result = subprocess.run(["ip", "-n", network.namespace(member), "route", action, "blackhole", f"{address}/32"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"ip route {action} blackhole {address} in {member}: {result.stderr.strip()}"


def cut_from_engine(network: Network, name: str) -> list[str]:
    """Nothing an etcd member sends reaches ``name`` any more (its own packets still arrive): to
    ``name`` the engine is silent. Returns the members cut, for ``heal``."""
    cut = []
    for member in MEMBERS:
        route(network, member, "add", network.addresses[name])
        cut.append(member)
    return cut


def heal(network: Network, name: str, cut: list[str]) -> None:
    while cut:
        route(network, cut.pop(), "del", network.addresses[name])


# ---------------------------------------------------------------------- the test


def test_the_leader_cut_off_from_the_engine_while_a_node_fails(tmp_path):
    problem = unavailable_reason()
    if problem is not None:
        pytest.skip(f"network namespaces are not available here: {problem}")
    network = Network([*COORDINATORS, *NODES, *MEMBERS])
    etcd: list[subprocess.Popen[bytes]] = []
    cluster: Cluster | None = None
    try:
        network.create()
        etcd = start_etcd(network, tmp_path / "etcd")
        wait_etcd(network, etcd, tmp_path / "etcd")
        hook = NetnsHook(network)
        cluster = Cluster(Generated(
            tmp_path / "cluster", len(NODES), hosts=hook.host, engine=[client_url(network, m) for m in MEMBERS],
            coordinator={"lease_ms": 2000, "republish_interval_ms": 500, "log_level": "debug"},
            node={"durability": "async", "heartbeat_interval_ms": 200, "request_timeout_ms": 1000,
                  "log_level": "debug"}), hooks=[hook])
        cluster.start_all()
        first = wait_for(lambda: leader(cluster), 20, "one leader, named by the others")
        others = [n for n in COORDINATORS if n != first]
        path = tmp_path / "history.jsonl"
        history = HistoryWriter(path)
        workload = Workload(None, history, clients=4, keys=KEYS, seed=13, timeout=3.0, config=cluster.client_config)
        workload.start()
        try:
            wait_for(lambda: completed(history) >= 200, 30, "operations before the fault")
            victim = wait_for(lambda: cluster.members()[-1], 10, "the chain")
            cut = cut_from_engine(network, first)
            cut_at = time.monotonic()
            cluster.kill(victim)

            def left() -> float:
                return max(0.1, cut_at + BOUND - time.monotonic())

            second = wait_for(lambda: leader(cluster, others), left(), f"one of {others} to lead")
            led_after = time.monotonic() - cut_at
            wait_for(lambda: victim not in cluster.members(), left(), f"{victim} to be removed by {second}")
            removed_after = time.monotonic() - cut_at
            log = cluster.log(first)
            assert "no longer leads" in log or "stops leading" in log, log[-4000:]
            assert "the engine did not answer" in log, log[-4000:]
            assert cluster.alive(first)  # it stands by: it did not exit
            # Cut off, it cannot know who leads now, but it no longer answers as the leader.
            reply = ask(cluster, first, {"type": "topology"})
            assert reply is not None and reply.get("code") == "not_leader", reply
            after = completed(history)
            wait_for(lambda: completed(history) >= after + 200, 60, "operations after the repair")
            heal(network, first, cut)
            wait_for(lambda: leader(cluster) == second, 20, f"{first} to stand by naming {second}")
            after = completed(history)
            wait_for(lambda: completed(history) >= after + 100, 30, "operations after the heal")
        finally:
            assert workload.stop(), "a client is stuck past its deadline"
        print(f"{first} cut off from etcd; {second} led {led_after:.2f} s later; {victim} removed "
              f"{removed_after:.2f} s after the cut; cut off, {first} named {reply.get('leader')} as the leader")
        assert cluster.members() == [n for n in NODES if n != victim]
        checked(cluster, history, path, members=2)
    except BaseException:
        if cluster is not None:
            print(cluster.dump_logs())
        raise
    finally:
        try:
            if cluster is not None:
                cluster.close()
        finally:
            try:
                terminate(etcd)
            finally:
                network.destroy()
