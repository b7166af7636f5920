"""Notifications through Apprise, delivered for real to an HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING

import pytest

from minerwatch.alerts.notify import Notifier
from minerwatch.shared.config import ConfigError, RuleConfig
from minerwatch.shared.schemas import AlertEvent

if TYPE_CHECKING:
    from .conftest import Receiver


def event(state: str = "firing", rule: str = "overheat") -> AlertEvent:
    return AlertEvent(miner_id="bitaxe-1", rule=rule, state=state,  # type: ignore[arg-type]
                      severity="warning", value=78.2, threshold=75.0,
                      message="temp_c 78.2 > 75 for 60 s", ts="2026-11-22T10:00:00.123Z")


def overheat(notify: list[str] | None = None) -> RuleConfig:
    return RuleConfig(name="overheat", field="temp_c", threshold=75, notify=notify or [])


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """Our own log lines (pytest also captures Apprise's, which the service never shows)."""
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("minerwatch") and r.levelno >= level]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_event_is_posted_to_the_global_and_the_rule_urls(receiver: Receiver) -> None:
    rule_url = receiver.url.replace("/hook", "/rule-hook")
    notifier = Notifier([receiver.url], [overheat([rule_url])])
    notifier.send(event())
    posts = [await receiver.next_post(), await receiver.next_post()]
    assert sorted(post.path for post in posts) == ["/hook", "/rule-hook"]
    for post in posts:
        payload = post.json()
        assert "temp_c 78.2 > 75 for 60 s" in payload["message"]
        assert "bitaxe-1" in payload["message"]
        assert payload["title"] == "[warning] bitaxe-1 overheat firing"
        assert payload["type"] == "warning"
    await notifier.drain(5)


async def test_resolved_event_is_a_success_notification(receiver: Receiver) -> None:
    notifier = Notifier([receiver.url], [overheat()])
    notifier.send(event("resolved"))
    payload = (await receiver.next_post()).json()
    assert payload["type"] == "success"
    assert payload["title"].endswith("resolved")
    await notifier.drain(5)


async def test_rule_without_urls_sends_nothing(receiver: Receiver) -> None:
    notifier = Notifier([], [overheat()])
    notifier.send(event())
    await notifier.drain(5)
    with pytest.raises(TimeoutError):
        await receiver.next_post(timeout=0.3)


async def test_refused_connection_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier([f"json://127.0.0.1:{closed_port()}/x"], [overheat()])
    with caplog.at_level(logging.INFO):
        notifier.send(event())
        await notifier.drain(5)
    lines = ours(caplog, logging.WARNING)
    assert len(lines) == 1
    assert lines[0].startswith("notification for bitaxe-1/overheat firing failed (1 of 1): JSON")
    assert "\n" not in lines[0]


async def test_hung_endpoint_never_blocks_the_caller(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hang = True
    notifier = Notifier([receiver.url], [overheat()], timeout_s=0.5)
    started = time.monotonic()
    notifier.send(event())
    assert time.monotonic() - started < 0.1
    await asyncio.sleep(0)  # the loop stays free while the notification waits
    with caplog.at_level(logging.WARNING):
        await notifier.drain(5)
    assert time.monotonic() - started < 3
    [line] = ours(caplog, logging.WARNING)
    assert line.startswith("notification for bitaxe-1/overheat firing")


def test_unusable_urls_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        Notifier(["json://127.0.0.1:1/x", "nosuchscheme://token@host"], [overheat()])
    assert str(err.value) == (
        "alerts.notify[1]: not a usable Apprise URL (scheme 'nosuchscheme')")
    with pytest.raises(ConfigError, match=r"^alerts.rules\[0\].notify\[0\]: "):
        Notifier([], [overheat(["garbage"])])
