"""Repair time: how long writes stop when a node of a chain fails, per kind of failure.

It starts a coordinator and a 3-node chain (real processes, LevelDB in a temporary directory, the
settings of the other benchmarks: lease 3 s, heartbeats every 0.5 s), keeps ``--writers``
closed-loop writers going, and then, for each kind of failure, ``--trials`` times: fails one node
(chosen by its role), waits until the chain has gone on without it, restarts it and waits until
the chain is whole again. Two **write gaps** are measured, each the longest time between two
acknowledged writes: the *failure gap*, from one second before the failure until one second after
the chain went on without the node, and the *rejoin gap*, from the restart until one second after
the chain is whole. Printed per kind: the median and worst of each, and the client errors. Kinds:

- ``kill-head``, ``kill-middle``, ``kill-tail``: kill -9;
- ``term-head``: SIGTERM (the node leaves the chain before it exits);
- ``restart-head``: kill -9 and restart at once (the restarted node's join tells the coordinator
  the old one is gone); one gap, from the failure until the chain is whole.

With ``--engine``, a local 3-member etcd and three coordinators on it run instead of the one
coordinator, and the kinds are about the leading coordinator: ``kill-leader`` (kill -9),
``term-leader`` (SIGTERM: it gives its lease back) and ``kill-leader-and-tail`` (kill -9 of the
leader and of the tail together: the new leader must repair the chain). Printed for these: the
*takeover*, from the failure until another coordinator answers as leader, and the write gap
until the chain has gone on (one second after); the killed processes are then started again.

    python bench/repair_bench.py                       # every kind, 10 trials each
    python bench/repair_bench.py --kinds kill-head --trials 3
    python bench/repair_bench.py --engine              # the coordinator kinds

Everything started is stopped on exit, on Ctrl-C, on SIGTERM and on errors.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import benchlib

from zcraq.client import ZClient
from zcraq.errors import ZcraqError

# kind: (signal, position in the chain, restarted at once)
KINDS = {"kill-head": (signal.SIGKILL, 0, False), "kill-middle": (signal.SIGKILL, 1, False),
         "kill-tail": (signal.SIGKILL, -1, False), "term-head": (signal.SIGTERM, 0, False),
         "restart-head": (signal.SIGKILL, 0, True)}
# kind: (signal to the leading coordinator, the tail killed too)
LEADER_KINDS = {"kill-leader": (signal.SIGKILL, False), "term-leader": (signal.SIGTERM, False),
                "kill-leader-and-tail": (signal.SIGKILL, True)}


class Writers:
    """Closed-loop writers, each on keys of its own; every acknowledgement's time kept."""

    def __init__(self, coordinator: str | None, count: int, config: Path | None = None) -> None:
        self.coordinator = coordinator
        self.config = config
        self.stopping = threading.Event()
        self.acked: list[float] = []
        self.errors: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def _run(self, index: int) -> None:
        with ZClient(self.coordinator, timeout=10.0, config=self.config) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                try:
                    client.write(f"writer{index}/{n % 100}", str(n))
                except ZcraqError as error:
                    with self.lock:
                        self.errors[type(error).__name__] += 1
                    continue
                with self.lock:
                    self.acked.append(time.monotonic())

    def longest_gap(self, start: float, end: float) -> float:
        with self.lock:
            times = [t for t in self.acked if start <= t <= end]
        points = [start, *times, end]
        return max(b - a for a, b in zip(points, points[1:]))


def trial(cluster: benchlib.ChainCluster, writers: Writers, kind: str, timeout: float) -> tuple[float, float | None]:
    """The failure gap and the rejoin gap (None when the node was restarted at once)."""
    signum, position, at_once = KINDS[kind]
    target = cluster.members()[position]
    failed_at = time.monotonic()
    if signum == signal.SIGKILL:
        cluster.kill(target)
    else:
        cluster.stop(target)  # SIGTERM, and waits for the exit
    if not at_once:
        cluster.wait(lambda: target not in cluster.members(), timeout, f"the chain to go on without {target}",
                     interval=0.05)
        time.sleep(1.0)
        failure_gap = writers.longest_gap(failed_at - 1.0, time.monotonic())
        failed_at = time.monotonic()
    cluster.start(target)
    cluster.wait(cluster.converged, timeout, f"the chain whole again after {kind} of {target}", interval=0.1)
    time.sleep(1.0)  # writes flowing again, before the next failure
    whole_gap = writers.longest_gap(failed_at - (1.0 if at_once else 0.0), time.monotonic())
    return (whole_gap, None) if at_once else (failure_gap, whole_gap)


def leading(cluster: benchlib.ChainCluster) -> str | None:
    """The coordinator that answers a topology request itself, if one does now."""
    for name in cluster.coordinator_names:
        if not cluster.alive(name):
            continue
        try:
            with ZClient(cluster.coordinator_configs[name].endpoint, timeout=0.3) as client:
                client.topology()
            return name
        except ZcraqError:
            continue
    return None


