"""Every message zcraq processes exchange, as typed objects: one class per request, per reply
shape and per chain frame, named as PROTOCOL.md names them.

The cores receive and return these objects and never see bytes; the wire codec (zcraq/wire.py)
turns bytes into them and back, and is the only place that knows the layout. They are frozen
msgspec Structs: a request class's tag is its ``type`` on the wire, and its field types carry the
protocol's validation rules (strict integers, string lengths, ranges), so decoding and validating
a header is one pass.

Two things are not decided by the types alone and are checked by the codec against the receiving
process's configured ``Limits``: key and value sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from zcraq.topology import Epoch, Member, Topology

# Integers travel as JSON numbers; anything outside 64 bits is rejected, as a JSON parser that
# reads such numbers as floats would. msgspec bounds only fit int64, so the codec checks the upper
# bound (U64_MAX) itself.
U64_MAX = 2**64 - 1
U64 = Annotated[int, msgspec.Meta(ge=0)]
Int64Range = Annotated[int, msgspec.Meta(ge=-(2**63))]
MAX_ID_CHARS = 128
MAX_NODE_ID_CHARS = 64
RequestId = Int64Range | Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)] | None
NodeId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NODE_ID_CHARS)]
Key = Annotated[str, msgspec.Meta(min_length=1)]
Version = Annotated[int, msgspec.Meta(ge=1)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
ReadMode = Literal["strong", "eventual", "bounded"]
MAX_STALENESS_MS = 3_600_000  # a bounded read's limit, at most (an hour)
DEFAULT_STALENESS_MS = 1000
StalenessMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_STALENESS_MS)]
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
MAX_BATCH_KEYS = 1000  # keys per read_many, write_many or delete_many
Keys = Annotated[list[Key], msgspec.Meta(min_length=1, max_length=MAX_BATCH_KEYS)]

# Version of the node <-> coordinator <-> node protocol. A node sends it in every join and
# heartbeat and the coordinator refuses a different one: processes of different versions must
# never share a chain (also not after the coordinator alone was restarted on another release).
PROTOCOL_VERSION = 2  # 2: members carry their CURVE key; authorization errors

# Chain record flags (PROTOCOL.md §10.2), also used by catch-up items.
COMMITTED = 1
TOMBSTONE = 2
Flags = Annotated[int, msgspec.Meta(ge=0, le=3)]


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest key and value a process accepts (its config's ``[limits]``). The coordinator
    tells clients its limits with the topology, so they refuse an oversized request themselves."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20

    @property
    def max_batch_value_bytes(self) -> int:
        """The values of one write_many together: 16 MiB, or one value when values are larger."""
        return max(16 << 20, self.max_value_bytes)


MAX_PARTITION = 4095  # partitions are numbered 0..MAX_PARTITION (zcraq/partitioning.py)
PartitionNo = Annotated[int, msgspec.Meta(ge=0, le=MAX_PARTITION)]
MAX_ZONE_CHARS = 64
Zone = Annotated[str, msgspec.Meta(max_length=MAX_ZONE_CHARS)]


class _Request(msgspec.Struct, frozen=True, tag_field="type", kw_only=True):
    """A request: ``type`` is the class's tag; ``id`` is copied into the reply. ``partition``:
    the partition it is for (PROTOCOL.md §3.1); every cluster so far has one, partition 0."""

    partition: PartitionNo | UnsetType = UNSET


# ---------------------------------------------------------------------------------------------
# Requests a node's service endpoint accepts


class Read(_Request, frozen=True, tag="read"):
    """``max_staleness_ms``: the limit of a ``bounded`` read (ignored by the other modes)."""

    key: Key
    id: RequestId = None
    mode: ReadMode = "strong"
    max_staleness_ms: StalenessMs | UnsetType = UNSET  # bounded: DEFAULT_STALENESS_MS when unset


class Write(_Request, frozen=True, tag="write"):
    """The value travels in its own frame; it is never part of the JSON header. ``if_version``:
    write only if the key's current version is that (0: only if the key has no value)."""

    key: Key
    value: bytes
    id: RequestId = None
    if_version: U64 | UnsetType = UNSET


