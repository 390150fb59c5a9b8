"""zcraq under pipelined load: what the chain does when the load generator is not the limit.

chain_bench.py drives closed-loop ZClients, which spend about as much CPU per op as a node
does, so a few clients cannot keep a chain busy. This benchmark drives the chain with
pipeload.py instead (raw DEALER sockets, many requests in flight per generator process, each
request a pre-encoded header) and reports, for every figure, ops/s, p50/p99 latency, the nodes'
CPU per op (all node processes, from /proc) and the generators' CPU per op.

Phases (each workload repeated --rounds times, the workloads of a phase interleaved; the report
gives medians):

    main     a 3-node chain (async durability) and 3 echo servers (zmq_baseline.py):
               read       strong reads of --keys keys, spread over every member
               mixed      90 % strong reads / 10 % writes on --hot-keys keys
               read_many  strong read_many of --batch keys each, spread over every member
               echo-read  the same read requests, spread over the 3 echo servers
    sync     a 3-node chain with durability "sync" and 1 echo server:
               write      writes to the head
               echo-write the same writes, to the echo server
    scaling  chains of --scaling-nodes nodes, each node capped at --node-cpu of a CPU in a cgroup
             of its own (the generators and coordinators stay uncapped): strong reads, with
             --scaling-inflight requests in flight per node (a node's CPU per read falls as its
             queue, and so the batch its loop takes per turn, grows: with one fixed window spread
             over more nodes, a longer chain would pay more per read for a shallower queue)

Echo servers answer the same request frames with replies of the same shape without doing any
work, so zcraq/echo is the share of its own ceiling (ZeroMQ + one Python loop per server + the
same generator) that the chain reaches.

--py-spy PATH adds one more read window with node2, and one more sync write window with the
head, under py-spy, each summarized by spy_top.py (those windows are not in the figures).

A read_many that the nodes refuse as bad_request fails that workload with "the chain does not
know read_many"; the rest still runs, and the exit status is then 3.

    python bench/pipeline_bench.py --rounds 3 --duration 5 --json bench/results/pipeline.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib
import cpuquota
import pipeload
import spy_top
from chain_bench import machine_info, preload
from zmq_baseline import EchoServers

PHASES = ("main", "sync", "scaling")
QUIET_PCT = 10.0  # wait (--wait-quiet s at most) for other processes to use under this % of a CPU


# ---------------------------------------------------------------------------------------------
# Targets


def chain_target(coordinator: str, timeout: float = 5.0) -> pipeload.Target:
    """Reads to every member's service endpoint, writes to the head (members[0]), from the
    coordinator's topology (PROTOCOL.md §9.1)."""
    import orjson
    import zmq

    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(coordinator)
        sock.send_multipart([b"", b'{"type":"topology","id":1}'])
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"the coordinator at {coordinator} did not answer a topology request")
        reply = orjson.loads(sock.recv_multipart()[1])
        sock.close(0)
    finally:
        ctx.term()
    services = [m["service"] for m in reply["topology"]["members"]]
    return pipeload.Target(read_endpoints=services, write_endpoint=services[0])


def echo_target(endpoints: list[str]) -> pipeload.Target:
    return pipeload.Target(read_endpoints=endpoints, write_endpoint=endpoints[0], echo=True)


# ---------------------------------------------------------------------------------------------
# One window


