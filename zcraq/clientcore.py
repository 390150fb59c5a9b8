"""The client's decisions, without sockets: which node a request goes to, when it is retried, what
an answer or a missing answer means, what is refused before sending. ZClient (zcraq/client.py,
blocking) and AsyncZClient (zcraq/async_client.py, asyncio) both run these, so they behave alike.

A call is a *plan*: a generator that yields steps (``Call``: send a request and wait for its reply
until a deadline; ``Pause``: wait a moment before retrying) and gets each step's outcome sent back
by the client that drives it. A ``Call``'s outcome is the reply, or the ``Timeout`` that stands in
for a missing one; any other failure (a refused handshake, a closed client) is raised by the driver
and ends the plan.

Retries follow what is safe. A read can be retried anywhere. A write is retried only when the node
refused it before doing anything (not the head, not serving) or when it surely never arrived (its
connection never came up); once a write may have been applied, a missing answer raises
``WriteOutcomeUnknown`` instead of writing twice.

In a partitioned cluster (zcraq/clientroutes.py) each key's requests go to its partition's chain
and name that partition; a ``wrong_partition`` refusal is retried like ``not_head``, after the
table is asked for again. A one-chain cluster's requests name no partition, as always.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from itertools import count
from typing import Any, TypeVar

import msgspec
from msgspec import UnsetType

from zcraq import wire
from zcraq.clientroutes import PartitionTable, Route, field_of
from zcraq.endpoints import parse_endpoint
from zcraq.errors import (BadRequest, ConditionFailed, Timeout, TooLarge, Unavailable, WriteOutcomeUnknown, ZcraqError,
                          error_for)
from zcraq.messages import (MAX_STALENESS_MS, U64_MAX, Delete, Error, Limits, Ok, Read, Reply, Request, StatusRequest,
                            TopologyRequest, Write, request_type)
from zcraq.topology import Member, Topology

# Errors after which a write surely did not happen, so sending it again is safe.
# wrong_partition: the node has no replica of the partition (the table we hold is stale); it did nothing.
# not_leader: a standby coordinator forwards nothing.
WRITE_RETRYABLE = {"not_head", "unavailable", "busy", "wrong_partition", "not_leader"}
READ_RETRYABLE = {"unavailable", "not_tail", "wrong_epoch", "timeout", "wrong_partition"}
AVOID_SECONDS = 2.0  # a node that just failed a read is skipped this long (it may be dead)
TOPOLOGY_MAX_AGE = 1.0  # seconds a topology is used before it is asked for again
ROUTINE_REFRESH_WAIT = 0.25  # seconds a call waits for a refresh asked only because of age
PAUSE_SECONDS = 0.05  # between two attempts of one call
RESEND_MARGIN = 0.1  # seconds a refused write's resend must have left before its deadline, at least
COORDINATOR_ATTEMPT = 1.0  # seconds one of several coordinators has to answer before the next is asked

T = TypeVar("T")
R = TypeVar("R", bound=Request)
Answer = tuple[Reply, list[bytes]]  # a reply header and its value frames


@dataclass(frozen=True, slots=True)
class Call:
    """Send ``request`` to ``endpoint`` and wait for its reply until ``deadline`` (monotonic).
    ``connect_first``: hand the request over only once the connection's handshake is done (a
    write queued on a connection still in its handshake could arrive after it was given up).
    ``shared``: a refresh; the answer to the same request already on its way will do."""

    endpoint: str
    request: Request
    deadline: float
    connect_first: bool = False
    shared: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait a little before the next attempt (never past ``deadline``)."""

    deadline: float

    def seconds(self) -> float:
        return max(0.0, min(PAUSE_SECONDS, self.deadline - time.monotonic()))


Step = Call | Pause
Plan = Generator[Step, Answer | Timeout | None, T]


def call(endpoint: str, request: Request, deadline: float, *, connect_first: bool = False,
         shared: bool = False) -> Plan[Answer | Timeout]:
    outcome = yield Call(endpoint, request, deadline, connect_first, shared)
    assert outcome is not None, "a Call is answered with a reply or a Timeout"
    return outcome


def pause(deadline: float) -> Plan[None]:
    yield Pause(deadline)


