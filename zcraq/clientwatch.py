"""The client's watches, without sockets: what a watcher has seen, and the plans (zcraq/clientcore.py
explains plans) that synchronize it with a node and poll that node's changes. Shared by ZClient and
AsyncZClient.

How a watch stays exact (PROTOCOL.md §8.10). Each node logs the changes that commit at it, in
order, under positions of one log (its ``token``); a key's versions are dense (1, 2, 3, ...) and
commit in order everywhere. The watcher remembers the last version it delivered of each key:

- It synchronizes with a node: ``watch_state`` pages give the node's committed version of each
  key as of a log position. At the start of a watch "from now" these versions are the baseline
  (nothing is delivered); otherwise any key whose committed version there is beyond what the
  watcher delivered is *pending*: its missing versions must come from the log.
- It replays the node's log from the oldest entry kept, then follows it. A key's version right
  after the last delivered one is delivered; older ones are skipped (already delivered, perhaps
  from another node); one further on means the versions between are not in this log: it is
  delivered marked ``pruned``. A pending key whose versions the log did not hold up to its state
  page's position is delivered then, from the state page, marked ``pruned`` (unless nothing was
  missing).
- Whenever the node cannot go on (it failed, left the chain, restarted, or dropped the entries the
  watcher still needed: ``watch_pruned``), the watcher synchronizes again, with the same node or
  another, and nothing it delivered is delivered again.
- A node whose log lacks versions the watcher needs (it restarted, or rejoined, after they
  committed) may not be the only one: before it delivers anything marked ``pruned``, the watcher
  tries the other members, one each, and takes the gap only when none of them has the versions.

In a partitioned cluster each partition has its own chain and its nodes their own logs: a key's
watch follows its partition (requests naming it), a prefix watch one ``Watcher`` per partition
(``Watches``), each exact as above; their changes are merged as they come (a key's changes all come
from its partition, so each key's stay in version order). Polls take turns over the partitions,
each waiting a share of ``poll_wait``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from zcraq.clientcore import (READ_RETRYABLE, ClientState, Plan, cached_route, call, error_of, node_endpoint,
                              partitions, pause, pick_reader)
from zcraq.clientroutes import field_of
from zcraq.errors import Timeout, Unavailable, ZcraqError, error_for
from zcraq.messages import MAX_WATCH_ITEMS, MAX_WATCH_WAIT_MS, TOMBSTONE, Error, Ok, Watch, WatchState

DEFAULT_POLL_WAIT = 1.0  # seconds a poll waits at the node for a change
MIN_SHARED_WAIT = 0.05  # seconds each partition's poll waits at least, when polls take turns


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of a watched key: its new ``value`` (None: the key was deleted) at
    ``version``. ``pruned``: versions between the previous change delivered of this key (or the
    watch's start) and this one were no longer kept; this is the key's value after them."""

    key: str
    version: int
    value: bytes | None
    pruned: bool = False

    @property
    def deleted(self) -> bool:
        return self.value is None


class _Gap(Exception):
    """Versions the watcher needs are not in this node's log (and gaps are not taken yet)."""


@dataclass(slots=True)
class _Pending:
    version: int
    value: bytes | None
    at: int  # the log position the state page held at


