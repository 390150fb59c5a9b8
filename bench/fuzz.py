"""Hostile traffic against every endpoint of a real chain, then a check that nothing was hurt.

Starts a coordinator and a 3-node chain (the launcher, zcraq/cluster.py), writes a set of keys,
then sends ``--messages`` messages to each endpoint - the coordinator's requests, and each node's
service, write-in and ack-in - one endpoint after another: random bytes, random frame counts, and
valid messages mutated (bytes flipped, inserted, cut; fields of the wrong type, out of range,
missing; frames added and dropped). Afterwards every process must be alive, every node must still
hold exactly the preloaded values, and the chain must still take a write and a read.

With ``--secure`` the chain runs with CURVE keys, and the fuzzer sends once without keys (the
handshake refuses it) and once with a client's key (connected, but every node-only message is
forbidden). Without keys every local process is trusted: a message that imitates a chain member
in its current epoch exactly is a legitimate frame, and a join a legitimate node, not fuzz, so the
fuzzer then never names a real member, never joins and never writes the preloaded keys; what it
tests is that garbage and near-misses do no harm.

    python bench/fuzz.py --messages 100000 --seed 1 [--secure]

Prints messages sent and handled per endpoint and the verdict; exit status 0 when every check
holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from zcraq.cluster import Cluster
from zcraq.errors import ZcraqError
from zcraq.layout import Generated

U32 = struct.Struct(">I")
PRELOAD = 200
KEEP = "P/keep-"  # the preloaded keys: no corpus message names them


def keep_key(index: int) -> str:
    return f"{KEEP}{index:04d}"


# ---------------------------------------------------------------------------------- messages


class Corpus:
    """Valid-looking messages for each endpoint kind, and mutations of them."""

    def __init__(self, rng: random.Random, epoch: int) -> None:
        self.rng = rng
        self.epoch = epoch

    def value(self) -> Any:
        rng = self.rng
        return rng.choice([None, True, -1, 0, 1, 2**31, 2**63 - 1, 2**64, -(2**63) - 1, 1.5, "", "x" * 70,
                           "q" + str(rng.randrange(100)), [], {}, [1, "a"], {"a": [None]}, "\u0000", "\U0001F600"])

    def request(self, types: list[str]) -> list[bytes]:
        rng = self.rng
        kind = rng.choice(types)
        header: dict[str, Any] = {"type": kind, "id": rng.choice([rng.randrange(1 << 20), "f", None])}
        key = f"q{rng.randrange(1000)}"
        if kind in ("read", "write", "delete", "version"):
            header["key"] = key
        if kind in ("read", "read_many", "scan") and rng.random() < 0.5:
            header["mode"] = rng.choice(["strong", "eventual", "bounded", "bounded", "dirty"])
            if rng.random() < 0.5:
                header["max_staleness_ms"] = rng.choice([0, 10, 3_600_000, 3_600_001, -1])
        if kind in ("write", "delete") and rng.random() < 0.5:
            header["if_version"] = rng.choice([0, 1, 2, 2**64 - 1, -1])
        if kind in ("read_many", "write_many", "delete_many"):
            header["keys"] = [f"q{rng.randrange(1000)}" for _ in range(rng.choice([0, 1, 3, 1001]))]
        if kind == "scan":
            for name in ("start", "end", "prefix", "after"):
                if rng.random() < 0.4:
                    header[name] = rng.choice(["", "q", "q5", "r", None])
            header["limit"] = rng.choice([1, 100, 1000, 1001])
        if kind in ("watch", "watch_state"):
            header["key" if rng.random() < 0.5 else "prefix"] = rng.choice(["q", "q1", ""])
            header["after"] = rng.choice([0, 1, 10**6, None, "q1"])
            header["limit"] = rng.choice([1, 100, 1000, 1001])
        if kind == "watch":
            header["log"] = rng.choice(["", "x.0", "0" * 129])
            header["wait_ms"] = rng.choice([0, 0, 20, 60_001])
        if kind == "watch_state":
            header["values"] = rng.choice([True, False, 1])
        if kind in ("version", "catchup", "heartbeat", "caught_up", "confirm"):
            header["epoch"] = rng.choice([self.epoch, self.epoch + 1, 0])
        if kind == "catchup":
            header["limit"] = rng.choice([1, 10, 100_001])
        if kind in ("heartbeat", "caught_up", "leave", "confirm"):
            header["node_id"] = rng.choice(["fuzz", "nodeX"])  # never a real member
        if kind in ("join", "heartbeat"):
            header["protocol"] = rng.choice([1, 2, 3])
        if kind == "join":
            header["node"] = {"id": "fuzz", "service": "tcp://127.0.0.1:1", "write_in": "tcp://127.0.0.1:2",
                              "ack_in": "tcp://127.0.0.1:3"}
        if rng.random() < 0.1:
            header["partition"] = rng.choice([0, 1, 4095, 4096, -1])
        for _ in range(rng.choice([0, 0, 1, 2])):
            header[rng.choice(list(header) + ["extra", "mode"])] = self.value()
        frames = [_json(header)]
        if kind == "write" or rng.random() < 0.1:
            frames.append(rng.randbytes(rng.choice([0, 3, 64])))
        if kind == "write_many":
            count = len(header["keys"]) if isinstance(header.get("keys"), list) else 1
            frames += [rng.randbytes(8) for _ in range(count + rng.choice([0, 0, 1, -1]))]
        return frames

    def chain(self, kind: str) -> bytes:
        rng = self.rng
        header: dict[str, Any] = {"t": kind, "from": rng.choice(["fuzz", "nodeX", ""]),
                                  "epoch": rng.choice([self.epoch, self.epoch - 1, 0]), "seq": rng.randrange(3)}
        if kind == "c":
            header["commits"] = [[f"q{rng.randrange(100)}", rng.randrange(1, 5)] for _ in range(rng.randrange(3))]
        if rng.random() < 0.1:
            header["p"] = rng.choice([0, 1, 4096])
        for _ in range(rng.choice([0, 0, 1])):
            header[rng.choice(list(header))] = self.value()
        out = _frame(header)
        if kind == "w":
            for _ in range(rng.randrange(4)):
                meta = _json([f"q{rng.randrange(100)}", rng.randrange(1, 5), rng.randrange(4)])
                value = rng.randbytes(rng.choice([0, 8, 64]))
                out += U32.pack(len(meta)) + meta + U32.pack(len(value)) + value
        return out

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buffer = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            roll = rng.random()
            if not buffer or roll < 0.3:
                buffer[rng.randrange(len(buffer) + 1):0] = rng.randbytes(rng.randrange(1, 5))
            elif roll < 0.6:
                buffer[rng.randrange(len(buffer))] = rng.randrange(256)
            elif roll < 0.8:
                del buffer[rng.randrange(len(buffer)):][: rng.randrange(1, 8)]
            else:
                cut = rng.randrange(len(buffer) + 1)
                buffer = buffer[:cut]
        return bytes(buffer)

    def garbage(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 4, 7, 64, 1000]))


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        import json
        return json.dumps(value).encode()


def _frame(header: dict[str, Any]) -> bytes:
    head = _json(header)
    return U32.pack(len(head)) + head


def request_messages(corpus: Corpus, types: list[str]) -> Iterator[list[bytes]]:
    rng = corpus.rng
    while True:
        roll = rng.random()
        if roll < 0.15:
            yield [corpus.garbage() for _ in range(rng.choice([1, 1, 2, 3]))]
        elif roll < 0.6:
            frames = corpus.request(types)
            index = rng.randrange(len(frames))
            frames[index] = corpus.mutate(frames[index])
            yield frames
        else:
            yield corpus.request(types)


def chain_messages(corpus: Corpus, kinds: list[str]) -> Iterator[list[bytes]]:
    rng = corpus.rng
    while True:
        roll = rng.random()
        if roll < 0.15:
            yield [corpus.garbage()] if rng.random() < 0.8 else [corpus.garbage(), corpus.garbage()]
        elif roll < 0.6:
            yield [corpus.mutate(corpus.chain(rng.choice(kinds)))]
        else:
            yield [corpus.chain(rng.choice(["w", "c", "r"]))]


# ---------------------------------------------------------------------------------- sending


def blast(ctx: zmq.Context, kind: int, endpoint: str, messages: Iterator[list[bytes]], count: int,
          keys: tuple[bytes, bytes, bytes] | None) -> tuple[int, int] | None:
    """Send ``count`` messages; a DEALER's replies are read and dropped as they come. Returns the
    messages sent and the replies received, or None when the server refused the handshake (then
    not one message gets through: there is nothing to send)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.SNDTIMEO, 2000)
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys
    monitor = sock.get_monitor_socket()
    sock.connect(endpoint)
    sent = replies = 0
    try:
        if not _handshake_succeeded(monitor):
            return None
        for _ in range(count):
            frames = next(messages)
            if kind == zmq.DEALER:
                frames = [b"", *frames]
            try:
                sock.send_multipart(frames)
                sent += 1
            except zmq.Again:
                pass  # the server is slower than we are: this one is lost, as in the wild
            if kind == zmq.DEALER:
                while sock.poll(0):
                    sock.recv_multipart()
                    replies += 1
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
    return sent, replies


