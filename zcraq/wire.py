"""Bytes on the wire: the only place that turns frames into typed messages (zcraq/messages.py) and
back. PROTOCOL.md is the prose version of this module.

Request/reply (client <-> node, client <-> coordinator, node <-> node, node <-> coordinator):
a message is one JSON header frame, optionally followed by raw value frames. Values are never
inside JSON, so any bytes travel untouched.

Chain frames (PUSH/PULL between neighbours) carry many records in one ZeroMQ frame, because
per-message multipart costs more than the records themselves; a chain message is one or more such
frames (a partitioned node sends one message per peer endpoint and loop turn):

    frame   := u32 header_len, header (JSON object: t, from, epoch, seq, and for "c" commits)
    t = "w" := header, then records until the end:
               u32 meta_len, meta (JSON [key, version, flags]), u32 value_len, value
    t = "c" := header only; header["commits"] = [[key, version], ...]
    t = "r" := header only (resync: "resend me everything you have not seen committed")

Decoding validates everything and raises ``WireError`` with a message fit to send back; the
``read_*`` functions return a ``Malformed`` instead, which is how a core learns of bad input. A
request header is decoded in one msgspec pass; when that fails, the checks of PROTOCOL.md §3.2 run
one by one (``_explain_request``) so the error names the first rule broken, in the documented
order. Nothing here touches sockets or stores.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any, cast

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from zcraq.messages import Limits
from zcraq.messages import (COMMITTED, MAX_BATCH_KEYS, MAX_ID_CHARS, MAX_NODE_ID_CHARS, MAX_PARTITION, MAX_SCAN_KEYS,
                            MAX_STALENESS_MS, MAX_ZONE_CHARS, PartitionNo, TOMBSTONE,
                            CatchupRequest, CaughtUp, CoordinatorRequest, NodeRequest, Drain,
                            ChainFrame, CommitFrame, Confirm, ConfirmMany, Delete, DeleteMany, Flags, Heartbeat, Join,
                            Key, Keys,
                            Leave, Malformed, NodeId, Read, ReadMany, Reply, Request, RequestId, request_type,
                            MAX_WATCH_ITEMS, MAX_WATCH_WAIT_MS, Watch, WatchState,
                            ResyncFrame, Scan, StatusRequest, TopologyRequest, U64, U64_MAX, Version, VersionQuery,
                            Write, WriteFrame, WriteMany, WriteRecord)
from zcraq.topology import Epoch, Topology

MAX_HEADER_BYTES = 64 * 1024
READ_MODES = ("strong", "eventual", "bounded")

_U32 = struct.Struct(">I")
_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode


class WireError(Exception):
    """A message that breaks the protocol. ``code`` is the wire error code for the reply."""

    def __init__(self, message: str, code: str = "bad_request", request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id

    def malformed(self) -> Malformed:
        return Malformed(self.code, str(self), self.request_id)


# ---------------------------------------------------------------------------------------------
# Requests


class _WriteHeader(msgspec.Struct, frozen=True, tag_field="type", tag="write"):
    """A write's JSON header; its value is the next frame."""

    key: Key
    id: RequestId = None
    if_version: U64 | UnsetType = UNSET
    partition: PartitionNo | UnsetType = UNSET


class _WriteManyHeader(msgspec.Struct, frozen=True, tag_field="type", tag="write_many"):
    """A write_many's JSON header. The values follow in one frame, one after the other; ``sizes``
    says how long each is. (One frame, not one per value: a request stays 1 or 2 frames, and the
    request socket's frame cap bounds the whole batch.)"""

    keys: Keys
    sizes: list[Annotated[int, msgspec.Meta(ge=0)]]
    id: RequestId = None
    partition: PartitionNo | UnsetType = UNSET


_HEADER_TYPES: dict[str, type[Any]] = {
    "read": Read, "write": _WriteHeader, "delete": Delete, "read_many": ReadMany, "write_many": _WriteManyHeader,
    "delete_many": DeleteMany, "scan": Scan, "watch": Watch, "watch_state": WatchState, "version": VersionQuery,
    "catchup": CatchupRequest,
    "status": StatusRequest, "confirm": Confirm, "confirm_many": ConfirmMany, "topology": TopologyRequest, "join": Join,
    "heartbeat": Heartbeat, "caught_up": CaughtUp, "leave": Leave, "drain": Drain,
}
NODE_REQUESTS = frozenset({"read", "write", "delete", "read_many", "write_many", "delete_many", "scan", "watch",
                           "watch_state", "version", "catchup", "status", "confirm", "confirm_many"})
