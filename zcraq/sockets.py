"""ZeroMQ plumbing shared by the node, the coordinator and the client.

Every socket is made here so that each one is bounded on purpose:
- LINGER 0: a closing process never blocks on a dead peer; the protocol resends what matters.
- send and receive high-water marks: no unbounded queue anywhere; sends never block (NOBLOCK),
  a full queue drops the message and the protocol's resend or the caller's timeout recovers.
- MAXMSGSIZE on every receiving socket: a peer cannot make us buffer an arbitrary message.
- short reconnect intervals with a cap, so a restarted peer is found again quickly.
ZeroMQ's own heartbeat options stay off (see DESIGN notes: they abort libzmq 4.3.5 under load);
liveness is handled by the application's heartbeats.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar, cast

import zmq

from zcraq.config import ConfigError, CoordinatorConfig, NodeConfig
from zcraq.loglimit import LogLimiter
from zcraq.security import Curve, connect_curve, serve_curve
from zcraq.messages import Error, Limits
from zcraq.wire import encode_reply

log = logging.getLogger("zcraq.sockets")

HWM = 10_000
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2_000
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a catch-up page or a batch of chain records fits
# Frames at least this long are handed to ZeroMQ without a copy. A zero-copy send costs more than
# copying a small frame (bench/sockets_bench.py), so only large values are worth it. Flags as plain
# ints: pyzmq's flag enums cost about a microsecond per operation.
ZERO_COPY_BYTES = 64 * 1024
T = TypeVar("T")
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def request_cap(limits: Limits) -> int:
    """MAXMSGSIZE of a request endpoint: well above the limits, so that an oversized request still
    arrives and is answered ``too_large`` instead of being cut off by libzmq without a word."""
    return max(16 << 20, 4 * (limits.max_value_bytes + limits.max_key_bytes)) + 64 * 1024

# What a client's monitor reports when a server refuses its handshake, in words (a refused
# handshake is otherwise invisible: the requests would only time out).
HANDSHAKE_FAILURES: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its allow-list does not hold this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the security handshake failed (CURVE keys on one side only, "
                                         "or the wrong server key)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the security handshake failed"}
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class AddressError(Exception):
    """An endpoint could not be bound (in use, not a local address, malformed)."""


def _configure(sock: zmq.Socket, max_message: int) -> zmq.Socket:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message)
    sock.setsockopt(zmq.IPV6, 1)  # accept IPv6 endpoints too; IPv4 keeps working
    return sock


def bound(ctx: zmq.Context, kind: int, endpoint: str, max_message: int = MAX_MESSAGE_BYTES,
          curve: Curve | None = None) -> zmq.Socket:
    """A socket bound to ``endpoint`` (a CURVE server with ``curve``); AddressError names the
    endpoint if that is impossible."""
    sock = _configure(ctx.socket(kind), max_message)
    if curve is not None:
        serve_curve(sock, curve.own)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as error:
        sock.close(0)
        raise AddressError(f"cannot listen on {endpoint}: {error.strerror}") from None
    return sock


def connected(ctx: zmq.Context, kind: int, endpoint: str, max_message: int = MAX_MESSAGE_BYTES,
              curve: Curve | None = None, server_key: str | None = None) -> zmq.Socket:
    """A socket connecting to ``endpoint`` (with ``curve``, to the server whose public key is
    ``server_key``); AddressError (and no leaked socket) if it cannot."""
    return connect(unconnected(ctx, kind, endpoint, max_message, curve, server_key), endpoint)


def unconnected(ctx: zmq.Context, kind: int, endpoint: str, max_message: int = MAX_MESSAGE_BYTES,
                curve: Curve | None = None, server_key: str | None = None) -> zmq.Socket:
    """What connected() makes, before it connects: a monitor attached now sees every event of
    the connection, also a handshake refused at once."""
    if curve is not None and server_key is None:
        raise AddressError(f"cannot connect to {endpoint}: its CURVE key is not known")
    sock = _configure(ctx.socket(kind), max_message)
    if curve is not None and server_key is not None:
        connect_curve(sock, curve.own, server_key)
    if kind == zmq.PUSH:
        # Queue nothing for a peer that is not connected: the chain protocol resends instead.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    return sock


def monitored_dealer(ctx: zmq.Context, endpoint: str, curve: Curve | None = None,
                     server_key: str | None = None) -> tuple[zmq.Socket, zmq.Socket]:
    """A client's DEALER connected to ``endpoint`` and its monitor of HANDSHAKE_EVENTS, watched
    before connecting: a handshake refused at once must not go unseen. AddressError, with both
    closed, if it cannot connect."""
    sock = unconnected(ctx, zmq.DEALER, endpoint, curve=curve, server_key=server_key)
    monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
    try:
        connect(sock, endpoint)
    except AddressError:
        monitor.close(0)
        raise
    return sock, monitor


def connect(sock: zmq.Socket, endpoint: str) -> zmq.Socket:
    """Connect ``sock`` (from unconnected()); AddressError, with the socket closed, if it cannot."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as error:
        sock.close(0)
        raise AddressError(f"cannot connect to {endpoint!r}: {error.strerror}") from None
    return sock


