"""Notifications through Apprise, delivered for real to an HTTP receiver on 127.0.0.1:
targets, text, links, failures and config checks (grouping: test_notify_grouping)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from minerwatch.alerts.notify import Notifier, scrub, shown_url
from minerwatch.shared.config import AlertsConfig, ConfigError
from minerwatch.shared.schemas import AlertEvent

if TYPE_CHECKING:
    from .conftest import Post, Receiver

PUBLIC = "http://minerwatch.lan:8000"


def alerts(**raw: Any) -> AlertsConfig:
    """An ``[alerts]`` table decoded as from the config file (group_s 0 unless given)."""
    return msgspec.convert({"group_s": 0, **raw}, AlertsConfig)


def event(state: str = "firing", rule: str = "temp_high", *, miner_id: str = "bitaxe-1",
          label: str | None = "Garage Bitaxe", severity: str = "warning",
          muted: bool = False) -> AlertEvent:
    return AlertEvent(miner_id=miner_id, rule=rule, state=state,  # type: ignore[arg-type]
                      severity=severity, value=78.2, threshold=70.0,  # type: ignore[arg-type]
                      message="temp_c 78.2 °C > 70 °C for 60 s", ts="2026-11-22T10:00:00.123Z",
                      label=label, muted=muted)


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """Our own log lines (pytest also captures Apprise's, which the service never shows)."""
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("minerwatch") and r.levelno >= level]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivered(receiver: Receiver) -> list[Post]:
    """Everything the receiver got so far (after ``drain``, every delivery has arrived:
    the receiver records a post before it answers)."""
    posts = []
    while not receiver.posts.empty():
        posts.append(receiver.posts.get_nowait())
    return posts


async def test_event_goes_to_the_global_and_the_rule_urls(receiver: Receiver) -> None:
    rule_url = receiver.url.replace("/hook", "/rule-hook")
    notifier = Notifier(alerts(notify=[receiver.url], temp_high={"notify": [rule_url]}),
                        public_url=PUBLIC)
    notifier.send(event())
    await notifier.drain(5)
    posts = delivered(receiver)
    assert sorted(post.path for post in posts) == ["/hook", "/rule-hook"]
    for post in posts:
        payload = post.json()
        assert payload["title"] == "[warning] Garage Bitaxe temperature high"
        assert payload["message"] == (
            "Garage Bitaxe: temp_c 78.2 °C > 70 °C for 60 s\n"
            "http://minerwatch.lan:8000/miners/bitaxe-1")
        assert payload["type"] == "warning"


async def test_a_url_listed_globally_and_for_the_rule_gets_one_notification(
    receiver: Receiver,
) -> None:
    notifier = Notifier(alerts(notify=[receiver.url], temp_high={"notify": [receiver.url]}),
                        public_url=None)
    notifier.send(event())
    await notifier.drain(5)
    assert len(delivered(receiver)) == 1


async def test_free_rules_get_their_own_urls_and_the_global_ones(receiver: Receiver) -> None:
    rule_url = receiver.url.replace("/hook", "/free")
    config = alerts(notify=[receiver.url], rules=[
        {"name": "hot_board", "field": "temp_c", "threshold": 80, "notify": [rule_url]}])
    notifier = Notifier(config, public_url=None)
    notifier.send(event(rule="hot_board"))
    notifier.send(event(rule="offline", miner_id="s19-2", label=None, severity="critical"))
    await notifier.drain(5)
    got = sorted((post.path, post.json()["title"]) for post in delivered(receiver))
    assert got == [("/free", "[warning] Garage Bitaxe hot board"),
                   ("/hook", "[critical] s19-2 offline"),
                   ("/hook", "[warning] Garage Bitaxe hot board")]


async def test_without_public_url_or_label_the_id_names_the_miner(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url]), public_url=None)
    notifier.send(event(label=None))
    await notifier.drain(5)
    [post] = delivered(receiver)
    assert post.json()["title"] == "[warning] bitaxe-1 temperature high"
    assert post.json()["message"] == "bitaxe-1: temp_c 78.2 °C > 70 °C for 60 s"