COORDINATOR_REQUESTS = frozenset({"topology", "status", "write", "delete", "join", "heartbeat", "caught_up",
                                  "leave", "drain"})
_KEYED = frozenset({"read", "write", "delete", "version"})
_BATCHES = frozenset({"read_many", "write_many", "delete_many"})
_BATCH_HEADERS = (ReadMany, _WriteManyHeader, DeleteMany)


def _request_decoder(accepted: frozenset[str]) -> msgspec.json.Decoder[Any]:
    union = tuple(_HEADER_TYPES[kind] for kind in sorted(accepted))
    return msgspec.json.Decoder(union[0] if len(union) == 1 else _union(union))


def _union(types: tuple[type[Any], ...]) -> Any:
    result: Any = types[0]
    for kind in types[1:]:
        result = result | kind
    return result


_DECODERS = {NODE_REQUESTS: _request_decoder(NODE_REQUESTS),
             COORDINATOR_REQUESTS: _request_decoder(COORDINATOR_REQUESTS)}


def decode_request(frames: list[bytes], limits: Limits, accepted: frozenset[str]) -> Request:
    """A validated request from its body frames (envelope already removed); WireError if bad."""
    if not frames or len(frames) > 2 or len(frames[0]) > MAX_HEADER_BYTES:
        _explain_request(frames, limits, accepted)
    decoder = _DECODERS.get(accepted) or _request_decoder(accepted)
    try:
        header = decoder.decode(frames[0])
    except msgspec.DecodeError as error:
        _explain_request(frames, limits, accepted)
        raise WireError(f"malformed header: {error}") from None  # the rules above missed it
    except RecursionError:
        raise WireError("header nests too deeply") from None
    if _out_of_range(header):
        _explain_request(frames, limits, accepted)
    key = getattr(header, "key", None)
    if key is not None and len(key) > limits.max_key_bytes // 4 and len(key.encode()) > limits.max_key_bytes:
        raise WireError(f"key is longer than {limits.max_key_bytes} bytes", "too_large", header.id)
    if type(header) is _WriteHeader:
        if len(frames) != 2:
            raise WireError("write needs a value frame after the header", request_id=header.id)
        if len(frames[1]) > limits.max_value_bytes:
            raise WireError(f"value is larger than {limits.max_value_bytes} bytes", "too_large", header.id)
        return Write(header.key, bytes(frames[1]), header.id, header.if_version, partition=header.partition)
    if type(header) in _BATCH_HEADERS:
        return _batch(header, frames, limits)
    if type(header) is Scan:
        _check_scan_bounds(header, limits)
    if len(frames) != 1:
        raise WireError(f"{request_type(header)} takes a single header frame", request_id=header.id)
    if type(header) is Watch or type(header) is WatchState:
        _check_watch(header, limits)
    return header


def _batch(header: Any, frames: list[bytes], limits: Limits) -> Request:
    """A validated read_many, write_many or delete_many (its header already decoded)."""
    max_key = limits.max_key_bytes
    for key in header.keys:
        if len(key) > max_key // 4 and len(key.encode()) > max_key:
            raise WireError(f"a key is longer than {max_key} bytes", "too_large", header.id)
    if type(header) is not _WriteManyHeader:
        if len(frames) != 1:
            raise WireError(f"{request_type(header)} takes a single header frame", request_id=header.id)
        return cast(Request, header)
    if len(frames) != 2:
        raise WireError("write_many needs a value frame after the header", request_id=header.id)
    _check_sizes(header.keys, header.sizes, len(frames[1]), limits, header.id)
    return WriteMany(header.keys, split_values(frames[1], header.sizes), header.id, partition=header.partition)


