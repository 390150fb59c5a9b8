"""A client of etcd's v3 API over its JSON gateway: keys, conditional transactions and leases.

Every etcd since 3.4 serves its v3 API as JSON over HTTP/1.1 on its client URLs (``/v3/kv/range``,
``/v3/kv/txn``, ``/v3/lease/grant``, ...; keys and values base64, 64-bit integers as strings). The
standard library's ``http.client`` is then all a client needs: no generated gRPC code and no
grpcio/protobuf wheels, whose versions the Python etcd clients pin (python-etcd3's last release
predates protobuf 4). What zcraq asks of the engine is small: read a few keys, write them in
transactions conditioned on their revisions, and hold a lease.

Failover: a request goes to the member that answered last; when it cannot be reached it goes to
the next. A request that was sent but got no answer may have been applied: a read or a lease
renewal is simply asked again of the next member; a write (``put``, ``txn``) raises
``OutcomeUnknown`` instead, and the caller reads the state again (a transaction conditioned on a
revision cannot be applied twice: asked again it would fail its comparison).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_ANSWER_BYTES = 16 << 20  # zcraq's state in the engine is a few keys of at most a few MiB


class EngineError(Exception):
    """The engine refused a request, or answered something that is not its API."""


class EngineUnavailable(EngineError):
    """No member of the engine answered."""


class OutcomeUnknown(EngineUnavailable):
    """A write was sent but its answer was lost: it may or may not have been applied."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after the transaction
    responses: list[dict[str, Any]]

    def kvs(self, index: int) -> list[KeyValue]:
        """The keys a range operation (``get_op``) of the branch taken returned."""
        found = self.responses[index].get("response_range", {}).get("kvs", [])
        return [_key_value(kv) for kv in found]


# ---------------------------------------------------------------------- comparisons and operations


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mod_revision_is(key: bytes, revision: int) -> dict[str, Any]:
    """The key was last written at ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def create_revision_is(key: bytes, revision: int) -> dict[str, Any]:
    """The key was created at ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(revision)}


def put_op(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def get_op(key: bytes) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def delete_op(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


# ---------------------------------------------------------------------- the client


class EtcdClient:
    """``endpoints``: the members' client URLs (``http://host:port``). ``timeout``: seconds each
    member has to answer one request."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self.endpoints = [_host_port(url) for url in endpoints]
        self.timeout = timeout
        self._current = 0
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        """The member asked first."""
        host, port = self.endpoints[self._current]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ keys

    def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (None: absent) and the store's revision it was read at (linearizable)."""
        answer = self._call("/v3/kv/range", {"key": _b64(key)}, write=False)
        kvs = answer.get("kvs") or []
        return (_key_value(kvs[0]) if kvs else None), _revision(answer)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Write unconditionally; the store's revision after it."""
        return _revision(self._call("/v3/kv/put", put_op(key, value, lease)["request_put"], write=True))

    def txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]],
            failure: Sequence[dict[str, Any]] = ()) -> TxnResult:
        """If every comparison holds, ``success``'s operations, else ``failure``'s, atomically."""
        answer = self._call("/v3/kv/txn", {"compare": list(compare), "success": list(success),
                                           "failure": list(failure)}, write=True)
        return TxnResult(bool(answer.get("succeeded", False)), _revision(answer), list(answer.get("responses") or []))

    # ------------------------------------------------------------------ leases

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds: its id."""
        answer = self._call("/v3/lease/grant", {"TTL": str(ttl)}, write=False)
        if answer.get("error"):
            raise EngineError(f"lease not granted: {answer['error']}")
        return _integer(answer, "ID")

    def keepalive(self, lease: int) -> int:
        """Renew the lease: its TTL from now in seconds, 0 if it has expired (or never was)."""
        answer = self._call("/v3/lease/keepalive", {"ID": str(lease)}, write=False)
        result = answer.get("result", answer)
        return int(result.get("TTL", 0)) if isinstance(result, dict) else 0

    def revoke(self, lease: int) -> None:
        """End the lease now; its keys go with it. An expired lease is not an error."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)}, write=False)
        except EngineError as error:
            if "not found" not in str(error):
                raise

    # ------------------------------------------------------------------ transport

    def _call(self, path: str, body: dict[str, Any], write: bool) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        last: BaseException | None = None
        for _ in range(len(self.endpoints)):
            sent = False
            try:
                connection = self._connect()
                connection.putrequest("POST", path)
                connection.putheader("Content-Type", "application/json")
                connection.putheader("Content-Length", str(len(payload)))
                connection.endheaders(payload)
                sent = True
                response = connection.getresponse()
                data = response.read(MAX_ANSWER_BYTES + 1)
                status = response.status
            except (OSError, http.client.HTTPException) as error:
                last = error
                self.close()
                if sent and write:
                    raise OutcomeUnknown(f"{self.endpoint} did not answer a write: {error}") from error
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            if len(data) > MAX_ANSWER_BYTES:
                self.close()
                raise EngineError(f"{self.endpoint} answered more than {MAX_ANSWER_BYTES} bytes")
            return _answer(self.endpoint, status, data)
        raise EngineUnavailable(f"no etcd member answered ({', '.join(f'{h}:{p}' for h, p in self.endpoints)}):"
                                f" {last}")

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            host, port = self.endpoints[self._current]
            self._connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
            self._connection.connect()
            self._connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._connection


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"an etcd endpoint is http://HOST:PORT, not {url!r}")
    return parts.hostname, parts.port


def _answer(endpoint: str, status: int, data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError as error:
        raise EngineError(f"{endpoint} answered HTTP {status} with something that is not JSON") from error
    if not isinstance(answer, dict):
        raise EngineError(f"{endpoint} answered HTTP {status} with {type(answer).__name__}, not an object")
    if status != 200:
        message = answer.get("message") or answer.get("error") or data[:200].decode(errors="replace")
        raise EngineError(f"{endpoint} refused: {message}")
    return answer


def _integer(answer: dict[str, Any], name: str) -> int:
    try:
        return int(answer[name])
    except (KeyError, TypeError, ValueError) as error:
        raise EngineError(f"an etcd answer without a valid {name}: {answer!r:.200}") from error


def _revision(answer: dict[str, Any]) -> int:
    header = answer.get("header")
    return _integer(header, "revision") if isinstance(header, dict) else 0


def _key_value(kv: dict[str, Any]) -> KeyValue:
    try:
        return KeyValue(base64.b64decode(kv["key"]), base64.b64decode(kv.get("value", "")),
                        int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                        int(kv.get("version", 0)), int(kv.get("lease", 0)))
    except (KeyError, TypeError, ValueError) as error:
        raise EngineError(f"an etcd key-value that is not one: {kv!r:.200}") from error


__all__ = ["EngineError", "EngineUnavailable", "EtcdClient", "KeyValue", "OutcomeUnknown", "TxnResult",
           "create_revision_is", "delete_op", "get_op", "mod_revision_is", "put_op"]
