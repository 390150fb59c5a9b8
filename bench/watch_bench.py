"""Watches under a write load: what watchers cost the chain, and how soon a change reaches them.

One 3-node chain (async durability); pipeload.py's generator writes to the head as fast as
--inflight requests in flight allow, on --keys keys. Each round runs one window per watcher
count of --watchers, interleaved; 0 watchers is the baseline. A watcher is a process of its own
(this program with --watcher) holding two ZClient watches: every key of the load (prefix "key",
counting the changes it gets) and the key "probe". Meanwhile this process writes "probe" every
50 ms, with the monotonic clock's time as the value (one clock for every process of the machine):

- write p50/p99: the load's latency (pipeload), and writes/s;
- probe ack p50/p99: from the probe write's start to its acknowledgement (the baseline);
- probe seen p50/p99: from the probe write's start to a watcher's delivery of that change;
- changes/s per watcher: what each prefix watcher delivered within the window (the load's writes/s
  when it keeps up).

    python bench/watch_bench.py --rounds 3 --duration 5 --json bench/results/watch.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
import pipeload
from chain_bench import machine_info
from pipeline_bench import Runner, chain_target, start_chain

from zcraq.client import ZClient

PROBE_INTERVAL = 0.05


# ---------------------------------------------------------------------------------------------
# A watcher process


def watcher_main(coordinator: str, out: Path) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = {"changes": 0, "pruned": 0}
    seen_ns: list[int] = []
    delivered_ns: list[int] = []  # when each change of the load was delivered
    polled = [threading.Event(), threading.Event()]  # each watch has its starting point

    def follow_load() -> None:
        with ZClient(coordinator, timeout=10.0) as client:
            stream = client.watch(prefix="key", poll_wait=0.2)
            while not stop.is_set():
                changes = stream.poll()
                polled[0].set()
                now = time.monotonic_ns()
                for change in changes:
                    counts["changes"] += 1
                    counts["pruned"] += change.pruned
                    delivered_ns.append(now)

    def follow_probe() -> None:
        with ZClient(coordinator, timeout=10.0) as client:
            stream = client.watch("probe", poll_wait=0.2)
            while not stop.is_set():
                changes = stream.poll()
                polled[1].set()
                for change in changes:
                    if change.value:
                        seen_ns.append(time.monotonic_ns() - int(change.value))

    threads = [threading.Thread(target=follow_load, daemon=True), threading.Thread(target=follow_probe, daemon=True)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for event in polled:
        if not event.wait(30.0):
            return 1  # the benchmark reports that the watchers did not start
    Path(str(out) + ".ready").write_text("")
    stop.wait()
    for thread in threads:
        thread.join(5.0)
    out.write_text(json.dumps({**counts, "seconds": time.monotonic() - started, "seen_ns": seen_ns,
                                "delivered_ns": delivered_ns}))
    return 0


# ---------------------------------------------------------------------------------------------
# The benchmark


class Probe:
    """Writes "probe" every PROBE_INTERVAL while measuring; the acknowledgement latencies."""

    def __init__(self, coordinator: str) -> None:
        self.coordinator = coordinator
        self.ack_ns: list[int] = []
        self.measuring = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with ZClient(self.coordinator, timeout=5.0) as client:
            while not self.stop.wait(PROBE_INTERVAL):
                if self.measuring.is_set():
                    start = time.monotonic_ns()
                    client.write("probe", str(start))
                    self.ack_ns.append(time.monotonic_ns() - start)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10.0)


def start_watchers(count: int, coordinator: str, root: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    watchers = []
    for i in range(count):
        out = root / f"watcher{i}-{time.monotonic_ns()}.json"
        process = subprocess.Popen([sys.executable, __file__, "--watcher", coordinator, str(out)])
        watchers.append((process, out))
    deadline = time.monotonic() + 30
    while not all(Path(str(out) + ".ready").exists() for _, out in watchers):  # each watch has polled once
        if time.monotonic() > deadline:
            raise RuntimeError("watchers did not start within 30 s")
        time.sleep(0.05)
    return watchers


def stop_watchers(watchers: list[tuple[subprocess.Popen[bytes], Path]]) -> list[dict[str, Any]]:
    for process, _ in watchers:
        process.send_signal(signal.SIGTERM)
    reports = []
    for process, out in watchers:
        process.wait(30)
        reports.append(json.loads(out.read_text()))
    return reports


def ms(values_ns: list[int], q: float) -> float | None:
    values = sorted(values_ns)
    value = benchlib.percentile(values, q) if values else None
    return None if value is None else value / 1e6


def in_window(times_ns: list[int], edges: dict[str, int]) -> float | None:
    """Changes per second delivered between the window's start and end."""
    start, end = edges.get("start"), edges.get("end")
    if start is None or end is None or end <= start:
        return None
    return sum(1 for t in times_ns if start <= t <= end) / ((end - start) / 1e9)


