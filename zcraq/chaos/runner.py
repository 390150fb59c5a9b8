"""One chaos run against real processes, from start to verdict.

1. Start the coordinator and the nodes (in network namespaces when network partitions are wanted);
   with ``partitions`` > 1, a partitioned cluster (the keyspace in that many chains, placed over
   the nodes), started once every partition's chain is whole. With ``engine``, a local 3-member
   etcd first, and three coordinators keeping their state in it (loopback only, for now).
2. Run the workload for ``duration`` seconds while the nemesis carries out its schedule.
3. Stop the workload, heal everything (resume, restart, reconnect) and wait, with a deadline,
   until the chain has every node as a serving member and nothing uncommitted (with partitions:
   every partition's chain whole over the nodes, every replica serving).
4. Read every key at every node (with partitions: at every replica of its partition); write the
   history; check linearizability, lost writes and replica agreement; print a one-line verdict.

Everything goes to the output directory: ``history.jsonl`` (the checker's input; ``zcraq verify``
re-checks it), ``nemesis.jsonl`` (every fault started and healed), ``summary.json`` (figures),
``verdict.txt`` (the verdict and every problem in detail), ``logs/``, ``configs/`` and ``data/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zcraq
from zcraq.chaos.analysis import Analysis, analyse
from zcraq.chaos.cluster import ChaosCluster
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.nemesis import ENGINE_KINDS, KINDS, Nemesis, plan
from zcraq.chaos.netns import Network, unavailable_reason
from zcraq.chaos.watching import WatchRecorder, check_watch, final_committed
from zcraq.chaos.workload import Workload, final_reads
from zcraq.cluster import ProcessExited
from zcraq.engine.local import LocalEtcd
from zcraq.layout import COORDINATOR
from zcraq.partitioning import partition_of

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The options cannot work (here): exit status 2."""


@dataclass
class ChaosOptions:
    out: Path
    duration: float = 60.0
    nemesis: tuple[str, ...] = KINDS
    clients: int = 5
    nodes: int = 3
    seed: int = 0
    unsafe: str = ""
    keys: int = 5
    network: str = "auto"  # auto | netns | loopback
    lease_ms: int = 2000
    heartbeat_ms: int = 200
    client_timeout: float = 3.0
    converge_timeout: float = 90.0
    durability: str = "sync"
    think_ms: float = 0.0
    read_ratio: float = 0.5
    cas_ratio: float = 0.2
    partitions: int = 1  # of the keyspace, each its own chain (not the network partitions of the nemesis)
    engine: bool = False  # three coordinators on a local etcd


@dataclass
class ChaosReport:
    exit_code: int
    verdict: str
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def resolve_network(options: ChaosOptions) -> bool:
    """True to use namespaces. Partitions need them; UsageError when they are needed and missing."""
    if options.engine:
        if "partition" in options.nemesis or options.network == "netns":
            raise UsageError("coordinators on an engine run over loopback only: no --network netns, no partition "
                             "nemesis")
        return False
    if options.network == "loopback":
        if "partition" in options.nemesis:
            raise UsageError("the partition nemesis needs --network netns (or auto)")
        return False
    wanted = options.network == "netns" or "partition" in options.nemesis
    if not wanted:
        return False
    reason = unavailable_reason()
    if reason is not None:
        raise UsageError(f"the partition nemesis needs network namespaces, which are unavailable here: {reason}"
                         if "partition" in options.nemesis else f"--network netns is unavailable here: {reason}")
    return True


