"""The chaos workload: concurrent client threads, each one Jepsen process with its own ZClient.

Each process does one operation at a time on a small hot set of keys: reads (spread over every
node by ZClient), writes of a value no one else ever writes (``v<process>-<n>``), conditional
writes and deletes. A process remembers the value and version it last read of each key (a missing
key: no value, version 0); a conditional write sends a new unique value with ``if_version`` that
version and is recorded as ``cas [expected value, new value]``. Values are unique, so a version
names exactly one value and the checker's value-based compare-and-set checks the version-based
condition exactly. A conditional write on a key the process has not read yet is a read instead.
How each outcome is recorded (what the checker may assume about it):

==============================================  ===========================================
outcome                                         recorded as
==============================================  ===========================================
success                                         ``ok`` (a read with the value it returned)
``KeyNotFound`` on a read                       ``ok`` with value null
``ConditionFailed`` on a conditional write      ``fail``: the head saw another version and
                                                wrote nothing
``Unavailable``, ``BadRequest``                 ``fail``: it surely did not happen
``WriteOutcomeUnknown`` (write, cas, delete)    ``info``: it may take effect at any time, or never
``Timeout`` on a read                           ``fail``: a read that never answered had no effect
anything else                                   ``fail`` for a read, ``info`` for a write, cas
                                                or delete
==============================================  ===========================================

Of the reads, BOUNDED_SHARE are bounded-staleness reads (limit BOUNDED_LIMIT), recorded with
their ``staleness`` for the checker, and SCAN_SHARE are scans of every key: each key's part is
recorded as an ok read (null for a key the scan did not return) by a process of its own
(``<process>/scan/<key>``), invoked when the scan began and completed when it ended; a scan that
failed is not recorded (a read that did not answer had no effect).

A process goes on with new operations after an ``info``, like a Jepsen process would be replaced.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from zcraq.chaos.history import HistoryWriter
from zcraq.client import ZClient
from zcraq.errors import (BadRequest, ConditionFailed, KeyNotFound, Timeout, Unavailable, WriteOutcomeUnknown,
                          ZcraqError)

FINAL_PROCESS = "final"
BOUNDED_SHARE = 0.2  # of the reads: bounded-staleness reads
BOUNDED_LIMIT = 0.05  # seconds: their limit (a longer one widens each read's window, and the checker's search)
SCAN_SHARE = 0.05  # of the reads: scans of every key


def outcome_of(f: str, error: BaseException) -> str:
    """The history type for an operation that raised ``error``."""
    if isinstance(error, KeyNotFound):
        return "ok" if f == "read" else "info"
    if isinstance(error, WriteOutcomeUnknown):
        return "info"
    if isinstance(error, ConditionFailed):
        return "fail"
    if isinstance(error, (Unavailable, BadRequest)):
        return "fail"
    if isinstance(error, Timeout):
        return "fail" if f == "read" else "info"
    return "fail" if f == "read" else "info"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


class Worker(threading.Thread):
    def __init__(self, workload: Workload, process: int) -> None:
        super().__init__(name=f"chaos-client-{process}", daemon=True)
        self.workload = workload
        self.process = process
        self.rng = random.Random(f"{workload.seed}/client/{process}")
        self.writes = 0
        self.errors: Counter[str] = Counter()
        self.seen: dict[str, tuple[str | None, int]] = {}  # key -> (value, version) last read

    def run(self) -> None:
        w = self.workload
        with ZClient(w.endpoint, timeout=w.timeout, config=w.config) as client:
            while not w.stopping.is_set():
                self.one(client)
                if w.think > 0:
                    time.sleep(self.rng.uniform(0, w.think))

    def one(self, client: ZClient) -> None:
        w = self.workload
        roll = self.rng.random()
        key = self.rng.choice(w.keys)
        if_version = 0
        bounded = False
        if roll < w.read_ratio:
            f, value = "read", None
            kind_roll = self.rng.random()
            if kind_roll < SCAN_SHARE:
                self.scan(client)
                return
            bounded = kind_roll < SCAN_SHARE + BOUNDED_SHARE
        elif roll < w.read_ratio + w.cas_ratio:
            if key in self.seen:
                self.writes += 1
                expected, if_version = self.seen[key]
                f, value = "cas", [expected, f"v{self.process}-{self.writes}"]
            else:
                f, value = "read", None  # nothing to compare with yet: learn the version first
        elif roll < 1.0 - w.delete_ratio:
            self.writes += 1
            f, value = "write", f"v{self.process}-{self.writes}"
        else:
            f, value = "delete", None
        extra = {"staleness": int(BOUNDED_LIMIT * 1e9)} if bounded else {}
        w.history.record(self.process, "invoke", f, key, value, **extra)
        try:
            if f == "read":
                try:
                    data, version = (client.read_versioned(key, mode="bounded", max_staleness=BOUNDED_LIMIT)
                                     if bounded else client.read_versioned(key))
                except KeyNotFound:
                    self.seen[key] = (None, 0)
                    raise
                result: Any = _text(data)
                self.seen[key] = (result, version)
            elif f == "write":
                client.write(key, value)
                result = value
            elif f == "cas":
                client.write(key, value[1], if_version=if_version)
                result = value
            else:
                client.delete(key)
                result = None
            kind = "ok"
        except Exception as error:  # every failure is recorded: the history must stay complete
            kind = outcome_of(f, error)
            result = None if f == "read" else value
            self.errors[f"{f}: {type(error).__name__}"] += 1
            if not isinstance(error, ZcraqError):
                self.errors[f"{f}: unexpected {type(error).__name__}: {error}"[:200]] += 1
        w.history.record(self.process, kind, f, key, result)


    def scan(self, client: ZClient) -> None:
        """Every key in one scan, recorded as a read of each over the scan's whole time."""
        w = self.workload
        started = time.monotonic_ns()
        try:
            found = {key: (_text(value), version) for key, value, version in client.scan(page_keys=1000)}
        except Exception as error:  # a read that never answered had no effect: nothing recorded
            self.errors[f"scan: {type(error).__name__}"] += 1
            return
        for key in w.keys:
            value, version = found.get(key, (None, 0))
            self.seen[key] = (value, version)
            process = f"{self.process}/scan/{key}"
            w.history.record(process, "invoke", "read", key, None, at=started)
            w.history.record(process, "ok", "read", key, value)