def _check_scan_bounds(header: Scan, limits: Limits) -> None:
    """A scan's start, end, prefix and after are keys, or parts of one: no longer than a key."""
    longest = limits.max_key_bytes
    for bound in (header.start, header.end, header.prefix, header.after):
        if bound is not None and len(bound) > longest // 4 and len(bound.encode()) > longest:
            raise WireError(f"a scan bound is longer than {longest} bytes", "too_large", header.id)


def _check_sizes(keys: list[Any], sizes: list[int], total: int, limits: Limits, request_id: Any) -> None:
    """A write_many's ``sizes`` against its keys and its value frame (``total`` bytes)."""
    if len(sizes) != len(keys):
        raise WireError(f"write_many needs one size per key: {len(keys)} keys, {len(sizes)} sizes",
                        request_id=request_id)
    if sum(sizes) != total:
        raise WireError(f"the sizes add up to {sum(sizes)} bytes, the value frame has {total}", request_id=request_id)
    if any(size > limits.max_value_bytes for size in sizes):
        raise WireError(f"a value is larger than {limits.max_value_bytes} bytes", "too_large", request_id)
    if total > limits.max_batch_value_bytes:
        raise WireError(f"the values are larger than {limits.max_batch_value_bytes} bytes together", "too_large",
                        request_id)


def split_values(frame: bytes, sizes: list[int]) -> tuple[bytes, ...]:
    """The values that a batch's one value frame carries one after the other, ``sizes`` long."""
    data = memoryview(frame)
    values = []
    offset = 0
    for size in sizes:
        values.append(bytes(data[offset:offset + size]))
        offset += size
    return tuple(values)


def _check_watch(header: Watch | WatchState, limits: Limits) -> None:
    """A watch names a key or a prefix, not both; a prefix or a cursor is no longer than a key."""
    if (header.key is None) == (header.prefix is None):
        raise WireError(f"{request_type(header)} needs a key or a prefix (one of them)", request_id=header.id)
    longest = limits.max_key_bytes
    for bound in (header.prefix, getattr(header, "after", None)):
        if type(bound) is str and len(bound) > longest // 4 and len(bound.encode()) > longest:
            raise WireError(f"a watch key, prefix or cursor is longer than {longest} bytes", "too_large", header.id)


def _out_of_range(header: Any) -> bool:
    """An integer field beyond 64 bits (msgspec bounds stop at int64)."""
    request_id = header.id
    if type(request_id) is int and request_id > U64_MAX:
        return True
    if type(header) in (_WriteHeader, Delete):
        return type(header.if_version) is int and header.if_version > U64_MAX
    if type(header) is Watch:
        return header.after > U64_MAX
    if type(header) in (Read, StatusRequest, TopologyRequest, Leave, Drain, *_BATCH_HEADERS):
        return False
    if type(header) is ConfirmMany:
        return any(epoch > U64_MAX for _partition, epoch in header.epochs)
    return getattr(header, "epoch", 0) > U64_MAX or getattr(header, "protocol", 0) > U64_MAX


def read_request(frames: list[bytes], limits: Limits, accepted: frozenset[str]) -> Request | Malformed:
    try:
        return decode_request(frames, limits, accepted)
    except WireError as error:
        return error.malformed()


def read_node_request(frames: list[bytes], limits: Limits) -> NodeRequest | Malformed:
    """What a node's service endpoint received: one of its requests, or why not."""
    return cast("NodeRequest | Malformed", read_request(frames, limits, NODE_REQUESTS))


def read_coordinator_request(frames: list[bytes], limits: Limits) -> CoordinatorRequest | Malformed:
    """What the coordinator's request endpoint received: one of its requests, or why not."""
    return cast("CoordinatorRequest | Malformed", read_request(frames, limits, COORDINATOR_REQUESTS))


