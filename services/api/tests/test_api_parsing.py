"""The pure parts: query parameters, topic filters, client commands, payload decoding,
timestamps."""

from __future__ import annotations

import pytest

from minerwatch.api.app import parameter_problems
from minerwatch.api.history import MAX_LIMIT, BadParameter, parse_window, ts_text
from minerwatch.api.relay import FilterError, Subscriber, check_filter, message_frame
from minerwatch.api.routes.ws import CommandError, parse_command
from minerwatch.shared.db import ms_to_datetime
from minerwatch.shared.schemas import format_ts

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


def test_payloads_are_json_when_they_can_be() -> None:
    assert message_frame("mw/a", b'{"x": 1}') == '{"topic":"mw/a","payload":{"x":1}}'
    assert message_frame("mw/s", b"online") == '{"topic":"mw/s","payload":"online"}'
    assert message_frame("mw/n", b"12.5") == '{"topic":"mw/n","payload":12.5}'
    assert message_frame("mw/b", b"\xff\xfe") == '{"topic":"mw/b","payload":"\ufffd\ufffd"}'


async def test_a_full_backlog_drops_its_oldest_frames() -> None:
    subscriber = Subscriber(backlog_limit=3)
    for i in range(5):  # the replay may exceed the limit: it is never cut short
        subscriber.push(f"replay-{i}", droppable=False)
    assert subscriber.backlog == 5
    for i in range(4):
        subscriber.push(f"live-{i}")
    assert subscriber.dropped == 4
    assert [await subscriber.next_frame() for _ in range(5)] == [
        "replay-4", "live-0", "live-1", "live-2", "live-3"]
    assert subscriber.backlog == 0


def test_ts_text_formats_milliseconds_exactly_as_format_ts() -> None:
    # ts_text takes a shortcut for speed; it must agree with the schema's formatter
    # across day, leap-year and epoch boundaries, before 1970 included.
    edges = [0, 1, 999, 1000, 86_399_999, 86_400_000, -1, -86_400_001,
             951_782_400_000, 951_868_799_999, 1_795_341_600_123, 4_102_444_800_000]
    steady = range(1_795_000_000_000, 1_795_000_000_000 + 40 * 86_400_000, 3_599_999)
    for ms in [*edges, *steady]:
        assert ts_text(ms) == format_ts(ms_to_datetime(ms)), ms
