"""ZClient: the Python client. Reads spread over every node; writes go to the head.

A ZClient is not thread-safe (ZeroMQ sockets are not): use one per thread.

Retries follow what is safe. A read can be retried anywhere. A write is retried only when the node
refused it before doing anything (not the head, not serving); once a write may have been applied,
a missing answer raises ``WriteOutcomeUnknown`` instead of writing twice.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from itertools import count
from types import TracebackType
from typing import Any

import msgspec
import zmq
from zmq.utils.monitor import recv_monitor_message

from zcraq import sockets, wire
from zcraq.config import default_coordinator_endpoint
from zcraq.endpoints import parse_endpoint
from zcraq.client_config import ClientConfig, load_client_config
from zcraq.errors import (AuthenticationError, BadRequest, Forbidden, KeyNotFound, Timeout, TooLarge, Unavailable,
                          WriteOutcomeUnknown, ZcraqError, error_for)
from zcraq.messages import (Delete, Error, Limits, Ok, Read, Reply, Request, StatusRequest, TopologyRequest, Write,
                            request_type)
from zcraq.security import Curve, KeyFileError, load_certificate, load_public_key
from zcraq.toml_tables import ConfigError
from zcraq.topology import Member, Topology

# Errors after which a write surely did not happen, so sending it again is safe.
_WRITE_RETRYABLE = {"not_head", "unavailable", "busy"}
_READ_RETRYABLE = {"unavailable", "not_tail", "wrong_epoch", "timeout"}
AVOID_SECONDS = 2.0  # a node that just failed a read is skipped this long (it may be dead)
DEFAULT_TIMEOUT = 5.0
REFUSAL_WAIT_MS = 500  # how long a failed send waits for the monitor to report a refused handshake


class ZClient:
    def __init__(self, coordinator: str | None = None, *, timeout: float | None = None,
                 config: str | os.PathLike[str] | None = None) -> None:
        """``coordinator``: its request endpoint, ``tcp://HOST:PORT``; default: the config file's,
        else the one config/coordinator.toml starts (or $ZCRAQ_COORDINATOR). ``timeout``: seconds
        any call may take in all, retries included (default: the config file's, else 5).
        ``config``: a client config file (zcraq/client_config.py), needed for a cluster with CURVE
        keys. Raises ConfigError for a config file or key that cannot be used."""
        settings = load_client_config(config) if config is not None else None
        self.coordinator = coordinator or (settings.coordinator if settings else default_coordinator_endpoint())
        self._check_endpoint(self.coordinator)
        self.timeout = timeout or (settings.timeout if settings and settings.timeout else DEFAULT_TIMEOUT)
        self._curve = _client_curve(settings) if settings is not None else None
        self._ctx = zmq.Context()
        self._sockets: dict[str, _Connection] = {}
        self._ids = count(1)
        self._topology: Topology | None = None
        self._topology_at = float("-inf")
        self._limits: Limits | None = None  # the coordinator's, once a topology reply told them
        self._next_node = random.randrange(1 << 16)
        self._avoid: dict[str, float] = {}  # endpoint -> until when reads skip it (it failed us)
        self._closed = False

    # ------------------------------------------------------------------ public API

    def topology(self) -> Topology:
        """The chain as the coordinator sees it now."""
        deadline = time.monotonic() + self.timeout
        reply, _values = self._call(self.coordinator, TopologyRequest(id=next(self._ids)), deadline)
        ok = self._ok(reply)
        if ok.topology is msgspec.UNSET:
            raise ZcraqError(f"{self.coordinator} answered a topology request without a topology")
        if ok.limits is not msgspec.UNSET:
            self._limits = ok.limits
        self._topology = ok.topology
        self._topology_at = time.monotonic()
        return self._topology

    def write(self, key: str, value: bytes | str) -> int:
        """Store ``value`` under ``key``; returns the committed version."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        return self._write(key, lambda request_id: Write(key, data, id=request_id), len(data)).version  # type: ignore[return-value]

    def delete(self, key: str) -> int:
        """Delete ``key``; returns the version of the deletion."""
        return self.delete_and_report(key)[0]

    def delete_and_report(self, key: str) -> tuple[int, bool]:
        """Delete ``key``; returns the version of the deletion and whether the key had a value just
        before it (a deletion of a missing key is a version too)."""
        ok = self._write(key, lambda request_id: Delete(key, id=request_id), 0)
        return ok.version, ok.existed is True  # type: ignore[return-value]

    @property
    def limits(self) -> Limits | None:
        """The largest key and value the cluster accepts, once the coordinator has told them."""
        return self._limits

    def read(self, key: str, node: str | None = None, *, mode: str = "strong") -> bytes:
        """The committed value of ``key``. ``node``: a node id or service endpoint to ask;
        default: spread over every node. ``mode``: "strong" (linearizable) or "eventual" (the
        newest version committed at that node, never asking the tail)."""
        return self.read_versioned(key, node, mode=mode)[0]

    def read_versioned(self, key: str, node: str | None = None, *, mode: str = "strong") -> tuple[bytes, int]:
        """Like read(), with the version of the value returned."""
        self._check_key(key)
        deadline = time.monotonic() + self.timeout
        last_error: ZcraqError = Unavailable("no node answered")
        while time.monotonic() < deadline:
            endpoint = self._node_endpoint(node, deadline) if node else self._pick_reader(deadline)
            if endpoint is None and node:
                raise Unavailable(f"no node {node!r} in the chain (or the coordinator did not answer)")
            if endpoint is None:
                last_error = Unavailable("no node to read from: the chain is empty or the coordinator "
                                         "did not answer")
            else:
                self._check_size(key, 0)
                try:
                    reply, values = self._call(endpoint, Read(key, id=next(self._ids), mode=mode),  # type: ignore[arg-type]
                                               self._attempt_deadline(deadline))
                except Timeout:
                    last_error = Timeout(f"{endpoint} did not answer in time")
                    self._topology_at = float("-inf")
                    self._avoid[endpoint] = time.monotonic() + AVOID_SECONDS
                    if node:
                        break
                    continue
                if isinstance(reply, Ok):
                    version = 0 if reply.version is msgspec.UNSET else reply.version
                    return (values[0] if values else b""), version
                if reply.code not in _READ_RETRYABLE:
                    raise error_for(reply.code, reply.message or reply.code)
                last_error = error_for(reply.code, f"{endpoint}: {reply.message}")
                self._topology_at = float("-inf")
                self._avoid[endpoint] = time.monotonic() + AVOID_SECONDS
                if node:
                    break
            self._pause(deadline)
        raise last_error

    def status(self, node: str | None = None) -> dict[str, Any]:
        """A node's own report (role, epoch, counters), or the coordinator's when ``node`` is None."""
        deadline = time.monotonic() + self.timeout
        endpoint = self._node_endpoint(node, deadline) if node else self.coordinator
        if endpoint is None:
            raise Unavailable(f"no node {node!r} in the chain")
        reply, _values = self._call(endpoint, StatusRequest(id=next(self._ids)), deadline)
        return self._report(reply)

    def statuses(self, nodes: Sequence[str]) -> dict[str, dict[str, Any] | ZcraqError]:
        """Every node's own report, or the error that stands in for it. The nodes (ids or service
        endpoints) are asked all at once, so the whole call takes at most ``timeout`` however
        many of them do not answer."""
        deadline = time.monotonic() + self.timeout
        results: dict[str, dict[str, Any] | ZcraqError] = {}
        asked: dict[str, tuple[str, _Connection, StatusRequest]] = {}
        for node in nodes:
            try:
                endpoint = self._node_endpoint(node, deadline)
                if endpoint is None:
                    raise Unavailable(f"no node {node!r} in the chain")
                request = StatusRequest(id=next(self._ids))
                asked[node] = (endpoint, self._send(endpoint, request), request)
            except ZcraqError as error:
                results[node] = error
        for node, (endpoint, connection, request) in asked.items():
            try:
                reply, _values = self._receive(endpoint, connection, request, deadline)
                results[node] = self._report(reply)
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
        self._ctx.term()

    def __enter__(self) -> ZClient:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def _write(self, key: str, build: Callable[[int], Write | Delete], value_size: int) -> Ok:
        self._check_key(key)
        deadline = time.monotonic() + self.timeout
        last_error: ZcraqError = Unavailable("no head available")
        while time.monotonic() < deadline:
            topology = self._cached_topology(deadline)
            self._check_size(key, value_size)
            head = topology.head if topology else None
            # Straight to the head; through the coordinator when the head is unknown.
            endpoint = head.service if head else self.coordinator
            request = build(next(self._ids))
            try:
                self._connect_first(endpoint, deadline)
                reply, _values = self._call(endpoint, request, deadline)
            except Timeout as error:
                if error.delivered:
                    raise WriteOutcomeUnknown(
                        f"{request_type(request)} of {key!r}: no answer from {endpoint} within {self.timeout:g}s; "
                        "it may or may not have committed") from None
                # The connection never came up: the request cannot have arrived, so it is safe to
                # send again (to whatever head a fresh topology names).
                last_error = Unavailable(f"{endpoint} could not be reached; the {request_type(request)} was not sent")
                self._topology_at = float("-inf")
                self._pause(deadline)
                continue
            if isinstance(reply, Ok):
                if reply.version is msgspec.UNSET:
                    raise ZcraqError(f"{endpoint} acknowledged a write without its version")
                return reply
            if reply.code not in _WRITE_RETRYABLE:
                raise error_for(reply.code, reply.message or reply.code)
            last_error = error_for(reply.code, f"{endpoint}: {reply.message}")
            self._topology_at = float("-inf")
            self._pause(deadline)
        raise last_error

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _check_key(key: str) -> None:
        if not isinstance(key, str) or not key:
            raise BadRequest("key must be a non-empty string")

    def _check_size(self, key: str, value_size: int) -> None:
        """Refuse, before sending, what the cluster would refuse: an oversized request is answered
        at once instead of being cut off by the server's socket and waited for in vain."""
        limits = self._limits
        if limits is None:
            return
        if len(key.encode()) > limits.max_key_bytes:
            raise TooLarge(f"key is longer than {limits.max_key_bytes} bytes")
        if value_size > limits.max_value_bytes:
            raise TooLarge(f"value is larger than {limits.max_value_bytes} bytes ({value_size:,} bytes)")

    def _attempt_deadline(self, deadline: float) -> float:
        return min(deadline, time.monotonic() + max(1.0, self.timeout / 3))

    @staticmethod
    def _pause(deadline: float) -> None:
        time.sleep(max(0.0, min(0.05, deadline - time.monotonic())))

    def _cached_topology(self, deadline: float) -> Topology | None:
        if self._topology is None or time.monotonic() - self._topology_at > 1.0:
            try:
                reply, _values = self._call(self.coordinator, TopologyRequest(id=next(self._ids)),
                                            self._attempt_deadline(deadline))
                if isinstance(reply, Ok) and reply.topology is not msgspec.UNSET:
                    self._topology = reply.topology
                    self._topology_at = time.monotonic()
                    if reply.limits is not msgspec.UNSET:
                        self._limits = reply.limits
            except Timeout:
                pass  # keep the last topology: the chain may well be fine without the coordinator
        return self._topology

    def _pick_reader(self, deadline: float) -> str | None:
        topology = self._cached_topology(deadline)
        if topology is None or not topology.members:
            return None
        self._next_node += 1
        now = time.monotonic()
        if self._avoid:
            self._avoid = {e: until for e, until in self._avoid.items() if until > now}  # stays small
        healthy = [m for m in topology.members if m.service not in self._avoid]
        candidates = healthy or topology.members  # all failed lately: try them anyway
        return candidates[self._next_node % len(candidates)].service

    @staticmethod
    def _check_endpoint(endpoint: str) -> None:
        try:
            parse_endpoint(endpoint)
        except ValueError as error:
            raise BadRequest(str(error)) from None

    def _node_endpoint(self, node: str, deadline: float) -> str | None:
        if node.startswith("tcp://"):
            self._check_endpoint(node)
            return node
        topology = self._cached_topology(deadline)
        member = topology.member(node) if topology else None
        return member.service if member else None

    def _server_key(self, endpoint: str) -> str | None:
        """The CURVE key of the process at ``endpoint``: the coordinator's from the config, a
        node's from the topology (None without security)."""
        if self._curve is None:
            return None
        if endpoint == self.coordinator:
            return self._curve.coordinator_key
        member = self._member_at(endpoint)
        if member is None:  # not in the topology we hold: perhaps in a newer one
            self._topology_at = float("-inf")
            self._cached_topology(time.monotonic() + self.timeout)
            member = self._member_at(endpoint)
        if member is None or member.key is None:
            raise Unavailable(f"no CURVE key known for {endpoint}: it is not in the chain's topology")
        return member.key

    def _member_at(self, endpoint: str) -> Member | None:
        listed = self._topology.listed() if self._topology else ()
        return next((m for m in listed if m.service == endpoint), None)

    def _socket(self, endpoint: str) -> _Connection:
        connection = self._sockets.get(endpoint)
        if connection is None:
            connection = _Connection(self._ctx, endpoint, self._curve, self._server_key(endpoint))
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
            raise ZcraqError("client is closed")
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

    @classmethod
    def _report(cls, reply: Reply) -> dict[str, Any]:
        """A status reply as plain JSON types, as on the wire."""
        return msgspec.json.decode(wire.encode_json(cls._ok(reply)))

    @staticmethod
    def _ok(reply: Reply) -> Ok:
        if isinstance(reply, Error):
            raise error_for(reply.code, reply.message or reply.code)
        return reply


class _Connection:
    """A DEALER to one server, with a monitor that reports a refused CURVE handshake at once (a
    refused handshake is otherwise invisible: the requests would only time out)."""

    FAILURES: dict[int, str] = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its allow-list does not hold this client's key",
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the security handshake failed (CURVE keys on one side only, "
                                                     "or the wrong server key)",
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the security handshake failed"}

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Curve | None, server_key: str | None) -> None:
        self.sock = sockets.unconnected(ctx, zmq.DEALER, endpoint, curve=curve, server_key=server_key)
        self.connected = False  # a handshake succeeded: what was sent may have arrived
        events = zmq.EVENT_HANDSHAKE_SUCCEEDED
        for event in self.FAILURES:
            events |= event
        # Watched before connecting: a handshake refused at once must not go unseen.
        self.monitor = self.sock.get_monitor_socket(events)
        try:
            sockets.connect(self.sock, endpoint)
        except sockets.AddressError:
            self.monitor.close(0)
            raise
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
        return self.FAILURES.get(event)

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(0)
        self.sock.close(0)


def _client_curve(settings: ClientConfig) -> Curve | None:
    if settings.certificate is None or settings.coordinator_key is None:
        return None
    try:
        own = load_certificate(settings.certificate)
    except KeyFileError as error:
        raise ConfigError(settings.path, "security.certificate", str(error)) from None
    try:
        coordinator_key = load_public_key(settings.coordinator_key)
    except KeyFileError as error:
        raise ConfigError(settings.path, "security.coordinator_key", str(error)) from None
    return Curve(own, coordinator_key)


__all__ = ["ZClient", "ZcraqError", "KeyNotFound", "Timeout", "WriteOutcomeUnknown", "Unavailable", "BadRequest",
           "AuthenticationError", "Forbidden"]