class Delete(_Request, frozen=True, tag="delete"):
    key: Key
    id: RequestId = None
    if_version: U64 | UnsetType = UNSET


class ReadMany(_Request, frozen=True, tag="read_many"):
    """Many reads in one request: each key is read as by ``Read``, and answered on its own."""

    keys: Keys
    id: RequestId = None
    mode: ReadMode = "strong"
    max_staleness_ms: StalenessMs | UnsetType = UNSET  # bounded: DEFAULT_STALENESS_MS when unset


class WriteMany(_Request, frozen=True, tag="write_many"):
    """Many writes in one request: ``values[i]`` is written under ``keys[i]``, each as by ``Write``.
    The values travel in frames of their own, one per key, after the header."""

    keys: Keys
    values: tuple[bytes, ...]
    id: RequestId = None


class DeleteMany(_Request, frozen=True, tag="delete_many"):
    keys: Keys
    id: RequestId = None


MAX_SCAN_KEYS = 1000  # keys a scan request lists at most


class Scan(_Request, frozen=True, tag="scan"):
    """A page of the keys from ``start`` (inclusive) to ``end`` (exclusive) that begin with
    ``prefix``, after the key ``after`` (a previous page's ``cursor``), each read as by ``Read``."""

    start: str = ""
    end: str | None = None
    prefix: str = ""
    after: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SCAN_KEYS)] = 100
    id: RequestId = None
    mode: ReadMode = "strong"
    max_staleness_ms: StalenessMs | UnsetType = UNSET


MAX_WATCH_ITEMS = 1000  # changes or keys one watch or watch_state reply lists at most
MAX_WATCH_WAIT_MS = 60_000
LogToken = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]


class Watch(_Request, frozen=True, tag="watch"):
    """The changes of ``key`` (or of the keys beginning with ``prefix``) that committed at this node
    after position ``after`` of its change log ``log``; held up to ``wait_ms`` until there is one."""

    log: LogToken
    after: U64
    key: Key | None = None
    prefix: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_WATCH_ITEMS)] = 100
    wait_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_WATCH_WAIT_MS)] = 0
    id: RequestId = None


class WatchState(_Request, frozen=True, tag="watch_state"):
    """A page of this node's committed versions of ``key`` (or of the keys beginning with
    ``prefix``, after the key ``after``), with the change log position they hold at."""

    key: Key | None = None
    prefix: str | None = None
    after: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_WATCH_ITEMS)] = 100
    values: bool = True
    id: RequestId = None


class VersionQuery(_Request, frozen=True, tag="version"):
    """Which version of ``key`` is committed? Asked of the tail in the asker's ``epoch``."""

    key: Key
    epoch: Epoch
    id: RequestId = None


class CatchupRequest(_Request, frozen=True, tag="catchup"):
    """A page of committed items after the key ``after``, in the asker's ``epoch``."""

    limit: PageLimit
    epoch: Epoch
    after: str | None = None
    id: RequestId = None


class StatusRequest(_Request, frozen=True, tag="status"):
    id: RequestId = None


class Confirm(_Request, frozen=True, tag="confirm"):
    """A peer asks: are you still in my epoch? Answering yes binds the responder (its fence)."""

    node_id: NodeId
    epoch: Epoch
    id: RequestId = None


class ConfirmMany(_Request, frozen=True, tag="confirm_many"):
    """A peer of a partitioned cluster asks ``confirm`` for many partitions at once: ``epochs``
    holds ``[partition, epoch]`` pairs, each answered exactly as a ``confirm`` naming that partition."""

    node_id: NodeId
    epochs: Annotated[list[tuple[PartitionNo, Epoch]], msgspec.Meta(min_length=1, max_length=MAX_PARTITION + 1)]
    id: RequestId = None


# ---------------------------------------------------------------------------------------------
# Requests the coordinator accepts (besides status, write and delete)