def summary(results: list[dict[str, Any]]) -> benchlib.Table:
    table = benchlib.Table(["watchers", "writes/s", "write p50 ms", "write p99 ms", "node us/op", "probe ack p50",
                            "probe ack p99", "probe seen p50", "probe seen p99", "changes/s per watcher"],
                           align_left=1)
    by_count: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_count.setdefault(r["watchers"], []).append(r)

    def med(rs: list[dict[str, Any]], name: str) -> Any:
        values = [r[name] for r in rs if r.get(name) is not None]
        return statistics.median(values) if values else None

    for count, rs in sorted(by_count.items()):
        table.add(count, med(rs, "ops_per_s"), statistics.median(r["latency"]["p50_ms"] for r in rs),
                  statistics.median(r["latency"]["p99_ms"] for r in rs), med(rs, "node_cpu_us_per_op"),
                  med(rs, "probe_ack_p50_ms"), med(rs, "probe_ack_p99_ms"), med(rs, "probe_seen_p50_ms"),
                  med(rs, "probe_seen_p99_ms"), med(rs, "changes_per_s_per_watcher"))
    return table


class WriteRunner(Runner):
    def spec(self, workload: str, target: pipeload.Target, inflight: int | None = None) -> pipeload.PipeSpec:
        a = self.args
        return pipeload.PipeSpec(target=target, workload=workload, inflight=inflight or a.inflight, procs=1,
                                 duration=a.duration, warmup=a.warmup, keys=a.keys, value_size=a.value_size,
                                 read_fraction=0.0, seed=a.seed, op_timeout=a.op_timeout)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="times each watcher count is measured (interleaved)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    p.add_argument("--inflight", type=int, default=64, help="write requests in flight")
    p.add_argument("--keys", type=int, default=1000, help="keys written")
    p.add_argument("--watchers", default="0,1,4", help="watcher counts, comma-separated (0: the baseline)")
    p.add_argument("--value-size", type=int, default=64, help="value bytes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--op-timeout", type=float, default=5.0, help="seconds before an op counts as timed out")
    p.add_argument("--wait-quiet", type=float, default=5.0,
                   help="before each window, wait up to this many seconds for other processes to be quiet")
    p.add_argument("--json", type=Path, default=None, help="write every window and the summary to this file")
    args = p.parse_args(argv)
    try:
        args.counts = [int(x) for x in args.watchers.split(",") if x.strip()]
    except ValueError:
        p.error("--watchers takes comma-separated integers")
    if min(args.rounds, args.inflight, args.keys) < 1 or any(c < 0 for c in args.counts) or args.duration <= 0:
        p.error("--rounds, --inflight, --keys and --duration must be positive, watcher counts not negative")
    args.hot_keys, args.py_spy, args.profile_dir = args.keys, None, None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--watcher"]:
        return watcher_main(argv[1], Path(argv[2]))
    args = parse_args(argv)
    benchlib.install_signal_handlers()
    info = machine_info()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}; load: {args.inflight} "
          f"writes in flight on {args.keys} keys, {args.warmup:g} s + {args.duration:g} s per window, "
          f"{args.rounds} round(s), watchers {args.counts}", flush=True)
    runner = WriteRunner(args)
    started = time.time()
    status = 0
    cluster = None
    probe = None
    try:
        with tempfile.TemporaryDirectory(prefix="zcraq-watch-bench-") as tmp:
            cluster = start_chain(3, "async", args)
            target = chain_target(cluster.coordinator_endpoint)
            probe = Probe(cluster.coordinator_endpoint)
            for r in range(1, args.rounds + 1):
                for count in args.counts:
                    watchers = start_watchers(count, cluster.coordinator_endpoint, Path(tmp))
                    probe.ack_ns.clear()
                    edges: dict[str, int] = {}

                    def edge(which: str, p: Probe = probe, edges: dict[str, int] = edges) -> None:
                        edges[which] = time.monotonic_ns()
                        (p.measuring.set if which == "start" else p.measuring.clear)()

                    try:
                        result = runner.window({"phase": "watch", "system": f"zcraq 3 nodes, {count} watchers",
                                                "nodes": 3, "round": r}, "write", target, cluster.pids(), edge)
                    finally:
                        reports = stop_watchers(watchers)
                    if result is None:
                        continue
                    seen = [ns for report in reports for ns in report["seen_ns"]]
                    result.update(watchers=count, probe_ack_p50_ms=ms(probe.ack_ns, 50),
                                  probe_ack_p99_ms=ms(probe.ack_ns, 99), probe_seen_p50_ms=ms(seen, 50),
                                  probe_seen_p99_ms=ms(seen, 99),
                                  changes_per_s_per_watcher=statistics.median(
                                      in_window(rep["delivered_ns"], edges) for rep in reports) if reports else None,
                                  watch_pruned=sum(rep["pruned"] for rep in reports))
                    cluster.check()
    except (KeyboardInterrupt, benchlib.Interrupted) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}); everything started was stopped", file=sys.stderr)
        status = 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    finally:
        if probe is not None:
            probe.close()
        if cluster is not None:
            cluster.close()
    if runner.results:
        print("\n== medians over rounds (probe: a write of one key every 50 ms during the window; ack: its "
              "acknowledgement, seen: its delivery to a watcher, both from the write's start; ms)")
        print(summary(runner.results).render())
    if args.json and runner.results:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "argv": sys.argv,
            "machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": runner.results}, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
