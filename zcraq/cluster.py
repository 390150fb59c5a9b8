"""The one launcher of zcraq processes: a coordinator and its chain nodes, as child processes.

It owns their whole life: starting them (``python -m zcraq coordinator|node --config FILE``, from
the config files of a zcraq/layout.py Layout) and waiting until the chain serves; faults (kill,
pause, resume, restart); stopping (the nodes first, so that they leave the chain cleanly, then the
coordinator); and watching the chain (members, node status, convergence, logs, processes that died
on their own). Tests, benchmarks, the chaos runner and ``zcraq run`` all start their clusters here;
what differs between them is a :class:`Hook` (a network namespace, a CPU quota, a profiler, an
environment) that changes how a process is started.

Every wait is a condition polled against a deadline (zcraq/waiting.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from zcraq.client import ZClient
from zcraq.clientroutes import Partition
from zcraq.config import CoordinatorConfig, NodeConfig, load_coordinator_config, load_node_config
from zcraq.errors import ZcraqError
from zcraq.layout import Layout, is_coordinator
from zcraq.processes import kill, spawn, terminate
from zcraq.waiting import wait_until

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Hooks


class Hook:
    """One difference in how a cluster starts its processes. Every method does nothing here; a
    hook overrides the ones it needs. ``name`` is "coordinator" or a node id."""

    def prefix(self, name: str) -> list[str]:
        """Words before the command that starts ``name`` (e.g. ``ip netns exec NS``)."""
        return []

    def program(self, name: str) -> list[str] | None:
        """What runs ``name`` instead of ``python -m zcraq`` (e.g. a profiler), or None."""
        return None

    def environment(self, name: str, env: dict[str, str]) -> None:
        """Change the environment ``name`` starts with."""

    def started(self, name: str, pid: int) -> None:
        """``name`` runs now, as ``pid`` (e.g. to put it into a cgroup)."""

    def closed(self) -> None:
        """Every process of the cluster has stopped (e.g. to remove cgroups: they must be empty)."""


class Environment(Hook):
    """Variables for the nodes only (e.g. deliberate faults); the coordinator starts without them,
    even if the launcher's own environment has them."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def environment(self, name: str, env: dict[str, str]) -> None:
        for key, value in self.values.items():
            env.pop(key, None)
            if not is_coordinator(name):
                env[key] = value


class ProcessEnvironments(Hook):
    """Variables of each process by name, the coordinator included (e.g. a NOTIFY_SOCKET of its
    own); a process not named starts with the launcher's environment."""

    def __init__(self, values: Mapping[str, Mapping[str, str]]) -> None:
        self.values = {name: dict(variables) for name, variables in values.items()}

    def environment(self, name: str, env: dict[str, str]) -> None:
        env.update(self.values.get(name, {}))


# ---------------------------------------------------------------------------------------------
# The cluster


@dataclass(frozen=True)
class Exit:
    """A process found dead although no one stopped it."""

    name: str
    pid: int
    code: int
    log: Path | None

    def __str__(self) -> str:
        try:
            how = f"signal {signal.Signals(-self.code).name}" if self.code < 0 else f"code {self.code}"
        except ValueError:
            how = f"code {self.code}"
        return f"{self.name} (pid {self.pid}) exited with {how}" + (f"; see {self.log}" if self.log else "")


class ProcessExited(RuntimeError):
    """A process of the cluster exited on its own: there is no use waiting for the chain."""

    def __init__(self, exits: list[Exit], tail: str) -> None:
        self.exits = exits
        super().__init__("; ".join(map(str, exits)) + (f"\nits log ends:\n{tail}" if tail else ""))


