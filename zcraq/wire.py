"""Bytes on the wire: request/reply messages and chain frames (PROTOCOL.md is the prose version).

Request/reply (client <-> node, client <-> coordinator, node <-> node, node <-> coordinator):
a message is one orjson header frame, optionally followed by raw value frames. Values are never
inside JSON, so any bytes travel untouched.

Chain frames (PUSH/PULL between neighbours) carry many records in one ZeroMQ frame, because
per-message multipart costs more than the records themselves:

    frame   := u32 header_len, header (orjson object: t, from, epoch, seq, and for "c" commits)
    t = "w" := header, then records until the end:
               u32 meta_len, meta (orjson [key, version, flags]), u32 value_len, value
    t = "c" := header only; header["commits"] = [[key, version], ...]
    t = "r" := header only (resync: "resend me everything you have not seen committed")

Everything decoded here is validated; a violation raises ``WireError`` with a message fit to send
back to the peer. Nothing here touches sockets or stores.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

_U32 = struct.Struct(">I")

COMMITTED = 1
TOMBSTONE = 2

MAX_HEADER_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_NODE_ID_CHARS = 64
# Version of the node <-> coordinator <-> node protocol. A node sends it in every join and
# heartbeat and the coordinator refuses a different one: processes of different versions must
# never share a chain (also not after the coordinator alone was restarted on another release).
PROTOCOL_VERSION = 1


class WireError(Exception):
    """A message that breaks the protocol. ``code`` is the wire error code for the reply."""

    def __init__(self, message: str, code: str = "bad_request", request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Limits:
    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20


# ---------------------------------------------------------------------------------------------
# Request / reply


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request. ``fields`` holds the header's other typed fields."""

    type: str
    id: Any
    key: str | None = None
    value: bytes | None = None
    fields: dict[str, Any] = field(default_factory=dict)


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


def _check_key(key: Any, limits: Limits, request_id: Any) -> str:
    if not isinstance(key, str) or not key:
        raise WireError("key must be a non-empty string", request_id=request_id)
    if len(key.encode()) > limits.max_key_bytes:
        raise WireError(f"key is longer than {limits.max_key_bytes} bytes", "too_large", request_id)
    return key


def decode_request(frames: list[bytes], limits: Limits, allowed: frozenset[str]) -> Request:
    """Validate a request's frames (envelope already removed)."""
    if not frames:
        raise WireError("empty message: expected a JSON header frame")
    if len(frames) > 2:
        raise WireError(f"expected 1 or 2 frames, got {len(frames)}")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise WireError("header frame too large", "too_large")
    try:
        header = orjson.loads(frames[0])
    except orjson.JSONDecodeError:
        raise WireError("header frame is not valid JSON") from None
    if not isinstance(header, dict):
        raise WireError("header must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and not (
        (isinstance(request_id, int) and not isinstance(request_id, bool))
        or (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)
    ):
        raise WireError(f"id must be an integer or a string of at most {MAX_ID_CHARS} characters")
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise WireError(f"unknown request type {kind!r}; this endpoint accepts {', '.join(sorted(allowed))}",
                        request_id=request_id)
    needs_key, needs_value, schema = _REQUEST_SCHEMAS[kind]
    key = _check_key(header.get("key"), limits, request_id) if needs_key else None
    value: bytes | None = None
    if needs_value:
        if len(frames) != 2:
            raise WireError(f"{kind} needs a value frame after the header", request_id=request_id)
        value = frames[1]
        if len(value) > limits.max_value_bytes:
            raise WireError(f"value is larger than {limits.max_value_bytes} bytes", "too_large", request_id)
    elif len(frames) != 1:
        raise WireError(f"{kind} takes a single header frame", request_id=request_id)
    fields: dict[str, Any] = {}
    for name, (types, required) in schema.items():
        if name not in header:
            if required:
                raise WireError(f"{kind} needs field {name!r}", request_id=request_id)
            continue
        item = header[name]
        if not isinstance(item, types) or (isinstance(item, bool) and bool not in types):
            raise WireError(f"field {name!r} has the wrong type", request_id=request_id)
        fields[name] = item
    mode = fields.get("mode")
    if mode is not None and mode not in READ_MODES:
        raise WireError(f"mode must be one of {', '.join(READ_MODES)}", request_id=request_id)
    for name in ("node_id",):
        if name in fields and not 0 < len(fields[name]) <= MAX_NODE_ID_CHARS:
            raise WireError(f"{name} must be 1 to {MAX_NODE_ID_CHARS} characters", request_id=request_id)
    if kind in ("version", "catchup", "heartbeat", "caught_up", "confirm") and fields["epoch"] < 0:
        raise WireError("epoch must be non-negative", request_id=request_id)
    if kind == "catchup" and not 0 < fields["limit"] <= 100_000:
        raise WireError("limit must be from 1 to 100000", request_id=request_id)
    return Request(type=kind, id=request_id, key=key, value=value, fields=fields)


def encode_request(kind: str, request_id: Any, value: bytes | None = None, **fields: Any) -> list[bytes]:
    header = {"type": kind, "id": request_id, **fields}
    frames = [orjson.dumps(header)]
    if value is not None:
        frames.append(value)
    return frames


