"""Topic names are the public interface: build and parse them in one place."""

from __future__ import annotations

import pytest

from minerwatch.shared.topics import (
    ParsedTopic,
    alert_topic,
    info_topic,
    is_miner_id,
    mac_miner_id,
    parse_topic,
    sample_topic,
    service_status_topic,
    slugify,
    status_topic,
)


def test_builders() -> None:
    assert sample_topic("mw", "aabbccddeeff") == "mw/miners/aabbccddeeff/sample"
    assert status_topic("mw", "m1") == "mw/miners/m1/status"
    assert info_topic("mw", "m1") == "mw/miners/m1/info"
    assert alert_topic("mw", "m1", "overheat") == "mw/alerts/m1/overheat"
    assert service_status_topic("mw", "store") == "mw/services/store/status"


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("mw/miners/m1/sample", ParsedTopic("sample", "m1")),
        ("mw/miners/m1/status", ParsedTopic("status", "m1")),
        ("mw/miners/m1/info", ParsedTopic("info", "m1")),
        ("mw/alerts/m1/overheat", ParsedTopic("alert", "m1", "overheat")),
        ("mw/services/store/status", ParsedTopic("service", None, "store")),
        ("mw/miners/M1/sample", None),  # ids are lowercase
        ("mw/miners/m1/sample/extra", None),
        ("mw/miners//sample", None),
        ("other/miners/m1/sample", None),
        ("mwx/miners/m1/sample", None),
        ("mw/alerts/m1/", None),
    ],
)
def test_parse(topic: str, expected: ParsedTopic | None) -> None:
    assert parse_topic("mw", topic) == expected


def test_ids() -> None:
    assert mac_miner_id("AA:BB:CC:DD:EE:FF") == "aabbccddeeff"
    assert mac_miner_id("aa-bb-cc-dd-ee-ff") == "aabbccddeeff"
    assert mac_miner_id("00:00:00:00:00:00") is None
    assert mac_miner_id("nonsense") is None
    assert slugify("10.0.0.5:4028") == "10-0-0-5-4028"
    assert slugify("Garage Bitaxe!") == "garage-bitaxe"
    assert slugify("///") == "miner"
    assert is_miner_id("garage-bitaxe_2")
    assert not is_miner_id("Garage")
    assert not is_miner_id("a/b")
    assert not is_miner_id("x" * 65)


def test_the_registry_names_every_topic_once() -> None:
    from minerwatch.shared.topics import SAMPLE, TOPICS

    assert [spec.name for spec in TOPICS] == ["sample", "status", "info", "label", "alert",
                                             "mute", "service", "stats", "command",
                                             "command_result", "reply", "tune"]
    assert [spec.filter("mw") for spec in TOPICS] == [
        "mw/miners/+/sample", "mw/miners/+/status", "mw/miners/+/info", "mw/miners/+/label",
        "mw/alerts/+/+", "mw/mutes/+", "mw/services/+/status", "mw/services/+/stats",
        "mw/miners/+/command", "mw/miners/+/command/result", "mw/replies/+",
        "mw/miners/+/tune"]
    assert SAMPLE.topic("mw", miner_id="s19") == "mw/miners/s19/sample"
    # Every state is retained at QoS 1; the periodic stats are neither (the next replaces
    # one); commands and their results are requests, not states.
    requests = {"stats", "command", "command_result", "reply"}
    assert all(spec.qos == 1 and spec.retained for spec in TOPICS if spec.name not in requests)
    assert [(spec.qos, spec.retained) for spec in TOPICS if spec.name in requests] == [
        (0, False), (1, False), (1, False), (1, False)]


def test_filter_matching_follows_mqtt() -> None:
    import pytest

    from minerwatch.shared.topics import FilterError, check_filter, matches

    cases = [
        ("mw/#", "mw", True), ("mw/#", "mw/miners/a/sample", True),
        ("mw/miners/+/sample", "mw/miners/a/sample", True),
        ("mw/miners/+/sample", "mw/miners/a/status", False),
        ("mw/miners/+", "mw/miners/a/sample", False), ("+/+", "mw/x", True),
        ("#", "$SYS/broker/uptime", False), ("+/broker/#", "$SYS/broker/uptime", False),
        ("$SYS/#", "$SYS/broker/uptime", True), ("mw/+", "mw/", True),
        ("mw/a", "mw/a/b", False),
    ]
    for topic_filter, topic, expected in cases:
        assert matches(topic_filter, topic) is expected, (topic_filter, topic)
    for bad in ("", "mw/#/x", "mw/a#", "mw/+x", "a\x00b"):
        with pytest.raises(FilterError):
            check_filter(bad)