# type -> {field: (python types, required)}, for the one-rule-at-a-time explanation only
_INT = (int,)
_STR = (str,)
_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {  # each takes "partition" too (below)
    "read": {"mode": (_STR, False), "max_staleness_ms": (_INT, False)},
    "write": {"if_version": (_INT, False)},
    "delete": {"if_version": (_INT, False)},
    "read_many": {"mode": (_STR, False), "max_staleness_ms": (_INT, False)},
    "write_many": {"sizes": ((list,), True)},
    "delete_many": {},
    "scan": {"start": (_STR, False), "end": (_STR + (type(None),), False), "prefix": (_STR, False),
             "after": (_STR + (type(None),), False), "limit": (_INT, False), "mode": (_STR, False),
             "max_staleness_ms": (_INT, False)},
    "watch": {"key": (_STR + (type(None),), False), "prefix": (_STR + (type(None),), False), "log": (_STR, True),
              "after": (_INT, True), "limit": (_INT, False), "wait_ms": (_INT, False)},
    "watch_state": {"key": (_STR + (type(None),), False), "prefix": (_STR + (type(None),), False),
                    "after": (_STR + (type(None),), False), "limit": (_INT, False), "values": ((bool,), False)},
    "version": {"epoch": (_INT, True)},
    "catchup": {"after": (_STR + (type(None),), False), "limit": (_INT, True), "epoch": (_INT, True)},
    "status": {},
    "topology": {},
    "join": {"node": ((dict,), True), "protocol": (_INT, True), "zone": (_STR, False)},
    "heartbeat": {"node_id": (_STR, True), "epoch": (_INT, True), "protocol": (_INT, True)},
    "caught_up": {"node_id": (_STR, True), "epoch": (_INT, True)},
    "leave": {"node_id": (_STR, True)},
    "drain": {"node_id": (_STR, True), "draining": ((bool,), False)},
    "confirm": {"node_id": (_STR, True), "epoch": (_INT, True)},
    "confirm_many": {"node_id": (_STR, True), "epochs": ((list,), True)},
}
for _fields in _FIELDS.values():
    _fields["partition"] = (_INT, False)
_I64_MIN = -(2**63)


def _is_wire_int(value: Any) -> bool:
    """An integer a 64-bit JSON parser keeps as an integer (not a bool, not out of range)."""
    return isinstance(value, int) and not isinstance(value, bool) and _I64_MIN <= value <= U64_MAX


