"""CURVE on every connection, over real processes: who may connect, who may send what, and that
none of the attacks that worked on an unauthenticated chain changes anything any more.

Every attack ends with the same check: the data read back from every replica, each node asked
directly, is what the real clients wrote.
"""

from __future__ import annotations

import shutil
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
import zmq.auth

from cluster import wait_for
from zcraq import ZClient
from zcraq.cluster import Cluster
from zcraq.errors import AuthenticationError, Forbidden
from zcraq.messages import PROTOCOL_VERSION

pytestmark = pytest.mark.timeout(180)

U32 = struct.Struct(">I")
TIMEOUT_MS = 3000


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def keys(cluster: Cluster) -> Path:
    root = cluster.layout.keys  # type: ignore[attr-defined]
    assert root is not None
    return Path(root)


def public(cluster: Cluster, name: str) -> str:
    return zmq.auth.load_certificate(str(keys(cluster) / f"{name}.key"))[0].decode()


def curve_socket(ctx: zmq.Context, kind: int, endpoint: str, secret: Path | None, server_key: str) -> zmq.Socket:
    """A raw socket, as an attacker would open one: with the key pair in ``secret`` (None: none)."""
    sock = ctx.socket(kind)
    # A PUSH closed right after sending must deliver what it queued first (or give up in 2 s).
    sock.setsockopt(zmq.LINGER, 2000 if kind == zmq.PUSH else 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    if secret is not None:
        own_public, own_secret = zmq.auth.load_certificate(str(secret))
        sock.curve_publickey, sock.curve_secretkey = own_public, own_secret
        sock.curve_serverkey = server_key.encode()
    sock.connect(endpoint)
    return sock


HANDSHAKE_DONE = (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                  zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def handshake(sock: zmq.Socket, timeout: float = 5.0) -> int:
    """Wait (with a deadline) until the socket's security handshake ended; its event."""
    from zmq.utils.monitor import recv_monitor_message

    monitor = sock.get_monitor_socket()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if monitor.poll(100):
                event = int(recv_monitor_message(monitor)["event"])
                if event in HANDSHAKE_DONE:
                    return event
        raise AssertionError(f"no handshake within {timeout} s")
    finally:
        sock.disable_monitor()
        monitor.close(0)


def ask(sock: zmq.Socket, header: dict[str, Any], *values: bytes) -> dict[str, Any] | None:
    """One request over a DEALER; the reply header, or None if nothing came back."""
    sock.send_multipart([b"", orjson.dumps(header), *values])
    try:
        frames = sock.recv_multipart()
    except zmq.Again:
        return None
    return orjson.loads(frames[1])


def chain_frame(header: dict[str, Any], *records: tuple[list[Any], bytes]) -> bytes:
    head = orjson.dumps(header)
    out = U32.pack(len(head)) + head
    for meta, value in records:
        encoded = orjson.dumps(meta)
        out += U32.pack(len(encoded)) + encoded + U32.pack(len(value)) + value
    return out


def secured(make_cluster: Any) -> Cluster:
    return make_cluster(3, secure=True).start_all()


def replicas(cluster: Cluster, key: str) -> dict[str, bytes | None]:
    """The value of ``key`` at every node, each asked directly (strong reads)."""
    found: dict[str, bytes | None] = {}
    with cluster.client() as client:
        for node_id in cluster.node_ids:
            try:
                found[node_id] = client.read(key, node_id)
            except Exception:  # noqa: BLE001 - a missing key reads as None here
                found[node_id] = None
    return found


def assert_replicas(cluster: Cluster, key: str, value: bytes) -> None:
    wait_for(lambda: set(replicas(cluster, key).values()) == {value}, 20,
             f"every replica to hold {value!r} under {key!r}")


# ---------------------------------------------------------------------------------- the chain works


def test_a_secured_chain_serves_reads_and_writes_and_names_each_members_key(make_cluster):
    cluster = secured(make_cluster)
    client = cluster.client()
    topology = client.topology()
    assert [m.key for m in topology.members] == [public(cluster, n) for n in ("node1", "node2", "node3")]
    assert client.write("hello", b"world") == 1
    for node_id in cluster.node_ids:
        assert client.read("hello", node_id) == b"world"
    assert client.delete("hello") == 2
    assert client.write("k", b"v") == 1


# ---------------------------------------------------------------------------------- who may connect


def test_a_client_without_keys_or_with_an_unknown_key_is_refused_at_once(make_cluster, tmp_path):
    cluster = secured(make_cluster)
    started = time.monotonic()
    with ZClient(cluster.coordinator_endpoint, timeout=10) as plain, pytest.raises(AuthenticationError):
        plain.topology()
    assert time.monotonic() - started < 5, "a refused handshake must not look like a timeout"
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    zmq.auth.create_certificates(str(stranger), "stranger")
    config = tmp_path / "stranger.toml"
    config.write_text(f'[client]\ncoordinator = "{cluster.coordinator_endpoint}"\n[security]\n'
                      f'certificate = "{stranger / "stranger.key_secret"}"\n'
                      f'coordinator_key = "{keys(cluster) / "coordinator.key"}"\n')
    started = time.monotonic()
    with ZClient(config=config, timeout=10) as unknown, pytest.raises(AuthenticationError, match="allow-list"):
        unknown.write("k", b"v")
    assert time.monotonic() - started < 5
    assert cluster.client().write("k", b"v") == 1  # the chain is unaffected


def test_a_client_key_may_not_make_node_requests(make_cluster, ctx):
    cluster = secured(make_cluster)
    client_key = keys(cluster) / "client.key_secret"
    coordinator = curve_socket(ctx, zmq.DEALER, cluster.coordinator_endpoint, client_key,
                               public(cluster, "coordinator"))
    node = {"id": "node9", "service": "tcp://127.0.0.1:9", "write_in": "tcp://127.0.0.1:10",
            "ack_in": "tcp://127.0.0.1:11", "key": public(cluster, "client")}
    for header in ({"type": "join", "id": 1, "node": node, "protocol": PROTOCOL_VERSION},
                   {"type": "heartbeat", "id": 2, "node_id": "node2", "epoch": 1, "protocol": PROTOCOL_VERSION},
                   {"type": "caught_up", "id": 3, "node_id": "node2", "epoch": 1},
                   {"type": "leave", "id": 4, "node_id": "node2"}):
        reply = ask(coordinator, header)
        assert reply is not None and reply["code"] == "forbidden", (header, reply)
    assert ask(coordinator, {"type": "topology", "id": 5})["type"] == "ok"
    middle = cluster.service("node2")
    service = curve_socket(ctx, zmq.DEALER, middle, client_key, public(cluster, "node2"))
    for header in ({"type": "version", "id": 1, "key": "k", "epoch": 1},
                   {"type": "catchup", "id": 2, "limit": 10, "epoch": 1},
                   {"type": "confirm", "id": 3, "node_id": "node1", "epoch": 1},
                   {"type": "confirm_many", "id": 5, "node_id": "node1", "epochs": [[0, 1]]}):
        reply = ask(service, header)
        assert reply is not None and reply["code"] == "forbidden", (header, reply)
    assert ask(service, {"type": "status", "id": 4})["type"] == "ok"  # status: any role
    assert cluster.members() == ["node1", "node2", "node3"]
    for sock in (coordinator, service):
        sock.close(0)


# ---------------------------------------------------------------------------------- the attacks


@pytest.mark.parametrize("attacker", ["no key", "client key", "another node's key"])
def test_a_forged_write_frame_changes_nothing(make_cluster, ctx, attacker):
    """Pushed into the tail's write port claiming to come from the middle, in the current epoch;
    and the same with the last possible version into the middle's."""
    cluster = secured(make_cluster)
    client = cluster.client()
    assert client.write("target", b"real-1") == 1
    epoch = client.topology().epoch
    secret = {"no key": None, "client key": keys(cluster) / "client.key_secret",
              "another node's key": keys(cluster) / "node1.key_secret"}[attacker]
    counters_before = cluster.node_status("node3")["counters"]
    for victim, claimed, version in (("node3", "node2", 2), ("node2", "node1", 2**64 - 1)):
        config = cluster.node_configs[victim]
        push = curve_socket(ctx, zmq.PUSH, config.write_endpoint, secret, public(cluster, victim))
        connected = handshake(push) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert connected or secret is None, "a key in the allow-lists must be able to connect"
        for seq in (0, 1, 2):
            frame = chain_frame({"t": "w", "from": claimed, "epoch": epoch, "seq": seq},
                                (["target", version, 1], b"forged"))
            try:
                # Refused, the PUSH may have no pipe to queue on between its reconnects, and a
                # blocking send would then wait forever: a frame it cannot take is not delivered.
                push.send(frame, 0 if connected else zmq.NOBLOCK)
            except zmq.Again:
                pass
        push.close(0)
    assert client.write("target", b"real-2") == 2
    assert client.delete("target") == 3
    assert client.write("target", b"real-4") == 4
    assert_replicas(cluster, "target", b"real-4")
    if secret is not None:  # authenticated, so the frames arrived and were refused by key
        wait_for(lambda: cluster.node_status("node3")["counters"]["forbidden"] > counters_before["forbidden"],
                 10, f"node3 to count the forged frames {cluster.node_status('node3')['counters']}")


def test_a_forged_commit_does_not_make_the_head_acknowledge(make_cluster, ctx):
    """With the middle paused a write cannot commit; commits for it pushed into the head's ack
    port, claiming to come from the middle (with another node's key), must not acknowledge it."""
    import threading

    cluster = secured(make_cluster)
    client = cluster.client()
    assert client.write("k", b"v1") == 1
    epoch = client.topology().epoch
    ack = curve_socket(ctx, zmq.PUSH, cluster.node_configs["node1"].ack_endpoint,
                       keys(cluster) / "node3.key_secret", public(cluster, "node1"))
    assert handshake(ack) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    before = cluster.node_status("node1")["counters"]["forbidden"]
    cluster.pause("node2")
    outcome: dict[str, Any] = {}

    def write() -> None:
        with ZClient(config=cluster.layout.client, timeout=3) as writer:
            try:
                outcome["version"] = writer.write("k", b"v2")
            except Exception as error:  # noqa: BLE001 - what matters is that it is not acknowledged
                outcome["error"] = error

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(lambda: cluster.node_status("node1")["counters"]["writes"] >= 2, 5, "the head to take the write")
        for seq in range(5):
            ack.send(chain_frame({"t": "c", "from": "node2", "epoch": epoch, "seq": seq, "commits": [["k", 2]]}))
        wait_for(lambda: cluster.node_status("node1")["counters"]["forbidden"] >= before + 5, 5,
                 "the head to refuse the forged commits")
        writer.join(10)
        assert "version" not in outcome, "the head acknowledged a write the tail does not have"
    finally:
        cluster.resume("node2")
        writer.join(10)
        ack.close(0)
    wait_for(lambda: client.write("k", b"v3") >= 3, 20, "the chain to take writes again")
    wait_for(cluster.converged, 30, "node2 to be back in the chain")
    assert_replicas(cluster, "k", b"v3")


def test_leave_of_another_node_needs_an_administrator_key(make_cluster, ctx):
    cluster = secured(make_cluster)
    for secret in ("client", "node1"):
        sock = curve_socket(ctx, zmq.DEALER, cluster.coordinator_endpoint, keys(cluster) / f"{secret}.key_secret",
                            public(cluster, "coordinator"))
        reply = ask(sock, {"type": "leave", "id": 1, "node_id": "node3"})
        sock.close(0)
        assert reply is not None and reply["code"] == "forbidden", (secret, reply)
    assert cluster.members() == ["node1", "node2", "node3"]
    admin = curve_socket(ctx, zmq.DEALER, cluster.coordinator_endpoint, keys(cluster) / "admin.key_secret",
                         public(cluster, "coordinator"))
    reply = ask(admin, {"type": "leave", "id": 1, "node_id": "node3"})
    admin.close(0)
    assert reply is not None and reply["type"] == "ok"
    wait_for(lambda: "node3" not in cluster.members(), 10, "node3 to be removed by the administrator")


@pytest.mark.parametrize("secure", [True, False], ids=["curve", "plain"])
def test_a_second_process_with_an_existing_node_id_is_refused_clearly(make_cluster, secure):
    """A copied config: the same id (and key), other ports. The first keeps its place; the second
    is refused with an error that names the clash instead of the two evicting each other."""
    cluster = make_cluster(3, secure=secure).start_all()
    original = cluster.node_configs["node2"].path
    copy = original.with_name("node2-copy.toml")
    text = original.read_text()
    for old, new in (("7100", "7200"), ("7101", "7201"), ("7102", "7202")):
        text = text.replace(f"= {old}\n", f"= {new}\n")
    copy.write_text(text.replace(str(cluster.data_dir("node2")), str(cluster.data_dir("node2")) + "-copy"))
    epoch = cluster.chain_state()["epoch"]
    process = cluster_process(cluster, copy)
    try:
        wait_for(lambda: "node_id_taken" in copy.with_suffix(".log").read_text(errors="replace")
                 or "a second process" in copy.with_suffix(".log").read_text(errors="replace"),
                 20, "the copy to log that its id is taken")
        state = cluster.chain_state()
        assert state["members"] == ["node1", "node2", "node3"] and state["epoch"] == epoch
        assert cluster.node_status("node2")["serving"]
    finally:
        process.terminate()
        process.wait(10)


def cluster_process(cluster: Cluster, config: Path) -> Any:
    import subprocess
    import sys

    log = config.with_suffix(".log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "zcraq", "node", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)


# ---------------------------------------------------------------------------------- operating it


def test_allow_lists_are_reread_on_sighup(make_cluster):
    cluster = secured(make_cluster)
    client = cluster.client()
    assert client.write("k", b"1") == 1
    allowed = keys(cluster) / "clients" / "client.key"
    parked = keys(cluster) / "client.key.parked"
    shutil.move(allowed, parked)
    for name in ("coordinator", *cluster.node_ids):
        cluster.signal(name, signal.SIGHUP)

    def refused() -> bool:
        with ZClient(config=cluster.layout.client, timeout=2) as fresh:
            try:
                fresh.write("k", b"2")
            except (AuthenticationError, Forbidden):
                return True
        return False

    wait_for(refused, 10, "the client's key to be refused once it left the allow-list")
    shutil.move(parked, allowed)
    for name in ("coordinator", *cluster.node_ids):
        cluster.signal(name, signal.SIGHUP)
    wait_for(lambda: ZClient(config=cluster.layout.client, timeout=2).write("k", b"3") >= 2, 10,
             "the client's key to be accepted again")


def test_repeated_warnings_are_rate_limited_and_counted(make_cluster, ctx):
    cluster = make_cluster(1).start_all()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)  # deliver everything queued before closing
    push.connect(cluster.node_configs["node1"].write_endpoint)
    assert handshake(push) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    for _ in range(2000):
        push.send(b"\xff\xff\xff\xffgarbage")
    push.close()
    wait_for(lambda: cluster.node_status("node1")["counters"]["bad_messages"] >= 2000, 20,
             "node1 to count 2000 malformed frames")
    lines = [line for line in cluster.log("node1").splitlines() if "malformed chain frame" in line]
    assert 1 <= len(lines) <= 3, lines


def test_zcraq_run_creates_the_keys_of_config_secure_and_the_cli_uses_them(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "config" / "secure", tmp_path / "config" / "secure")
    run = subprocess.Popen([sys.executable, "-m", "zcraq", "run", "--config-dir", "config/secure"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    output: list[str] = []
    try:
        def ready() -> bool:
            line = run.stdout.readline() if run.stdout else ""
            output.append(line)
            return "chain ready" in line or run.poll() is not None
        wait_for(ready, 60, "zcraq run to report the chain ready")
        assert run.poll() is None, "".join(output)
        assert (tmp_path / "var" / "secure" / "keys" / "node1.key_secret").exists()
        client = ["zcraq", "client", "--config", "config/secure/client.toml"]
        written = subprocess.run([sys.executable, "-m", *client, "write", "hello", "world"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=30)
        assert written.returncode == 0 and "ok version 1" in written.stdout, written
        read = subprocess.run([sys.executable, "-m", *client, "read", "hello"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30)
        assert read.returncode == 0 and read.stdout.strip() == "world", read
        plain = subprocess.run([sys.executable, "-m", "zcraq", "client", "-c", "tcp://127.0.0.1:7500", "read",
                                "hello"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert plain.returncode != 0 and "refused" in plain.stderr, plain
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait(10)