def time_to_resend(deadline: float, round_trip: float) -> bool:
    """After a refusal that took ``round_trip`` seconds to come back, whether the deadline leaves
    time to send the write again and hear back. A resend sent too late would meet the deadline
    unanswered and turn a clear refusal (nothing applied) into an unknown outcome."""
    return deadline - time.monotonic() > PAUSE_SECONDS + max(RESEND_MARGIN, 4 * round_trip)


def run_blocking(plan: Plan[T], perform: Callable[[Step], Answer | Timeout | None]) -> T:
    """Drive ``plan`` to its end, ``perform`` doing each step (the blocking client's loop)."""
    try:
        step = next(plan)
        while True:
            step = plan.send(perform(step))
    except StopIteration as done:
        return done.value
    finally:
        plan.close()


class ClientState:
    """What a client knows of the cluster between calls: the topology (a one-chain cluster's) or
    the partition table (a partitioned cluster's) and when it was fetched, the limits, which nodes
    failed lately; and the request ids it hands out."""

    def __init__(self, coordinator: str, timeout: float, coordinator_key: str | None = None,
                 secured: bool = False, coordinators: tuple[str, ...] = ()) -> None:
        self.coordinator = coordinator  # the one asked: the one that answered last
        self.coordinators = coordinators or (coordinator,)  # every one configured (they share one key)
        self.timeout = timeout
        self.secured = secured  # CURVE on: every connection needs its server's key
        self.coordinator_key = coordinator_key
        self.ids = count(1)
        self.topology: Topology | None = None  # a one-chain cluster's chain
        self.table: PartitionTable | None = None  # a partitioned cluster's table (then topology is None)
        self.topology_at = float("-inf")
        self.limits: Limits | None = None  # the coordinator's, once a topology reply told them
        self.next_node = random.randrange(1 << 16)
        self.avoided: dict[str, float] = {}  # endpoint -> until when reads skip it (it failed us)

    def next_id(self) -> int:
        return next(self.ids)

    def move_on(self, endpoint: str, refusal: Error | None) -> None:
        """The coordinator at ``endpoint`` does not lead (``refusal``: its not_leader) or did not
        answer (None): ask the leader it names from now on, if the config lists it, else the next
        one configured."""
        if endpoint != self.coordinator or len(self.coordinators) < 2:
            return
        leader = refusal.leader if refusal is not None else None
        if isinstance(leader, str) and leader in self.coordinators and leader != endpoint:
            self.coordinator = leader
        else:
            self.coordinator = self.coordinators[(self.coordinators.index(endpoint) + 1) % len(self.coordinators)]

    def deadline(self) -> float:
        return time.monotonic() + self.timeout

    def attempt_deadline(self, deadline: float) -> float:
        """One attempt of a call that may try several nodes gets a third of the time (at least 1 s)."""
        return min(deadline, time.monotonic() + max(1.0, self.timeout / 3))

    def forget_topology(self) -> None:
        """Ask the coordinator again before the next request that needs the topology."""
        self.topology_at = float("-inf")

    def adopt(self, ok: Ok) -> None:
        """Take the topology or table (and limits) of a topology reply. ValueError: a malformed
        table (nothing is taken)."""
        if ok.table is not msgspec.UNSET:
            self.table, self.topology = PartitionTable.parse(ok.table), None
        elif ok.topology is not msgspec.UNSET:
            self.topology, self.table = ok.topology, None
        else:
            return
        self.topology_at = time.monotonic()
        if ok.limits is not msgspec.UNSET:
            self.limits = ok.limits

    @property
    def known(self) -> bool:
        """A topology or table was taken: the cluster's shape is known."""
        return self.topology is not None or self.table is not None

    def partitions(self) -> list[int | None]:
        """What a call over every key covers: each partition, or None for a one-chain cluster."""
        return [None] if self.table is None else list(range(self.table.count))

    def partition_of(self, key: str) -> int | None:
        """``key``'s partition (None: a one-chain cluster, or the shape is not known yet)."""
        return None if self.table is None else self.table.partition_of(key)

    def route(self, partition: int | None) -> Route:
        if partition is None or self.table is None:
            return Route(partition, self.topology if partition is None else None)
        return Route(partition, self.table.topology(partition) if partition < self.table.count else None)

    def listed(self) -> tuple[Member, ...]:
        """Every node the topology or table lists."""
        if self.table is not None:
            return self.table.listed()
        return self.topology.listed() if self.topology else ()

    def avoid(self, endpoint: str) -> None:
        self.avoided[endpoint] = time.monotonic() + AVOID_SECONDS

    def check_size(self, key: str, value_size: int) -> None:
        """Refuse, before sending, what the cluster would refuse: an oversized request is answered
        at once instead of being cut off by the server's socket and waited for in vain."""
        limits = self.limits
        if limits is None:
            return
        if len(key.encode()) > limits.max_key_bytes:
            raise TooLarge(f"key is longer than {limits.max_key_bytes} bytes")
        if value_size > limits.max_value_bytes:
            raise TooLarge(f"value is larger than {limits.max_value_bytes} bytes ({value_size:,} bytes)")

    def member_at(self, endpoint: str) -> Member | None:
        return next((m for m in self.listed() if m.service == endpoint), None)

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.listed() if m.id == node_id), None)

    def note_refusal(self, endpoint: str, code: str) -> None:
        """A read was refused: ask for the topology again; skip the node a while, unless it only
        lacks the partition (it serves the others)."""
        self.forget_topology()
        if code != "wrong_partition":
            self.avoid(endpoint)


