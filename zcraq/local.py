"""``zcraq run``: a local cluster in the foreground, the coordinator and every node of a config
directory, kept running.

It starts the processes with the launcher (zcraq/cluster.py) from the directory's own config files,
every node at once, and says when the chain serves as a whole (in whatever order the nodes joined;
with partitions: when every partition's chain does). It then watches: each change of the chain (of
the partition table) is printed as it happens, and a child that dies is named
and started again after a short back-off (zcraq/supervise.py), so a ``kill -9`` of any process
shows the failover and the rejoin live. A directory whose configs have ``[security]`` tables
(config/secure/) gets its missing CURVE keys created first (zcraq/provision.py).

Coordinators on an engine (config/ha/: coordinator1.toml, coordinator2.toml, ... with an
``[engine]`` table) are all started; one leads. A directory with an ``etcd.toml`` also gets a local
etcd cluster, started first and kept running the same way (zcraq/local_engine.py).

Each child runs in a session of its own, so a Ctrl-C reaches only ``zcraq run``, which then stops
the nodes (each leaves the chain cleanly while the coordinator is still there) and then the
coordinator; SIGTERM does the same; SIGHUP is passed on to every child (they reread their
allow-lists). The children die with it even if it is killed (zcraq/processes.py), and their data
stays: the next ``zcraq run`` continues where this one stopped.

Exit codes: 0 stopped by Ctrl-C or SIGTERM; 1 a child could not be kept running (its config is
unusable, or it failed five times in a row right after starting); 2 the config directory is
unusable.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

from zcraq.clientroutes import PartitionTable
from zcraq.cluster import Cluster
from zcraq.config import ConfigError, load_coordinator_config, load_node_config
from zcraq.errors import ZcraqError
from zcraq.engine.local import LocalEtcd
from zcraq.layout import Layout, is_coordinator
from zcraq.local_engine import local_engine
from zcraq.provision import provision
from zcraq.security import KeyFileError
from zcraq.supervise import GiveUp, LeaveStopped, Restart, Restarts
from zcraq.topology import Topology

EXIT_STOPPED = 0
EXIT_GAVE_UP = 1
EXIT_USAGE = 2

TICK_SECONDS = 0.1  # how often exits, restarts and signals are looked at
WATCH_SECONDS = 0.5  # how often the chain is looked at
WAITING_NOTE_SECONDS = 10.0  # while the chain is not whole, how often to say what it waits for


def say(message: str) -> None:
    print(f"zcraq: {message}", flush=True)


def complain(message: str) -> None:
    print(f"zcraq: {message}", file=sys.stderr, flush=True)


def describe(topology: Topology) -> str:
    chain = " -> ".join(m.id for m in topology.members) or "(no member)"
    learner = f", {topology.learner.id} catching up" if topology.learner else ""
    return f"epoch {topology.epoch}: {chain}{learner}"


class _Asking:
    """A client of the coordinator that asks at most every WATCH_SECONDS."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.client = cluster.client(timeout=WATCH_SECONDS)
        self._next_look = 0.0

    def _due(self, now: float) -> bool:
        if now < self._next_look:
            return False
        self._next_look = now + WATCH_SECONDS
        return True


