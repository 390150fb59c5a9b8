"""How long a kill -9 of one node interrupts the chain, with the default settings.

For each victim (head, middle, tail) a fresh 3-node chain runs one writer and two readers. After a
baseline, the victim is killed with SIGKILL and the program reports:
- write gap: from the kill to the acknowledgement of the first write sent after it;
- read recovery: from the kill until reads per 0.5 s are back to 90 % of the baseline rate;
- reads and writes that failed meanwhile.

    python bench/failover.py [--repeats 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import ChainCluster, Table, install_signal_handlers  # noqa: E402

from zcraq.client import ZClient  # noqa: E402
from zcraq.errors import ZcraqError  # noqa: E402

BASELINE_SECONDS = 3.0
AFTER_KILL_SECONDS = 15.0
WINDOW = 0.5


class Recorder:
    """Completion times of successful and failed operations, per kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, bool]] = []
        self.writes: list[tuple[float, float, bool]] = []  # (started, completed, ok)

    def add(self, kind: str, ok: bool) -> None:
        with self.lock:
            self.events.append((time.monotonic(), kind, ok))

    def add_write(self, started: float, ok: bool) -> None:
        with self.lock:
            self.writes.append((started, time.monotonic(), ok))


def _writer(endpoint: str, recorder: Recorder, stop: threading.Event) -> None:
    with ZClient(endpoint, timeout=2.0) as client:
        index = 0
        while not stop.is_set():
            index += 1
            started = time.monotonic()
            try:
                client.write(f"w{index % 100}", b"x" * 64)
                recorder.add("write", True)
                recorder.add_write(started, True)
            except ZcraqError:
                recorder.add("write", False)
                recorder.add_write(started, False)


def _reader(endpoint: str, recorder: Recorder, stop: threading.Event) -> None:
    with ZClient(endpoint, timeout=2.0) as client:
        index = 0
        while not stop.is_set():
            index += 1
            try:
                client.read(f"w{index % 100}")
                recorder.add("read", True)
            except ZcraqError as error:
                recorder.add("read", type(error).__name__ == "KeyNotFound")


def _rate(events: list[tuple[float, str, bool]], kind: str, start: float, end: float) -> float:
    count = sum(1 for t, k, ok in events if k == kind and ok and start <= t < end)
    return count / (end - start)


def measure(victim_role: str) -> dict[str, float | int | str]:
    with ChainCluster(3) as cluster:
        cluster.start_all()
        with ZClient(cluster.coordinator_endpoint, timeout=5.0) as client:
            for index in range(100):
                client.write(f"w{index}", b"x" * 64)
        roles = cluster.roles()
        victim = next(node for node, role in roles.items() if role == victim_role)
        recorder, stop = Recorder(), threading.Event()
        threads = [threading.Thread(target=_writer, args=(cluster.coordinator_endpoint, recorder, stop))]
        threads += [threading.Thread(target=_reader, args=(cluster.coordinator_endpoint, recorder, stop))
                    for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(BASELINE_SECONDS)  # a measurement period, not a synchronisation
            killed_at = time.monotonic()
            cluster.kill(victim)
            time.sleep(AFTER_KILL_SECONDS)
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        events = sorted(recorder.events)
        baseline = _rate(events, "read", killed_at - BASELINE_SECONDS + 1.0, killed_at)
        # The first write both started after the kill and acknowledged: one in flight at the kill
        # may have committed before it.
        first_write = min((done for started, done, ok in recorder.writes if ok and started > killed_at),
                          default=None)
        recovered = None
        probe = killed_at
        while probe + WINDOW <= killed_at + AFTER_KILL_SECONDS:
            if _rate(events, "read", probe, probe + WINDOW) >= 0.9 * baseline:
                recovered = probe + WINDOW
                break
            probe += 0.1
        after = [(k, ok) for t, k, ok in events if t > killed_at]
        return {
            "victim": f"{victim_role} ({victim})",
            "write_gap_s": round(first_write - killed_at, 2) if first_write else float("nan"),
            "read_recovery_s": round(recovered - killed_at, 2) if recovered else float("nan"),
            "baseline_reads_per_s": round(baseline),
            "failed_writes": sum(1 for k, ok in after if k == "write" and not ok),
            "failed_reads": sum(1 for k, ok in after if k == "read" and not ok),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    install_signal_handlers()
    results = []
    for role in ("head", "middle", "tail"):
        for repeat in range(args.repeats):
            result = measure(role)
            print(f"{role} #{repeat + 1}: {result}", flush=True)
            results.append(result)
    table = Table(["victim", "write gap s (median)", "read recovery s (median)", "failed writes", "failed reads"])
    for role in ("head", "middle", "tail"):
        rows = [r for r in results if str(r["victim"]).startswith(role)]
        table.add(role, statistics.median(r["write_gap_s"] for r in rows),
                  statistics.median(r["read_recovery_s"] for r in rows),
                  sum(int(r["failed_writes"]) for r in rows), sum(int(r["failed_reads"]) for r in rows))
    print()
    print(table.render())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