class Runner:
    """Runs windows with the shared settings, prints each and keeps every result."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: list[dict[str, Any]] = []
        self.unknown_read_many: str | None = None
        self.profiles: dict[str, str] = {}
        self.idle: dict[int, float] = {}  # scaling: % of a CPU an idle node uses, by chain size

    def spec(self, workload: str, target: pipeload.Target, inflight: int | None = None) -> pipeload.PipeSpec:
        a = self.args
        keys, read_fraction, batch = {
            "read": (a.keys, 1.0, 1), "mixed": (a.hot_keys, 0.9, 1),
            "read_many": (a.keys, 1.0, a.batch), "write": (a.keys, 0.0, 1)}[workload]
        return pipeload.PipeSpec(target=target, workload=workload, inflight=inflight or a.inflight, procs=a.procs,
                                 duration=a.duration, warmup=a.warmup, keys=keys, value_size=a.value_size,
                                 read_fraction=read_fraction, batch=batch, seed=a.seed, op_timeout=a.op_timeout)

    def window(self, label: dict[str, Any], workload: str, target: pipeload.Target, pids: dict[str, int],
               on_window: Callable[[str], Any] | None = None, inflight: int | None = None) -> dict[str, Any] | None:
        if workload == "read_many" and self.unknown_read_many:
            return None
        if self.args.wait_quiet > 0:
            benchlib.wait_quiet(self.args.wait_quiet, QUIET_PCT)
        try:
            result = pipeload.run(self.spec(workload, target, inflight), pids, on_window)
        except pipeload.Fatal as exc:
            if pipeload.UNKNOWN_READ_MANY in str(exc):
                self.unknown_read_many = str(exc)
                print(f"   {label['system']} {workload}: FAILED: {exc}", flush=True)
                return None
            raise
        result.update(label)
        result["name"] = f"{label['system']} {workload}"
        probe = result.pop("window_probe", {})
        if probe.get("start") is not None and probe.get("end") is not None:
            result["cgroup"] = {n: {k: probe["end"][n].get(k, 0) - v for k, v in s.items()}
                                for n, s in probe["start"].items()}
        self.results.append(result)
        print(line(result), flush=True)
        return result

    def profile(self, name: str, workload: str, target: pipeload.Target, pids: dict[str, int], node: str) -> None:
        """One more window (not in the figures) with ``node`` under py-spy: where its time goes."""
        if not self.args.py_spy:
            return
        directory = self.args.profile_dir or Path(tempfile.mkdtemp(prefix="zcraq-spy-"))
        directory.mkdir(parents=True, exist_ok=True)
        output = directory / f"{name.replace(' ', '-')}-{node}.txt"
        spy = spy_top.record(self.args.py_spy, pids[node], self.args.warmup + self.args.duration + 1, output)
        try:
            result = pipeload.run(self.spec(workload, target), pids)
        finally:
            _, err = spy.communicate(timeout=self.args.duration + 60)
        if spy.returncode != 0 or not output.exists():
            print(f"   py-spy on {node} failed: {err.decode(errors='replace').strip()[-500:]}", flush=True)
            return
        text = (f"{name}, {node} under py-spy ({result['ops_per_s']:,.0f} ops/s while profiled; "
                f"raw profile {output}):\n" + spy_top.top(spy_top.parse(output.read_text()), 12))
        self.profiles[name] = text
        print("   " + text.replace("\n", "\n   "), flush=True)



def node_cpu_pct(result: dict[str, Any]) -> float:
    """CPU of every server process (nodes or echo servers), % of one CPU."""
    cpu = result["cpu"]
    return 100 * sum(c["cpu_s"] or 0.0 for n, c in cpu["processes"].items()
                     if n.startswith(("node", "echo"))) / cpu["wall_s"]


def client_cpu_pct(result: dict[str, Any]) -> float:
    """Every generator process (by its own clock), % of one CPU."""
    return sum(v for v in result["generator_cpu_pct"] if v is not None)


def gen_loop_pct(result: dict[str, Any]) -> float:
    """The busiest generator's Python loop (main thread), % of one CPU: near 100 it is the limit."""
    return max((v for v in result["generator_loop_pct"] if v is not None), default=0.0)


def line(r: dict[str, Any]) -> str:
    keys = f", {r['keys_per_s']:,.0f} keys/s" if r.get("keys_per_s") is not None else ""
    split = ""
    if len(r["ops_per_s_by_op"]) > 1:
        split = " (" + ", ".join(f"{k} {v:,.0f}" for k, v in r["ops_per_s_by_op"].items()) + ")"
    errors = f"; errors {r['errors_by_op']}" if r["errors"] else ""
    errors += f"; keys failed {r['keys_failed']}" if r.get("keys_failed") else ""
    return (f"   round {r['round']} {r['name']:<22} {r['ops_per_s']:>9,.0f} ops/s{split}{keys}; "
            f"p50 {r['latency']['p50_ms']:.2f} ms p99 {r['latency']['p99_ms']:.2f} ms; "
            f"server {r['node_cpu_us_per_op']:.1f} us/op ({node_cpu_pct(r):.0f}% CPU), "
            f"client {r['client_cpu_us_per_op']:.1f} us/op ({client_cpu_pct(r):.0f}% CPU, busiest loop "
            f"{gen_loop_pct(r):.0f}%); "
            f"others {r['others_cpu_pct']:.0f}%{errors}")


