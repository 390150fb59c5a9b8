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
from collections.abc import Iterable

import zmq

from zcraq.config import ConfigError, CoordinatorConfig, NodeConfig
from zcraq.messages import Error
from zcraq.wire import encode_reply

log = logging.getLogger("zcraq.sockets")

HWM = 10_000
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2_000
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a catch-up page or a batch of chain records fits


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


def bound(ctx: zmq.Context, kind: int, endpoint: str, max_message: int = MAX_MESSAGE_BYTES) -> zmq.Socket:
    """A socket bound to ``endpoint``; AddressError names the endpoint if that is impossible."""
    sock = _configure(ctx.socket(kind), max_message)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as error:
        sock.close(0)
        raise AddressError(f"cannot listen on {endpoint}: {error.strerror}") from None
    return sock


def connected(ctx: zmq.Context, kind: int, endpoint: str, max_message: int = MAX_MESSAGE_BYTES) -> zmq.Socket:
    """A socket connecting to ``endpoint``; AddressError (and no leaked socket) if it cannot."""
    sock = _configure(ctx.socket(kind), max_message)
    if kind == zmq.PUSH:
        # Queue nothing for a peer that is not connected: the chain protocol resends instead.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as error:
        sock.close(0)
        raise AddressError(f"cannot connect to {endpoint!r}: {error.strerror}") from None
    return sock


def send_nowait(sock: zmq.Socket, frames: list[bytes]) -> bool:
    """Send without ever blocking the loop; False when the queue is full or the peer is gone."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
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
                      max_message: int = MAX_MESSAGE_BYTES) -> zmq.Socket:
    """A socket bound to the port ``config.<key>``; a ConfigError naming file and key if impossible."""
    table = "node" if isinstance(config, NodeConfig) else "coordinator"
    try:
        return bound(ctx, kind, config.bind_endpoint(getattr(config, key)), max_message)
    except AddressError as error:
        raise ConfigError(str(config.path), f"{table}.{key}", str(error)) from None


def bind_all(ctx: zmq.Context, config: NodeConfig | CoordinatorConfig,
             ports: list[tuple[int, str, int]]) -> list[zmq.Socket]:
    """One bound socket per (kind, config key, max message size); on a ConfigError the sockets
    already bound are closed again, so a process that cannot start leaves nothing open."""
    bound_so_far: list[zmq.Socket] = []
    try:
        for kind, key, max_message in ports:
            bound_so_far.append(bound_from_config(ctx, kind, config, key, max_message))
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

    def __init__(self, ctx: zmq.Context) -> None:
        self._ctx = ctx
        self._sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.dropped = 0

    def retarget(self, endpoint: str | None) -> None:
        if endpoint == self.endpoint:
            return
        self.close()
        self.endpoint = endpoint
        if endpoint is not None:
            try:
                self._sock = connected(self._ctx, zmq.PUSH, endpoint)
            except AddressError as error:
                log.error("%s; the link stays down", error)

    def send(self, frame: bytes) -> bool:
        if self._sock is None or not send_nowait(self._sock, [frame]):
            self.dropped += 1
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self.endpoint = None


class DealerPool:
    """One DEALER per peer endpoint, for requests whose replies carry our request ids.

    Requests go out with an empty delimiter frame first, so the peer's ROUTER sees the same
    envelope a REQ socket would produce; replies come back as [b"", header, values...].
    """

    def __init__(self, ctx: zmq.Context, poller: zmq.Poller, aliases: dict[str, str] | None = None) -> None:
        self._ctx = ctx
        self._poller = poller
        self._aliases = aliases or {}
        self.sockets: dict[str, zmq.Socket] = {}

    def send(self, endpoint: str, frames: list[bytes]) -> bool:
        endpoint = self._aliases.get(endpoint, endpoint)
        sock = self.sockets.get(endpoint)
        if sock is None:
            try:
                sock = connected(self._ctx, zmq.DEALER, endpoint)
            except AddressError as error:
                log.error("%s; request dropped", error)
                return False
            self.sockets[endpoint] = sock
            self._poller.register(sock, zmq.POLLIN)
        return send_nowait(sock, [b"", *frames])

    def keep_only(self, endpoints: Iterable[str]) -> None:
        """Close DEALERs to peers that are no longer needed (a late reply to them is dropped)."""
        wanted = {self._aliases.get(e, e) for e in endpoints} | set(self._aliases.values())
        for endpoint in [e for e in self.sockets if e not in wanted]:
            sock = self.sockets.pop(endpoint)
            self._poller.unregister(sock)
            sock.close(0)

    def close(self) -> None:
        self.keep_only(())
        for sock in self.sockets.values():
            self._poller.unregister(sock)
            sock.close(0)
        self.sockets.clear()


def recv_batch(sock: zmq.Socket, limit: int) -> list[list[bytes]]:
    """Up to ``limit`` messages already waiting on ``sock``, without blocking."""
    messages = []
    for _ in range(limit):
        try:
            messages.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    return messages
