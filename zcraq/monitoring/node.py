"""A node's view (what its loop publishes) and the metrics /metrics makes of it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import get_args

from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric

from zcraq.messages import NodeRequest
from zcraq.monitoring.disk import DirectorySize
from zcraq.monitoring.requests import RequestFigures, RequestStats, event_counters, request_metrics
from zcraq.monitoring.views import ViewSlot
from zcraq.nodecore import NodeCore
from zcraq.nodecore.catchup import Phase
from zcraq.nodecore.place import Role

ROLES = tuple(role.value for role in Role)
PHASES = tuple(phase.name.lower() for phase in Phase)


def node_request_stats() -> RequestStats:
    """Tallies for every request a node answers."""
    return RequestStats(get_args(NodeRequest))


@dataclass(frozen=True, slots=True)
class NodeView:
    node: str
    role: str
    epoch: int
    serving: bool
    caught_up: bool
    sent: int  # records forwarded down the chain and not committed yet
    dirty_keys: int  # keys with such a record
    lease_left: float  # seconds left of the coordinator's lease; 0 when there is none
    catchup_phase: str
    catchup_copied: int
    catchup_fraction: float | None
    counters: Mapping[str, int]
    requests: RequestFigures | None
    # A node of a partitioned cluster: how many of its replicas have each role ("head", "learner", ...)
    replicas: Mapping[str, int] | None = None

    @property
    def ready(self) -> bool:
        return self.serving

    @property
    def status(self) -> str:
        state = "serving" if self.serving else "not serving"
        if self.catchup_phase == "copying":
            progress = "" if self.catchup_fraction is None else f", {self.catchup_fraction:.0%}"
            state += f", catching up ({self.catchup_copied} keys copied{progress})"
        return f"{self.node}: {self.role} at epoch {self.epoch}, {state}"


def take_node_view(core: NodeCore, now: float, requests: RequestStats | None) -> NodeView:
    """Called by the loop (the core's owner) only."""
    sent, catchup = core.links.sent, core.catchup
    return NodeView(
        node=core.me.id, role=core.role, epoch=core.topology.epoch, serving=core.serving(now),
        caught_up=core.caught_up, sent=len(sent), dirty_keys=sent.key_count,
        lease_left=max(0.0, core.leases.coordinator_until - now),
        catchup_phase=catchup.phase.name.lower(), catchup_copied=catchup.copied,
        catchup_fraction=catchup.fraction, counters=MappingProxyType(dict(core.counters)),
        requests=None if requests is None else requests.figures())


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _one_of(name: str, documentation: str, label: str, choices: tuple[str, ...], chosen: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for choice in choices:
        family.add_metric([choice], 1.0 if choice == chosen else 0.0)
    return family


def node_metrics(view: NodeView) -> Iterator[Metric]:
    yield InfoMetricFamily("zcraq_node", "This node's id", value={"node": view.node})
    yield _one_of("zcraq_node_role", "1 for the node's role, 0 for the others", "role", ROLES, view.role)
    yield _gauge("zcraq_node_serving", "1 while the node serves reads and writes", view.serving)
    yield _gauge("zcraq_node_caught_up", "1 once the node's copy of the data is complete", view.caught_up)
    yield _gauge("zcraq_node_epoch", "Epoch of the topology the node follows", view.epoch)
    yield _gauge("zcraq_node_sent_records", "Records forwarded down the chain and not committed yet (the sent list)",
                 view.sent)
    yield _gauge("zcraq_node_dirty_keys", "Keys with a version forwarded down the chain and not committed yet",
                 view.dirty_keys)
    yield _gauge("zcraq_node_lease_seconds", "Seconds left of the coordinator's lease (0: none)", view.lease_left)
    yield _one_of("zcraq_node_catchup_phase", "1 for the catch-up phase the node is in, 0 for the others", "phase",
                  PHASES, view.catchup_phase)
    yield _gauge("zcraq_node_catchup_copied_keys", "Keys copied by the current or last catch-up", view.catchup_copied)
    if view.catchup_fraction is not None:
        yield _gauge("zcraq_node_catchup_fraction", "How far the catch-up copy is, as its source estimates (0 to 1)",
                     view.catchup_fraction)
    yield event_counters("zcraq_node_events", "The node's counters, as its status reply has them (PROTOCOL.md 8.6)",
                         view.counters)
    if view.requests is not None:
        yield from request_metrics(view.requests)
    if view.replicas is not None:
        family = GaugeMetricFamily("zcraq_node_replicas", "Replicas this node hosts (a partitioned cluster), by role",
                                   labels=["role"])
        for role in ROLES:
            family.add_metric([role], float(view.replicas.get(role, 0)))
        yield family


class NodeCollector:
    """The metrics of the latest published view, and the store's size on disk."""

    def __init__(self, slot: ViewSlot[NodeView], data_dir: Path) -> None:
        self.slot = slot
        self.store_size = DirectorySize(data_dir)

    def collect(self) -> Iterator[Metric]:
        size = self.store_size.bytes()
        if size is not None:
            yield _gauge("zcraq_node_store_bytes", "Bytes of the LevelDB directory (measured at most every 10 s)",
                         size)
        latest = self.slot.latest
        if latest is not None:
            yield from node_metrics(latest[1])
