"""Linearizability checking of key-value histories.

Model: every key is an independent register whose initial value is ``None`` (missing).
``write`` sets it, ``delete`` sets it to ``None``, a ``read`` returns it, and ``cas
[expected, new]`` completed ``ok`` observed ``expected`` and set ``new``.

Linearizability is compositional (P-compositionality): a history is linearizable iff the
sub-history of every key is, so keys are checked one at a time. For each key the checker runs
a Wing & Gong / Lowe search in the style of the porcupine checker: depth-first over
"configurations" (set of operations already linearized, register value), trying as the next
linearized operation any operation that is not yet linearized and that no other pending
operation precedes in real time, with every visited configuration memoised so no part of the
search space is explored twice. The search is iterative (explicit stack) and the linearized
set is kept as ``(index of the first pending operation, bit mask of the ones after it)`` so the
memo keys stay small Python ints.

Operation semantics:

* ``fail`` operations surely did not happen and are removed (a failed ``cas`` is a ``cas``
  that did not take effect, so nothing is learnt from it either).
* ``info`` operations (unknown outcome, including ones never completed) may take effect at
  any point after their invoke, or never. An ``info`` read carries no information and is
  dropped; so is an ``info`` mutation whose resulting value is never observed (nothing could
  tell whether it happened). The remaining ones are only linearized immediately before an
  operation that observes the value they produce, which loses no linearization: an unobserved
  effect is always overwritten and can be dropped instead.

Reductions that keep the search small without losing completeness:

* a pending read that is legal in the current register value is linearized at once and alone
  (it does not change the value, so doing it now cannot hurt any other operation);
* a configuration in which a pending read needs a value that no remaining operation can
  produce is abandoned immediately;
* values that nobody reads are merged into one "unobservable" value, and a write of such a
  value is never linearized on its own: whatever follows it has to overwrite it, so all such
  writes possible at that point are linearized together right before an overwrite (or at the
  end), instead of trying every subset and order of them;
* identical info operations are interchangeable (only the earliest pending one is tried), an
  info mutation whose value nobody pending will observe any more is retired, and a
  configuration is abandoned when one with the same linearized ok operations and register
  value but at least the same info operations still available has already failed;
* before searching, each read is checked against the writes of its value: a value never
  written, written only after the read completed, or overwritten by a completed operation
  before the read began, fails at once with an explanation.

Proving a violation means exhausting every configuration before it, which on a long, highly
concurrent key is slow; as violations are local, a search that runs past a step allowance
is followed by checks of growing windows (below) around the point where it got stuck, and
only then by an unbounded search of the whole key.

Real-time order is strict: an operation precedes another only if it completed strictly
before the other was invoked; equal timestamps count as concurrent.

Failing windows. Once a key fails, the checker looks for a short contiguous *window* of that
key's operations that already proves the violation. The key's relevant operations (ok
operations and observed info mutations, i.e. everything but failed operations, info reads and
unobserved info mutations) are sorted by invoke time; a window is a contiguous run of them.
A window is *non-linearizable* when it cannot be linearized even if every mutation outside it
is allowed to take effect at any moment, any number of times, or never (its value may appear
out of nowhere), starting from the initial missing value. That is a relaxation of the real
history, so a non-linearizable window proves that the whole history is not linearizable, and
the property is monotone: a run containing a non-linearizable window is itself
non-linearizable, which is what makes binary search and trimming valid.

"Smallest" precisely: a failing window is first trimmed by binary search on each end into an
inclusion-minimal one (dropping its first or its last operation makes it linearizable;
``Result.window_minimal``), then one check per possible end finds the minimum length over
all windows of the key, and the earliest window of that length is reported
(``Result.window_shortest``). Both steps share a time budget (``shrink_budget``, 5 s by
default); if it runs out, the best window found so far is reported and the flags say which
guarantee is missing.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .history import Operation, load_history

__all__ = ["Result", "check_file", "check_history", "relevant_operations"]

_INF = float("inf")
_READ, _WRITE, _CAS = 0, 1, 2
_DEFAULT_SHRINK_BUDGET = 5.0
_STEP_ALLOWANCE = 10  # search steps per operation before looking for a local violation


class _OutOfTime(Exception):
    """Raised inside the search when the window-shrinking budget is used up."""


@dataclass
class Result:
    """Verdict of a linearizability check.

    On failure ``key`` is the first key (in order of first invocation) whose sub-history is
    not linearizable, ``window`` the smallest non-linearizable window of its operations (see
    the module docstring, which also defines ``window_minimal`` and ``window_shortest``),
    ``reason`` an explanation when a specific one is known, with ``culprits`` the operations
    of the window it names, and ``failed_keys`` every key that failed.
    """

    ok: bool
    keys_checked: int
    operations: int
    key: Any = None
    window: list[Operation] = field(default_factory=list)
    reason: str | None = None
    failed_keys: list[Any] = field(default_factory=list)
    window_minimal: bool = True
    window_shortest: bool = True
    key_operations: int = 0
    culprits: list[Operation] = field(default_factory=list)

    def verdict(self) -> str:
        """A one-line summary."""
        if self.ok:
            return f"linearizable: {self.operations} operations on {self.keys_checked} keys"
        return (
            f"NOT linearizable: key {_show_key(self.key)} ({len(self.window)}-operation window "
            f"out of {self.key_operations} operations on that key; {self.operations} operations "
            f"on {self.keys_checked} keys checked)"
        )

    def describe(self) -> str:
        """A multi-line human-readable explanation of the verdict."""
        if self.ok:
            return self.verdict()
        count = len(self.window)
        subject = "This operation" if count == 1 else f"These {count} operations"
        lines = [
            f"key {_show_key(self.key)} is not linearizable.",
            f"{subject} on it cannot be put in any order that respects their real-time intervals "
            "and the register semantics:",
        ]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        base = min((op.invoke_time for op in self.window), default=0)
        marked = {id(op) for op in self.culprits}
        note = "; * = named in the reason" if marked else ""
        lines.append(f"  (times in ns; +offset from the window's first invoke{note})")
        for op in self.window:
            lines.append(("* " if id(op) in marked else "  ") + _render(op, base))
        lines.append(
            "Operations on this key outside the window were allowed to take effect at any time, "
            "or never; failed operations and reads with unknown outcome carry no constraint and "
            "are not shown."
        )
        if not self.window_minimal:
            lines.append("(the time budget ran out before this window could be fully trimmed)")
        elif not self.window_shortest:
            lines.append(
                "(this window cannot be trimmed at either end; the search for a shorter one "
                "elsewhere ran out of time)"
            )
        others = [k for k in self.failed_keys if k != self.key]
        if others:
            lines.append(
                "other keys that are not linearizable: " + ", ".join(map(_show_key, others))
            )
        return "\n".join(lines)


def _show_key(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _render(op: Operation, base: int) -> str:
    if op.f == "cas":
        value = f"{op.value[0]!r} -> {op.value[1]!r}"
    elif op.f == "delete" or (op.f == "read" and op.status != "ok"):
        value = "-"
    else:
        value = repr(op.value)
    end = "never (unknown outcome)" if op.complete_time is None else (
        f"{op.complete_time} (+{op.complete_time - base})"
    )
    return (
        f"process {op.process!s:>4}  {op.f:<6} {value:<24} {op.status:<4} "
        f"invoke {op.invoke_time} (+{op.invoke_time - base})  complete {end}  "
        f"[line {op.invoke_line}]"
    )


def check_file(path: str | Path, *, shrink_budget: float = _DEFAULT_SHRINK_BUDGET) -> Result:
    """Parse a JSON Lines history file and check it (see :func:`check_history`)."""
    return check_history(load_history(path), shrink_budget=shrink_budget)


def check_history(
    ops: Iterable[Operation], *, shrink_budget: float = _DEFAULT_SHRINK_BUDGET
) -> Result:
    """Check that a history of key-value operations is linearizable.

    Every key is checked. When some fail, the first one (in order of first invocation) gets a
    smallest failing window; ``shrink_budget`` bounds, in seconds, the time spent shrinking it.
    """
    ops = list(ops)
    by_key: dict[Any, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    failed: list[Any] = []
    first: _KeyFailure | None = None
    for key, key_ops in by_key.items():
        failure = _check_key(key_ops, shrink=first is None, shrink_budget=shrink_budget)
        if failure is not None:
            failed.append(key)
            if first is None:
                first = failure
    result = Result(ok=first is None, keys_checked=len(by_key), operations=len(ops))
    if first is not None:
        result.key = failed[0]
        result.window = first.window
        result.reason = first.reason
        result.culprits = first.culprits
        result.failed_keys = failed
        result.window_minimal = first.minimal
        result.window_shortest = first.shortest
        result.key_operations = len(by_key[failed[0]])
    return result


@dataclass
class _KeyFailure:
    window: list[Operation]
    reason: str | None
    minimal: bool = True
    shortest: bool = True
    culprits: list[Operation] = field(default_factory=list)


def _check_key(
    ops: Sequence[Operation], *, shrink: bool = True, shrink_budget: float = _DEFAULT_SHRINK_BUDGET
) -> _KeyFailure | None:
    """Check the operations of one key; ``None`` when linearizable, else the failure found.

    With ``shrink`` the failure carries the smallest failing window (module docstring),
    otherwise just some failing window.
    """
    seq = relevant_operations(ops)
    windows = _Windows(seq)
    witness = _quick_witness(seq, frozenset())
    if witness is not None:
        positions = [i for i, op in enumerate(seq) if any(op is w for w in witness[1])]
        found = (min(positions), max(positions) + 1)
    else:
        found = _find_violation(seq, windows)
        if found is None:
            return None
    if not shrink:
        return _KeyFailure(seq[found[0]:found[1]], None, minimal=False, shortest=False)
    windows.deadline = time.monotonic() + shrink_budget
    return windows.smallest(found)


def _find_violation(seq: list[Operation], windows: _Windows) -> tuple[int, int] | None:
    """``None`` if ``seq`` is linearizable, else a failing window of it.

    The whole sequence is searched first with a step allowance that linearizable histories
    rarely exhaust. Proving a violation, on the other hand, means exploring every
    configuration before it, which on a long, highly concurrent key is expensive; since
    violations are local, windows growing around the point where the search got stuck are
    tried first, and only if none fails is the whole sequence searched without a limit.
    """
    n = len(seq)
    ok, stuck = _search(seq, frozenset(), max_steps=_STEP_ALLOWANCE * n + 10_000)
    if ok:
        return None
    width = 32
    while ok is None:
        i, j = max(0, stuck - width), min(n, stuck + width)
        if (i, j) == (0, n):
            ok, stuck = _search(seq, frozenset())
            if ok:
                return None
            break
        if windows.failing(i, j):
            return i, j
        width *= 4
    return windows.locate(stuck)


def relevant_operations(ops: Iterable[Operation]) -> list[Operation]:
    """The operations of one key that constrain linearizability, sorted by invoke time.

    Failed operations never happened, info reads say nothing, and an info mutation whose
    resulting value nobody observes can be assumed never to have happened (its effect, if any,
    was overwritten before anyone looked), so all of those are left out.
    """
    kept = [op for op in ops if op.status == "ok" or (op.status == "info" and op.f != "read")]
    kept = _prune_unobserved(kept)
    kept.sort(key=lambda op: (op.invoke_time, _completion(op), op.invoke_line))
    return kept


def _completion(op: Operation) -> float:
    return _INF if op.complete_time is None else op.complete_time


def _observed(op: Operation) -> tuple[bool, Any]:
    """Whether ``op`` needs a particular register value to take effect, and which."""
    if op.f == "read":
        return op.status == "ok", op.value
    if op.f == "cas":
        return True, op.value[0]
    return False, None


def _prune_unobserved(ops: list[Operation]) -> list[Operation]:
    """Drop info mutations whose resulting value no kept operation observes (to a fixpoint:
    dropping an info cas may leave the value it expected unobserved)."""
    fixed = [op for op in ops if op.status == "ok"]
    infos = [op for op in ops if op.status != "ok"]
    base = {value for needs, value in map(_observed, fixed) if needs}
    while True:
        seen = base | {op.value[0] for op in infos if op.f == "cas"}
        kept = [op for op in infos if op.new_value in seen]
        if len(kept) == len(infos):
            break
        infos = kept
    keep = {id(op) for op in infos}
    return [op for op in ops if op.status == "ok" or id(op) in keep]


# --------------------------------------------------------------------------------------------
# Fast witnesses: reads that no write can explain.


def _quick_witness(
    seq: Sequence[Operation], ambient: frozenset[Any] | set[Any]
) -> tuple[str, list[Operation]] | None:
    """Find an ok read (or ok cas) whose observed value no write can explain.

    For an observation ``o`` of value ``v`` (not available from outside, see ``ambient``),
    every operation that can produce ``v`` — plus the initial state when ``v`` is ``None`` —
    is ruled out if it was invoked after ``o`` completed, or if some completed mutation to a
    different value started after it completed and finished before ``o`` began (then ``v`` was
    overwritten for good before ``o``). If all are ruled out, ``o`` together with those
    producers and overwrites is a non-linearizable set of operations. Returns ``(reason,
    operations)`` or ``None``; never reports a history that is linearizable.
    """
    producers: dict[Any, list[Operation]] = {}
    definite: list[Operation] = []
    for op in seq:
        if op.f != "read":
            producers.setdefault(op.new_value, []).append(op)
            if op.status == "ok":
                definite.append(op)
    definite.sort(key=lambda op: op.invoke_time)
    invokes = [op.invoke_time for op in definite]
    # suffix_best[i]: the completed mutation invoked at or after definite[i] that finishes first.
    suffix_best: list[Operation | None] = [None] * (len(definite) + 1)
    for i in range(len(definite) - 1, -1, -1):
        nxt = suffix_best[i + 1]
        op = definite[i]
        suffix_best[i] = op if nxt is None or op.complete_time < nxt.complete_time else nxt

    def overwrite_after(t: float, before: int, value: Any) -> Operation | None:
        i = bisect_right(invokes, t)
        best = suffix_best[i]
        if best is not None and best.complete_time < before and best.new_value != value:
            return best
        return None

    for obs in seq:
        if obs.status != "ok":
            continue
        needs, value = _observed(obs)
        if not needs or value in ambient:
            continue
        evidence: list[Operation] = []
        explanations: list[str] = []
        explained = False
        act = "read" if obs.f == "read" else "cas"
        if value is None:
            cover = overwrite_after(-_INF, obs.invoke_time, None)
            if cover is None:
                continue
            evidence.append(cover)
            explanations.append(
                f"the initially missing value was replaced by {_label(cover)} before the "
                f"{act} began"
            )
        for prod in producers.get(value, ()):
            if prod is obs:
                explained = True
                break
            if prod.invoke_time > obs.complete_time:
                evidence.append(prod)
                explanations.append(f"{_label(prod)} was invoked only after the {act} completed")
                continue
            if prod.complete_time is None:
                explained = True
                break
            cover = overwrite_after(prod.complete_time, obs.invoke_time, value)
            if cover is None:
                explained = True
                break
            evidence += [prod, cover]
            explanations.append(
                f"{_label(prod)} was overwritten by {_label(cover)} before the {act} began"
            )
        if explained:
            continue
        did = "returned" if obs.f == "read" else "succeeded expecting"
        head = f"{_label(obs)} {did} {value!r}"
        if not producers.get(value) and value is not None:
            reason = f"{head}, a value never written to this key"
        else:
            reason = f"{head}, but " + "; ".join(explanations)
        ops = {id(op): op for op in [obs, *evidence]}
        return reason, list(ops.values())
    return None


def _label(op: Operation) -> str:
    """A short noun phrase naming an operation, e.g. ``the write of 'a' by process 3 [5, 9]``."""
    if op.f == "write":
        what = f"the write of {op.value!r}"
    elif op.f == "cas":
        what = f"the cas {op.value[0]!r}->{op.value[1]!r}"
    else:
        what = f"the {op.f}"
    end = "unknown" if op.complete_time is None else op.complete_time
    return f"{what} by process {op.process} [{op.invoke_time}, {end}]"


# --------------------------------------------------------------------------------------------
# The search.


def _search(
    ops: Sequence[Operation],
    ambient: frozenset[Any] | set[Any],
    deadline: float | None = None,
    max_steps: int | None = None,
) -> tuple[bool | None, int]:
    """Decide whether ``ops`` (one key, sorted by invoke time) can be linearized.

    ``ambient`` holds values that may appear in the register at any moment (the values of
    mutations outside a window being checked; empty for a whole history). Returns
    ``(linearizable, deepest)`` where ``deepest`` is the index in ``ops`` of the first ok
    operation that no explored linearization got past (meaningful on failure).
    ``linearizable`` is ``None`` when ``max_steps`` configurations were explored without a
    verdict; :class:`_OutOfTime` is raised once ``deadline`` (a ``time.monotonic`` value) passes.
    """
    ops = _prune_unobserved(list(ops))
    oks = [op for op in ops if op.status == "ok"]
    infos = [op for op in ops if op.status != "ok"]
    if not oks:
        return True, 0
    position = {id(op): i for i, op in enumerate(ops)}

    observed: dict[Any, int] = {}
    for op in ops:
        needs, value = _observed(op)
        if needs and value not in observed:
            observed[value] = len(observed) + 1  # 0 is the shared "unobservable" value

    def vid(value: Any) -> int:
        return observed.get(value, 0)

    nvalues = len(observed) + 1
    amb = [False] * nvalues
    for value, ident in observed.items():
        amb[ident] = value in ambient
    remaining = [0] * nvalues  # not-yet-linearized operations producing each value

    k = len(oks)
    kind = [0] * k
    exp = [0] * k
    new = [0] * k
    inv = [op.invoke_time for op in oks]
    comp = [op.complete_time for op in oks]
    for i, op in enumerate(oks):
        if op.f == "read":
            kind[i], exp[i] = _READ, vid(op.value)
        elif op.f == "cas":
            kind[i], exp[i], new[i] = _CAS, vid(op.value[0]), vid(op.value[1])
        else:
            kind[i], new[i] = _WRITE, vid(op.new_value)
        if kind[i] != _READ:
            remaining[new[i]] += 1
    m = len(infos)
    ikind = [_CAS if op.f == "cas" else _WRITE for op in infos]
    iexp = [vid(op.value[0]) if op.f == "cas" else 0 for op in infos]
    inew = [vid(op.new_value) for op in infos]
    iinv = [op.invoke_time for op in infos]
    groups: dict[tuple[int, int, int], int] = {}
    igroup = [1 << groups.setdefault((ikind[q], iexp[q], inew[q]), len(groups)) for q in range(m)]
    for v in inew:
        remaining[v] += 1

    initial = vid(None)
    # Up-front: an observation of a value nothing can produce dooms the whole search.
    for i in range(k):
        if kind[i] != _WRITE:
            v = exp[i]
            if not remaining[v] and not amb[v] and v != initial:
                return False, position[id(oks[i])]

    # watchers[v]: pending operations that need the register to hold v. Once none is left,
    # the pending info mutations producing v are useless and get "retired": marked as done in
    # the info mask so that configurations differing only in them are not told apart.
    watchers = [0] * nvalues
    for i in range(k):
        if kind[i] != _WRITE:
            watchers[exp[i]] += 1
    info_producers: list[list[int]] = [[] for _ in range(nvalues)]
    for q in range(m):
        info_producers[inew[q]].append(q)
        if ikind[q] == _CAS:
            watchers[iexp[q]] += 1

    lin = bytearray(k)
    sweep = k  # the move that linearizes every pending "junk" write at once (see moves())

    def moves(lo: int, ib: int, s: int, fresh: bool) -> tuple[list[int], list[int]]:
        """The operations that may be linearized next, and the pending junk writes.

        Info operation q is encoded as ``~q``. A write or delete whose value no pending
        operation will ever observe ("junk") is never offered on its own: whatever follows it
        must overwrite it, so it can as well be linearized right before such an overwrite,
        together with every other junk write then possible. That is the ``sweep`` move, which
        leaves the register in the unobservable value 0 so that only a state-independent
        operation (or another sweep) can follow.
        """
        bound = _INF
        out: list[int] = []
        junk: list[int] = []
        j = lo
        while j < k and inv[j] <= bound:
            if not lin[j]:
                kd = kind[j]
                if kd != _WRITE:
                    v = exp[j]
                    if v == s:
                        if kd == _READ:
                            return [j], junk  # legal read: take it now, nothing to choose
                    elif not remaining[v] and not amb[v]:
                        return [], junk  # this read can never be satisfied any more
                    out.append(j)
                elif watchers[new[j]]:
                    out.append(j)
                else:
                    junk.append(j)
                c = comp[j]
                if c < bound:
                    bound = c
            j += 1
        if m:
            # Identical info operations are interchangeable once invoked (they never
            # complete): offer only the earliest pending one of each group.
            avail = ((1 << bisect_right(iinv, bound)) - 1) & ~ib
            offered = 0
            while avail:
                low = avail & -avail
                q = low.bit_length() - 1
                g = igroup[q]
                if not offered & g:
                    offered |= g
                    out.append(~q)
                avail ^= low
        if fresh:
            # An info mutation was just linearized: only an observer of its value may follow.
            out = [
                mv for mv in out
                if (mv >= 0 and kind[mv] == _CAS and exp[mv] == s)
                or (mv < 0 and ikind[~mv] == _CAS and iexp[~mv] == s)
            ]
        elif junk:
            out.insert(0, sweep)
        return out, junk

    def unwatch(v: int, ib: int, retired: list[int]) -> int:
        """One fewer pending operation needs ``v``; retire what became useless."""
        watchers[v] -= 1
        if watchers[v]:
            return ib
        work = [v]
        while work:
            for q in info_producers[work.pop()]:
                bit = 1 << q
                if not ib & bit:
                    ib |= bit
                    retired.append(q)
                    if ikind[q] == _CAS:
                        e = iexp[q]
                        watchers[e] -= 1
                        if not watchers[e]:
                            work.append(e)
        return ib

    def undo(mv: int, retired: list[int], swept: list[int]) -> None:
        for q in retired:
            if ikind[q] == _CAS:
                watchers[iexp[q]] += 1
        if mv == sweep:
            for j in swept:
                lin[j] = 0
                remaining[new[j]] += 1
        elif mv >= 0:
            lin[mv] = 0
            if kind[mv] != _READ:
                remaining[new[mv]] += 1
            if kind[mv] != _WRITE:
                watchers[exp[mv]] += 1
        else:
            q = ~mv
            remaining[inew[q]] += 1
            if ikind[q] == _CAS:
                watchers[iexp[q]] += 1

    # Memo of configurations explored without success, keyed by (lo, rel, state) with the list
    # of info masks seen for it. A configuration is dead if one with the same key and a subset
    # of its info mask (so at least the same info operations still available) failed: info
    # operations are optional, so every continuation of the former is one of the latter.
    failed: dict[tuple[int, int, int], list[int]] = {}
    # Frame: lo, rel, ib, state, fresh, options, next option, junk writes, the move that led
    # here, info operations it retired.
    no_ops: list[int] = []
    options, junk = moves(0, 0, initial, False)
    stack: list[list[Any]] = [[0, 0, 0, initial, False, options, 0, junk, None, no_ops]]
    deepest = 0
    steps = 0
    while stack:
        top = stack[-1]
        options = top[5]
        pos = top[6]
        if pos == len(options):
            stack.pop()
            memo_key = (top[0], top[1], ~top[3] if top[4] else top[3])
            masks = failed.get(memo_key)
            if masks is None:
                failed[memo_key] = [top[2]]
            else:
                masks.append(top[2])
            if top[8] is not None:
                undo(top[8], top[9], stack[-1][7])
            continue
        top[6] = pos + 1
        mv = options[pos]
        lo, rel, ib, s, fresh = top[0], top[1], top[2], top[3], top[4]
        retired = no_ops
        if mv == sweep:
            for j in top[7]:
                lin[j] = 1
                remaining[new[j]] -= 1
                rel |= 1 << (j - lo)
            ns = 0
            nfresh = False
        elif mv >= 0:
            kd = kind[mv]
            if kd == _WRITE:
                if fresh:
                    continue
                ns = new[mv]
            else:
                v = exp[mv]
                if v != s and (fresh or not amb[v]):
                    continue
                ns = v if kd == _READ else new[mv]
            nfresh = False
            rel |= 1 << (mv - lo)
            lin[mv] = 1
            if kd != _READ:
                remaining[new[mv]] -= 1
            if kd != _WRITE:
                retired = []
                ib = unwatch(exp[mv], ib, retired)
        else:
            q = ~mv
            if ikind[q] == _WRITE:
                if fresh:
                    continue
            else:
                v = iexp[q]
                if v != s and (fresh or not amb[v]):
                    continue
            ns = inew[q]
            nfresh = True
            ib |= 1 << q
            remaining[ns] -= 1
            if ikind[q] == _CAS:
                retired = []
                ib = unwatch(iexp[q], ib, retired)
        if rel & 1:
            ones = (~rel & (rel + 1)).bit_length() - 1
            rel >>= ones
            lo += ones
            if lo == k:
                return True, len(ops)
        masks = failed.get((lo, rel, ~ns if nfresh else ns))
        if masks is not None:
            dead = False
            for mask in masks:
                if not mask & ~ib:
                    dead = True
                    break
            if dead:
                undo(mv, retired, top[7])
                continue
        if lo > deepest:
            deepest = lo
        steps += 1
        if not steps & 1023:
            if deadline is not None and time.monotonic() > deadline:
                raise _OutOfTime
            if max_steps is not None and steps > max_steps:
                return None, position[id(oks[deepest])]
        options, junk = moves(lo, ib, ns, nfresh)
        stack.append([lo, rel, ib, ns, nfresh, options, 0, junk, mv, retired])
    return False, position[id(oks[deepest])]


# --------------------------------------------------------------------------------------------
# Window shrinking.


class _Windows:
    """Checks contiguous windows of one key's relevant operations (see the module docstring)
    and finds the smallest failing one."""

    def __init__(self, seq: list[Operation]) -> None:
        self.seq = seq
        self.deadline: float | None = None
        self.memo: dict[tuple[int, int], bool] = {}
        # For each value, the first and last index of an operation producing it.
        self.first: dict[Any, int] = {}
        self.last: dict[Any, int] = {}
        for i, op in enumerate(seq):
            if op.f != "read":
                self.first.setdefault(op.new_value, i)
                self.last[op.new_value] = i

    def ambient(self, i: int, j: int) -> set[Any]:
        """Values observed in ``seq[i:j]`` that some operation outside the window produces."""
        out: set[Any] = set()
        for op in self.seq[i:j]:
            needs, value = _observed(op)
            if needs and (self.first.get(value, i) < i or self.last.get(value, i) >= j):
                out.add(value)
        return out

    def failing(self, i: int, j: int) -> bool:
        """Whether ``seq[i:j]`` is non-linearizable (memoised)."""
        if j <= i:
            return False
        known = self.memo.get((i, j))
        if known is None:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise _OutOfTime
            amb = self.ambient(i, j)
            window = self.seq[i:j]
            known = _quick_witness(window, amb) is not None or not _search(
                window, amb, self.deadline
            )[0]
            self.memo[(i, j)] = known
        return known

    def locate(self, center: int) -> tuple[int, int]:
        """A failing window around ``center``, doubling its width until it fails.

        Meant for a sequence known to fail whose search got no further than ``center``: every
        failing window ends after it, and the whole sequence fails.
        """
        n = len(self.seq)
        width = 2
        while True:
            i, j = max(0, center - width), min(n, center + width)
            if (i, j) == (0, n) or self.failing(i, j):
                return i, j
            width *= 2

    def smallest(self, found: tuple[int, int]) -> _KeyFailure:
        """Shrink the failing window ``found`` within the time budget."""
        best = found
        minimal = shortest = False
        try:
            best = self._trim(*best)
            minimal = True
            best = self._shortest(*best)
            shortest = True
        except _OutOfTime:
            pass
        window = self.seq[best[0]:best[1]]
        reason, culprits = self._reason(*best)
        return _KeyFailure(window, reason, minimal, shortest, culprits)

    def _trim(self, i: int, j: int) -> tuple[int, int]:
        """Shrink a failing window to an inclusion-minimal one by binary search on each end."""
        lo, hi = i + 1, j  # smallest end e in (i, j] with seq[i:e] failing
        while lo < hi:
            mid = (lo + hi) // 2
            if self.failing(i, mid):
                hi = mid
            else:
                lo = mid + 1
        j = lo
        lo, hi = i, j - 1  # largest start s in [i, j) with seq[s:j] failing
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.failing(mid, j):
                lo = mid
            else:
                hi = mid - 1
        return lo, j

    def _shortest(self, i: int, j: int) -> tuple[int, int]:
        """The shortest failing window, the earliest among equally short ones.

        Ends are scanned in order, one check each: for an end before the current best's, the
        window of the best's length ending there (it contains every window at most that long
        ending there, and failing is monotone); for a later end, the window one shorter. A
        failing check is then trimmed from the left and becomes the new best.
        """
        n = len(self.seq)
        for end in range(1, n + 1):
            length = j - i
            if end == j:
                continue
            if end > j:
                if length == 1:
                    break
                length -= 1
            start = max(0, end - length)
            if self.failing(start, end):
                while end - start > 1 and self.failing(start + 1, end):
                    start += 1
                i, j = start, end
        return i, j

    def _reason(self, i: int, j: int) -> tuple[str | None, list[Operation]]:
        window = self.seq[i:j]
        witness = _quick_witness(window, self.ambient(i, j))
        return witness if witness is not None else (None, [])