def _explain_request(frames: list[bytes], limits: Limits, accepted: frozenset[str]) -> dict[str, Any]:
    """Raise the WireError for the first rule of PROTOCOL.md §3.2 that ``frames`` break; return the
    parsed header if they break none."""
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
            _is_wire_int(request_id) or (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)):
        raise WireError(f"id must be an integer or a string of at most {MAX_ID_CHARS} characters")
    kind = header.get("type")
    if not isinstance(kind, str) or kind not in accepted:
        raise WireError(f"unknown request type {kind!r}; this endpoint accepts {', '.join(sorted(accepted))}",
                        request_id=request_id)
    if kind in _KEYED:
        key = header.get("key")
        if not isinstance(key, str) or not key:
            raise WireError("key must be a non-empty string", request_id=request_id)
        if len(key.encode()) > limits.max_key_bytes:
            raise WireError(f"key is longer than {limits.max_key_bytes} bytes", "too_large", request_id)
    if kind in ("watch", "watch_state"):
        key = header.get("key")
        if isinstance(key, str) and len(key.encode()) > limits.max_key_bytes:
            raise WireError(f"key is longer than {limits.max_key_bytes} bytes", "too_large", request_id)
    if kind in _BATCHES:
        _explain_keys(header.get("keys"), limits, request_id)
    if kind == "scan":
        bounds = [header.get(name) for name in ("start", "end", "prefix", "after")]
        if any(isinstance(bound, str) and len(bound.encode()) > limits.max_key_bytes for bound in bounds):
            raise WireError(f"a scan bound is longer than {limits.max_key_bytes} bytes", "too_large", request_id)
    if kind in ("write", "write_many"):
        if len(frames) != 2:
            raise WireError(f"{kind} needs a value frame after the header", request_id=request_id)
        if len(frames[1]) > limits.max_value_bytes:
            raise WireError(f"value is larger than {limits.max_value_bytes} bytes", "too_large", request_id)
    elif len(frames) != 1:
        raise WireError(f"{kind} takes a single header frame", request_id=request_id)
    for name, (types, required) in _FIELDS[kind].items():
        if name not in header:
            if required:
                raise WireError(f"{kind} needs field {name!r}", request_id=request_id)
            continue
        item = header[name]
        if not isinstance(item, types) or (isinstance(item, bool) and bool not in types) or (
                isinstance(item, int) and not isinstance(item, bool) and not _is_wire_int(item)):
            raise WireError(f"field {name!r} has the wrong type", request_id=request_id)
    fields = {name: header[name] for name in _FIELDS[kind] if name in header}  # others are ignored
    if "mode" in fields and fields["mode"] not in READ_MODES:
        raise WireError(f"mode must be one of {', '.join(READ_MODES)}", request_id=request_id)
    if "node_id" in fields and not 0 < len(fields["node_id"]) <= MAX_NODE_ID_CHARS:
        raise WireError(f"node_id must be 1 to {MAX_NODE_ID_CHARS} characters", request_id=request_id)
    if "epoch" in fields and fields["epoch"] < 0:
        raise WireError("epoch must be non-negative", request_id=request_id)
    if "max_staleness_ms" in fields and not 0 <= fields["max_staleness_ms"] <= MAX_STALENESS_MS:
        raise WireError(f"max_staleness_ms must be from 0 to {MAX_STALENESS_MS}", request_id=request_id)
    if "if_version" in fields and fields["if_version"] < 0:
        raise WireError("if_version must be non-negative", request_id=request_id)
    if "partition" in fields and not 0 <= fields["partition"] <= MAX_PARTITION:
        raise WireError(f"partition must be from 0 to {MAX_PARTITION}", request_id=request_id)
    if "zone" in fields and len(fields["zone"]) > MAX_ZONE_CHARS:
        raise WireError(f"zone must be at most {MAX_ZONE_CHARS} characters", request_id=request_id)
    if kind == "catchup" and not 0 < fields["limit"] <= 100_000:
        raise WireError("limit must be from 1 to 100000", request_id=request_id)
    if kind == "scan" and not 0 < fields.get("limit", 1) <= MAX_SCAN_KEYS:
        raise WireError(f"limit must be from 1 to {MAX_SCAN_KEYS}", request_id=request_id)
    if kind in ("watch", "watch_state"):
        _explain_watch(kind, fields, limits, request_id)
    if kind == "confirm_many":
        _explain_epochs(fields["epochs"], request_id)
    if kind == "write_many":
        sizes = fields["sizes"]
        if not all(_is_wire_int(size) and size >= 0 for size in sizes):
            raise WireError("sizes must be non-negative integers", request_id=request_id)
        _check_sizes(header["keys"], sizes, len(frames[1]), limits, request_id)
    return header


def _explain_watch(kind: str, fields: dict[str, Any], limits: Limits, request_id: Any) -> None:
    key, prefix = fields.get("key"), fields.get("prefix")
    if (key is None) == (prefix is None):
        raise WireError(f"{kind} needs a key or a prefix (one of them)", request_id=request_id)
    if key == "":
        raise WireError("key must be a non-empty string", request_id=request_id)
    for bound in (key, prefix, fields.get("after")):
        if isinstance(bound, str) and len(bound.encode()) > limits.max_key_bytes:
            raise WireError(f"a watch key, prefix or cursor is longer than {limits.max_key_bytes} bytes", "too_large",
                            request_id)
    if not 0 < fields.get("limit", 1) <= MAX_WATCH_ITEMS:
        raise WireError(f"limit must be from 1 to {MAX_WATCH_ITEMS}", request_id=request_id)
    if not 0 <= fields.get("wait_ms", 0) <= MAX_WATCH_WAIT_MS:
        raise WireError(f"wait_ms must be from 0 to {MAX_WATCH_WAIT_MS}", request_id=request_id)
    if kind == "watch" and fields["after"] < 0:
        raise WireError("after must be non-negative", request_id=request_id)
    if "log" in fields and not 0 < len(fields["log"]) <= MAX_ID_CHARS:
        raise WireError(f"log must be 1 to {MAX_ID_CHARS} characters", request_id=request_id)


def _explain_epochs(epochs: list[Any], request_id: Any) -> None:
    if not 0 < len(epochs) <= MAX_PARTITION + 1:
        raise WireError(f"epochs must be an array of 1 to {MAX_PARTITION + 1} [partition, epoch] pairs",
                        request_id=request_id)
    for pair in epochs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_wire_int(n) for n in pair)
                and 0 <= pair[0] <= MAX_PARTITION and pair[1] >= 0):
            raise WireError(f"every item of epochs must be [partition, epoch]: a partition from 0 to "
                            f"{MAX_PARTITION} and an epoch >= 0", request_id=request_id)