class TopologyRequest(_Request, frozen=True, tag="topology"):
    id: RequestId = None


class Join(_Request, frozen=True, tag="join"):
    """``node`` stays a plain object here: the coordinator refuses another protocol version before
    it judges the node's fields (PROTOCOL.md §9.4), so their shape is its check, not the codec's."""

    node: dict[str, Any]
    protocol: Int64Range
    id: RequestId = None
    zone: Zone | UnsetType = UNSET  # the node's failure zone (placement spreads replicas over zones)


class Heartbeat(_Request, frozen=True, tag="heartbeat"):
    node_id: NodeId
    epoch: Epoch
    protocol: Int64Range
    id: RequestId = None


class CaughtUp(_Request, frozen=True, tag="caught_up"):
    node_id: NodeId
    epoch: Epoch
    id: RequestId = None


class Leave(_Request, frozen=True, tag="leave"):
    node_id: NodeId
    id: RequestId = None


class Drain(_Request, frozen=True, tag="drain"):
    """An administrator marks a node of a partitioned cluster draining (placement moves every
    replica off it), or with ``draining`` false, serving again."""

    node_id: NodeId
    draining: bool = True
    id: RequestId = None


def request_type(request: Request) -> str:
    """A request's ``type`` on the wire."""
    return type(request).__struct_config__.tag  # type: ignore[return-value]


NodeRequest = (Read | Write | Delete | ReadMany | WriteMany | DeleteMany | Scan | Watch | WatchState | VersionQuery
               | CatchupRequest | StatusRequest | Confirm | ConfirmMany)
CoordinatorRequest = TopologyRequest | StatusRequest | Write | Delete | Join | Heartbeat | CaughtUp | Leave | Drain
Request = NodeRequest | CoordinatorRequest

# ---------------------------------------------------------------------------------------------
# Replies


class Ok(msgspec.Struct, frozen=True, tag_field="type", tag="ok"):
    """A successful reply. Which fields are set depends on the request (PROTOCOL.md §8, §9); the
    others stay UNSET and are left out on the wire. Values (a read's, a catch-up page's) travel
    in frames after the header, beside this object."""

    id: RequestId = None
    version: U64 | UnsetType = UNSET  # read, write, delete, version
    existed: bool | list[bool | None] | UnsetType = UNSET  # delete: the key had a value just before this
    # deletion; delete_many: that for each key (null for a key whose deletion failed)
    results: list[U64 | str] | UnsetType = UNSET  # read_many, write_many, delete_many, scan: per key, a version or an error code
    # (confirm_many: per pair, "ok" or an error code)
    epochs: list[Epoch] | UnsetType = UNSET  # confirm_many: per pair, the responder's epoch of that partition
    keys: list[str] | UnsetType = UNSET  # scan: the keys of this page that have a value (or an error)
    sizes: list[U64] | UnsetType = UNSET  # read_many: each key's value length in the one value frame
    items: list[tuple[Key, Version, Flags]] | UnsetType = UNSET  # catchup, watch, watch_state: [key, version, flags]
    cursor: str | None | UnsetType = UNSET  # catchup, scan, watch_state: null on the last page
    log: str | UnsetType = UNSET  # watch, watch_state: the change log's token
    seq: U64 | UnsetType = UNSET  # watch: the log position reached; watch_state: the position the page holds at
    first: U64 | UnsetType = UNSET  # watch_state: the oldest log position kept
    progress: Share | UnsetType = UNSET  # catchup: the source's estimate of how far the page reaches
    epoch: Epoch | UnsetType = UNSET  # confirm, heartbeat, caught_up, leave, node status
    lease_ms: U64 | UnsetType = UNSET  # confirm, heartbeat, join, coordinator status
    status: Literal["member", "learner"] | UnsetType = UNSET  # heartbeat
    topology: Topology | UnsetType = UNSET  # topology, join, coordinator status
    limits: Limits | UnsetType = UNSET  # topology: the coordinator's [limits]
    publish: str | UnsetType = UNSET  # join, heartbeat: the coordinator's publisher
    node: str | UnsetType = UNSET  # node status: its id
    role: str | UnsetType = UNSET  # node status
    serving: bool | UnsetType = UNSET  # node status
    caught_up: bool | UnsetType = UNSET  # node status
    sent: U64 | UnsetType = UNSET  # node status
    lease_left_ms: U64 | UnsetType = UNSET  # node status: the coordinator's lease, what is left of it
    counters: dict[str, int] | UnsetType = UNSET  # node and coordinator status
    # A partitioned cluster (PROTOCOL.md §13): the partition table (topology, coordinator status);
    # its version (a node's join and heartbeat naming no partition); each replica a node hosts (status)
    table: dict[str, Any] | UnsetType = UNSET
    table_version: U64 | UnsetType = UNSET
    replicas: list[dict[str, Any]] | UnsetType = UNSET


