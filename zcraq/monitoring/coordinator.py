"""The coordinator's view (what its loop publishes) and the metrics /metrics makes of it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import get_args

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from zcraq.coordcore import CoordinatorCore
from zcraq.messages import CoordinatorRequest
from zcraq.monitoring.requests import RequestFigures, RequestStats, event_counters, request_metrics
from zcraq.monitoring.views import ViewSlot


def coordinator_request_stats() -> RequestStats:
    """Tallies for every request the coordinator answers."""
    return RequestStats(get_args(CoordinatorRequest))


@dataclass(frozen=True, slots=True)
class CoordinatorView:
    epoch: int
    members: tuple[str, ...]  # head first
    learner: str | None
    lease: float  # seconds: the lease each heartbeat grants
    published: bool  # a topology has gone out since the coordinator started
    counters: Mapping[str, int]
    requests: RequestFigures | None

    @property
    def ready(self) -> bool:
        return self.published

    @property
    def status(self) -> str:
        chain = " -> ".join(self.members) or "no members"
        learner = f", learner {self.learner}" if self.learner is not None else ""
        return f"epoch {self.epoch}: {chain}{learner}"


def take_coordinator_view(core: CoordinatorCore, published: bool, requests: RequestStats | None) -> CoordinatorView:
    """Called by the loop (the core's owner) only."""
    topology = core.topology
    return CoordinatorView(
        epoch=topology.epoch, members=tuple(m.id for m in topology.members),
        learner=topology.learner.id if topology.learner is not None else None, lease=core.timings.lease,
        published=published, counters=MappingProxyType(dict(core.counters)),
        requests=None if requests is None else requests.figures())


def coordinator_metrics(view: CoordinatorView) -> Iterator[Metric]:
    yield GaugeMetricFamily("zcraq_coordinator_epoch", "Epoch of the current topology", value=view.epoch)
    yield GaugeMetricFamily("zcraq_coordinator_members", "Nodes in the chain (the learner not counted)",
                            value=len(view.members))
    position = GaugeMetricFamily("zcraq_coordinator_member_position", "Each member's place in the chain, "
                                 "0 for the head", labels=["node"])
    for index, node in enumerate(view.members):
        position.add_metric([node], index)
    yield position
    yield GaugeMetricFamily("zcraq_coordinator_learner", "1 while a node is catching up behind the tail",
                            value=view.learner is not None)
    yield GaugeMetricFamily("zcraq_coordinator_lease_seconds", "The lease each heartbeat grants (lease_ms)",
                            value=view.lease)
    yield GaugeMetricFamily("zcraq_coordinator_published", "1 once a topology has been published",
                            value=view.published)
    yield event_counters("zcraq_coordinator_events",
                         "The coordinator's counters, as its status reply has them (PROTOCOL.md 9.2)", view.counters)
    if view.requests is not None:
        yield from request_metrics(view.requests)


class CoordinatorCollector:
    """The metrics of the latest published view."""

    def __init__(self, slot: ViewSlot[CoordinatorView]) -> None:
        self.slot = slot

    def collect(self) -> Iterator[Metric]:
        latest = self.slot.latest
        if latest is not None:
            yield from coordinator_metrics(latest[1])
