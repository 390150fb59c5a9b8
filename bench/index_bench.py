"""What LevelDB's version index costs at start and in memory, and what it saves per operation.

A LevelDB store is filled with ``--keys`` keys (10-character keys, one committed 64-byte value
each, every hundredth key with a dirty version too), closed, and opened again: once without the
index (``index_max_keys=0``, the open alone) and once with it (the open plus the pass that fills
the index). The memory figure is the Python heap the filled index holds (tracemalloc), per key.
Then, on the reopened store, the CPU time of ``latest`` and of ``put`` + ``commit`` of a new
version, over random keys, with and without the index: the main thread's CPU clock, so LevelDB's
background compactions (its own thread) are left out. Random keys over a large store miss LevelDB's
block cache, so its point lookup is most of the figure; bench/core_bench.py measures hot keys.

    python bench/index_bench.py --keys 100000
    python bench/index_bench.py --keys 1000000 --directory /var/tmp   # 1 M keys take ~100 MB on disk
    python bench/index_bench.py --overwrites

``--overwrites`` measures instead what iterating costs as a key is overwritten: 100 keys, each
overwritten (put + commit, which deletes the version before) 100, 1,000 and 5,000 times, with
``latest`` timed after each step, with the index and without (``index_max_keys=0`` iterates over
the key's entries, as the store did before it had an index; LevelDB keeps a deleted version's
marker until a compaction reaches it, and an iteration steps over every one). It also runs
against a zcraq from before the index (``PYTHONPATH=/other/checkout``), which it measures as it is.

The data stays in a temporary directory under ``--directory`` (default: the system's), deleted at
the end.
"""

from __future__ import annotations

import argparse
import inspect
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from zcraq.store import LevelDBStore

INDEXED = "index_max_keys" in inspect.signature(LevelDBStore).parameters  # False before the index
DEFAULT_MAX_KEYS = 1_000_000

VALUE = b"v" * 64


def fill(path: Path, keys: int) -> None:
    with LevelDBStore(path, "async", index_max_keys=0) as store:
        for i in range(keys):
            key = f"key{i:07d}"
            store.put(key, 1, VALUE, committed=True)
            if i % 100 == 0:
                store.put(key, 2, VALUE)
            if i % 10_000 == 9_999:
                store.flush()


def timed_open(path: Path, cap: int) -> tuple[float, LevelDBStore]:
    started = time.perf_counter()
    store = LevelDBStore(path, "async", index_max_keys=cap)
    return time.perf_counter() - started, store


def index_bytes(path: Path, cap: int) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = LevelDBStore(path, "async", index_max_keys=cap)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    keys = store.indexed_keys
    store.close()
    return held / keys


def per_op_us(store: LevelDBStore, keys: int, ops: int, seed: int) -> tuple[float, float]:
    """CPU µs per ``latest`` and per ``put`` + ``commit`` (and the flush every 64), random keys."""
    rng = random.Random(seed)
    names = [f"key{rng.randrange(keys):07d}" for _ in range(ops)]
    started = time.thread_time()
    for key in names:
        store.latest(key)
    reads = (time.thread_time() - started) / ops * 1e6
    started = time.thread_time()
    for n, key in enumerate(names):
        latest = store.latest(key)
        version = (latest.version if latest else 0) + 1
        store.put(key, version, VALUE)
        store.commit(key, version)
        if n % 64 == 63:
            store.flush()
    store.flush()
    writes = (time.thread_time() - started) / ops * 1e6
    return reads, writes


def overwrites(directory: Path | None) -> None:
    keys = [f"key{k:03d}" for k in range(100)]
    for cap in (0, DEFAULT_MAX_KEYS) if INDEXED else (None,):
        options = {} if cap is None else {"index_max_keys": cap}
        label = "before the index" if cap is None else f"index_max_keys={cap:,}"
        with tempfile.TemporaryDirectory(dir=directory) as tmp, \
                LevelDBStore(Path(tmp) / "db", "async", **options) as store:
            for key in keys:
                store.put(key, 1, VALUE, committed=True)
            store.flush()
            version = 1
            for target in (1, 101, 1001, 5001):
                while version < target:
                    version += 1
                    for key in keys:
                        store.put(key, version, VALUE)
                        store.commit(key, version)
                    store.flush()
                started = time.thread_time()
                for _ in range(20):
                    for key in keys:
                        store.latest(key)
                us = (time.thread_time() - started) / (20 * len(keys)) * 1e6
                print(f"{label}: latest after {version - 1:,} overwrites of each key: {us:.1f} µs"
                      " (CPU of the main thread)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--ops", type=int, default=20_000, help="operations per per-operation figure")
    p.add_argument("--directory", type=Path, default=None, help="where to put the temporary store")
    p.add_argument("--overwrites", action="store_true", help="measure latest as keys are overwritten instead")
    args = p.parse_args()
    if args.overwrites:
        overwrites(args.directory)
        return
    with tempfile.TemporaryDirectory(dir=args.directory) as tmp:
        path = Path(tmp) / "db"
        started = time.perf_counter()
        fill(path, args.keys)
        print(f"filled {args.keys:,} keys in {time.perf_counter() - started:.1f} s")
        for cap in (0, args.keys, 0, args.keys):  # alternating, twice each: the second is warm
            seconds, store = timed_open(path, cap)
            print(f"open with index_max_keys={cap:,}: {seconds:.2f} s, {store.indexed_keys:,} keys indexed,"
                  f" {len(list(store.dirty_items())):,} dirty versions")
            store.close()
        print(f"index memory: {index_bytes(path, args.keys):.0f} bytes per key (tracemalloc)")
        for n, cap in enumerate((0, args.keys, 0, args.keys)):  # alternating, each on new random keys
            with LevelDBStore(path, "async", index_max_keys=cap) as store:
                reads, writes = per_op_us(store, args.keys, args.ops, seed=n)
            print(f"index_max_keys={cap:,}: latest {reads:.1f} µs, latest + put + commit {writes:.1f} µs"
                  " (CPU of the main thread)")


if __name__ == "__main__":
    main()