def parse_nemesis(text: str, engine: bool = False) -> tuple[tuple[str, ...], str | None]:
    """Nemesis kinds from a comma list; ``all`` means every kind this machine can do (with
    ``engine``: over loopback, so no partitions, and the engine's kinds too), ``none`` (or an
    empty list) no faults. Returns (kinds, a note on what ``all`` had to leave out)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = (*KINDS, *ENGINE_KINDS) if engine else KINDS
    if names in ([], ["none"]):
        return (), None
    if names == ["all"]:
        if engine:
            return tuple(k for k in known if k != "partition"), "no partitions: coordinators on an engine run " \
                                                                "over loopback"
        reason = unavailable_reason()
        if reason is None:
            return KINDS, None
        return tuple(k for k in KINDS if k != "partition"), f"no partitions: {reason}"
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown nemesis kind {unknown[0]!r}; choose from {', '.join(known)}, all or none"
                         + ("" if engine else f" ({', '.join(ENGINE_KINDS)}: with --engine)"))
    return tuple(dict.fromkeys(names)), None


def validate(options: ChaosOptions) -> None:
    from zcraq.nodecore import UNSAFE_FAULTS

    known = (*KINDS, *ENGINE_KINDS) if options.engine else KINDS
    unknown = [k for k in options.nemesis if k not in known]
    if unknown:
        raise UsageError(f"unknown nemesis kind {unknown[0]!r}; choose from {', '.join(known)}")
    faults = [f for f in options.unsafe.split(",") if f]
    bad = [f for f in faults if f not in UNSAFE_FAULTS]
    if bad:
        raise UsageError(f"unknown unsafe fault {bad[0]!r}; known: {', '.join(sorted(UNSAFE_FAULTS))}")
    if options.network not in ("auto", "netns", "loopback"):
        raise UsageError(f"unknown network {options.network!r}; choose auto, netns or loopback")
    if not 1 <= options.nodes <= 20:
        raise UsageError("--nodes must be from 1 to 20")
    if options.clients < 1:
        raise UsageError("--clients must be at least 1")
    if options.keys < 1:
        raise UsageError("--keys must be at least 1")
    if options.duration <= 0:
        raise UsageError("--duration must be positive")
    if not 1 <= options.partitions <= 4096:
        raise UsageError("--partitions must be from 1 to 4096")
    if options.heartbeat_ms * 2 > options.lease_ms:
        raise UsageError("the heartbeat must be well under the lease")
    if not 0.0 <= options.read_ratio <= 0.9:
        raise UsageError("--read-ratio must be from 0 to 0.9")
    if not 0.0 <= options.cas_ratio <= 0.9:
        raise UsageError("--cas-ratio must be from 0 to 0.9")
    if options.read_ratio + options.cas_ratio > 0.9 + 1e-9:
        raise UsageError("--read-ratio and --cas-ratio together must be at most 0.9 (deletes are a tenth)")
    if options.out.exists() and any(options.out.iterdir()):
        raise UsageError(f"output directory {options.out} is not empty (data of an old run would be reused)")


def source_fingerprint() -> str:
    """A digest of the zcraq sources the processes import. Every restart imports them afresh, so a
    tree edited during a run leaves processes of different versions side by side."""
    root = Path(zcraq.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<unreadable>")
    return f"{root}:{digest.hexdigest()[:16]}"


def run_chaos(options: ChaosOptions, echo: Callable[[str], None] = print) -> ChaosReport:
    """Run, check, write the output directory; UsageError before anything starts if the options
    cannot work here."""
    options.out = options.out.resolve()
    validate(options)
    use_netns = resolve_network(options)
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    node_ids = [f"node{i}" for i in range(1, options.nodes + 1)]
    keys = [f"k{i}" for i in range(options.keys)]
    coordinators = tuple(f"{COORDINATOR}{i}" for i in (1, 2, 3)) if options.engine else (COORDINATOR,)
    members = ("etcd1", "etcd2", "etcd3") if options.engine else ()
    faults = plan(options.seed, options.nemesis, node_ids, options.duration, lease=options.lease_ms / 1000,
                  coordinators=coordinators, engine_members=members)
    summary: dict[str, Any] = {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "network": "netns" if use_netns else "loopback",
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "planned_faults": len(faults),
        "source": source_fingerprint(),
    }
    problems: list[str] = []
    engine: LocalEtcd | None = None
    network: Network | None = None
    cluster: ChaosCluster | None = None
    nemesis: Nemesis | None = None
    workload: Workload | None = None
    watcher: WatchRecorder | None = None
    history = HistoryWriter(options.out / "history.jsonl")
    states: dict[str, dict[str, Any]] = {}
    try:
        if use_netns:
            network = Network([COORDINATOR, *node_ids])
            network.create()
            summary["netns"] = {"prefix": network.prefix, "subnet": str(network.subnet)}
        if options.engine:
            engine = LocalEtcd(options.out / "etcd")
            engine.start(timeout=60)
        cluster = ChaosCluster(options.out, options.nodes, network=network, lease_ms=options.lease_ms,
                               heartbeat_ms=options.heartbeat_ms, durability=options.durability,
                               unsafe=options.unsafe, partitions=options.partitions, engine=engine)
        shape = f" holding {options.partitions} partitions" if options.partitions > 1 else ""
        shape += ", 3 coordinators on etcd" if engine is not None else ""
        echo(f"chaos: {options.nodes} nodes{shape} over {summary['network']}, {options.clients} clients, "
             f"{options.duration:g}s, nemesis {','.join(options.nemesis) or 'none'} "
             f"({len(faults)} faults planned), seed {options.seed}, out {options.out}")
        if options.partitions > 1:
            cluster.start_partitioned(timeout=options.converge_timeout)
        else:
            cluster.start_all()
        endpoint, config = _client_of(cluster)
        watcher = WatchRecorder(endpoint, options.out / "watch.jsonl", options.client_timeout, config)
        watcher.start()
        if not watcher.ready.wait(30.0):
            problems.append("the watcher did not start within 30 s")
        workload = Workload(endpoint, history, clients=options.clients, keys=keys,
                            seed=options.seed, timeout=options.client_timeout, think=options.think_ms / 1000,
                            read_ratio=options.read_ratio, cas_ratio=options.cas_ratio, config=config)
        nemesis = Nemesis(cluster, faults, options.out / "nemesis.jsonl")
        run_started = time.monotonic()
        workload.start()
        nemesis.start()
        time.sleep(max(0.0, run_started + options.duration - time.monotonic()))
        nemesis.stop()
        if not workload.stop():
            problems.append("a client thread did not finish its last operation in time")
        summary["workload_seconds"] = round(time.monotonic() - run_started, 3)
        summary["healed"] = cluster.heal()
        heal_started = time.monotonic()
        try:
            if options.partitions > 1:
                cluster.wait_placed(timeout=options.converge_timeout)
            else:
                cluster.wait(cluster.converged, options.converge_timeout, "every node to be a serving member",
                             interval=0.1)
            summary["converged_after"] = round(time.monotonic() - heal_started, 3)
        except (TimeoutError, ProcessExited) as error:
            try:
                state = cluster.chain_state()
            except Exception as inner:  # the coordinator itself may be the problem
                state = {"error": str(inner)}
            problems.append(f"the chain did not converge after healing: {error}; state: {json.dumps(state)}")
        states = _final_reads(cluster, history, keys, options.partitions)
        final = final_committed(states)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and watcher.is_alive() and \
                any(watcher.last().get(key) != held for key, held in final.items()):
            time.sleep(0.1)
        watcher.stop()
        history.flush()
        problems += [f"watch: {p}" for p in check_watch(
            watcher.changes, options.out / "history.jsonl", final, watcher.delivered_at)]
        problems += [f"watch: the watcher stopped: {e}" for e in watcher.errors]
        summary["watch"] = {"changes": len(watcher.changes), "pruned": sum(c.pruned for c in watcher.changes)}
        summary["restarts"] = {name: count - 1 for name, count in cluster.starts.items()}
        cluster.exits()  # noted in cluster.unexpected_exits
    except Exception as error:  # the run could not go on: say why, then check what was recorded
        problems.append(f"the run was aborted: {type(error).__name__}: {error}\n"
                        + traceback.format_exc().rstrip())
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short.
        blocked = threading.current_thread() is threading.main_thread()
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        if workload is not None:
            workload.stopping.set()
        if watcher is not None:
            watcher.stopping.set()
        if nemesis is not None and nemesis.is_alive():
            nemesis.stop()
        history.close()
        if cluster is not None:
            cluster.close()
        if engine is not None:
            engine.stop()
        if network is not None:
            network.destroy()
            if network.leftovers():
                problems.append(f"network namespaces left behind: {network.leftovers()}")
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    warnings = []
    source = source_fingerprint()
    if source != summary["source"]:
        warnings.append(f"the zcraq sources changed during the run ({summary['source']} -> {source}): processes "
                        "started after the change ran other code than those started before")
        summary["source_at_end"] = source
    if cluster is not None and cluster.unexpected_exits:
        problems.append("processes exited on their own: " + "; ".join(map(str, cluster.unexpected_exits)))
    analysis = analyse(options.out / "history.jsonl", states)
    problems = analysis.problems() + problems
    if nemesis is not None:
        problems += [f"nemesis: {e}" for e in nemesis.errors]
    summary.update(_figures(history, analysis, workload, nemesis))
    summary["final_states"] = states
    summary["seconds"] = round(time.monotonic() - started, 3)
    report = ChaosReport(EXIT_OK if not problems else EXIT_VIOLATION, "", options.out, summary, problems)
    report.verdict = _verdict(report, options) + "".join(f" | WARNING: {w}" for w in warnings)
    summary["verdict"] = report.verdict
    summary["problems"] = problems
    summary["warnings"] = warnings
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (options.out / "verdict.txt").write_text(report.verdict + "\n" + "".join(f"\n{p}\n" for p in problems))
    for problem in problems:
        echo(problem)
    echo(report.verdict)
    return report


def _final_reads(cluster: ChaosCluster, history: HistoryWriter, keys: list[str],
                 partitions: int) -> dict[str, dict[str, Any]]:
    """Every key read at every node; with partitions, at every replica of the key's partition."""
    endpoint, config = _client_of(cluster)
    if partitions == 1:
        services = {n: cluster.service(n) for n in cluster.node_ids}
        return final_reads(endpoint, history, keys, services, config=config)
    chains = {p.partition: [m.id for m in p.topology.members] for p in cluster.partitions()}
    states: dict[str, dict[str, Any]] = {}
    for key in keys:
        members = chains[partition_of(key, partitions)]
        states.update(final_reads(endpoint, history, [key], {n: cluster.service(n) for n in members},
                                  config=config))
    return states


