"""Metrics and probes of real processes over HTTP (README, *Monitoring*): /metrics parsed as
Prometheus text and checked against what the test did, /healthz and /readyz following the node's
state, ``metrics_port = 0`` serving nothing, a port in use refused like the other ports, and
garbage HTTP doing no harm."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from cluster import wait_for
from zcraq import KeyNotFound
from zcraq.cluster import Cluster
from zcraq.layout import COORDINATOR, free_ports
from zcraq.monitoring.http import MAX_CONNECTIONS, REQUEST_DEADLINE

pytestmark = pytest.mark.timeout(180)


# ------------------------------------------------------------------------------------ helpers


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET, whatever the status; status 0 when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError as error:
        return 0, str(error.reason)


class Scrape:
    """One /metrics page, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def has(self, name: str) -> bool:
        return any(sample_name == name for sample_name, _labels in self.samples)


def scrape(cluster: Cluster, name: str) -> Scrape:
    url = cluster.metrics_url(name)
    assert url is not None
    status, text = get(url + "/metrics")
    assert status == 200, text
    return Scrape(text)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on: its socket inodes matched against /proc/net/tcp*."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def raw_request(ctx: zmq.Context, endpoint: str, body: list[bytes]) -> dict[str, Any]:
    """Send a request by hand (as PROTOCOL.md has it) and return the reply header."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"", *body])
        frames = sock.recv_multipart()
    finally:
        sock.close()
    header = orjson.loads(frames[1])
    assert isinstance(header, dict)
    return header


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


# ------------------------------------------------------------------------------------ /metrics


def test_metrics_match_what_the_chain_did(make_cluster, ctx) -> None:
    cluster = make_cluster(3, metrics=True, lease_ms=5000).start_all()
    client = cluster.client()
    writes, deletes = 20, 5
    for i in range(writes):
        client.write(f"key{i}", f"value{i}")
    for i in range(deletes):
        client.delete(f"key{i}")
    reads = {"node1": 4, "node2": 5, "node3": 6}
    for node, count in reads.items():
        for i in range(count):
            assert client.read(f"key{deletes + i}", node) == f"value{deletes + i}".encode()
    with pytest.raises(KeyNotFound):
        client.read("key0", "node2")  # deleted: answered not_found
    # A write sent to a node that is not the head, and bytes that are no request at all.
    assert raw_request(ctx, cluster.service("node2"), [orjson.dumps({"type": "write", "id": 1, "key": "k"}),
                                                       b"v"])["code"] == "not_head"
    assert raw_request(ctx, cluster.service("node3"), [b"\xffnot json"])["code"] == "bad_request"
    cluster.wait(cluster.converged, 30, "the chain to converge")
    epoch = client.topology().epoch

    def settled(name: str, kind: str, expected: int) -> Scrape:
        """A scrape in which ``expected`` replies of ``kind`` have been counted (views lag up to
        250 ms behind the loop)."""
        def counted() -> Scrape | None:
            page = scrape(cluster, name)
            count = page.value("zcraq_request_duration_seconds_count", kind=kind)
            assert count <= expected, (name, kind, count)
            return page if count == expected else None
        return wait_for(counted, 10, f"{name} to count {expected} {kind} replies")

    # Deletes were answered after every write, and a view is one snapshot: one that counts every
    # delete's reply counts every write too.
    head = settled("node1", "delete", deletes)
    assert head.value("zcraq_requests_total", kind="write") == writes
    assert head.value("zcraq_requests_total", kind="delete") == deletes
    assert head.value("zcraq_request_duration_seconds_count", kind="delete") == deletes
    assert head.value("zcraq_request_duration_seconds_bucket", kind="write", le="+Inf") == writes
    assert head.value("zcraq_request_duration_seconds_sum", kind="write") > 0
    assert head.value("zcraq_node_events_total", event="writes") == writes + deletes  # the core's own count
    assert head.value("zcraq_node_role", role="head") == 1 and head.value("zcraq_node_role", role="tail") == 0
    assert head.types["zcraq_requests"] == "counter"
    assert head.types["zcraq_request_duration_seconds"] == "histogram"
    for name, count in reads.items():
        page = settled(name, "read", count + (name == "node2"))
        assert page.value("zcraq_requests_total", kind="read") == count + (name == "node2")
        assert page.value("zcraq_node_epoch") == epoch
        assert page.value("zcraq_node_serving") == 1 and page.value("zcraq_node_caught_up") == 1
        assert page.value("zcraq_node_sent_records") == 0 and page.value("zcraq_node_dirty_keys") == 0
        assert page.value("zcraq_node_store_bytes") > 0
        assert 0 < page.value("zcraq_node_lease_seconds") <= 5
        assert page.value("zcraq_node_catchup_phase", phase="member") == 1
        assert page.value("zcraq_node_info", node=name) == 1
    assert settled("node2", "write", 1).value("zcraq_request_errors_total", kind="write", code="not_head") == 1
    assert scrape(cluster, "node2").value("zcraq_request_errors_total", kind="read", code="not_found") == 1
    assert settled("node3", "malformed", 1).value("zcraq_request_errors_total", kind="malformed",
                                                   code="bad_request") == 1
    assert scrape(cluster, "node3").value("zcraq_node_role", role="tail") == 1
    # Nodes 2 and 3 caught up from their predecessors; each page was a request to it.
    assert scrape(cluster, "node1").value("zcraq_requests_total", kind="catchup") >= 1
    coordinator = scrape(cluster, COORDINATOR)
    assert coordinator.value("zcraq_coordinator_epoch") == epoch
    assert coordinator.value("zcraq_coordinator_members") == 3
    assert coordinator.value("zcraq_coordinator_learner") == 0
    assert coordinator.value("zcraq_coordinator_lease_seconds") == 5
    assert [coordinator.value("zcraq_coordinator_member_position", node=n) for n in ("node1", "node2", "node3")] \
        == [0, 1, 2]
    assert coordinator.value("zcraq_requests_total", kind="join") == 3
    assert coordinator.value("zcraq_requests_total", kind="heartbeat") > 0
    assert coordinator.value("zcraq_coordinator_events_total", event="removals") == 0
    assert coordinator.has("process_cpu_seconds_total")
    for name, pid in cluster.pids().items():  # the metrics port is open, next to the others
        config = cluster.coordinator_config if name == COORDINATOR else cluster.node_configs[name]
        assert config.metrics_port in listening_ports(pid)


def test_sent_list_and_dirty_keys_while_the_tail_is_frozen(make_cluster) -> None:
    """A write the frozen tail cannot commit stays in the head's sent list, its key dirty."""
    cluster = make_cluster(3, metrics=True, lease_ms=8000).start_all()
    client = cluster.client(timeout=30)
    cluster.pause("node3")
    done = threading.Event()
    writer = threading.Thread(target=lambda: (client.write("pending", "value"), done.set()), daemon=True)
    writer.start()
    try:
        def pending() -> bool:
            page = scrape(cluster, "node1")
            return page.value("zcraq_node_sent_records") == 1 and page.value("zcraq_node_dirty_keys") == 1
        wait_for(pending, 5, "the head to hold the write uncommitted")
        assert not done.is_set()
    finally:
        cluster.resume("node3")
    writer.join(30)
    assert done.is_set()
    wait_for(lambda: scrape(cluster, "node1").value("zcraq_node_sent_records") == 0, 10,
             "the head's sent list to empty once the write committed")


