"""Closed-loop load generation in several processes, with exact latency merging.

``run_load`` starts ``procs`` generator processes (multiprocessing, "spawn": fresh interpreters,
no inherited ZeroMQ state). The ``clients`` closed-loop clients are dealt out over them; a process
with more than one client runs one thread per client, each with its own client object (ZeroMQ
sockets are not thread-safe). Every client issues one request at a time and waits for its answer.

Timeline, on the system-wide monotonic clock (``time.perf_counter_ns`` is CLOCK_MONOTONIC on
Linux, so values compare across processes):

    start ---- warm-up ---- measure_start ---- measured window ---- measure_end

An op is measured when it *completes* inside [measure_start, measure_end): its latency
(perf_counter_ns after minus before) goes into the sample, and it counts toward throughput only if
it succeeded; failures are counted by exception type and never enter throughput or latency.
Every measured latency is sent back raw (int64 ns), so percentiles are computed over the merged
sample, never averaged across processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import benchlib
from zcraq.processes import die_with_parent

OP_KINDS = ("read", "write")


def key_name(index: int) -> str:
    return f"key{index:06d}"


# ---------------------------------------------------------------------------------------------
# Targets: what one client does per op


class ZcraqTarget:
    """One ZClient: reads spread over every node (ZClient default), writes to the head."""

    def __init__(self, spec: dict[str, Any], seed: int) -> None:
        from zcraq.client import ZClient

        random.seed(seed)  # ZClient picks its first reader with the module-level RNG
        self.client = ZClient(spec["coordinator"], timeout=spec["timeout"], config=spec.get("client_config"))
        self.mode = spec.get("read_mode", "strong")

    def read(self, key: str) -> None:
        self.client.read(key, mode=self.mode)

    def write(self, key: str, value: bytes) -> None:
        self.client.write(key, value)

    def close(self) -> None:
        self.client.close()


class RawTarget:
    """Bare pyzmq DEALER round trips to echo servers, message shapes as zcraq's:
    read = [b"", header] -> [b"", header, value]; write = [b"", header, value] -> [b"", header].
    Endpoints are used round-robin (like ZClient spreading reads)."""

    def __init__(self, spec: dict[str, Any], seed: int) -> None:
        import orjson
        import zmq

        self._zmq = zmq
        self._dumps = orjson.dumps
        self.timeout_ms = int(spec["timeout"] * 1000)
        self.ctx = zmq.Context()
        self.sockets = []
        for endpoint in spec["endpoints"]:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            self.sockets.append(sock)
        self.next = random.Random(seed).randrange(1 << 16)
        self.ids = 0

    def _call(self, frames: list[bytes]) -> None:
        zmq = self._zmq
        self.next += 1
        sock = self.sockets[self.next % len(self.sockets)]
        header = frames[1]
        sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        while True:
            if not sock.poll(self.timeout_ms):
                raise TimeoutError("echo server did not answer")
            reply = sock.recv_multipart()
            if len(reply) >= 2 and reply[1] == header:
                return
            # else: a late answer to an earlier request

    def read(self, key: str) -> None:
        self.ids += 1
        self._call([b"", self._dumps({"type": "read", "id": self.ids, "key": key, "mode": "strong"})])

    def write(self, key: str, value: bytes) -> None:
        self.ids += 1
        self._call([b"", self._dumps({"type": "write", "id": self.ids, "key": key}), value])

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(0)
        self.ctx.term()


TARGETS: dict[str, Callable[[dict[str, Any], int], Any]] = {"zcraq": ZcraqTarget, "raw": RawTarget}


# ---------------------------------------------------------------------------------------------
# Inside a generator process


@dataclass
class ClientResult:
    latencies: dict[str, array]
    errors: dict[str, Counter]
    ops_total: int = 0  # warm-up included
    fatal: str | None = None


def _client_loop(client_index: int, cfg: dict[str, Any], start_ns_value: Any, go: Any,
                 out: list[ClientResult | None]) -> None:
    result = ClientResult({k: array("q") for k in OP_KINDS}, {k: Counter() for k in OP_KINDS})
    out[client_index] = result
    seed = cfg["seed"] * 1_000_003 + client_index
    rng = random.Random(seed)
    keys = [key_name(i) for i in range(cfg["keys"])]
    values = [rng.randbytes(cfg["value_size"]) for _ in range(64)]
    read_fraction = cfg["read_fraction"]
    target = None
    try:
        target = TARGETS[cfg["target"]["kind"]](cfg["target"], seed)
        if not go.wait(cfg["ready_timeout"]):
            result.fatal = "start signal never came"
            return
        start_ns = start_ns_value.value
        measure_start = start_ns + cfg["warmup_ns"]
        measure_end = measure_start + cfg["duration_ns"]
        now = time.perf_counter_ns()
        if start_ns > now:
            time.sleep((start_ns - now) / 1e9)
        perf = time.perf_counter_ns
        lat_read, lat_write = result.latencies["read"], result.latencies["write"]
        err_read, err_write = result.errors["read"], result.errors["write"]
        do_read, do_write = target.read, target.write
        choose, pick = rng.random, rng.randrange
        nkeys = len(keys)
        ops = 0
        while True:
            key = keys[pick(nkeys)]
            is_read = choose() < read_fraction
            error: str | None = None
            t0 = perf()
            try:
                if is_read:
                    do_read(key)
                else:
                    do_write(key, values[ops & 63])
            except Exception as exc:  # counted, never fatal: the next op goes on
                error = type(exc).__name__
            t1 = perf()
            ops += 1
            if t1 >= measure_end:
                break
            if t1 >= measure_start:
                if error is None:
                    (lat_read if is_read else lat_write).append(t1 - t0)
                else:
                    (err_read if is_read else err_write)[error] += 1
        result.ops_total = ops
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        result.fatal = f"{type(exc).__name__}: {exc}"
    finally:
        if target is not None:
            try:
                target.close()
            except Exception:
                pass


def generator_main(proc_index: int, client_indices: list[int], cfg: dict[str, Any], results: Any,
                   start_ns_value: Any, go: Any) -> None:
    """Entry point of one generator process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    die_with_parent()  # and if the parent is killed outright, we go too
    slots: list[ClientResult | None] = [None] * (max(client_indices) + 1)
    results.put(("ready", proc_index, os.getpid()))
    threads = [threading.Thread(target=_client_loop, args=(i, cfg, start_ns_value, go, slots), daemon=True)
               for i in client_indices]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + cfg["ready_timeout"] + (cfg["warmup_ns"] + cfg["duration_ns"]) / 1e9 + 3 * cfg[
        "target"]["timeout"] + 10
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    payload: dict[str, Any] = {"clients": {}, "stuck": [i for i, t in zip(client_indices, threads) if t.is_alive()]}
    for i in client_indices:
        r = slots[i]
        if r is None:
            payload["clients"][i] = {"fatal": "client never started"}
            continue
        payload["clients"][i] = {
            "latencies": {k: r.latencies[k].tobytes() for k in OP_KINDS},
            "errors": {k: dict(r.errors[k]) for k in OP_KINDS},
            "ops_total": r.ops_total,
            "fatal": r.fatal,
        }
    results.put(("result", proc_index, payload))