# ---------------------------------------------------------------------------------- checks and answers


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise BadRequest("key must be a non-empty string")


def check_endpoint(endpoint: str) -> None:
    try:
        parse_endpoint(endpoint)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def ok(reply: Reply) -> Ok:
    """The reply, if it is a success; the exception its error code stands for otherwise."""
    if isinstance(reply, Error):
        raise error_for(reply.code, reply.message or reply.code)
    return reply


def error_of(code: str, message: str) -> ZcraqError:
    """The exception a retryable refusal that lasted stands for: a partition no node we asked holds
    is unavailable."""
    return Unavailable(message) if code == "wrong_partition" else error_for(code, message)


def stamp(request: R, route: Route) -> R:
    """``request`` naming ``route``'s partition (unchanged in a one-chain cluster)."""
    if route.partition is None:
        return request
    return msgspec.structs.replace(request, partition=route.partition)


def report(reply: Reply) -> dict[str, Any]:
    """A status reply as plain JSON types, as on the wire."""
    return msgspec.json.decode(wire.encode_json(ok(reply)))


# ---------------------------------------------------------------------------------- plans


def fetch_table(state: ClientState, deadline: float) -> Plan[PartitionTable | None]:
    """Ask the coordinator for the cluster's shape now: its partition table, or None for a one-chain
    cluster (then ``state.topology`` is its chain)."""
    outcome = yield from ask_coordinator(state, lambda i: TopologyRequest(id=i), deadline)
    if isinstance(outcome, Timeout):
        raise outcome
    answer = ok(outcome[0])
    if answer.topology is msgspec.UNSET and answer.table is msgspec.UNSET:
        raise ZcraqError(f"{state.coordinator} answered a topology request without a topology")
    try:
        state.adopt(answer)
    except ValueError as error:
        raise ZcraqError(f"{state.coordinator} answered a topology request with a malformed table: {error}") from None
    return state.table


def fetch_topology(state: ClientState, deadline: float) -> Plan[Topology]:
    """The chain as the coordinator sees it now; in a partitioned cluster, partition 0's."""
    table = yield from fetch_table(state, deadline)
    if table is not None:
        return table.topology(0)
    assert state.topology is not None
    return state.topology


def refresh(state: ClientState, deadline: float) -> Plan[None]:
    """Ask for the topology (or table) again once it is older than TOPOLOGY_MAX_AGE; without an
    answer the last one is kept (the chain may well be fine without the coordinator).

    A refresh only because of age waits ROUTINE_REFRESH_WAIT at most, and without an answer the
    topology held counts as fresh for another TOPOLOGY_MAX_AGE: a coordinator that is down (or
    being replaced) then slows a call by that at most once a second, where the chain serves on. A
    topology forgotten after a refusal is asked for with the call's attempt time."""
    now = time.monotonic()
    if state.known and now - state.topology_at <= TOPOLOGY_MAX_AGE:
        return
    routine = state.known and state.topology_at != float("-inf")
    wait = state.attempt_deadline(deadline)
    if routine:
        wait = min(wait, now + ROUTINE_REFRESH_WAIT)
    outcome = yield from ask_coordinator(state, lambda i: TopologyRequest(id=i), wait, shared=True)
    if not isinstance(outcome, Timeout) and isinstance(outcome[0], Ok):
        try:
            state.adopt(outcome[0])
        except ValueError:
            pass  # a malformed table: keep what we had
    elif routine:
        state.topology_at = time.monotonic()