# ---------------------------------------------------------------------------------------------
# Phases


def start_chain(nodes: int, durability: str, args: argparse.Namespace,
                quota: cpuquota.CpuQuota | None = None) -> benchlib.ChainCluster:
    cluster = benchlib.ChainCluster(nodes, durability=durability)
    if quota is not None:
        cluster.hooks.append(benchlib.NodeQuota(quota))
    try:
        started = time.monotonic()
        cluster.start_all(timeout=60.0)
        preload(cluster.coordinator_endpoint, args.keys, args.value_size, args.seed, args.op_timeout)
        print(f"{nodes}-node chain ({durability} durability{f', each node capped at {args.node_cpu:g} CPU' if quota else ''}) "
              f"up and {args.keys:,} keys preloaded in {time.monotonic() - started:.1f} s", flush=True)
    except BaseException:
        cluster.close()
        raise
    return cluster


def phase_main(runner: Runner, args: argparse.Namespace, root: Path) -> None:
    print("\n== main: 3-node chain (async durability) and 3 echo servers", flush=True)
    (root / "echo3").mkdir()
    echo = EchoServers(3, args.value_size, root / "echo3")
    cluster = None
    try:
        echo.wait_ready()
        cluster = start_chain(3, "async", args)
        chain = chain_target(cluster.coordinator_endpoint)
        for r in range(1, args.rounds + 1):
            for workload in ("read", "mixed", "read_many"):
                runner.window({"phase": "main", "system": "zcraq 3 nodes", "nodes": 3, "round": r},
                              workload, chain, cluster.pids())
                cluster.check()
            runner.window({"phase": "main", "system": "echo x3", "servers": 3, "round": r},
                          "read", echo_target(echo.endpoints), echo.pids())
            echo.check_alive()
        runner.profile("3-node strong reads", "read", chain, cluster.pids(), "node2")
    finally:
        if cluster is not None:
            cluster.close()
        echo.close()


def phase_sync(runner: Runner, args: argparse.Namespace, root: Path) -> None:
    print("\n== sync: 3-node chain (sync durability) and 1 echo server", flush=True)
    (root / "echo1").mkdir()
    echo = EchoServers(1, args.value_size, root / "echo1")
    cluster = None
    try:
        echo.wait_ready()
        cluster = start_chain(3, "sync", args)
        chain = chain_target(cluster.coordinator_endpoint)
        for r in range(1, args.rounds + 1):
            runner.window({"phase": "sync", "system": "zcraq 3 nodes sync", "nodes": 3, "round": r},
                          "write", chain, cluster.pids())
            cluster.check()
            runner.window({"phase": "sync", "system": "echo x1", "servers": 1, "round": r},
                          "write", echo_target(echo.endpoints), echo.pids())
            echo.check_alive()
        runner.profile("3-node sync writes", "write", chain, cluster.pids(), "node1")
    finally:
        if cluster is not None:
            cluster.close()
        echo.close()


def cgroup_stats(quota: cpuquota.CpuQuota, names: list[str]) -> dict[str, dict[str, int]]:
    """cpu.stat of each node's group: periods, throttled periods, throttled time."""
    out = {}
    for name in names:
        try:
            text = (quota.parent / name / "cpu.stat").read_text()
        except OSError:
            continue
        out[name] = {k: int(v) for k, v in (row.split() for row in text.splitlines() if row.strip())}
    return out


def idle_cpu(runner: Runner, clusters: dict[int, benchlib.ChainCluster], args: argparse.Namespace) -> None:
    """CPU each capped node uses with no load (heartbeats, peer confirmations: the more peers, the
    more of them), over one window with every chain idle: what is left of the cap for reads."""
    pids = {f"{n}/{name}": pid for n, c in clusters.items() for name, pid in c.pids().items() if name != "coordinator"}
    before = benchlib.cpu_snapshot(pids)
    time.sleep(args.duration)
    cpu = benchlib.cpu_delta(before, benchlib.cpu_snapshot(pids))
    for n in clusters:
        used = [c["cpu_s"] or 0.0 for name, c in cpu["processes"].items() if name.startswith(f"{n}/")]
        pct = 100 * sum(used) / len(used) / cpu["wall_s"]
        runner.idle[n] = pct
        print(f"   idle: a node of the {n}-node chain uses {pct:.2f}% of a CPU ({pct / args.node_cpu:.1f}% of its cap)",
              flush=True)


