"""Tests of the linearizability checker (zcraq.checker).

Hand-written histories pin down the register semantics (stale reads, lost writes, flickering
values, info and fail completions, delete, cas) and the reported window; a generated
10,000-operation history of a simulated linearizable register checks speed and the detection
of a single stale read.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from zcraq.checker import HistoryError, Operation, check_file, check_history, parse_history
from zcraq.checker import operations_from_events
from zcraq.checker.cli import main

pytestmark = pytest.mark.timeout(120)

# --------------------------------------------------------------------------------------------
# Building histories


def _events(*ops: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Events for operations given as (process, f, key, value, start, end, status).

    ``value`` is the value read for a read, the value written for a write, ``(expected,
    new)`` for a cas; ``end`` None leaves the operation open at the end of the history.
    """
    events: list[tuple[int, int, dict[str, Any]]] = []
    for process, f, key, value, start, end, status in ops:
        if f == "cas":
            invoke_value: Any = list(value)
        elif f in ("read", "delete"):
            invoke_value = None
        else:
            invoke_value = value
        events.append(
            (start, 1, {"process": process, "type": "invoke", "f": f, "key": key,
                        "value": invoke_value, "time": start})
        )
        if end is not None:
            done: dict[str, Any] = {"process": process, "type": status, "f": f, "key": key,
                                    "time": end}
            if f == "read":
                done["value"] = value if status == "ok" else None
            events.append((end, 0, done))
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in events]


def history(*ops: tuple[Any, ...]) -> list[Operation]:
    return operations_from_events(_events(*ops))


def R(p: int, value: Any, start: int, end: int | None, status: str = "ok", key: str = "k"):
    return (p, "read", key, value, start, end, status)


def W(p: int, value: Any, start: int, end: int | None, status: str = "ok", key: str = "k"):
    return (p, "write", key, value, start, end, status)


def D(p: int, start: int, end: int | None, status: str = "ok", key: str = "k"):
    return (p, "delete", key, None, start, end, status)


def CAS(p: int, expected: Any, new: Any, start: int, end: int | None, status: str = "ok",
        key: str = "k"):
    return (p, "cas", key, (expected, new), start, end, status)


def lines_of(window: list[Operation]) -> set[int]:
    return {op.invoke_line for op in window}


def assert_valid(ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result.ok, result.describe()


def assert_invalid(ops: list[Operation]):
    result = check_history(ops)
    assert not result.ok
    assert result.window, "a failing check must report a window"
    return result


# --------------------------------------------------------------------------------------------
# Register semantics


def test_sequential_history_is_linearizable() -> None:
    ops = history(
        R(1, None, 0, 5),
        W(1, "a", 10, 20),
        R(2, "a", 30, 40),
        W(2, "b", 50, 60),
        R(1, "b", 70, 80),
    )
    result = check_history(ops)
    assert result.ok
    assert result.operations == 5
    assert result.keys_checked == 1
    assert "linearizable: 5 operations on 1 keys" in result.describe()


@pytest.mark.parametrize("seen", ["a", "b"])
def test_read_overlapping_a_write_may_see_old_or_new(seen: str) -> None:
    assert_valid(history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 100),
        R(3, seen, 30, 40),
    ))


def test_reads_overlapping_a_write_cannot_go_back() -> None:
    assert_invalid(history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 100),
        R(3, "b", 30, 40),
        R(3, "a", 50, 60),
    ))


def test_stale_read_is_rejected() -> None:
    ops = history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 30),
        R(3, "a", 40, 50),
    )
    result = assert_invalid(ops)
    assert result.key == "k"
    assert lines_of(result.window) == lines_of(ops)
    assert result.reason is not None and "'a'" in result.reason


@pytest.mark.parametrize("staleness, linearizable", [(15, True), (5, False)])
def test_a_bounded_read_may_be_as_stale_as_its_limit(staleness: int, linearizable: bool) -> None:
    """"a" was current until at most 30 (when "b" completed); a read invoked at 40 may return it
    only with a limit reaching back past 30."""
    events = _events(W(1, "a", 0, 10), W(2, "b", 20, 30), R(3, "a", 40, 50))
    invoke = next(e for e in events if e["process"] == 3 and e["type"] == "invoke")
    invoke["staleness"] = staleness
    assert check_history(operations_from_events(events)).ok is linearizable


@pytest.mark.parametrize("staleness", [-1, 1.5, "5", True])
def test_a_bad_staleness_is_refused(staleness: Any) -> None:
    events = _events(R(3, None, 40, 50))
    events[0]["staleness"] = staleness
    with pytest.raises(HistoryError, match="staleness"):
        operations_from_events(events)
    events = _events(W(1, "a", 0, 10))
    events[0]["staleness"] = 5  # on a write: meaningless
    with pytest.raises(HistoryError, match="staleness"):
        operations_from_events(events)


