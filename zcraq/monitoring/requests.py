"""Per-request figures: how many requests of each kind arrived, how many were answered with an
error (by code), and how long each took from its arrival to the moment its reply was sent.

The loop alone writes these tallies, so they need no lock; ``figures()`` copies them into an
immutable RequestFigures for the published view. A request's kind and arrival time travel with
the request through the core: the shell hands the core an ``Arrival`` in place of the client's
routing envelope, the core treats it as the opaque client identity it always was, and gives it back
with the reply, however late (a write is answered when its commit comes back). Nothing is kept on
the side, so nothing can grow: a request the core never answers takes its arrival with it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from zcraq.messages import Error

# Upper bounds (seconds) of the latency histogram: a read on loopback takes about 0.5 ms, a write
# through three nodes a few ms, a write held up by a failover seconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0)
MALFORMED = "malformed"  # a request that could not be decoded: its kind is unknown
MAX_ERROR_SERIES = 64  # distinct (kind, code) pairs; further ones are counted under code OTHER
OTHER = "other"  # error codes come from peers too (a head's answer relayed by the coordinator)


# A client's routing envelope (a list), with the kind of its request and when it arrived. A plain
# tuple: it is made for every request, and a tuple costs a quarter of a small class to make.
Arrival = tuple[list[bytes], str, float]


@dataclass(frozen=True, slots=True)
class Latency:
    """Replies of one kind: ``counts[i]`` took at most BUCKETS[i] seconds (and more than the bound
    before it); the last count is above every bound. ``total``: their seconds added up."""

    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class RequestFigures:
    requests: Mapping[str, int]  # kind -> requests received
    errors: Mapping[tuple[str, str], int]  # (kind, code) -> error replies
    latency: Mapping[str, Latency]  # kind -> replies sent


class RequestStats:
    """The loop's tallies for requests of the given message types (and malformed ones)."""

    def __init__(self, request_types: Iterable[type]) -> None:
        # A message type's tag is its request's "type" on the wire.
        self._kinds: dict[type, str] = {t: t.__struct_config__.tag for t in request_types}  # type: ignore[attr-defined]
        kinds = [*self._kinds.values(), MALFORMED]
        self._requests = dict.fromkeys(kinds, 0)
        self._counts = {kind: [0] * (len(BUCKETS) + 1) for kind in kinds}
        self._totals = dict.fromkeys(kinds, 0.0)
        self._errors: dict[tuple[str, str], int] = {}

    def arrived(self, envelope: list[bytes], request: object, now: float) -> Arrival:
        """Count a request; what to hand the core as its client."""
        kind = self._kinds.get(type(request), MALFORMED)
        self._requests[kind] += 1
        return envelope, kind, now

    def replied(self, client: Any, reply: object, now: float) -> list[bytes]:
        """Count a reply sent at ``now``; the routing envelope to send it to."""
        if type(client) is not tuple:
            return client  # not handed to the core by arrived()
        envelope, kind, arrived = client
        seconds = now - arrived
        self._counts[kind][bisect_left(BUCKETS, seconds)] += 1
        self._totals[kind] += seconds
        if type(reply) is Error:
            self._error(kind, reply.code)
        return envelope

    def _error(self, kind: str, code: str) -> None:
        series = (kind, code)
        if series not in self._errors and len(self._errors) >= MAX_ERROR_SERIES:
            series = (kind, OTHER)
        self._errors[series] = self._errors.get(series, 0) + 1

    def figures(self) -> RequestFigures:
        """A copy, for the published view."""
        latency = {kind: Latency(tuple(counts), self._totals[kind]) for kind, counts in self._counts.items()}
        return RequestFigures(MappingProxyType(dict(self._requests)), MappingProxyType(dict(self._errors)),
                              MappingProxyType(latency))


def event_counters(name: str, documentation: str, counters: Mapping[str, int]) -> CounterMetricFamily:
    """A process's own counters (its status reply's ``counters``), one series per event."""
    events = CounterMetricFamily(name, documentation, labels=["event"])
    for event, count in counters.items():
        events.add_metric([event], count)
    return events


def request_metrics(figures: RequestFigures) -> Iterator[Metric]:
    requests = CounterMetricFamily("zcraq_requests", "Requests received, by kind", labels=["kind"])
    for kind, count in figures.requests.items():
        requests.add_metric([kind], count)
    yield requests
    errors = CounterMetricFamily("zcraq_request_errors", "Error replies sent, by request kind and error code",
                                 labels=["kind", "code"])
    for (kind, code), count in sorted(figures.errors.items()):
        errors.add_metric([kind, code], count)
    yield errors
    latency = HistogramMetricFamily("zcraq_request_duration_seconds",
                                    "Seconds from a request's arrival to its reply being sent, by kind",
                                    labels=["kind"])
    for kind, figure in figures.latency.items():
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), figure.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        latency.add_metric([kind], buckets, sum_value=figure.total)
    yield latency