class Watcher:
    """What one watch has delivered, and where it stands in one node's change log."""

    def __init__(self, key: str | None = None, prefix: str | None = None, since_version: int | None = None,
                 since_versions: Mapping[str, int] | None = None, partition: int | None = None) -> None:
        """``since_versions``: resume a watch where another left off: each key's last version
        delivered (``WatchStream.versions``); a key not in it gets every change. ``partition``:
        the one its requests name (None: a one-chain cluster's, which name none)."""
        if (key is None) == (prefix is None):
            raise ValueError("watch a key or a prefix (one of them)")
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("key must be a non-empty string")
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if since_version is not None and (type(since_version) is not int or since_version < 0):
            raise ValueError(f"since_version must be a non-negative integer or None, not {since_version!r}")
        if since_versions is not None and (since_version is not None or not all(
                isinstance(k, str) and type(v) is int and v >= 0 for k, v in since_versions.items())):
            raise ValueError("since_versions maps keys to non-negative versions, and excludes since_version")
        self.key, self.prefix, self.partition = key, prefix, partition
        self.floor = since_version or 0  # versions up to this are not delivered
        # The first synchronization only sets where the watch starts:
        self._baseline = since_version is None and since_versions is None
        self.seen: dict[str, int] = dict(since_versions or {})  # key -> the last version delivered (or passed over)
        self._pending: dict[str, _Pending] = {}
        self.endpoint: str | None = None  # the node followed; None: synchronize first
        self.log = ""
        self.after = 0  # the log position reached
        self._page_log: str | None = None  # the log the state pages being taken belong to
        self._replay_from = 0
        self.gap_tries = 0  # nodes in a row whose logs lacked versions this watcher needs
        self.accept_gaps = False  # deliver what those nodes have, marked pruned

    @property
    def baseline(self) -> bool:
        """The next synchronization only sets where the watch starts (no values needed)."""
        return self._baseline

    @property
    def synchronized(self) -> bool:
        return self.endpoint is not None

    def lose_node(self) -> None:
        """The node followed cannot go on: synchronize again before the next poll."""
        self.endpoint = None

    # ------------------------------------------------------------------ synchronizing

    def begin_state(self) -> None:
        self._page_log = None
        self._pending.clear()

    def take_state(self, reply: Ok, values: list[bytes], endpoint: str) -> bool:
        """One ``watch_state`` page; False when the node's log changed between pages (start over)."""
        items, log, seq, first = reply.items, reply.log, reply.seq, reply.first
        if items is msgspec.UNSET or log is msgspec.UNSET or seq is msgspec.UNSET or first is msgspec.UNSET \
                or (values and len(values) != len(items)) or (not values and items and not self._baseline):
            raise ZcraqError(f"{endpoint} answered watch_state with a malformed reply")
        if self._page_log is None:
            self._page_log, self._replay_from, self.after = log, first - 1, seq
        elif log != self._page_log:
            return False
        for index, (key, version, flags) in enumerate(items):
            if self._baseline:
                self.seen[key] = version
            elif version > max(self.seen.get(key, 0), self.floor):
                value = None if flags & TOMBSTONE else values[index]
                self._pending[key] = _Pending(version, value, seq)
        return True

    def synchronized_with(self, endpoint: str) -> None:
        """Every state page is taken: follow ``endpoint``'s log (from the oldest entry it keeps,
        unless this was the baseline: then from the first page's position)."""
        assert self._page_log is not None
        self.endpoint, self.log = endpoint, self._page_log
        if not self._baseline:
            self.after = self._replay_from
        self._baseline = False

    # ------------------------------------------------------------------ following

    def take_changes(self, reply: Ok, values: list[bytes], endpoint: str) -> list[Change]:
        """A ``watch`` reply: the changes to deliver, in order."""
        items, seq = reply.items, reply.seq
        if items is msgspec.UNSET or seq is msgspec.UNSET or len(values) != len(items) or seq < self.after:
            raise ZcraqError(f"{endpoint} answered watch with a malformed reply")
        out: list[Change] = []
        try:
            for (key, version, flags), value in zip(items, values):
                pending = self._pending.get(key)
                if pending is not None and version > pending.version:
                    self._settle(key, out)  # this entry is past the state page: what it missed is missing
                self._advance(key, version, None if flags & TOMBSTONE else value, out)
            self.after = seq
            if self._pending:
                for key in [key for key, pending in self._pending.items() if pending.at <= seq]:
                    self._settle(key, out)
        except _Gap:
            self.gap_tries += 1  # what came before the gap stands; the rest is asked of another node
            self.lose_node()
            return out
        if not self._pending:
            self.gap_tries = 0
        return out

    def _advance(self, key: str, version: int, value: bytes | None, out: list[Change]) -> None:
        last = self.seen.get(key, 0)
        if version <= last:
            return  # delivered already (or before the watch's start)
        pruned = version - 1 > max(last, self.floor)
        if pruned and not self.accept_gaps:
            raise _Gap
        self.seen[key] = version
        if version > self.floor:
            out.append(Change(key, version, value, pruned=pruned))

    def _settle(self, key: str, out: list[Change]) -> None:
        pending = self._pending[key]
        last = max(self.seen.get(key, 0), self.floor)
        if pending.version > last:
            pruned = pending.version - 1 > last
            if pruned and not self.accept_gaps:
                raise _Gap
            self.seen[key] = pending.version
            out.append(Change(key, pending.version, pending.value, pruned=pruned))
        del self._pending[key]


class Watches:
    """One watch over the partitions it needs: a ``Watcher`` for the key's partition, or for each
    partition (a prefix); a single one, naming none, in a one-chain cluster. ``place`` them once
    the cluster's shape is known."""

    def __init__(self, key: str | None = None, prefix: str | None = None, since_version: int | None = None,
                 since_versions: Mapping[str, int] | None = None) -> None:
        self.first = Watcher(key, prefix, since_version, since_versions)  # checks the arguments
        self.since_version, self.since_versions = since_version, since_versions
        self.watchers: dict[int | None, Watcher] = {}

    @property
    def placed(self) -> bool:
        return bool(self.watchers)

    def place(self, state: ClientState) -> None:
        """One watcher per partition watched (the cluster's shape is known, or taken as one chain)."""
        key = self.first.key
        if state.table is None:
            self.watchers = {None: self.first}
            return
        wanted = [state.table.partition_of(key)] if key is not None else list(range(state.table.count))
        self.watchers = {p: self._watcher(state, p) for p in wanted}

    def _watcher(self, state: ClientState, partition: int) -> Watcher:
        since = self.since_versions
        if since is not None:  # each partition remembers its own keys only
            since = {k: v for k, v in since.items() if state.partition_of(k) == partition}
        return Watcher(self.first.key, self.first.prefix, self.since_version, since, partition=partition)

    def each(self) -> list[Watcher]:
        return list(self.watchers.values()) if self.watchers else [self.first]

    def wait_each(self, wait: float) -> float:
        """How long each watcher's poll waits, when they take turns within about ``wait``."""
        count = len(self.each())
        return wait if count == 1 else max(wait / count, min(wait, MIN_SHARED_WAIT))

    @property
    def endpoint(self) -> str | None:
        """The node followed (that of the lowest partition watched)."""
        return self.each()[0].endpoint

    @property
    def seen(self) -> dict[str, int]:
        """Each key's last version delivered, over every partition."""
        seen: dict[str, int] = {}
        for watcher in self.each():
            for key, version in watcher.seen.items():
                seen[key] = max(version, seen.get(key, 0))
        return seen


