"""Parse and validate key-value operation histories (JSON Lines, Jepsen style).

Each line is one event. An ``invoke`` opens an operation for its process; the next event of
that process must complete it with ``ok`` (it happened, with the recorded result), ``fail``
(it surely did not happen) or ``info`` (outcome unknown: it may take effect at any point after
its invoke, or never). Operations still open at the end of the history are treated like
``info``. The result is a list of :class:`Operation` objects, one per invoke, in invoke order.

A read's invoke may carry ``staleness`` (non-negative integer nanoseconds): a bounded-staleness
read, which may return any value that was current at some point from ``staleness`` before its
invoke until its completion. It is checked as a read invoked that much earlier.

Validation is strict on purpose: a checker fed a subtly malformed history (a completion
without its invoke, a changed key or value) would otherwise report a verdict about a history
that was never recorded. Every problem raises :class:`HistoryError` naming the line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # orjson is a project dependency; fall back to the stdlib for portability.
    import orjson as _json

    _JSONDecodeError: type[Exception] = _json.JSONDecodeError
except ImportError:  # pragma: no cover - exercised only without orjson
    import json as _json  # type: ignore[no-redef]

    _JSONDecodeError = ValueError

__all__ = [
    "FUNCTIONS",
    "STATUSES",
    "HistoryError",
    "Operation",
    "load_history",
    "operations_from_events",
    "parse_history",
]

FUNCTIONS = ("read", "write", "delete", "cas")
"""Operation kinds a history may contain."""

STATUSES = ("ok", "fail", "info")
"""Completion types: happened, surely did not happen, unknown."""

_MISSING = object()


class HistoryError(ValueError):
    """A history line is malformed or inconsistent with the lines before it.

    ``line`` is the 1-based line number (or event position) of the offending event, or
    ``None`` for problems not tied to a single line.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a history: an invoke joined with its completion.

    ``value`` depends on ``f``: the value read (``None`` for a missing key) for a ``read``
    completed ``ok`` (``None`` otherwise, as nothing was learnt), the value written for a
    ``write``, ``None`` for a ``delete``, and the tuple ``(expected, new)`` for a ``cas``.
    JSON arrays inside values become tuples so values can be compared and hashed.

    ``complete_time`` is ``None`` for an ``info`` operation (including one left open at the end
    of the history): it may take effect at any point after ``invoke_time``, or never.
    ``invoke_line`` and ``complete_line`` are the 1-based line numbers of the two events
    (``complete_line`` is ``None`` if the history ends first).
    """

    process: Any
    f: str
    key: Any
    value: Any
    invoke_time: int
    complete_time: int | None
    status: str
    invoke_line: int
    complete_line: int | None = None

    @property
    def is_mutation(self) -> bool:
        """True for operations that may change the register (write, delete, cas)."""
        return self.f != "read"

    @property
    def new_value(self) -> Any:
        """The register value after this operation takes effect (for mutations)."""
        if self.f == "cas":
            return self.value[1]
        if self.f == "delete":
            return None
        return self.value

    def describe(self) -> str:
        """A one-line human-readable rendering, e.g. ``p3 write k1 'v7' ok [100, 250]``."""
        if self.f == "cas":
            shown = f"{self.value[0]!r}->{self.value[1]!r}"
        elif self.f == "delete" or (self.f == "read" and self.status != "ok"):
            shown = ""
        else:
            shown = repr(self.value)
        end = "..." if self.complete_time is None else str(self.complete_time)
        parts = [f"p{self.process}", self.f, repr(self.key)]
        if shown:
            parts.append(shown)
        parts.append(self.status)
        parts.append(f"[{self.invoke_time}, {end}]")
        return " ".join(parts)


def _freeze(value: Any) -> Any:
    """Turn decoded JSON into a hashable equivalent (arrays -> tuples, objects -> item tuples)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Open:
    """An invoke waiting for its completion."""

    __slots__ = ("process", "f", "key", "value", "time", "line", "staleness")

    def __init__(self, process: Any, f: str, key: Any, value: Any, time: int, line: int, staleness: int = 0) -> None:
        self.process = process
        self.f = f
        self.key = key
        self.value = value
        self.time = time
        self.line = line
        self.staleness = staleness

    def finish(self, status: str, value: Any, time: int | None, line: int | None) -> Operation:
        return Operation(
            process=self.process,
            f=self.f,
            key=self.key,
            value=value,
            invoke_time=self.time - self.staleness,
            complete_time=time,
            status=status,
            invoke_line=self.line,
            complete_line=line,
        )


