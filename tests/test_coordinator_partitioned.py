"""The coordinator process of a partitioned cluster (zcraq/coordinator_partitioned.py), over real
sockets: raw DEALERs play the nodes (register, heartbeat, join the partitions the table assigns
them, report caught up at once) and the administrator; a SUB reads the table publication.

No node process runs here: the nodes' endpoints are never connected to, except by writes the
coordinator forwards, which these tests do not send to a formed partition.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomli_w
import zmq

from cluster import wait_for
from zcraq.cluster import Cluster
from zcraq.messages import PROTOCOL_VERSION
from zcraq.partitioning import partition_of

pytestmark = pytest.mark.timeout(120)

TIMEOUT_MS = 5000
PARTITIONS = 4


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def dealer(ctx: zmq.Context, endpoint: str, secret: Path | None = None, server_key: str | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    if secret is not None and server_key is not None:
        own_public, own_secret = zmq.auth.load_certificate(str(secret))
        sock.curve_publickey, sock.curve_secretkey = own_public, own_secret
        sock.curve_serverkey = server_key.encode()
    sock.connect(endpoint)
    return sock


_ids = iter(range(1, 1 << 30))


def ask(sock: zmq.Socket, header: dict[str, Any]) -> dict[str, Any]:
    """One request; its reply (answers to earlier requests given up on are skipped)."""
    request_id = next(_ids)
    sock.send_multipart([b"", orjson.dumps({**header, "id": request_id})])
    while True:
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            raise AssertionError(f"no reply to {header}") from None
        reply = orjson.loads(frames[1])
        if reply.get("id") == request_id:
            return reply


def set_cluster_table(cluster: Cluster, table: dict[str, Any] | None) -> None:
    """Give the coordinator's config file this ``[cluster]`` table (None: none)."""
    path = cluster.config_path("coordinator")
    data = tomllib.loads(path.read_text())
    data.pop("cluster", None)
    if table is not None:
        data["cluster"] = table
    path.write_text(tomli_w.dumps(data))


class FakeNode:
    """A node as the coordinator sees one: its requests, and what it does with a table."""

    def __init__(self, ctx: zmq.Context, endpoint: str, index: int, zone: str) -> None:
        self.id = f"node{index}"
        self.zone = zone
        base = 30000 + 10 * index
        self.member = {"id": self.id, "service": f"tcp://127.0.0.1:{base}", "write_in": f"tcp://127.0.0.1:{base + 1}",
                       "ack_in": f"tcp://127.0.0.1:{base + 2}", "key": None}
        self.sock = dealer(ctx, endpoint)
        self.joined: set[int] = set()

    def register(self) -> dict[str, Any]:
        return ask(self.sock, {"type": "join", "protocol": PROTOCOL_VERSION, "node": self.member, "zone": self.zone})

    def join(self, partition: int) -> dict[str, Any]:
        return ask(self.sock, {"type": "join", "protocol": PROTOCOL_VERSION, "node": self.member,
                               "partition": partition})

    def beat(self, table: dict[str, Any] | None) -> dict[str, Any]:
        reply = ask(self.sock, {"type": "heartbeat", "node_id": self.id, "epoch": 0, "protocol": PROTOCOL_VERSION})
        for entry in table["partitions"] if table else []:
            if entry["partition"] in self.joined:
                ask(self.sock, {"type": "heartbeat", "node_id": self.id, "epoch": entry["topology"]["epoch"],
                                "protocol": PROTOCOL_VERSION, "partition": entry["partition"]})
        return reply

    def act(self, table: dict[str, Any]) -> None:
        """Join what the table assigns, report caught up where a learner, drop what it lost."""
        for entry in table["partitions"]:
            p, topology = entry["partition"], entry["topology"]
            members = [m["id"] for m in topology["members"]]
            learner = topology["learner"]["id"] if topology["learner"] else None
            placed = self.id in members or learner == self.id
            if not placed:
                self.joined.discard(p)  # removed (a rotation assigns it back: it joins again below)
            if p in self.joined and learner == self.id:
                ask(self.sock, {"type": "caught_up", "node_id": self.id, "epoch": topology["epoch"], "partition": p})
            elif p not in self.joined and (entry["assigned"] == self.id or placed):
                if self.join(p)["type"] == "ok":
                    self.joined.add(p)


def table_of(sock: zmq.Socket) -> dict[str, Any]:
    reply = ask(sock, {"type": "topology"})
    assert reply["type"] == "ok" and "topology" not in reply, reply
    return reply["table"]


