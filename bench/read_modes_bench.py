"""Strong, bounded and eventual reads under a mixed load: how fast each is, and how often the
nodes ask the tail.

One 3-node chain (async durability) and pipeload.py's generator (raw DEALER sockets, many requests
in flight): --read-share of the ops are reads spread over every member, the rest writes to the
head, all on --hot-keys keys, so that a key often has writes in flight (dirty) when it is read.
Each round runs one window per read mode, interleaved: strong (the baseline: a dirty key always
asks the tail), bounded with each limit of --staleness-ms, and eventual (never asks the tail).

Around each window every node's status counters are read (PROTOCOL.md §8.6): ``reads``,
``dirty_reads`` (reads that asked the tail) and ``bounded_local_reads`` (bounded reads of a dirty
key answered from the node's own committed version). The report gives, per mode, medians over
rounds of reads/s, writes/s, the share of reads that asked the tail, the share answered locally
although dirty, p50/p99 latency and node CPU per op.

    python bench/read_modes_bench.py --rounds 3 --duration 5 --json bench/results/read-modes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import pipeload
from chain_bench import machine_info
from pipeline_bench import Runner, chain_target, start_chain

from zcraq.client import ZClient

COUNTERS = ("reads", "dirty_reads", "bounded_local_reads")


class ModeRunner(Runner):
    """Runner whose workloads are "strong", "eventual" and "bounded-<ms>": mixed reads and writes."""

    def spec(self, workload: str, target: pipeload.Target, inflight: int | None = None) -> pipeload.PipeSpec:
        a = self.args
        mode, _, limit = workload.partition("-")
        return pipeload.PipeSpec(target=target, workload=workload, inflight=inflight or a.inflight, procs=a.procs,
                                 duration=a.duration, warmup=a.warmup, keys=a.hot_keys, value_size=a.value_size,
                                 read_fraction=a.read_share, read_mode=mode,
                                 max_staleness_ms=int(limit) if limit else None, seed=a.seed,
                                 op_timeout=a.op_timeout)


def node_counters(coordinator: str, nodes: list[str]) -> dict[str, dict[str, int]]:
    with ZClient(coordinator, timeout=5.0) as client:
        return {node: {name: client.status(node)["counters"].get(name, 0) for name in COUNTERS} for node in nodes}


def summary(results: list[dict[str, Any]]) -> benchlib.Table:
    table = benchlib.Table(["read mode", "reads/s", "writes/s", "asked the tail", "dirty, answered here",
                            "p50 ms", "p99 ms", "node us/op", "reads/s each round"], align_left=1)
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_mode.setdefault(r["workload"], []).append(r)
    for mode, rs in by_mode.items():
        def share(counter: str, r: dict[str, Any]) -> float:
            deltas = r["counters"].values()
            return 100 * sum(d[counter] for d in deltas) / max(1, sum(d["reads"] for d in deltas))

        table.add(mode, statistics.median(r["ops_per_s_by_op"].get("read", 0) for r in rs),
                  statistics.median(r["ops_per_s_by_op"].get("write", 0) for r in rs),
                  f"{statistics.median(share('dirty_reads', r) for r in rs):.1f}%",
                  f"{statistics.median(share('bounded_local_reads', r) for r in rs):.1f}%",
                  statistics.median(r["latency"]["p50_ms"] for r in rs),
                  statistics.median(r["latency"]["p99_ms"] for r in rs),
                  statistics.median(r["node_cpu_us_per_op"] for r in rs),
                  " / ".join(f"{r['ops_per_s_by_op'].get('read', 0):,.0f}" for r in rs))
    return table


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="times each mode is measured (interleaved)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    p.add_argument("--inflight", type=int, default=128, help="requests in flight per generator process")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--hot-keys", type=int, default=16, help="keys read and written")
    p.add_argument("--read-share", type=float, default=0.9, help="share of the ops that are reads")
    p.add_argument("--staleness-ms", default="10,100,1000",
                   help="the limits of the bounded windows, comma-separated milliseconds")
    p.add_argument("--value-size", type=int, default=64, help="value bytes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--op-timeout", type=float, default=5.0, help="seconds before an op counts as timed out")
    p.add_argument("--wait-quiet", type=float, default=5.0,
                   help="before each window, wait up to this many seconds for other processes to be quiet")
    p.add_argument("--json", type=Path, default=None, help="write every window and the summary to this file")
    args = p.parse_args(argv)
    try:
        args.limits = [int(x) for x in args.staleness_ms.split(",") if x.strip()]
    except ValueError:
        p.error("--staleness-ms takes comma-separated integers")
    if min(args.rounds, args.inflight, args.procs, args.hot_keys) < 1 or not 0 < args.read_share < 1:
        p.error("--rounds, --inflight, --procs and --hot-keys must be positive; --read-share between 0 and 1")
    if any(not 0 <= limit <= 3_600_000 for limit in args.limits) or args.duration <= 0:
        p.error("limits must be from 0 to 3600000 ms, --duration positive")
    # What start_chain and Runner read besides: the key space preloaded, no py-spy windows.
    args.keys, args.py_spy, args.profile_dir = args.hot_keys, None, None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    benchlib.install_signal_handlers()
    info = machine_info()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}; load: {args.inflight} in "
          f"flight, {100 * args.read_share:g}% reads on {args.hot_keys} keys, {args.warmup:g} s + {args.duration:g} s "
          f"per window, {args.rounds} round(s)", flush=True)
    runner = ModeRunner(args)
    modes = ["strong", *(f"bounded-{limit}" for limit in args.limits), "eventual"]
    started = time.time()
    status = 0
    cluster = None
    try:
        with tempfile.TemporaryDirectory(prefix="zcraq-read-modes-"):
            cluster = start_chain(3, "async", args)
            target = chain_target(cluster.coordinator_endpoint)
            for r in range(1, args.rounds + 1):
                for mode in modes:
                    def probe(_edge: str, c: benchlib.ChainCluster = cluster) -> dict[str, dict[str, int]]:
                        return node_counters(c.coordinator_endpoint, c.node_ids)
                    result = runner.window({"phase": "modes", "system": "zcraq 3 nodes", "nodes": 3, "round": r},
                                           mode, target, cluster.pids(), probe)
                    if result is not None:
                        result["counters"] = result.pop("cgroup", {})
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
        if cluster is not None:
            cluster.close()
    if runner.results:
        print("\n== medians over rounds (asked the tail / answered here: shares of all reads, from the nodes' "
              "counters)")
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
    sys.exit(main())
