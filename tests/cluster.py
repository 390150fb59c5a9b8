"""Real clusters for tests: a coordinator and nodes as separate processes on loopback.

Each cluster lives in its own temporary directory (configs, LevelDB data, logs) with ports the OS
handed out, so tests run in any order and leave nothing behind. Waits are always a condition
polled against a deadline.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from zcraq.client import ZClient
from zcraq.waiting import wait_until

T = TypeVar("T")


def loopback_host() -> str:
    """An address of its own in 127.0.0.0/8 for one cluster. Its fixed ports cannot collide with
    another cluster's, nor with the ephemeral ports the OS hands to outgoing connections on
    127.0.0.1 (a restarted node must be able to bind its ports again)."""
    rng = random.SystemRandom()
    return f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def free_ports(count: int) -> list[int]:
    """Ports no one listens on right now (held open together so they are distinct)."""
    holders = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            holders.append(sock)
        return [sock.getsockname()[1] for sock in holders]
    finally:
        for sock in holders:
            sock.close()


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test naming ``what`` at the
    deadline. Exceptions from zcraq (a node not ready yet) count as "not yet"."""
    try:
        return wait_until(condition, timeout, what, interval=interval)
    except TimeoutError as error:
        raise AssertionError(str(error)) from None


class Cluster:
    def __init__(self, root: Path, *, lease_ms: int = 2000, heartbeat_ms: int = 200,
                 durability: str = "async", extra_node: dict[str, Any] | None = None) -> None:
        self.root = root
        self.lease_ms = lease_ms
        self.heartbeat_ms = heartbeat_ms
        self.durability = durability
        self.extra_node = extra_node or {}
        self.host = loopback_host()
        self.port, self.publish_port = 7000, 7001
        self.coordinator_endpoint = f"tcp://{self.host}:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.node_ports: dict[str, tuple[int, int, int]] = {}
        self._clients: list[ZClient] = []
        self._write_coordinator_config()

    # ------------------------------------------------------------------ configs

    def _write_coordinator_config(self) -> None:
        (self.root / "coordinator.toml").write_text(
            "[coordinator]\n"
            f'bind_host = "{self.host}"\n'
            f"port = {self.port}\npublish_port = {self.publish_port}\n"
            'state_dir = "coordinator-state"\n'
            f"lease_ms = {self.lease_ms}\nrepublish_interval_ms = 500\n"
            'log_level = "debug"\n')

    def node_config(self, node_id: str) -> Path:
        path = self.root / f"{node_id}.toml"
        if node_id not in self.node_ports:
            base = 7100 + 10 * len(self.node_ports)
            self.node_ports[node_id] = (base + 1, base + 2, base + 3)
        service, write, ack = self.node_ports[node_id]
        extra = "".join(f"{k} = {v!r}\n".replace("'", '"') if isinstance(v, str) else f"{k} = {v}\n"
                        for k, v in self.extra_node.items())
        path.write_text(
            "[node]\n"
            f'id = "{node_id}"\ncoordinator = "{self.coordinator_endpoint}"\nbind_host = "{self.host}"\n'
            f"service_port = {service}\nwrite_port = {write}\nack_port = {ack}\n"
            f'data_dir = "data-{node_id}"\ndurability = "{self.durability}"\n'
            f"heartbeat_interval_ms = {self.heartbeat_ms}\nrequest_timeout_ms = 1000\n"
            f'log_level = "debug"\n{extra}')
        return path

    def service(self, node_id: str) -> str:
        return f"tcp://{self.host}:{self.node_ports[node_id][0]}"

    def data_dir(self, node_id: str) -> Path:
        return self.root / f"data-{node_id}"

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, kind: str, config: Path) -> None:
        log = open(self.root / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "zcraq", kind, "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()

    def start_coordinator(self) -> None:
        self._spawn("coordinator", "coordinator", self.root / "coordinator.toml")

    def start_node(self, node_id: str, wait: bool = True, timeout: float = 30.0) -> None:
        self._spawn(node_id, "node", self.node_config(node_id))
        if wait:
            self.wait_member(node_id, timeout)

    def start(self, nodes: int = 3) -> Cluster:
        self.start_coordinator()
        for index in range(1, nodes + 1):
            self.start_node(f"node{index}")
        return self

    def signal(self, name: str, signum: int) -> None:
        self.processes[name].send_signal(signum)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait(10)

    def stop(self, name: str, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise AssertionError(f"{name} did not stop within {timeout:g}s of SIGTERM") from None

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ observing

    def client(self, timeout: float = 5.0) -> ZClient:
        zclient = ZClient(self.coordinator_endpoint, timeout=timeout)
        self._clients.append(zclient)
        return zclient

    def members(self) -> list[str]:
        with ZClient(self.coordinator_endpoint, timeout=1.0) as zclient:
            return [m.id for m in zclient.topology().members]

    def node_status(self, node_id: str) -> dict[str, Any]:
        with ZClient(self.coordinator_endpoint, timeout=2.0) as zclient:
            return zclient.status(self.service(node_id))

    def wait_member(self, node_id: str, timeout: float = 30.0) -> None:
        """Until the node is in the chain and serving (a tail waits for its sync frame)."""
        wait_for(lambda: node_id in self.members() and self.node_status(node_id)["serving"],
                 timeout, f"{node_id} to join the chain and serve")

    def close(self) -> None:
        for zclient in self._clients:
            zclient.close()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for name in list(self.processes):
            try:
                self.stop(name, timeout=5.0)
            except AssertionError:
                pass

    def dump_logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{self.log(name)[-6000:]}" for name in self.processes)