def test_lost_write_is_rejected() -> None:
    result = assert_invalid(history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 30),
        R(3, "a", 40, 50),
        R(1, "a", 60, 70),
        R(2, "a", 80, 90),
    ))
    assert len(result.window) == 3


def test_read_of_a_value_never_written_is_rejected() -> None:
    ops = history(W(1, "a", 0, 10), R(2, "ghost", 20, 30), R(1, "a", 40, 50))
    result = assert_invalid(ops)
    assert [op.value for op in result.window] == ["ghost"]
    assert "never written" in (result.reason or "")


def test_flickering_value_is_rejected() -> None:
    result = assert_invalid(history(
        W(1, "v1", 0, 100),
        W(2, "v2", 5, 100),
        R(3, "v1", 110, 120),
        R(3, "v2", 130, 140),
        R(3, "v1", 150, 160),
    ))
    assert {op.value for op in result.window if op.f == "read"} == {"v1", "v2"}
    assert len(result.window) <= 4


def test_flicker_while_writes_are_in_flight_is_rejected() -> None:
    base = [W(1, "v1", 0, 100), W(2, "v2", 5, 100), R(3, "v1", 10, 20), R(3, "v2", 30, 40)]
    assert_valid(history(*base))  # v1 then v2 took effect, in that order
    assert_invalid(history(*base, R(3, "v1", 50, 60)))  # v1 cannot come back


def test_initial_value_is_missing() -> None:
    assert_valid(history(R(1, None, 0, 10), W(2, "a", 20, 30), R(1, "a", 40, 50)))
    assert_invalid(history(W(2, "a", 0, 10), R(1, None, 20, 30)))


# --------------------------------------------------------------------------------------------
# info and fail completions


def test_info_write_whose_value_is_read_later_is_fine() -> None:
    assert_valid(history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 30, status="info"),
        R(3, "a", 40, 50),
        R(3, "b", 60, 70),
        R(1, "b", 80, 90),
    ))


def test_info_write_read_then_unread_is_rejected() -> None:
    result = assert_invalid(history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 30, status="info"),
        R(3, "b", 40, 50),
        R(3, "a", 60, 70),
    ))
    assert {op.value for op in result.window if op.f == "read"} == {"a", "b"}


def test_info_write_never_observed_is_fine() -> None:
    assert_valid(history(
        W(1, "a", 0, 10),
        W(2, "b", 20, 30, status="info"),
        R(3, "a", 40, 50),
        W(2, "c", 60, 70),
        R(1, "c", 80, 90),
    ))


def test_info_write_observed_before_its_invoke_is_rejected() -> None:
    ops = history(
        W(1, "a", 0, 10),
        R(3, "b", 20, 30),
        W(2, "b", 40, 50, status="info"),
    )
    result = assert_invalid(ops)
    assert {op.value for op in result.window} >= {"b"}
    assert any(op.status == "info" for op in result.window)


def test_operation_left_open_counts_as_info() -> None:
    ops = history(W(1, "a", 0, 10), W(2, "b", 20, None), R(3, "b", 30, 40))
    assert ops[1].status == "info" and ops[1].complete_time is None
    assert_valid(ops)
    assert_invalid(history(R(3, "b", 0, 5), W(2, "b", 20, None)))


def test_process_may_continue_after_an_info_completion() -> None:
    # The info write stays possible until the end of the history, after the process moved on.
    assert_valid(history(
        W(1, "a", 0, 10, status="info"),
        W(1, "b", 20, 30),
        R(2, "b", 40, 50),
        R(2, "a", 60, 70),
    ))


def test_info_read_carries_no_information() -> None:
    assert_valid(history(W(1, "a", 0, 10), R(2, None, 20, 30, status="info")))


def test_failed_write_must_not_be_observed() -> None:
    assert_valid(history(W(1, "a", 0, 10), W(2, "b", 20, 30, status="fail"), R(3, "a", 40, 50)))
    result = assert_invalid(history(
        W(1, "a", 0, 10), W(2, "b", 20, 30, status="fail"), R(3, "b", 40, 50)
    ))
    assert [op.value for op in result.window] == ["b"]


def test_failed_read_is_ignored() -> None:
    assert_valid(history(W(1, "a", 0, 10), R(2, None, 20, 30, status="fail"), R(2, "a", 40, 50)))


# --------------------------------------------------------------------------------------------
# delete and cas