class ChainWatch(_Asking):
    """Asks the coordinator for the topology every WATCH_SECONDS and prints each change; knows
    whether the chain is whole (every node of the directory a member, none catching up)."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self.topology: Topology | None = None

    def look(self, now: float) -> bool:
        """True if the coordinator answered this time (False also when it was not yet time to ask)."""
        if not self._due(now):
            return False
        try:
            topology = self.client.topology()
        except ZcraqError:
            return False  # the coordinator is down or restarting: its exit is reported on its own
        if topology.epoch > 0 and (self.topology is None or topology.epoch != self.topology.epoch):
            say(describe(topology))
        self.topology = topology
        return True

    def whole(self) -> bool:
        topology = self.topology
        return (topology is not None and topology.learner is None
                and sorted(m.id for m in topology.members) == sorted(self.cluster.node_ids))

    def serving(self) -> bool:
        """Whole, and every node says it serves in the current epoch."""
        try:
            return self.whole() and self.cluster.converged()
        except ZcraqError:
            return False

    @property
    def mark(self) -> int:
        """What grows with every change: the epoch."""
        return self.topology.epoch if self.topology else 0

    def up(self) -> list[str]:
        """The nodes known to have joined since ``mark`` was last taken for them."""
        return [m.id for m in self.topology.members] if self.topology else []

    def state(self) -> str:
        return describe(self.topology) if self.topology else "no answer from the coordinator yet"

    def ready(self) -> str:
        return f"chain ready: {_chain(self.topology)}"


class TableWatch(_Asking):
    """A partitioned cluster's ChainWatch: asks for the partition table, prints each new one in
    short (each node's heads, tails and replicas, and the moves under way); whole when every
    partition's chain is over the directory's nodes, none moving."""

    def __init__(self, cluster: Cluster, replication: int) -> None:
        super().__init__(cluster)
        self.replication = replication
        self.table: PartitionTable | None = None

    def look(self, now: float) -> bool:
        if not self._due(now):
            return False
        try:
            table = self.client.partition_table()
        except ZcraqError:
            return False
        if table is None:
            return False
        if self.table is None or table.version != self.table.version:
            self.table = table
            say(describe_table(table))
        return True

    def nodes(self) -> list[str]:
        """The nodes that should hold replicas: the directory's, and any other registered (started by
        hand, as in the README's walkthrough), but none draining."""
        table = self.table
        registered = {str(n.get("id")): bool(n.get("draining")) for n in table.nodes} if table else {}
        wanted = [n for n in self.cluster.node_ids if not registered.get(n, False)]
        return wanted + [n for n, draining in registered.items() if n not in wanted and not draining]

    def whole(self) -> bool:
        """Every partition's chain whole over the nodes, by the table (no node asked)."""
        table, nodes = self.table, set(self.nodes())
        size = min(self.replication, len(nodes))
        return table is not None and all(
            len(p.topology.members) == size and p.topology.learner is None and p.assigned is None and not p.retiring
            and {m.id for m in p.topology.members} <= nodes for p in table.partitions)

    def serving(self) -> bool:
        """Whole, and every replica says it serves."""
        try:
            return self.whole() and self.cluster.placed(self.nodes(), replication=self.replication)
        except ZcraqError:
            return False

    @property
    def mark(self) -> int:
        return self.table.version if self.table else 0

    def up(self) -> list[str]:
        """Registered nodes: a restarted node registers again, which makes a new table."""
        return [str(node.get("id")) for node in self.table.nodes] if self.table else []

    def state(self) -> str:
        return describe_table(self.table) if self.table else "no answer from the coordinator yet"

    def ready(self) -> str:
        count = self.table.count if self.table else 0
        return f"cluster ready: {count} partitions of {self.replication} replicas over {', '.join(self.nodes())}"


def describe_table(table: PartitionTable) -> str:
    shares = ", ".join(f"{s.id} {s.heads}h/{s.tails}t/{s.replicas}r" + (" draining" if s.draining else "")
                       for s in table.shares() if s.replicas or s.learners or s.assigned)
    moves = [f"p{p.partition}->{p.topology.learner.id if p.topology.learner else p.assigned}"
             for p in table.partitions if p.topology.learner is not None or p.assigned is not None]
    retiring = [f"p{p.partition}:{node_id}" for p in table.partitions for node_id in p.retiring]
    return (f"table {table.version}: {shares or '(no replica yet)'} (heads/tails/replicas)" +
            (f"; moving {' '.join(moves)}" if moves else "") + (f"; retiring {' '.join(retiring)}" if retiring else ""))


def run_local(config_dir: str) -> int:
    directory = Path(config_dir)
    layout = Layout.directory(directory)
    try:
        created = provision(load_coordinator_config(layout.coordinator), [load_node_config(p) for p in layout.nodes],
                            layout.clients, layout.admins)
        cluster = Cluster(layout)
        engine = local_engine(directory, cluster.coordinator_config)
    except (ConfigError, KeyFileError, ValueError, OSError) as error:
        complain(str(error))
        return EXIT_USAGE
    for secret in created:
        say(f"created the CURVE key pair {secret}")
    if not cluster.node_ids:
        complain(f"no node*.toml in {directory}")
        return EXIT_USAGE

    stop_signals: list[int] = []
    hangups: list[int] = []

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        stop_signals.append(signum)

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, lambda signum, _frame: hangups.append(signum))
    try:
        if engine is not None:
            say(f"etcd on {', '.join(engine.endpoints)}, data in {engine.directory}")
            engine.start(timeout=60)
        return _supervise(cluster, stop_signals, hangups, engine)
    except OSError as error:  # the local etcd did not come up
        complain(str(error))
        return EXIT_GAVE_UP
    finally:
        say("stopping: the nodes leave the chain, then the coordinator stops")
        cluster.close()
        if engine is not None:
            engine.stop()


