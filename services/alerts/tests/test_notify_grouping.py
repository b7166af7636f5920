"""Grouping and per-target severity, checked on what a real HTTP receiver got."""

from __future__ import annotations

from typing import TYPE_CHECKING

from minerwatch.alerts.notify import Notifier

from .test_notify import PUBLIC, alerts, delivered, event

if TYPE_CHECKING:
    from .conftest import Post, Receiver

FLEET = [("garage", "Garage Bitaxe"), ("s19-2", None), ("bitaxe-3", "Attic"),
         ("bitaxe-4", None), ("bitaxe-5", "Shed Bitaxe")]


def by_path(posts: list[Post]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for post in posts:
        found.setdefault(post.path, []).append(post.json())
    return found


async def test_five_miners_offline_at_once_are_one_notification(receiver: Receiver) -> None:
    second = receiver.url.replace("/hook", "/second")
    notifier = Notifier(alerts(notify=[receiver.url, second], group_s=60), public_url=PUBLIC)
    for miner_id, label in FLEET:
        notifier.send(event(rule="offline", miner_id=miner_id, label=label,
                            severity="critical"))
    assert delivered(receiver) == []  # held for the window
    await notifier.drain(5)  # ends the window now
    got = by_path(delivered(receiver))
    assert sorted(got) == ["/hook", "/second"]
    for [payload] in got.values():
        assert payload["title"] == "[critical] 5 miners offline"
        lines = payload["message"].split("\n")
        assert lines[0] == "5 miners offline: Garage Bitaxe, s19-2, Attic, bitaxe-4, Shed Bitaxe"
        assert lines[1] == ("- Garage Bitaxe: temp_c 78.2 °C > 70 °C for 60 s "
                            "http://minerwatch.lan:8000/miners/garage")
        for line, (miner_id, _) in zip(lines[1:6], FLEET, strict=True):
            assert line.endswith(f"/miners/{miner_id}")
        assert lines[-1] == "All miners: http://minerwatch.lan:8000/"


async def test_past_ten_miners_the_rest_are_counted(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url], group_s=60), public_url=None)
    for number in range(13):
        notifier.send(event(rule="stalled", miner_id=f"m{number:02d}", label=None))
    await notifier.drain(5)
    [post] = delivered(receiver)
    payload = post.json()
    assert payload["title"] == "[warning] 13 miners stalled"
    first, *rest = payload["message"].split("\n")
    names = ", ".join(f"m{number:02d}" for number in range(10))
    assert first == f"13 miners stalled: {names} and 3 more"
    assert len(rest) == 11  # ten miners, then the count
    assert rest[-1] == "- and 3 more"
    assert "m10" not in payload["message"]


async def test_rules_and_states_are_grouped_apart(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url], group_s=60), public_url=None)
    notifier.send(event(rule="offline", miner_id="a", label=None, severity="critical"))
    notifier.send(event(rule="offline", miner_id="b", label=None, severity="critical"))
    notifier.send(event(rule="fan_failure", miner_id="c", label=None, severity="critical"))
    notifier.send(event("resolved", rule="offline", miner_id="d", label=None,
                        severity="critical"))
    await notifier.drain(5)
    titles = sorted(post.json()["title"] for post in delivered(receiver))
    assert titles == ["[critical] 2 miners offline", "[critical] c fan failure",
                      "[resolved] d offline"]


async def test_events_after_the_window_go_out_on_their_own(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url], group_s=0.3), public_url=None)
    notifier.send(event(rule="offline", miner_id="a", label=None, severity="critical"))
    notifier.send(event(rule="offline", miner_id="b", label=None, severity="critical"))
    first = (await receiver.next_post()).json()  # sent when the window ends, not drained
    assert first["title"] == "[critical] 2 miners offline"
    notifier.send(event(rule="offline", miner_id="c", label="Third", severity="critical"))
    second = (await receiver.next_post()).json()
    assert second["title"] == "[critical] Third offline"
    await notifier.drain(5)
    assert delivered(receiver) == []


async def test_a_miner_twice_in_one_window_is_named_once(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url], group_s=60), public_url=None)
    notifier.send(event(rule="best_difficulty", state="event", severity="info"))
    notifier.send(event(rule="best_difficulty", state="event", severity="info"))
    await notifier.drain(5)
    [post] = delivered(receiver)
    assert post.json()["title"] == "[info] Garage Bitaxe new best difficulty"


