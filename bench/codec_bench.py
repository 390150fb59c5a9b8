"""The wire codec's cost per message: msgspec Structs (zcraq/wire.py) against orjson + dict checks.

Until the typed messages, a node parsed every request with orjson into a dict and validated it
field by field in Python, and built every reply as a dict for orjson. The baseline here does that
same work in the same run, with that decoder kept here verbatim; replies are dicts dumped by orjson. Chain frames are compared the same way for one 64-record write frame,
against the orjson chain codec as it was.

    python bench/codec_bench.py [--seconds 1.0]

Prints ns per operation (the best of 5 runs of ``--seconds`` each, on one CPU, this process only).
"""

from __future__ import annotations

import argparse
import struct
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import orjson

from zcraq import wire
from zcraq.messages import Ok, WriteFrame, WriteRecord

LIMITS = wire.Limits()
READ = [b'{"type":"read","id":12345,"key":"key-000123","mode":"strong"}']
WRITE = [b'{"type":"write","id":12346,"key":"key-000123"}', b"v" * 64]
VERSION = [b'{"type":"version","id":7,"key":"key-000123","epoch":12}']
U32 = struct.Struct(">I")


# The orjson request decoder as it was, kept verbatim as the baseline.
MAX_HEADER_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_NODE_ID_CHARS = 64


# type -> (needs key, needs value frame, {field: (python types, required)})
_INT = (int,)
_STR = (str,)
_REQUEST_SCHEMAS: dict[str, tuple[bool, bool, dict[str, tuple[tuple[type, ...], bool]]]] = {
    "read": (True, False, {"mode": (_STR, False)}),
    "write": (True, True, {}),
    "delete": (True, False, {}),
    "version": (True, False, {"epoch": (_INT, True)}),
    "catchup": (False, False, {"after": (_STR + (type(None),), False), "limit": (_INT, True), "epoch": (_INT, True)}),
    "status": (False, False, {}),
    "topology": (False, False, {}),
    "join": (False, False, {"node": ((dict,), True), "protocol": (_INT, True)}),
    "heartbeat": (False, False, {"node_id": (_STR, True), "epoch": (_INT, True), "protocol": (_INT, True)}),
    "caught_up": (False, False, {"node_id": (_STR, True), "epoch": (_INT, True)}),
    "leave": (False, False, {"node_id": (_STR, True)}),
    "confirm": (False, False, {"node_id": (_STR, True), "epoch": (_INT, True)}),
}

READ_MODES = ("strong", "eventual")


