"""The chaos runner against real processes: a run under every fault must pass, a deliberate bug must
be caught, and nothing (processes, network namespaces) may be left behind either way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from zcraq.chaos import UsageError, parse_nemesis
from zcraq.chaos.analysis import lost_writes
from zcraq.chaos.history import HistoryWriter
from zcraq.chaos.watching import check_watch
from zcraq.clientwatch import Change
from zcraq.chaos.workload import BOUNDED_LIMIT, Workload, outcome_of
from zcraq.chaos.cluster import kill_strays
from zcraq.chaos.nemesis import KINDS, plan
from zcraq.chaos.netns import cleanup_stale, namespaces, unavailable_reason
from zcraq.checker import operations_from_events
from zcraq.errors import ConditionFailed, KeyNotFound, Timeout, Unavailable, WriteOutcomeUnknown

NETNS_PROBLEM = unavailable_reason()


def _processes_under(root: Path) -> list[str]:
    marker = str(root.resolve()) + os.sep
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg.startswith(marker) for arg in args):
            found.append(f"{entry.name}: {' '.join(args)}")
    return found


def run_chaos(tmp_path: Path, *args: str, timeout: float) -> tuple[int, str, Path]:
    """``zcraq chaos`` as a child process; afterwards, whatever happened, check that it left no
    process and no namespace behind (and remove them if it did, so one failure stays one)."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "zcraq", "chaos", "--out", str(out), *args]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prefix = f"zcq{runner.pid}"
    try:
        output, _ = runner.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        runner.send_signal(signal.SIGTERM)  # the runner cleans up on SIGTERM
        try:
            output, _ = runner.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            runner.kill()
            output, _ = runner.communicate()
        pytest.fail(f"zcraq chaos did not finish within {timeout:g}s:\n{output}")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        strays = _processes_under(out)
        leftovers = [n for n in namespaces() if n.startswith(prefix + "-")] if NETNS_PROBLEM is None else []
        kill_strays(out)
        cleanup_stale(prefix)
    assert not strays, f"processes left behind: {strays}"
    assert not leftovers, f"network namespaces left behind: {leftovers}"
    return runner.returncode, output, out


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.timeout(240)
def test_a_run_under_every_fault_passes(tmp_path: Path) -> None:
    kinds = KINDS if NETNS_PROBLEM is None else tuple(k for k in KINDS if k != "partition")
    if NETNS_PROBLEM is not None:
        print(f"partitions left out: {NETNS_PROBLEM}")
    code, output, out = run_chaos(tmp_path, "--duration", "45", "--nemesis", ",".join(kinds), "--seed", "7",
                                  "--clients", "5", "--nodes", "3", timeout=200)
    assert code == 0, output
    verdict = output.strip().splitlines()[-1]
    assert verdict.startswith("chaos PASS"), output
    summary = _summary(out)
    assert summary["linearizable"] and summary["lost_writes"] == 0
    assert all(summary["nemesis"].get(kind, 0) >= 1 for kind in kinds), summary["nemesis"]
    # A crash is really followed by a restart of the same process.
    assert summary["restarts"]["coordinator"] >= 1 and sum(summary["restarts"].values()) >= 2
    assert summary["ok"] > 1000, summary
    events = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()]
    assert {e["kind"] for e in events if e["action"] == "heal"} == set(kinds)
    # Conditional writes are part of every run: some applied, some refused because another write
    # came first, each recorded as cas [expected, new], and all of them judged by the checker above.
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    cas = [e for e in history if e["f"] == "cas"]
    outcomes = {kind: sum(e["type"] == kind for e in cas) for kind in ("ok", "fail", "info")}
    assert outcomes["ok"] > 0 and outcomes["fail"] > 0, outcomes
    assert outcomes == summary["cas"], (outcomes, summary["cas"])
    assert all(isinstance(e["value"], list) and len(e["value"]) == 2 for e in cas)
    assert f"cas ok {outcomes['ok']}, fail {outcomes['fail']}" in verdict, verdict
    # So are bounded-staleness reads (with their limit) and scans (a read of each key, per scan).
    assert any("staleness" in e and e["type"] == "invoke" for e in history)
    assert any("/scan/" in str(e["process"]) and e["type"] == "ok" and e["value"] is not None for e in history)
    # A watcher of every key followed the whole run: every acknowledged write delivered, in order.
    assert summary["watch"]["changes"] > 100, summary["watch"]
    assert len((out / "watch.jsonl").read_text().splitlines()) == summary["watch"]["changes"]
    # The recorded history stands on its own: `zcraq verify` agrees.
    verify = subprocess.run([sys.executable, "-m", "zcraq", "verify", str(out / "history.jsonl")],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.timeout(150)
def test_dirty_reads_answered_locally_are_caught(tmp_path: Path) -> None:
    # Two hot keys, many writers, reads spread over every node: a read at the head that returns a
    # write still on its way down the chain, then a read at the tail that returns the older value.
    # Such a pair shows up within the first second of workload; ten seconds leave a wide margin.
    code, output, out = run_chaos(tmp_path, "--unsafe", "dirty_read_local", "--nemesis", "none",
                                  "--network", "loopback", "--duration", "10", "--keys", "2",
                                  "--clients", "8", "--seed", "11", timeout=120)
    assert code == 1, output
    assert "NOT linearizable" in output, output
    assert output.strip().splitlines()[-1].startswith("chaos FAIL"), output
    assert not _summary(out)["linearizable"]


@pytest.mark.timeout(150)
def test_conditions_decided_on_committed_versions_alone_are_caught(tmp_path: Path) -> None:
    # A head that compares a condition with the committed version alone lets two conditional writes
    # on one version both succeed while the first is still travelling down the chain. Two hot keys,
    # eight clients, a conditional write in four operations: in three seeds tried, the window the
    # checker reported began 1.1-4.1 s into the workload.
    code, output, out = run_chaos(tmp_path, "--unsafe", "condition_on_committed", "--nemesis", "none",
                                  "--network", "loopback", "--duration", "10", "--keys", "2",
                                  "--clients", "8", "--cas-ratio", "0.4", "--seed", "11", timeout=120)
    assert code == 1, output
    assert "NOT linearizable" in output, output
    assert output.strip().splitlines()[-1].startswith("chaos FAIL"), output
    assert not _summary(out)["linearizable"]


@pytest.mark.timeout(240)
def test_a_run_with_coordinators_on_an_engine_under_leader_etcd_and_node_faults_passes(tmp_path: Path) -> None:
    """Three coordinators on a local etcd: the leader killed, etcd members killed, nodes killed
    and paused, coordinators (leader or standby) killed; the history is checked as ever."""
    kinds = ("leader", "etcd", "kill", "pause", "coordinator")
    code, output, out = run_chaos(tmp_path, "--engine", "--duration", "40", "--nemesis", ",".join(kinds),
                                  "--seed", "3", "--clients", "4", timeout=200)
    assert code == 0, output
    assert output.strip().splitlines()[-1].startswith("chaos PASS"), output
    summary = _summary(out)
    assert summary["linearizable"] and summary["lost_writes"] == 0
    assert all(summary["nemesis"].get(kind, 0) >= 1 for kind in kinds), summary["nemesis"]
    events = [json.loads(line) for line in (out / "nemesis.jsonl").read_text().splitlines()]
    killed = [e["coordinator"] for e in events if e["kind"] == "leader" and e["action"] == "start"]
    assert killed and all(name.startswith("coordinator") for name in killed), events
    assert summary["ok"] > 500, summary


def test_engine_faults_are_planned_only_with_an_engine_and_one_etcd_member_at_a_time() -> None:
    coordinators = ("coordinator1", "coordinator2", "coordinator3")
    members = ("etcd1", "etcd2", "etcd3")
    for seed in range(30):
        faults = plan(seed, (*KINDS[:2], "coordinator", "leader", "etcd"), ["node1", "node2", "node3"], 60.0,
                      lease=2.0, coordinators=coordinators, engine_members=members)
        etcd = [f for f in faults if f.kind == "etcd"]
        assert etcd and all(f.target in members for f in etcd)
        for a in etcd:  # never two members down at once: the engine keeps its majority
            assert all(a is b or a.start + a.length <= b.start or b.start + b.length <= a.start for b in etcd)
        assert all(f.target in coordinators for f in faults if f.kind == "coordinator")
        for a in (f for f in faults if f.kind == "leader"):  # no leader fault while a coordinator is down
            assert all(b.start + b.length <= a.start or a.start + a.length <= b.start
                       for b in faults if b.kind in ("coordinator", "leader") and b is not a)
    with pytest.raises(UsageError, match="with --engine"):
        parse_nemesis("leader")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, message", [
    (["--nemesis", "kill,explode"], "unknown nemesis kind 'explode'"),
    (["--unsafe", "no_such_fault"], "unknown unsafe fault"),
    (["--nemesis", "partition", "--network", "loopback"], "partition nemesis needs"),
    (["--nodes", "0"], "--nodes"),
    (["--engine", "--nemesis", "partition"], "loopback only"),
    (["--read-ratio", "0.8", "--cas-ratio", "0.2"], "together must be at most 0.9"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, output, _ = run_chaos(tmp_path, "--duration", "5", *args, timeout=30)
    assert code == 2, output
    assert message in output, output


@pytest.mark.timeout(30)
def test_a_non_empty_output_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "history.jsonl").write_text("")
    code, output, _ = run_chaos(tmp_path, "--duration", "5", "--nemesis", "none", timeout=30)
    assert code == 2 and "not empty" in output, output


def test_every_kind_is_scheduled_early_and_faults_never_share_a_target() -> None:
    for seed in range(50):
        faults = plan(seed, KINDS, ["node1", "node2", "node3"], 45.0, lease=2.0)
        assert {f.kind for f in faults[: len(KINDS)]} == set(KINDS)
        assert all(f.start + f.length <= 44.0 + 1e-6 for f in faults)
        for a in faults:
            for b in faults:
                if a is not b and a.target == b.target:
                    assert a.start + a.length <= b.start or b.start + b.length <= a.start
        assert plan(seed, KINDS, ["node1", "node2", "node3"], 45.0, lease=2.0) == faults


def _history(*events: tuple) -> list:
    lines = [{"process": p, "type": t, "f": f, "key": "k", "value": v, "time": time}
             for time, (p, t, f, v) in enumerate(events, start=1)]
    return operations_from_events(orjson.loads(orjson.dumps(line)) for line in lines)


def test_the_watch_check_finds_a_skipped_write_a_stray_value_and_a_stale_end(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    events = [{"process": 0, "type": kind, "f": "write", "key": "k", "value": value, "time": 10 * i + (kind == "ok")}
              for i, value in enumerate(("a", "b", "c", "d")) for kind in ("invoke", "ok")]
    history.write_text("".join(json.dumps(e) + "\n" for e in events[:6]))
    good = [Change("k", 1, b"a"), Change("k", 2, b"b"), Change("k", 3, b"c")]
    assert check_watch(good, history, {"k": (3, "c")}) == []
    problems = check_watch([good[0], good[2]], history, {"k": (3, "c")})
    assert any("jumped" in p for p in problems) and any("never delivered" in p for p in problems)
    # Marked pruned, the jump is told: not a problem.
    assert check_watch([good[0], Change("k", 3, b"c", pruned=True)], history, {"k": (3, "c")}) == []
    assert any("no write wrote" in p for p in check_watch([Change("k", 1, b"x")], history, {}))
    assert any("the watch ended" in p for p in check_watch(good[:2], history, {"k": (3, "c")}))
    # A pruned jump excuses only the writes that began before it was delivered ("c" began at 20).
    history.write_text("".join(json.dumps(e) + "\n" for e in events))
    jumped = [good[0], Change("k", 3, b"c", pruned=True), Change("k", 4, b"d")]
    assert check_watch(jumped, history, {"k": (4, "d")}, delivered_at=[5, 25, 35]) == []
    early = [good[0], Change("k", 2, b"b", pruned=True), Change("k", 4, b"d")]
    problems = check_watch(early, history, {"k": (4, "d")}, delivered_at=[5, 15, 35])
    assert any("never delivered" in p and "'c'" in p for p in problems), problems


def test_lost_write_check() -> None:
    # v1 acknowledged, then v2 acknowledged after it; the final read still says v1: v2 was lost.
    ops = _history((0, "invoke", "write", "v1"), (0, "ok", "write", "v1"),
                   (1, "invoke", "write", "v2"), (1, "ok", "write", "v2"),
                   ("final", "invoke", "read", None), ("final", "ok", "read", "v1"))
    lost, unexplained = lost_writes(ops)
    assert len(lost) == 1 and "'v2'" in lost[0] and not unexplained
    # Concurrent writes: either may win.
    ops = _history((0, "invoke", "write", "v1"), (1, "invoke", "write", "v2"),
                   (0, "ok", "write", "v1"), (1, "ok", "write", "v2"),
                   ("final", "invoke", "read", None), ("final", "ok", "read", "v1"))
    assert lost_writes(ops) == ([], [])
    # A delete of unknown outcome may explain a missing key; a failed write may not be visible.
    ops = _history((0, "invoke", "write", "v1"), (0, "ok", "write", "v1"),
                   (1, "invoke", "delete", None), (1, "info", "delete", None),
                   (2, "invoke", "write", "v3"), (2, "fail", "write", "v3"),
                   ("final", "invoke", "read", None), ("final", "ok", "read", None))
    assert lost_writes(ops) == ([], [])
    ops = _history((2, "invoke", "write", "v3"), (2, "fail", "write", "v3"),
                   ("final", "invoke", "read", None), ("final", "ok", "read", "v3"))
    assert "failed" in lost_writes(ops)[1][0]
    # A conditional write's new value explains a final read; one acknowledged after it is lost;
    # one refused (ConditionFailed, recorded as fail) explains nothing.
    ops = _history((0, "invoke", "write", "v1"), (0, "ok", "write", "v1"),
                   (1, "invoke", "cas", ["v1", "v2"]), (1, "ok", "cas", ["v1", "v2"]),
                   ("final", "invoke", "read", None), ("final", "ok", "read", "v2"))
    assert lost_writes(ops) == ([], [])
    ops = _history((1, "invoke", "cas", [None, "v2"]), (1, "ok", "cas", [None, "v2"]),
                   (0, "invoke", "cas", ["v2", "v3"]), (0, "ok", "cas", ["v2", "v3"]),
                   ("final", "invoke", "read", None), ("final", "ok", "read", "v2"))
    lost, unexplained = lost_writes(ops)
    assert len(lost) == 1 and "cas 'v2'->'v3'" in lost[0] and not unexplained
    ops = _history((1, "invoke", "cas", ["v1", "v2"]), (1, "fail", "cas", ["v1", "v2"]),
                   ("final", "invoke", "read", None), ("final", "ok", "read", "v2"))
    assert "failed" in lost_writes(ops)[1][0]


def test_outcomes_of_conditional_writes() -> None:
    assert outcome_of("cas", ConditionFailed("not applied", 7)) == "fail"  # surely not applied
    assert outcome_of("cas", WriteOutcomeUnknown("no answer")) == "info"
    assert outcome_of("cas", Timeout("no answer")) == "info"
    assert outcome_of("cas", Unavailable("no head")) == "fail"
    assert outcome_of("cas", RuntimeError("anything else")) == "info"


class _Rolls:
    """Stands in for a worker's random.Random: the given rolls in turn, always the first key."""

    def __init__(self, *rolls: float) -> None:
        self.rolls = list(rolls)

    def random(self) -> float:
        return self.rolls.pop(0)

    def choice(self, items: list) -> object:
        return items[0]


class _Client:
    """Answers reads from a (value, version) and conditional writes by comparing the version."""

    def __init__(self, value: bytes | None, version: int) -> None:
        self.value, self.version = value, version
        self.calls: list[tuple] = []

    def read_versioned(self, key: str, mode: str = "strong", max_staleness: float | None = None) -> tuple[bytes, int]:
        self.calls.append(("read", key) if mode == "strong" else ("read", key, mode, max_staleness))
        if self.value is None:
            raise KeyNotFound(key)
        return self.value, self.version

    def scan(self, page_keys: int) -> list[tuple[str, bytes, int]]:
        self.calls.append(("scan",))
        return [] if self.value is None else [("k0", self.value, self.version)]

    def write(self, key: str, value: str, *, if_version: int | None = None) -> int:
        self.calls.append(("write", key, value, if_version))
        current = self.version if self.value is not None else 0
        if if_version is not None and if_version != current:
            raise ConditionFailed("not applied", current)
        self.value, self.version = value.encode(), self.version + 1
        return self.version


def test_a_conditional_write_names_the_version_last_read(tmp_path: Path) -> None:
    history = HistoryWriter(tmp_path / "history.jsonl")
    workload = Workload("tcp://127.0.0.1:1", history, clients=1, keys=["k0"], seed=1, read_ratio=0.5,
                        cas_ratio=0.3, delete_ratio=0.1)
    worker = workload.workers[0]
    # cas, read, cas, cas, read (missing key), cas: a cas before any read is a read instead. A read
    # draws a second roll: 0.9 makes it a plain strong read.
    worker.rng = _Rolls(0.6, 0.1, 0.9, 0.6, 0.6, 0.1, 0.9, 0.6)  # type: ignore[assignment]
    client = _Client(b"v9-1", 4)
    for _ in range(4):
        worker.one(client)  # type: ignore[arg-type]
    client.value = None
    for _ in range(2):
        worker.one(client)  # type: ignore[arg-type]
    history.close()
    assert client.calls == [("read", "k0"), ("read", "k0"), ("write", "k0", "v0-1", 4),
                            ("write", "k0", "v0-2", 4), ("read", "k0"), ("write", "k0", "v0-3", 0)]
    events = [(e["type"], e["f"], e["value"]) for e in map(orjson.loads, (tmp_path / "history.jsonl").read_bytes()
                                                           .splitlines()) if e["type"] != "invoke"]
    assert events == [("ok", "read", "v9-1"), ("ok", "read", "v9-1"), ("ok", "cas", ["v9-1", "v0-1"]),
                      ("fail", "cas", ["v9-1", "v0-2"]), ("ok", "read", None), ("ok", "cas", [None, "v0-3"])]
    ops = operations_from_events(map(orjson.loads, (tmp_path / "history.jsonl").read_bytes().splitlines()))
    assert [op.value for op in ops if op.f == "cas"] == [("v9-1", "v0-1"), ("v9-1", "v0-2"), (None, "v0-3")]


def test_bounded_reads_carry_their_limit_and_scans_read_every_key(tmp_path: Path) -> None:
    history = HistoryWriter(tmp_path / "history.jsonl")
    workload = Workload("tcp://127.0.0.1:1", history, clients=1, keys=["k0", "k1"], seed=1, read_ratio=0.5,
                        cas_ratio=0.3, delete_ratio=0.1)
    worker = workload.workers[0]
    worker.rng = _Rolls(0.1, 0.1, 0.1, 0.01, 0.6)  # type: ignore[assignment] - bounded read, scan, cas
    client = _Client(b"v9-1", 4)
    for _ in range(3):
        worker.one(client)  # type: ignore[arg-type]
    history.close()
    assert client.calls == [("read", "k0", "bounded", BOUNDED_LIMIT), ("scan",), ("write", "k0", "v0-1", 4)]
    events = list(map(orjson.loads, (tmp_path / "history.jsonl").read_bytes().splitlines()))
    assert events[0]["staleness"] == int(BOUNDED_LIMIT * 1e9) and events[1]["value"] == "v9-1"
    scanned = {(e["process"], e["type"], e["value"]) for e in events[2:6]}
    assert scanned == {("0/scan/k0", "invoke", None), ("0/scan/k0", "ok", "v9-1"),
                       ("0/scan/k1", "invoke", None), ("0/scan/k1", "ok", None)}
    scan_ops = [op for op in operations_from_events(events) if str(op.process).startswith("0/scan/")]
    assert len({op.invoke_time for op in scan_ops}) == 1  # both invoked when the scan began


def test_without_namespaces_partitions_are_refused_and_all_leaves_them_out(monkeypatch, tmp_path: Path) -> None:
    from zcraq.chaos import runner

    monkeypatch.setattr(runner, "unavailable_reason", lambda: "creating network namespaces needs root")
    kinds, note = runner.parse_nemesis("all")
    assert "partition" not in kinds and set(kinds) == set(KINDS) - {"partition"} and "needs root" in note
    assert runner.parse_nemesis("none") == ((), None)
    assert runner.parse_nemesis("kill, kill,pause") == (("kill", "pause"), None)
    options = runner.ChaosOptions(out=tmp_path / "out", nemesis=("kill", "partition"))
    with pytest.raises(runner.UsageError, match="needs root"):
        runner.resolve_network(options)
    assert runner.resolve_network(runner.ChaosOptions(out=tmp_path / "out", nemesis=("kill",))) is False