# ---------------------------------------------------------------------------------------------
# In the benchmark process


@dataclass
class LoadSpec:
    target: dict[str, Any]
    workload: str  # read | write | mixed
    clients: int
    procs: int
    duration: float
    warmup: float
    keys: int
    value_size: int
    seed: int
    read_fraction: float
    wait_quiet: float = 0.0  # seconds to wait for other processes on the machine to go quiet
    retries: int = 0  # extra attempts when other processes disturbed the window (run_load_retrying)
    ready_timeout: float = 60.0


def load_args(common: dict[str, Any]) -> dict[str, Any]:
    """The LoadSpec fields that every workload of one benchmark run shares."""
    keys = ("clients", "procs", "duration", "warmup", "keys", "value_size", "seed", "read_fraction", "wait_quiet",
            "retries")
    return {k: common[k] for k in keys}


WORKLOAD_READ_FRACTION = {"read": 1.0, "write": 0.0}


def deal(clients: int, procs: int) -> list[list[int]]:
    """Client indices per generator process, as even as possible."""
    procs = max(1, min(procs, clients))
    return [list(range(p, clients, procs)) for p in range(procs)]


def run_load(spec: LoadSpec, server_pids: dict[str, int],
             on_window: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run one workload; returns throughput, merged latency statistics, errors and CPU use.

    ``server_pids``: processes whose CPU time is measured over the window alongside the
    generators and this process. ``on_window("start"|"end")`` runs right after each CPU
    snapshot (e.g. to read node counters); what it returns is in result["window_probe"]."""
    if spec.wait_quiet > 0:
        benchlib.wait_quiet(spec.wait_quiet, DISTURBED_PCT)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    start_ns_value = ctx.Value("q", 0, lock=False)
    read_fraction = WORKLOAD_READ_FRACTION.get(spec.workload, spec.read_fraction)
    cfg = {
        "target": spec.target, "keys": spec.keys, "value_size": spec.value_size, "seed": spec.seed,
        "read_fraction": read_fraction, "warmup_ns": int(spec.warmup * 1e9),
        "duration_ns": int(spec.duration * 1e9), "ready_timeout": spec.ready_timeout,
    }
    groups = deal(spec.clients, spec.procs)
    workers = [ctx.Process(target=generator_main, args=(p, g, cfg, results, start_ns_value, go),
                           name=f"loadgen-{p}", daemon=True) for p, g in enumerate(groups)]
    payloads: dict[int, dict[str, Any]] = {}
    finished = False
    try:
        for worker in workers:
            worker.start()
        ready = 0
        deadline = time.monotonic() + spec.ready_timeout
        while ready < len(workers):
            try:
                message = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"only {ready} of {len(workers)} generator processes started") from None
            if message[0] == "ready":
                ready += 1
            if time.monotonic() > deadline:
                raise TimeoutError("generator processes did not start in time")
        # Give each process time to set up its clients' sockets before the clock starts.
        start_ns = time.perf_counter_ns() + 500_000_000
        start_ns_value.value = start_ns
        go.set()
        measure_start = start_ns + cfg["warmup_ns"]
        measure_end = measure_start + cfg["duration_ns"]
        pids = dict(server_pids)
        pids.update({f"loadgen-{p}": w.pid for p, w in enumerate(workers)})
        pids["bench (parent)"] = os.getpid()
        _sleep_until(measure_start)
        probe: dict[str, Any] = {}
        before = benchlib.cpu_snapshot(pids)
        if on_window:
            probe["start"] = on_window("start")
        _sleep_until(measure_end)
        after = benchlib.cpu_snapshot(pids)
        if on_window:
            probe["end"] = on_window("end")
        deadline = time.monotonic() + 3 * spec.target["timeout"] + 30
        while len(payloads) < len(workers):
            try:
                message = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"only {len(payloads)} of {len(workers)} generator processes reported") from None
            if message[0] == "result":
                payloads[message[1]] = message[2]
            if time.monotonic() > deadline:
                raise TimeoutError("generator processes did not report in time")
        finished = True
    finally:
        go.set()  # never leave a worker waiting
        for worker in workers:
            if finished:
                worker.join(5.0)
            if worker.is_alive():
                worker.kill()
                worker.join(5.0)
        results.close()
        results.join_thread()
    result = _merge(spec, groups, payloads, benchlib.cpu_delta(before, after), read_fraction)
    result["window_probe"] = probe
    return result


DISTURBED_PCT = 5.0  # CPU % (of one CPU) used by outside processes that spoils a window


def run_load_retrying(spec: LoadSpec, server_pids: dict[str, int],
                      on_window: Callable[[str], Any] | None = None, retries: int = 0,
                      say: Callable[[str], None] = print) -> dict[str, Any]:
    """``run_load``, repeated (up to ``retries`` more times) while processes outside the benchmark
    used more than DISTURBED_PCT of a CPU during the window; keeps the least disturbed attempt.
    The result records the attempts and whether the kept window was still disturbed."""
    best: dict[str, Any] | None = None
    history = []
    for attempt in range(1, retries + 2):
        result = run_load(spec, server_pids, on_window)
        cpu = result["cpu"]
        others_pct = 100.0 * cpu["others_cpu_s"] / cpu["wall_s"]
        history.append({"attempt": attempt, "others_cpu_pct": others_pct, "ops_per_s": result["ops_per_s"]})
        result["attempt"] = attempt
        result["others_cpu_pct"] = others_pct
        result["disturbed"] = others_pct > DISTURBED_PCT
        if best is None or others_pct < best["others_cpu_pct"]:
            best = result
        if not result["disturbed"]:
            break
        if attempt <= retries:
            top = ", ".join(f"{o['name']}[{o['pid']}]" for o in cpu["others_top"][:3])
            say(f"   {spec.workload}: other processes used {others_pct:.0f}% of a CPU during the window "
                f"({top}; {result['ops_per_s']:,.0f} ops/s); measuring again ({attempt}/{retries})")
    assert best is not None
    best["attempts"] = history
    return best


def _sleep_until(deadline_ns: int) -> None:
    while True:
        remaining = deadline_ns - time.perf_counter_ns()
        if remaining <= 0:
            return
        time.sleep(min(remaining / 1e9, 0.5))


def add_derived(result: dict[str, Any]) -> dict[str, Any]:
    """CPU per op by role, and ops per CPU-second of the benchmark's own processes: figures that
    other load on the machine disturbs much less than ops/s."""
    procs = result["cpu"]["processes"]
    ok = max(1, result["ok_ops"])

    def cpu(prefixes: tuple[str, ...]) -> float:
        return sum(c["cpu_s"] or 0.0 for n, c in procs.items() if n.startswith(prefixes))

    servers = cpu(("node", "echo"))
    coordinator = cpu(("coordinator",))
    clients = cpu(("loadgen",))
    total = servers + coordinator + clients + cpu(("bench",))
    result["derived"] = {
        "server_cpu_us_per_op": servers * 1e6 / ok,
        "coordinator_cpu_us_per_op": coordinator * 1e6 / ok,
        "client_cpu_us_per_op": clients * 1e6 / ok,
        "bench_cpu_us_per_op": total * 1e6 / ok,
        "ops_per_bench_cpu_s": result["ok_ops"] / total if total else None,
    }
    return result


def _merge(spec: LoadSpec, groups: list[list[int]], payloads: dict[int, dict[str, Any]],
           cpu: dict[str, Any], read_fraction: float) -> dict[str, Any]:
    fatal = []
    stuck = []
    merged = {k: array("q") for k in OP_KINDS}
    errors: dict[str, Counter] = {k: Counter() for k in OP_KINDS}
    ops_total = 0
    per_client_ok = []
    for p in sorted(payloads):
        stuck += payloads[p]["stuck"]
        for i, client in sorted(payloads[p]["clients"].items()):
            if client.get("fatal"):
                fatal.append(f"client {i}: {client['fatal']}")
            if "latencies" not in client:
                continue
            ok = 0
            for k in OP_KINDS:
                sample = array("q")
                sample.frombytes(client["latencies"][k])
                merged[k].extend(sample)
                ok += len(sample)
                errors[k].update(client["errors"][k])
            per_client_ok.append(ok)
            ops_total += client["ops_total"]
    if fatal or stuck:
        raise RuntimeError("load generation failed: " + "; ".join(fatal + [f"client {i} stuck" for i in stuck]))
    duration = spec.duration
    all_ops = array("q")
    for k in OP_KINDS:
        all_ops.extend(merged[k])
    ok = len(all_ops)
    n_errors = sum(sum(c.values()) for c in errors.values())
    return add_derived({
        "workload": spec.workload,
        "read_fraction": read_fraction,
        "clients": spec.clients,
        "generator_processes": len(groups),
        "clients_per_process": [len(g) for g in groups],
        "duration_s": duration,
        "warmup_s": spec.warmup,
        "ok_ops": ok,
        "ops_per_s": ok / duration,
        "errors": n_errors,
        "errors_by_type": {k: dict(v) for k, v in errors.items() if v},
        "latency": benchlib.summarize(all_ops),
        "latency_by_op": {k: benchlib.summarize(merged[k]) for k in OP_KINDS if merged[k]},
        "ops_per_s_by_op": {k: len(merged[k]) / duration for k in OP_KINDS},
        "per_client_ok_ops": per_client_ok,
        "ops_total_including_warmup": ops_total,
        "cpu": cpu,
    })
