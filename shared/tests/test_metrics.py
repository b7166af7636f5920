"""The registry of the services' own metrics (``metrics``) and their publishing beside a
session (``stats``): what a stats payload may expose, and a StatsPublisher on a real
Mosquitto that publishes at once and every interval, QoS 0 and not retained, survives a
reading that fails, and stops with its session."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from minerwatch.shared import metrics
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.messages import Received, Rejected, decode_message
from minerwatch.shared.mqtt import MqttClient, MqttLink
from minerwatch.shared.schemas import ServiceMetric, ServiceStats
from minerwatch.shared.stats import StatsPublisher


def m(name: str, value: float, count: int | None = None, **labels: str) -> ServiceMetric:
    return ServiceMetric(name=name, value=value, labels=labels, count=count)


def test_the_registry_names_each_metric_once_with_bounded_labels() -> None:
    names = [spec.name for spec in metrics.SERVICE_METRICS]
    assert len(names) == len(set(names)) == len(metrics.BY_NAME)
    assert {spec.publisher for spec in metrics.SERVICE_METRICS} == set(metrics.SERVICES)
    for spec in metrics.SERVICE_METRICS:
        assert spec.name.startswith(f"minerwatch_{spec.publisher}_") or (
            spec.name == "minerwatch_service_up"), spec.name
        assert (spec.type == "counter") == spec.name.endswith("_total"), spec.name
        assert spec.help and not spec.help[0].islower(), spec.name
        for _label, values in spec.labels:
            assert values and len(values) == len(set(values)), spec.name


def test_admitted_keeps_only_what_the_registry_gives_the_service() -> None:
    good = [m("minerwatch_collector_polls_total", 10),
            m("minerwatch_collector_poll_failures_total", 2, reason="timeout"),
            m("minerwatch_collector_poll_failures_total", 1, reason="refused"),
            m("minerwatch_collector_poll_lateness_seconds", 0.5, count=10),
            m("minerwatch_collector_miners", -0.0)]
    bad = [m("minerwatch_store_messages_total", 1),  # another service's
           m("minerwatch_unknown_total", 1),
           m("minerwatch_collector_poll_failures_total", 1),  # its label missing
           m("minerwatch_collector_poll_failures_total", 1, reason="nope"),
           m("minerwatch_collector_polls_total", 1, extra="x"),
           m("minerwatch_collector_polls_total", -1),
           m("minerwatch_collector_poll_lateness_seconds", 0.5),  # no count
           m("minerwatch_collector_outbox_messages", float("nan")),
           m("minerwatch_collector_outbox_messages", float("inf")),
           m("minerwatch_collector_poll_failures_total", 9, reason="timeout")]  # a duplicate
    assert metrics.admitted("collector", good + bad) == good
    assert metrics.admitted("store", good) == []


def test_stat_refuses_what_the_registry_would_drop() -> None:
    assert metrics.stat("minerwatch_alerts_firing", 3) == m("minerwatch_alerts_firing", 3.0)
    for name, value, count, labels in (
            ("minerwatch_alerts_nope", 1.0, None, {}),
            ("minerwatch_collector_poll_failures_total", 1.0, None, {"reason": "x"}),
            ("minerwatch_store_batch_commit_seconds", 1.0, None, {})):
        with pytest.raises(ValueError):
            metrics.stat(name, value, count=count, **labels)


def test_decoding_bounds_a_hostile_stats_payload() -> None:
    topic = "mw/services/alerts/stats"
    ok = b'{"service": "alerts", "ts": "2026-01-01T00:00:00.000Z", "metrics": ['
    assert isinstance(decode_message("mw", topic, ok + b"]}"), Received)
    refused = {
        "too many": ok + b",".join([b'{"name": "minerwatch_alerts_firing", "value": 1}'] * 257)
        + b"]}",
        "label too long": ok + b'{"name": "a", "value": 1, "labels": {"a": "'
        + b"x" * 129 + b'"}}]}',
        "too many labels": ok + b'{"name": "a", "value": 1, "labels": {'
        + b",".join(b'"l%d": "v"' % n for n in range(9)) + b"}}]}",
        "bad name": ok + b'{"name": "a b", "value": 1}]}',
        "value text": ok + b'{"name": "minerwatch_alerts_firing", "value": "1"}]}',
        "count negative": ok + b'{"name": "a", "value": 1, "count": -1}]}',
        "other service": b'{"service": "store", "ts": "2026-01-01T00:00:00.000Z", '
        b'"metrics": []}',
        "bad ts": b'{"service": "alerts", "ts": "2026-02-30T00:00:00.000Z", "metrics": []}',
    }
    for what, payload in refused.items():
        assert isinstance(decode_message("mw", topic, payload), Rejected), what


async def test_a_publisher_publishes_beside_its_session_and_stops_with_it(
        broker, base_topic: str) -> None:  # type: ignore[no-untyped-def]
    reads = 0

    def read() -> list[ServiceMetric]:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise RuntimeError("a bug in reading the stats")
        return [metrics.stat("minerwatch_alerts_evaluations_total", reads)]

    stats = StatsPublisher(base_topic, "alerts", 0.1, read)
    done = asyncio.Event()
    sessions: list[MqttClient] = []

    async def session(client: MqttClient) -> None:
        sessions.append(client)
        await done.wait()

    link = MqttLink(MqttConfig(url=broker.url, base_topic=base_topic), "alerts")
    received: list[tuple[ServiceStats, bool, int]] = []
    async with aiomqtt.Client(broker.host, broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{base_topic}/services/alerts/stats", qos=1)
        running = asyncio.create_task(link.run(stats.around(session)))
        async with asyncio.timeout(10):
            async for message in client.messages:
                decoded = decode_message(base_topic, str(message.topic),
                                         bytes(message.payload))  # type: ignore[arg-type]
                assert isinstance(decoded, Received), decoded
                assert isinstance(decoded.message, ServiceStats)
                received.append((decoded.message, message.retain, message.qos))
                if len(received) == 3:
                    break
        done.set()
        await asyncio.wait_for(running, 5)  # the session returned: the link stops too
        published = stats.published
        await asyncio.sleep(0.3)
    assert stats.published == published, "stats went on after the session ended"
    values = [s.metrics[0].value for s, _, _ in received]
    assert values == [1.0, 3.0, 4.0], values  # the second reading failed: skipped
    assert all(not retained and qos == 0 for _, retained, qos in received)
    assert {s.service for s, _, _ in received} == {"alerts"}
    assert len(sessions) == 1
