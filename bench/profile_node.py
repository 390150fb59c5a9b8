"""Run a zcraq node (or coordinator) under cProfile, timing with the main thread's CPU clock.

``python -m cProfile`` times with the wall clock, so on a busy machine every call that wakes
another process or thread (a ZeroMQ send) looks expensive merely because the scheduler switched
away. Here the timer is ``time.thread_time_ns``: CPU time of the Python thread that runs the
node loop (ZeroMQ's own I/O thread is not included).

    python bench/profile_node.py OUT.prof node --config node1.toml

The profile is written when the node returns from its SIGTERM/SIGINT shutdown.
chain_bench.py --profile-dir DIR starts the nodes this way.
"""

from __future__ import annotations

import cProfile
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out, args = sys.argv[1], sys.argv[2:]
    from zcraq.cli import main as zcraq_main

    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
    profiler.enable()
    try:
        zcraq_main(args, prog_name="zcraq")
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