def _explain_keys(keys: Any, limits: Limits, request_id: Any) -> None:
    if not isinstance(keys, list) or not 0 < len(keys) <= MAX_BATCH_KEYS:
        raise WireError(f"keys must be an array of 1 to {MAX_BATCH_KEYS} keys", request_id=request_id)
    if not all(isinstance(key, str) and key for key in keys):
        raise WireError("every key must be a non-empty string", request_id=request_id)
    if any(len(key.encode()) > limits.max_key_bytes for key in keys):
        raise WireError(f"a key is longer than {limits.max_key_bytes} bytes", "too_large", request_id)


def encode_request(request: Request) -> list[bytes]:
    if type(request) is Write:
        return [encode_json(_WriteHeader(request.key, request.id, request.if_version, request.partition)),
                request.value]
    if type(request) is WriteMany:
        sizes = [len(value) for value in request.values]
        return [encode_json(_WriteManyHeader(request.keys, sizes, request.id, request.partition)),
                b"".join(request.values)]
    return [encode_json(request)]


# ---------------------------------------------------------------------------------------------
# Replies


class _ReplyEnvelope(msgspec.Struct):
    """Just enough of a reply to match it to its request when the rest is broken."""

    id: RequestId = None


_reply_decoder = msgspec.json.Decoder(Reply)
_envelope_decoder = msgspec.json.Decoder(_ReplyEnvelope)


def encode_reply(reply: Reply, values: tuple[bytes, ...] | list[bytes] = ()) -> list[bytes]:
    return [encode_json(reply), *values]


def decode_reply(frames: list[bytes]) -> tuple[Reply, list[bytes]]:
    """A reply header and the value frames after it; WireError (with the request id when it can be
    found) if the header is malformed."""
    if not frames:
        raise WireError("empty reply")
    try:
        return _reply_decoder.decode(frames[0]), frames[1:]
    except msgspec.DecodeError as error:
        try:
            request_id = _envelope_decoder.decode(frames[0]).id
        except msgspec.DecodeError:
            request_id = None
        raise WireError(f"malformed reply: {error}", request_id=request_id) from None


def read_reply(frames: list[bytes]) -> tuple[Reply | Malformed, list[bytes]]:
    try:
        return decode_reply(frames)
    except WireError as error:
        return error.malformed(), []


# ---------------------------------------------------------------------------------------------
# Topology updates (the publisher's second frame)

_topology_decoder = msgspec.json.Decoder(Topology)


def encode_topology(topology: Topology) -> bytes:
    return encode_json(topology)


def decode_topology(data: bytes) -> Topology:
    try:
        return _topology_decoder.decode(data)
    except msgspec.DecodeError as error:
        raise WireError(f"malformed topology: {error}") from None


# ---------------------------------------------------------------------------------------------
# Chain frames

# A chain message carries 1 to this many chain frames (a partitioned node bundles a loop turn's
# frames for one peer endpoint); the sender splits a longer bundle.
MAX_CHAIN_MESSAGE_FRAMES = 1024


class _WriteFrameHeader(msgspec.Struct, frozen=True, tag_field="t", tag="w", omit_defaults=True):
    sender: NodeId = msgspec.field(name="from")
    epoch: Epoch
    seq: Epoch
    partition: PartitionNo = msgspec.field(default=0, name="p")  # left out when 0


class _CommitFrameHeader(msgspec.Struct, frozen=True, tag_field="t", tag="c", omit_defaults=True):
    sender: NodeId = msgspec.field(name="from")
    epoch: Epoch
    seq: Epoch
    commits: tuple[tuple[Key, Version], ...]
    partition: PartitionNo = msgspec.field(default=0, name="p")


class _ResyncFrameHeader(msgspec.Struct, frozen=True, tag_field="t", tag="r", omit_defaults=True):
    sender: NodeId = msgspec.field(name="from")
    epoch: Epoch
    seq: Epoch
    partition: PartitionNo = msgspec.field(default=0, name="p")


