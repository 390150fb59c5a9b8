"""The client's batched calls, without sockets: read_many, write_many and delete_many as plans
(zcraq/clientcore.py explains plans), shared by ZClient and AsyncZClient.

Each key of a batch fares as it would in a single call, and the rules of those calls hold per key:

- read_many: a key a node could not serve (``unavailable``) is asked again, of another node, with
  the other keys still unread, until the call's deadline; a key that does not exist reads as None.
- write_many / delete_many: the batch is refused as a whole, and safely resent, when the head
  refused it before storing anything (``not_head``, ``unavailable``); once it was handed over,
  each key's answer is its own: its version, or ``unknown_outcome`` when that key's write did not
  commit in time. A batch whose reply never came leaves every key of it unknown.

A call carries at most MAX_BATCH_KEYS keys, a header of at most 64 KiB and values within the
cluster's batch limit; a longer call is sent as several requests, one after the other.

In a partitioned cluster a batch is split by the keys' partitions (zcraq/clientroutes.py): each
request carries the keys of one partition, names it, and goes to that partition's chain; the
results come back in the caller's order. Keys of different partitions are never applied together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import orjson

from zcraq import wire
from zcraq.clientcore import (READ_RETRYABLE, WRITE_RETRYABLE, ClientState, Plan, ReadMode, cached_route, call,
                              check_key, error_of, node_endpoint, partitions, pause, pick_reader,
                              time_to_resend)
from zcraq.clientroutes import field_of
from zcraq.errors import BatchFailed, Timeout, Unavailable, WriteOutcomeUnknown, ZcraqError, error_for
from zcraq.messages import MAX_BATCH_KEYS, DeleteMany, Ok, ReadMany, WriteMany

HEADER_ROOM = 1024  # header bytes kept free of keys for the other fields
Versioned = tuple[bytes, int]


def chunks(keys: Sequence[str], sizes: Sequence[int], max_values: int) -> Iterator[range]:
    """Consecutive index ranges of ``keys`` that each fit one request: at most MAX_BATCH_KEYS keys,
    the keys' JSON within the header limit, the values (``sizes``) within ``max_values`` bytes."""
    start, header, values = 0, 0, 0
    for index, key in enumerate(keys):
        key_json = len(orjson.dumps(key)) + 1
        if index > start and (index - start == MAX_BATCH_KEYS or values + sizes[index] > max_values
                              or header + key_json > wire.MAX_HEADER_BYTES - HEADER_ROOM):
            yield range(start, index)
            start, header, values = index, 0, 0
        header += key_json
        values += sizes[index]
    if start < len(keys):
        yield range(start, len(keys))


def _check(state: ClientState, keys: Sequence[str], sizes: Sequence[int]) -> None:
    for key, size in zip(keys, sizes):
        check_key(key)
        state.check_size(key, size)


def _max_values(state: ClientState) -> int:
    limits = state.limits
    return limits.max_batch_value_bytes if limits is not None else 16 << 20


# ---------------------------------------------------------------------------------- reads


def read_many(state: ClientState, keys: Sequence[str], node: str | None, mode: str | ReadMode,
              deadline: float) -> Plan[list[Versioned | None]]:
    """Each key's committed value and version, or None where the key does not exist."""
    how = ReadMode.of(mode)
    _check(state, keys, [0] * len(keys))
    results: list[Versioned | None] = [None] * len(keys)
    unread = list(range(len(keys)))
    last_error: ZcraqError = Unavailable("no node answered")
    while unread and time.monotonic() < deadline:
        failed: list[int] = []
        groups = yield from _by_partition(state, keys, unread, deadline, wait=node is None)
        for partition, indices in groups.items():
            for part in chunks([keys[i] for i in indices], [0] * len(indices), _max_values(state)):
                asked = [indices[i] for i in part]
                error = yield from _read_part(state, keys, asked, node, how, partition, results, deadline)
                if error is not None:
                    last_error, failed = error[1], failed + error[0]
        unread = sorted(failed)
        if unread:
            state.forget_topology()
            if node:
                break
            yield from pause(deadline)
    if unread:
        raise type(last_error)(f"{len(unread)} of {len(keys)} keys could not be read: {last_error}")
    return results