def phase_scaling(runner: Runner, args: argparse.Namespace) -> None:
    sizes = args.scaling_nodes
    print(f"\n== scaling: chains of {', '.join(map(str, sizes))} nodes, each node capped at {args.node_cpu:g} CPU "
          "(generators and coordinators uncapped)", flush=True)
    clusters: dict[int, tuple[benchlib.ChainCluster, cpuquota.CpuQuota]] = {}
    try:
        for n in sizes:
            quota = cpuquota.CpuQuota(args.node_cpu)
            # One parent group per chain: the chains run side by side and their node names repeat.
            quota.parent = quota.base / f"zcraq-bench-{os.getpid()}-n{n}"
            clusters[n] = (start_chain(n, "async", args, quota), quota)
        idle_cpu(runner, {n: c for n, (c, _q) in clusters.items()}, args)
        for r in range(1, args.rounds + 1):
            for n in sizes:
                cluster, quota = clusters[n]

                def stats(_edge: str, quota: cpuquota.CpuQuota = quota,
                          names: list[str] = cluster.node_ids) -> dict[str, dict[str, int]]:
                    return cgroup_stats(quota, names)
                runner.window({"phase": "scaling", "system": f"zcraq {n} capped", "nodes": n, "round": r,
                               "node_cpu": args.node_cpu}, "read", chain_target(cluster.coordinator_endpoint),
                              cluster.pids(), stats,
                              inflight=args.scaling_inflight * n)
                cluster.check()
    finally:
        for cluster, _quota in clusters.values():
            cluster.close()


# ---------------------------------------------------------------------------------------------
# Summary


def medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, workload): the median over rounds of every figure."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    rows = []
    for name, rs in groups.items():
        def med(get: Callable[[dict[str, Any]], float | None]) -> float | None:
            values = [v for v in map(get, rs) if v is not None]
            return statistics.median(values) if values else None
        row = {"name": name, "phase": rs[0]["phase"], "workload": rs[0]["workload"], "rounds": len(rs),
               "nodes": rs[0].get("nodes"), "ops_per_s": med(lambda r: r["ops_per_s"]),
               "reads_per_s": med(lambda r: r["ops_per_s_by_op"].get("read")),
               "keys_per_s": med(lambda r: r.get("keys_per_s")),
               "p50_ms": med(lambda r: r["latency"]["p50_ms"]), "p99_ms": med(lambda r: r["latency"]["p99_ms"]),
               "node_us": med(lambda r: r["node_cpu_us_per_op"]), "client_us": med(lambda r: r["client_cpu_us_per_op"]),
               "node_pct": med(node_cpu_pct), "client_pct": med(client_cpu_pct), "gen_loop_pct": med(gen_loop_pct),
               "others_pct": med(lambda r: r["others_cpu_pct"]), "errors": sum(r["errors"] for r in rs),
               "all_ops_per_s": [round(r["ops_per_s"]) for r in rs]}
        throttled = [sum(s.get("nr_throttled", 0) for s in r["cgroup"].values()) /
                     max(1, sum(s.get("nr_periods", 0) for s in r["cgroup"].values()))
                     for r in rs if r.get("cgroup")]
        row["throttled_share"] = statistics.median(throttled) if throttled else None
        rows.append(row)
    return rows


def summary_table(rows: list[dict[str, Any]]) -> benchlib.Table:
    table = benchlib.Table(["system", "workload", "ops/s", "keys/s", "p50 ms", "p99 ms", "node us/op",
                            "client us/op", "node cpu%", "gen cpu%", "gen loop%", "throttled", "others cpu%", "errors",
                            "ops/s each round"], align_left=2)
    for r in rows:
        table.add(r["name"].rsplit(" ", 1)[0], r["workload"], r["ops_per_s"], r["keys_per_s"], r["p50_ms"],
                  r["p99_ms"], r["node_us"], r["client_us"], r["node_pct"], r["client_pct"], r["gen_loop_pct"],
                  None if r["throttled_share"] is None else f"{100 * r['throttled_share']:.0f}%",
                  r["others_pct"], r["errors"], " / ".join(f"{v:,}" for v in r["all_ops_per_s"]))
    return table