def test_catch_up_progress(make_cluster) -> None:
    cluster = make_cluster(2, metrics=True, node={"catchup_page_items": 10})
    cluster.start(COORDINATOR)
    cluster.start("node1")
    cluster.wait_member("node1")
    client = cluster.client()
    for i in range(100):
        client.write(f"key{i}", "value")
    cluster.start("node2")
    cluster.wait_member("node2")
    learner = wait_for(lambda: (page := scrape(cluster, "node2")).value("zcraq_node_serving") == 1 and page, 10,
                       "node2's view to show it serving")
    assert learner.value("zcraq_node_catchup_copied_keys") == 100
    assert learner.value("zcraq_node_catchup_phase", phase="member") == 1
    assert scrape(cluster, "node1").value("zcraq_requests_total", kind="catchup") >= 10  # 10 keys a page
    coordinator = scrape(cluster, COORDINATOR)
    assert coordinator.value("zcraq_requests_total", kind="caught_up") >= 1
    assert coordinator.value("zcraq_coordinator_learner") == 0


# ------------------------------------------------------------------------------------ probes


def probe(cluster: Cluster, name: str, path: str) -> int:
    url = cluster.metrics_url(name)
    assert url is not None
    return get(url + path)[0]


def test_readyz_follows_serving_and_healthz_the_loop(make_cluster) -> None:
    cluster = make_cluster(2, metrics=True, lease_ms=600, heartbeat_ms=100, node={"peer_lease_ms": 300})
    cluster.start(COORDINATOR)
    wait_for(lambda: probe(cluster, COORDINATOR, "/readyz") == 200, 10, "the coordinator to publish a topology")
    assert probe(cluster, COORDINATOR, "/healthz") == 200
    # A node that cannot reach the coordinator runs its loop but does not serve.
    cluster.pause(COORDINATOR)
    cluster.start("node1")
    wait_for(lambda: probe(cluster, "node1", "/healthz") == 200, 10, "node1's loop to run")
    status, text = get(f"{cluster.metrics_url('node1')}/readyz")
    assert (status, text) == (503, "not ready: node1: joining at epoch 0, not serving\n")
    cluster.resume(COORDINATOR)
    wait_for(lambda: probe(cluster, "node1", "/readyz") == 200, 10, "node1 to serve")
    cluster.start("node2")
    cluster.wait_member("node2")
    wait_for(lambda: probe(cluster, "node2", "/readyz") == 200, 10, "node2 to serve")
    # Without the coordinator and its peer, node1's leases run out: it stops serving, and says so.
    cluster.pause(COORDINATOR)
    cluster.pause("node2")
    try:
        wait_for(lambda: probe(cluster, "node1", "/readyz") == 503, 10, "node1 to stop serving")
        page = scrape(cluster, "node1")
        assert page.value("zcraq_node_serving") == 0 and page.value("zcraq_node_lease_seconds") == 0
        assert probe(cluster, "node1", "/healthz") == 200
    finally:
        cluster.resume("node2")
        cluster.resume(COORDINATOR)
    wait_for(lambda: probe(cluster, "node1", "/readyz") == 200, 30, "node1 to serve again")