def _handshake_succeeded(monitor: zmq.Socket, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor.poll(100):
            event = int(recv_monitor_message(monitor)["event"])
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return True
            if event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                         zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                return False
    raise RuntimeError("no handshake within 10 s")


# ---------------------------------------------------------------------------------- the run


def run(messages: int, seed: int, secure: bool, root: Path) -> list[str]:
    problems: list[str] = []
    layout = Generated(root, 3, coordinator={"lease_ms": 3000}, node={"durability": "async"}, secure=secure)
    cluster = Cluster(layout)
    ctx = zmq.Context()
    try:
        cluster.start_all()
        with cluster.client(timeout=10.0) as client:
            for index in range(PRELOAD):
                client.write(keep_key(index), f"value-{index}".encode())
            epoch = client.topology().epoch
        corpus = Corpus(random.Random(seed), epoch)
        identities: list[tuple[str, Callable[[str], tuple[bytes, bytes, bytes] | None]]]
        if secure:
            assert layout.keys is not None
            client_public, client_secret = zmq.auth.load_certificate(str(layout.keys / "client.key_secret"))

            def as_client(server: str) -> tuple[bytes, bytes, bytes]:
                server_key = zmq.auth.load_certificate(str(layout.keys / f"{server}.key"))[0]  # type: ignore[operator]
                return client_public, client_secret, server_key  # type: ignore[return-value]

            identities = [("no key", lambda server: None), ("client key", as_client)]
        else:
            identities = [("plain", lambda server: None)]
        node_types = ["read", "write", "delete", "version", "catchup", "status", "confirm", "read_many", "write_many",
                      "delete_many", "scan", "watch", "watch_state"]
        coordinator_types = ["topology", "status", "write", "delete", "heartbeat", "caught_up", "leave"]
        if secure:  # without keys a join is a node's legitimate request: it would add a node that never answers
            coordinator_types.append("join")
        for identity, keys_for in identities:
            targets = [("coordinator requests", zmq.DEALER, cluster.coordinator_endpoint, "coordinator",
                        request_messages(corpus, coordinator_types))]
            for node_id, config in cluster.node_configs.items():
                targets += [(f"{node_id} service", zmq.DEALER, config.service_endpoint, node_id,
                             request_messages(corpus, node_types)),
                            (f"{node_id} write-in", zmq.PUSH, config.write_endpoint, node_id,
                             chain_messages(corpus, ["w"])),
                            (f"{node_id} ack-in", zmq.PUSH, config.ack_endpoint, node_id,
                             chain_messages(corpus, ["c", "r"]))]
            for name, kind, endpoint, server, stream in targets:
                started = time.monotonic()
                result = blast(ctx, kind, endpoint, stream, messages, keys_for(server))
                elapsed = time.monotonic() - started
                if result is None:
                    print(f"{identity:10} {name:22} handshake refused: no message gets through", flush=True)
                else:
                    print(f"{identity:10} {name:22} {result[0]:8,} sent in {elapsed:6.1f} s, {result[1]:8,} replies",
                          flush=True)
                exits = cluster.exits()
                if exits:
                    problems += [f"after fuzzing {name} ({identity}): {found}" for found in exits]
                    return problems
        problems += check(cluster)
    finally:
        ctx.destroy(linger=0)
        cluster.close()
    return problems


def check(cluster: Cluster) -> list[str]:
    """Once the chain has settled: every node holds exactly the preloaded values, and the chain
    still serves."""
    problems: list[str] = []
    try:
        cluster.wait(cluster.converged, 60, "the chain to settle after the fuzzing")
    except TimeoutError as error:
        return [f"{error}: {cluster.chain_state()}"]
    counters: dict[str, dict[str, int]] = {}
    with cluster.client(timeout=10.0) as client:
        for node_id in cluster.node_ids:
            counters[node_id] = cluster.node_status(node_id)["counters"]
            for index in range(PRELOAD):
                expected = f"value-{index}".encode()
                try:
                    found = client.read(keep_key(index), node_id)
                except ZcraqError as error:
                    problems.append(f"{node_id}: {keep_key(index)} unreadable: {error}")
                    continue
                if found != expected:
                    problems.append(f"{node_id}: {keep_key(index)} is {found!r}, not {expected!r}")
        try:
            version = client.write("P/after", b"ok")
            if any(client.read("P/after", node_id) != b"ok" for node_id in cluster.node_ids):
                problems.append("a write after the fuzzing does not read back at every node")
            print(f"a write after the fuzzing committed as version {version} and reads back at every node")
            stream = client.watch("P/after", since_version=0, poll_wait=0.2)
            deadline = time.monotonic() + 20
            delivered: list[Any] = []
            while not delivered and time.monotonic() < deadline:
                delivered = stream.poll()
            if [(c.version, c.value) for c in delivered[:1]] != [(version, b"ok")]:
                problems.append(f"a watch after the fuzzing delivered {delivered[:1]}, not version {version}")
            else:
                print("a watch after the fuzzing delivers it")
        except ZcraqError as error:
            problems.append(f"the chain no longer serves: {error}")
    for node_id, found in counters.items():
        print(f"{node_id} counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(found.items()) if v))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuzz.py", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per endpoint (and identity)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--secure", action="store_true", help="CURVE keys on every connection")
    parser.add_argument("--dir", type=Path, help="keep the cluster's files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zcraq-fuzz-") as scratch:
        root = args.dir or Path(scratch)
        problems = run(args.messages, args.seed, args.secure, root)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("verdict:", "PASS" if not problems else f"FAIL ({len(problems)} problems)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
