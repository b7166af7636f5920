"""Every service's own health as Prometheus metrics, written down once: ``SERVICE_METRICS``.

Each ``MetricSpec`` names one metric (its Prometheus name, in base units and with
``_total`` on counters, as Prometheus' naming guide says), its type, its help text, the
service that measures it and its labels with every value each may take. The collector,
store and alerts publish theirs on their existing broker link (``stats.StatsPublisher``):
a ``ServiceStats`` on ``{base}/services/{service}/stats`` (``topics.STATS``, QoS 0, not
retained) at the start of each session and every ``metrics.stats_interval_s``. The api
exposes the latest of each at ``GET /metrics``, beside its own (publisher ``api``,
measured in the api and never sent over MQTT).

Hostile input: ``admitted`` keeps of a stats payload only the metrics this registry gives
to the service of its topic, with exactly the registry's labels, allowed label values and
a finite value (never negative for a counter or a summary, a count for a summary), once
per series. Anything else is dropped without a word (a newer service may know more
metrics than this api), so what a publisher can make the api expose is bounded by this
table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from minerwatch.shared.schemas import ServiceMetric

#: counter: only grows while the service runs; gauge: a level now; summary: the sum and
#: the count of observations (``ServiceMetric.value`` and ``.count``), both only growing.
MetricType = Literal["counter", "gauge", "summary"]

#: How the collector's poll failures are told apart (its ``PollError`` reasons begin with
#: these words; ``other`` for anything else).
POLL_FAILURE_REASONS: tuple[str, ...] = (
    "timeout", "refused", "unreachable", "closed", "http", "bad_reply", "internal", "other")
#: The services whose liveness the api follows (``minerwatch_service_up``).
SERVICES: tuple[str, ...] = ("collector", "store", "alerts", "api")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric of a service's own health; ``labels``: (name, values it may take)."""

    name: str
    type: MetricType
    help: str
    publisher: str
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(name for name, _values in self.labels)

    def admits(self, metric: ServiceMetric) -> bool:
        """Whether ``metric`` is a value of this metric the api may expose."""
        if metric.name != self.name or len(metric.labels) != len(self.labels):
            return False
        for label, values in self.labels:
            if metric.labels.get(label) not in values:
                return False
        if not math.isfinite(metric.value):
            return False
        if self.type == "gauge":
            return True
        return metric.value >= 0 and (self.type != "summary" or metric.count is not None)


SERVICE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("minerwatch_collector_polls_total", "counter",
               "Polls of miners that finished, good or failed", "collector"),
    MetricSpec("minerwatch_collector_poll_failures_total", "counter",
               "Polls that failed, by what happened", "collector",
               labels=(("reason", POLL_FAILURE_REASONS),)),
    MetricSpec("minerwatch_collector_poll_lateness_seconds", "summary",
               "How long after its due time each poll started", "collector"),
    MetricSpec("minerwatch_collector_miners", "gauge",
               "Miners the collector polls", "collector"),
    MetricSpec("minerwatch_collector_outbox_messages", "gauge",
               "Messages waiting for the broker", "collector"),
    MetricSpec("minerwatch_collector_outbox_dropped_total", "counter",
               "Messages dropped from the full outbox while the broker was away", "collector"),
    MetricSpec("minerwatch_store_messages_total", "counter",
               "Messages the store received from the broker", "store"),
    MetricSpec("minerwatch_store_rows_written_total", "counter",
               "Rows the store committed to the database", "store"),
    MetricSpec("minerwatch_store_samples_written_total", "counter",
               "Samples the store committed that the database did not have yet", "store"),
    MetricSpec("minerwatch_store_batch_commit_seconds", "summary",
               "Time to write and commit one batch of rows", "store"),
    MetricSpec("minerwatch_store_messages_held", "gauge",
               "Messages received and not yet acknowledged (their rows not committed yet)",
               "store"),
    MetricSpec("minerwatch_alerts_evaluations_total", "counter",
               "Samples the alert rules judged", "alerts"),
    MetricSpec("minerwatch_alerts_firing", "gauge",
               "Alerts firing now", "alerts"),
    MetricSpec("minerwatch_api_websocket_clients", "gauge",
               "WebSocket clients connected to the api", "api"),
    MetricSpec("minerwatch_api_websocket_dropped_frames_total", "counter",
               "Frames dropped for WebSocket clients that did not keep up", "api"),
    MetricSpec("minerwatch_service_up", "gauge",
               "1 while the service says online on its status topic, else 0", "api",
               labels=(("service", SERVICES),)),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in SERVICE_METRICS}


def admitted(service: str, metrics: Iterable[ServiceMetric]) -> list[ServiceMetric]:
    """The metrics of a stats payload of ``service`` that the registry admits, the first
    of each series only (a duplicate series would make the exposition invalid)."""
    kept: list[ServiceMetric] = []
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for metric in metrics:
        spec = BY_NAME.get(metric.name)
        if spec is None or spec.publisher != service or not spec.admits(metric):
            continue
        series = (metric.name, tuple(sorted(metric.labels.items())))
        if series not in seen:
            seen.add(series)
            kept.append(metric)
    return kept


def stat(name: str, value: float, *, count: int | None = None, **labels: str) -> ServiceMetric:
    """One value for a stats payload; ValueError when the registry does not admit it (a
    publisher's mistake, which its tests catch)."""
    metric = ServiceMetric(name=name, value=float(value), labels=labels, count=count)
    spec = BY_NAME.get(name)
    if spec is None or not spec.admits(metric):
        raise ValueError(f"{name} {labels} = {value!r} is not a metric of the registry")
    return metric