_chain_header_decoder = msgspec.json.Decoder(_WriteFrameHeader | _CommitFrameHeader | _ResyncFrameHeader)
_meta_decoder = msgspec.json.Decoder(tuple[Key, Version, Flags])  # [key, version, flags]


def encode_chain(frame: ChainFrame) -> bytes:
    if type(frame) is WriteFrame:
        head = encode_json(_WriteFrameHeader(frame.sender, frame.epoch, frame.seq, frame.partition))
        parts = [_U32.pack(len(head)), head]
        for record in frame.records:
            flags = (COMMITTED if record.committed else 0) | (TOMBSTONE if record.tombstone else 0)
            meta = encode_json((record.key, record.version, flags))
            parts += [_U32.pack(len(meta)), meta, _U32.pack(len(record.value)), record.value]
        return b"".join(parts)
    if type(frame) is CommitFrame:
        head = encode_json(_CommitFrameHeader(frame.sender, frame.epoch, frame.seq, frame.commits, frame.partition))
    else:
        head = encode_json(_ResyncFrameHeader(frame.sender, frame.epoch, frame.seq, frame.partition))
    return _U32.pack(len(head)) + head


def _take(data: bytes, offset: int, what: str) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise WireError(f"chain frame truncated before {what} length")
    (length,) = _U32.unpack_from(data, offset)
    start = offset + 4
    end = start + length
    if end > len(data):
        raise WireError(f"chain frame truncated inside {what}")
    return data[start:end], end


def decode_chain(data: bytes, limits: Limits) -> ChainFrame:
    head, offset = _take(data, 0, "header")
    try:
        header = _chain_header_decoder.decode(head)
    except msgspec.DecodeError as error:
        raise WireError(f"malformed chain header: {error}") from None
    if header.epoch > U64_MAX or header.seq > U64_MAX:
        raise WireError("chain frame epoch and seq must fit in 64 bits")
    max_key = limits.max_key_bytes
    if type(header) is _WriteFrameHeader:
        records = _records(data, offset, max_key, limits.max_value_bytes)
        return WriteFrame(header.sender, header.epoch, header.seq, records, header.partition)
    if offset != len(data):
        raise WireError("trailing bytes after a header-only chain frame")
    if type(header) is _CommitFrameHeader:
        for key, version in header.commits:
            if version > U64_MAX:
                raise WireError("commit version beyond 64 bits")
            if len(key.encode()) > max_key:
                raise WireError(f"key is longer than {max_key} bytes", "too_large")
        return CommitFrame(header.sender, header.epoch, header.seq, header.commits, header.partition)
    return ResyncFrame(header.sender, header.epoch, header.seq, header.partition)


def _records(data: bytes, offset: int, max_key: int, max_value: int) -> tuple[WriteRecord, ...]:
    """The write records after a ``w`` header; one bad record spoils the frame."""
    records = []
    end = len(data)
    unpack, decode_meta = _U32.unpack_from, _meta_decoder.decode
    while offset < end:
        if offset + 4 > end:
            raise WireError("chain frame truncated before record meta length")
        start = offset + 4
        offset = start + unpack(data, offset)[0]
        if offset + 4 > end:
            raise WireError("chain frame truncated inside record meta")
        try:
            key, version, flags = decode_meta(data[start:offset])
        except msgspec.DecodeError as error:
            raise WireError(f"write record meta must be [key, version, flags 0..3]: {error}") from None
        start = offset + 4
        offset = start + unpack(data, offset)[0]
        if offset > end:
            raise WireError("chain frame truncated inside record value")
        if version > U64_MAX:
            raise WireError("write record version beyond 64 bits")
        if len(key) > max_key // 4 and len(key.encode()) > max_key:  # a char is at most 4 bytes
            raise WireError(f"key is longer than {max_key} bytes", "too_large")
        if offset - start > max_value:
            raise WireError("write record value too large", "too_large")
        records.append(WriteRecord(key, version, data[start:offset], bool(flags & COMMITTED), bool(flags & TOMBSTONE)))
    return tuple(records)


def read_chain(data: bytes, limits: Limits) -> ChainFrame | Malformed:
    try:
        return decode_chain(data, limits)
    except WireError as error:
        return error.malformed()