def _by_partition(state: ClientState, keys: Sequence[str], indices: Sequence[int], deadline: float,
                  wait: bool = True) -> Plan[dict[int | None, list[int]]]:
    """``indices`` of ``keys`` by partition, in order (one group, None, in a one-chain cluster).
    ``wait``: until the coordinator has told the cluster's shape (else Unavailable at the
    deadline); without, one group when it did not answer (a node routes each key itself)."""
    yield from partitions(state, deadline, wait)
    groups: dict[int | None, list[int]] = {}
    for index in indices:
        groups.setdefault(state.partition_of(keys[index]), []).append(index)
    return groups


def _read_part(state: ClientState, keys: Sequence[str], asked: list[int], node: str | None, how: ReadMode,
               partition: int | None, results: list[Versioned | None],
               deadline: float) -> Plan[tuple[list[int], ZcraqError] | None]:
    """Read the keys ``asked`` (indices of ``keys``, all of ``partition``) into ``results``; those
    to ask again and why, or None when every one was answered."""
    # Each request to the next node: a long batch is spread over the chain, as reads are.
    endpoint = (yield from node_endpoint(state, node, deadline)) if node \
        else (yield from pick_reader(state, deadline, partition))
    if endpoint is None:
        if node:
            raise Unavailable(f"no node {node!r} in the chain (or the coordinator did not answer)")
        return asked, Unavailable("no node to read from: the chain is empty or the coordinator did not answer")
    request = ReadMany([keys[i] for i in asked], id=state.next_id(), mode=how.mode,  # type: ignore[arg-type]
                       max_staleness_ms=how.max_staleness_ms, partition=field_of(partition))
    outcome = yield from call(endpoint, request, state.attempt_deadline(deadline))
    if isinstance(outcome, Timeout):
        state.avoid(endpoint)
        return asked, Timeout(f"{endpoint} did not answer in time")
    reply, values = outcome
    if not isinstance(reply, Ok):
        if reply.code not in READ_RETRYABLE:
            raise error_for(reply.code, reply.message or reply.code)
        state.note_refusal(endpoint, reply.code)
        return asked, error_of(reply.code, f"{endpoint}: {reply.message}")
    per_key, found = _read_results(reply, len(asked), values, endpoint)
    failed: list[int] = []
    last_error: ZcraqError | None = None
    for index, result, value in zip(asked, per_key, found):
        if type(result) is int:
            results[index] = (value, result)
        elif result == "not_found":
            results[index] = None
        elif result in READ_RETRYABLE:
            last_error = error_of(str(result), f"{endpoint} could not read {keys[index]!r}")
            failed.append(index)
            state.note_refusal(endpoint, str(result))
        else:
            raise error_for(str(result), f"{endpoint} could not read {keys[index]!r}: {result}")
    return (failed, last_error) if last_error is not None else None


def _read_results(reply: Ok, keys: int, frames: list[bytes], endpoint: str) -> tuple[list[int | str], list[bytes]]:
    """A read_many reply's results and each key's value (cut from the one value frame by ``sizes``)."""
    results, sizes = reply.results, reply.sizes
    if results is msgspec.UNSET or sizes is msgspec.UNSET or len(results) != keys or len(sizes) != keys \
            or len(frames) != 1 or sum(sizes) != len(frames[0]):
        raise ZcraqError(f"{endpoint} answered a read_many of {keys} keys with a malformed reply")
    return results, list(wire.split_values(frames[0], sizes))


# ---------------------------------------------------------------------------------- writes


def write_many(state: ClientState, keys: Sequence[str], values: Sequence[bytes] | None,
               deadline: float) -> Plan[list[Ok | ZcraqError]]:
    """Have the heads (of the keys' partitions) write ``values[i]`` under ``keys[i]`` (delete every
    key when ``values`` is None); per key, in order, its acknowledgement (version, and for a
    deletion ``existed``) or the error it met. Keys of different partitions go in different
    requests, never applied together."""
    sizes = [len(value) for value in values] if values is not None else [0] * len(keys)
    _check(state, keys, sizes)
    outcomes: list[Ok | ZcraqError | None] = [None] * len(keys)
    failed = False
    groups = yield from _by_partition(state, keys, range(len(keys)), deadline)
    for partition, indices in groups.items():
        for part in chunks([keys[i] for i in indices], [sizes[i] for i in indices], _max_values(state)):
            asked = [indices[i] for i in part]
            if failed:
                # An earlier part failed: the rest is not sent, so what the caller sees stays simple.
                for index in asked:
                    outcomes[index] = Unavailable("not sent: an earlier part of the batch failed")
                continue
            part_values = None if values is None else tuple(values[i] for i in asked)
            done = yield from _write_part(state, [keys[i] for i in asked], part_values, partition, deadline)
            for index, outcome in zip(asked, done):
                outcomes[index] = outcome
            failed = any(isinstance(outcome, ZcraqError) for outcome in done)
    return outcomes  # type: ignore[return-value]  # every key has its outcome


