"""A watcher of every key through a chaos run, and what it must have delivered.

It follows the cluster with ZClient.watch from the start of the workload to the end of the final
reads, through every fault, and records each change (``watch.jsonl``). Checked against the
history (values are unique per write, so a value names its write):

- per key, versions only grow, and a change not marked ``pruned`` comes right after the one before;
- every delivered value was written by some write or conditional write (a deletion by a delete);
- every acknowledged write of a key was delivered, unless the key had a change marked pruned;
- after the heal, each key's last change is the version and value every replica holds.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from zcraq.client import ZClient
from zcraq.clientwatch import Change
from zcraq.errors import ZcraqError

WATCH_TIMEOUT = 120.0  # seconds the watcher waits for some node to answer before giving up


class WatchRecorder(threading.Thread):
    def __init__(self, endpoint: str, out: Path) -> None:
        super().__init__(name="chaos-watcher", daemon=True)
        self.endpoint = endpoint
        self.path = out
        self.changes: list[Change] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.ready = threading.Event()  # the watch has its starting point

    def run(self) -> None:
        with ZClient(self.endpoint, timeout=WATCH_TIMEOUT) as client, self.path.open("wb") as out:
            stream = client.watch(prefix="", poll_wait=0.5)
            while not self.stopping.is_set():
                try:
                    changes = stream.poll()
                except ZcraqError as error:
                    self.errors.append(f"{type(error).__name__}: {error}")
                    return
                self.ready.set()
                for change in changes:
                    self.changes.append(change)
                    out.write(orjson.dumps({"at": time.monotonic_ns(), "key": change.key, "version": change.version,
                                            "value": None if change.value is None else change.value.decode(),
                                            "pruned": change.pruned}) + b"\n")
                out.flush()

    def last(self) -> dict[str, tuple[int, str | None]]:
        return {c.key: (c.version, None if c.value is None else c.value.decode()) for c in list(self.changes)}

    def stop(self) -> None:
        self.stopping.set()
        self.join(10.0)


def final_committed(states: dict[str, dict[str, Any]]) -> dict[str, tuple[int, str | None]]:
    """Each key's (version, value) every replica holds after the heal, where they agree."""
    agreed: dict[str, tuple[int, str | None]] = {}
    for key, nodes in states.items():
        held = {tuple(entry["committed"]) if isinstance(entry.get("committed"), list) else None
                for entry in nodes.values()}
        if len(held) == 1:
            only = held.pop()
            if only is not None:
                agreed[key] = (only[1], only[0])
    return agreed


def check_watch(changes: list[Change], history: Path, final: dict[str, tuple[int, str | None]]) -> list[str]:
    written: dict[str, set[str | None]] = defaultdict(lambda: {None})  # a deletion is a value None
    acked: dict[str, set[str]] = defaultdict(set)
    for line in history.read_bytes().splitlines():
        event = orjson.loads(line)
        if event["f"] in ("write", "cas") and event["value"] is not None:
            value = event["value"][1] if event["f"] == "cas" else event["value"]
            written[event["key"]].add(value)
            if event["type"] == "ok":
                acked[event["key"]].add(value)
    problems: list[str] = []
    last: dict[str, Change] = {}
    delivered: dict[str, set[str | None]] = defaultdict(set)
    pruned: set[str] = set()
    for change in changes:
        value = None if change.value is None else change.value.decode()
        before = last.get(change.key)
        if before is not None and change.version <= before.version:
            problems.append(f"{change.key}: version {change.version} came after {before.version}")
        elif before is not None and not change.pruned and change.version != before.version + 1:
            problems.append(f"{change.key}: jumped from version {before.version} to {change.version} unmarked")
        if value not in written[change.key]:
            problems.append(f"{change.key}: version {change.version} has a value no write wrote: {value!r}")
        if change.pruned:
            pruned.add(change.key)
        delivered[change.key].add(value)
        last[change.key] = change
    for key, values in acked.items():
        missing = values - delivered[key]
        if missing and key not in pruned:
            problems.append(f"{key}: {len(missing)} acknowledged writes never delivered, e.g. {sorted(missing)[:3]}")
    for key, (version, value) in final.items():
        got = last.get(key)
        if got is None or got.version != version or (None if got.value is None else got.value.decode()) != value:
            problems.append(f"{key}: the watch ended at {got and (got.version, got.value)}, the replicas hold "
                            f"{(version, value)}")
    return problems


__all__ = ["WatchRecorder", "check_watch", "final_committed"]