def test_delete_semantics() -> None:
    assert_valid(history(W(1, "a", 0, 10), D(2, 20, 30), R(3, None, 40, 50)))
    assert_valid(history(W(1, "a", 0, 10), D(2, 20, 60), R(3, "a", 30, 40), R(3, None, 70, 80)))
    result = assert_invalid(history(W(1, "a", 0, 10), D(2, 20, 30), R(3, "a", 40, 50)))
    assert any(op.f == "delete" for op in result.window)


def test_cas_ok_swaps() -> None:
    assert_valid(history(W(1, "a", 0, 10), CAS(2, "a", "b", 20, 30), R(3, "b", 40, 50)))
    assert_invalid(history(W(1, "a", 0, 10), CAS(2, "a", "b", 20, 30), R(3, "a", 40, 50)))


def test_cas_ok_needs_the_expected_value() -> None:
    result = assert_invalid(history(W(1, "a", 0, 10), CAS(2, "z", "b", 20, 30)))
    assert any(op.f == "cas" for op in result.window)
    # Expecting the missing value works on a fresh key.
    assert_valid(history(CAS(2, None, "b", 0, 10), R(1, "b", 20, 30)))


def test_cas_fail_does_not_take_effect() -> None:
    assert_valid(history(W(1, "a", 0, 10), CAS(2, "x", "b", 20, 30, status="fail"),
                         R(3, "a", 40, 50)))
    assert_invalid(history(W(1, "a", 0, 10), CAS(2, "a", "b", 20, 30, status="fail"),
                           R(3, "b", 40, 50)))


def test_cas_info_may_or_may_not_swap() -> None:
    assert_valid(history(W(1, "a", 0, 10), CAS(2, "a", "b", 20, 30, status="info"),
                         R(3, "b", 40, 50)))
    assert_valid(history(W(1, "a", 0, 10), CAS(2, "a", "b", 20, 30, status="info"),
                         R(3, "a", 40, 50)))
    # An info cas cannot produce its value if the register never held what it expected.
    assert_invalid(history(W(1, "a", 0, 10), CAS(2, "x", "b", 20, 30, status="info"),
                           R(3, "b", 40, 50)))


def test_keys_are_independent() -> None:
    ops = history(
        W(1, "a", 0, 10, key="x"),
        W(2, "a", 0, 10, key="y"),
        W(1, "b", 20, 30, key="x"),
        R(3, "a", 40, 50, key="y"),
        R(3, "a", 60, 70, key="x"),
    )
    result = assert_invalid(ops)
    assert result.key == "x"
    assert result.failed_keys == ["x"]
    assert result.keys_checked == 2
    assert all(op.key == "x" for op in result.window)


# --------------------------------------------------------------------------------------------
# Reported window


def _noise(start: int, count: int, tag: str, key: str = "k", first: int = 1) -> tuple[list, int]:
    """A linearizable run of operations on ``key`` from time ``start`` by processes
    ``first``..``first+2``; returns them and the time after the last one."""
    ops = []
    t = start
    for i in range(count):
        value = f"{tag}{i}"
        ops.append(W(first, value, t, t + 10, key=key))
        ops.append(R(first + 1, value, t + 5, t + 20, key=key))  # overlaps the write, sees it
        ops.append(R(first + 2, value, t + 25, t + 30, key=key))
        t += 40
    return ops, t


def test_stale_read_window_is_small_among_many_valid_operations() -> None:
    before, t = _noise(0, 60, "pre")
    core = [W(4, "old", t, t + 10), W(5, "new", t + 20, t + 30), R(6, "old", t + 40, t + 50)]
    after, _ = _noise(t + 60, 60, "post")
    other_key, _ = _noise(0, 100, "o", key="other", first=10)
    ops = history(*before, *core, *after, *other_key)
    result = assert_invalid(ops)
    assert result.key == "k"
    assert len(result.window) <= 4
    stale = [op for op in ops if op.f == "read" and op.value == "old"]
    assert lines_of(stale) <= lines_of(result.window)
    assert result.window_minimal and result.window_shortest
    text = result.describe()
    assert "key k " in text and "'old'" in text and "'new'" in text
    assert "process" in text and "invoke" in text and "complete" in text


def test_window_for_search_found_violation_is_small() -> None:
    # The flicker is not caught by the per-read fast path, only by the search.
    before, t = _noise(0, 80, "pre")
    core = [W(4, "f1", t, t + 100), W(5, "f2", t + 5, t + 100), R(6, "f1", t + 110, t + 120),
            R(6, "f2", t + 130, t + 140), R(6, "f1", t + 150, t + 160)]
    after, _ = _noise(t + 200, 80, "post")
    result = assert_invalid(history(*before, *core, *after))
    assert len(result.window) <= 5
    assert {op.value for op in result.window} <= {"f1", "f2"}