def cached_topology(state: ClientState, deadline: float) -> Plan[Topology | None]:
    """The one-chain topology held (refreshed as ``refresh`` does); None in a partitioned cluster."""
    yield from refresh(state, deadline)
    return state.topology


def cached_route(state: ClientState, deadline: float, partition: int | None = None, *,
                 key: str | None = None) -> Plan[Route]:
    """Where requests for ``partition`` (or for ``key``'s) go, refreshed as ``refresh`` does."""
    yield from refresh(state, deadline)
    return state.route(state.partition_of(key) if key is not None else partition)


def partitions(state: ClientState, deadline: float, wait: bool = True) -> Plan[list[int | None]]:
    """The partitions a call over every key covers (``[None]``: a one-chain cluster), once the
    coordinator has told the cluster's shape (the number of partitions never changes). ``wait``:
    until it answers (else Unavailable at the deadline); without (a call to a node named by its
    endpoint, which needs no coordinator), ``[None]`` when its first answer does not come."""
    while not state.known:
        yield from refresh(state, deadline)
        if state.known or not wait:
            return state.partitions()
        if time.monotonic() >= deadline:
            raise Unavailable(f"the coordinator {state.coordinator} did not answer: the cluster's partitions "
                              "are unknown")
        yield from pause(deadline)
    return state.partitions()


def pick_reader(state: ClientState, deadline: float, partition: int | None = None, *,
                key: str | None = None) -> Plan[str | None]:
    """The next node to read from, round robin over the members (of ``partition``, or of ``key``'s
    partition) that did not fail lately."""
    topology = (yield from cached_route(state, deadline, partition, key=key)).topology
    if topology is None or not topology.members:
        return None
    state.next_node += 1
    now = time.monotonic()
    if state.avoided:
        state.avoided = {e: until for e, until in state.avoided.items() if until > now}  # stays small
    healthy = [m for m in topology.members if m.service not in state.avoided]
    candidates = healthy or topology.members  # all failed lately: try them anyway
    return candidates[state.next_node % len(candidates)].service


def node_endpoint(state: ClientState, node: str, deadline: float) -> Plan[str | None]:
    """The service endpoint of ``node`` (an id, or an endpoint taken as it is)."""
    if node.startswith("tcp://"):
        check_endpoint(node)
        return node
    yield from refresh(state, deadline)
    member = state.member(node)
    return member.service if member else None


def server_key(state: ClientState, endpoint: str) -> Plan[str | None]:
    """The CURVE key of the process at ``endpoint``: the coordinator's from the config, a node's
    from the topology (None without security)."""
    if not state.secured:
        return None
    if endpoint in state.coordinators:
        return state.coordinator_key
    member = state.member_at(endpoint)
    if member is None:  # not in the topology we hold: perhaps in a newer one
        state.forget_topology()
        yield from refresh(state, state.deadline())
        member = state.member_at(endpoint)
    if member is None or member.key is None:
        raise Unavailable(f"no CURVE key known for {endpoint}: it is not in the chain's topology")
    return member.key


@dataclass(frozen=True, slots=True)
class ReadMode:
    """How a read is served: ``mode`` "strong", "eventual" or "bounded", and a bounded read's
    limit in milliseconds (UNSET: the node's default, 1 s)."""

    mode: str = "strong"
    max_staleness_ms: int | UnsetType = msgspec.UNSET

    @classmethod
    def of(cls, mode: str | ReadMode, max_staleness: float | None = None) -> ReadMode:
        """From a client call's ``mode`` and ``max_staleness`` (seconds, bounded reads only)."""
        if isinstance(mode, ReadMode):
            return mode
        if mode not in ("strong", "eventual", "bounded"):
            raise ValueError(f"mode must be strong, eventual or bounded, not {mode!r}")
        if max_staleness is None:
            return cls(mode)
        if mode != "bounded":
            raise ValueError("max_staleness is the limit of a bounded read: give mode=\"bounded\"")
        if not 0 <= max_staleness <= MAX_STALENESS_MS / 1000:
            raise ValueError(f"max_staleness must be from 0 to {MAX_STALENESS_MS // 1000} seconds")
        return cls(mode, round(max_staleness * 1000))

    @property
    def seconds(self) -> float | None:
        """The limit as ``of`` takes it (None: the default)."""
        return None if self.max_staleness_ms is msgspec.UNSET else self.max_staleness_ms / 1000