def place(state: ClientState, watches: Watches, node: str | None, deadline: float) -> Plan[None]:
    """Learn the cluster's shape (unless known) and place ``watches`` on its partitions."""
    yield from partitions(state, deadline, wait=node is None)
    watches.place(state)


def synchronize(state: ClientState, watcher: Watcher, node: str | None, deadline: float) -> Plan[None]:
    """Take a node's state pages for the watch (another node's if one fails), then follow it."""
    last_error: ZcraqError = Unavailable("no node answered")
    while time.monotonic() < deadline:
        route = yield from cached_route(state, deadline, watcher.partition)
        members = route.topology.members if route.topology else ()
        # One node asked: its gaps are the answer. Else every member had its chance.
        watcher.accept_gaps = node is not None or watcher.gap_tries >= max(1, len(members))
        endpoint = (yield from node_endpoint(state, node, deadline)) if node \
            else (yield from pick_reader(state, deadline, watcher.partition))
        if endpoint is None:
            last_error = Unavailable(f"no node {node!r} in the chain" if node else "no node to watch: the chain is "
                                     f"empty or the coordinator did not answer{route.where()}")
        else:
            failure = yield from _take_pages(state, watcher, endpoint, deadline, named=node is not None)
            if failure is None:
                watcher.synchronized_with(endpoint)
                return
            last_error = failure
        state.forget_topology()
        yield from pause(deadline)
    raise last_error


def _take_pages(state: ClientState, watcher: Watcher, endpoint: str, deadline: float,
                named: bool = False) -> Plan[ZcraqError | None]:
    """Every state page of ``endpoint``; the error that ended it instead (the node is skipped a
    while, unless it only lacks the partition). ``named``: the caller named this node."""
    watcher.begin_state()
    after: str | None = None
    while True:
        request = WatchState(key=watcher.key, prefix=watcher.prefix, after=after, limit=MAX_WATCH_ITEMS,
                             values=not watcher.baseline, id=state.next_id(), partition=field_of(watcher.partition))
        outcome = yield from call(endpoint, request, state.attempt_deadline(deadline))
        if isinstance(outcome, Timeout):
            state.avoid(endpoint)
            return Timeout(f"{endpoint} did not answer in time")
        reply, values = outcome
        if isinstance(reply, Error):
            if reply.code not in READ_RETRYABLE or (named and reply.code == "wrong_partition"):
                raise error_of(reply.code, reply.message or reply.code)
            state.note_refusal(endpoint, reply.code)
            return error_of(reply.code, f"{endpoint}: {reply.message}")
        if not watcher.take_state(reply, values, endpoint):
            watcher.begin_state()
            after = None
            continue
        if reply.cursor is None or reply.cursor is msgspec.UNSET:
            return None
        after = reply.cursor


def poll(state: ClientState, watcher: Watcher, wait: float) -> Plan[list[Change]]:
    """The next changes from the node followed (an empty list when none came within ``wait``). A
    node that cannot go on is dropped: the next call synchronizes first."""
    endpoint = watcher.endpoint
    assert endpoint is not None, "synchronize first"
    wait_ms = max(0, min(MAX_WATCH_WAIT_MS, int(wait * 1000)))
    request = Watch(log=watcher.log, after=watcher.after, key=watcher.key, prefix=watcher.prefix,
                    limit=MAX_WATCH_ITEMS, wait_ms=wait_ms, id=state.next_id(), partition=field_of(watcher.partition))
    outcome = yield from call(endpoint, request, time.monotonic() + wait_ms / 1000 + max(1.0, state.timeout / 3))
    if isinstance(outcome, Timeout):
        state.avoid(endpoint)
        watcher.lose_node()
        return []
    reply, values = outcome
    if isinstance(reply, Error):
        if reply.code == "watch_pruned":
            watcher.lose_node()  # the same node will do: its state pages say what is missing
            return []
        if reply.code not in READ_RETRYABLE:
            raise error_for(reply.code, reply.message or reply.code)
        if reply.code == "wrong_partition":
            state.forget_topology()  # the replica moved away: the table says where it went
        else:
            state.avoid(endpoint)
        watcher.lose_node()
        return []
    changes = watcher.take_changes(reply, values, endpoint)
    if not watcher.synchronized:
        state.avoid(endpoint)  # its log lacks versions: another member's may have them
    return changes


__all__ = ["Change", "DEFAULT_POLL_WAIT", "Watcher", "Watches", "place", "poll", "synchronize"]
