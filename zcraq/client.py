"""ZClient: the Python client. Reads spread over every node; writes go to the head. In a
partitioned cluster each key's requests go to its partition's chain (zcraq/clientroutes.py).

A ZClient is not thread-safe (ZeroMQ sockets are not): use one per thread, or one AsyncZClient
(zcraq/async_client.py) shared by many asyncio tasks.

What to send where, when to retry and what a missing answer means is decided in
zcraq/clientcore.py, shared with AsyncZClient; this module owns the blocking sockets. Retries
follow what is safe. A read can be retried anywhere. A write is retried only when the node refused
it before doing anything (not the head, not serving); once a write may have been applied, a missing
answer raises ``WriteOutcomeUnknown`` instead of writing twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zcraq import clientbatches, clientcore, clientscan, clientwatch, sockets, wire
from zcraq.client_config import client_setup
from zcraq.clientcore import Answer, ClientState, Pause, Plan, Step, T
from zcraq.clientroutes import Partition, PartitionTable, single
from zcraq.errors import (AuthenticationError, BadRequest, BatchFailed, ClientClosed, Forbidden, KeyNotFound,
                          Timeout, Unavailable, WriteOutcomeUnknown, ZcraqError)
from zcraq.messages import Limits, Reply, Request, StatusRequest, request_type
from zcraq.security import Curve
from zcraq.topology import EMPTY, Topology

REFUSAL_WAIT_MS = 500  # how long a failed send waits for the monitor to report a refused handshake


class ZClient:
    def __init__(self, coordinator: str | None = None, *, timeout: float | None = None,
                 config: str | os.PathLike[str] | None = None) -> None:
        """``coordinator``: its request endpoint, ``tcp://HOST:PORT``; default: the config file's,
        else the one config/coordinator.toml starts (or $ZCRAQ_COORDINATOR). ``timeout``: seconds
        any call may take in all, retries included (default: the config file's, else 5).
        ``config``: a client config file (zcraq/client_config.py), needed for a cluster with CURVE
        keys. Raises ConfigError for a config file or key that cannot be used."""
        setup = client_setup(coordinator, timeout, config)
        clientcore.check_endpoint(setup.coordinator)
        self.timeout = setup.timeout
        self._curve = setup.curve
        self._state = ClientState(setup.coordinator, self.timeout,
                                  setup.curve.coordinator_key if setup.curve else None, setup.curve is not None,
                                  setup.coordinators)
        self._ctx = zmq.Context()
        self._sockets: dict[str, _Connection] = {}
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def coordinator(self) -> str:
        """The coordinator's request endpoint asked now (of several configured: the one that
        answered last)."""
        return self._state.coordinator

    def topology(self) -> Topology:
        """The chain as the coordinator sees it now; in a partitioned cluster, partition 0's (see
        partitions())."""
        return self._run(clientcore.fetch_topology(self._state, self._state.deadline()))

    def partition_table(self) -> PartitionTable | None:
        """A partitioned cluster's table as the coordinator sees it now; None for a one-chain cluster."""
        return self._run(clientcore.fetch_table(self._state, self._state.deadline()))

    def partitions(self) -> list[Partition]:
        """Every partition's chain (and the node assigned to join it, if any), in partition order,
        as the coordinator sees them now; a one-chain cluster has one, partition 0."""
        table = self.partition_table()
        return list((table or single(self._state.topology or EMPTY)).partitions)

    def write(self, key: str, value: bytes | str, *, if_version: int | None = None) -> int:
        """Store ``value`` under ``key``; returns the committed version. ``if_version``: only if the
        key's current version is that (0: only if the key has no value); otherwise raises
        ConditionFailed, with the current version, and nothing is written."""
        build, size = clientcore.write_request(key, value, if_version)
        ok = self._run(clientcore.write(self._state, key, build, size, self._state.deadline()))
        return ok.version  # type: ignore[return-value]

    def delete(self, key: str, *, if_version: int | None = None) -> int:
        """Delete ``key``; returns the version of the deletion. ``if_version`` as for write()."""
        return self.delete_and_report(key, if_version=if_version)[0]

    def delete_and_report(self, key: str, *, if_version: int | None = None) -> tuple[int, bool]:
        """Delete ``key``; returns the version of the deletion and whether the key had a value just
        before it (a deletion of a missing key is a version too). ``if_version`` as for write()."""
        build = clientcore.delete_request(key, if_version)
        ok = self._run(clientcore.write(self._state, key, build, 0, self._state.deadline()))
        return ok.version, ok.existed is True  # type: ignore[return-value]

    @property
    def limits(self) -> Limits | None:
        """The largest key and value the cluster accepts, once the coordinator has told them."""
        return self._state.limits

    def read(self, key: str, node: str | None = None, *, mode: str = "strong",
             max_staleness: float | None = None) -> bytes:
        """The committed value of ``key``. ``node``: a node id or service endpoint to ask;
        default: spread over every node. ``mode``: "strong" (linearizable), "eventual" (the
        newest version committed at that node, never asking the tail) or "bounded" (a value that
        was the committed one at most ``max_staleness`` seconds before the node answered, default
        1 s; the tail is asked only when the node cannot tell that)."""
        return self.read_versioned(key, node, mode=mode, max_staleness=max_staleness)[0]

    def read_versioned(self, key: str, node: str | None = None, *, mode: str = "strong",
                       max_staleness: float | None = None) -> tuple[bytes, int]:
        """Like read(), with the version of the value returned."""
        how = clientcore.ReadMode.of(mode, max_staleness)
        return self._run(clientcore.read(self._state, key, node, how, self._state.deadline()))

    def read_many(self, keys: Sequence[str], node: str | None = None, *, mode: str = "strong",
                  max_staleness: float | None = None) -> list[bytes | None]:
        """The committed values of ``keys``, in order: None for a key that does not exist (where
        read() raises KeyNotFound). Carried by as few requests as the limits allow (up to 1,000
        keys each; in a partitioned cluster, each of one partition, so keys of different partitions
        are not read at one moment). Raises as read() does when some key cannot be read within
        the timeout."""
        found = self.read_many_versioned(keys, node, mode=mode, max_staleness=max_staleness)
        return [item[0] if item else None for item in found]

    def read_many_versioned(self, keys: Sequence[str], node: str | None = None, *, mode: str = "strong",
                            max_staleness: float | None = None) -> list[tuple[bytes, int] | None]:
        """Like read_many(), with each value's version."""
        how = clientcore.ReadMode.of(mode, max_staleness)
        return self._run(clientbatches.read_many(self._state, keys, node, how, self._state.deadline()))

    def scan(self, prefix: str = "", *, start: str = "", end: str | None = None, limit: int | None = None,
             page_keys: int = clientscan.DEFAULT_PAGE_KEYS, node: str | None = None, mode: str = "strong",
             max_staleness: float | None = None) -> Iterator[tuple[str, bytes, int]]:
        """(key, value, version) of every key from ``start`` (inclusive) to ``end`` (exclusive)
        that begins with ``prefix`` and has a value, in the order of the keys' UTF-8 bytes; at most
        ``limit`` of them. Each value is what a read of its key in ``mode`` (strong by default)
        returned while the scan ran; the scan as a whole is not a snapshot (README, *Scans*). Asks
        one node per page of ``page_keys`` keys, each page with its own deadline, spread over the
        nodes like reads (or ``node``). In a partitioned cluster each partition is paged through
        on its own (``node``, if given, is asked for every one) and the items merged in key order."""
        span, how = clientscan.Range(start, end, prefix), clientcore.ReadMode.of(mode, max_staleness)
        merge = clientscan.Merge(page_keys, limit)
        if merge.wanted:
            merge.place(self._run(clientcore.partitions(self._state, self._state.deadline(), node is None)))
        while (page := merge.next_page()) is not None:
            items, after = self._run(clientscan.scan_page(self._state, span, page.after, page.size, node, how,
                                                          self._state.deadline(), page.partition))
            yield from merge.take(page.partition, items, after)

    def watch(self, key: str | None = None, *, prefix: str | None = None, since_version: int | None = None,
              since_versions: Mapping[str, int] | None = None, node: str | None = None,
              poll_wait: float = clientwatch.DEFAULT_POLL_WAIT) -> WatchStream:
        """Every committed change of ``key`` (or of every key that begins with ``prefix``), as
        ``Change(key, version, value, pruned)`` (value None: deleted), in version order per key,
        without end. ``since_version``: the changes after that version of each key (default: those
        after the watch starts); ``since_versions``: resume where another watch left off (its
        ``versions``). Follows one node (``node``, or any) and moves to another when it
        fails, delivering nothing twice and skipping nothing; when changes were no longer kept
        anywhere it looked, the key's value after them comes marked ``pruned``. Each poll waits up
        to ``poll_wait`` seconds at the node; raises as a read does when no node answers within the
        timeout. A prefix watch keeps each key's last version in memory. In a partitioned cluster a
        key's watch follows its partition; a prefix watch follows every partition, its polls
        taking turns (each waits a share of ``poll_wait``), and merges their changes."""
        return WatchStream(self, clientwatch.Watches(key, prefix, since_version, since_versions), node, poll_wait)

    def write_many(self, items: Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]]) -> list[int]:
        """Write every (key, value) pair; returns each one's committed version, in order. Each key
        is written as by write(); the batch is not atomic (in a partitioned cluster it is split by
        partition, and keys of different partitions are written by different chains, one request
        after the other). When some keys failed and others did not, raises BatchFailed with every
        key's outcome; when the batch failed as a whole, the error write() would raise."""
        keys, values = clientbatches.values_of(items)
        outcomes = self._run(clientbatches.write_many(self._state, keys, values, self._state.deadline()))
        return [ok.version for ok in clientbatches.settle(outcomes, "write_many")]  # type: ignore[misc]

    def delete_many(self, keys: Sequence[str]) -> list[tuple[int, bool]]:
        """Delete every key; returns, in order, each deletion's version and whether the key had a
        value just before it. Not atomic, split by partition, and failures as for write_many()."""
        outcomes = self._run(clientbatches.write_many(self._state, list(keys), None, self._state.deadline()))
        return [(ok.version, ok.existed is True)  # type: ignore[misc]
                for ok in clientbatches.settle(outcomes, "delete_many")]

    def status(self, node: str | None = None) -> dict[str, Any]:
        """A node's own report (role, epoch, counters), or the coordinator's when ``node`` is None."""
        return self._run(clientcore.status(self._state, node, self._state.deadline()))

    def statuses(self, nodes: Sequence[str]) -> dict[str, dict[str, Any] | ZcraqError]:
        """Every node's own report, or the error that stands in for it. The nodes (ids or service
        endpoints) are asked all at once, so the whole call takes at most ``timeout`` however
        many of them do not answer."""
        deadline = self._state.deadline()
        results: dict[str, dict[str, Any] | ZcraqError] = {}
        asked: dict[str, tuple[str, _Connection, StatusRequest]] = {}
        for node in nodes:
            try:
                endpoint = self._run(clientcore.node_endpoint(self._state, node, deadline))
                if endpoint is None:
                    raise Unavailable(f"no node {node!r} in the chain")
                request = StatusRequest(id=self._state.next_id())
                asked[node] = (endpoint, self._send(endpoint, request), request)
            except ZcraqError as error:
                results[node] = error
        for node, (endpoint, connection, request) in asked.items():
            try:
                reply, _values = self._receive(endpoint, connection, request, deadline)
                results[node] = clientcore.report(reply)
            except ZcraqError as error:
                results[node] = error
        return {node: results[node] for node in nodes}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for connection in self._sockets.values():
            connection.close()
        self._sockets.clear()
        # destroy, not term: a socket an interrupt (Ctrl-C) cut off half made is not in our
        # books, and term would wait for it forever.
        self._ctx.destroy(linger=0)

    def __enter__(self) -> ZClient:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _run(self, plan: Plan[T]) -> T:
        return clientcore.run_blocking(plan, self._perform)

    def _perform(self, step: Step) -> Answer | Timeout | None:
        if isinstance(step, Pause):
            time.sleep(step.seconds())
            return None
        try:
            if step.connect_first:
                self._connect_first(step.endpoint, step.deadline)
            return self._call(step.endpoint, step.request, step.deadline)
        except Timeout as error:
            return error

    def _socket(self, endpoint: str) -> _Connection:
        connection = self._sockets.get(endpoint)
        if connection is None:
            server_key = self._run(clientcore.server_key(self._state, endpoint))
            connection = _Connection(self._ctx, endpoint, self._curve, server_key)
            self._sockets[endpoint] = connection
        return connection

    def _connect_first(self, endpoint: str, deadline: float) -> None:
        """Wait until the connection to ``endpoint`` is up before a write is handed to it. A
        message queued on a connection still in its handshake goes out whenever the peer wakes
        up, even after the socket was closed: a write given up as "never sent" could be applied."""
        connection = self._socket(endpoint)
        while not connection.connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not connection.monitor.poll(max(1, int(remaining * 1000))):
                self._drop_socket(endpoint)
                raise Timeout(f"no connection to {endpoint}", delivered=False)
            refusal = connection.handshake_failure()
            if refusal is not None:
                self._drop_socket(endpoint)
                raise AuthenticationError(f"{endpoint} refused the connection: {refusal}")

    def _call(self, endpoint: str, request: Request, deadline: float) -> tuple[Reply, list[bytes]]:
        """Send ``request`` and wait for the reply that carries its id."""
        return self._receive(endpoint, self._send(endpoint, request), request, deadline)

    def _send(self, endpoint: str, request: Request) -> _Connection:
        if self._closed:
            raise ClientClosed("client is closed")
        connection = self._socket(endpoint)
        if not sockets.send_nowait(connection.sock, [b"", *wire.encode_request(request)]):
            # A handshake refused between connecting and sending leaves no pipe to send on.
            refusal = connection.refusal(REFUSAL_WAIT_MS)
            self._drop_socket(endpoint)
            if refusal is not None:
                raise AuthenticationError(f"{endpoint} refused the connection: {refusal}")
            raise Unavailable(f"cannot send to {endpoint}")
        return connection

    def _receive(self, endpoint: str, connection: _Connection, request: Request,
                 deadline: float) -> tuple[Reply, list[bytes]]:
        """Wait for the reply to ``request``. Past the deadline, a reply already there is still
        taken (statuses() collects answers that came while it waited for another node)."""
        sock = connection.sock
        late_looks = 8  # past the deadline: a few non-blocking looks, never an endless stream
        while True:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                ready = connection.wait(max(1, int(remaining * 1000)))
            else:
                late_looks -= 1
                ready = connection.wait(0) if late_looks >= 0 else None
            if ready is None:
                # Lazy Pirate: a fresh socket next time drops whatever is queued for a dead peer.
                connection.drain_events()  # a success still waiting on the monitor counts
                self._drop_socket(endpoint)
                raise Timeout(f"{request_type(request)}: no answer from {endpoint}", delivered=connection.connected)
            if ready is not sock:
                refusal = connection.handshake_failure()
                if refusal is None:
                    continue
                self._drop_socket(endpoint)
                raise AuthenticationError(f"{endpoint} refused the connection: {refusal}")
            frames = sock.recv_multipart()
            try:
                reply, values = wire.decode_reply(frames[1:] if frames and frames[0] == b"" else frames)
            except wire.WireError:
                continue
            if reply.id == request.id:
                return reply, values
            # else: a late answer to an earlier, abandoned request

    def _drop_socket(self, endpoint: str) -> None:
        connection = self._sockets.pop(endpoint, None)
        if connection is not None:
            connection.close()


