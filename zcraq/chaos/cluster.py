"""The chaos runner's cluster: the launcher (zcraq/cluster.py) with the runner's settings.

Everything lives in the run's output directory: ``configs/``, ``data/`` (LevelDB directories and
the coordinator's state) and ``logs/`` (one file per process, appended across restarts, each start
marked). With a :class:`~zcraq.chaos.netns.Network` every process runs inside a namespace of its
own and binds that namespace's address (:class:`NetnsHook`); otherwise a loopback address of its
own. The nodes get the deliberate faults asked for (``ZCRAQ_UNSAFE_TEST_FAULTS``), the coordinator
never. ``heal`` undoes every fault at once; ``close`` is meant for a ``finally``. With an engine
(a local etcd the runner started), three coordinators keep their state in it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from zcraq.chaos.netns import Network
from zcraq.client import ZClient
from zcraq.cluster import Cluster, Environment, Hook
from zcraq.engine.local import LocalEtcd
from zcraq.errors import ZcraqError
from zcraq.layout import Generated

UNSAFE_ENV = "ZCRAQ_UNSAFE_TEST_FAULTS"


class NetnsHook(Hook):
    """Each process inside its own namespace of ``network``, bound to that namespace's address."""

    def __init__(self, network: Network) -> None:
        self.network = network

    def host(self, name: str) -> str:
        return self.network.addresses[name]

    def prefix(self, name: str) -> list[str]:
        return self.network.exec_prefix(name)


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


class ChaosCluster(Cluster):
    def __init__(self, root: Path, nodes: int, *, network: Network | None = None, lease_ms: int = 2000,
                 heartbeat_ms: int = 200, durability: str = "sync", unsafe: str = "",
                 log_level: str = "info", partitions: int = 1, engine: LocalEtcd | None = None) -> None:
        hooks: list[Hook] = [Environment({UNSAFE_ENV: unsafe})]
        netns = NetnsHook(network) if network is not None else None
        if netns is not None:
            hooks.append(netns)
        layout = Generated(
            root, nodes, hosts=netns.host if netns is not None else None,
            coordinator={"lease_ms": lease_ms, "republish_interval_ms": 500, "log_level": log_level},
            node={"durability": durability, "heartbeat_interval_ms": heartbeat_ms, "request_timeout_ms": 1000,
                  "log_level": log_level},
            cluster={"partitions": partitions, "formation_grace_ms": 1000} if partitions > 1 else None,
            engine=engine.endpoints if engine is not None else None)
        super().__init__(layout, hooks=hooks)
        self.root = root
        self.network = network
        self.engine = engine  # the local etcd of coordinators on an engine (started and stopped by the runner)

    # ------------------------------------------------------------------ coordinators on an engine

    def leader(self) -> str:
        """The coordinator that leads now (ValueError: none does)."""
        for name in self.coordinator_names:
            if not self.alive(name) or name in self.paused:
                continue
            try:
                with ZClient(self.coordinator_configs[name].endpoint, timeout=0.5) as client:
                    client.topology()
                return name
            except ZcraqError:
                continue
        raise ValueError("no coordinator leads now")

    def kill_engine_member(self, name: str) -> None:
        assert self.engine is not None, "an etcd fault needs coordinators on an engine"
        self.engine.kill_member(self._member(name))

    def start_engine_member(self, name: str) -> None:
        assert self.engine is not None
        self.engine.start_member(self._member(name))

    def _member(self, name: str) -> int:
        assert self.engine is not None
        return [m.name for m in self.engine.members].index(name)

    def heal(self) -> list[str]:
        """Reconnect isolated processes, resume paused ones, restart dead ones; returns what it did."""
        done = []
        with self._lock:
            if self.network is not None:
                for name in sorted(self.network.isolated):
                    self.network.rejoin(name)
                    done.append(f"reconnected {name}")
            for name in sorted(self.paused):
                self.resume(name)
                done.append(f"resumed {name}")
            if self.engine is not None:
                for index, member in enumerate(self.engine.members):
                    if member.process is None or member.process.poll() is not None:
                        self.engine.start_member(index)
                        done.append(f"restarted {member.name}")
            for name in (*self.coordinator_names, *self.node_ids):
                if not self.alive(name):
                    self.start(name)
                    done.append(f"restarted {name}")
        return done

    def close(self, grace: float = 10.0) -> None:
        try:
            super().close(grace)
        finally:
            kill_strays(self.root)
