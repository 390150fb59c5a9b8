"""A watcher of every key through a chaos run, and what it must have delivered.

It follows the cluster with ZClient.watch from the start of the workload to the end of the final
reads, through every fault, and records each change (``watch.jsonl``). Checked against the
history (values are unique per write, so a value names its write):

- per key, versions only grow, and a change not marked ``pruned`` comes right after the one before;
- every delivered value was written by some write or conditional write (a deletion by a delete);
- every acknowledged write of a key was delivered, unless a change of that key marked pruned was
  delivered after the write began (a write that began after the last such change has a higher
  version than it, and no versions after it may be skipped);
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

GIVE_UP_AFTER = 120.0  # seconds of failed polls in a row after which the watcher gives up


class WatchRecorder(threading.Thread):
    def __init__(self, endpoint: str | None, out: Path, timeout: float, config: Path | None = None) -> None:
        """``timeout``: the client's, as the workload's clients have: a poll to a node that died
        gives up after about a third of it and the watch moves to another node."""
        super().__init__(name="chaos-watcher", daemon=True)
        self.endpoint = endpoint
        self.config = config  # a client config (several coordinators), with endpoint None
        self.timeout = timeout
        self.path = out
        self.changes: list[Change] = []
        self.delivered_at: list[int] = []  # monotonic_ns of each change's delivery, the history's clock
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.ready = threading.Event()  # the watch has its starting point

    def run(self) -> None:
        with ZClient(self.endpoint, timeout=self.timeout, config=self.config) as client, \
                self.path.open("wb") as out:
            stream = client.watch(prefix="", poll_wait=0.5)
            failing_since: float | None = None
            while not self.stopping.is_set():
                try:
                    changes = stream.poll()
                except ZcraqError as error:  # no node answered (a fault): the stream resumes where it was
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > GIVE_UP_AFTER:
                        self.errors.append(f"no poll succeeded for {GIVE_UP_AFTER:g} s: {type(error).__name__}: "
                                           f"{error}")
                        return
                    self.stopping.wait(0.1)
                    continue
                failing_since = None
                self.ready.set()
                for change in changes:
                    at = time.monotonic_ns()
                    self.changes.append(change)
                    self.delivered_at.append(at)
                    out.write(orjson.dumps({"at": at, "key": change.key, "version": change.version,
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


def check_watch(changes: list[Change], history: Path, final: dict[str, tuple[int, str | None]],
                delivered_at: list[int] | None = None) -> list[str]:
    """The problems of a watch's ``changes`` (delivered at ``delivered_at``, monotonic_ns; without
    it, every pruned change counts as delivered at the end) against the run's history."""
    written: dict[str, set[str | None]] = defaultdict(lambda: {None})  # a deletion is a value None
    acked: dict[str, dict[str, int]] = defaultdict(dict)  # key -> value -> when its write began
    began: dict[Any, int] = {}
    for line in history.read_bytes().splitlines():
        event = orjson.loads(line)
        if event["f"] in ("write", "cas") and event["value"] is not None:
            value = event["value"][1] if event["f"] == "cas" else event["value"]
            written[event["key"]].add(value)
            if event["type"] == "invoke":
                began[event["process"]] = event["time"]
            elif event["type"] == "ok":
                acked[event["key"]][value] = began.get(event["process"], 0)
    problems: list[str] = []
    last: dict[str, Change] = {}
    delivered: dict[str, set[str | None]] = defaultdict(set)
    last_pruned: dict[str, int] = {}  # key -> when its last change marked pruned was delivered
    at = delivered_at if delivered_at is not None else [2**63] * len(changes)
    for change, when in zip(changes, at):
        value = None if change.value is None else change.value.decode()
        before = last.get(change.key)
        if before is not None and change.version <= before.version:
            problems.append(f"{change.key}: version {change.version} came after {before.version}")
        elif before is not None and not change.pruned and change.version != before.version + 1:
            problems.append(f"{change.key}: jumped from version {before.version} to {change.version} unmarked")
        if value not in written[change.key]:
            problems.append(f"{change.key}: version {change.version} has a value no write wrote: {value!r}")
        if change.pruned:
            last_pruned[change.key] = when
        delivered[change.key].add(value)
        last[change.key] = change
    for key, began_at in acked.items():
        since = last_pruned.get(key, -1)
        missing = {value for value, t in began_at.items() if t > since} - delivered[key]
        if missing:
            problems.append(f"{key}: {len(missing)} acknowledged writes never delivered, e.g. {sorted(missing)[:3]}")
    for key, (version, value) in final.items():
        got = last.get(key)
        if got is None or got.version != version or (None if got.value is None else got.value.decode()) != value:
            problems.append(f"{key}: the watch ended at {got and (got.version, got.value)}, the replicas hold "
                            f"{(version, value)}")
    return problems


__all__ = ["WatchRecorder", "check_watch", "final_committed"]