def read(state: ClientState, key: str, node: str | None, mode: str | ReadMode,
         deadline: float) -> Plan[tuple[bytes, int]]:
    """The committed value of ``key`` and its version, from ``node`` or any member (of its partition)."""
    check_key(key)
    how = ReadMode.of(mode)
    last_error: ZcraqError = Unavailable("no node answered")
    while time.monotonic() < deadline:
        endpoint = (yield from node_endpoint(state, node, deadline)) if node \
            else (yield from pick_reader(state, deadline, key=key))
        if endpoint is None and node:
            raise Unavailable(f"no node {node!r} in the chain (or the coordinator did not answer)")
        if endpoint is None:
            last_error = Unavailable("no node to read from: the chain is empty or the coordinator "
                                     "did not answer")
        else:
            state.check_size(key, 0)
            # Named when the table is known; a node routes a key's read without it too.
            request = Read(key, id=state.next_id(), mode=how.mode,  # type: ignore[arg-type]
                           max_staleness_ms=how.max_staleness_ms, partition=field_of(state.partition_of(key)))
            outcome = yield from call(endpoint, request, state.attempt_deadline(deadline))
            if isinstance(outcome, Timeout):
                last_error = Timeout(f"{endpoint} did not answer in time")
                state.forget_topology()
                state.avoid(endpoint)
                if node:
                    break
                continue
            reply, values = outcome
            if isinstance(reply, Ok):
                version = 0 if reply.version is msgspec.UNSET else reply.version
                return (values[0] if values else b""), version
            if reply.code not in READ_RETRYABLE:
                raise error_for(reply.code, reply.message or reply.code)
            last_error = error_of(reply.code, f"{endpoint}: {reply.message}")
            state.note_refusal(endpoint, reply.code)
            if node:
                break
        yield from pause(deadline)
    raise last_error


def write(state: ClientState, key: str, build: Callable[[int], Write | Delete], value_size: int,
          deadline: float) -> Plan[Ok]:
    """Have the head (of ``key``'s partition) apply the write ``build(request id)`` makes; its
    acknowledgement."""
    check_key(key)
    last_error: ZcraqError = Unavailable("no head available")
    while time.monotonic() < deadline:
        route = yield from cached_route(state, deadline, key=key)
        state.check_size(key, value_size)
        head = route.topology.head if route.topology else None
        # Straight to the head; through the coordinator when the head is unknown.
        endpoint = head.service if head else state.coordinator
        request = stamp(build(state.next_id()), route)
        sent = time.monotonic()
        outcome = yield from call(endpoint, request, deadline, connect_first=True)
        if isinstance(outcome, Timeout):
            if outcome.delivered:
                raise WriteOutcomeUnknown(
                    f"{request_type(request)} of {key!r}: no answer from {endpoint} within {state.timeout:g}s; "
                    "it may or may not have committed") from None
            # The connection never came up: the request cannot have arrived, so it is safe to
            # send again (to whatever head a fresh topology names).
            last_error = Unavailable(f"{endpoint} could not be reached; the {request_type(request)} was not sent")
            state.forget_topology()
            state.move_on(endpoint, None)
            yield from pause(deadline)
            continue
        reply, _values = outcome
        if isinstance(reply, Ok):
            if reply.version is msgspec.UNSET:
                raise ZcraqError(f"{endpoint} acknowledged a write without its version")
            return reply
        if reply.code == "condition_failed":
            current = reply.version if isinstance(reply.version, int) else None
            raise ConditionFailed(f"{request_type(request)} of {key!r} not applied: {reply.message}", current)
        if reply.code not in WRITE_RETRYABLE:
            raise error_for(reply.code, reply.message or reply.code)
        last_error = error_of(reply.code, f"{endpoint}: {reply.message}")
        state.forget_topology()
        if reply.code == "not_leader":
            state.move_on(endpoint, reply)
        if not time_to_resend(deadline, time.monotonic() - sent):
            break
        yield from pause(deadline)
    raise last_error


