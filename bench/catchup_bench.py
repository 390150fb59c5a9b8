"""How fast a node joining a chain copies the committed state (catch-up), and what it costs.

The first node's LevelDB store is filled directly (``--keys`` keys of 10 characters, one committed
``--value-size``-byte value each) before anything starts, so the fill takes seconds rather than
a client's minutes. Then the coordinator and that node start, and nodes join one at a time until
the chain has ``--chain`` members; each join is a catch-up from the tail, and the last one, a
node joining the ``--chain``-node chain, is the headline figure. Each join is timed from the
joining node's start until it is a serving member (its status, polled every 20 ms, through the
coordinator's topology and the node's ``status`` request); the copy alone is timed from the
node's log lines, from "epoch N: learner" to "catch-up from ...: N keys copied". CPU seconds are the learner's whole life
(start, the index fill of an empty store, the copy) and the source's over the join, from
/proc/PID/stat.

    python bench/catchup_bench.py                        # 100,000 keys, 3-node chain, 3 runs
    python bench/catchup_bench.py --keys 20000 --chain 1 --runs 1
    python bench/catchup_bench.py --page-items 1000       # the page size (catchup_page_items)
    python bench/catchup_bench.py --py-spy DIR            # also sample learner and source (last join)
    python bench/catchup_bench.py --per-key               # CPU per key of serving and storing a page

``--py-spy DIR`` runs ``py-spy record --format raw`` (py-spy from the same virtualenv, or on
PATH) against the learner and the source of the last join of each run; the collapsed stacks go to
DIR, and the functions where most samples fell are printed.

Everything started is stopped on exit, on Ctrl-C, on SIGTERM and on errors; the temporary
directory is removed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import ChainCluster, Table, install_signal_handlers, others_cpu_pct, proc_cpu_seconds
from zcraq.messages import Malformed, Ok
from zcraq.store import LevelDBStore

STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
LEARNER = re.compile(STAMP + r".*: epoch \d+: learner", re.M)
DONE = re.compile(STAMP + r".*: catch-up from \S+: [\d,]+ keys copied in", re.M)


def fill(path: Path, keys: int, value_size: int) -> None:
    value = b"v" * value_size
    with LevelDBStore(path, "async") as store:
        for i in range(keys):
            store.put(f"key{i:07d}", 1, value, committed=True)
            if i % 10_000 == 9_999:
                store.flush()


def per_key(keys: int, value_size: int, page_items: int, directory: Path) -> None:
    """The two halves of a page in one process, no sockets: CPU µs per key of serving it (read
    from LevelDB, encode) and of storing it (decode, store, flush), on the main thread's clock.
    They are how long each page pauses the source's loop and the learner's."""
    from zcraq import wire
    from zcraq.messages import CatchupRequest
    from zcraq.nodecore.catchup import apply_page, serve_page

    source_path, learner_path = directory / "source", directory / "learner"
    fill(source_path, keys, value_size)
    with LevelDBStore(source_path, "async") as source, LevelDBStore(learner_path, "async") as learner:
        serving = storing = 0.0
        after: str | None = None
        while True:
            started = time.thread_time()
            page, values = serve_page(source, CatchupRequest(page_items, 1, after, id=1))
            frames = wire.encode_reply(page, values)
            serving += time.thread_time() - started
            started = time.thread_time()
            reply, got = wire.read_reply(frames)
            assert not isinstance(reply, Malformed) and isinstance(reply, Ok)
            cursor = apply_page(learner, reply, got)
            learner.flush()
            storing += time.thread_time() - started
            if cursor is None:
                break
            after = cursor
    print(f"{keys:,} keys in pages of {page_items:,}: serving {serving / keys * 1e6:.2f} µs a key, "
          f"storing {storing / keys * 1e6:.2f} µs a key (CPU of the main thread)")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` of one process until it is stopped (SIGINT makes py-spy write its file)."""

    def __init__(self, program: str, pid: int, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen([program, "record", "--format", "raw", "--rate", "200", "--nonblocking",
                                         "-o", str(out), "--pid", str(pid)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


ENTRY = ("<module>", "_run_code", "_run_module_as_main", "click/", "zcraq/cli.py", "run_until_signalled",
         "run_node", "NodeProcess.run ")


def hottest(raw: Path, top: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: the functions with the largest share of samples counted
    wherever they are on the stack (inclusive; the frames every sample goes through left out),
    and those counted only where a sample fell (self)."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    lines = raw.read_text().splitlines() if raw.exists() else []
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = stack.split(";")
        self_[frames[-1]] += int(n)
        for frame in set(frames):
            if not any(entry in frame for entry in ENTRY):
                inclusive[frame] += int(n)
    if not total:
        return [], []
    return ([(frame, n / total) for frame, n in inclusive.most_common(top)],
            [(frame, n / total) for frame, n in self_.most_common(top)])


def copy_seconds(log: str) -> float | None:
    """The copy alone, from the joining node's log: from the line saying it is the learner to the
    one saying the copy is done (both with millisecond timestamps); None if either is missing."""
    start, done = LEARNER.findall(log), DONE.findall(log)
    if not start or not done:
        return None
    stamp = "%Y-%m-%d %H:%M:%S,%f"
    return (datetime.strptime(done[-1], stamp) - datetime.strptime(start[-1], stamp)).total_seconds()


def join(cluster: ChainCluster, node: str, source: str, keys: int, profile: Path | None) -> dict[str, Any]:
    cluster.add_node(node)
    pids = cluster.pids()
    source_before = proc_cpu_seconds(pids[source]) or 0.0
    started = time.perf_counter()
    cluster.start(node)
    learner_pid = cluster.pids()[node]
    samplers = []
    spy = py_spy() if profile is not None else None
    if profile is not None and spy is not None:
        samplers = [Sampler(spy, learner_pid, profile / f"{node}-learner.txt"),
                    Sampler(spy, pids[source], profile / f"{source}-source.txt")]
    try:
        cluster.wait(lambda: cluster.serving(node), 600, f"{node} to catch up and serve", interval=0.02)
        seconds = time.perf_counter() - started
        learner_cpu = proc_cpu_seconds(learner_pid)
        source_cpu = (proc_cpu_seconds(pids[source]) or 0.0) - source_before
    finally:
        for sampler in samplers:
            sampler.stop()
    copy = copy_seconds(cluster.log(node))
    return {"node": node, "source": source, "seconds": seconds, "keys_per_s": keys / seconds,
            "copy_s": copy, "copy_keys_per_s": keys / copy if copy else None,
            "learner_cpu_s": learner_cpu, "source_cpu_s": source_cpu,
            "profiles": [s.out for s in samplers]}


def run(args: argparse.Namespace, number: int) -> list[dict[str, Any]]:
    node_settings: dict[str, Any] = {}
    if args.page_items is not None:
        node_settings["catchup_page_items"] = args.page_items
    with ChainCluster(1, log_level="info", node_settings=node_settings, keep=args.keep) as cluster:
        if args.keep:
            print(f"run {number}: configs, data and logs in {cluster.root} (kept)")
        started = time.perf_counter()
        fill(cluster.data_dir("node1"), args.keys, args.value_size)
        print(f"run {number}: filled node1 with {args.keys:,} keys in {time.perf_counter() - started:.1f} s",
              flush=True)
        args.page_size = cluster.node_configs["node1"].catchup_page_items
        cluster.start("coordinator")
        cluster.start("node1")
        cluster.wait_member("node1", 60)
        results = []
        for index in range(2, args.chain + 2):
            node, source = f"node{index}", f"node{index - 1}"
            profile = args.py_spy if args.py_spy is not None and index == args.chain + 1 else None
            result = join(cluster, node, source, args.keys, profile)
            result["run"], result["members_before"] = number, index - 1
            results.append(result)
            copy = "" if result["copy_s"] is None else f", copy alone {result['copy_keys_per_s']:,.0f} keys/s"
            print(f"run {number}: {node} joined a {index - 1}-node chain in {result['seconds']:.2f} s: "
                  f"{result['keys_per_s']:,.0f} keys/s{copy}; CPU learner {result['learner_cpu_s']:.2f} s, "
                  f"source {result['source_cpu_s']:.2f} s", flush=True)
            for path in result["profiles"]:
                inclusive, self_ = hottest(path)
                for kind, shares in (("inclusive", inclusive), ("self", self_)):
                    print(f"   py-spy {path.name}, share of samples ({kind}):")
                    for frame, share in shares:
                        print(f"     {share:6.1%}  {frame}")
        return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--chain", type=int, default=3, help="members the last joining node joins (default 3)")
    p.add_argument("--page-items", type=int, default=None,
                   help="catchup_page_items of every node (default: the node's default)")
    p.add_argument("--runs", type=int, default=3, help="independent runs, each with a new cluster")
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                   help="sample the learner and the source of the last join with py-spy; stacks go to DIR")
    p.add_argument("--keep", action="store_true", help="keep each run's directory (configs, data, logs)")
    p.add_argument("--per-key", action="store_true",
                   help="instead: CPU per key of serving and of storing a page, in this process (no cluster)")
    args = p.parse_args()
    install_signal_handlers()
    if args.per_key:
        with tempfile.TemporaryDirectory(prefix="zcraq-catchup-") as tmp:
            for page_items in sorted({args.page_items or 1000, 1000, 5000}):
                per_key(args.keys, args.value_size, page_items, Path(tmp) / str(page_items))
        return 0
    if args.py_spy is not None:
        if py_spy() is None:
            p.error("--py-spy: py-spy is not installed beside this python nor on PATH")
        args.py_spy.mkdir(parents=True, exist_ok=True)
    others, top = others_cpu_pct(1.0)
    print(f"other processes used {others:.0f}% of a CPU "
          f"before the start ({', '.join(f'{n} {c:.0f}%' for n, c in ((n, c) for n, _p, c in top))}); "
          f"{os.cpu_count()} CPUs", flush=True)
    results = [r for number in range(1, args.runs + 1) for r in run(args, number)]
    table = Table(["members before", "joins", "keys/s (median)", "copy keys/s (median)",
                   "learner CPU s (median)", "source CPU s (median)"])
    for members in range(1, args.chain + 1):
        rows = [r for r in results if r["members_before"] == members]
        copies = [r["copy_keys_per_s"] for r in rows if r["copy_keys_per_s"]]
        table.add(members, len(rows), round(statistics.median(r["keys_per_s"] for r in rows)),
                  round(statistics.median(copies)) if copies else "-",
                  round(statistics.median(r["learner_cpu_s"] for r in rows), 2),
                  round(statistics.median(r["source_cpu_s"] for r in rows), 2))
    print()
    print(f"{args.keys:,} keys of {args.value_size} bytes, catchup_page_items {args.page_size:,}")
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