def test_describe_lists_operations_with_times() -> None:
    result = assert_invalid(history(W(1, "a", 1000, 1010), W(2, "b", 1020, 1030),
                                    R(3, "a", 1040, 1050)))
    text = result.describe()
    assert "key k is not linearizable" in text
    for needle in ("process    1", "write", "read", "'a'", "'b'", "1040", "+40", "ok"):
        assert needle in text


# --------------------------------------------------------------------------------------------
# Malformed histories


def _jsonl(*events: dict[str, Any]) -> list[str]:
    return [json.dumps(e) for e in events]


def _inv(p: int, f: str, value: Any = None, t: int = 0, key: str = "k") -> dict[str, Any]:
    return {"process": p, "type": "invoke", "f": f, "key": key, "value": value, "time": t}


def _done(p: int, kind: str, f: str, value: Any = None, t: int = 10) -> dict[str, Any]:
    return {"process": p, "type": kind, "f": f, "key": "k", "value": value, "time": t}


@pytest.mark.parametrize(
    ("lines", "line", "fragment"),
    [
        (_jsonl(_inv(1, "write", "a")) + ["{not json"], 2, "invalid JSON"),
        (_jsonl(_done(1, "ok", "write", "a")), 1, "without an open invoke"),
        (_jsonl(_inv(1, "write", "a"), _inv(1, "read", t=5)), 2, "still open"),
        (_jsonl(_inv(1, "write", "a"), _done(1, "ok", "read", "a")), 2, "does not match"),
        (_jsonl(_inv(1, "write", "a"), _done(1, "maybe", "write", "a")), 2, "unknown event type"),
        (_jsonl(_inv(1, "read"), _inv(2, "increment", 1)), 2, "unknown f"),
        (_jsonl({"process": 1, "type": "invoke", "f": "read", "key": "k"}), 1, "time"),
        (_jsonl(_inv(1, "cas", "a")), 1, "[expected, new]"),
        (_jsonl(_inv(1, "read"), {"process": 1, "type": "ok", "f": "read", "time": 3}), 2,
         "without a value"),
        (_jsonl(_inv(1, "write", "a", t=50), _done(1, "ok", "write", "a", t=10)), 2, "earlier"),
        (_jsonl(_inv(1, "write", "a"), _done(1, "ok", "write", "b")), 2, "differs"),
        (["[1, 2]"], 1, "JSON object"),
    ],
)
def test_malformed_history_names_the_line(lines: list[str], line: int, fragment: str) -> None:
    with pytest.raises(HistoryError) as info:
        parse_history(lines)
    assert info.value.line == line
    assert f"line {line}" in str(info.value)
    assert fragment in str(info.value)


def test_completion_without_value_takes_the_invoke_value() -> None:
    ops = parse_history([
        json.dumps(_inv(1, "write", "a")),
        json.dumps({"process": 1, "type": "ok", "f": "write", "time": 10}),
        "",
        json.dumps(_inv(1, "cas", ["a", "b"], t=20)),
        json.dumps({"process": 1, "type": "fail", "f": "cas", "time": 30}),
    ])
    assert [(op.f, op.value, op.status) for op in ops] == [
        ("write", "a", "ok"), ("cas", ("a", "b"), "fail")
    ]
    assert ops[1].invoke_line == 4 and ops[1].complete_line == 5


# --------------------------------------------------------------------------------------------
# Generated histories