def write_request(key: str, value: bytes | str,
                  if_version: int | None = None) -> tuple[Callable[[int], Write], int]:
    """How write() builds a write of ``value`` (bytes, or str as UTF-8), and the value's size.
    ``if_version``: only if the key's current version is that (0: only if it has no value)."""
    data = value.encode() if isinstance(value, str) else bytes(value)
    condition = check_condition(if_version)
    return (lambda request_id: Write(key, data, id=request_id, if_version=condition)), len(data)


def delete_request(key: str, if_version: int | None = None) -> Callable[[int], Delete]:
    condition = check_condition(if_version)
    return lambda request_id: Delete(key, id=request_id, if_version=condition)


def check_condition(if_version: int | None) -> int | UnsetType:
    """A write's ``if_version`` as the wire carries it (UNSET: unconditional)."""
    if if_version is None:
        return msgspec.UNSET
    if type(if_version) is not int or not 0 <= if_version <= U64_MAX:
        raise ValueError(f"if_version must be an integer from 0 to 2**64-1, not {if_version!r}")
    return if_version


def node_status(state: ClientState, node: str, deadline: float) -> Plan[dict[str, Any]]:
    """A node's own report; ``node`` is an id or a service endpoint."""
    endpoint = yield from node_endpoint(state, node, deadline)
    if endpoint is None:
        raise Unavailable(f"no node {node!r} in the chain")
    return (yield from ask_status(state, endpoint, deadline))


def status(state: ClientState, node: str | None, deadline: float) -> Plan[dict[str, Any]]:
    """A node's own report, or the coordinator's when ``node`` is None."""
    if node:
        return (yield from node_status(state, node, deadline))
    outcome = yield from ask_coordinator(state, lambda i: StatusRequest(id=i), deadline)
    if isinstance(outcome, Timeout):
        raise outcome
    return report(outcome[0])


def ask_status(state: ClientState, endpoint: str, deadline: float) -> Plan[dict[str, Any]]:
    outcome = yield from call(endpoint, StatusRequest(id=state.next_id()), deadline)
    if isinstance(outcome, Timeout):
        raise outcome
    return report(outcome[0])


def ask_coordinator(state: ClientState, build: Callable[[int], Request], deadline: float, *,
                    shared: bool = False) -> Plan[Answer | Timeout]:
    """Ask the coordinator that leads a request that may be asked twice (topology, status, drain):
    the one that answered last; of several configured, one that answers ``not_leader`` or nothing
    within its share of the time is followed by the leader it names or the next one, until
    ``deadline``. The last outcome, whatever it is."""
    while True:
        endpoint = state.coordinator
        several = len(state.coordinators) > 1
        # Each gets a share of the call's time, so that a short call still reaches the last one.
        share = min(COORDINATOR_ATTEMPT, state.timeout / (len(state.coordinators) + 1))
        attempt = min(deadline, time.monotonic() + share) if several else deadline
        outcome = yield from call(endpoint, build(state.next_id()), attempt, shared=shared)
        refused = not isinstance(outcome, Timeout) and isinstance(outcome[0], Error) \
            and outcome[0].code == "not_leader"
        if not several or not (refused or isinstance(outcome, Timeout)) or time.monotonic() >= deadline:
            return outcome
        if isinstance(outcome, Timeout):
            state.move_on(endpoint, None)
        else:
            state.move_on(endpoint, outcome[0] if isinstance(outcome[0], Error) else None)
        if refused:
            yield from pause(deadline)  # no leader yet, perhaps: not a busy loop over the standbys


__all__ = ["Answer", "Call", "ClientState", "Pause", "Plan", "Step", "call", "cached_route", "cached_topology",
           "ask_coordinator", "check_endpoint", "check_key", "delete_request", "error_of", "fetch_table",
           "fetch_topology", "node_endpoint", "ok", "partitions", "pause", "pick_reader", "read", "refresh", "report", "run_blocking",
           "server_key", "ask_status", "node_status", "stamp", "status", "time_to_resend", "write", "write_request"]