def _client_of(cluster: ChaosCluster) -> tuple[str | None, Path | None]:
    """How the run's clients find the cluster: the coordinator's endpoint, or (coordinators on an
    engine) the client config listing them all."""
    return (None, cluster.client_config) if cluster.engine is not None else (cluster.coordinator_endpoint, None)


def _figures(history: HistoryWriter, analysis: Analysis, workload: Workload | None,
             nemesis: Nemesis | None) -> dict[str, Any]:
    counts = history.counts
    figures: dict[str, Any] = {
        "operations": analysis.operations,
        "ok": counts["ok"], "fail": counts["fail"], "info": counts["info"],
        "by_kind": {k: v for k, v in sorted(counts.items()) if " " in k},
        "cas": {kind: counts[f"cas {kind}"] for kind in ("ok", "fail", "info")},
        "linearizable": analysis.linearizable,
        "checker": analysis.checker.verdict(),
        "lost_writes": len(analysis.lost_writes),
    }
    if workload is not None:
        figures["client_errors"] = dict(workload.errors().most_common())
    if nemesis is not None:
        figures["nemesis"] = dict(sorted(nemesis.counts.items()))
        figures["nemesis_events"] = len(nemesis.events)
    return figures


def _verdict(report: ChaosReport, options: ChaosOptions) -> str:
    s = report.summary
    nemesis = ", ".join(f"{k} x{v}" for k, v in s.get("nemesis", {}).items()) or "none"
    head = "PASS" if report.exit_code == EXIT_OK else "FAIL"
    what = ("linearizable, no lost writes, replicas agree" if report.exit_code == EXIT_OK else
            "; ".join(p.splitlines()[0] for p in report.problems))
    cas = s.get("cas", {})
    return (f"chaos {head}: {what} | {s.get('operations', 0)} ops (ok {s.get('ok', 0)}, fail {s.get('fail', 0)}, "
            f"info {s.get('info', 0)}; cas ok {cas.get('ok', 0)}, fail {cas.get('fail', 0)}, "
            f"info {cas.get('info', 0)}), nemesis {nemesis}, seed {options.seed}, "
            f"history {options.out / 'history.jsonl'}")