def leader_trial(cluster: benchlib.ChainCluster, writers: Writers, kind: str, timeout: float) -> tuple[float, float]:
    """The takeover time and the write gap."""
    signum, with_tail = LEADER_KINDS[kind]
    first = cluster.wait(lambda: leading(cluster), timeout, "a leading coordinator")
    tail = cluster.members()[-1] if with_tail else None
    failed_at = time.monotonic()
    if signum == signal.SIGKILL:
        cluster.kill(first)
    else:
        cluster.signal(first, signal.SIGTERM)
    if tail is not None:
        cluster.kill(tail)
    cluster.wait(lambda: leading(cluster) not in (None, first), timeout, "another coordinator to lead", interval=0.02)
    takeover = time.monotonic() - failed_at
    if tail is not None:
        cluster.wait(lambda: tail not in cluster.members(), timeout, f"the chain to go on without {tail}",
                     interval=0.05)
    time.sleep(1.0)
    gap = writers.longest_gap(failed_at - 1.0, time.monotonic())
    cluster.wait(lambda: not cluster.alive(first), timeout, f"{first} to exit")
    cluster.start(first)
    if tail is not None:
        cluster.start(tail)
    cluster.wait(cluster.converged, timeout, "the chain whole again", interval=0.1)
    time.sleep(1.0)
    return takeover, gap


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--durability", choices=("async", "sync"), default="async")
    p.add_argument("--engine", action="store_true", help="three coordinators on a local etcd; the coordinator kinds")
    args = p.parse_args(argv)
    known = LEADER_KINDS if args.engine else KINDS
    kinds = [k for k in (args.kinds if args.kinds != p.get_default("kinds") else ",".join(known)).split(",") if k]
    unknown = [k for k in kinds if k not in known]
    if unknown or args.trials < 1:
        p.error(f"unknown kinds {unknown}" if unknown else "--trials must be at least 1")
    benchlib.install_signal_handlers()
    engine = None
    if args.engine:
        from zcraq.engine.local import LocalEtcd

        engine = LocalEtcd(Path(tempfile.mkdtemp(prefix="zcraq-bench-etcd-")))
        engine.start(timeout=60)
    cluster = benchlib.ChainCluster(3, durability=args.durability, engine=engine.endpoints if engine else None)
    writers: Writers | None = None
    try:
        cluster.start_cluster(timeout=120.0)
        writers = Writers(None if engine else cluster.coordinator_endpoint, args.writers, cluster.client_config)
        writers.start()
        time.sleep(2.0)
        if engine is not None:
            return _leader_kinds(cluster, writers, kinds, args.trials)
        table = benchlib.Table(["failure", "trials", "failure gap: median s", "worst s", "rejoin gap: median s",
                                "worst s", "client errors"])
        for kind in kinds:
            errors_before = sum(writers.errors.values())
            gaps = [trial(cluster, writers, kind, timeout=120.0) for _ in range(args.trials)]
            failure = [g for g, _ in gaps]
            rejoin = [g for _, g in gaps if g is not None]
            errors = sum(writers.errors.values()) - errors_before
            table.add(kind, len(gaps), f"{statistics.median(failure):.2f}", f"{max(failure):.2f}",
                      f"{statistics.median(rejoin):.2f}" if rejoin else "-", f"{max(rejoin):.2f}" if rejoin else "-",
                      errors)
            print(f"{kind}: failure gaps {' '.join(f'{g:.2f}' for g in failure)} s; rejoin gaps "
                  f"{' '.join(f'{g:.2f}' for g in rejoin) or '-'} s; client errors {errors}", flush=True)
        print()
        print(table.render())
        print(f"client errors over the run: {dict(writers.errors) or 'none'}")
        return 0
    finally:
        if writers is not None:
            writers.stop()
        cluster.close()
        if engine is not None:
            engine.stop()
            shutil.rmtree(engine.directory, ignore_errors=True)


def _leader_kinds(cluster: benchlib.ChainCluster, writers: Writers, kinds: list[str], trials: int) -> int:
    table = benchlib.Table(["failure", "trials", "takeover: median s", "worst s", "write gap: median s", "worst s",
                            "client errors"])
    for kind in kinds:
        errors_before = sum(writers.errors.values())
        results = [leader_trial(cluster, writers, kind, timeout=120.0) for _ in range(trials)]
        takeovers = [t for t, _ in results]
        gaps = [g for _, g in results]
        errors = sum(writers.errors.values()) - errors_before
        table.add(kind, trials, f"{statistics.median(takeovers):.2f}", f"{max(takeovers):.2f}",
                  f"{statistics.median(gaps):.2f}", f"{max(gaps):.2f}", errors)
        print(f"{kind}: takeovers {' '.join(f'{t:.2f}' for t in takeovers)} s; write gaps "
              f"{' '.join(f'{g:.2f}' for g in gaps)} s; client errors {errors}", flush=True)
    print()
    print(table.render())
    print(f"client errors over the run: {dict(writers.errors) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
