"""Shared pieces of the benchmarks: the zcraq cluster they measure (the launcher of
zcraq/cluster.py with the benchmark's settings, a CPU-quota hook and a profiler hook, and a scraper
of its /metrics), process CPU accounting from /proc, latency statistics, and signal handling.

Nothing here imports the test suite. Every wait is bounded by a deadline, and every process a
cluster starts is stopped by ``close()``; children also die with the benchmark even if it is
killed with SIGKILL (see zcraq/processes.py).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuquota import CpuQuota
from zcraq.cluster import Cluster, Hook
from zcraq.layout import COORDINATOR, Generated


CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# Signals


class Interrupted(Exception):
    """SIGTERM or SIGHUP reached the benchmark."""


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into an exception so ``finally`` blocks run (Ctrl-C already does)."""

    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored


# ---------------------------------------------------------------------------------------------
# The zcraq cluster


class NodeQuota(Hook):
    """Each node (not the coordinator) capped by ``quota``, in a cgroup of its own; the groups go
    away once every process has stopped (a cgroup with live tasks cannot be removed)."""

    def __init__(self, quota: CpuQuota) -> None:
        self.quota = quota

    def started(self, name: str, pid: int) -> None:
        if name != COORDINATOR:
            self.quota.add(name, pid)

    def closed(self) -> None:
        self.quota.close()


class Profiler(Hook):
    """Each node under cProfile (bench/profile_node.py), timed on the node thread's CPU clock; the
    profile ``directory/<N>nodes-<node>.prof`` is written at the node's SIGTERM shutdown."""

    def __init__(self, directory: Path, nodes: int) -> None:
        self.directory = directory
        self.nodes = nodes

    def program(self, name: str) -> list[str] | None:
        if name == COORDINATOR:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        return [sys.executable, str(Path(__file__).resolve().parent / "profile_node.py"),
                str(self.directory / f"{self.nodes}nodes-{name}.prof")]


class ChainCluster(Cluster):
    """A coordinator and ``nodes`` chain nodes, with their configs, LevelDB data and logs in a
    private temporary directory (kept with ``keep``) or in ``root``.

    ``node_cpu``: cap each node process (not the coordinator) at this fraction of one CPU, each in
    its own cgroup (see CpuQuota). ``profile_dir``: run each node under the profiler. ``secure``:
    CURVE keys on every connection (the load generators then use the layout's client config).
    ``metrics``: every process serves /metrics (see Scraper). ``node_settings``: more keys of every
    node's ``[node]`` table (e.g. catchup_page_items). ``engine``: etcd client URLs; then three
    coordinators keep the state there (clients use the layout's client config, listing them all)."""

    def __init__(self, nodes: int, durability: str = "async", root: Path | None = None,
                 keep: bool = False, log_level: str = "warning", profile_dir: Path | None = None,
                 node_cpu: float | None = None, secure: bool = False, metrics: bool = False,
                 node_settings: dict[str, Any] | None = None, partitions: int = 1, replication: int = 3,
                 max_moves: int = 8, engine: list[str] | None = None) -> None:
        hooks: list[Hook] = []
        if node_cpu is not None:
            # Detected now, so an unusable cgroup setup fails before anything is started.
            hooks.append(NodeQuota(CpuQuota(node_cpu)))
        if profile_dir is not None:
            hooks.append(Profiler(profile_dir, nodes))
        self.root = Path(root or tempfile.mkdtemp(prefix="zcraq-bench-"))
        self.remove_root = root is None and not keep
        super().__init__(Generated(
            self.root, nodes,
            coordinator={"lease_ms": 3000, "republish_interval_ms": 1000, "log_level": log_level},
            node={"durability": durability, "heartbeat_interval_ms": 500, "request_timeout_ms": 2000,
                  "log_level": log_level, **(node_settings or {})}, secure=secure, metrics=metrics,
            cluster={"partitions": partitions, "replication": replication, "max_moves": max_moves,
                     "formation_grace_ms": 3000} if partitions > 1 else None, engine=engine), hooks=hooks)
        self.partitioned = partitions > 1
        self.replication = replication

    def start_cluster(self, timeout: float = 60.0) -> None:
        """Every node serving: in chain order for one chain; every partition's chain whole otherwise."""
        if self.partitioned:
            self.start_partitioned(timeout)
            self.wait_table_still(timeout)
        else:
            self.start_all(timeout=timeout)

    def wait_table_still(self, timeout: float, still: float = 3.0) -> None:
        """Until the partition table has not changed for ``still`` seconds: placement's rotations (which
        even out heads and tails after the chains are whole) are over before anything is measured."""
        deadline = time.monotonic() + timeout
        version, since = None, time.monotonic()
        while time.monotonic() < deadline:
            with self._probe() as zclient:
                table = zclient.partition_table()
            now = time.monotonic()
            if table is not None and table.version != version:
                version, since = table.version, now
            elif now - since >= still:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the partition table still changed after {timeout:g} s")

    def wait_placed(self, nodes: Any = None, timeout: float = 90.0, replication: int | None = None) -> None:
        super().wait_placed(nodes, timeout, self.replication if replication is None else replication)

    def roles(self) -> dict[str, str]:
        if self.partitioned:  # heads/tails/replicas of each node
            with self._probe() as zclient:
                shares = {s.id: s for s in zclient.partition_table().shares()}  # type: ignore[union-attr]
            return {n: f"{shares[n].heads}h/{shares[n].tails}t/{shares[n].replicas}r" if n in shares else "-"
                    for n in self.node_ids}
        return {n: str(self.node_status(n).get("role")) for n in self.node_ids}

    def counters(self) -> dict[str, dict[str, int]]:
        return {n: dict(self.node_status(n).get("counters", {})) for n in self.node_ids}

    def close(self, grace: float = 10.0) -> None:
        try:
            super().close(grace)
        finally:
            if self.remove_root:
                shutil.rmtree(self.root, ignore_errors=True)