async def test_each_target_gets_the_severities_it_asked_for(receiver: Receiver) -> None:
    critical_url = receiver.url.replace("/hook", "/critical")
    notifier = Notifier(alerts(
        notify=[receiver.url, {"url": critical_url, "min_severity": "critical"}],
        group_s=60), public_url=None)
    # One rule, two severities (as a per-model override makes them).
    notifier.send(event(rule="temp_high", miner_id="a", label=None, severity="warning"))
    notifier.send(event(rule="temp_high", miner_id="b", label=None, severity="critical"))
    notifier.send(event(rule="temp_high", miner_id="c", label=None, severity="critical"))
    notifier.send(event(rule="not_hashing", miner_id="d", label=None, severity="warning"))
    await notifier.drain(5)
    got = by_path(delivered(receiver))
    assert sorted(p["title"] for p in got["/hook"]) == [
        "[critical] 3 miners temperature high", "[warning] d not hashing"]
    [critical] = got["/critical"]
    assert critical["title"] == "[critical] 2 miners temperature high"
    assert critical["message"].startswith("2 miners temperature high: b, c\n")


async def test_a_resolve_goes_where_its_firing_went(receiver: Receiver) -> None:
    critical_url = receiver.url.replace("/hook", "/critical")
    warning_url = receiver.url.replace("/hook", "/warning")
    notifier = Notifier(alerts(notify=[
        {"url": critical_url, "min_severity": "critical"},
        {"url": warning_url, "min_severity": "warning"}]), public_url=None)
    notifier.send(event(rule="offline", miner_id="a", label=None, severity="critical"))
    await notifier.drain(5)
    assert sorted(post.path for post in delivered(receiver)) == ["/critical", "/warning"]
    # The resolve says info (its severity changed since): it still follows the firing.
    notifier.send(event("resolved", rule="offline", miner_id="a", label=None,
                        severity="info"))
    await notifier.drain(5)
    assert sorted(post.path for post in delivered(receiver)) == ["/critical", "/warning"]
    # A resolve of a firing never seen here (notified before a restart): by its severity.
    notifier.send(event("resolved", rule="offline", miner_id="b", label=None,
                        severity="warning"))
    await notifier.drain(5)
    assert [post.path for post in delivered(receiver)] == ["/warning"]
    # A firing held back by the filter everywhere: its resolve goes nowhere either.
    notifier.send(event(rule="stalled", miner_id="c", label=None, severity="info"))
    notifier.send(event("resolved", rule="stalled", miner_id="c", label=None,
                        severity="info"))
    await notifier.drain(5)
    assert delivered(receiver) == []


async def test_a_group_of_resolves_reads_as_resolved(receiver: Receiver) -> None:
    notifier = Notifier(alerts(notify=[receiver.url], group_s=60), public_url=PUBLIC)
    for miner_id, label in FLEET[:3]:
        notifier.send(event("resolved", rule="offline", miner_id=miner_id, label=label,
                            severity="critical"))
    await notifier.drain(5)
    [post] = delivered(receiver)
    payload = post.json()
    assert payload["title"] == "[resolved] 3 miners offline"
    assert payload["type"] == "success"
    assert payload["message"].startswith(
        "3 miners offline resolved: Garage Bitaxe, s19-2, Attic\n")


async def test_a_resolve_never_comes_before_its_firing(receiver: Receiver) -> None:
    critical_url = receiver.url.replace("/hook", "/critical")
    notifier = Notifier(alerts(notify=[{"url": critical_url, "min_severity": "critical"}],
                               group_s=60), public_url=None)
    # A resolve window is already open (b) when a fires and resolves within the window.
    notifier.send(event("resolved", rule="offline", miner_id="b", label=None,
                        severity="critical"))
    notifier.send(event(rule="offline", miner_id="a", label=None, severity="critical"))
    notifier.send(event("resolved", rule="offline", miner_id="a", label=None,
                        severity="info"))
    first = (await receiver.next_post()).json()  # the firing, sent at once
    assert first["title"] == "[critical] a offline"
    await notifier.drain(5)
    [resolves] = [post.json() for post in delivered(receiver)]
    # a's resolve followed its firing to the critical-only target despite its severity.
    assert resolves["title"] == "[resolved] 2 miners offline"
    assert resolves["message"].startswith("2 miners offline resolved: b, a\n")