class Workload:
    def __init__(self, endpoint: str | None, history: HistoryWriter, *, clients: int, keys: list[str], seed: int,
                 timeout: float = 3.0, think: float = 0.0, read_ratio: float = 0.5,
                 cas_ratio: float = 0.2, delete_ratio: float = 0.1, config: Path | None = None) -> None:
        """``endpoint``: the coordinator's; or None, and ``config`` a client config (which may
        list several coordinators)."""
        self.endpoint = endpoint
        self.config = config
        self.history = history
        self.keys = keys
        self.seed = seed
        self.timeout = timeout
        self.think = think
        self.read_ratio = read_ratio
        self.cas_ratio = cas_ratio
        self.delete_ratio = delete_ratio
        self.stopping = threading.Event()
        self.workers = [Worker(self, process) for process in range(clients)]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self) -> bool:
        """Let every process finish its operation; False if one is stuck past its deadline."""
        self.stopping.set()
        deadline = time.monotonic() + self.timeout + 10.0
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in self.workers)

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for worker in self.workers:
            total.update(worker.errors)
        return total


def final_reads(endpoint: str | None, history: HistoryWriter, keys: list[str], services: dict[str, str],
                timeout: float = 5.0, config: Path | None = None) -> dict[str, dict[str, Any]]:
    """Read every key at every node, once linearizably (recorded in the history as process
    ``final``) and once as the node's own newest committed version (not recorded: not
    linearizable by design, but after convergence every replica must hold the same one).

    Returns ``{key: {node: {"strong": value or None or "error: ...", "committed": [value, version]
    or None or "error: ..."}}}``."""
    states: dict[str, dict[str, Any]] = {}
    with ZClient(endpoint, timeout=timeout, config=config) as client:
        for key in keys:
            states[key] = {}
            for node, service in services.items():
                entry: dict[str, Any] = {}
                history.record(FINAL_PROCESS, "invoke", "read", key, None)
                try:
                    value: Any = _text(client.read(key, service))
                    kind = "ok"
                except KeyNotFound:
                    value, kind = None, "ok"
                except Exception as error:
                    value, kind = None, outcome_of("read", error)
                    entry["strong_error"] = f"{type(error).__name__}: {error}"
                history.record(FINAL_PROCESS, kind, "read", key, value)
                entry["strong"] = value
                try:
                    data, version = client.read_versioned(key, service, mode="eventual")
                    entry["committed"] = [_text(data), version]
                except KeyNotFound:
                    entry["committed"] = None
                except Exception as error:
                    entry["committed"] = None
                    entry["committed_error"] = f"{type(error).__name__}: {error}"
                states[key][node] = entry
    return states