def run_nodes(admin: zmq.Socket, nodes: list[FakeNode], done: Any, timeout: float, what: str) -> dict[str, Any]:
    """Let the nodes act on the table until ``done(table)``; the table then."""
    def turn() -> dict[str, Any] | None:
        table = table_of(admin)
        if done(table):
            return table
        for node in nodes:
            node.beat(table)
            node.act(table)
        return None

    return wait_for(turn, timeout, what, interval=0.1)


def whole(table: dict[str, Any], replication: int) -> bool:
    return all(len(e["topology"]["members"]) == replication and e["topology"]["learner"] is None
               for e in table["partitions"])


def start_partitioned(make_cluster: Any, **cluster_keys: Any) -> Cluster:
    cluster = make_cluster(0)
    set_cluster_table(cluster, {"partitions": PARTITIONS, "replication": 2, **cluster_keys})
    cluster.start("coordinator")
    return cluster


# ------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("table, problem", [
    ({"partitions": 0}, "cluster.partitions: expected an integer from 1 to 4096"),
    ({"partitions": 4097}, "cluster.partitions: expected an integer from 1 to 4096"),
    ({"partitions": 4, "replication": 17}, "cluster.replication: expected an integer from 1 to 16"),
    ({"partitions": 4, "max_moves": 0}, "cluster.max_moves"),
    ({"partitions": 4, "partiton": 3}, 'cluster.partiton: unknown key (did you mean "partitions"?)'),
])
def test_a_bad_cluster_table_stops_the_coordinator_with_a_clear_error(make_cluster, table, problem):
    cluster = make_cluster(0)
    set_cluster_table(cluster, table)
    result = subprocess.run([sys.executable, "-m", "zcraq", "coordinator", "--config",
                             str(cluster.config_path("coordinator"))], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert problem in result.stderr


# ------------------------------------------------------------------------------------- requests


def test_nodes_register_and_the_table_places_partitions_on_them(make_cluster, ctx):
    cluster = start_partitioned(make_cluster, formation_grace_ms=60_000)
    admin = dealer(ctx, cluster.coordinator_endpoint)
    table = wait_for(lambda: table_of(admin), 20, "the coordinator to answer")
    assert [e["partition"] for e in table["partitions"]] == list(range(PARTITIONS))
    assert all(e["topology"]["members"] == [] and e["assigned"] is None for e in table["partitions"])
    assert table["nodes"] == []

    node1, node2 = (FakeNode(ctx, cluster.coordinator_endpoint, i, zone) for i, zone in ((1, "a"), (2, "b")))
    reply = node1.register()
    assert reply["type"] == "ok" and reply["publish"] == cluster.publish_endpoint and reply["lease_ms"] == 2000
    assert isinstance(reply["table_version"], int)
    # One node of two: the new cluster waits (formation grace) and assigns nothing.
    refused = node1.join(0)
    assert (refused["type"], refused["code"]) == ("error", "not_assigned"), refused
    assert table_of(admin)["nodes"] == [{"id": "node1", "zone": "a", "draining": False}]

    assert node2.register()["type"] == "ok"
    table = run_nodes(admin, [node1, node2], lambda t: whole(t, 2), 30, "every partition to have two replicas")
    for entry in table["partitions"]:
        assert sorted(m["id"] for m in entry["topology"]["members"]) == ["node1", "node2"]
    beat = node1.beat(table)
    assert beat["type"] == "ok" and beat["table_version"] >= 1 and beat["lease_ms"] == 2000
    unknown = ask(admin, {"type": "heartbeat", "node_id": "node9", "epoch": 0, "protocol": PROTOCOL_VERSION})
    assert unknown["code"] == "unknown_node"

    # A partition's own requests reach its chain.
    topology = ask(admin, {"type": "topology", "partition": 2})
    assert topology["type"] == "ok" and topology["topology"] == table["partitions"][2]["topology"]
    status = ask(admin, {"type": "status"})
    assert status["type"] == "ok" and status["table"]["partitions"] and "registrations" in status["counters"]
    assert ask(admin, {"type": "caught_up", "node_id": "node1", "epoch": 1})["code"] == "bad_request"
    assert ask(admin, {"type": "topology", "partition": PARTITIONS})["code"] == "bad_request"
    key = "some-key"
    other = (partition_of(key, PARTITIONS) + 1) % PARTITIONS
    misrouted = ask(admin, {"type": "delete", "key": key, "partition": other})
    assert misrouted["code"] == "wrong_partition", misrouted

    # Drain: the node is marked at once, placement then moves its replicas (none may go: R = 2 nodes).
    assert ask(admin, {"type": "drain", "node_id": "node2"})["type"] == "ok"
    table = table_of(admin)
    assert {"id": "node2", "zone": "b", "draining": True} in table["nodes"]
    assert ask(admin, {"type": "drain", "node_id": "node2", "draining": False})["type"] == "ok"
    assert {"id": "node2", "zone": "b", "draining": False} in table_of(admin)["nodes"]
    assert ask(admin, {"type": "drain", "node_id": "node9"})["code"] == "unknown_node"
    assert ask(admin, {"type": "drain", "node_id": "node2", "partition": 1})["code"] == "bad_request"


def test_a_drained_node_loses_its_replicas(make_cluster, ctx):
    cluster = start_partitioned(make_cluster, formation_grace_ms=0)
    admin = dealer(ctx, cluster.coordinator_endpoint)
    wait_for(lambda: table_of(admin), 20, "the coordinator to answer")
    nodes = [FakeNode(ctx, cluster.coordinator_endpoint, i, f"zone{i}") for i in (1, 2, 3)]
    for node in nodes:
        assert node.register()["type"] == "ok"

    def placed_on(table: dict[str, Any], node_id: str) -> bool:
        return any(node_id in [m["id"] for m in e["topology"]["members"]] for e in table["partitions"])

    run_nodes(admin, nodes, lambda t: whole(t, 2) and placed_on(t, "node3"), 30, "node3 to hold a replica")
    assert ask(admin, {"type": "drain", "node_id": "node3"})["type"] == "ok"
    table = run_nodes(admin, nodes, lambda t: whole(t, 2) and not placed_on(t, "node3"), 30,
                      "every replica to move off node3")
    assert all(e["assigned"] != "node3" for e in table["partitions"])


def test_the_table_is_published_on_its_topic(make_cluster, ctx):
    cluster = start_partitioned(make_cluster)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    sub.setsockopt(zmq.SUBSCRIBE, b"table")
    sub.connect(cluster.publish_endpoint)
    admin = dealer(ctx, cluster.coordinator_endpoint)
    wait_for(lambda: table_of(admin), 20, "the coordinator to answer")
    node = FakeNode(ctx, cluster.coordinator_endpoint, 1, "")
    assert node.register()["type"] == "ok"

    def published_with_node() -> dict[str, Any] | None:
        node.beat(None)
        topic, body = sub.recv_multipart()  # republished every 500 ms
        assert topic == b"table"
        table = orjson.loads(body)
        return table if table["nodes"] else None

    table = wait_for(published_with_node, 20, "a published table naming node1")
    assert len(table["partitions"]) == PARTITIONS and table["version"] >= 1
    assert table["nodes"] == [{"id": "node1", "zone": "", "draining": False}]


def test_a_restart_keeps_the_table_and_refuses_another_shape(make_cluster, ctx):
    cluster = start_partitioned(make_cluster, formation_grace_ms=0, replication=1)
    admin = dealer(ctx, cluster.coordinator_endpoint)
    wait_for(lambda: table_of(admin), 20, "the coordinator to answer")
    node = FakeNode(ctx, cluster.coordinator_endpoint, 1, "z")
    assert node.register()["type"] == "ok"
    before = run_nodes(admin, [node], lambda t: whole(t, 1), 30, "every partition to have its replica")
    assert (cluster.config_path("coordinator").parent.parent / "data" / "coordinator" / "state.json").exists()

    cluster.restart("coordinator")
    after = wait_for(lambda: table_of(admin), 20, "the restarted coordinator to answer")
    assert [e["topology"] for e in after["partitions"]] == [e["topology"] for e in before["partitions"]]
    assert after["nodes"] == before["nodes"] and after["version"] >= before["version"]
    cluster.stop("coordinator")

    for table, problem in (({"partitions": 8, "replication": 1}, "8"), (None, "no [cluster] partitions")):
        set_cluster_table(cluster, table)
        result = subprocess.run([sys.executable, "-m", "zcraq", "coordinator", "--config",
                                 str(cluster.config_path("coordinator"))], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result
        assert "a cluster's shape is fixed when it is created" in result.stderr and problem in result.stderr


def test_a_one_chain_state_is_not_run_as_a_partitioned_cluster(make_cluster):
    cluster = make_cluster(0)
    set_cluster_table(cluster, {"partitions": 1})
    cluster.start("coordinator")
    deadline = time.monotonic() + 20
    state = cluster.config_path("coordinator").parent.parent / "data" / "coordinator" / "state.json"
    with zmq.Context() as context:
        sock = dealer(context, cluster.coordinator_endpoint)
        # A one-partition cluster runs the one-chain coordinator: a topology reply, drain refused.
        reply = wait_for(lambda: ask(sock, {"type": "topology"}), deadline - time.monotonic(), "the coordinator")
        assert reply["type"] == "ok" and "topology" in reply and "table" not in reply
        refused = ask(sock, {"type": "drain", "node_id": "node1"})
        assert refused["code"] == "bad_request" and "one chain" in refused["message"]
        node = FakeNode(context, cluster.coordinator_endpoint, 1, "")
        assert node.register()["type"] == "ok"  # a one-chain join: the state has a topology now
        sock.close(0)
        node.sock.close(0)
    assert state.exists()
    cluster.stop("coordinator")
    set_cluster_table(cluster, {"partitions": 4})
    result = subprocess.run([sys.executable, "-m", "zcraq", "coordinator", "--config",
                             str(cluster.config_path("coordinator"))], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "one-chain cluster" in result.stderr and "a cluster's shape is fixed when it is created" in result.stderr


def test_drain_needs_an_administrator_key(make_cluster, ctx):
    cluster = make_cluster(0, secure=True)
    set_cluster_table(cluster, {"partitions": PARTITIONS})
    cluster.start("coordinator")
    keys = Path(cluster.layout.keys)  # type: ignore[attr-defined]
    server = zmq.auth.load_certificate(str(keys / "coordinator.key"))[0].decode()
    client = dealer(ctx, cluster.coordinator_endpoint, keys / "client.key_secret", server)
    admin = dealer(ctx, cluster.coordinator_endpoint, keys / "admin.key_secret", server)
    refused = wait_for(lambda: ask(client, {"type": "drain", "node_id": "node1"}), 20, "the coordinator")
    assert refused["code"] == "forbidden", refused
    assert "table" in ask(client, {"type": "topology"})  # a client may read the table
    # The administrator passes: node1 is simply not registered.
    assert ask(admin, {"type": "drain", "node_id": "node1"})["code"] == "unknown_node"


def zcraq_admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcraq", "admin", *args], capture_output=True, text=True, timeout=60)


def test_zcraq_admin_drain(make_cluster, ctx):
    cluster = start_partitioned(make_cluster)
    admin = dealer(ctx, cluster.coordinator_endpoint)
    wait_for(lambda: table_of(admin), 20, "the coordinator to answer")
    assert FakeNode(ctx, cluster.coordinator_endpoint, 1, "").register()["type"] == "ok"
    endpoint = cluster.coordinator_endpoint

    done = zcraq_admin("drain", "node1", "-c", endpoint)
    assert (done.returncode, done.stdout) == (0, "node1 draining: its replicas move to other nodes\n"), done
    assert table_of(admin)["nodes"][0]["draining"] is True
    undone = zcraq_admin("-c", endpoint, "drain", "--undo", "node1", "--json")
    assert (undone.returncode, orjson.loads(undone.stdout)) == (0, {"node": "node1", "draining": False}), undone
    assert table_of(admin)["nodes"][0]["draining"] is False
    unknown = zcraq_admin("drain", "node9", "-c", endpoint, "--json")
    assert unknown.returncode == 3 and orjson.loads(unknown.stdout)["message"] == "node9 is not registered", unknown


def test_zcraq_admin_drain_with_keys_and_on_one_chain(make_cluster):
    cluster = make_cluster(0, secure=True)
    cluster.start("coordinator")  # no [cluster]: one chain
    admin_config, client_config = cluster.layout.admins[0], cluster.layout.client
    assert client_config is not None
    refused = wait_for(lambda: (r := zcraq_admin("drain", "node1", "--config", str(client_config))).stderr and r,
                       20, "the coordinator to refuse a client's drain")
    assert refused.returncode == 5 and "administrator" in refused.stderr, refused
    one_chain = zcraq_admin("drain", "node1", "--config", str(admin_config))
    assert one_chain.returncode == 5 and "this cluster has one chain and no partitions to move" in one_chain.stderr
