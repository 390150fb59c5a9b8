"""The pipelined client against the blocking one: N tasks over one AsyncZClient, then N threads
with a ZClient each, against the same local chain in the same run.

For each workload (read: strong reads spread over every node; write: writes to the head) and each
concurrency, both clients run closed loops for a warm-up and then a measured window; the program
prints operations per second, p50/p99 latency, node CPU per operation (every node process, from
/proc) and client CPU per operation (this process: the client's Python and its ZeroMQ threads),
and how much CPU processes outside the benchmark used meanwhile.

    .venv/bin/python bench/async_bench.py --concurrency 8,64 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import benchlib
from zcraq.async_client import AsyncZClient
from zcraq.client import ZClient
from zcraq.errors import ZcraqError

WORKLOADS = ("read", "write")


@dataclass
class Window:
    """What one client kind did in one measured window."""

    kind: str
    workload: str
    concurrency: int
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)  # benchlib.cpu_delta over the window

    def row(self) -> list[Any]:
        ops = len(self.latencies_ns)
        stats = benchlib.summarize(self.latencies_ns)
        wall = self.cpu["wall_s"]
        processes = self.cpu["processes"]
        nodes = sum(c["cpu_s"] or 0.0 for name, c in processes.items() if name.startswith("node"))
        client = processes["bench"]["cpu_s"] or 0.0
        return [self.kind, self.workload, self.concurrency, ops / wall, stats["p50_ms"], stats["p99_ms"],
                1e6 * nodes / ops if ops else None, 1e6 * client / ops if ops else None, self.errors,
                100 * self.cpu["others_cpu_s"] / wall]


HEADERS = ["client", "workload", "concurrency", "ok ops/s", "p50 ms", "p99 ms", "node µs/op", "client µs/op",
           "errors", "others cpu%"]


class Meter:
    """CPU time of every node, of this process (the clients and their ZeroMQ threads) and of the
    processes outside the benchmark, between start() and stop() (benchlib's /proc accounting)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**{name: pid for name, pid in pids.items() if name.startswith("node")}, "bench": os.getpid()}
        self.started: benchlib.CpuSnapshot | None = None

    def start(self) -> None:
        self.started = benchlib.cpu_snapshot(self.pids)

    def stop(self, window: Window) -> None:
        assert self.started is not None
        window.cpu = benchlib.cpu_delta(self.started, benchlib.cpu_snapshot(self.pids))


# ---------------------------------------------------------------------------------------------
# The two clients


async def run_async(args: argparse.Namespace, cluster: benchlib.ChainCluster, meter: Meter, workload: str,
                    concurrency: int, value: bytes) -> Window:
    window = Window("AsyncZClient, 1 client", workload, concurrency)
    measuring = False
    stopping = False

    async def worker(number: int, client: AsyncZClient) -> None:
        rng = random.Random(f"{args.seed}/{number}")
        while not stopping:
            key = f"key{rng.randrange(args.keys)}"
            started = time.perf_counter_ns()
            try:
                if workload == "read":
                    await client.read(key)
                else:
                    await client.write(key, value)
            except ZcraqError:
                if measuring:
                    window.errors += 1
                continue
            if measuring:
                window.latencies_ns.append(time.perf_counter_ns() - started)

    async with AsyncZClient(cluster.coordinator_endpoint, timeout=args.op_timeout,
                            config=cluster.layout.client) as client:
        workers = [asyncio.create_task(worker(n, client)) for n in range(concurrency)]
        await asyncio.sleep(args.warmup)
        meter.start()
        measuring = True
        await asyncio.sleep(args.duration)
        measuring = False
        meter.stop(window)
        stopping = True
        await asyncio.gather(*workers)
    return window


def run_threads(args: argparse.Namespace, cluster: benchlib.ChainCluster, meter: Meter, workload: str,
                concurrency: int, value: bytes) -> Window:
    window = Window(f"ZClient, {concurrency} threads", workload, concurrency)
    measuring = threading.Event()
    stopping = threading.Event()
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker(number: int) -> None:
        rng = random.Random(f"{args.seed}/{number}")
        latencies: list[int] = []
        errors = 0
        try:
            with ZClient(cluster.coordinator_endpoint, timeout=args.op_timeout,
                         config=cluster.layout.client) as client:
                while not stopping.is_set():
                    key = f"key{rng.randrange(args.keys)}"
                    counted = measuring.is_set()
                    started = time.perf_counter_ns()
                    try:
                        if workload == "read":
                            client.read(key)
                        else:
                            client.write(key, value)
                    except ZcraqError:
                        errors += counted
                        continue
                    if counted and measuring.is_set():
                        latencies.append(time.perf_counter_ns() - started)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)
        with lock:
            window.latencies_ns += latencies
            window.errors += errors

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(args.warmup)
    meter.start()
    measuring.set()
    time.sleep(args.duration)
    measuring.clear()
    meter.stop(window)
    stopping.set()
    for thread in threads:
        thread.join(args.op_timeout + 10)
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"a client thread failed: {failures[0] if failures else 'stuck'}")
    return window


