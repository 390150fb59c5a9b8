"""systemd notifications (zcraq/notify.py) as systemd would receive them: a unix datagram socket
of our own stands in for systemd's, and real processes get its name in $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import wait_for
from zcraq.cluster import ProcessEnvironments
from zcraq.layout import COORDINATOR
from zcraq.notify import Notifier

pytestmark = pytest.mark.timeout(120)


class FakeSystemd:
    """A NOTIFY_SOCKET: every datagram received, as a list of NAME=value lines."""

    def __init__(self, address: str) -> None:
        self.name = address  # as $NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def receive(self) -> list[list[str]]:
        """Every datagram so far (reading what has arrived since the last call)."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return self.messages

    def lines(self, prefix: str) -> list[str]:
        return [line for message in self.receive() for line in message if line.startswith(prefix)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path has at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="zcraq-notify-") as directory:
        yield Path(directory)


@pytest.fixture
def systemd(short_dir: Path) -> Iterator[dict[str, FakeSystemd]]:
    """One socket per process: a path for the node, the abstract namespace for the coordinator."""
    sockets = {"node1": FakeSystemd(str(short_dir / "node1.sock")),
               COORDINATOR: FakeSystemd(f"@zcraq-test-{uuid.uuid4().hex}")}
    yield sockets
    for sock in sockets.values():
        sock.close()


def test_ready_status_watchdog_and_stopping(make_cluster, systemd: dict[str, FakeSystemd]) -> None:
    environments = {name: {"NOTIFY_SOCKET": sock.name, "WATCHDOG_USEC": "200000"} for name, sock in systemd.items()}
    cluster = make_cluster(1, hooks=[ProcessEnvironments(environments)])
    coordinator, node = systemd[COORDINATOR], systemd["node1"]

    cluster.start(COORDINATOR)
    wait_for(lambda: coordinator.lines("READY=1"), 10, "the coordinator to be ready")
    first = next(m for m in coordinator.receive() if "READY=1" in m)
    assert "STATUS=epoch 0: no members" in first  # ready once it published its first (empty) topology

    # A node that cannot register is running (its watchdog goes on) but not ready.
    cluster.pause(COORDINATOR)
    cluster.start("node1")
    wait_for(lambda: len(node.lines("WATCHDOG=1")) >= 5, 10, "node1 to pet the watchdog")
    assert node.lines("STATUS=") == ["STATUS=node1: joining at epoch 0, not serving"]
    assert not node.lines("READY=1")
    assert node.lines("EXTEND_TIMEOUT_USEC=") == ["EXTEND_TIMEOUT_USEC=300000000"]  # with its first status

    cluster.resume(COORDINATOR)
    wait_for(lambda: node.lines("READY=1"), 10, "node1 to be ready")
    assert cluster.serving("node1")
    ready_at = next(i for i, m in enumerate(node.receive()) if "READY=1" in m)
    ready = node.messages[ready_at]
    assert re.fullmatch(r"STATUS=node1: head\+tail at epoch \d+, serving", ready[-1]), ready
    earlier = [line for message in node.messages[:ready_at] for line in message if line.startswith("STATUS=")]
    assert all(line.endswith(", not serving") for line in earlier), earlier
    assert not any(line.startswith("EXTEND_TIMEOUT_USEC=") for message in node.messages[ready_at:]
                   for line in message)  # started: no more time needed

    epoch = cluster.client().topology().epoch
    wait_for(lambda: f"STATUS=epoch {epoch}: node1" in coordinator.lines("STATUS="), 10,
             "the coordinator's status to show the chain")
    for sock in (node, coordinator):
        statuses = sock.lines("STATUS=")
        assert all(a != b for a, b in zip(statuses, statuses[1:])), statuses  # sent on change only
        assert len(sock.lines("READY=1")) == 1
    wait_for(lambda: len(coordinator.lines("WATCHDOG=1")) >= 5, 10, "the coordinator to pet the watchdog")

    cluster.stop("node1")
    assert node.lines("STOPPING=1") == ["STOPPING=1"]
    cluster.stop(COORDINATOR)
    assert coordinator.lines("STOPPING=1") == ["STOPPING=1"]


# ------------------------------------------------------------------------------------ the notifier


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.report("anything", ready=True)
    notifier.watchdog(0.0)
    notifier.stopping()


def test_watchdog_only_for_our_pid_and_at_half_the_interval(short_dir: Path) -> None:
    fake = FakeSystemd(str(short_dir / "s"))
    try:
        other = Notifier({"NOTIFY_SOCKET": fake.name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
        other.watchdog(100.0)
        assert fake.receive() == []
        ours = Notifier({"NOTIFY_SOCKET": fake.name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
        for now in (100.0, 100.2, 100.49, 100.5, 100.9, 101.0):
            ours.watchdog(now)
        assert len(fake.receive()) == 3  # at 100.0, 100.5 and 101.0
    finally:
        fake.close()


def test_a_socket_that_is_gone_costs_nothing_but_a_warning(short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeSystemd(str(short_dir / "s"))
    notifier = Notifier({"NOTIFY_SOCKET": fake.name, "WATCHDOG_USEC": "1000"})
    notifier.report("up", ready=True)
    assert fake.receive() == [["READY=1", "STATUS=up"]]
    fake.close()
    os.unlink(fake.name)
    for now in range(5):
        notifier.report(f"status {now}", ready=True)
        notifier.watchdog(float(now))
    notifier.stopping()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    notifier.close()
