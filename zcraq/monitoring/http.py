"""The HTTP endpoint on ``metrics_port``: ``/metrics`` (Prometheus text format), ``/healthz`` and
``/readyz``, served by http.server from a daemon thread that never touches the protocol core (it
reads the published view, see views.py).

Bounded on every side, so that a slow or hostile client costs at most a few threads for a few
seconds and never reaches the loop:
- at most MAX_CONNECTIONS requests are handled at once; a connection beyond that is closed at once;
- a connection has REQUEST_DEADLINE seconds in all to send its request and take the reply (a client
  that sends one byte at a time, or never reads, is cut off then);
- a request line of at most 64 KiB and at most 100 headers (http.server's limits); no body is read;
- HTTP/1.0: one request per connection.
Only GET is served: other paths get 404, other methods 405.
"""

from __future__ import annotations

import io
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric

from zcraq.config import ConfigError, CoordinatorConfig, NodeConfig
from zcraq.monitoring.views import STALLED_AFTER, View, ViewSlot

log = logging.getLogger("zcraq.http")

MAX_CONNECTIONS = 8
REQUEST_DEADLINE = 5.0  # seconds for a whole request and its reply


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _DeadlineIO(io.RawIOBase):
    """A connection's socket as a file whose every read and write ends by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request and its reply took too long")
        self._sock.settimeout(left)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._arm()
        return self._sock.recv_into(buffer)

    def write(self, data: Any) -> int:
        self._arm()
        self._sock.sendall(data)  # the timeout bounds the whole call (Python >= 3.5)
        return len(data)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "zcraq"
    sys_version = ""

    def setup(self) -> None:
        self.connection = self.request
        raw = _DeadlineIO(self.connection, time.monotonic() + REQUEST_DEADLINE)
        self.rfile = io.BufferedReader(raw)
        self.wfile = raw  # type: ignore[assignment]

    def finish(self) -> None:
        self.rfile.close()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._reply(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_PLAIN_0_0_4)
            elif path == "/healthz":
                self._probe(*self.server.health())
            elif path == "/readyz":
                self._probe(*self.server.readiness())
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found: /metrics, /healthz and /readyz are served\n")
        except TimeoutError:
            raise
        except OSError as error:
            log.debug("HTTP client went away: %s", error)
        except Exception:  # a bug must cost one reply, not the thread or the process
            log.error("error while answering %s", path, exc_info=True)
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")

    def __getattr__(self, name: str) -> Any:
        """Every other method (``do_POST``, ``do_HEAD``, ...) gets 405."""
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET is served\n", headers={"Allow": "GET"})

    def _probe(self, ok: bool, text: str) -> None:
        self._reply(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, text.encode() + b"\n")

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    block_on_close = False  # nothing to join at close: handlers end by their deadline

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, registry: CollectorRegistry,
                 slot: ViewSlot[Any]) -> None:
        self.address_family = family
        self.registry = registry
        self.slot = slot
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as "*" means
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: it looks up our name in DNS
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: this one is closed unanswered
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP request from %s failed", client_address, exc_info=True)

    def _view(self) -> tuple[float, View] | None:
        return self.slot.latest

    def health(self) -> tuple[bool, str]:
        latest = self._view()
        if latest is None:
            return False, "starting"
        age = time.monotonic() - latest[0]
        if age > STALLED_AFTER:
            return False, f"stalled: the loop has not turned for {age:.0f} s"
        return True, f"alive: {latest[1].status}"

    def readiness(self) -> tuple[bool, str]:
        latest = self._view()
        if latest is None:
            return False, "not ready: starting"
        view = latest[1]
        return view.ready, f"{'ready' if view.ready else 'not ready'}: {view.status}"


def _listen_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address family and address for bind_host: "*" is every address, IPv6 and IPv4."""
    if host == "*":
        return (socket.AF_INET6, ("::", port)) if socket.has_ipv6 else (socket.AF_INET, ("0.0.0.0", port))
    family, _type, _proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return family, (str(address[0]), port)


def _url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ProbeServer:
    """The running HTTP endpoint of one process; its thread is a daemon and ``close`` stops it."""

    def __init__(self, config: NodeConfig | CoordinatorConfig, slot: ViewSlot[Any], collector: Collector) -> None:
        """Binds ``config.metrics_port`` on the process's bind_host: a ConfigError naming the key if
        that is impossible (a port in use, like the other ports)."""
        table = "node" if isinstance(config, NodeConfig) else "coordinator"
        registry = CollectorRegistry()  # this process's own, not the library's global one
        registry.register(collector)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        address: tuple[str, int] = (config.bind_host, config.metrics_port)
        try:
            family, address = _listen_address(config.bind_host, config.metrics_port)
            self._server = _Server(address, family, registry, slot)
        except OSError as error:
            raise ConfigError(str(config.path), f"{table}.metrics_port",
                              f"cannot listen on {_url(address)}: {error.strerror or error}") from None
        self.url = _url((address[0], self._server.server_port))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="zcraq-http", daemon=True)
        self._thread.start()
        log.info("metrics and probes on %s (/metrics, /healthz, /readyz)", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
