"""CURVE keys and who may connect: certificates, the allow-lists by role, and the ZAP handler.

A process with a ``[security]`` table encrypts and authenticates every connection with ZeroMQ's
CURVE. Its own certificate (``zcraq keygen``; ZeroMQ's format: ``NAME.key`` holds the public key,
``NAME.key_secret`` both) identifies it; the allow-lists are directories of public certificates,
one per role:

- ``node``: chain nodes. Only they may send chain frames, join, heartbeat, confirm, ask for
  version queries or catch-up pages;
- ``client``: reads, writes, deletes, topology and status;
- ``admin``: what a client may do, and removing another node (``leave`` naming it);
- ``coordinator``: the coordinator's own key (forwarded writes at a node; a node's peers).

Every connection's handshake is checked here (ZAP, answered from the process's own poll loop, so
no thread and no lock): a key in no allow-list is refused before any message gets through. The
handshake's key then travels with every message of the connection ("User-Id"), and the role is
looked up again per message, so a key taken out of the lists (SIGHUP reloads them) loses its
rights at once, also on connections opened before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from zcraq.callers import Caller, Role
from zcraq.config import SecurityConfig
from zcraq.loglimit import LogLimiter
from zcraq.toml_tables import ConfigError

log = logging.getLogger("zcraq.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"zcraq"


class KeyFileError(Exception):
    """A certificate or allow-list that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """A CURVE key pair (public and secret, both z85 text)."""

    public: bytes
    secret: bytes

    @property
    def public_text(self) -> str:
        return self.public.decode()


@dataclass(frozen=True, slots=True)
class Curve:
    """What a process of a secured cluster opens connections with: its own key pair, and the
    coordinator's public key (a node's peers' keys come with the topology)."""

    own: Certificate
    coordinator_key: str | None = None


def create_certificate(directory: Path, name: str) -> Path:
    """``directory/NAME.key`` (public) and ``directory/NAME.key_secret`` (secret, mode 0600); returns
    the secret file's path. Refuses to overwrite an existing key."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / f"{name}.key_secret"
    if secret.exists() or (directory / f"{name}.key").exists():
        raise KeyFileError(f"{secret}: a key named {name!r} exists already; remove it first to replace it")
    _public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret_file, 0o600)
    return Path(secret_file)


def load_certificate(path: Path) -> Certificate:
    """This process's own key pair, from a ``.key_secret`` file."""
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"{path}: holds no secret key (a process needs its NAME.key_secret file)")
    return Certificate(public, secret)


def load_public_key(path: Path) -> str:
    """The z85 public key of a certificate file (``.key`` or ``.key_secret``)."""
    return _load(path)[0].decode()


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as error:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate ({error})") from None
    if public is None or len(public) != 40:
        raise KeyFileError(f"{path}: holds no valid public key")
    return public, secret


class Keyring:
    """Which public key has which roles: the allow-list directories, reloadable."""

    def __init__(self, directories: dict[Role, Path | None], coordinator_key: str | None = None) -> None:
        self.directories = directories
        self.coordinator_key = coordinator_key
        self.roles: dict[str, frozenset[Role]] = {}
        self.reload()

    def reload(self) -> None:
        """Read the directories again (SIGHUP). A directory that cannot be read keeps nobody in."""
        roles: dict[str, set[Role]] = {}
        for role, directory in self.directories.items():
            for key in _public_keys(directory) if directory is not None else ():
                roles.setdefault(key, set()).add(role)
        if self.coordinator_key is not None:
            roles.setdefault(self.coordinator_key, set()).add(Role.COORDINATOR)
        self.roles = {key: frozenset(found) for key, found in roles.items()}
        self._callers = {key: Caller(key, found) for key, found in self.roles.items()}
        log.info("allow-lists loaded: %s", ", ".join(
            f"{role.value} {sum(role in found for found in self.roles.values())}" for role in Role))

    def roles_of(self, key: str | None) -> frozenset[Role]:
        return self.roles.get(key, frozenset()) if key is not None else frozenset()

    def caller(self, key: str | None) -> Caller:
        """Who a message authenticated as ``key`` comes from, with the roles the key has now."""
        found = self._callers.get(key) if key is not None else None
        return found if found is not None else Caller(key, frozenset())


def _public_keys(directory: Path) -> Iterable[str]:
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in (".key", ".key_secret"))
    except OSError as error:
        log.error("cannot read allow-list %s: %s", directory, error)
        return []
    keys = []
    for path in files:
        try:
            keys.append(load_public_key(path))
        except KeyFileError as error:
            log.error("ignored in allow-list: %s", error)
    return keys


