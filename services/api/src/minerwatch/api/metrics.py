"""What ``GET /metrics`` exposes, built from the api's state at each scrape.

Per miner (label ``miner``), from the relay's cache of the retained topics (the live state
``GET /api/miners`` shows on top of the history): ``minerwatch_miner_up`` (1 while the
miner's state by ``presence`` is ``online`` or ``idle``, else 0: ``offline``, ``stale``,
``unknown``), ``minerwatch_miner_info`` (its make, model, firmware and label) and one series
per reading of its latest sample, by the ``prometheus`` names of ``shared.fields``. A miner
whose data is not live has no reading series at all, so Prometheus marks them stale rather
than showing a dead number as live.

Per service, by ``shared.metrics``: ``minerwatch_service_up`` from the status topics the
relay follows; the collector's, store's and alerts' own health from their latest stats,
only while that service is ``online`` and its stats are at most ``STALE_INTERVALS`` stats
intervals old; the api's own WebSocket numbers, measured here.

The families are made afresh at each scrape (prometheus-client's custom-collector API):
nothing per miner outlives the miner.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from minerwatch.api.fleet import LiveMiner, live_miners, observed
from minerwatch.api.presence import presence, stale_after_s
from minerwatch.api.relay import SERVICES, Relay
from minerwatch.shared.config import Config
from minerwatch.shared.fields import SAMPLE_FIELDS, FieldDescription
from minerwatch.shared.metrics import SERVICE_METRICS, MetricSpec
from minerwatch.shared.schemas import Sample, ServiceMetric

#: Stats older than this many ``stats_interval_s`` are not exposed (the service stopped
#: publishing them, or its broker link is gone).
STALE_INTERVALS = 3
#: States whose readings are live.
LIVE_STATES = frozenset({"online", "idle"})

MINER_UP = "minerwatch_miner_up"
MINER_INFO = "minerwatch_miner_info"
#: The labels of ``minerwatch_miner_info`` besides ``miner``.
INFO_LABELS: tuple[str, ...] = ("make", "model", "firmware", "label")


@dataclass(frozen=True, slots=True)
class SampleMetric:
    """One metric made from the sample fields that carry its name."""

    name: str
    counter: bool
    help: str
    #: The labels besides ``miner``: the fields' own, then a list's item label.
    labels: tuple[str, ...]
    fields: tuple[FieldDescription, ...]


def sample_metrics(described: Sequence[FieldDescription] = SAMPLE_FIELDS
                   ) -> tuple[SampleMetric, ...]:
    """The fields with a ``prometheus`` name, gathered by name (in field order)."""
    by_name: dict[str, list[FieldDescription]] = {}
    for field in described:
        if field.prometheus is not None:
            by_name.setdefault(field.prometheus, []).append(field)
    made = []
    for name, group in by_name.items():
        first = group[0]
        labels = tuple(key for key, _value in first.prometheus_labels)
        if first.prometheus_item is not None:
            labels += (first.prometheus_item,)
        made.append(SampleMetric(
            name=name, counter=first.kind == "counter",
            help="; ".join(dict.fromkeys(_help(field) for field in group)),
            labels=labels, fields=tuple(group)))
    return tuple(made)


def _help(field: FieldDescription) -> str:
    return field.description[0].upper() + field.description[1:]


SAMPLE_METRICS = sample_metrics()


def field_values(field: FieldDescription, sample: Sample
                 ) -> Iterator[tuple[tuple[str, ...], float]]:
    """(label values besides ``miner``, value in the metric's unit) of one field; nothing
    for a missing reading."""
    value = getattr(sample, field.name)
    fixed = tuple(label for _key, label in field.prometheus_labels)
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield (*fixed, str(index)), item * field.prometheus_scale
        return
    yield fixed, float(value) * field.prometheus_scale  # bool: 1.0 or 0.0


Family = CounterMetricFamily | GaugeMetricFamily


def _family(name: str, help_text: str, counter: bool, labels: Sequence[str]) -> Family:
    if counter:
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


@dataclass(frozen=True, slots=True)
class MinerView:
    """What one scrape shows of a miner: whether its data is live, its identity, its
    latest sample."""

    miner_id: str
    live: bool
    info: tuple[str, ...]
    sample: Sample | None


def miner_views(live: Mapping[str, LiveMiner], *, collector_online: bool, now_ms: int,
                stale_after_ms: int) -> list[MinerView]:
    """Every miner of the relay's cache, by id, judged by the rule of ``presence``."""
    views = []
    for miner_id in sorted(live):
        miner = live[miner_id]
        shown = presence(observed(miner.status, miner.sample), collector_online=collector_online,
                         now_ms=now_ms, stale_after_ms=stale_after_ms)
        info = miner.info
        identity = ("", "", "", miner_id) if info is None else (
            info.make or "", info.model or "", info.firmware or "", info.label or miner_id)
        views.append(MinerView(miner_id, shown.state in LIVE_STATES, identity, miner.sample))
    return views


def miner_families(views: Iterable[MinerView],
                   metrics: Sequence[SampleMetric] = SAMPLE_METRICS) -> list[Metric]:
    """``minerwatch_miner_up``, ``minerwatch_miner_info`` and the readings of live miners."""
    up = GaugeMetricFamily(MINER_UP, "1 while the miner's data is live (online or idle), "
                           "0 when it is offline, stale or unknown", labels=["miner"])
    info = InfoMetricFamily(MINER_INFO.removesuffix("_info"),
                            "The miner's make, model, firmware and label", labels=["miner"])
    readings = {metric.name: _family(metric.name, metric.help, metric.counter,
                                     ("miner", *metric.labels))
                for metric in metrics}
    for view in views:
        up.add_metric([view.miner_id], 1.0 if view.live else 0.0)
        info.add_metric([view.miner_id], dict(zip(INFO_LABELS, view.info, strict=True)))
        if not view.live or view.sample is None:
            continue
        for metric in metrics:
            family = readings[metric.name]
            for field in metric.fields:
                for labels, value in field_values(field, view.sample):
                    family.add_metric([view.miner_id, *labels], value)
    return [up, info, *(family for family in readings.values() if family.samples)]


def service_families(services: Mapping[str, str], stats: Mapping[str, Sequence[ServiceMetric]],
                     local: Sequence[ServiceMetric]) -> list[Metric]:
    """The registry's metrics: ``minerwatch_service_up`` from ``services`` (name -> state),
    the published ``stats`` of each service (already judged fresh), the api's ``local``."""
    values: dict[str, list[ServiceMetric]] = {}
    for metric in [*local, *(m for kept in stats.values() for m in kept)]:
        values.setdefault(metric.name, []).append(metric)
    values["minerwatch_service_up"] = [
        ServiceMetric(name="minerwatch_service_up", value=1.0 if state == "online" else 0.0,
                      labels={"service": name}) for name, state in services.items()]
    families = []
    for spec in SERVICE_METRICS:
        if spec.name in values:
            families.append(_service_family(spec, values[spec.name]))
    return families


def _service_family(spec: MetricSpec, metrics: Iterable[ServiceMetric]) -> Metric:
    if spec.type == "summary":
        summary = SummaryMetricFamily(spec.name, spec.help, labels=spec.label_names)
        for metric in metrics:
            summary.add_metric([metric.labels[name] for name in spec.label_names],
                               metric.count or 0, metric.value)
        return summary
    family = _family(spec.name, spec.help, spec.type == "counter", spec.label_names)
    for metric in metrics:
        family.add_metric([metric.labels[name] for name in spec.label_names], metric.value)
    return family


def fresh_stats(relay: Relay, *, now: float, max_age_s: float) -> dict[str, list[ServiceMetric]]:
    """The latest stats of every service that is online and published them recently."""
    kept: dict[str, list[ServiceMetric]] = {}
    for name in SERVICES:
        latest = relay.stats(name)
        if latest is None or relay.service(name).state != "online":
            continue
        received, stats = latest
        if now - received <= max_age_s:
            kept[name] = stats.metrics
    return kept


def api_stats(relay: Relay) -> list[ServiceMetric]:
    """The api's own numbers, measured here (never sent over MQTT)."""
    return [
        ServiceMetric(name="minerwatch_api_websocket_clients", value=len(relay.subscribers)),
        ServiceMetric(name="minerwatch_api_websocket_dropped_frames_total",
                      value=relay.dropped_frames),
    ]


def scrape_families(relay: Relay, config: Config) -> list[Metric]:
    """Every family of one scrape, from the relay's state now."""
    now_ms = int(time.time() * 1000)
    views = miner_views(
        live_miners(relay.miner_payloads()),
        collector_online=relay.service("collector").state == "online", now_ms=now_ms,
        stale_after_ms=int(stale_after_s(config.collector.poll_interval_s) * 1000))
    stats = fresh_stats(relay, now=time.monotonic(),
                        max_age_s=STALE_INTERVALS * config.metrics.stats_interval_s)
    services = {name: relay.service(name).state for name in SERVICES}
    return [*miner_families(views), *service_families(services, stats, api_stats(relay))]


class Scrape(Collector):
    """The families of one scrape, taken when it is made (in the event loop, which alone
    changes the relay's state), for prometheus-client's encoders, which may then run in
    another thread: ``generate_latest(Scrape(relay, config))``."""

    def __init__(self, relay: Relay, config: Config) -> None:
        self.families = scrape_families(relay, config)

    def collect(self) -> Iterable[Metric]:
        return self.families