def _supervise(cluster: Cluster, stop_signals: list[int], hangups: list[int], engine: LocalEtcd | None) -> int:
    coordinator = cluster.coordinator_config
    restarts = Restarts()
    for name, settings in cluster.coordinator_configs.items():
        say(f"{name} on {settings.endpoint} (topology on {settings.publish_endpoint})")
        cluster.start(name)
        restarts.started(name, time.monotonic())
    for node_id, config in cluster.node_configs.items():
        say(f"{node_id} serves on {config.service_endpoint}, data in {config.data_dir}")
        cluster.start(node_id)
        restarts.started(node_id, time.monotonic())
    shape = coordinator.cluster
    watch: ChainWatch | TableWatch = TableWatch(cluster, shape.replication) if shape.partitioned \
        else ChainWatch(cluster)
    start_epoch: dict[str, int] = {}  # node -> the newest epoch (table version) known when it was last started
    ready_said = False  # "chain ready" is said once; later, "whole again" after each recovery
    # After a node died or the chain lost a member: the epoch then. The chain is whole again once it
    # has every node at a later epoch (a restarted node always rejoins through a new epoch, so a
    # recovery too quick for the watch to see the chain incomplete is still noticed).
    broken_at: int | None = None
    next_waiting_note = time.monotonic() + WAITING_NOTE_SECONDS
    while not stop_signals:
        while hangups:
            hangups.pop()
            for name in [*cluster.coordinator_names, *cluster.node_ids]:
                if cluster.alive(name):
                    cluster.signal(name, signal.SIGHUP)
        now = time.monotonic()
        for found in cluster.exits():
            decision = restarts.exited(found.name, found.code, now)
            match decision:
                case Restart(delay=delay):
                    complain(f"{found}; starting it again in {delay:g} s")
                case LeaveStopped(reason=reason) | GiveUp(reason=reason):
                    complain(f"{found}; {reason}")
            if isinstance(decision, GiveUp):
                complain(f"cannot keep {found.name} running; stopping the rest")
                return EXIT_GAVE_UP
            if not is_coordinator(found.name) and ready_said and broken_at is None:
                broken_at = watch.mark
        for name in restarts.due(now):
            say(f"starting {name} again")
            cluster.start(name)
            restarts.started(name, now)
            start_epoch[name] = watch.mark
        if engine is not None:
            for member in engine.restart_exited():
                complain(f"{member} exited; started it again")
        if watch.look(now):
            for name in cluster.coordinator_names:  # the cluster answers: the coordinators run
                if cluster.alive(name):
                    restarts.up(name)
            for member in watch.up():
                # A member in an epoch newer than its start: this incarnation joined (a restarted
                # node always rejoins through a new epoch, or registers through a new table).
                if watch.mark > start_epoch.get(member, 0):
                    restarts.up(member)
        if not ready_said:
            if watch.whole() and watch.serving():
                ready_said = True
                say(watch.ready())
                say(try_hint(cluster))
            elif now >= next_waiting_note:
                next_waiting_note = now + WAITING_NOTE_SECONDS
                say(f"waiting for every node to join and serve ({watch.state()})")
        elif watch.mark > 0:
            if not watch.whole():
                broken_at = watch.mark if broken_at is None else broken_at
            elif broken_at is not None and watch.mark > broken_at:
                broken_at = None
                say(watch.ready().replace(" ready: ", " whole again: ", 1))
        time.sleep(TICK_SECONDS)
    return EXIT_STOPPED


def try_hint(cluster: Cluster) -> str:
    """What to try once the cluster serves."""
    client = f"zcraq client --config {cluster.client_config}" if len(cluster.coordinator_configs) > 1 \
        and cluster.client_config is not None else "zcraq client"
    what = "a node or the leading coordinator" if len(cluster.coordinator_configs) > 1 else "a node"
    return (f"try `{client} write hello world` and `{client} read hello`; kill -9 {what} to watch the failover; "
            "Ctrl-C stops everything")


def _chain(topology: Topology | None) -> str:
    return " -> ".join(m.id for m in topology.members) if topology else "?"