class WatchStream:
    """The changes ZClient.watch() delivers, as an iterator; ``following``: the service endpoint of
    the node it reads them from now (None between nodes; over several partitions, the lowest one's)."""

    def __init__(self, client: ZClient, watches: clientwatch.Watches, node: str | None, poll_wait: float) -> None:
        self._client, self._watches, self._node, self._poll_wait = client, watches, node, poll_wait
        self._ready: list[clientwatch.Change] = []

    @property
    def following(self) -> str | None:
        return self._watches.endpoint

    @property
    def versions(self) -> dict[str, int]:
        """Each key's last version delivered (or known at the start): ``since_versions`` for a watch
        that resumes this one, in another client or process."""
        return self._watches.seen

    def __iter__(self) -> WatchStream:
        return self

    def __next__(self) -> clientwatch.Change:
        while not self._ready:
            self._ready = self.poll()
            self._ready.reverse()
        return self._ready.pop()

    def poll(self) -> list[clientwatch.Change]:
        """One poll: the changes that came within about ``poll_wait`` seconds, maybe none (for a
        caller that must look up now and then; do not mix with iterating)."""
        client, watches = self._client, self._watches
        state = client._state  # noqa: SLF001
        if not watches.placed:
            client._run(clientwatch.place(state, watches, self._node, state.deadline()))  # noqa: SLF001
        changes: list[clientwatch.Change] = []
        wait = watches.wait_each(self._poll_wait)
        for watcher in watches.each():
            try:
                if not watcher.synchronized:
                    client._run(clientwatch.synchronize(state, watcher, self._node, state.deadline()))  # noqa: SLF001
                # Once some changes are in hand, the other partitions are only looked at, not waited for.
                changes += client._run(clientwatch.poll(state, watcher, 0.0 if changes else wait))  # noqa: SLF001
            except ZcraqError:
                if changes:  # taken from other partitions' watchers, which count them delivered: deliver them
                    return changes  # the watcher that failed tries again at the next poll
                raise
        return changes