async def preload(cluster: benchlib.ChainCluster, keys: int, value: bytes, timeout: float) -> None:
    async with AsyncZClient(cluster.coordinator_endpoint, timeout=timeout, config=cluster.layout.client,
                            max_in_flight=256) as client:
        await asyncio.gather(*(client.write(f"key{k}", value) for k in range(keys)))
        if await client.read(f"key{keys - 1}") != value:
            raise RuntimeError("preload check: a key read back a different value")


# ---------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _workloads(text: str) -> list[str]:
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"workloads are read and write, got {text!r}")
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--nodes", type=int, default=3, help="chain length")
    p.add_argument("--concurrency", type=_int_list, default="32",
                   help="tasks over the AsyncZClient, and threads with a ZClient each, comma-separated")
    p.add_argument("--workload", type=_workloads, default="read,write", help="read, write or both")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per window")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window")
    p.add_argument("--keys", type=int, default=1000, help="key space, preloaded before measuring")
    p.add_argument("--value-size", type=int, default=64, help="value bytes")
    p.add_argument("--seed", type=int, default=42, help="seed of every random choice")
    p.add_argument("--op-timeout", type=float, default=5.0, help="client timeout per call, seconds")
    p.add_argument("--secure", action="store_true", help="CURVE keys on every connection")
    p.add_argument("--json", type=Path, default=None, help="write every window's figures to this JSON file")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="before each pair of windows, wait up to this many seconds for processes outside the "
                        "benchmark to use under 10%% of a CPU")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.keys < 1 or args.value_size < 0 or args.duration <= 0 or args.warmup < 0:
        p.error("--nodes and --keys must be positive, --duration positive, --value-size and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    benchlib.install_signal_handlers()
    value = random.Random(args.seed).randbytes(args.value_size)
    cluster = benchlib.ChainCluster(args.nodes, secure=args.secure)
    table = benchlib.Table(HEADERS, align_left=2)
    windows: list[Window] = []
    try:
        print(f"starting a {args.nodes}-node chain in {cluster.root} ...", flush=True)
        cluster.start_all(timeout=60.0)
        asyncio.run(preload(cluster, args.keys, value, args.op_timeout))
        meter = Meter(cluster.pids())
        print(f"preloaded {args.keys:,} keys of {args.value_size} bytes; {args.warmup:g} s warm-up and "
              f"{args.duration:g} s measured per window", flush=True)
        for workload in args.workload:
            for concurrency in args.concurrency:
                benchlib.wait_quiet(args.wait_quiet)
                for window in (asyncio.run(run_async(args, cluster, meter, workload, concurrency, value)),
                               run_threads(args, cluster, meter, workload, concurrency, value)):
                    table.add(*window.row())
                    windows.append(window)
                    print("   " + " | ".join(map(benchlib.fmt, window.row())), flush=True)
                    if window.cpu["others_cpu_s"] > 0.05 * window.cpu["wall_s"]:
                        print("   outside the benchmark: " + ", ".join(
                            f"{o['name']}[{o['pid']}] {o['cpu_s']:.2f} s" for o in window.cpu["others_top"]), flush=True)
                cluster.check()
    finally:
        cluster.close()
    print()
    print(table.render())
    if args.json is not None:
        args.json.write_bytes(orjson.dumps([{**dict(zip(HEADERS, w.row())), "cpu": w.cpu} for w in windows],
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
