"""Rebalancing a partitioned cluster onto a new node: how long it takes, how fast data moves, and
what clients see meanwhile.

It starts a coordinator and ``--nodes`` nodes holding ``--partitions`` partitions of 3 replicas
(real processes, LevelDB in a temporary directory), loads ``--keys`` keys of ``--value-size``
bytes (write_many batches), starts a steady load (``--clients`` closed-loop clients, 90 % reads),
then starts one more node and waits until placement has finished: every partition whole, over all
the nodes, every replica serving. Printed: the time from the new node's start to that point, the
replicas it took and the keys it copied (replicas x keys per partition, which the copies of a
learner are), the copy rate, and the clients' throughput and p99 before, during and after.

    python bench/rebalance_bench.py                          # 3 -> 4 nodes, 16 partitions, 50,000 keys
    python bench/rebalance_bench.py --keys 200000 --max-moves 4

Everything started is stopped on exit, on Ctrl-C, on SIGTERM and on errors.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import benchlib

from zcraq.client import ZClient
from zcraq.errors import ZcraqError


class Load:
    """Closed-loop clients, 90 % reads and 10 % writes over the loaded keys; every op's finish time
    and latency kept, to cut the run into phases afterwards."""

    def __init__(self, coordinator: str, clients: int, keys: int, value: bytes) -> None:
        self.coordinator, self.keys, self.value = coordinator, keys, value
        self.stopping = threading.Event()
        self.done: list[tuple[float, float]] = []  # (finish, latency)
        self.errors: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        with ZClient(self.coordinator, timeout=5.0) as client:
            while not self.stopping.is_set():
                key = f"key{rng.randrange(self.keys):08d}"
                started = time.monotonic()
                try:
                    if rng.random() < 0.9:
                        client.read(key)
                    else:
                        client.write(key, self.value)
                except ZcraqError as error:
                    self.errors[type(error).__name__] += 1
                    continue
                finished = time.monotonic()
                self.done.append((finished, finished - started))

    def phase(self, start: float, end: float) -> str:
        latencies = sorted(lat for at, lat in self.done if start <= at < end)
        if not latencies or end <= start:
            return "no operations"
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        return f"{len(latencies) / (end - start):,.0f} ops/s, p99 {p99 * 1000:.1f} ms ({end - start:.1f} s)"


def load_keys(coordinator: str, keys: int, value: bytes) -> float:
    started = time.monotonic()
    with ZClient(coordinator, timeout=30.0) as client:
        for first in range(0, keys, 500):
            client.write_many({f"key{k:08d}": value for k in range(first, min(keys, first + 500))})
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--nodes", type=int, default=3, help="nodes before the new one")
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--keys", type=int, default=50_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients of the steady load")
    p.add_argument("--max-moves", type=int, default=2, help="the coordinator's max_moves")
    p.add_argument("--durability", choices=("async", "sync"), default="async")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of load measured before and after")
    args = p.parse_args(argv)
    benchlib.install_signal_handlers()
    cluster = benchlib.ChainCluster(args.nodes, durability=args.durability, partitions=args.partitions,
                                    max_moves=args.max_moves)
    load: Load | None = None
    try:
        cluster.start_cluster(timeout=180.0)
        value = random.Random(1).randbytes(args.value_size)
        took = load_keys(cluster.coordinator_endpoint, args.keys, value)
        print(f"{args.nodes} nodes, {args.partitions} partitions of 3, max_moves {args.max_moves}: loaded "
              f"{args.keys:,} keys of {args.value_size} bytes in {took:.1f} s", flush=True)
        load = Load(cluster.coordinator_endpoint, args.clients, args.keys, value)
        load.start()
        time.sleep(args.settle)
        new = f"node{args.nodes + 1}"
        cluster.add_node(new)
        joined_at = time.monotonic()
        cluster.start(new)
        cluster.wait_placed(timeout=600.0)
        placed_at = time.monotonic()
        time.sleep(args.settle)
        load.stop()
        taken = sum(1 for entry in cluster.partitions() for m in entry.topology.members if m.id == new)
        copied = taken * args.keys / args.partitions
        seconds = placed_at - joined_at
        print(f"{new} took {taken} replicas in {seconds:.1f} s (from its start to every partition whole and "
              f"serving): about {copied:,.0f} keys copied, {copied / seconds:,.0f} keys/s")
        print(f"load before: {load.phase(joined_at - args.settle, joined_at)}")
        print(f"load during: {load.phase(joined_at, placed_at)}")
        print(f"load after:  {load.phase(placed_at, placed_at + args.settle)}")
        print(f"client errors (retried within each op's deadline are not counted): {dict(load.errors) or 'none'}")
        return 0
    finally:
        if load is not None:
            load.stop()
        cluster.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
