"""Where a process's time went, from a py-spy profile: the top functions by own time (samples
whose innermost frame is the function) and by total time (samples with the function anywhere on
the stack), each in % of the samples py-spy took while the process was not idle. A function's
lines are added up.

Reads py-spy's raw output (``py-spy record --format raw``: one line per distinct stack, frames
from outermost to innermost separated by ";", then a space and the sample count).

    py-spy record --pid PID --duration 5 --format raw --output node.txt --nonblocking
    python bench/spy_top.py node.txt [--top 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path


def parse(text: str) -> list[tuple[list[str], int]]:
    """(frames, sample count) per stack; a frame is "function (file)", its line number dropped so
    that the lines of one function add up."""
    stacks = []
    for row in text.splitlines():
        frames, _, count = row.rpartition(" ")
        if frames and count.isdigit():
            stacks.append(([_function(f) for f in frames.split(";")], int(count)))
    return stacks


def _function(frame: str) -> str:
    # "send (zmq/sugar/socket.py:713)" -> "send (zmq/sugar/socket.py)"
    name, sep, place = frame.rpartition(" (")
    if not sep or not place.endswith(")"):
        return frame
    where, colon, line = place[:-1].rpartition(":")
    return f"{name} ({where})" if colon and line.isdigit() else frame


def top(stacks: list[tuple[list[str], int]], n: int = 15) -> str:
    """A plain-text table of the ``n`` functions with the most own time, with their total time."""
    total = sum(count for _, count in stacks)
    if not total:
        return "(no samples)"
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    rows = [f"{'own %':>6} {'total %':>7}  function (file)"]
    for frame, count in own.most_common(n):
        rows.append(f"{100 * count / total:6.1f} {100 * anywhere[frame] / total:7.1f}  {frame}")
    return "\n".join(rows) + f"\n({total:,} samples)"


def record(spy: str, pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` for ``seconds`` (non-blocking sampling: the process is not paused
    at each sample, so the profile costs it little); wait for the returned process to finish."""
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                             "--rate", "200", "--format", "raw", "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path, help="py-spy raw output")
    p.add_argument("--top", type=int, default=15, help="how many functions")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    print(top(parse(args.profile.read_text()), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
