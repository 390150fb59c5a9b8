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
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

from zcraq import wire
from zcraq.nodecore import NodeCore, NodeTimings
from zcraq.store import LevelDBStore
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

    def __init__(self, directory: str) -> None:
        self.store = LevelDBStore(directory, "async")
        me = Member("a", "a/service", "a/write", "a/ack")
        self.core = NodeCore(me, self.store, timings=NodeTimings())
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

    def request(self, body: list[bytes], now: float) -> None:
        if TYPED:
            self.core.on_request(ENVELOPE, wire.read_node_request(body, LIMITS), now)
        else:
            self.core.on_request(ENVELOPE, body, now)  # type: ignore[arg-type]

    def reply_frames(self, effect: Any) -> list[bytes] | None:
        if TYPED:
            if type(effect).__name__ == "Respond":
                return [*effect.client, *wire.encode_reply(effect.reply, effect.values)]
        elif type(effect).__name__ == "Reply":
            return [*effect.client, *effect.frames]
        return None

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
    return (time.process_time() - started) / len(bodies) * 1e6


def best(run: Callable[[], float], times: int) -> float:
    return min(run() for _ in range(times))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="zcraq-core-bench-") as directory:
        node = Node(directory)
        keys = [f"key-{i:06d}" for i in range(1000)]
        for start in range(0, 1000, 100):
            for i in range(start, start + 100):
                node.request([orjson.dumps({"type": "write", "id": i, "key": keys[i]}), b"v" * 64], 0.5)
            node.ready()
        reads = [[orjson.dumps({"type": "read", "id": i, "key": keys[i % 1000], "mode": "strong"})]
                 for i in range(20_000)]
        writes = [[orjson.dumps({"type": "write", "id": i, "key": keys[i % 1000]}), b"w" * 64]
                  for i in range(20_000)]
        read_us = best(lambda: per_op(node, reads), 5)
        write_us = best(lambda: per_op(node, writes), 3)
    api = "typed messages" if TYPED else "frames"
    print(f"node path ({api} core): strong read {read_us:.1f} us/op, write {write_us:.1f} us/op "
          "(one member, LevelDB async, CPU time)")


if __name__ == "__main__":
    main()