def simulate(seed: int, *, keys: int = 5, total: int = 10_000, processes: int = 8) -> list[dict]:
    """Events of a simulated linearizable register store.

    Each process runs operations back to back with random durations; each operation that
    takes effect does so at a random instant inside its interval (or, for an info
    completion, possibly later, or never), and results are computed by applying the
    operations in the order of those instants. Written values are unique.
    """
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys)]
    clock = [rng.randint(0, 100) for _ in range(processes)]
    ops: list[dict[str, Any]] = []
    for n in range(total):
        p = min(range(processes), key=clock.__getitem__)
        start = clock[p]
        end = start + rng.randint(20, 400)
        roll = rng.random()
        f = "read" if roll < 0.5 else "write" if roll < 0.8 else "delete" if roll < 0.85 else "cas"
        roll = rng.random()
        status = "info" if roll < 0.02 else "fail" if roll < 0.04 else "ok"
        if status == "info":
            applied, point = rng.random() < 0.5, rng.randint(start + 1, end + 3000)
        else:
            applied, point = status == "ok", rng.randint(start + 1, end - 1)
        ops.append({"p": p, "f": f, "key": rng.choice(names), "start": start, "end": end,
                    "status": status, "applied": applied, "point": point, "n": n})
        clock[p] = end + rng.randint(1, 60)
    state: dict[str, Any] = {}
    written: dict[str, list[Any]] = {k: [None] for k in names}
    for op in sorted(ops, key=lambda o: o["point"]):
        key, current = op["key"], state.get(op["key"])
        if op["f"] == "read":
            op["value"] = current
        elif op["f"] in ("write", "delete"):
            op["value"] = f"v{op['n']}" if op["f"] == "write" else None
            if op["applied"]:
                state[key] = op["value"]
                written[key].append(op["value"])
        else:
            expected = current if rng.random() < 0.6 else rng.choice(written[key][-5:])
            op["value"] = [expected, f"v{op['n']}"]
            swapped = op["applied"] and current == expected
            if op["status"] == "ok" and not swapped:
                op["status"] = "fail"
            if swapped:
                state[key] = op["value"][1]
                written[key].append(op["value"][1])
    events = []
    for op in ops:
        invoke_value = None if op["f"] == "read" else op["value"]
        events.append((op["start"], 1, {"process": op["p"], "type": "invoke", "f": op["f"],
                                        "key": op["key"], "value": invoke_value,
                                        "time": op["start"]}))
        result = op["value"] if op["f"] != "read" or op["status"] == "ok" else None
        events.append((op["end"], 0, {"process": op["p"], "type": op["status"], "f": op["f"],
                                      "key": op["key"], "value": result, "time": op["end"]}))
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in events]


def _make_stale(ops: list[Operation], rng: random.Random) -> tuple[list[Operation], Operation]:
    """Replace the result of one late ok read by a value overwritten before it began."""
    reads = [i for i, op in enumerate(ops) if op.f == "read" and op.status == "ok"]
    for index in rng.sample(reads[len(reads) // 2:], len(reads) // 2):
        read = ops[index]
        writes = sorted(
            (op for op in ops if op.key == read.key and op.f == "write" and op.status == "ok"
             and op.complete_time < read.invoke_time),
            key=lambda op: op.complete_time,
        )
        newest = writes[-1]
        older = [op for op in writes if op.complete_time < newest.invoke_time]
        if older and older[-1].value != read.value:
            mutated = Operation(**{**{f: getattr(read, f) for f in read.__slots__},
                                   "value": older[-1].value})
            return ops[:index] + [mutated] + ops[index + 1:], mutated
    raise AssertionError("no read to mutate")


def test_generated_10k_history_is_fast_and_a_stale_read_is_caught() -> None:
    ops = operations_from_events(simulate(7))
    assert len(ops) == 10_000
    start = time.perf_counter()
    result = check_history(ops)
    elapsed = time.perf_counter() - start
    assert result.ok, result.describe()
    assert (result.operations, result.keys_checked) == (10_000, 5)
    assert elapsed < 10, f"10k-operation history took {elapsed:.2f}s"

    mutated, bad_read = _make_stale(ops, random.Random(3))
    start = time.perf_counter()
    result = check_history(mutated)
    elapsed = time.perf_counter() - start
    assert not result.ok
    assert result.key == bad_read.key
    assert bad_read.invoke_line in lines_of(result.window)
    assert elapsed < 30, f"mutated history took {elapsed:.2f}s"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_single_key_histories(seed: int) -> None:
    ops = operations_from_events(simulate(seed, keys=1, total=1500, processes=6))
    assert_valid(ops)
    mutated, bad_read = _make_stale(ops, random.Random(seed))
    result = assert_invalid(mutated)
    assert bad_read.invoke_line in lines_of(result.window)


# --------------------------------------------------------------------------------------------
# Command line


def _write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "good.jsonl", _events(W(1, "a", 0, 10), R(2, "a", 20, 30)))
    assert main([str(good)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "linearizable: 2 operations on 1 keys"

    bad = _write(tmp_path / "bad.jsonl",
                 _events(W(1, "a", 0, 10), W(2, "b", 20, 30), R(3, "a", 40, 50)))
    assert main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("NOT linearizable: key k (3-operation window")
    assert "process    3" in out

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(_inv(1, "write", "a")) + "\n" + "{oops\n")
    assert main([str(broken)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err

    assert main([str(tmp_path / "missing.jsonl")]) == 2


def test_check_file_reads_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.jsonl", simulate(5, keys=2, total=300, processes=4))
    result = check_file(path)
    assert result.ok and result.operations == 300 and result.keys_checked == 2
