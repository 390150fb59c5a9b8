"""Pipelined load generation: a few processes, each keeping many requests in flight on raw DEALER
sockets, so that the load generator costs little CPU per op and a few processes can keep a chain
(or an echo server) busy.

The requests are written from PROTOCOL.md, not with ZClient: a DEALER sends
``["", header, value?]`` and gets ``["", header, values...]`` back, matched to its request by
``id`` (§2). Headers are pre-encoded bytes with the id spliced in; replies are parsed with orjson.

Each process owns ``inflight`` *slots*. A slot is a closed loop of its own: it sends one request,
and when the answer (or its timeout) comes, the next. Slot i reads from member i mod M, so reads
are spread evenly over every member (CRAQ's point) and a member that stalls (a CPU quota's
throttling, say) holds only its own slots, not the whole window. Writes always go to the head.

Op kinds:
    read       {"type":"read","id":N,"key":K,"mode":"strong"}            (§8.1)
    write      {"type":"write","id":N,"key":K} + one value frame          (§8.2)
    read_many  {"type":"read_many","id":N,"keys":[k1..kB],"mode":"strong"} -> header with
               "results" (a version, or an error code, per key) and "sizes", + one value frame
               holding the values one after the other (§8.8)

Timeline and accounting are those of loadgen.py: an op counts when it *completes* inside the
measured window, its latency is the time from its send to its reply, and the parent reads every
process's CPU time from /proc at the window's edges (benchlib.cpu_snapshot).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import benchlib
from loadgen import key_name
from zcraq.processes import die_with_parent

OP_KINDS = ("read", "write", "read_many")
HWM = 10_000  # per-socket queue bound; far above any in-flight count used here
UNKNOWN_READ_MANY = "the chain does not know read_many"


class Fatal(Exception):
    """The run cannot give a meaningful figure (e.g. the server does not know a request type)."""


@dataclass
class Target:
    """Where the ops go: ``read_endpoints`` (every chain member, or echo servers) and
    ``write_endpoint`` (the head). ``echo``: the servers echo the request header instead of
    answering, so any reply with a known id is a success."""
    read_endpoints: list[str]
    write_endpoint: str
    echo: bool = False


@dataclass
class PipeSpec:
    target: Target
    workload: str  # a label for reports
    inflight: int  # per generator process
    procs: int
    duration: float
    warmup: float
    keys: int  # ops pick keys uniformly from key000000 .. key{keys-1}
    value_size: int
    read_fraction: float  # the rest are writes
    batch: int = 1  # > 1: every read is a read_many of this many keys
    read_mode: str = "strong"  # strong, eventual or bounded (PROTOCOL.md §7)
    max_staleness_ms: int | None = None  # bounded: the limit (None: the node's default)
    seed: int = 42
    op_timeout: float = 5.0
    ready_timeout: float = 60.0


# ---------------------------------------------------------------------------------------------
# Inside a generator process


class _Encoder:
    """Request frames with the id spliced into pre-encoded header bytes."""

    def __init__(self, spec: dict[str, Any], rng: random.Random) -> None:
        keys = [key_name(i) for i in range(spec["keys"])]
        mode = f',"mode":"{spec["read_mode"]}"'
        if spec["max_staleness_ms"] is not None:
            mode += f',"max_staleness_ms":{spec["max_staleness_ms"]}'
        self.read_tail = [f',"key":"{k}"{mode}}}'.encode() for k in keys]
        self.write_tail = [f',"key":"{k}"}}'.encode() for k in keys]
        # Batches are drawn once (4096 of them, cycled): choosing 16 keys per op would cost more
        # than the rest of the op.
        quoted = [f'"{k}"'.encode() for k in keys]
        self.batch_tail = [b',"keys":[' + b",".join(quoted[rng.randrange(len(keys))] for _ in range(spec["batch"]))
                           + b']' + mode.encode() + b'}' for _ in range(4096 if spec["batch"] > 1 else 0)]
        self.values = [rng.randbytes(spec["value_size"]) for _ in range(64)]

    def read(self, op_id: int, key: int) -> list[bytes]:
        return [b"", b'{"type":"read","id":' + str(op_id).encode() + self.read_tail[key]]

    def write(self, op_id: int, key: int) -> list[bytes]:
        return [b"", b'{"type":"write","id":' + str(op_id).encode() + self.write_tail[key], self.values[op_id & 63]]

    def read_many(self, op_id: int, _key: int) -> list[bytes]:
        return [b"", b'{"type":"read_many","id":' + str(op_id).encode() + self.batch_tail[op_id & 4095]]


@dataclass
class _Tally:
    latencies: dict[str, array] = field(default_factory=lambda: {k: array("q") for k in OP_KINDS})
    errors: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in OP_KINDS})
    keys_ok: int = 0  # read_many: keys read (a version in "results")
    keys_failed: Counter[str] = field(default_factory=Counter)  # read_many: error code per failed key
    late: int = 0  # replies to ops already given up (timed out)
    # This process's own CPU over the window (process_time: all threads, libzmq's I/O thread
    # included; thread_time: the Python loop alone) and the window's length as it saw it.
    process_cpu_s: float = 0.0
    loop_cpu_s: float = 0.0
    clock_wall_s: float = 0.0


def _run_slots(cfg: dict[str, Any], start_ns: int, tally: _Tally) -> None:
    import orjson
    import zmq

    rng = random.Random(cfg["seed"])
    enc = _Encoder(cfg, rng)
    target = cfg["target"]
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []
    try:
        def dealer(endpoint: str) -> zmq.Socket:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, HWM)
            sock.setsockopt(zmq.RCVHWM, HWM)
            sock.connect(endpoint)
            socks.append(sock)
            return sock

        readers = [dealer(e) for e in target["read_endpoints"]]
        writer = dealer(target["write_endpoint"])
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)

        echo = target["echo"]
        read_kind = "read_many" if cfg["batch"] > 1 else "read"
        make_read = enc.read_many if read_kind == "read_many" else enc.read
        read_fraction = cfg["read_fraction"]
        nkeys = cfg["keys"]
        choose, pick = rng.random, rng.randrange
        perf = time.perf_counter_ns
        measure_start = start_ns + cfg["warmup_ns"]
        measure_end = measure_start + cfg["duration_ns"]
        timeout_ns = int(cfg["op_timeout"] * 1e9)
        pending: dict[int, tuple[int, str, int]] = {}  # id -> (sent ns, kind, slot)
        next_id = 0
        send_flags = zmq.NOBLOCK

        def send(slot: int) -> None:
            nonlocal next_id
            next_id += 1
            if choose() < read_fraction:
                kind, sock, frames = read_kind, readers[slot % len(readers)], make_read(next_id, pick(nkeys))
            else:
                kind, sock, frames = "write", writer, enc.write(next_id, pick(nkeys))
            pending[next_id] = (perf(), kind, slot)
            sock.send_multipart(frames, send_flags)  # copying is cheaper than Frame objects for small frames

        now = perf()
        if start_ns > now:
            time.sleep((start_ns - now) / 1e9)
        for slot in range(cfg["inflight"]):
            send(slot)
        next_sweep = perf() + 500_000_000
        lat = tally.latencies
        errors = tally.errors
        loads = orjson.loads
        clocks_start: tuple[float, float] | None = None
        while True:
            now = perf()
            if clocks_start is None and now >= measure_start:
                clocks_start = (time.process_time(), time.thread_time())
            if now >= measure_end:
                if clocks_start is not None:
                    tally.process_cpu_s = time.process_time() - clocks_start[0]
                    tally.loop_cpu_s = time.thread_time() - clocks_start[1]
                    tally.clock_wall_s = (now - measure_start) / 1e9
                break
            if now >= next_sweep:  # give up on ops past their timeout, so their slots go on
                next_sweep = now + 500_000_000
                for op_id, (sent, kind, slot) in list(pending.items()):
                    if now - sent > timeout_ns:
                        del pending[op_id]
                        if now >= measure_start:
                            errors[kind]["timeout"] += 1
                        send(slot)
            for sock, _event in poller.poll(100):
                for _ in range(256):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    done = perf()
                    header = loads(frames[1])
                    entry = pending.pop(header.get("id"), None)
                    if entry is None:
                        if header.get("type") == "error" and header.get("id") is None:
                            # Refused before its id was read (PROTOCOL.md §3.2): every such request would be.
                            raise Fatal(f"the server refused a request as malformed: {header.get('code')}: "
                                        f"{header.get('message')}")
                        tally.late += 1
                        continue
                    sent, kind, slot = entry
                    counted = measure_start <= done < measure_end
                    if echo or header.get("type") == "ok":
                        if counted:
                            lat[kind].append(done - sent)
                            if kind == "read_many" and not echo:
                                results, sizes = header.get("results"), header.get("sizes")
                                if not isinstance(results, list) or not isinstance(sizes, list) \
                                        or len(sizes) != len(results) or len(frames) != 3 \
                                        or sum(sizes) != len(frames[2]):
                                    raise Fatal(f"malformed read_many reply: results {results!r}, sizes "
                                                f"{sizes!r}, {len(frames) - 2} value frames")
                                for r in results:
                                    if isinstance(r, int):
                                        tally.keys_ok += 1
                                    else:
                                        tally.keys_failed[str(r)] += 1
                    else:
                        code = str(header.get("code"))
                        if kind == "read_many" and code == "bad_request":
                            raise Fatal(f"{UNKNOWN_READ_MANY} (it answered bad_request: {header.get('message')})")
                        if counted:
                            errors[kind][code] += 1
                    send(slot)
    finally:
        for sock in socks:
            sock.close(0)
        ctx.term()


def generator_main(index: int, cfg: dict[str, Any], results: Any, start_ns_value: Any, go: Any) -> None:
    """Entry point of one generator process: runs its slots, then reports its tally."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    die_with_parent()
    results.put(("ready", index, os.getpid()))
    tally = _Tally()
    fatal = None
    try:
        if not go.wait(cfg["ready_timeout"]):
            raise Fatal("the start signal never came")
        _run_slots(dict(cfg, seed=cfg["seed"] * 1_000_003 + index), start_ns_value.value, tally)
    except Fatal as exc:
        fatal = str(exc)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        fatal = f"{type(exc).__name__}: {exc}"
    results.put(("result", index, {
        "latencies": {k: tally.latencies[k].tobytes() for k in OP_KINDS},
        "errors": {k: dict(tally.errors[k]) for k in OP_KINDS},
        "keys_ok": tally.keys_ok, "keys_failed": dict(tally.keys_failed), "late": tally.late,
        "process_cpu_s": tally.process_cpu_s, "loop_cpu_s": tally.loop_cpu_s, "clock_wall_s": tally.clock_wall_s,
        "fatal": fatal}))