def send_nowait(sock: zmq.Socket, frames: list[bytes]) -> bool:
    """Send without ever blocking the loop; False when the queue is full or the peer is gone.

    What ``send_multipart`` does, with the flags as plain ints: it combines enum flags once per
    frame, which costs more than the send of a small frame (a catch-up page has one per key); and
    only frames of ZERO_COPY_BYTES or more go without a copy. Like it, only the first frame can
    meet a full queue: libzmq takes the rest of a message once its first frame is in."""
    try:
        send = sock.send
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            send(frame, _MORE_NOBLOCK if index < last else _NOBLOCK, copy=len(frame) < ZERO_COPY_BYTES)
        return True
    except zmq.Again:
        return False
    except zmq.ZMQError as error:  # e.g. EHOSTUNREACH on a ROUTER whose client vanished
        log.debug("send failed: %s", error)
        return False


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """Split a ROUTER message into (routing envelope incl. the empty delimiter, body).
    None when there is no delimiter: the peer does not speak the REQ envelope convention."""
    for index, frame in enumerate(frames):
        if not frame:
            return frames[: index + 1], frames[index + 1:]
    return None


def split_or_reject(router: zmq.Socket, frames: list[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """``split_envelope``, answering a message without a delimiter with a clear error."""
    split = split_envelope(frames)
    if split is None:
        send_nowait(router, [frames[0], b"", *encode_reply(Error(
            None, "bad_request", "missing empty delimiter frame before the header (see PROTOCOL.md)"))])
    return split


def bound_from_config(ctx: zmq.Context, kind: int, config: NodeConfig | CoordinatorConfig, key: str,
                      max_message: int = MAX_MESSAGE_BYTES, curve: Curve | None = None) -> zmq.Socket:
    """A socket bound to the port ``config.<key>``; a ConfigError naming file and key if impossible."""
    table = "node" if isinstance(config, NodeConfig) else "coordinator"
    try:
        return bound(ctx, kind, config.bind_endpoint(getattr(config, key)), max_message, curve)
    except AddressError as error:
        raise ConfigError(str(config.path), f"{table}.{key}", str(error)) from None


def bind_all(ctx: zmq.Context, config: NodeConfig | CoordinatorConfig,
             ports: list[tuple[int, str, int]], curve: Curve | None = None) -> list[zmq.Socket]:
    """One bound socket per (kind, config key, max message size); on a ConfigError the sockets
    already bound are closed again, so a process that cannot start leaves nothing open."""
    bound_so_far: list[zmq.Socket] = []
    try:
        for kind, key, max_message in ports:
            bound_so_far.append(bound_from_config(ctx, kind, config, key, max_message, curve))
    except ConfigError:
        for sock in bound_so_far:
            sock.close(0)
        raise
    return bound_so_far


class PushLink:
    """A PUSH socket aimed at exactly one peer at a time.

    Retargeting closes the socket and opens a new one: PUSH round-robins over every connected
    peer, so an old neighbour must never stay connected, and frames queued for it are dropped.
    """

    def __init__(self, ctx: zmq.Context, curve: Curve | None = None) -> None:
        self._ctx = ctx
        self._curve = curve
        self._sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        self._key: str | None = None
        self.dropped = 0

    def retarget(self, endpoint: str | None, key: str | None = None) -> None:
        if endpoint == self.endpoint and key == self._key:
            return
        self.close()
        self.endpoint, self._key = endpoint, key
        if endpoint is not None:
            try:
                self._sock = connected(self._ctx, zmq.PUSH, endpoint, curve=self._curve, server_key=key)
            except AddressError as error:
                log.error("%s; the link stays down", error)

    def send(self, frame: bytes) -> bool:
        return self.send_frames([frame])

    def send_frames(self, frames: list[bytes]) -> bool:
        """One message of ``frames`` (chain frames bundled): all of them go, or none."""
        if self._sock is None or not send_nowait(self._sock, frames):
            self.dropped += 1
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self.endpoint = self._key = None


class DealerPool:
    """One DEALER per peer endpoint, for requests whose replies carry our request ids.

    Requests go out with an empty delimiter frame first, so the peer's ROUTER sees the same
    envelope a REQ socket would produce; replies come back as [b"", header, values...].
    """

    def __init__(self, ctx: zmq.Context, poller: zmq.Poller, aliases: dict[str, tuple[str, str | None]] | None = None,
                 curve: Curve | None = None, on_alias_send: Callable[[str], None] | None = None) -> None:
        """``aliases``: name -> (endpoint, CURVE key), e.g. "coordinator"; ``on_alias_send`` is
        told each alias a request goes to."""
        self._on_alias_send = on_alias_send
        self._ctx = ctx
        self._poller = poller
        self._aliases = aliases or {}
        self._curve = curve
        self.sockets: dict[str, zmq.Socket] = {}
        self._keys: dict[str, str | None] = {}
        # A peer listed with an unusable address is asked again and again (confirmations, queries).
        self.logs = LogLimiter(log)

    def send(self, endpoint: str, frames: list[bytes], key: str | None = None) -> bool:
        """Send to ``endpoint`` (or an alias), whose CURVE key is ``key``; a new key reconnects."""
        if endpoint in self._aliases:
            if self._on_alias_send is not None:
                self._on_alias_send(endpoint)
            endpoint, key = self._aliases[endpoint]
        sock = self.sockets.get(endpoint)
        if sock is not None and self._keys.get(endpoint) != key:
            self._drop(endpoint)
            sock = None
        if sock is None:
            try:
                sock = connected(self._ctx, zmq.DEALER, endpoint, curve=self._curve, server_key=key)
            except AddressError as error:
                self.logs.error(f"unusable {endpoint}", time.monotonic(), "%s; request dropped", error)
                return False
            self.sockets[endpoint] = sock
            self._keys[endpoint] = key
            self._poller.register(sock, zmq.POLLIN)
        return send_nowait(sock, [b"", *frames])

    def retarget(self, alias: str, endpoint: str) -> None:
        """Send what goes to ``alias`` to ``endpoint`` from now on (its CURVE key unchanged); the
        DEALER to the old endpoint closes, and a late reply on it is dropped."""
        old, key = self._aliases[alias]
        if old == endpoint:
            return
        self._aliases[alias] = (endpoint, key)
        if old in self.sockets and old not in {e for e, _k in self._aliases.values()}:
            self._drop(old)

    def socket_of(self, name: str) -> zmq.Socket | None:
        """The DEALER to an alias or endpoint, if one is open."""
        return self.sockets.get(self._aliases[name][0] if name in self._aliases else name)

    def _drop(self, endpoint: str) -> None:
        sock = self.sockets.pop(endpoint)
        self._keys.pop(endpoint, None)
        self._poller.unregister(sock)
        sock.close(0)

    def keep_only(self, endpoints: Iterable[str]) -> None:
        """Close DEALERs to peers that are no longer needed (a late reply to them is dropped)."""
        wanted = set(endpoints) | {endpoint for endpoint, _key in self._aliases.values()}
        for endpoint in [e for e in self.sockets if e not in wanted]:
            self._drop(endpoint)

    def close(self) -> None:
        for endpoint in list(self.sockets):
            self._drop(endpoint)


def recv_batch_with_keys(sock: zmq.Socket, limit: int) -> list[tuple[list[bytes], str | None]]:
    """Like recv_batch, each message with the CURVE key its connection authenticated (the
    "User-Id" the ZAP handler gave it), or None on a connection without one."""
    messages = []
    for frames in _waiting(sock, limit, lambda: sock.recv_multipart(_NOBLOCK, copy=False)):
        try:
            found = frames[0].get("User-Id")
        except zmq.ZMQError:
            found = None
        key = found if isinstance(found, str) else None
        messages.append(([frame.bytes for frame in frames], key))
    return messages


def recv_batch(sock: zmq.Socket, limit: int) -> list[list[bytes]]:
    """Up to ``limit`` messages already waiting on ``sock``, without blocking."""
    return list(_waiting(sock, limit, lambda: _recv_message(sock)))


def _waiting(sock: zmq.Socket, limit: int, receive: Callable[[], T]) -> Iterator[T]:
    """The messages waiting on ``sock`` (up to ``limit``), each read by ``receive`` without blocking.

    A receive that finds nothing raises zmq.Again, which costs as much as receiving a message; a
    look at ZMQ_EVENTS costs a fifth of that. So: one receive (the poll said the socket is
    readable), one look, and only if more is waiting, receives until one finds nothing. One
    message per turn, the common case under light load, then never pays for an exception."""
    try:
        yield receive()
        if limit < 2 or not cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
            return
        for _ in range(limit - 1):
            yield receive()
    except zmq.Again:
        return


def _recv_message(sock: zmq.Socket) -> list[bytes]:
    """What ``recv_multipart(NOBLOCK)`` returns, about twice as fast for a message of many small
    frames (a catch-up page has one per key): each frame says itself whether more follow, where
    ``recv_multipart`` asks the socket's RCVMORE option, a slow call in pyzmq. Raises zmq.Again
    when no message waits; the rest of a message is always there once its first frame is."""
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames
