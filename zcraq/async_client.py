"""AsyncZClient: ZClient for asyncio, with many requests in flight over one connection per node.

    async with AsyncZClient("tcp://127.0.0.1:7000") as client:
        await asyncio.gather(*(client.write(f"user:{n}", f"name{n}") for n in range(100)))
        names = await asyncio.gather(*(client.read(f"user:{n}") for n in range(100)))

Same arguments, methods, retries and exceptions as ZClient: both run the plans of
zcraq/clientcore.py, this module only performs their steps with asyncio. What differs is how the
requests travel:

- One DEALER per endpoint (a node's service endpoint, the coordinator), shared by every call. Each
  request carries its own id. The event loop watches each socket's file descriptor, and one reader
  per connection drains the replies and hands each to the call waiting for its id; a reply for a
  call that has already given up finds nobody and is dropped.
- A second reader per connection, on its monitor socket, notes when the handshake succeeds (a write
  is handed only to a connection whose handshake is done, as in ZClient) or is refused (every call
  on it then raises AuthenticationError at once).
- At most ``max_in_flight`` calls run at once; later callers wait in line, each within its own
  deadline (past it: Unavailable, nothing was sent). A call has at most one request on the wire at a
  time, so this also bounds what the connections hold. Concurrent calls that need a fresh topology
  share one topology request.
- A call that times out retires its connection, as ZClient drops its socket ("Lazy Pirate"): new
  calls get a fresh one, while calls already waiting on the old one keep waiting for their replies
  (a write there may well be answered). The old socket is closed when its last call is done.
- ``close()`` (or leaving ``async with``) ends every call still in flight: ClientClosed, or
  WriteOutcomeUnknown for a write or delete already handed to a connection; sockets close with
  LINGER 0.

"Safe to share between tasks": any number of tasks of one event loop may call one client at once.
It is not thread-safe, and belongs to the event loop that first used it.

The sockets are plain pyzmq sockets read by the loop's own readers, not zmq.asyncio sockets: those
cost a future and several flag-enum operations per message, and on this stack the client spent
about twice the CPU per read with them (BENCHMARKS.md, "Pipelined client").
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from zcraq import clientbatches, clientcore, clientscan, clientwatch, sockets, wire
from zcraq.client_config import client_setup
from zcraq.clientcore import Answer, Call, ClientState, Pause, Plan, Step, T
from zcraq.clientroutes import Partition, PartitionTable, single
from zcraq.errors import (AuthenticationError, ClientClosed, Timeout, Unavailable, WriteOutcomeUnknown,
                          ZcraqError)
from zcraq.messages import Limits, Request, request_type
from zcraq.security import Curve
from zcraq.topology import EMPTY, Topology

DEFAULT_MAX_IN_FLIGHT = 1024
REFUSAL_WAIT = 0.5  # seconds a failed send waits for the monitor to report a refused handshake
DRAIN_BATCH = 256  # replies taken per turn of the loop, so one busy connection does not starve the rest
# Plain ints: an operation on pyzmq's flag enums costs microseconds, paid on every message.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)


class AsyncZClient:
    def __init__(self, coordinator: str | None = None, *, timeout: float | None = None,
                 config: str | os.PathLike[str] | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        """``coordinator``, ``timeout``, ``config``: as for ZClient. ``max_in_flight``: how many
        calls may run at once (1 to the socket high-water mark, 10,000); the others wait."""
        if not 1 <= max_in_flight <= sockets.HWM:
            raise ValueError(f"max_in_flight must be from 1 to {sockets.HWM}, got {max_in_flight}")
        setup = client_setup(coordinator, timeout, config)
        clientcore.check_endpoint(setup.coordinator)
        self.timeout = setup.timeout
        self.max_in_flight = max_in_flight
        self._curve = setup.curve
        self._state = ClientState(setup.coordinator, self.timeout,
                                  setup.curve.coordinator_key if setup.curve else None, setup.curve is not None,
                                  setup.coordinators)
        self._ctx = zmq.Context()
        self._connections: dict[str, _Connection] = {}
        self._retired: set[_Connection] = set()  # replaced, still serving the calls they carry
        self._slots = _Slots(max_in_flight)
        self._refresh: asyncio.Task[Answer | Timeout] | None = None  # the shared topology request
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def coordinator(self) -> str:
        """The coordinator's request endpoint asked now (of several configured: the one that
        answered last)."""
        return self._state.coordinator

    async def topology(self) -> Topology:
        """The chain as the coordinator sees it now; in a partitioned cluster, partition 0's."""
        deadline = self._state.deadline()
        return await self._run(clientcore.fetch_topology(self._state, deadline), deadline)

    async def partition_table(self) -> PartitionTable | None:
        """A partitioned cluster's table as the coordinator sees it now; None for a one-chain cluster."""
        deadline = self._state.deadline()
        return await self._run(clientcore.fetch_table(self._state, deadline), deadline)

    async def partitions(self) -> list[Partition]:
        """Every partition's chain, as ZClient.partitions()."""
        table = await self.partition_table()
        return list((table or single(self._state.topology or EMPTY)).partitions)

    async def write(self, key: str, value: bytes | str, *, if_version: int | None = None) -> int:
        """Store ``value`` under ``key``; returns the committed version. ``if_version``: only if the
        key's current version is that (0: only if the key has no value); otherwise raises
        ConditionFailed, with the current version, and nothing is written."""
        build, size = clientcore.write_request(key, value, if_version)
        deadline = self._state.deadline()
        ok = await self._run(clientcore.write(self._state, key, build, size, deadline), deadline)
        return ok.version  # type: ignore[return-value]

    async def delete(self, key: str, *, if_version: int | None = None) -> int:
        """Delete ``key``; returns the version of the deletion. ``if_version`` as for write()."""
        return (await self.delete_and_report(key, if_version=if_version))[0]

    async def delete_and_report(self, key: str, *, if_version: int | None = None) -> tuple[int, bool]:
        """Delete ``key``; returns the version of the deletion and whether the key had a value just
        before it (a deletion of a missing key is a version too). ``if_version`` as for write()."""
        build = clientcore.delete_request(key, if_version)
        deadline = self._state.deadline()
        ok = await self._run(clientcore.write(self._state, key, build, 0, deadline), deadline)
        return ok.version, ok.existed is True  # type: ignore[return-value]


    @property
    def limits(self) -> Limits | None:
        """The largest key and value the cluster accepts, once the coordinator has told them."""
        return self._state.limits

    async def read(self, key: str, node: str | None = None, *, mode: str = "strong",
                   max_staleness: float | None = None) -> bytes:
        """The committed value of ``key``. ``node``, ``mode`` and ``max_staleness`` as for
        ZClient.read()."""
        return (await self.read_versioned(key, node, mode=mode, max_staleness=max_staleness))[0]

    async def read_versioned(self, key: str, node: str | None = None, *, mode: str = "strong",
                             max_staleness: float | None = None) -> tuple[bytes, int]:
        """Like read(), with the version of the value returned."""
        how = clientcore.ReadMode.of(mode, max_staleness)
        deadline = self._state.deadline()
        return await self._run(clientcore.read(self._state, key, node, how, deadline), deadline)

    async def read_many(self, keys: Sequence[str], node: str | None = None, *, mode: str = "strong",
                        max_staleness: float | None = None) -> list[bytes | None]:
        """The committed values of ``keys``, in order; None for a key that does not exist. As
        ZClient.read_many() (in a partitioned cluster: a request per partition, not one moment)."""
        found = await self.read_many_versioned(keys, node, mode=mode, max_staleness=max_staleness)
        return [item[0] if item else None for item in found]

    async def read_many_versioned(self, keys: Sequence[str], node: str | None = None, *, mode: str = "strong",
                                  max_staleness: float | None = None) -> list[tuple[bytes, int] | None]:
        """Like read_many(), with each value's version."""
        how = clientcore.ReadMode.of(mode, max_staleness)
        deadline = self._state.deadline()
        return await self._run(clientbatches.read_many(self._state, keys, node, how, deadline), deadline)

    async def scan(self, prefix: str = "", *, start: str = "", end: str | None = None, limit: int | None = None,
                   page_keys: int = clientscan.DEFAULT_PAGE_KEYS, node: str | None = None, mode: str = "strong",
                   max_staleness: float | None = None) -> AsyncIterator[tuple[str, bytes, int]]:
        """(key, value, version) of the keys in the range, as ZClient.scan() yields them."""
        span, how = clientscan.Range(start, end, prefix), clientcore.ReadMode.of(mode, max_staleness)
        merge = clientscan.Merge(page_keys, limit)
        if merge.wanted:
            deadline = self._state.deadline()
            merge.place(await self._run(clientcore.partitions(self._state, deadline, node is None), deadline))
        while (page := merge.next_page()) is not None:
            deadline = self._state.deadline()
            items, after = await self._run(clientscan.scan_page(self._state, span, page.after, page.size, node, how,
                                                                deadline, page.partition), deadline)
            for item in merge.take(page.partition, items, after):
                yield item

    async def watch(self, key: str | None = None, *, prefix: str | None = None, since_version: int | None = None,
                    since_versions: Mapping[str, int] | None = None, node: str | None = None,
                    poll_wait: float = clientwatch.DEFAULT_POLL_WAIT) -> AsyncIterator[clientwatch.Change]:
        """Every committed change of ``key`` (or of the keys beginning with ``prefix``), as
        ZClient.watch() yields them (over several partitions, polls taking turns). Each poll holds
        one of the client's request slots while it waits at the node."""
        watches = clientwatch.Watches(key, prefix, since_version, since_versions)
        deadline = self._state.deadline()
        await self._run(clientwatch.place(self._state, watches, node, deadline), deadline)
        wait = watches.wait_each(poll_wait)
        while True:
            changes: list[clientwatch.Change] = []
            try:
                for watcher in watches.each():
                    if not watcher.synchronized:
                        deadline = self._state.deadline()
                        await self._run(clientwatch.synchronize(self._state, watcher, node, deadline), deadline)
                    waited = 0.0 if changes else wait  # changes in hand: the other partitions are only looked at
                    deadline = self._state.deadline() + waited
                    changes += await self._run(clientwatch.poll(self._state, watcher, waited), deadline)
            except ZcraqError:
                for change in changes:  # other partitions' watchers count them delivered: deliver them first
                    yield change
                raise
            for change in changes:
                yield change

    async def write_many(self, items: Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]]) -> list[int]:
        """Write every (key, value) pair; each one's committed version, in order. As
        ZClient.write_many(), failures included: not atomic, split by partition in a partitioned cluster."""
        keys, values = clientbatches.values_of(items)
        deadline = self._state.deadline()
        outcomes = await self._run(clientbatches.write_many(self._state, keys, values, deadline), deadline)
        return [ok.version for ok in clientbatches.settle(outcomes, "write_many")]  # type: ignore[misc]

    async def delete_many(self, keys: Sequence[str]) -> list[tuple[int, bool]]:
        """Delete every key; each deletion's version and whether the key had a value. As
        ZClient.delete_many(): not atomic, split by partition in a partitioned cluster."""
        deadline = self._state.deadline()
        outcomes = await self._run(clientbatches.write_many(self._state, list(keys), None, deadline), deadline)
        return [(ok.version, ok.existed is True)  # type: ignore[misc]
                for ok in clientbatches.settle(outcomes, "delete_many")]

    async def status(self, node: str | None = None) -> dict[str, Any]:
        """A node's own report (role, epoch, counters), or the coordinator's when ``node`` is None."""
        deadline = self._state.deadline()
        return await self._run(clientcore.status(self._state, node, deadline), deadline)

    async def statuses(self, nodes: Sequence[str]) -> dict[str, dict[str, Any] | ZcraqError]:
        """Every node's own report, or the error that stands in for it. The nodes (ids or service
        endpoints) are asked all at once, so the whole call takes at most ``timeout`` however
        many of them do not answer."""
        deadline = self._state.deadline()

        async def one(node: str) -> dict[str, Any] | ZcraqError:
            try:
                return await self._run(clientcore.node_status(self._state, node, deadline), deadline)
            except ZcraqError as error:
                return error

        return dict(zip(nodes, await asyncio.gather(*(one(node) for node in nodes))))

    async def close(self) -> None:
        """End every call still in flight (ClientClosed, or WriteOutcomeUnknown for a write already
        handed to a connection) and close every socket."""
        if self._closed:
            return
        self._closed = True
        self._slots.close()
        for connection in [*self._connections.values(), *self._retired]:
            connection.close()
        self._connections.clear()
        self._retired.clear()
        if self._refresh is not None:  # it ends with its connection (ClientClosed), like every call
            await asyncio.gather(self._refresh, return_exceptions=True)
        # destroy, not term: a socket an interrupt (Ctrl-C) cut off half made is not in our
        # books, and term would wait for it forever.
        self._ctx.destroy(linger=0)

    async def __aenter__(self) -> AsyncZClient:
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException] | None, BaseException | None,
                                          TracebackType | None]) -> None:
        await self.close()

    # ------------------------------------------------------------------ driving plans

    async def _run(self, plan: Plan[T], deadline: float) -> T:
        """Run one call's plan in a slot of its own."""
        try:
            self._check_open()
        except BaseException:
            plan.close()
            raise
        await self._slots.acquire(deadline)
        try:
            return await self._drive(plan)
        finally:
            self._slots.release()

    async def _drive(self, plan: Plan[T]) -> T:
        try:
            step = next(plan)
            while True:
                step = plan.send(await self._perform(step))
        except StopIteration as done:
            return done.value
        finally:
            plan.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("client is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("an AsyncZClient belongs to the event loop that first used it")

    async def _perform(self, step: Step) -> Answer | Timeout | None:
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds())
            if self._closed:
                raise ClientClosed("client is closed")
            return None
        if step.shared:
            return await self._shared(step)
        return await self._exchange(step)

    async def _shared(self, step: Call) -> Answer | Timeout:
        """The answer to ``step``'s request, or to the same request of another call still on its way."""
        task = self._refresh
        if task is None or task.done():
            task = self._refresh = asyncio.create_task(self._exchange(step))
            task.add_done_callback(_taken)
        try:
            async with asyncio.timeout(max(0.0, step.deadline - time.monotonic())):
                return await asyncio.shield(task)
        except TimeoutError:
            return Timeout(f"{request_type(step.request)}: no answer from {step.endpoint}")

    async def _exchange(self, step: Call) -> Answer | Timeout:
        """Send ``step``'s request over the endpoint's connection and wait for its reply."""
        if self._closed:
            raise ClientClosed("client is closed")
        connection = await self._connection(step.endpoint)
        connection.users += 1
        try:
            return await self._over(connection, step)
        finally:
            connection.users -= 1
            connection.close_if_idle()

    async def _over(self, connection: _Connection, step: Call) -> Answer | Timeout:
        try:
            if step.connect_first:
                await connection.handshake(step.deadline)
            reply = await connection.send(step.request)
        except (Timeout, AuthenticationError, Unavailable) as error:
            self._retire(connection)
            if isinstance(error, Timeout):
                return error
            raise
        try:
            return await connection.receive(step.request, reply, step.deadline)
        except Timeout as error:
            self._retire(connection)  # Lazy Pirate: a fresh socket for the next calls
            return error
        except AuthenticationError:
            self._retire(connection)
            raise
        except ClientClosed:
            if step.connect_first:  # a write, handed to a connection whose handshake was done
                raise WriteOutcomeUnknown(f"{request_type(step.request)}: the client was closed before "
                                          f"{step.endpoint} answered; it may or may not have committed") from None
            raise

    async def _connection(self, endpoint: str) -> _Connection:
        connection = self._connections.get(endpoint)
        if connection is None:
            key = await self._drive(clientcore.server_key(self._state, endpoint))
            if self._closed:
                raise ClientClosed("client is closed")
            connection = self._connections.get(endpoint)  # another call may have opened it meanwhile
            if connection is None:
                connection = self._connections[endpoint] = _Connection(
                    self._ctx, asyncio.get_running_loop(), endpoint, self._curve, key)
        return connection

    def _retire(self, connection: _Connection) -> None:
        if self._connections.get(connection.endpoint) is connection:
            del self._connections[connection.endpoint]
        connection.retire()
        self._retired = {c for c in self._retired if not c.closed}  # stays as small as what is in flight
        if not connection.closed:
            self._retired.add(connection)


def _taken(task: asyncio.Task[Any]) -> None:
    """A shared request's failure that every waiter gave up on is no error to report."""
    if not task.cancelled():
        task.exception()


class _Slots:
    """At most ``size`` holders at once; the others wait in line, each until its deadline."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self.waiting: deque[asyncio.Future[None]] = deque()  # at most one per waiting caller
        self.closed = False

    async def acquire(self, deadline: float) -> None:
        if self.closed:
            raise ClientClosed("client is closed")
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await turn
        except BaseException as error:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release()  # handed a slot just as it gave up: the next in line gets it
            else:
                turn.cancel()
                if turn in self.waiting:
                    self.waiting.remove(turn)
            if isinstance(error, TimeoutError):
                raise Unavailable(f"{self.size} calls stayed in flight for the whole timeout; "
                                  "this one was not sent") from None
            raise

    def release(self) -> None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on
                return
        self.free += 1

    def close(self) -> None:
        self.closed = True
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_exception(ClientClosed("client is closed"))


class _Connection:
    """A DEALER to one server, shared by every call to it. The event loop watches the socket's file
    descriptor; its reader drains every reply waiting and hands each to the call waiting for its
    id. A second reader on the monitor socket notes the handshake's outcome.

    ZeroMQ's descriptor is edge-triggered: it signals that the socket's state changed, not that a
    message waits, and a send can take in a reply without signalling. So the reader drains until
    the socket says nothing is left, and a send has the reader look again in the same loop turn.
    """

    def __init__(self, ctx: zmq.Context, loop: asyncio.AbstractEventLoop, endpoint: str, curve: Curve | None,
                 server_key: str | None) -> None:
        self.endpoint = endpoint
        self.sock, self.monitor = sockets.monitored_dealer(ctx, endpoint, curve, server_key)
        self.connected = False  # a handshake succeeded: what was sent may have arrived
        self.refusal: str | None = None  # why the server refused the handshake
        self.closed = False
        self.retired = False  # no new calls; closed once the last one is done
        self.pending: dict[Any, asyncio.Future[Answer | None]] = {}  # request id -> its caller's future
        self.users = 0  # calls using the connection now
        self.changed = asyncio.Event()  # set once connected, refused or closed (none of them ends)
        self._loop = loop
        self._fds = (self.sock.FD, self.monitor.FD)
        self._drain_soon = False
        loop.add_reader(self._fds[0], self._drain)
        loop.add_reader(self._fds[1], self._watch)
        loop.call_soon(self._watch)  # events from before the reader was added

    async def handshake(self, deadline: float) -> None:
        """Return once the handshake is done; Timeout (nothing was sent) at the deadline."""
        while not self.connected:
            self._check_usable()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(f"no connection to {self.endpoint}", delivered=False)
            try:
                async with asyncio.timeout(remaining):
                    await self.changed.wait()
            except TimeoutError:
                raise Timeout(f"no connection to {self.endpoint}", delivered=False) from None

    async def send(self, request: Request) -> asyncio.Future[Answer | None]:
        """Hand ``request`` to the socket; the future its reply will resolve."""
        self._check_usable()
        reply: asyncio.Future[Answer | None] = self._loop.create_future()
        self.pending[request.id] = reply
        if self._send_nowait(wire.encode_request(request)):
            return reply
        del self.pending[request.id]
        # A handshake refused between connecting and sending leaves no pipe to send on.
        if self.refusal is None and not self.closed:
            try:
                async with asyncio.timeout(REFUSAL_WAIT):
                    await self.changed.wait()
            except TimeoutError:
                pass
        self._check_usable()
        raise Unavailable(f"cannot send to {self.endpoint}")

    async def receive(self, request: Request, reply: asyncio.Future[Answer | None], deadline: float) -> Answer:
        """Wait for ``reply`` (from send) until ``deadline``."""
        timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), _expire, reply)
        try:
            answer = await reply
        finally:
            timer.cancel()
            self.pending.pop(request.id, None)
        if answer is None:
            raise Timeout(f"{request_type(request)}: no answer from {self.endpoint}", delivered=self.connected)
        return answer

    def retire(self) -> None:
        self.retired = True
        self.close_if_idle()

    def close_if_idle(self) -> None:
        if self.retired and not self.users:
            self.close()

    def close(self) -> None:
        """Close the sockets; calls still waiting on them get ClientClosed (only the client's
        close() closes a connection that is in use)."""
        if self.closed:
            return
        self.closed = True
        for reply in self.pending.values():
            if not reply.done():
                reply.set_exception(ClientClosed(f"the client was closed before {self.endpoint} answered"))
        self.pending.clear()
        self.changed.set()
        if not self._loop.is_closed():
            for fd in self._fds:
                self._loop.remove_reader(fd)
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)

    def _check_usable(self) -> None:
        if self.closed:
            raise ClientClosed("client is closed")
        if self.refusal is not None:
            raise AuthenticationError(f"{self.endpoint} refused the connection: {self.refusal}")

    def _send_nowait(self, frames: list[bytes]) -> bool:
        """Send ``[b"", *frames]`` without blocking; False if the socket cannot take it now."""
        try:
            self.sock.send(b"", _MORE_NOBLOCK)
            for frame in frames[:-1]:
                self.sock.send(frame, _MORE_NOBLOCK)
            self.sock.send(frames[-1], _NOBLOCK)
        except zmq.ZMQError:  # Again: full, or no pipe since a refused handshake
            return False
        if not self._drain_soon:  # the send may have taken in replies without a signal
            self._drain_soon = True
            self._loop.call_soon(self._drain)
        return True

    def _drain(self) -> None:
        """The loop's reader: every reply waiting, up to a batch per turn, to its caller."""
        self._drain_soon = False
        if self.closed:
            return
        sock = self.sock
        for _ in range(DRAIN_BATCH):
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                if not cast(int, sock.getsockopt(zmq.EVENTS)) & _POLLIN:
                    return
                continue
            except zmq.ZMQError:
                return
            try:
                reply, values = wire.decode_reply(frames[1:] if frames and frames[0] == b"" else frames)
            except wire.WireError:
                continue  # not a reply of this protocol: no call can be told which one it was
            waiting = self.pending.pop(reply.id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result((reply, values))
            # else: a late reply to a call that gave up
        self._drain_soon = True  # more may be waiting: the rest after the other callbacks of this turn
        self._loop.call_soon(self._drain)

    def _watch(self) -> None:
        """The monitor's reader: a handshake succeeded, or was refused (every call on it fails)."""
        while not self.closed:
            try:
                event = int(recv_monitor_message(self.monitor, _NOBLOCK)["event"])
            except zmq.ZMQError:  # Again: nothing more
                return
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = True
                self.changed.set()
            elif event in sockets.HANDSHAKE_FAILURES and self.refusal is None:
                self.refusal = sockets.HANDSHAKE_FAILURES[event]
                for reply in self.pending.values():
                    if not reply.done():
                        reply.set_exception(AuthenticationError(f"{self.endpoint} refused the connection: "
                                                                f"{self.refusal}"))
                self.pending.clear()
                self.changed.set()


def _expire(reply: asyncio.Future[Answer | None]) -> None:
    if not reply.done():
        reply.set_result(None)  # no answer in time


__all__ = ["AsyncZClient", "DEFAULT_MAX_IN_FLIGHT"]