def _check_key(key: Any, limits: wire.Limits, request_id: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if len(key.encode()) > limits.max_key_bytes:
        raise ValueError(f"key is longer than {limits.max_key_bytes} bytes")
    return key


def old_decode_request(frames: list[bytes], limits: wire.Limits, allowed: frozenset[str]) -> tuple[Any, ...]:
    """Validate a request's frames (envelope already removed)."""
    if not frames:
        raise ValueError("empty message: expected a JSON header frame")
    if len(frames) > 2:
        raise ValueError(f"expected 1 or 2 frames, got {len(frames)}")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise ValueError("header frame too large")
    try:
        header = orjson.loads(frames[0])
    except orjson.JSONDecodeError:
        raise ValueError("header frame is not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError("header must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not (
        (isinstance(request_id, int) and not isinstance(request_id, bool))
        or (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)
    ):
        raise ValueError(f"id must be an integer or a string of at most {MAX_ID_CHARS} characters")
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise ValueError(f"unknown request type {kind!r}; this endpoint accepts {', '.join(sorted(allowed))}",
                        request_id=request_id)
    needs_key, needs_value, schema = _REQUEST_SCHEMAS[kind]
    key = _check_key(header.get("key"), limits, request_id) if needs_key else None
    value: bytes | None = None
    if needs_value:
        if len(frames) != 2:
            raise ValueError(f"{kind} needs a value frame after the header")
        value = frames[1]
        if len(value) > limits.max_value_bytes:
            raise ValueError(f"value is larger than {limits.max_value_bytes} bytes")
    elif len(frames) != 1:
        raise ValueError(f"{kind} takes a single header frame")
    fields: dict[str, Any] = {}
    for name, (types, required) in schema.items():
        if name not in header:
            if required:
                raise ValueError(f"{kind} needs field {name!r}")
            continue
        item = header[name]
        if not isinstance(item, types) or (isinstance(item, bool) and bool not in types):
            raise ValueError(f"field {name!r} has the wrong type")
        fields[name] = item
    mode = fields.get("mode")
    if mode is not None and mode not in READ_MODES:
        raise ValueError(f"mode must be one of {', '.join(READ_MODES)}")
    for name in ("node_id",):
        if name in fields and not 0 < len(fields[name]) <= MAX_NODE_ID_CHARS:
            raise ValueError(f"{name} must be 1 to {MAX_NODE_ID_CHARS} characters")
    if kind in ("version", "catchup", "heartbeat", "caught_up", "confirm") and fields["epoch"] < 0:
        raise ValueError("epoch must be non-negative")
    if kind == "catchup" and not 0 < fields["limit"] <= 100_000:
        raise ValueError("limit must be from 1 to 100000")
    return kind, request_id, key, value, fields


def old_encode_chain(frame: WriteFrame) -> bytes:
    head = orjson.dumps({"t": "w", "from": frame.sender, "epoch": frame.epoch, "seq": frame.seq})
    parts = [U32.pack(len(head)), head]
    for r in frame.records:
        meta = orjson.dumps([r.key, r.version, (1 if r.committed else 0) | (2 if r.tombstone else 0)])
        parts += [U32.pack(len(meta)), meta, U32.pack(len(r.value)), r.value]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class OldRecord:
    key: str
    version: int
    value: bytes
    committed: bool = False
    tombstone: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _take(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise ValueError("truncated")
    (length,) = U32.unpack_from(data, offset)
    start = offset + 4
    end = start + length
    if end > len(data):
        raise ValueError("truncated")
    return data[start:end], end


def old_decode_chain(data: bytes) -> list[OldRecord]:
    """The orjson chain decoder: parse each part, check each field in Python."""
    head, offset = _take(data, 0)
    header = orjson.loads(head)
    if not isinstance(header, dict) or header.get("t") not in ("w", "c", "r"):
        raise ValueError("bad header")
    sender, epoch, seq = header.get("from"), header.get("epoch"), header.get("seq")
    if not (isinstance(sender, str) and 0 < len(sender) <= 64 and _is_int(epoch) and epoch >= 0
            and _is_int(seq) and seq >= 0):
        raise ValueError("bad header")
    records = []
    while offset < len(data):
        meta_bytes, offset = _take(data, offset)
        value, offset = _take(data, offset)
        meta = orjson.loads(meta_bytes)
        if not (isinstance(meta, list) and len(meta) == 3):
            raise ValueError("bad meta")
        key, version, flags = meta
        if not isinstance(key, str) or not key or len(key.encode()) > LIMITS.max_key_bytes:
            raise ValueError("bad key")
        if not (_is_int(version) and version > 0 and _is_int(flags) and 0 <= flags <= 3):
            raise ValueError("bad record")
        if len(value) > LIMITS.max_value_bytes:
            raise ValueError("too large")
        records.append(OldRecord(key, version, value, bool(flags & 1), bool(flags & 2)))
    return records


def best_ns(fn: Callable[[], object], seconds: float) -> float:
    results = []
    for _ in range(5):
        count, start = 0, time.process_time()
        deadline = start + seconds
        while time.process_time() < deadline:
            for _ in range(200):
                fn()
            count += 200
        results.append((time.process_time() - start) / count * 1e9)
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    frame = WriteFrame("node1", 7, 3, tuple(WriteRecord(f"key-{i:06d}", i + 1, b"v" * 64) for i in range(64)))
    data = wire.encode_chain(frame)
    assert old_encode_chain(frame) == data
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("decode a read request", lambda: old_decode_request(READ, LIMITS, wire.NODE_REQUESTS),
         lambda: wire.decode_request(READ, LIMITS, wire.NODE_REQUESTS)),
        ("decode a write request", lambda: old_decode_request(WRITE, LIMITS, wire.NODE_REQUESTS),
         lambda: wire.decode_request(WRITE, LIMITS, wire.NODE_REQUESTS)),
        ("decode a version query", lambda: old_decode_request(VERSION, LIMITS, wire.NODE_REQUESTS),
         lambda: wire.decode_request(VERSION, LIMITS, wire.NODE_REQUESTS)),
        ("encode a read reply", lambda: [orjson.dumps({"type": "ok", "id": 12345, "version": 3}), b"v" * 64],
         lambda: wire.encode_reply(Ok(12345, version=3), (b"v" * 64,))),
        ("encode a 64-record write frame", lambda: old_encode_chain(frame), lambda: wire.encode_chain(frame)),
        ("decode a 64-record write frame", lambda: old_decode_chain(data), lambda: wire.decode_chain(data, LIMITS)),
    ]
    print(f"{'operation':34} {'orjson + dict':>14} {'msgspec':>10} {'ratio':>7}")
    for name, old, new in cases:
        old_ns, new_ns = best_ns(old, args.seconds), best_ns(new, args.seconds)
        print(f"{name:34} {old_ns:11,.0f} ns {new_ns:7,.0f} ns {new_ns / old_ns:7.2f}")


if __name__ == "__main__":
    main()
