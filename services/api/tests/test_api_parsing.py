"""The pure parts: query parameters, topic filters, client commands, payload decoding,
timestamps."""

from __future__ import annotations

import json

import pytest

from minerwatch.api.app import parameter_problems
from minerwatch.api.history import MAX_LIMIT, BadParameter, parse_window, ts_text
from minerwatch.api.relay import FilterError, Relay, Subscriber, check_filter, message_frame
from minerwatch.api.routes.ws import CommandError, parse_command
from minerwatch.shared.config import MqttConfig
from minerwatch.shared.db import ms_to_datetime
from minerwatch.shared.schemas import MinerInfo, Sample, encode, format_ts

MS_10H = 1795341600000  # 2026-11-22T10:00:00Z


def test_window_defaults_and_bounds() -> None:
    window = parse_window(None, None, None)
    assert (window.since_ms, window.until_ms, window.limit) == (None, None, 1000)
    window = parse_window("2026-11-22T10:00:00Z", "2026-11-22T12:00:00+02:00", MAX_LIMIT)
    assert window.since_ms == window.until_ms == MS_10H
    assert parse_window("2026-11-22T10:00:00", None, 1).since_ms == MS_10H  # naive is UTC
    # Sub-millisecond bounds round inwards.
    assert parse_window("2026-11-22T10:00:00.0001Z", None, 1).since_ms == MS_10H + 1
    assert parse_window(None, "2026-11-22T10:00:00.0009Z", 1).until_ms == MS_10H


@pytest.mark.parametrize(
    ("since", "until", "limit", "starts"),
    [
        ("soon", None, None, "since:"),
        (None, "2026-11-31T00:00:00Z", None, "until:"),
        ("2026-11-22T10:00:01Z", "2026-11-22T10:00:00Z", None, "since ("),
        (None, None, 0, "limit:"),
        (None, None, MAX_LIMIT + 1, "limit:"),
    ],
)
def test_window_rejects_bad_parameters(
    since: str | None, until: str | None, limit: int | None, starts: str
) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_window(since, until, limit)
    assert str(caught.value).startswith(starts)


def test_litestar_validation_details_become_one_line() -> None:
    extra = [{"message": "Expected `int` >= 1", "key": "limit", "source": "query"}]
    assert parameter_problems(extra, {"limit": "0"}) == ["limit: Expected int >= 1 (got '0')"]
    assert parameter_problems(None, {}) == []


@pytest.mark.parametrize(
    "text", ["mw/#", "mw", "mw/miners/+/sample", "mw/+/+/+", "mw/alerts/x/overheat"]
)
def test_filters_inside_the_base_are_accepted(text: str) -> None:
    assert str(check_filter("mw", text)) == text


@pytest.mark.parametrize(
    "text", ["#", "+/miners/#", "mwx/#", "other/mw/#", "$share/g/mw/#", "mw/#/x", "mw/a+", ""]
)
def test_filters_outside_the_base_or_invalid_are_refused(text: str) -> None:
    with pytest.raises(FilterError):
        check_filter("mw", text)


def test_commands() -> None:
    assert parse_command('{"subscribe": "mw/#"}') == ("subscribe", "mw/#")
    assert parse_command(b'{"unsubscribe": "mw/#"}') == ("unsubscribe", "mw/#")
    for bad in ['{"subscribe": "a", "unsubscribe": "b"}', "{}", "[]", '"mw/#"', "nope",
                '{"subscribe": null}', "x" * 5000]:
        with pytest.raises(CommandError):
            parse_command(bad)


def test_frames_carry_the_decoded_message() -> None:
    assert message_frame("mw/s", "online") == '{"topic":"mw/s","payload":"online"}'
    # A retained message deleted (empty payload) is relayed as an empty string.
    assert message_frame("mw/miners/a/info", None) == '{"topic":"mw/miners/a/info","payload":""}'
    info = MinerInfo(miner_id="a", driver="axeos", host="10.0.0.5", port=80)
    assert json.loads(message_frame("mw/miners/a/info", info)) == {
        "topic": "mw/miners/a/info",
        "payload": {"miner_id": "a", "driver": "axeos", "host": "10.0.0.5", "port": 80,
                    "make": None, "model": None, "firmware": None, "hostname": None,
                    "mac": None, "label": None}}


def test_only_decoded_messages_reach_subscribers_and_rejects_are_counted() -> None:
    relay = Relay(MqttConfig(base_topic="mw"))
    subscriber = relay.attach()
    relay.subscribe(subscriber, "mw/#")
    assert subscriber.backlog == 1  # the notice; nothing is cached yet
    good = encode(Sample(miner_id="a", ts="2026-11-22T10:00:00.000Z", hashrate_ths=1.5))
    for topic, payload in [
        ("mw/miners/a/sample", b"\xff\xfe"),  # not UTF-8
        ("mw/miners/a/sample", b'{"x": "\xed\xa0\x80"}'),  # a surrogate in a string
        ("mw/miners/a/sample", b"[" * 5000 + b"]" * 5000),
        ("mw/miners/a/sample", b"12.5"),
        ("mw/miners/b/sample", good),  # another miner's sample
        ("mw/elsewhere", b'{"x": 1}'),  # not a topic of the registry
        ("mw/services/api/status", b"maybe"),
    ]:
        relay.receive(topic, payload)
    assert subscriber.backlog == 1
    assert relay.retained == {}
    assert relay.rejects.total == 7
    assert set(relay.rejects.counts) == {"sample", "topic", "service"}
    relay.receive("mw/miners/a/sample", good)
    assert subscriber.backlog == 2
    assert list(relay.retained) == ["mw/miners/a/sample"]
    relay.rejects.close()


async def test_a_full_backlog_drops_its_oldest_frames_replays_included() -> None:
    subscriber = Subscriber(backlog_limit=3)
    # A replay counts against the backlog: it is cut to fit behind its notice.
    subscriber.push_subscription('{"subscribed":"f"}', [f"replay-{i}" for i in range(5)])
    assert subscriber.backlog == 3
    assert subscriber.dropped == 3
    assert subscriber.unread_replies == 1
    for i in range(2):
        subscriber.push(f"live-{i}")
    subscriber.push('{"error":"x"}', reply=True)  # replies are dropped like any frame
    subscriber.push("live-2")
    assert subscriber.dropped == 7
    assert [await subscriber.next_frame() for _ in range(3)] == [
        "live-1", '{"error":"x"}', "live-2"]
    assert subscriber.backlog == 0
    # The two replies dropped unread stay counted: the client never got them.
    assert subscriber.unread_replies == 1


def test_ts_text_formats_milliseconds_exactly_as_format_ts() -> None:
    # ts_text takes a shortcut for speed; it must agree with the schema's formatter
    # across day, leap-year and epoch boundaries, before 1970 included.
    edges = [0, 1, 999, 1000, 86_399_999, 86_400_000, -1, -86_400_001,
             951_782_400_000, 951_868_799_999, 1_795_341_600_123, 4_102_444_800_000]
    steady = range(1_795_000_000_000, 1_795_000_000_000 + 40 * 86_400_000, 3_599_999)
    for ms in [*edges, *steady]:
        assert ts_text(ms) == format_ts(ms_to_datetime(ms)), ms