class Scraper:
    """GETs every given /metrics URL every ``interval`` seconds from a thread of its own, until
    closed: the load a Prometheus server puts on the processes (a keen one: it usually waits 15 s)."""

    def __init__(self, urls: Sequence[str], interval: float = 1.0) -> None:
        self.urls = list(urls)
        self.interval = interval
        self.scrapes = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        response.read()
                    self.scrapes += 1
                except OSError:
                    self.failures += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ---------------------------------------------------------------------------------------------
# CPU accounting


def _read_stat(path: str) -> tuple[str, float, list[bytes]] | None:
    """(command name, utime + stime seconds, the fields after the name) from a /proc stat file;
    None if it is gone."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    close = data.rindex(b")")
    fields = data[close + 2:].split()
    seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)
    return data[data.index(b"(") + 1:close].decode(errors="replace"), seconds, fields


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None if it is gone."""
    stat = _read_stat(f"/proc/{pid}/stat")
    return None if stat is None else stat[1]


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's live threads by kind: "main" (the thread that runs Python's
    main loop), "zmq" (libzmq's ZMQbg/* I/O and reaper threads), "other" (the rest, e.g.
    LevelDB's background compaction thread or a load generator's client threads)."""
    out = {"main": 0.0, "zmq": 0.0, "other": 0.0}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        stat = _read_stat(f"/proc/{pid}/task/{tid}/stat")
        if stat is None:
            continue
        name, seconds, _ = stat
        kind = "main" if tid == str(pid) else "zmq" if name.startswith("ZMQbg") else "other"
        out[kind] += seconds
    return out


_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def system_cpu_times() -> dict[str, float]:
    """CPU seconds summed over all CPUs since boot, per /proc/stat category."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return {name: (parts[i] if i < len(parts) else 0) / CLK_TCK for i, name in enumerate(_STAT_FIELDS)}