def goals(rows: list[dict[str, Any]], unknown_read_many: str | None) -> tuple[benchlib.Table, dict[str, Any]]:
    by = {r["name"]: r for r in rows}

    def get(name: str, key: str) -> float | None:
        return by[name][key] if name in by else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    read = get("zcraq 3 nodes read", "ops_per_s")
    figures: dict[str, Any] = {
        "read_ops": read, "read_node_us": get("zcraq 3 nodes read", "node_us"),
        "read_many_keys": get("zcraq 3 nodes read_many", "keys_per_s"),
        "write_ops": get("zcraq 3 nodes sync write", "ops_per_s"),
        "write_node_us": get("zcraq 3 nodes sync write", "node_us"),
        "mixed_read_ratio": ratio(get("zcraq 3 nodes mixed", "reads_per_s"), read),
        "zcraq_vs_echo_read": ratio(read, get("echo x3 read", "ops_per_s")),
        "zcraq_vs_echo_write": ratio(get("zcraq 3 nodes sync write", "ops_per_s"), get("echo x1 write", "ops_per_s")),
        # Server CPU per op, zcraq's nodes against the echo servers: what the Python server loop costs
        # beyond ZeroMQ's floor, free of how busy the machine was.
        "zcraq_vs_echo_read_cpu": ratio(get("zcraq 3 nodes read", "node_us"), get("echo x3 read", "node_us")),
        "zcraq_vs_echo_write_cpu": ratio(get("zcraq 3 nodes sync write", "node_us"), get("echo x1 write", "node_us")),
    }
    one = get("zcraq 1 capped read", "ops_per_s")
    figures["scaling_3"] = ratio(get("zcraq 3 capped read", "ops_per_s"), one)
    figures["scaling_5"] = ratio(get("zcraq 5 capped read", "ops_per_s"), one)
    table = benchlib.Table(["goal", "target", "measured", "met"])

    def goal(text: str, target: str, value: float | None, ok: Callable[[float], bool], shown: str) -> None:
        table.add(text, target, shown if value is not None else "not measured",
                  "-" if value is None else "met" if ok(value) else "not met")

    def fmt(v: float | None, spec: str) -> str:
        return "" if v is None else format(v, spec)

    goal("3-node strong reads", ">= 30,000/s", read, lambda v: v >= 30_000, f"{fmt(read, ',.0f')}/s")
    goal("node CPU per read (3 nodes)", "<= 35 us", figures["read_node_us"], lambda v: v <= 35,
         f"{fmt(figures['read_node_us'], '.1f')} us")
    rm = figures["read_many_keys"]
    table.add("read_many, 16-key batches", ">= 100,000 keys/s",
              f"{rm:,.0f} keys/s" if rm is not None else
              ("fails: the chain does not know read_many" if unknown_read_many else "not measured"),
              "-" if rm is None and not unknown_read_many else "met" if rm is not None and rm >= 100_000 else "not met")
    goal("3-node sync writes", ">= 10,000/s", figures["write_ops"], lambda v: v >= 10_000,
         f"{fmt(figures['write_ops'], ',.0f')}/s")
    goal("node CPU per sync write, all hops", "<= 150 us", figures["write_node_us"], lambda v: v <= 150,
         f"{fmt(figures['write_node_us'], '.0f')} us")
    goal("90/10 on 16 hot keys: reads vs clean reads", ">= 0.5", figures["mixed_read_ratio"], lambda v: v >= 0.5,
         f"{fmt(figures['mixed_read_ratio'], '.2f')}")
    goal("read scaling under a per-node CPU quota, 3/1", ">= 2.7x", figures["scaling_3"], lambda v: v >= 2.7,
         f"{fmt(figures['scaling_3'], '.2f')}x")
    goal("read scaling under a per-node CPU quota, 5/1", ">= 4.3x", figures["scaling_5"], lambda v: v >= 4.3,
         f"{fmt(figures['scaling_5'], '.2f')}x")
    return table, figures


