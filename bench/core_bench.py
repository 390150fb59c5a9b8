"""The node's own Python cost per operation, without sockets: request bytes in, through the codec
and the core (with a LevelDB store), reply bytes out - what a node's loop does for each message.

A chain benchmark (chain_bench.py) measures the whole system and varies with everything else on
the machine; this one measures only the node's code path, in one process, with the process CPU
clock, so two versions of it can be compared within a few percent. It runs against whichever
zcraq is importable, so to compare two commits, run it from each checkout:

    python bench/core_bench.py                       # this checkout
    PYTHONPATH=/path/to/other/checkout python bench/core_bench.py

(It speaks the API of the typed-message core and of the earlier one, which took frames.)

A single-member chain (head and tail at once) answers 20,000 strong reads of clean keys and 20,000
writes of 64-byte values over 1,000 keys, 16 messages per loop turn; the figure is the best of
several runs, in microseconds of CPU per operation.

--metrics measures the same node both ways, alternating: as a shell without metrics drives it, and
as one with ``metrics_port`` set does (each request counted and timed from its arrival to its reply,
and a view of the node taken every 250 ms: zcraq/monitoring/); it reports medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from zcraq import wire
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.store import LevelDBStore
from zcraq.store.memory import MemoryStore
from zcraq.topology import Member, Topology

try:
    from zcraq.messages import Ok
    TYPED = True
except ImportError:  # the core before typed messages
    TYPED = False

LIMITS = wire.Limits()
ENVELOPE = [b"client", b""]


class Node:
    """A NodeCore as its shell drives it, for either API."""

    def __init__(self, directory: str, store: str = "leveldb") -> None:
        self.store: Any = LevelDBStore(directory, "async") if store == "leveldb" else MemoryStore()
        me = Member("a", "a/service", "a/write", "a/ack")
        self.core = NodeCore(me, self.store, timings=NodeTimings())
        self.monitoring: Any = None  # set by monitor()
        self.core.start(-10.0)
        self.ready()
        self._answer(1, {"topology": Topology(1, (me,)), "publish": "p"})
        self.ready()
        self.core.tick(0.0)
        heartbeat = next(call_id for call_id, kind in self._calls(self.ready()) if kind == "heartbeat")
        self._answer(heartbeat, {"epoch": 1, "status": "member", "lease_ms": 10**9})
        self.ready()

    def ready(self) -> list[Any]:
        if TYPED:
            return self.core.ready()
        self.store.flush()
        return self.core.drain()  # type: ignore[attr-defined,no-any-return]

    def monitor(self, on: bool) -> None:
        """Drive the core as a shell with metrics does (``on``) or as one without."""
        if not on:
            self.monitoring = None
            return
        from zcraq.monitoring.node import node_request_stats, take_node_view
        from zcraq.monitoring.views import Publisher, ViewSlot
        from zcraq.notify import Notifier

        requests = node_request_stats()
        publisher = Publisher(lambda now: take_node_view(self.core, now, requests), ViewSlot(), Notifier({}))
        self.monitoring = (requests, publisher)

    def request(self, body: list[bytes], now: float) -> None:
        if TYPED:
            request = wire.read_node_request(body, LIMITS)
            client = ENVELOPE if self.monitoring is None else self.monitoring[0].arrived(ENVELOPE, request, now)
            self.core.on_request(client, request, now)
        else:
            self.core.on_request(ENVELOPE, body, now)  # type: ignore[arg-type]

    def reply_frames(self, effect: Any) -> list[bytes] | None:
        if TYPED:
            if type(effect).__name__ == "Respond":
                frames = wire.encode_reply(effect.reply, effect.values)
                envelope = effect.client if self.monitoring is None else self.monitoring[0].replied(
                    effect.client, effect.reply, time.monotonic())
                return [*envelope, *frames]
        elif type(effect).__name__ == "Reply":
            return [*effect.client, *effect.frames]
        return None

    def turn_ends(self) -> None:
        if self.monitoring is not None:
            self.monitoring[1].turn(time.monotonic())

    def _answer(self, call_id: int, fields: dict[str, Any]) -> None:
        if TYPED:
            self.core.on_peer_reply(Ok(call_id, **fields), [], 0.0)
        else:
            fields = {k: v.to_dict() if isinstance(v, Topology) else v for k, v in fields.items()}
            self.core.on_peer_reply(wire.encode_reply(call_id, fields), 0.0)  # type: ignore[call-arg]

    @staticmethod
    def _calls(effects: list[Any]) -> list[tuple[int, str]]:
        found = []
        for effect in effects:
            if type(effect).__name__ != "PeerRequest":
                continue
            if TYPED:
                found.append((effect.request.id, type(effect.request).__struct_config__.tag))
            else:
                header = orjson.loads(effect.frames[0])
                found.append((header["id"], header["type"]))
        return found


def per_op(node: Node, bodies: list[list[bytes]], batch: int = 16) -> float:
    started = time.process_time()
    for start in range(0, len(bodies), batch):
        for body in bodies[start:start + batch]:
            node.request(body, 1.0)
        node.core.tick(1.0)
        for effect in node.ready():
            node.reply_frames(effect)
        node.turn_ends()
    return (time.process_time() - started) / len(bodies) * 1e6


def best(run: Callable[[], float], times: int) -> float:
    return min(run() for _ in range(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", action="store_true", help="also measure with metrics on, alternating")
    parser.add_argument("--store", choices=("leveldb", "memory"), default="leveldb",
                        help="the node's store; memory leaves out LevelDB and its background compactions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zcraq-core-bench-") as directory:
        node = Node(directory, args.store)
        keys = [f"key-{i:06d}" for i in range(1000)]
        for start in range(0, 1000, 100):
            for i in range(start, start + 100):
                node.request([orjson.dumps({"type": "write", "id": i, "key": keys[i]}), b"v" * 64], 0.5)
            node.ready()
        reads = [[orjson.dumps({"type": "read", "id": i, "key": keys[i % 1000], "mode": "strong"})]
                 for i in range(20_000)]
        writes = [[orjson.dumps({"type": "write", "id": i, "key": keys[i % 1000]}), b"w" * 64]
                  for i in range(20_000)]
        if args.metrics:
            compare(node, reads, writes, args.store)
            return
        read_us = best(lambda: per_op(node, reads), 5)
        write_us = best(lambda: per_op(node, writes), 3)
    api = "typed messages" if TYPED else "frames"
    store = "LevelDB async" if args.store == "leveldb" else "memory store"
    print(f"node path ({api} core): strong read {read_us:.1f} us/op, write {write_us:.1f} us/op "
          f"(one member, {store}, CPU time)")


def compare(node: Node, reads: list[list[bytes]], writes: list[list[bytes]], store: str, rounds: int = 6) -> None:
    """Median of ``rounds`` runs of each workload without and with metrics, the two alternating and
    taking turns at going first, after one unmeasured run of each workload. Medians, not the best:
    every write run leaves the store larger, so the first runs are the fastest whatever they measure."""
    for bodies in (reads, writes):
        per_op(node, bodies)
    figures: dict[tuple[str, bool], list[float]] = {}
    for round in range(rounds):
        for name, bodies in (("strong read", reads), ("write", writes)):
            for on in (False, True) if round % 2 == 0 else (True, False):
                node.monitor(on)
                figures.setdefault((name, on), []).append(per_op(node, bodies))
    for name in ("strong read", "write"):
        off, on = statistics.median(figures[(name, False)]), statistics.median(figures[(name, True)])
        print(f"{name}: metrics off {off:.2f} us/op, on {on:.2f} us/op ({on - off:+.2f} us, {on / off - 1:+.1%}) "
              f"(one member, {store} store, CPU time, median of {rounds})")

if __name__ == "__main__":
    main()