def encode_reply(request_id: Any, fields: dict[str, Any], values: list[bytes] = ()) -> list[bytes]:
    header = {"type": "ok", "id": request_id, **fields}
    return [orjson.dumps(header), *values]


def encode_error(request_id: Any, code: str, message: str, **extra: Any) -> list[bytes]:
    header = {"type": "error", "id": request_id, "code": code, "message": message, **extra}
    return [orjson.dumps(header)]


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded reply: ``ok`` or an error ``code`` and ``message``."""

    id: Any
    ok: bool
    header: dict[str, Any]
    values: list[bytes]

    @property
    def code(self) -> str:
        return str(self.header.get("code", "internal"))

    @property
    def message(self) -> str:
        return str(self.header.get("message", ""))


def decode_reply(frames: list[bytes]) -> Reply:
    if not frames:
        raise WireError("empty reply")
    try:
        header = orjson.loads(frames[0])
    except orjson.JSONDecodeError:
        raise WireError("reply header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("type") not in ("ok", "error"):
        raise WireError("reply header must be an object with type ok or error")
    return Reply(id=header.get("id"), ok=header["type"] == "ok", header=header, values=list(frames[1:]))


# ---------------------------------------------------------------------------------------------
# Chain frames


@dataclass(frozen=True, slots=True)
class WriteRecord:
    key: str
    version: int
    value: bytes
    committed: bool = False
    tombstone: bool = False


@dataclass(frozen=True, slots=True)
class ChainFrame:
    """One frame on a chain link. ``kind``: "w" writes, "c" commits, "r" resync request."""

    kind: str
    sender: str
    epoch: int
    seq: int
    writes: tuple[WriteRecord, ...] = ()
    commits: tuple[tuple[str, int], ...] = ()


def encode_chain(frame: ChainFrame) -> bytes:
    header: dict[str, Any] = {"t": frame.kind, "from": frame.sender, "epoch": frame.epoch, "seq": frame.seq}
    if frame.kind == "c":
        header["commits"] = frame.commits
    head = orjson.dumps(header)
    parts = [_U32.pack(len(head)), head]
    for record in frame.writes:
        flags = (COMMITTED if record.committed else 0) | (TOMBSTONE if record.tombstone else 0)
        meta = orjson.dumps([record.key, record.version, flags])
        parts += [_U32.pack(len(meta)), meta, _U32.pack(len(record.value)), record.value]
    return b"".join(parts)


def _take(data: bytes, offset: int, what: str) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise WireError(f"chain frame truncated before {what} length")
    (length,) = _U32.unpack_from(data, offset)
    start = offset + 4
    end = start + length
    if end > len(data):
        raise WireError(f"chain frame truncated inside {what}")
    return data[start:end], end


def is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON true would pass isinstance(x, int))."""
    return isinstance(value, int) and not isinstance(value, bool)


def decode_chain(data: bytes, limits: Limits) -> ChainFrame:
    head, offset = _take(data, 0, "header")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        raise WireError("chain header is not valid JSON") from None
    if not isinstance(header, dict):
        raise WireError("chain header must be an object")
    kind, sender, epoch, seq = header.get("t"), header.get("from"), header.get("epoch"), header.get("seq")
    if kind not in ("w", "c", "r"):
        raise WireError(f"unknown chain frame type {kind!r}")
    if not isinstance(sender, str) or not 0 < len(sender) <= MAX_NODE_ID_CHARS:
        raise WireError("chain frame sender must be a node id")
    if not (is_int(epoch) and epoch >= 0 and is_int(seq) and seq >= 0):
        raise WireError("chain frame epoch and seq must be non-negative integers")
    writes: list[WriteRecord] = []
    commits: list[tuple[str, int]] = []
    if kind == "w":
        while offset < len(data):
            meta_bytes, offset = _take(data, offset, "record meta")
            value, offset = _take(data, offset, "record value")
            try:
                meta = orjson.loads(meta_bytes)
            except orjson.JSONDecodeError:
                raise WireError("write record meta is not valid JSON") from None
            if not (isinstance(meta, list) and len(meta) == 3):
                raise WireError("write record meta must be [key, version, flags]")
            key, version, flags = meta
            _check_key(key, limits, None)
            if not (is_int(version) and version > 0 and is_int(flags) and 0 <= flags <= 3):
                raise WireError("write record version must be positive and flags 0..3")
            if len(value) > limits.max_value_bytes:
                raise WireError("write record value too large", "too_large")
            writes.append(WriteRecord(key, version, value, bool(flags & COMMITTED), bool(flags & TOMBSTONE)))
    else:
        if offset != len(data):
            raise WireError("trailing bytes after a header-only chain frame")
        if kind == "c":
            raw = header.get("commits")
            if not isinstance(raw, list):
                raise WireError("commit frame needs a commits list")
            for entry in raw:
                if not (isinstance(entry, list) and len(entry) == 2 and is_int(entry[1]) and entry[1] > 0):
                    raise WireError("commit entries must be [key, positive version]")
                commits.append((_check_key(entry[0], limits, None), entry[1]))
    return ChainFrame(kind, sender, epoch, seq, tuple(writes), tuple(commits))