# ---------------------------------------------------------------------------------------------
# Command line


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _phases(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PHASES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"phases are {', '.join(PHASES)}; got {text!r}")
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--phases", type=_phases, default=",".join(PHASES), help="which phases, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="times each workload is measured (interleaved)")
    p.add_argument("--inflight", type=int, default=128, help="requests in flight per generator process")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    p.add_argument("--keys", type=int, default=1000, help="key space of reads, writes and batches")
    p.add_argument("--hot-keys", type=int, default=16, help="key space of the mixed workload")
    p.add_argument("--batch", type=int, default=16, help="keys per read_many")
    p.add_argument("--value-size", type=int, default=64, help="value bytes")
    p.add_argument("--node-cpu", type=float, default=0.15, help="scaling: each node's CPU cap, a fraction of one CPU")
    p.add_argument("--scaling-inflight", type=int, default=64,
                   help="scaling: requests in flight per node and generator process (so every chain size "
                        "sees the same queue at each node)")
    p.add_argument("--scaling-nodes", type=_positive_ints, default="1,3,5", help="scaling: chain sizes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--op-timeout", type=float, default=5.0, help="seconds before an op counts as timed out")
    p.add_argument("--wait-quiet", type=float, default=5.0,
                   help="before each window, wait up to this many seconds for other processes to use under "
                        f"{QUIET_PCT:g}%% of a CPU (0: do not wait)")
    p.add_argument("--py-spy", default=None, metavar="PATH",
                   help="py-spy program: after the rounds, one more read window with node2 and one more "
                        "sync write window with the head (node1) under it, each summarized (not in the figures)")
    p.add_argument("--profile-dir", type=Path, default=None, help="where py-spy's raw profiles go (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="write every window and the summary to this file")
    args = p.parse_args(argv)
    if min(args.rounds, args.inflight, args.scaling_inflight, args.procs, args.keys, args.hot_keys) < 1 or args.batch < 2:
        p.error("--rounds, --inflight, --procs, --keys and --hot-keys must be positive, --batch at least 2")
    if args.hot_keys > args.keys or args.duration <= 0 or args.warmup < 0 or args.value_size < 0:
        p.error("--hot-keys must be at most --keys, --duration positive, --warmup and --value-size not negative")
    if not 0.01 <= args.node_cpu <= 2:
        p.error("--node-cpu must be from 0.01 to 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    benchlib.install_signal_handlers()
    if "scaling" in args.phases:
        try:
            cpuquota.CpuQuota.detect()
        except cpuquota.CpuQuotaError as exc:
            print(f"scaling phase: {exc}", file=sys.stderr)
            return 2
    info = machine_info()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, pyzmq {info['pyzmq']}; "
          f"load: {args.procs} generator process(es) x {args.inflight} in flight, {args.warmup:g} s warm-up + "
          f"{args.duration:g} s measured per window, {args.rounds} round(s), {args.value_size}-byte values",
          flush=True)
    runner = Runner(args)
    started = time.time()
    status = 0
    try:
        with tempfile.TemporaryDirectory(prefix="zcraq-pipeline-") as tmp:
            if "main" in args.phases:
                phase_main(runner, args, Path(tmp))
            if "sync" in args.phases:
                phase_sync(runner, args, Path(tmp))
            if "scaling" in args.phases:
                phase_scaling(runner, args)
    except (KeyboardInterrupt, benchlib.Interrupted) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}); everything started was stopped", file=sys.stderr)
        status = 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    rows = medians(runner.results)
    table, figures = goals(rows, runner.unknown_read_many)
    if rows:
        print("\n== medians over rounds (node = every node or echo server process; gen = the generators; "
              "cpu% of one CPU; 'gen loop' = the busiest generator's Python thread; 'throttled' = share of the quota periods in which a capped node was throttled; "
              "others = processes outside the benchmark)")
        print(summary_table(rows).render())
        ratios = {k: v for k, v in figures.items() if k.startswith(("zcraq_vs", "mixed", "scaling")) and v is not None}
        print("\nratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
        print("\n== goals\n" + table.render())
    if runner.unknown_read_many:
        print(f"\nread_many FAILED: {runner.unknown_read_many}", file=sys.stderr)
        status = status or 3
    if args.json and runner.results:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)), "argv": sys.argv,
            "machine": info, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "medians": rows, "figures": figures, "profiles": runner.profiles, "idle_node_cpu_pct": runner.idle, "read_many_failure": runner.unknown_read_many,
            "results": runner.results}, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