class Cluster:
    """The processes of one cluster, by name ("coordinator", "node1", ...), started from the config
    files of a :class:`Layout` with the given hooks. Safe to drive from several threads."""

    def __init__(self, layout: Layout, *, hooks: Sequence[Hook] = ()) -> None:
        self.layout = layout
        self.hooks = list(hooks)
        # "coordinator", or coordinator1, coordinator2, ... (on an engine), by their files' names
        self.coordinator_configs: dict[str, CoordinatorConfig] = {
            path.stem: load_coordinator_config(path) for path in layout.coordinators}
        self.coordinator_config = next(iter(self.coordinator_configs.values()))
        self.node_configs: dict[str, NodeConfig] = {}
        for path in layout.nodes:
            self._load_node(path)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        self.paused: set[str] = set()
        self.unexpected_exits: list[Exit] = []
        self._running: set[str] = set()  # started, and not stopped or killed on purpose since
        self._clients: list[ZClient] = []
        self._lock = threading.RLock()

    def _load_node(self, path: Path) -> None:
        config = load_node_config(path)
        self.node_configs[config.id] = config

    def add_node(self, node_id: str) -> None:
        """A new node for a generated cluster (its config is written now; start it with start). In
        a cluster with CURVE keys its key joins the nodes' allow-list, and every running process
        rereads the lists (SIGHUP), as an operator would do."""
        self._load_node(self.layout.add_node(node_id))
        if self.node_configs[node_id].security is not None:
            for name in list(self.processes):
                if self.alive(name):
                    self.signal(name, signal.SIGHUP)

    @property
    def node_ids(self) -> list[str]:
        return list(self.node_configs)

    @property
    def coordinator_names(self) -> list[str]:
        return list(self.coordinator_configs)

    @property
    def coordinator_endpoint(self) -> str:
        """The (first) coordinator's request endpoint; clients of several use ``client_config``."""
        return self.coordinator_config.endpoint

    @property
    def client_config(self) -> Path | None:
        """The client config file the layout names, if any (it lists every coordinator)."""
        return self.layout.client

    @property
    def publish_endpoint(self) -> str:
        return self.coordinator_config.publish_endpoint

    def config_path(self, name: str) -> Path:
        return self._config(name).path

    def _config(self, name: str) -> CoordinatorConfig | NodeConfig:
        return self.coordinator_configs[name] if name in self.coordinator_configs else self.node_configs[name]

    def log_path(self, name: str) -> Path | None:
        return None if self.layout.logs is None else self.layout.logs / f"{name}.log"

    def service(self, node_id: str) -> str:
        return self.node_configs[node_id].service_endpoint

    def metrics_url(self, name: str) -> str | None:
        """``http://HOST:PORT`` of the process's /metrics and probes; None when it serves none."""
        config = self._config(name)
        if not config.metrics_port:
            return None
        host = config.advertise_host
        return f"http://[{host}]:{config.metrics_port}" if ":" in host else f"http://{host}:{config.metrics_port}"

    def data_dir(self, node_id: str) -> Path:
        return self.node_configs[node_id].data_dir

    # ------------------------------------------------------------------ processes

    def start(self, name: str) -> None:
        """Start ``name``, or start it again with the same config and data directory."""
        with self._lock:
            old = self.processes.get(name)
            if old is not None and old.poll() is None:
                raise RuntimeError(f"{name} is already running (pid {old.pid})")
            self._notice(name)
            program = next((p for h in self.hooks if (p := h.program(name)) is not None),
                           [sys.executable, "-m", "zcraq"])
            kind = "coordinator" if name in self.coordinator_configs else "node"
            argv = [*(w for h in self.hooks for w in h.prefix(name)), *program,
                    kind, "--config", str(self.config_path(name).absolute())]
            env = dict(os.environ)
            for hook in self.hooks:
                hook.environment(name, env)
            self.starts[name] += 1
            log = self.log_path(name)
            if log is not None:
                with open(log, "a") as out:
                    out.write(f"===== start #{self.starts[name]} of {name} at {time.strftime('%H:%M:%S')} "
                              f"(monotonic {time.monotonic():.3f}) =====\n")
            self.processes[name] = process = spawn(argv, log=log, env=env)
            self._running.add(name)
            self.paused.discard(name)
            for hook in self.hooks:
                hook.started(name, process.pid)

    def start_all(self, timeout: float = 60.0) -> Cluster:
        """The coordinator, then the nodes one at a time, each waited for until it serves (so the
        chain is node1 -> node2 -> ...), then until the whole chain serves."""
        for name in self.coordinator_names:
            self.start(name)
        for node_id in self.node_ids:
            self.start(node_id)
            self.wait_member(node_id, timeout)
        self.wait_chain(timeout)
        return self

    def kill(self, name: str) -> int | None:
        """SIGKILL and reap: a crash (nothing is flushed; the data directory stays as it is)."""
        with self._lock:
            return kill(self._release(name))

    def pause(self, name: str) -> None:
        """SIGSTOP: a long GC pause or a frozen VM, as the others see it."""
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def signal(self, name: str, signum: int) -> None:
        """Send ``signum``; after one that ends a process, its exit is no surprise."""
        with self._lock:
            if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                process = self._release(name)
            else:
                self._notice(name)
                process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signum)
            if signum == signal.SIGSTOP:
                self.paused.add(name)
            elif signum == signal.SIGCONT:
                self.paused.discard(name)

    def stop(self, name: str, grace: float = 10.0) -> int | None:
        """SIGCONT and SIGTERM (a node then leaves the chain), SIGKILL after ``grace`` seconds;
        returns the exit code."""
        with self._lock:
            return terminate([self._release(name)], grace)[0]

    def restart(self, name: str, grace: float = 10.0) -> None:
        if self.alive(name):
            self.stop(name, grace)
        self.start(name)

    def close(self, grace: float = 10.0) -> None:
        """Stop everything: the nodes but the first, then the first, then the coordinator. The
        chain shrinks to the first node, which the coordinator keeps as its last member, so that
        a restart in the same order brings back the same chain. Meant for a ``finally``."""
        with self._lock:
            for zclient in self._clients:
                zclient.close()
            self.exits()
            self._running.clear()
            nodes = [self.processes[n] for n in self.node_ids if n in self.processes]
            coordinator = [self.processes[n] for n in self.coordinator_names if n in self.processes]
            try:
                for group in (nodes[1:], nodes[:1], coordinator):
                    terminate(group, grace)
            finally:
                for hook in self.hooks:
                    hook.closed()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items() if process.poll() is None}

    def _release(self, name: str) -> subprocess.Popen[bytes]:
        """``name``'s process, from now on ended on purpose: its exit will be no surprise."""
        self._notice(name)
        self._running.discard(name)
        self.paused.discard(name)
        return self.processes[name]

    def _notice(self, name: str) -> Exit | None:
        process = self.processes.get(name)
        if name not in self._running or process is None or process.poll() is None:
            return None
        self._running.discard(name)
        found = Exit(name, process.pid, process.returncode, self.log_path(name))
        self.unexpected_exits.append(found)
        return found

    def exits(self) -> list[Exit]:
        """The processes found dead since the last look although no one stopped them (all of them
        are also kept in ``unexpected_exits``)."""
        with self._lock:
            return [found for name in sorted(self._running) if (found := self._notice(name))]

    def check(self) -> None:
        """Raise ProcessExited if a process exited on its own, with the end of its log."""
        found = self.exits()
        if found:
            raise ProcessExited(found, "\n".join(self.log(found[0].name).strip().splitlines()[-20:]))

    # ------------------------------------------------------------------ observing

    def client(self, timeout: float = 5.0) -> ZClient:
        """A client of this cluster, closed with it."""
        zclient = self._probe(timeout)
        self._clients.append(zclient)
        return zclient

    def _probe(self, timeout: float = 1.0) -> ZClient:
        several = len(self.coordinator_configs) > 1
        return ZClient(None if several else self.coordinator_endpoint, timeout=timeout, config=self.layout.client)

    def members(self) -> list[str]:
        with self._probe() as zclient:
            return [m.id for m in zclient.topology().members]

    def node_status(self, node_id: str) -> dict[str, Any]:
        with self._probe(2.0) as zclient:
            return zclient.status(self.service(node_id))

    def serving(self, node_id: str) -> bool:
        """The node is a member and serves (a new tail serves once its successor link is in sync)."""
        with self._probe() as zclient:
            return (zclient.topology().position(node_id) is not None
                    and bool(zclient.status(self.service(node_id)).get("serving")))

    def chain_state(self) -> dict[str, Any]:
        """The coordinator's topology and each node's own report (or the error asking for it)."""
        with self._probe() as zclient:
            topology = zclient.topology()
            nodes: dict[str, dict[str, Any]] = {}
            for node_id in self.node_ids:
                try:
                    report = zclient.status(self.service(node_id))
                    nodes[node_id] = {k: report.get(k) for k in ("role", "epoch", "serving", "sent")}
                except ZcraqError as error:
                    nodes[node_id] = {"error": str(error)}
        return {"epoch": topology.epoch, "members": [m.id for m in topology.members],
                "learner": topology.learner.id if topology.learner else None, "nodes": nodes}

    def converged(self, state: dict[str, Any] | None = None) -> bool:
        """Every node a member (in any order) serving in the current epoch, no learner, nothing
        uncommitted anywhere."""
        state = state or self.chain_state()
        return (sorted(state["members"]) == sorted(self.node_ids) and state["learner"] is None
                and all(r.get("serving") and r.get("sent") == 0 and r.get("epoch") == state["epoch"]
                        for r in state["nodes"].values()))

    def wait(self, condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
        """wait_until, except that a process exiting on its own ends the wait at once
        (ProcessExited): no use waiting for a chain whose member died."""
        def probe() -> T:
            self.check()
            return condition()
        return wait_until(probe, timeout, what, interval=interval)

    def wait_member(self, node_id: str, timeout: float = 30.0) -> None:
        self.wait(lambda: self.serving(node_id), timeout, f"{node_id} to join the chain and serve")

    def wait_chain(self, timeout: float = 60.0) -> None:
        """Until the chain is every node in the layout's order, converged."""
        def ready() -> bool:
            state = self.chain_state()
            return state["members"] == self.node_ids and self.converged(state)
        self.wait(ready, timeout, f"the chain {' -> '.join(self.node_ids)} to serve")

    # ------------------------------------------------------------------ a partitioned cluster

    def partitions(self) -> list[Partition]:
        with self._probe() as zclient:
            return zclient.partitions()

    def placed(self, nodes: Sequence[str] | None = None, replication: int = 3) -> bool:
        """Every partition has ``replication`` members, all among ``nodes`` (default: every node of
        the layout), no move under way, and every replica serves with nothing uncommitted."""
        nodes = list(self.node_ids if nodes is None else nodes)
        partitions = self.partitions()
        expected: dict[str, set[int]] = {node: set() for node in nodes}
        services: dict[str, str] = {}
        for entry in partitions:
            members = [m.id for m in entry.topology.members]
            if len(members) != min(replication, len(nodes)) or entry.topology.learner is not None \
                    or entry.assigned is not None or entry.retiring or not set(members) <= set(nodes):
                return False
            for member in entry.topology.members:
                expected[member.id].add(entry.partition)
                services[member.id] = member.service
        with self._probe() as zclient:
            for node, hosted in expected.items():
                if node not in services:
                    return False  # holds no replica (yet)
                replicas = zclient.status(services[node]).get("replicas") or []
                serving = {r["partition"] for r in replicas if r.get("serving") and r.get("sent") == 0}
                if serving != hosted or len(replicas) != len(hosted):
                    return False
        return True

    def wait_placed(self, nodes: Sequence[str] | None = None, timeout: float = 90.0, replication: int = 3) -> None:
        """Until every partition's chain is whole over ``nodes`` (see ``placed``)."""
        self.wait(lambda: self.placed(nodes, replication), timeout,
                  f"every partition placed over {', '.join(nodes or self.node_ids)}", interval=0.2)

    def start_partitioned(self, timeout: float = 90.0) -> Cluster:
        """The coordinator, then every node at once; until every partition is placed over them."""
        for name in self.coordinator_names:
            self.start(name)
        for node_id in self.node_ids:
            self.start(node_id)
        self.wait_placed(timeout=timeout)
        return self

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def dump_logs(self, chars: int = 6000) -> str:
        return "\n".join(f"===== {name} =====\n{self.log(name)[-chars:]}" for name in self.processes)