def curve_from_config(security: SecurityConfig, config_path: Path) -> Curve:
    """This process's Curve from its ``[security]`` table; ConfigError names the key at fault."""
    try:
        own = load_certificate(security.certificate)
    except KeyFileError as error:
        raise ConfigError(config_path, "security.certificate", f"{error}; `zcraq keygen` creates one") from None
    coordinator_key = None
    if security.coordinator_key is not None:
        try:
            coordinator_key = load_public_key(security.coordinator_key)
        except KeyFileError as error:
            raise ConfigError(config_path, "security.coordinator_key", str(error)) from None
    return Curve(own, coordinator_key)


def keyring_from_config(security: SecurityConfig, config_path: Path, coordinator_key: str | None) -> Keyring:
    """The allow-lists of a ``[security]`` table; a directory that does not exist is a ConfigError."""
    directories = {Role.NODE: security.nodes, Role.CLIENT: security.clients, Role.ADMIN: security.admins}
    for role, directory in directories.items():
        if directory is not None and not directory.is_dir():
            raise ConfigError(config_path, f"security.{role.value}s", f"{directory}: no such directory")
    return Keyring(directories, coordinator_key)


def serve_curve(sock: zmq.Socket, own: Certificate) -> None:
    """Make a binding socket a CURVE server whose handshakes the ZAP handler checks."""
    sock.curve_server = True
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.zap_domain = ZAP_DOMAIN


def connect_curve(sock: zmq.Socket, own: Certificate, server_key: str) -> None:
    """Make a connecting socket a CURVE client of the server whose public key is ``server_key``."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_serverkey = server_key.encode()


class ZapHandler:
    """Answers libzmq's handshake checks (RFC 27, ZAP) for every CURVE server socket of the
    context: only keys with a role get in, and the key becomes the connection's User-Id.

    Bound before any server socket (without a handler, libzmq lets CURVE clients in unchecked) and
    polled by the process's own loop, which calls ``handle`` whenever it is readable."""

    def __init__(self, ctx: zmq.Context, keyring: Keyring) -> None:
        self.keyring = keyring
        self.refused = 0
        self.logs = LogLimiter(log)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)

    def handle(self, limit: int = 256) -> None:
        for _ in range(limit):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = self._answer(frames)
            if reply is not None:
                try:
                    self.sock.send_multipart(reply, zmq.NOBLOCK)
                except zmq.ZMQError as error:  # libzmq gave up on this handshake meanwhile
                    log.debug("ZAP reply not sent: %s", error)

    def _answer(self, frames: list[bytes]) -> list[bytes] | None:
        # [routing id, "", version, request id, domain, address, identity, mechanism, credentials...]
        if len(frames) < 8 or frames[1] != b"":
            return None
        envelope, (version, request_id, _, address, _, mechanism, *credentials) = frames[:2], frames[2:]
        if version != b"1.0":
            return [*envelope, b"1.0", request_id, b"400", b"unsupported ZAP version", b"", b""]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self.refused += 1
            return [*envelope, version, request_id, b"400", b"CURVE required", b"", b""]
        key = z85.encode(credentials[0]).decode()
        if not self.keyring.roles_of(key):
            self.refused += 1
            self.logs.warning("refused key", time.monotonic(), "refused a connection from %s: key %s is in no "
                              "allow-list", address.decode(errors="replace"), key)
            return [*envelope, version, request_id, b"400", b"key not allowed", b"", b""]
        return [*envelope, version, request_id, b"200", b"OK", key.encode(), b""]

    def close(self) -> None:
        self.sock.close(0)


class ProcessSecurity:
    """Everything a secured server process holds: its Curve, its allow-lists and its ZAP handler
    (bound before any server socket is). ``reload`` rereads the allow-lists (SIGHUP)."""

    def __init__(self, ctx: zmq.Context, security: SecurityConfig, config_path: Path,
                 coordinator_key: str | None = None) -> None:
        self.curve = curve_from_config(security, config_path)
        self.keyring = keyring_from_config(security, config_path, coordinator_key or self.curve.coordinator_key)
        self.zap = ZapHandler(ctx, self.keyring)

    def caller(self, key: str | None) -> Caller:
        return self.keyring.caller(key)

    def reload(self) -> None:
        self.keyring.reload()

    def close(self) -> None:
        self.zap.close()