class Error(msgspec.Struct, frozen=True, tag_field="type", tag="error"):
    """A refusal: ``code`` is for programs (PROTOCOL.md §4), ``message`` for people."""

    id: RequestId
    code: str
    message: str
    epoch: Epoch | UnsetType = UNSET  # not_tail, wrong_epoch: the responder's epoch
    head: str | None | UnsetType = UNSET  # not_head: the head's service endpoint, if known
    version: U64 | UnsetType = UNSET  # condition_failed: the key's current version (0: no value)
    leader: str | None | UnsetType = UNSET  # not_leader: the leading coordinator's request endpoint, if known


Reply = Ok | Error

# ---------------------------------------------------------------------------------------------
# Chain frames (PUSH/PULL between neighbours; PROTOCOL.md §10)


class WriteRecord(msgspec.Struct, frozen=True):
    key: str
    version: int
    value: bytes
    committed: bool = False
    tombstone: bool = False


class WriteFrame(msgspec.Struct, frozen=True):
    """Write records, down the chain. Frame 0 of a link is its sync frame."""

    sender: str
    epoch: int
    seq: int
    records: tuple[WriteRecord, ...] = ()
    partition: int = 0


class CommitFrame(msgspec.Struct, frozen=True):
    """Commits, up the chain: (key, version) means every version up to it is committed."""

    sender: str
    epoch: int
    seq: int
    commits: tuple[tuple[str, int], ...] = ()
    partition: int = 0


class ResyncFrame(msgspec.Struct, frozen=True):
    """Up the chain: start the link afresh with a sync frame."""

    sender: str
    epoch: int
    seq: int
    partition: int = 0


ChainFrame = WriteFrame | CommitFrame | ResyncFrame
AckFrame = CommitFrame | ResyncFrame  # what arrives on the ack-in endpoint

# ---------------------------------------------------------------------------------------------
# What arrived but could not be decoded


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that broke the protocol. The core counts it and, for a request, answers ``code``
    with ``message`` under ``id`` (None until the id itself was found valid)."""

    code: str
    message: str
    id: Any = None


__all__ = [
    "PROTOCOL_VERSION", "COMMITTED", "TOMBSTONE", "U64_MAX", "MAX_ID_CHARS", "MAX_NODE_ID_CHARS", "MAX_PARTITION",
    "MAX_BATCH_KEYS", "MAX_SCAN_KEYS", "MAX_WATCH_ITEMS", "MAX_WATCH_WAIT_MS", "Read", "Write", "Delete", "ReadMany",
    "WriteMany", "DeleteMany", "Scan", "Watch", "WatchState", "VersionQuery",
    "CatchupRequest", "StatusRequest", "Confirm",
    "TopologyRequest", "Join", "Heartbeat", "CaughtUp", "Leave", "Drain",
    "NodeRequest", "CoordinatorRequest", "Request", "request_type", "Ok", "Error", "Reply",
    "WriteRecord", "WriteFrame", "CommitFrame", "ResyncFrame", "ChainFrame", "AckFrame", "Malformed",
    "Member", "Topology", "UNSET",
]
