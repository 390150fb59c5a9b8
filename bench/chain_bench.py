"""zcraq chain benchmark: throughput, latency and per-process CPU of a real local chain.

For each chain size it starts its own coordinator and nodes (``python -m zcraq ...`` subprocesses,
configs and LevelDB data in a temporary directory, free loopback ports), waits until every node
serves, writes the key space once, then runs each workload with closed-loop clients spread over
several generator processes:

    read   100% reads  (ZClient default: spread round-robin over every node, strong mode)
    write  100% writes (to the head; a write returns when committed at the tail)
    mixed  --read-fraction reads (default 0.9), the rest writes

Keys are uniform over the key space, values are --value-size random bytes, and every random
choice comes from a fixed seed. A warm-up is run and excluded; throughput counts only successful
ops completed inside the measured window; errors are counted separately; percentiles come from
the merged raw latencies of every op. CPU time per process (coordinator, each node, each
generator, this process) is read from /proc/PID/stat at the window's edges.

The same run measures a baseline (see zmq_baseline.py): the same clients doing bare pyzmq
DEALER->ROUTER round trips of the same message shapes against a do-nothing echo server.

    python bench/chain_bench.py --nodes 1,3 --clients 8 --duration 10 --workload all --json out.json

--metrics on makes every process serve /metrics (metrics_port) and scrapes each once a second while
the chain runs; --metrics both runs each chain size without and then with it, to measure in one run
what monitoring costs.

--node-cpu F caps each node (and each echo server, to keep the baseline comparable) at F of one
CPU, in its own cgroup; the coordinator and the load generators stay uncapped. On a machine with
fewer CPUs than processes this shows how reads scale with the chain length.

Everything started is stopped on exit, on Ctrl-C, on SIGTERM and on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
import cpuquota
import loadgen
import zmq_baseline

WORKLOADS = ("read", "write", "mixed")


# ---------------------------------------------------------------------------------------------
# Reporting


def describe(result: dict[str, Any]) -> str:
    curve = ", CURVE" if result.get("security") == "curve" else ""
    curve += ", metrics scraped every 1 s" if result.get("metrics") else ""
    shape = (f"{result['nodes']} nodes, {result['partitions']} partitions of {result['replication']}"
             if result.get("partitions", 1) > 1 else f"{result['nodes']}-node chain")
    system = (f"zcraq, {shape} ({result['durability']} durability{curve})"
              if result["system"] == "zcraq" else f"zmq echo baseline, {result['servers']} server(s)")
    workload = result["workload"]
    if workload == "mixed":
        workload += f" ({result['read_fraction']:.0%} reads)"
    procs = result["generator_processes"]
    per = sorted(set(result["clients_per_process"]))
    per_text = "/".join(map(str, per))
    cap = result.get("node_cpu")
    capped = f" | each {'node' if result['system'] == 'zcraq' else 'server'} capped at {cap:g} CPU" if cap else ""
    return (f"{system} | workload {workload} | {result['clients']} clients in {procs} generator "
            f"process(es), {per_text} client thread(s) each | {result['duration_s']:g} s measured "
            f"after {result['warmup_s']:g} s warm-up{capped}")


def print_result(result: dict[str, Any]) -> None:
    out = [f"\n== {describe(result)}"]
    attempts = result.get("attempts", [])
    if len(attempts) > 1 or result.get("disturbed"):
        out.append(f"   (kept attempt {result['attempt']} of {len(attempts)}, the least disturbed: other processes "
                   f"used {result['others_cpu_pct']:.0f}% of a CPU during it"
                   + ("; STILL DISTURBED" if result["disturbed"] else "") + ")")
    by_op = result["ops_per_s_by_op"]
    split = ", ".join(f"{k} {benchlib.fmt(v)}" for k, v in by_op.items() if v)
    out.append(f"   ok ops/s: {benchlib.fmt(result['ops_per_s'])} ({split});  ok ops: "
               f"{result['ok_ops']:,};  errors: {result['errors']}"
               + (f" {result['errors_by_type']}" if result["errors"] else ""))
    lat = benchlib.Table(["latency (ms)", "count", "mean", "p50", "p90", "p99", "p99.9", "max"])
    for name, s in [("all", result["latency"]), *result["latency_by_op"].items()]:
        if name != "all" and len(result["latency_by_op"]) < 2:
            continue
        lat.add(name, s["count"], s["mean_ms"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["p999_ms"], s["max_ms"])
    out.append(_indent(lat.render()))
    cpu = result["cpu"]
    wall = cpu["wall_s"]
    table = benchlib.Table(["process", "cpu s", "cpu %", "cpu us/op", "main thr %", "zmq io %", "other thr %"])
    ok = max(1, result["ok_ops"])
    for name, c in cpu["processes"].items():
        t = c.get("threads_s", {})
        table.add(name, c["cpu_s"], c["cpu_pct"], None if c["cpu_s"] is None else c["cpu_s"] * 1e6 / ok,
                  *(100 * t[k] / wall if k in t else None for k in ("main", "zmq", "other")))
    machine = cpu["machine_cpu_s"]
    table.add("(unattributed: kernel, exited processes)", cpu["unattributed_cpu_s"],
              100 * cpu["unattributed_cpu_s"] / wall, cpu["unattributed_cpu_s"] * 1e6 / ok)
    table.add("(other processes on the machine)", cpu["others_cpu_s"], 100 * cpu["others_cpu_s"] / wall,
              None)
    table.add("machine busy, all CPUs", cpu["machine_busy_cpu_s"], 100 * cpu["machine_busy_cpu_s"] / wall,
              cpu["machine_busy_cpu_s"] * 1e6 / ok)
    out.append(_indent(table.render()))
    ncpu = os.cpu_count() or 1
    out.append(f"   (cpu % is of one CPU: {ncpu} CPUs saturate at {100 * ncpu}%; window {wall:.2f} s; "
               f"machine: user {machine['user'] + machine['nice']:.2f} s, system {machine['system']:.2f} s, "
               f"softirq {machine['softirq']:.2f} s, irq {machine['irq']:.2f} s, steal {machine['steal']:.2f} s, "
               f"idle {machine['idle'] + machine['iowait']:.2f} s)")
    if cpu["others_cpu_s"] > 0.05 * wall:
        top = ", ".join(f"{o['name']}[{o['pid']}] {o['cpu_s']:.2f} s" for o in cpu["others_top"][:3])
        out.append(f"   WARNING: processes outside the benchmark used {100 * cpu['others_cpu_s'] / wall:.0f}% "
                   f"of a CPU during the window ({top}); figures are disturbed")
    d = result["derived"]
    out.append(f"   cpu per op: servers {d['server_cpu_us_per_op']:.0f} us, coordinator "
               f"{d['coordinator_cpu_us_per_op']:.1f} us, clients {d['client_cpu_us_per_op']:.0f} us; "
               f"{d['ops_per_bench_cpu_s']:,.0f} ok ops per CPU-second of the benchmark's own processes")
    counters = result.get("node_counters")
    if counters:
        parts = [f"{n}: reads {c.get('reads', 0):,} dirty {c.get('dirty_reads', 0):,} "
                 f"writes {c.get('writes', 0):,} commits {c.get('commits', 0):,} resends {c.get('resends', 0):,}"
                 for n, c in counters.items()]
        out.append("   node counters over the window: " + "; ".join(parts))
    print("\n".join(out), flush=True)


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def summary(results: list[dict[str, Any]]) -> benchlib.Table:
    baseline = {(r["workload"], r["servers"]): r for r in results if r["system"] == "zmq-echo"}
    one_server = {w: r for (w, s), r in baseline.items() if s == 1}
    table = benchlib.Table(["system", "workload", "srv cpu cap", "ok ops/s", "p50 ms", "p99 ms", "max ms", "errors",
                            "vs echo x1", "ops/cpu-s", "srv us/op", "cli us/op", "coord cpu%", "srv cpu%",
                            "cli cpu%", "others cpu%", "machine cpu%"], align_left=2)
    for r in results:
        procs = r["cpu"]["processes"]
        wall = r["cpu"]["wall_s"]

        def pct(prefix: str) -> float:
            return sum(c["cpu_s"] or 0.0 for n, c in procs.items() if n.startswith(prefix)) * 100 / wall
        if r["system"] == "zcraq":
            name, servers = f"zcraq {r['nodes']} node(s)", pct("node")
            if r.get("partitions", 1) > 1:
                name += f", {r['partitions']}p x{r['replication']}"
            name += ", CURVE" if r.get("security") == "curve" else ""
            name += ", metrics" if r.get("metrics") else ""
        else:
            name, servers = f"echo x{r['servers']}", pct("echo")
        ref = one_server.get(r["workload"])
        ratio = f"{r['ops_per_s'] / ref['ops_per_s']:.2f}" if ref and ref["ops_per_s"] else None
        d = r["derived"]
        cap = r.get("node_cpu")
        table.add(name + (" (!)" if r.get("disturbed") else ""), r["workload"], f"{cap:g}" if cap else "none",
                  r["ops_per_s"],
                  r["latency"]["p50_ms"], r["latency"]["p99_ms"], r["latency"]["max_ms"], r["errors"], ratio,
                  d["ops_per_bench_cpu_s"], d["server_cpu_us_per_op"], d["client_cpu_us_per_op"],
                  pct("coordinator") if r["system"] == "zcraq" else None, servers, pct("loadgen"),
                  100 * r["cpu"]["others_cpu_s"] / wall, 100 * r["cpu"]["machine_busy_cpu_s"] / wall)
    return table


def machine_info() -> dict[str, Any]:
    import orjson
    import plyvel
    import zmq

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "plyvel": plyvel.__version__, "leveldb": ".".join(map(str, plyvel.__leveldb_version__))
            if hasattr(plyvel, "__leveldb_version__") else None, "orjson": orjson.__version__}


# ---------------------------------------------------------------------------------------------
# Running


def preload(coordinator: str, keys: int, value_size: int, seed: int, timeout: float, threads: int = 4,
            config: Path | None = None) -> float:
    """Write every key once (several clients in parallel); returns the seconds it took."""
    import random

    from zcraq.client import ZClient

    rng = random.Random(seed)
    value = rng.randbytes(value_size)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with ZClient(coordinator, timeout=timeout, config=config) as client:
                for k in range(index, keys, threads):
                    client.write(loadgen.key_name(k), value)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(max(60.0, keys * timeout / threads))
    if errors or any(w.is_alive() for w in workers):
        raise RuntimeError(f"preload failed: {errors[0] if errors else 'timed out'}")
    with ZClient(coordinator, timeout=timeout, config=config) as client:  # spot check, through every node
        for k in (0, keys // 2, keys - 1, 1, 2, 3):
            if client.read(loadgen.key_name(k % keys)) != value:
                raise RuntimeError("preload check: a key read back a different value")
    return time.monotonic() - started


def run_chain(nodes: int, workloads: list[str], common: dict[str, Any], args: argparse.Namespace,
              security: str = "plain", metrics: bool = False) -> list[dict[str, Any]]:
    results = []
    cluster = benchlib.ChainCluster(nodes, durability=args.durability, keep=args.keep_dir,
                                    profile_dir=args.profile_dir, node_cpu=args.node_cpu,
                                    secure=security == "curve", metrics=metrics, partitions=args.partitions,
                                    replication=args.replication)
    client_config = cluster.layout.client
    scraper: benchlib.Scraper | None = None
    try:
        shape = f" of {args.partitions} partitions" if args.partitions > 1 else ""
        print(f"\nstarting a {nodes}-node cluster{shape} in {cluster.root} ...", flush=True)
        started = time.monotonic()
        cluster.start_cluster(timeout=120.0)
        roles = cluster.roles()
        print(f"chain up in {time.monotonic() - started:.1f} s: {roles}", flush=True)
        if metrics:
            urls = [f"{cluster.metrics_url(name)}/metrics" for name in ("coordinator", *cluster.node_ids)]
            scraper = benchlib.Scraper(urls)
        took = preload(cluster.coordinator_endpoint, args.keys, args.value_size, args.seed, args.op_timeout,
                       config=client_config)
        print(f"preloaded {args.keys:,} keys of {args.value_size} bytes in {took:.1f} s", flush=True)
        for workload in workloads:
            def on_window(edge: str) -> dict[str, dict[str, int]] | None:
                try:
                    return cluster.counters()
                except Exception as exc:  # informative only
                    print(f"   (could not read node counters: {exc})", flush=True)
                    return None

            spec = loadgen.LoadSpec(target={"kind": "zcraq", "coordinator": cluster.coordinator_endpoint,
                                            "timeout": args.op_timeout, "read_mode": args.read_mode,
                                            "client_config": str(client_config) if client_config else None},
                                    workload=workload, **loadgen.load_args(common))
            result = loadgen.run_load_retrying(spec, cluster.pids(), on_window, spec.retries)
            cluster.check()
            result.update(system="zcraq", nodes=nodes, servers=None, durability=args.durability,
                          read_mode=args.read_mode, roles=roles, node_cpu=args.node_cpu, security=security,
                          metrics=metrics, partitions=args.partitions,
                          replication=min(args.replication, nodes) if args.partitions > 1 else nodes)
            window = result.pop("window_probe", {})
            if window.get("start") and window.get("end"):
                result["node_counters"] = {n: {k: window["end"][n].get(k, 0) - v for k, v in c.items()}
                                           for n, c in window["start"].items()}
            print_result(result)
            results.append(result)
    except BaseException:
        if cluster.processes:
            for name in cluster.processes:
                tail = cluster.log(name)[-1500:].strip()
                if tail:
                    print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if scraper is not None:
            scraper.close()
            print(f"scraped /metrics {scraper.scrapes} times ({scraper.failures} failed)", flush=True)
        cluster.close()
    return results


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _cpu_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    # CFS refuses quotas under 1 ms per 100 ms period.
    if not 0.01 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"must be from 0.01 to 2 (a fraction of one CPU), got {value:g}")
    return value


def _workloads(text: str) -> list[str]:
    chosen = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            chosen += [w for w in WORKLOADS if w not in chosen]
        elif part in WORKLOADS:
            if part not in chosen:
                chosen.append(part)
        else:
            raise argparse.ArgumentTypeError(f"unknown workload {part!r}: read, write, mixed or all")
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--nodes", type=_int_list, default="3", help="chain size(s), comma-separated, e.g. 1,3")
    p.add_argument("--partitions", type=int, default=1,
                   help="partitions of the keyspace (each a chain of --replication replicas over the nodes); "
                        "1: one chain of every node")
    p.add_argument("--replication", type=int, default=3,
                   help="replicas per partition with --partitions > 1 (fewer when there are fewer nodes)")
    p.add_argument("--clients", type=int, default=8, help="concurrent closed-loop clients")
    p.add_argument("--procs", type=int, default=None,
                   help="load-generator processes the clients are spread over (none given: min(clients, 4))")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per workload")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window")
    p.add_argument("--value-size", type=int, default=64, help="value bytes")
    p.add_argument("--keys", type=int, default=1000, help="key space, preloaded before measuring")
    p.add_argument("--workload", type=_workloads, default="all", help="read, write, mixed or all")
    p.add_argument("--read-fraction", type=float, default=0.9, help="share of reads in the mixed workload")
    p.add_argument("--read-mode", choices=("strong", "eventual"), default="strong", help="ZClient read mode")
    p.add_argument("--durability", choices=("async", "sync"), default="async", help="node durability")
    p.add_argument("--security", choices=("plain", "curve", "both"), default="plain",
                   help="chains without keys, with CURVE keys on every connection, or each in turn")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice")
    p.add_argument("--op-timeout", type=float, default=5.0, help="ZClient timeout per op, seconds")
    p.add_argument("--baseline-servers", type=_int_list, default="1",
                   help="echo-server count(s) for the raw zmq baseline")
    p.add_argument("--no-baseline", action="store_true", help="skip the raw zmq baseline")
    p.add_argument("--no-chain", action="store_true", help="run only the raw zmq baseline")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="before each workload, wait up to this many seconds for processes outside the "
                        "benchmark to use under 5%% of a CPU (0: do not wait)")
    p.add_argument("--retries", type=int, default=3,
                   help="measure a workload again (up to this many times) when processes outside the "
                        "benchmark used over 5%% of a CPU during its window")
    p.add_argument("--json", type=Path, default=None, help="write every result to this JSON file")
    p.add_argument("--profile-dir", type=Path, default=None,
                   help="run each node under cProfile and write DIR/<N>nodes-<node>.prof (slows the nodes: "
                        "for finding where time goes, not for figures)")
    p.add_argument("--node-cpu", type=_cpu_fraction, default=None, metavar="FRACTION",
                   help="cap each node process (and each echo server of the baseline) at FRACTION of one "
                        "CPU, each in its own cgroup (needs root and a cgroup cpu controller); the "
                        "coordinator and the load generators stay uncapped (none given: uncapped)")
    p.add_argument("--keep-dir", action="store_true", help="keep the cluster's temporary directory (logs)")
    p.add_argument("--metrics", choices=("off", "on", "both"), default="off",
                   help="on: every process serves /metrics, scraped once a second while the chain runs; "
                        "both: each chain size without, then with")
    args = p.parse_args(argv)
    if args.clients < 1 or (args.procs is not None and args.procs < 1):
        p.error("--clients and --procs must be positive")
    if args.duration <= 0 or args.warmup < 0 or args.keys < 1 or args.value_size < 0:
        p.error("--duration must be positive; --warmup, --keys and --value-size not negative")
    if not 0.0 <= args.read_fraction <= 1.0:
        p.error("--read-fraction must be from 0 to 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    benchlib.install_signal_handlers()
    clock = time.get_clock_info("perf_counter")
    if sys.platform != "linux" or "CLOCK_MONOTONIC" not in clock.implementation:
        print(f"needs Linux with a CLOCK_MONOTONIC perf_counter (have {clock.implementation})", file=sys.stderr)
        return 2
    cgroup = None
    if args.node_cpu is not None:
        try:
            version, base = cpuquota.CpuQuota.detect()
        except cpuquota.CpuQuotaError as exc:
            print(f"--node-cpu {args.node_cpu:g}: {exc}", file=sys.stderr)
            return 2
        cgroup = {"version": version, "base": str(base)}
    procs = args.procs or min(args.clients, 4)
    common = {"clients": args.clients, "procs": procs, "duration": args.duration, "warmup": args.warmup,
              "keys": args.keys, "value_size": args.value_size, "seed": args.seed,
              "read_fraction": args.read_fraction, "op_timeout": args.op_timeout, "wait_quiet": args.wait_quiet,
              "retries": args.retries}
    info = machine_info()
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory']} RAM, Linux {info['kernel']}, "
          f"Python {info['python']}, pyzmq {info['pyzmq']} / libzmq {info['libzmq']}, plyvel {info['plyvel']}")
    groups = loadgen.deal(args.clients, procs)
    print(f"load: {args.clients} closed-loop clients in {len(groups)} generator process(es) "
          f"({'/'.join(map(str, sorted({len(g) for g in groups})))} client thread(s) each); "
          f"{args.keys:,} keys, {args.value_size}-byte values, seed {args.seed}; "
          f"{args.warmup:g} s warm-up + {args.duration:g} s measured per workload", flush=True)
    if cgroup:
        print(f"node cpu: each node and echo server capped at {args.node_cpu:g} CPU (cgroup {cgroup['version']} "
              f"under {cgroup['base']}/zcraq-bench-{os.getpid()}; coordinator and load generators uncapped)",
              flush=True)
    else:
        print("node cpu: uncapped", flush=True)
    results: list[dict[str, Any]] = []
    started = time.time()
    status = 0
    try:
        if not args.no_baseline:
            for servers in args.baseline_servers:
                print(f"\nraw zmq baseline: {servers} echo server process(es)", flush=True)
                results += zmq_baseline.run_baseline(servers, args.workload, common, print_result, args.node_cpu)
        if not args.no_chain:
            for nodes in args.nodes:
                for security in ("plain", "curve") if args.security == "both" else (args.security,):
                    for metrics in (False, True) if args.metrics == "both" else (args.metrics == "on",):
                        results += run_chain(nodes, args.workload, common, args, security, metrics)
    except (KeyboardInterrupt, benchlib.Interrupted) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}); everything started was stopped", file=sys.stderr)
        status = 130
    except cpuquota.CpuQuotaError as exc:  # a setup problem, not a bug: no traceback
        print(f"\nbenchmark failed: --node-cpu: {exc}", file=sys.stderr)
        status = 2
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    if results:
        print("\n== summary (ok ops/s; latency over all ops; cpu% of one CPU over the measured window; "
              f"{os.cpu_count()} CPUs, so the machine saturates at {100 * os.cpu_count()}%; "
              "'vs echo x1' = ops/s / raw zmq echo with 1 server, same workload; "
              "'ops/cpu-s' = ok ops per CPU-second used by the benchmark's own processes; 'srv'/'cli' = "
              "nodes or echo servers / load generators; 'others' = processes outside the benchmark; "
              "(!) = window disturbed by them)")
        print(summary(results).render())
    if args.json and results:
        payload = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                   "argv": sys.argv, "machine": info,
                   "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "node_cpu": args.node_cpu, "node_cpu_cgroup": cgroup,
                   "results": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
