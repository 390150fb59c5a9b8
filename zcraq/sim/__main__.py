"""python -m zcraq.sim --seed N [--seeds K] [--partitions P]: run simulated seeds; a failing seed
prints itself and the command that replays it. With --partitions above 1, a partitioned cluster
(zcraq/sim/partitioned.py): 4 nodes and one joining, with the membership nemeses too.

--digests FILE writes one line per seed: seed, verdict, the SHA-256 of its history and the
messages delivered and dropped. Two commits whose digests match, seed for seed, behaved alike in
every run: the check for a change that must not change behaviour (a restructuring, a new codec)."""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

from zcraq.nodecore import UNSAFE_FAULTS
from zcraq.sim import NEMESIS_KINDS, PARTITIONED_NEMESIS_KINDS, SimConfig, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zcraq.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds to run")
    parser.add_argument("--duration", type=float, default=12.0, help="simulated seconds of workload")
    parser.add_argument("--partitions", type=int, default=1, help="partitions (above 1: a partitioned cluster)")
    parser.add_argument("--nodes", type=int, help="nodes at the start (default 3; 4 with partitions)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--nemesis", help=f"comma-separated fault kinds from {','.join(PARTITIONED_NEMESIS_KINDS)} "
                                          f"('' for none; default all, the last three only with partitions)")
    parser.add_argument("--unsafe", default="", help=f"test-only protocol bugs to enable: {','.join(UNSAFE_FAULTS)}")
    parser.add_argument("--history", type=Path, help="write the (last) run's history here as JSON Lines")
    parser.add_argument("--digests", type=Path, help="write each seed's verdict and history digest here")
    parser.add_argument("--verbose", action="store_true", help="log what the cores log")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL,
                        format="%(name)s: %(message)s")
    partitioned = args.partitions > 1
    kinds = PARTITIONED_NEMESIS_KINDS if partitioned else NEMESIS_KINDS
    nemesis = kinds if args.nemesis is None else tuple(k for k in args.nemesis.split(",") if k)
    unsafe = frozenset(k for k in args.unsafe.split(",") if k)
    if not set(nemesis) <= set(kinds) or not unsafe <= UNSAFE_FAULTS:
        parser.error("unknown nemesis or unsafe kind")
    if not 1 <= args.partitions <= 4096:
        parser.error("--partitions must be 1 to 4096")
    nodes = args.nodes if args.nodes is not None else 4 if partitioned else 3
    failures = 0
    started = time.monotonic()
    digests = args.digests.open("w") if args.digests else None
    for seed in range(args.seed, args.seed + args.seeds):
        result = simulate(SimConfig(seed=seed, nodes=nodes, clients=args.clients, duration=args.duration,
                                    nemesis=nemesis, unsafe=unsafe, partitions=args.partitions))
        if args.history:
            args.history.write_bytes(result.history_jsonl())
        if digests is not None:
            digest = hashlib.sha256(result.history_jsonl()).hexdigest()
            digests.write(f"{seed} {'ok' if result.ok else 'FAILED'} {digest} {result.stats['delivered']} "
                          f"{result.stats['dropped']}\n")
        if not result.ok:
            failures += 1
            print(f"seed {seed}: FAILED", file=sys.stderr)
            for problem in result.problems:
                print("  " + problem.replace("\n", "\n  "), file=sys.stderr)
            print(f"  replay: python -m zcraq.sim --seed {seed} --duration {args.duration:g}"
                  + (f" --partitions {args.partitions}" if partitioned else "")
                  + (f" --nodes {args.nodes}" if args.nodes is not None else "")
                  + (f" --nemesis {args.nemesis}" if args.nemesis is not None else "")
                  + (f" --unsafe {args.unsafe}" if args.unsafe else ""), file=sys.stderr)
    if digests is not None:
        digests.close()
    elapsed = time.monotonic() - started
    print(f"{args.seeds - failures} passed, {failures} failed ({args.seeds} seeds in {elapsed:.1f}s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