async def test_service_down_links_to_the_fleet_page(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url]), public_url=PUBLIC)
    notifier.send(event(rule="service_down", miner_id="minerwatch-collector", label=None,
                        severity="critical"))
    await notifier.drain(5)
    payload = delivered(receiver)[0].json()
    assert payload["title"] == "[critical] minerwatch-collector down"
    assert payload["message"].endswith("\nhttp://minerwatch.lan:8000/")
    assert payload["type"] == "failure"


async def test_resolved_event_is_a_success_notification(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url]), public_url=None)
    notifier.send(event("resolved"))
    await notifier.drain(5)
    payload = delivered(receiver)[0].json()
    assert payload["type"] == "success"
    assert payload["title"] == "[resolved] Garage Bitaxe temperature high"


async def test_muted_events_and_rules_without_urls_send_nothing(receiver: Receiver) -> None:
    notifier = Notifier(alerts(temp_high={"notify": [receiver.url]}), public_url=None)
    notifier.send(event(muted=True))
    notifier.send(event(rule="offline"))  # no URL anywhere for offline
    await notifier.drain(5)
    assert delivered(receiver) == []
    notifier.send(event())  # the same alert unmuted does go out
    await notifier.drain(5)
    assert len(delivered(receiver)) == 1


async def test_refused_connection_is_one_log_line_without_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    notifier = Notifier(alerts(notify=[f"json://user:s3cret-t0ken@127.0.0.1:{port}/x"]),
                        public_url=None)
    with caplog.at_level(logging.INFO):
        notifier.send(event())
        await notifier.drain(5)
    [line] = ours(caplog, logging.WARNING)
    assert line.startswith("notification for bitaxe-1/temp_high firing failed (1 of 1): JSON")
    assert "\n" not in line
    assert "s3cret" not in line
    assert str(port) not in line


async def test_one_failing_target_does_not_stop_the_others(
    receiver: Receiver, caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier(alerts(notify=[receiver.url, f"json://127.0.0.1:{closed_port()}/"]),
                        public_url=None)
    with caplog.at_level(logging.WARNING):
        notifier.send(event())
        await notifier.drain(5)
    assert len(delivered(receiver)) == 1
    [line] = ours(caplog, logging.WARNING)
    assert "failed (1 of 2)" in line


async def test_hung_endpoint_never_blocks_the_caller(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hang = True
    notifier = Notifier(alerts(notify=[receiver.url]), public_url=None, timeout_s=0.5)
    notifier.send(event())  # returns with the delivery still to come
    assert delivered(receiver) == []
    await asyncio.sleep(0.2)  # the loop stays free while the notification waits
    with caplog.at_level(logging.WARNING):
        await notifier.drain(5)
    [line] = ours(caplog, logging.WARNING)
    assert line.startswith("notification for bitaxe-1/temp_high firing failed (1 of 1)")


def test_unusable_urls_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        Notifier(alerts(notify=["json://127.0.0.1:1/x", "nosuchscheme://token@host"]),
                 public_url=None)
    assert str(err.value) == (
        "alerts.notify[1]: not a usable Apprise URL (scheme 'nosuchscheme')")
    with pytest.raises(ConfigError, match=r"^alerts\.notify\[0\]\.url: "):
        Notifier(alerts(notify=[{"url": "garbage", "min_severity": "critical"}]),
                 public_url=None)
    with pytest.raises(ConfigError, match=r"^alerts\.offline\.notify\[0\]: "):
        Notifier(alerts(offline={"notify": ["garbage"]}), public_url=None)
    with pytest.raises(ConfigError, match=r"^alerts\.rules\[0\]\.notify\[1\]: "):
        Notifier(alerts(rules=[{"name": "x", "field": "temp_c", "threshold": 1,
                                "notify": ["json://127.0.0.1:1/", "garbage"]}]),
                 public_url=None)


def test_urls_are_shown_as_scheme_and_host_without_secrets() -> None:
    assert shown_url("json://user:pw@127.0.0.1:8080/path?x=1") == "json://127.0.0.1"
    # Telegram's "host" is the bot token: Apprise masks it, and so do we.
    telegram = "tgram://123456789:AABBCCDDEEFFgghhiijj/12345"
    assert "AABBCC" not in shown_url(telegram)
    assert "123456789" not in shown_url(telegram)
    assert shown_url(telegram).startswith("tgram://")
    assert scrub("failed for 123456789 with AABBCCDDEEFFgghhiijj", telegram) == (
        "failed for *** with ***")