def all_process_cpu() -> dict[int, tuple[str, float, int]]:
    """(command name, utime + stime seconds, parent pid) of every process on the machine, kernel
    threads included."""
    out: dict[int, tuple[str, float, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read_stat(f"/proc/{entry.name}/stat")
            if stat is not None:
                name, seconds, fields = stat
                out[int(entry.name)] = (name, seconds, int(fields[1]))
    return out


@dataclass
class CpuSnapshot:
    at: float
    processes: dict[str, float | None]
    system: dict[str, float]
    everyone: dict[int, tuple[str, float, int]]
    threads: dict[str, dict[str, float]]


def cpu_snapshot(pids: dict[str, int]) -> CpuSnapshot:
    return CpuSnapshot(time.perf_counter(), {name: proc_cpu_seconds(pid) for name, pid in pids.items()},
                       system_cpu_times(), all_process_cpu(),
                       # Load generators' client threads end at the window's close, so a breakdown of
                       # live threads would be wrong for them: servers only.
                       {name: thread_cpu_seconds(pid) for name, pid in pids.items()
                        if not name.startswith(("loadgen", "bench"))})


def descendants(root: int, table: dict[int, tuple[str, float, int]]) -> set[int]:
    """``root`` and every process below it in ``table`` (as all_process_cpu returns)."""
    children: dict[int, list[int]] = {}
    for pid, (_name, _cpu, ppid) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """CPU used over the interval: per named process, the whole machine by /proc/stat category,
    and the processes outside the benchmark (not this process or below it) that used any."""
    wall = after.at - before.at
    per: dict[str, dict[str, float | None]] = {}
    for name, start in before.processes.items():
        end = after.processes.get(name)
        seconds = None if start is None or end is None else end - start
        per[name] = {"cpu_s": seconds, "cpu_pct": None if seconds is None else 100.0 * seconds / wall,
                     # per thread kind; threads that ended inside the window are missing here
                     "threads_s": {k: after.threads[name][k] - before.threads[name][k]
                                   for k in after.threads.get(name, {}) if name in before.threads}}
    machine = {k: after.system[k] - before.system[k] for k in _STAT_FIELDS}
    total = sum(machine.values())
    busy = total - machine["idle"] - machine["iowait"] - machine["steal"]
    me = os.getpid()
    ours = descendants(me, before.everyone) | descendants(me, after.everyone)
    ours |= {pid for pid in after.everyone if after.everyone[pid][2] in ours}
    others = []
    for pid, (name, end, _ppid) in after.everyone.items():
        if pid in ours:
            continue
        start = before.everyone.get(pid, (name, 0.0, 0))[1]  # a process born in the window: all of it
        if end - start > 0:
            others.append({"pid": pid, "name": name, "cpu_s": end - start})
    others.sort(key=lambda o: -o["cpu_s"])
    others_s = sum(o["cpu_s"] for o in others)
    ours_s = sum(after.everyone[p][1] - before.everyone.get(p, ("", 0.0, 0))[1]
                 for p in ours if p in after.everyone)
    return {
        "wall_s": wall,
        "processes": per,
        "machine_cpu_s": {k: v for k, v in machine.items()},
        "machine_busy_cpu_s": busy,
        "machine_busy_pct": 100.0 * busy / total if total > 0 else None,  # of all CPUs
        "steal_pct": 100.0 * machine["steal"] / total if total > 0 else None,
        "others_cpu_s": others_s,
        "others_top": others[:5],
        # busy time no process was charged for (softirq/irq work such as loopback TCP, rounding)
        "unattributed_cpu_s": busy - ours_s - others_s,
    }


def others_cpu_pct(interval: float = 1.0) -> tuple[float, list[tuple[str, int, float]]]:
    """CPU % (of one CPU) used over ``interval`` by processes not this one or below it, and the
    top users as (name, pid, %)."""
    me = os.getpid()
    before = all_process_cpu()
    time.sleep(interval)
    after = all_process_cpu()
    ours = descendants(me, before) | descendants(me, after)
    used = []
    for pid, (name, end, _ppid) in after.items():
        if pid not in ours:
            delta = end - before.get(pid, (name, 0.0, 0))[1]
            if delta > 0:
                used.append((name, pid, 100.0 * delta / interval))
    used.sort(key=lambda u: -u[2])
    return sum(u[2] for u in used), used[:3]


def wait_quiet(max_wait: float, threshold_pct: float = 10.0, say: Callable[[str], None] = print) -> bool:
    """Wait (at most ``max_wait`` s) until processes outside the benchmark use less than
    ``threshold_pct`` of one CPU over a 1 s sample; False if the machine never got quiet."""
    deadline = time.monotonic() + max_wait
    told = False
    while True:
        pct, top = others_cpu_pct(1.0)
        if pct < threshold_pct:
            if told:
                say(f"   machine quiet again (others {pct:.0f}% of a CPU)")
            return True
        if time.monotonic() >= deadline:
            say(f"   machine still busy after {max_wait:g} s (others {pct:.0f}% of a CPU); measuring anyway")
            return False
        if not told:
            say(f"   waiting up to {max_wait:g} s for other processes to go quiet (now {pct:.0f}% of a CPU: "
                + ", ".join(f"{n}[{p}] {c:.0f}%" for n, p, c in top) + ")")
            told = True


# ---------------------------------------------------------------------------------------------
# Latency statistics (exact, from every measured op's latency)


def percentile(sorted_ns: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values, in ns."""
    if not sorted_ns:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_ns)))
    return float(sorted_ns[rank - 1])


def summarize(latencies_ns: Iterable[int]) -> dict[str, float | int | None]:
    values = sorted(latencies_ns)
    ms = 1e-6
    def pct(q: float) -> float | None:
        v = percentile(values, q)
        return None if v is None else v * ms
    return {
        "count": len(values),
        "mean_ms": (sum(values) / len(values)) * ms if values else None,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "p999_ms": pct(99.9),
        "max_ms": values[-1] * ms if values else None,
    }


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    align_left: int = 1  # how many leading columns are left-aligned

    def add(self, *cells: Any) -> None:
        row = [fmt(c) for c in cells]
        self.rows.append(row + ["-"] * (len(self.headers) - len(row)))

    def render(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
                  for i, h in enumerate(self.headers)]
        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if i < self.align_left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))
        return "\n".join([line(self.headers), line(["-" * w for w in widths]), *map(line, self.rows)])

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.headers) + " |",
               "|" + "|".join(":---" if i < self.align_left else "---:" for i in range(len(self.headers))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