class _Connection:
    """A DEALER to one server, with a monitor that reports a refused CURVE handshake at once (a
    refused handshake is otherwise invisible: the requests would only time out)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Curve | None, server_key: str | None) -> None:
        self.sock, self.monitor = sockets.monitored_dealer(ctx, endpoint, curve, server_key)
        self.connected = False  # a handshake succeeded: what was sent may have arrived
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)

    def wait(self, timeout_ms: int) -> zmq.Socket | None:
        """The socket that is readable first (the DEALER or the monitor), or None at the timeout."""
        ready = dict(self.poller.poll(timeout_ms))
        if self.sock in ready:
            return self.sock
        return self.monitor if ready else None

    def drain_events(self) -> None:
        while self.monitor.poll(0):
            self.handshake_failure()

    def refusal(self, wait_ms: int) -> str | None:
        """Why the handshake failed, if the monitor reports a failure within ``wait_ms``."""
        while self.monitor.poll(wait_ms):
            failure = self.handshake_failure()
            if failure is not None:
                return failure
        return None

    def handshake_failure(self) -> str | None:
        """Take one monitor event: why the handshake failed, or None (it succeeded: noted)."""
        try:
            event = int(recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"])
        except zmq.Again:
            return None
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.connected = True
        return sockets.HANDSHAKE_FAILURES.get(event)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


__all__ = ["ZClient", "ZcraqError", "KeyNotFound", "Timeout", "WriteOutcomeUnknown", "Unavailable", "BadRequest",
           "AuthenticationError", "Forbidden", "BatchFailed"]