def test_metrics_port_zero_serves_nothing(make_cluster) -> None:
    cluster = make_cluster(1).start_all()
    pids = cluster.pids()
    node, coordinator = cluster.node_configs["node1"], cluster.coordinator_config
    assert node.metrics_port == 0 and cluster.metrics_url("node1") is None
    assert listening_ports(pids["node1"]) == {node.service_port, node.write_port, node.ack_port}
    assert listening_ports(pids[COORDINATOR]) == {coordinator.port, coordinator.publish_port}


# ------------------------------------------------------------------------------------ config errors



def run_zcraq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zcraq", *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def test_metrics_port_in_use_is_a_config_error(tmp_path: Path, listener: int) -> None:
    service, write, ack, port, publish = free_ports(5)
    node = tmp_path / "node.toml"
    node.write_text(f'[node]\nid = "node1"\ncoordinator = "tcp://127.0.0.1:{port}"\nservice_port = {service}\n'
                    f'write_port = {write}\nack_port = {ack}\ndata_dir = "data"\nmetrics_port = {listener}\n')
    coordinator = tmp_path / "coordinator.toml"
    coordinator.write_text(f'[coordinator]\nport = {port}\npublish_port = {publish}\nstate_dir = "state"\n'
                           f"metrics_port = {listener}\n")
    for kind, path in (("node", node), ("coordinator", coordinator)):
        result = run_zcraq(kind, "--config", str(path))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert (f"zcraq: {path}: {kind}.metrics_port: cannot listen on http://127.0.0.1:{listener}: "
                "Address already in use") in result.stderr, result.stderr


# ------------------------------------------------------------------------------------ garbage


def exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    with socket.create_connection(address, timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def test_garbage_http_does_no_harm(make_cluster) -> None:
    cluster = make_cluster(1, metrics=True).start_all()
    url = cluster.metrics_url("node1")
    assert url is not None
    host, port = url.removeprefix("http://").rsplit(":", 1)
    address = (host, int(port))
    assert status_of(exchange(address, b"GET /nope HTTP/1.0\r\n\r\n")) == 404
    assert status_of(exchange(address, b"POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")) == 405
    assert status_of(exchange(address, b"DELETE /readyz HTTP/1.1\r\nHost: x\r\n\r\n")) == 405
    assert status_of(exchange(address, b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n")) == 414
    assert status_of(exchange(address, b"GET /metrics HTTP/1.0\r\n" + b"X: y\r\n" * 200 + b"\r\n")) == 431
    assert b"505" in exchange(address, b"GET /metrics HTTP/9.9\r\n\r\n")  # answered in HTTP/0.9: no status line
    assert status_of(exchange(address, b"\x00\xff garbage HTTP/1.0\r\n\r\n")) == 405
    assert b"400" in exchange(address, b"\x00\xff\xfe garbage\r\n\r\n")  # read as HTTP/0.9: no status line
    assert exchange(address, os.urandom(3000) + b"\r\n\r\n") is not None  # an answer or a close, no hang
    assert exchange(address, b"") == b""

    # Clients that connect and send nothing take a handler each, until their deadline cuts them off;
    # meanwhile the others are served, and connections beyond the limit are closed at once.
    idle = [socket.create_connection(address, timeout=30) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        assert get(url + "/metrics")[0] == 200
        started = time.monotonic()
        for sock in idle:
            assert sock.recv(1) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - started < REQUEST_DEADLINE + 20
        idle += [socket.create_connection(address, timeout=30) for _ in range(MAX_CONNECTIONS + 4)]
        for sock in idle[MAX_CONNECTIONS - 1:]:
            assert sock.recv(1) == b""  # each is cut off by its deadline or at once, beyond the limit
    finally:
        for sock in idle:
            sock.close()

    assert get(url + "/healthz")[0] == 200 and get(url + "/readyz")[0] == 200
    page = scrape(cluster, "node1")
    assert page.value("zcraq_node_serving") == 1
    client = cluster.client()
    client.write("after", "garbage")
    assert client.read("after") == b"garbage"
    cluster.check()


def test_a_partitioned_node_counts_its_replicas_by_role(make_cluster) -> None:
    cluster = make_cluster(3, metrics=True, cluster={"partitions": 4, "formation_grace_ms": 1000})
    cluster.start_partitioned()
    for node in cluster.node_ids:
        wait_for(lambda: probe(cluster, node, "/readyz") == 200, 10, f"{node} to say it serves")
        page = scrape(cluster, node)
        roles = {role: page.value("zcraq_node_replicas", role=role) for role in ("head", "middle", "tail")}
        assert sum(roles.values()) == 4, roles  # every partition has a replica on every one of 3 nodes
    heads = sum(scrape(cluster, node).value("zcraq_node_replicas", role="head") for node in cluster.node_ids)
    assert heads == 4