def _write_part(state: ClientState, keys: list[str], values: tuple[bytes, ...] | None, partition: int | None,
                deadline: float) -> Plan[list[Ok | ZcraqError]]:
    kind = "delete_many" if values is None else "write_many"
    last_error: ZcraqError = Unavailable("no head available")
    while time.monotonic() < deadline:
        route = yield from cached_route(state, deadline, partition)
        head = route.topology.head if route.topology else None
        if head is None:
            last_error = Unavailable(f"no head known{route.where()}: the chain is empty or the coordinator "
                                     "did not answer")
            state.forget_topology()
            yield from pause(deadline)
            continue
        endpoint = head.service
        request_id = state.next_id()
        request = (DeleteMany(keys, id=request_id, partition=route.field) if values is None
                   else WriteMany(keys, values, id=request_id, partition=route.field))
        sent = time.monotonic()
        outcome = yield from call(endpoint, request, deadline, connect_first=True)
        if isinstance(outcome, Timeout):
            if outcome.delivered:
                unknown = WriteOutcomeUnknown(f"{kind}: no answer from {endpoint} within {state.timeout:g}s; "
                                              "it may or may not have committed")
                return [unknown] * len(keys)
            last_error = Unavailable(f"{endpoint} could not be reached; the {kind} was not sent")
            state.forget_topology()
            yield from pause(deadline)
            continue
        reply, _values = outcome
        if isinstance(reply, Ok):
            return _acknowledgements(reply, keys, endpoint)
        if reply.code not in WRITE_RETRYABLE:
            return [error_for(reply.code, reply.message or reply.code)] * len(keys)  # nothing was stored
        last_error = error_of(reply.code, f"{endpoint}: {reply.message}")
        state.forget_topology()
        if not time_to_resend(deadline, time.monotonic() - sent):
            break
        yield from pause(deadline)
    return [last_error] * len(keys)


def _acknowledgements(reply: Ok, keys: list[str], endpoint: str) -> list[Ok | ZcraqError]:
    results = reply.results
    if results is msgspec.UNSET or len(results) != len(keys):
        raise ZcraqError(f"{endpoint} answered a batch of {len(keys)} keys with another number of results")
    existed = reply.existed if isinstance(reply.existed, list) else [None] * len(keys)
    outcomes: list[Ok | ZcraqError] = []
    for key, result, had in zip(keys, results, existed):
        if type(result) is int:
            outcomes.append(Ok(version=result, existed=msgspec.UNSET if had is None else had))
        else:
            message = f"{key!r}: the write did not commit in time; it may still commit" \
                if result == "unknown_outcome" else f"{key!r}: {result}"
            outcomes.append(error_for(str(result), message))
    return outcomes


def settle(outcomes: list[Ok | ZcraqError], what: str) -> list[Ok]:
    """Every key's acknowledgement. When keys failed: the error itself if the batch met one error
    as a whole (refused, or no reply: what the single call raises), else BatchFailed with each
    key's outcome."""
    failures = [o for o in outcomes if isinstance(o, ZcraqError)]
    if not failures:
        return outcomes  # type: ignore[return-value]
    if len(failures) == len(outcomes) and all(o is failures[0] for o in failures):
        raise failures[0]
    raise BatchFailed(f"{what}: {len(failures)} of {len(outcomes)} keys failed ({failures[0]})",
                      [o.version if isinstance(o, Ok) else o for o in outcomes],  # type: ignore[misc]
                      [o.existed if isinstance(o, Ok) and isinstance(o.existed, bool) else None for o in outcomes])


def values_of(items: Any) -> tuple[list[str], list[bytes]]:
    """write_many's items (a mapping, or pairs) as keys and values; str values are UTF-8."""
    pairs = items.items() if hasattr(items, "items") else items
    keys: list[str] = []
    values: list[bytes] = []
    for key, value in pairs:
        keys.append(key)
        values.append(value.encode() if isinstance(value, str) else bytes(value))
    return keys, values


__all__ = ["chunks", "read_many", "write_many", "settle", "values_of"]