# ---------------------------------------------------------------------------------------------
# In the benchmark process


def run(spec: PipeSpec, server_pids: dict[str, int],
        on_window: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run one workload; returns throughput, latency percentiles over every op, errors and the
    CPU time of every process over the window (``server_pids`` plus the generators).
    ``on_window("start"|"end")`` runs right after each CPU snapshot; what it returns is kept in
    result["window_probe"]. Raises Fatal when a generator found the run meaningless."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    start_ns_value = ctx.Value("q", 0, lock=False)
    t = spec.target
    warmup_ns, duration_ns = int(spec.warmup * 1e9), int(spec.duration * 1e9)
    cfg: dict[str, Any] = {"target": {"read_endpoints": t.read_endpoints, "write_endpoint": t.write_endpoint, "echo": t.echo},
           "inflight": spec.inflight, "keys": spec.keys, "value_size": spec.value_size,
           "read_fraction": spec.read_fraction, "batch": spec.batch, "seed": spec.seed,
           "read_mode": spec.read_mode, "max_staleness_ms": spec.max_staleness_ms,
           "op_timeout": spec.op_timeout, "ready_timeout": spec.ready_timeout,
           "warmup_ns": warmup_ns, "duration_ns": duration_ns}
    workers = [ctx.Process(target=generator_main, args=(p, cfg, results, start_ns_value, go),
                           name=f"loadgen-{p}", daemon=True) for p in range(spec.procs)]
    payloads: dict[int, dict[str, Any]] = {}
    probe: dict[str, Any] = {}
    try:
        for worker in workers:
            worker.start()
        _collect(results, "ready", len(workers), spec.ready_timeout, {})
        start_ns = time.perf_counter_ns() + 300_000_000  # time for every process to connect
        start_ns_value.value = start_ns
        go.set()
        measure_start = start_ns + warmup_ns
        measure_end = measure_start + duration_ns
        pids = dict(server_pids)
        pids.update({f"loadgen-{p}": w.pid for p, w in enumerate(workers) if w.pid is not None})
        _sleep_until(measure_start)
        before = benchlib.cpu_snapshot(pids)
        if on_window:
            probe["start"] = on_window("start")
        _sleep_until(measure_end)
        after = benchlib.cpu_snapshot(pids)
        if on_window:
            probe["end"] = on_window("end")
        _collect(results, "result", len(workers), spec.op_timeout + 30, payloads)
    finally:
        go.set()  # never leave a worker waiting
        for worker in workers:
            if worker.pid is None:  # never started
                continue
            worker.join(5.0)
            if worker.is_alive():
                worker.kill()
                worker.join(5.0)
        results.close()
        results.join_thread()
    fatal = [p["fatal"] for p in payloads.values() if p["fatal"]]
    if fatal:
        raise Fatal(fatal[0])
    result = _merge(spec, payloads, benchlib.cpu_delta(before, after))
    result["window_probe"] = probe
    return result


def _collect(results: Any, kind: str, count: int, timeout: float, into: dict[int, Any]) -> None:
    """Wait for ``count`` messages of ``kind`` from the generators."""
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < count:
        try:
            message = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"only {seen} of {count} generator processes sent {kind!r}") from None
        if message[0] == kind:
            seen += 1
            into[message[1]] = message[2]
        if time.monotonic() > deadline:
            raise TimeoutError(f"generator processes did not send {kind!r} in time")


