"""Raw pyzmq baseline: the same closed-loop clients as chain_bench.py, against trivial echo servers.

The server is one ROUTER socket in one process running the same loop shape as a zcraq node
(poll, take up to 256 waiting messages, answer each with a non-blocking send), with the node's own
receive and send functions (zcraq/sockets.py: recv_batch, send_nowait), but doing no work at all:
it never parses the header. Replies have zcraq's shapes, so the bytes moved match:

    read:  [b"", header]         -> [b"", header, value]   (value: --value-size bytes)
    write: [b"", header, value]  -> [b"", header]

That gives the ceiling that ZeroMQ + Python + this load generator impose on this machine; the
chain benchmark reports zcraq's throughput as a fraction of it. chain_bench.py runs it (alone with
--no-chain); this file is also the echo server program:

    python bench/chain_bench.py --no-chain --baseline-servers 1 --clients 8 --duration 10
    python bench/zmq_baseline.py serve --port 5555 --value-size 64     (the echo server alone)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import cpuquota
import loadgen
from zcraq.layout import free_ports
from zcraq.processes import spawn, terminate
from zcraq.waiting import wait_until

BATCH = 256


def serve(port: int, value_size: int) -> None:
    import signal

    import zmq

    from zcraq.sockets import recv_batch, send_nowait

    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    sock.bind(f"tcp://127.0.0.1:{port}")
    value = bytes(range(256)) * (value_size // 256 + 1)
    value = value[:value_size]
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while not stopping:
        if not poller.poll(50):
            continue
        for frames in recv_batch(sock, BATCH):
            # frames: [identity, b"", header] or [identity, b"", header, value]
            send_nowait(sock, [*frames[:3], value] if len(frames) == 3 else frames[:3])
    sock.close(0)
    ctx.term()


class EchoServers:
    """``count`` echo server processes on free loopback ports."""

    def __init__(self, count: int, value_size: int, root: Path) -> None:
        self.root = root
        self.endpoints: list[str] = []
        self.processes = {}
        for index, port in enumerate(free_ports(count), start=1):
            name = f"echo{index}"
            self.processes[name] = spawn(
                [sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port),
                 "--value-size", str(value_size)], log=root / f"{name}.log")
            self.endpoints.append(f"tcp://127.0.0.1:{port}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until each server answers a round trip."""
        import zmq

        ctx = zmq.Context()
        try:
            for endpoint in self.endpoints:
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(endpoint)
                try:
                    def answered() -> bool:
                        self.check_alive()
                        sock.send_multipart([b"", b'{"type":"read","id":0}'])
                        return bool(sock.poll(200)) and bool(sock.recv_multipart())
                    wait_until(answered, timeout, f"echo server {endpoint}")
                finally:
                    sock.close(0)
        finally:
            ctx.term()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}")

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}

    def close(self) -> None:
        terminate(self.processes.values())


def run_baseline(servers: int, workloads: list[str], common: dict[str, Any],
                 report: Any = print, server_cpu: float | None = None) -> list[dict[str, Any]]:
    """Run each workload against ``servers`` echo servers; returns one result per workload.

    With ``server_cpu``, each server runs in a cgroup capped at that fraction of a CPU (as
    chain_bench.py --node-cpu caps each node), so the comparison stays like with like."""
    results = []
    quota = cpuquota.CpuQuota(server_cpu) if server_cpu is not None else None
    with tempfile.TemporaryDirectory(prefix="zcraq-bench-echo-") as tmp:
        echo = EchoServers(servers, common["value_size"], Path(tmp))
        try:
            if quota is not None:
                for name, pid in echo.pids().items():
                    quota.add(name, pid)
            echo.wait_ready()
            for workload in workloads:
                spec = loadgen.LoadSpec(target={"kind": "raw", "endpoints": echo.endpoints,
                                                "timeout": common["op_timeout"]},
                                        workload=workload, **loadgen.load_args(common))
                result = loadgen.run_load_retrying(spec, echo.pids(), retries=spec.retries)
                echo.check_alive()
                result.update(system="zmq-echo", servers=servers, nodes=None, node_cpu=server_cpu)
                report(result)
                results.append(result)
        finally:
            try:
                echo.close()
            finally:
                if quota is not None:
                    quota.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """The echo server: ``zmq_baseline.py serve --port PORT [--value-size N]``."""
    parser = argparse.ArgumentParser(prog="zmq_baseline.py", description="The baseline's echo server; run the "
                                     "baseline itself with chain_bench.py --no-chain.")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="answer round trips on 127.0.0.1:PORT until SIGTERM or SIGINT")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--value-size", type=int, default=64)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    serve(args.port, args.value_size)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