def _invoke_value(f: str, event: Mapping[str, Any], line: int) -> Any:
    """Validate and normalise the value carried by an invoke."""
    raw = event.get("value", _MISSING)
    if f == "read":
        return None  # a read's invoke carries no information
    if f == "delete":
        if raw is not _MISSING and raw is not None:
            raise HistoryError(f"delete invoke must have a null value, got {raw!r}", line)
        return None
    if f == "write":
        if raw is _MISSING:
            raise HistoryError("write invoke without a value", line)
        return _freeze(raw)
    # cas
    if not isinstance(raw, list) or len(raw) != 2:
        raise HistoryError(f"cas invoke value must be [expected, new], got {raw!r}", line)
    return (_freeze(raw[0]), _freeze(raw[1]))


def operations_from_events(events: Iterable[Mapping[str, Any]]) -> list[Operation]:
    """Build operations from already-decoded events; positions count from 1 like lines.

    Raises :class:`HistoryError` for a malformed event, a completion without an open invoke,
    a second invoke while one is open for the process, a completion whose ``f`` or ``key``
    differs from its invoke, a completion value that contradicts the invoke, or a completion
    earlier than its invoke.
    """
    return _build(((i, e) for i, e in enumerate(events, start=1)))


def parse_history(lines: Iterable[str | bytes]) -> list[Operation]:
    """Parse JSON Lines text (an iterable of lines); blank lines are skipped."""

    def events() -> Iterable[tuple[int, Any]]:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                yield number, _json.loads(text)
            except _JSONDecodeError as exc:
                raise HistoryError(f"invalid JSON: {exc}", number) from None

    return _build(events())


def load_history(path: str | Path) -> list[Operation]:
    """Read and parse a JSON Lines history file."""
    with open(path, "rb") as handle:
        return parse_history(handle)


def _build(numbered: Iterable[tuple[int, Any]]) -> list[Operation]:
    open_ops: dict[Any, _Open] = {}
    done: list[Operation] = []
    for line, event in numbered:
        if not isinstance(event, Mapping):
            raise HistoryError(f"expected a JSON object, got {type(event).__name__}", line)
        kind = event.get("type")
        if kind not in ("invoke", *STATUSES):
            raise HistoryError(f"unknown event type {kind!r}", line)
        process = event.get("process")
        if process is None or isinstance(process, bool) or not isinstance(process, (int, str)):
            raise HistoryError(f"process must be an integer or string, got {process!r}", line)
        time = event.get("time")
        if not _is_int(time):
            raise HistoryError(f"time must be an integer (nanoseconds), got {time!r}", line)
        f = event.get("f", _MISSING)

        if kind == "invoke":
            if f not in FUNCTIONS:
                raise HistoryError(f"unknown f {f!r}; expected one of {', '.join(FUNCTIONS)}", line)
            if process in open_ops:
                other = open_ops[process]
                raise HistoryError(
                    f"process {process!r} invokes {f} while its {other.f} invoked on line "
                    f"{other.line} is still open",
                    line,
                )
            key = event.get("key")
            if key is None:
                raise HistoryError("invoke without a key", line)
            value = _invoke_value(f, event, line)
            staleness = event.get("staleness", 0)
            if not _is_int(staleness) or staleness < 0 or (staleness and f != "read"):
                raise HistoryError(f"staleness must be a non-negative integer (ns) on a read, got {staleness!r}", line)
            open_ops[process] = _Open(process, f, _freeze(key), value, time, line, staleness)
            continue

        opened = open_ops.pop(process, None)
        if opened is None:
            raise HistoryError(
                f"{kind} completion for process {process!r} without an open invoke", line
            )
        if f is not _MISSING and f != opened.f:
            raise HistoryError(
                f"completion f {f!r} does not match the {opened.f!r} invoked on line "
                f"{opened.line}",
                line,
            )
        if "key" in event and _freeze(event["key"]) != opened.key:
            raise HistoryError(
                f"completion key {event['key']!r} does not match the key {opened.key!r} invoked on "
                f"line {opened.line}",
                line,
            )
        if time < opened.time:
            raise HistoryError(
                f"completion time {time} is earlier than the invoke time {opened.time} on line "
                f"{opened.line}",
                line,
            )
        raw = event.get("value", _MISSING)
        if opened.f == "read":
            if kind == "ok":
                if raw is _MISSING:
                    raise HistoryError(
                        "ok read completion without a value (use null for a missing key)", line
                    )
                value = _freeze(raw)
            else:
                value = None
        else:
            value = opened.value
            # Absent or null: the completion just does not repeat the value.
            if raw is not _MISSING and raw is not None:
                if _freeze(raw) != value:
                    raise HistoryError(
                        f"completion value {raw!r} differs from the {opened.f} invoke value "
                        f"{_show(value)} on line {opened.line}",
                        line,
                    )
        if kind == "info":
            done.append(opened.finish("info", value, None, line))
        else:
            done.append(opened.finish(kind, value, time, line))

    for opened in open_ops.values():
        # Never completed: the outcome is unknown, exactly like an info completion.
        value = None if opened.f == "read" else opened.value
        done.append(opened.finish("info", value, None, None))
    done.sort(key=lambda op: op.invoke_line)
    return done


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)