def _sleep_until(deadline_ns: int) -> None:
    while (remaining := deadline_ns - time.perf_counter_ns()) > 0:
        time.sleep(min(remaining / 1e9, 0.5))


def _merge(spec: PipeSpec, payloads: dict[int, dict[str, Any]], cpu: dict[str, Any]) -> dict[str, Any]:
    merged = {k: array("q") for k in OP_KINDS}
    errors: dict[str, Counter[str]] = {k: Counter() for k in OP_KINDS}
    keys_failed: Counter[str] = Counter()
    keys_ok = late = 0
    for payload in payloads.values():
        for k in OP_KINDS:
            sample = array("q")
            sample.frombytes(payload["latencies"][k])
            merged[k].extend(sample)
            errors[k].update(payload["errors"][k])
        keys_ok += payload["keys_ok"]
        keys_failed.update(payload["keys_failed"])
        late += payload["late"]
    every = array("q")
    for k in OP_KINDS:
        every.extend(merged[k])
    ok = len(every)
    procs = cpu["processes"]

    def cpu_s(prefixes: tuple[str, ...]) -> float:
        return sum(c["cpu_s"] or 0.0 for n, c in procs.items() if n.startswith(prefixes))

    per_op = max(1, ok)
    return {
        "workload": spec.workload, "inflight": spec.inflight, "procs": spec.procs, "batch": spec.batch,
        "read_fraction": spec.read_fraction, "duration_s": spec.duration, "warmup_s": spec.warmup,
        "ok_ops": ok, "ops_per_s": ok / spec.duration,
        "ops_per_s_by_op": {k: len(merged[k]) / spec.duration for k in OP_KINDS if merged[k]},
        "keys_per_s": keys_ok / spec.duration if spec.batch > 1 else None,
        "keys_failed": dict(keys_failed),
        "errors": sum(sum(c.values()) for c in errors.values()),
        "errors_by_op": {k: dict(v) for k, v in errors.items() if v},
        "late_replies": late,
        "latency": benchlib.summarize(every),
        "latency_by_op": {k: benchlib.summarize(merged[k]) for k in OP_KINDS if merged[k]},
        "node_cpu_us_per_op": cpu_s(("node", "echo")) * 1e6 / per_op,
        "coordinator_cpu_us_per_op": cpu_s(("coordinator",)) * 1e6 / per_op,
        # The generators' CPU by their own clocks (the figure); by /proc from outside in "cpu".
        "client_cpu_us_per_op": sum(p["process_cpu_s"] for p in payloads.values()) * 1e6 / per_op,
        # % of one CPU of each generator's Python loop: near 100 %, the generator is the limit.
        "generator_loop_pct": [100 * p["loop_cpu_s"] / p["clock_wall_s"] if p["clock_wall_s"] else None
                               for p in payloads.values()],
        "generator_cpu_pct": [100 * p["process_cpu_s"] / p["clock_wall_s"] if p["clock_wall_s"] else None
                              for p in payloads.values()],
        "others_cpu_pct": 100.0 * cpu["others_cpu_s"] / cpu["wall_s"],
        "cpu": cpu,
    }
