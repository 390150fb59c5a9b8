"""A real cluster for the chaos runner: the coordinator and N nodes as child processes.

Everything lives in one output directory: ``configs/``, ``data/`` (LevelDB directories and the
coordinator's state) and ``logs/`` (one file per process, appended across restarts, each start
marked). Each process is ``sys.executable -m zcraq coordinator|node --config ...``; with a
:class:`~zcraq.chaos.netns.Network` it runs inside its own namespace and binds that namespace's
address, otherwise it binds a loopback address of its own (see :func:`loopback_hosts`). Either
way the ports are fixed, so a restarted process finds them free.

Faults are plain signals: SIGKILL (a crash: nothing is flushed, the data directory stays as it
is), SIGSTOP/SIGCONT (a pause, e.g. a long GC or a frozen VM). A restart reuses the config and the
data directory. ``close`` stops everything and is meant for a ``finally``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zcraq.chaos.netns import Network
from zcraq.client import ZClient
from zcraq.errors import ZcraqError
from zcraq.waiting import wait_until

COORDINATOR = "coordinator"
UNSAFE_ENV = "ZCRAQ_UNSAFE_TEST_FAULTS"
COORDINATOR_PORT, PUBLISH_PORT = 7000, 7001
SERVICE_PORT, WRITE_PORT, ACK_PORT = 7100, 7101, 7102


def _bindable(host: str, ports: list[int]) -> bool:
    holders = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holders.append(sock)
            sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for sock in holders:
            sock.close()


def loopback_hosts(names: list[str]) -> dict[str, str]:
    """One loopback address per process, in a 127.A.B.0/24 of this run's own: every process can
    then use the same fixed ports as in the namespace network, and no other program (they bind
    127.0.0.1) and no outgoing connection (its source is 127.0.0.1) can take a port a process
    needs back when it restarts."""
    for attempt in range(200):
        index = (os.getpid() * 7 + attempt * 7919) % (100 * 256)
        prefix = f"127.{100 + index // 256}.{index % 256}"
        hosts = {name: f"{prefix}.{1 if i == 0 else 10 + i}" for i, name in enumerate(names)}
        if all(_bindable(host, [COORDINATOR_PORT, PUBLISH_PORT, SERVICE_PORT, WRITE_PORT, ACK_PORT])
               for host in hosts.values()):
            return hosts
    raise RuntimeError("no free 127.A.B.0/24 for the cluster's loopback addresses")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_toml(path: Path, table: str, values: dict[str, Any]) -> None:
    path.write_text(f"[{table}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))


def kill_strays(root: Path) -> list[int]:
    """SIGKILL every process whose command line names a file under ``root`` (a safety net for
    children a crashed runner left behind). Returns their pids."""
    marker = str(root.resolve()) + os.sep
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.decode(errors="replace").startswith(marker) for arg in cmdline):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except OSError:
                pass
    return killed


class ChaosCluster:
    def __init__(self, root: Path, nodes: int, *, network: Network | None = None, lease_ms: int = 2000,
                 heartbeat_ms: int = 200, durability: str = "sync", unsafe: str = "",
                 log_level: str = "info") -> None:
        self.root = root
        self.node_ids = [f"node{i}" for i in range(1, nodes + 1)]
        self.network = network
        self.lease_ms = lease_ms
        self.heartbeat_ms = heartbeat_ms
        self.durability = durability
        self.unsafe = unsafe
        self.log_level = log_level
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}
        self.paused: set[str] = set()
        self.unexpected_exits: list[str] = []  # processes found dead that no one had killed
        self._lock = threading.RLock()
        for sub in ("configs", "data", "logs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        names = [COORDINATOR, *self.node_ids]
        self.hosts = dict(network.addresses) if network is not None else loopback_hosts(names)
        self.ports = {name: [COORDINATOR_PORT, PUBLISH_PORT] if name == COORDINATOR
                      else [SERVICE_PORT, WRITE_PORT, ACK_PORT] for name in names}
        self.coordinator_endpoint = f"tcp://{self.hosts[COORDINATOR]}:{self.ports[COORDINATOR][0]}"
        self._write_configs()

    # ------------------------------------------------------------------ configs

    def config_path(self, name: str) -> Path:
        return self.root / "configs" / f"{name}.toml"

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def _write_configs(self) -> None:
        insecure = self.network is not None
        port, publish = self.ports[COORDINATOR]
        coordinator: dict[str, Any] = {
            "bind_host": self.hosts[COORDINATOR], "port": port, "publish_port": publish,
            "state_dir": str(self.root / "data" / "coordinator-state"), "lease_ms": self.lease_ms,
            "republish_interval_ms": 500, "log_level": self.log_level,
        }
        if insecure:
            coordinator["insecure"] = True
        _write_toml(self.config_path(COORDINATOR), "coordinator", coordinator)
        for node_id in self.node_ids:
            service, write, ack = self.ports[node_id]
            node: dict[str, Any] = {
                "id": node_id, "coordinator": self.coordinator_endpoint, "bind_host": self.hosts[node_id],
                "service_port": service, "write_port": write, "ack_port": ack,
                "data_dir": str(self.root / "data" / node_id), "durability": self.durability,
                "heartbeat_interval_ms": self.heartbeat_ms, "request_timeout_ms": 1000,
                "log_level": self.log_level,
            }
            if insecure:
                node["insecure"] = True
            _write_toml(self.config_path(node_id), "node", node)

    def service(self, node_id: str) -> str:
        return f"tcp://{self.hosts[node_id]}:{self.ports[node_id][0]}"

    # ------------------------------------------------------------------ processes

    def start(self, name: str) -> None:
        """Start (or restart) a process with its config and data directory."""
        with self._lock:
            old = self.processes.get(name)
            if old is not None and old.poll() is None:
                raise RuntimeError(f"{name} is already running (pid {old.pid})")
            kind = COORDINATOR if name == COORDINATOR else "node"
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop(UNSAFE_ENV, None)
            if self.unsafe and kind == "node":
                env[UNSAFE_ENV] = self.unsafe
            argv = [sys.executable, "-m", "zcraq", kind, "--config", str(self.config_path(name))]
            if self.network is not None:
                argv = self.network.exec_prefix(name) + argv
            self.starts[name] = self.starts.get(name, 0) + 1
            with open(self.log_path(name), "ab") as log:
                log.write(f"===== chaos: start #{self.starts[name]} of {name} at "
                          f"{time.strftime('%H:%M:%S')} (monotonic {time.monotonic():.3f}) =====\n".encode())
                log.flush()
                self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                        stdin=subprocess.DEVNULL, env=env, cwd=self.root)
            self.paused.discard(name)

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def check_alive(self, name: str) -> None:
        """Note it when ``name`` is dead although no one killed it (a crash of its own is a bug)."""
        process = self.processes[name]
        if process.poll() is not None:
            self.unexpected_exits.append(f"{name} (pid {process.pid}) had exited with {process.returncode}; "
                                         f"see {self.log_path(name)}")

    def kill(self, name: str) -> None:
        """SIGKILL and reap: a crash."""
        with self._lock:
            self.check_alive(name)
            process = self.processes[name]
            if process.poll() is None:
                process.kill()
            process.wait(30)
            self.paused.discard(name)

    def pause(self, name: str) -> None:
        with self._lock:
            self.check_alive(name)
            self.processes[name].send_signal(signal.SIGSTOP)
            self.paused.add(name)

    def resume(self, name: str) -> None:
        with self._lock:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
            self.paused.discard(name)

    def heal(self) -> list[str]:
        """Resume paused processes, restart dead ones, reconnect isolated ones; returns what it did."""
        done = []
        with self._lock:
            if self.network is not None:
                for name in sorted(self.network.isolated):
                    self.network.rejoin(name)
                    done.append(f"reconnected {name}")
            for name in sorted(self.paused):
                self.resume(name)
                done.append(f"resumed {name}")
            for name in (COORDINATOR, *self.node_ids):
                if not self.alive(name):
                    self.check_alive(name)
                    self.start(name)
                    done.append(f"restarted {name}")
        return done

    def start_all(self, timeout: float = 60.0) -> None:
        """Coordinator, then the nodes one at a time (so the chain is node1 -> node2 -> ...)."""
        self.start(COORDINATOR)
        for index, node_id in enumerate(self.node_ids):
            self.start(node_id)
            wanted = self.node_ids[: index + 1]
            self.wait(lambda: self._all_running() and self.members() == wanted, timeout,
                      f"{node_id} to join the chain")
        self.wait(lambda: self._all_running() and self.converged(), timeout, "the chain to serve")

    def _all_running(self) -> bool:
        """True while every started process runs; a process that exited stops the start at once."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log_path(name).read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{name} exited with {process.returncode} while starting: " + " / ".join(tail))
        return True

    def close(self) -> None:
        """Stop every process: SIGCONT and SIGTERM, then SIGKILL what is still running."""
        with self._lock:
            for process in self.processes.values():
                if process.poll() is None:
                    try:
                        process.send_signal(signal.SIGCONT)
                        process.terminate()
                    except OSError:
                        pass
            deadline = time.monotonic() + 5.0
            for process in self.processes.values():
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            kill_strays(self.root)

    # ------------------------------------------------------------------ observing

    def client(self, timeout: float = 1.0) -> ZClient:
        return ZClient(self.coordinator_endpoint, timeout=timeout)

    def members(self) -> list[str]:
        with self.client() as zclient:
            return [m.id for m in zclient.topology().members]

    def chain_state(self) -> dict[str, Any]:
        """The coordinator's topology and each node's own report (or the error asking for it)."""
        state: dict[str, Any] = {}
        with self.client() as zclient:
            topology = zclient.topology()
            state["epoch"] = topology.epoch
            state["members"] = [m.id for m in topology.members]
            state["learner"] = topology.learner.id if topology.learner else None
            state["nodes"] = {}
            for node_id in self.node_ids:
                try:
                    report = zclient.status(self.service(node_id))
                    state["nodes"][node_id] = {k: report.get(k) for k in ("role", "epoch", "serving", "sent")}
                except ZcraqError as error:
                    state["nodes"][node_id] = {"error": str(error)}
        return state

    def converged(self) -> bool:
        """Every node a member and serving, no learner, nothing left uncommitted anywhere."""
        state = self.chain_state()
        if sorted(state["members"]) != sorted(self.node_ids) or state["learner"] is not None:
            return False
        return all(report.get("serving") and report.get("sent") == 0 and report.get("epoch") == state["epoch"]
                   for report in state["nodes"].values())

    @staticmethod
    def wait(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        return wait_until(condition, timeout, what, interval=interval)
