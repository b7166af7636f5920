"""Notifications through Apprise: alert events, grouped, to the targets that want them.

Targets: the global ``alerts.notify`` (each with a ``min_severity``) plus each rule's own
``notify`` URLs (every severity), one target per URL. A firing or one-off event goes to the
targets whose minimum it reaches; a resolve goes where its firing went.

Events of one (rule, state) arriving within ``alerts.group_s`` seconds of the first go out
as one notification per target naming every miner ("5 miners offline: ..."); a single
event reads on its own ("[critical] Garage Bitaxe offline"). Miners are named by their
label, else their id, and linked to ``{public_url}/miners/{id}`` when ``api.public_url``
is set.

Delivery runs in background tasks with a time limit, so a slow or dead endpoint never holds
up rule evaluation; a failure is one log line (without the URL, which often holds a token).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import apprise

from minerwatch.shared.config import BUILTIN_RULES, AlertsConfig, ConfigError
from minerwatch.shared.errors import one_line
from minerwatch.shared.schemas import SEVERITIES, AlertEvent, Severity

log = logging.getLogger("minerwatch.alerts.notify")

#: Miners named in a group's notification; the rest are counted ("and 3 more").
MAX_NAMED = 10
#: Events one group holds; past it they are only counted (a whole fleet going offline at
#: once is one notification either way).
MAX_GROUP_EVENTS = 1000
#: Firing alerts whose targets are remembered, so their resolve goes to the same ones.
MAX_REMEMBERED = 100_000

#: How each built-in rule reads after a miner's name; free rules read as their name.
PHRASES = {
    "offline": "offline",
    "not_hashing": "not hashing",
    "hashrate_low": "hashrate low",
    "stalled": "stalled",
    "fan_failure": "fan failure",
    "rejects_high": "rejected shares high",
    "pool_fallback": "pool fallback",
    "temp_high": "temperature high",
    "vr_temp_high": "VR temperature high",
    "best_difficulty": "new best difficulty",
    "block_found": "found a block",
    "service_down": "down",
}
#: The rule whose "miners" are minerwatch's own services (``minerwatch-<service>``).
SERVICE_RULE = "service_down"

_FIRING_TYPES = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "critical": apprise.NotifyType.FAILURE,
}


# --- targets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One Apprise URL, the least severity it is sent, and the config keys naming it."""

    url: str
    min_severity: Severity = "info"
    keys: tuple[str, ...] = ()

    def wants(self, severity: Severity) -> bool:
        return SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)


def is_apprise_url(url: str) -> bool:
    return bool(apprise.Apprise().add(url))


def check_url(url: str, key: str) -> None:
    """ConfigError naming ``key`` when Apprise cannot use ``url``."""
    if not is_apprise_url(url):
        scheme = urlsplit(url).scheme or url.partition(":")[0]
        raise ConfigError(f"{key}: not a usable Apprise URL (scheme {scheme!r})")


def check_urls(urls: Sequence[str], key: str) -> None:
    """ConfigError naming ``key[i]`` for the first URL Apprise cannot use."""
    for index, url in enumerate(urls):
        check_url(url, f"{key}[{index}]")


def global_targets(alerts: AlertsConfig) -> list[Target]:
    """``alerts.notify`` as targets, each URL checked; one target per distinct URL."""
    found: dict[str, Target] = {}
    for index, (item, target) in enumerate(zip(alerts.notify, alerts.targets(), strict=True)):
        key = f"alerts.notify[{index}]" + ("" if isinstance(item, str) else ".url")
        check_url(target.url, key)
        known = found.get(target.url)
        if known is None:
            found[target.url] = Target(target.url, target.min_severity, (key,))
        else:  # listed twice: the lower minimum wins, one delivery
            least = min(known.min_severity, target.min_severity, key=SEVERITIES.index)
            found[target.url] = Target(target.url, least, (*known.keys, key))
    return list(found.values())


def rule_urls(alerts: AlertsConfig) -> dict[str, list[tuple[str, str]]]:
    """Each rule's own URLs with their config keys, checked: built-in tables, then
    ``[[alerts.rules]]``."""
    own: dict[str, list[tuple[str, str]]] = {}
    for name in BUILTIN_RULES:
        for index, url in enumerate(alerts.builtin(name).notify):
            key = f"alerts.{name}.notify[{index}]"
            check_url(url, key)
            own.setdefault(name, []).append((url, key))
    for number, rule in enumerate(alerts.rules):
        for index, url in enumerate(rule.notify):
            key = f"alerts.rules[{number}].notify[{index}]"
            check_url(url, key)
            own.setdefault(rule.name, []).append((url, key))
    return own


def merge_targets(own: Iterable[tuple[str, str]], shared: Sequence[Target]) -> list[Target]:
    """A rule's own URLs (every severity) and then the global targets, each URL once."""
    found: dict[str, Target] = {}
    for url, key in own:
        known = found.get(url)
        found[url] = Target(url, "info", (*known.keys, key) if known else (key,))
    for target in shared:
        known = found.get(target.url)
        if known is None:
            found[target.url] = target
        else:  # the rule asked for this URL itself: it gets every severity
            found[target.url] = Target(known.url, "info", (*known.keys, *target.keys))
    return list(found.values())


def shown_url(url: str) -> str:
    """``url`` as it may be printed: scheme and host only, with the host masked where
    Apprise counts it a secret (a Telegram bot token, a webhook id)."""
    server = apprise.Apprise()
    if not server.add(url):
        return urlsplit(url).scheme + "://?"
    private = urlsplit(server[0].url(privacy=True))  # type: ignore[no-untyped-call]
    return f"{private.scheme}://{private.hostname or ''}"


def secrets(url: str) -> list[str]:
    """Parts of ``url`` that may be tokens, to blank out of a reason printed for it:
    user, password, long path segments and query values, and the host (with what follows
    its colon: a Telegram bot token) where Apprise masks it."""
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or ""]
        found += [segment for segment in parts.path.split("/") if len(segment) >= 8]
        found += [value for _, value in parse_qsl(parts.query) if len(value) >= 8]
        host = parts.netloc.rpartition("@")[2]
        if parts.hostname and parts.hostname not in shown_url(url):
            found += [host, *host.split(":")]
    except ValueError:
        return []
    return sorted({part for part in found if part}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    for part in secrets(url):
        text = text.replace(part, "***")
    return text


# --- text ---------------------------------------------------------------------------------


def name(event: AlertEvent) -> str:
    """How a person knows the miner: its label, else its id."""
    return event.label or event.miner_id


def phrase(rule: str) -> str:
    return PHRASES.get(rule, rule.replace("_", " "))


def noun(rule: str, count: int) -> str:
    word = "service" if rule == SERVICE_RULE else "miner"
    return word if count == 1 else f"{word}s"


def link(public_url: str | None, event: AlertEvent) -> str | None:
    """The page of the miner (the fleet page for a minerwatch service), if there is one."""
    if public_url is None:
        return None
    if event.rule == SERVICE_RULE:
        return f"{public_url}/"
    return f"{public_url}/miners/{event.miner_id}"


def worst(events: Sequence[AlertEvent]) -> Severity:
    return max((event.severity for event in events), key=SEVERITIES.index)


def described(event: AlertEvent) -> str:
    """``Garage Bitaxe: chip 72 °C > 70 °C for 65 s``: the event's message, which names
    the miner itself when the alerts service wrote it, else with the name put first."""
    who = name(event)
    return event.message if event.message.startswith(f"{who}:") else f"{who}: {event.message}"


def title(events: Sequence[AlertEvent], extra: int = 0) -> str:
    """``[critical] Garage Bitaxe offline``, ``[critical] 5 miners offline``,
    ``[resolved] ...`` for resolves."""
    first = events[0]
    count = len(events) + extra
    tag = "resolved" if first.state == "resolved" else worst(events)
    subject = name(first) if count == 1 else f"{count} {noun(first.rule, count)}"
    return f"[{tag}] {subject} {phrase(first.rule)}"


def body(events: Sequence[AlertEvent], extra: int = 0, public_url: str | None = None) -> str:
    """One event: its message and link. A group: a line naming the miners (at most
    ``MAX_NAMED``, then "and N more"), a line per named miner, and the fleet page."""
    first = events[0]
    count = len(events) + extra
    if count == 1:
        where = link(public_url, first)
        return described(first) + (f"\n{where}" if where else "")
    named = events[:MAX_NAMED]
    rest = count - len(named)
    more = f" and {rest} more" if rest else ""
    state = " resolved" if first.state == "resolved" else ""
    lines = [f"{count} {noun(first.rule, count)} {phrase(first.rule)}{state}: "
             + ", ".join(name(event) for event in named) + more]
    for event in named:
        where = link(public_url, event)
        lines.append(f"- {described(event)}" + (f" {where}" if where else ""))
    if rest:
        lines.append(f"- and {rest} more")
    if public_url is not None:
        lines.append(f"All miners: {public_url}/")
    return "\n".join(lines)


def notify_type(events: Sequence[AlertEvent]) -> apprise.NotifyType:
    if events[0].state == "resolved":
        return apprise.NotifyType.SUCCESS
    return _FIRING_TYPES[worst(events)]


# --- delivery -----------------------------------------------------------------------------


@dataclass
class Group:
    """Events of one (rule, state) waiting for the end of their window."""

    events: dict[str, AlertEvent] = field(default_factory=dict)  # by miner id: latest wins
    extra: Counter[Severity] = field(default_factory=Counter)  # past MAX_GROUP_EVENTS
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What ``Notifier.test`` got from one target: ``error`` None when it was delivered."""

    shown: str
    keys: tuple[str, ...]
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        return f"{self.shown} ({', '.join(self.keys)}): {self.error or 'ok'}"


class Notifier:
    """Groups events and sends them in the background; ``drain`` flushes and waits."""

    def __init__(
        self,
        alerts: AlertsConfig,
        *,
        public_url: str | None,
        timeout_s: float = 10.0,
        max_in_flight: int = 100,
    ) -> None:
        # Apprise logs each failure itself; we report it once, in our own line.
        logging.getLogger("apprise").propagate = False
        self._global = global_targets(alerts)
        self._targets = {rule: merge_targets(own, self._global)
                         for rule, own in rule_urls(alerts).items()}
        self.public_url = public_url.rstrip("/") if public_url else None
        self.group_s = alerts.group_s
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._groups: dict[tuple[str, str], Group] = {}
        # (miner, rule) of each firing notified -> the URLs it went to (its resolve follows).
        self._fired_to: dict[tuple[str, str], frozenset[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def targets(self, rule: str) -> list[Target]:
        """Where events of ``rule`` may go (before the severity filter)."""
        return self._targets.get(rule, self._global)

    def all_targets(self) -> list[Target]:
        """Every configured target once, with every key that names it."""
        found: dict[str, Target] = {}
        for target in [*self._global, *(t for ts in self._targets.values() for t in ts)]:
            known = found.get(target.url)
            keys = target.keys if known is None else (
                *known.keys, *(k for k in target.keys if k not in known.keys))
            found[target.url] = Target(target.url, target.min_severity, keys)
        return list(found.values())

    def send(self, event: AlertEvent) -> None:
        """Queue ``event`` for its group; returns at once. Needs a running event loop.
        Muted events are not notified."""
        if event.muted or not self.targets(event.rule):
            return
        if event.state == "resolved":
            # Its firing still waits in a window: that goes out first, so the resolve
            # follows it (to the same targets) and never arrives before it.
            firing = self._groups.get((event.rule, "firing"))
            if firing is not None and event.miner_id in firing.events:
                self.flush((event.rule, "firing"))
        key = (event.rule, event.state)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group()
            if self.group_s > 0:
                loop = asyncio.get_running_loop()
                group.timer = loop.call_later(self.group_s, self.flush, key)
        if event.miner_id in group.events or len(group.events) < MAX_GROUP_EVENTS:
            group.events[event.miner_id] = event
        else:
            group.extra[event.severity] += 1
            if event.state == "resolved":
                self._fired_to.pop((event.miner_id, event.rule), None)
        if self.group_s <= 0:
            self.flush(key)

    def flush(self, key: tuple[str, str]) -> None:
        """Send group ``key`` now: one notification per set of targets getting the same
        events."""
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        events = list(group.events.values())
        rule, _ = key
        # Targets getting the same events share one notification (one Apprise call).
        deliveries: dict[tuple[tuple[str, ...], int], list[str]] = {}
        got: dict[str, frozenset[str]] = {}
        for target in self.targets(rule):
            mine = tuple(event.miner_id for event in events if self._wanted(target, event))
            if not mine:
                continue
            extra = sum(n for severity, n in group.extra.items() if target.wants(severity))
            deliveries.setdefault((mine, extra), []).append(target.url)
            got[target.url] = frozenset(mine)
        self._remember(events, got)
        for (ids, extra), urls in deliveries.items():
            self._start([group.events[miner_id] for miner_id in ids], extra, urls)

    def _wanted(self, target: Target, event: AlertEvent) -> bool:
        if event.state == "resolved":
            fired_to = self._fired_to.get((event.miner_id, event.rule))
            if fired_to is not None:
                return target.url in fired_to
        return target.wants(event.severity)

    def _remember(self, events: list[AlertEvent], got: dict[str, frozenset[str]]) -> None:
        for event in events:
            alert = (event.miner_id, event.rule)
            if event.state == "resolved":
                self._fired_to.pop(alert, None)
            elif event.state == "firing":
                self._fired_to.pop(alert, None)  # re-inserted last: the newest
                self._fired_to[alert] = frozenset(
                    url for url, ids in got.items() if event.miner_id in ids)
                if len(self._fired_to) > MAX_REMEMBERED:
                    del self._fired_to[next(iter(self._fired_to))]

    def _start(self, events: list[AlertEvent], extra: int, urls: list[str]) -> None:
        first = events[0]
        count = len(events) + extra
        where = (f"{first.miner_id}/{first.rule} {first.state}" if count == 1
                 else f"{first.rule} {first.state} ({count} {noun(first.rule, count)})")
        if len(self._tasks) >= self.max_in_flight:
            log.warning("notification for %s dropped: %d still in flight", where,
                        len(self._tasks))
            return
        task = asyncio.create_task(self._deliver(
            where, urls, title(events, extra), body(events, extra, self.public_url),
            notify_type(events)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Send every waiting group now, wait for what is in flight (at most
        ``timeout_s``), then cancel the rest."""
        for key in list(self._groups):
            self.flush(key)
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _deliver(self, where: str, urls: list[str], title: str, body: str,
                       kind: apprise.NotifyType) -> None:
        failed, total = await self._notify(urls, title, body, kind, self.timeout_s)
        if not failed:
            log.info("notification for %s sent to %d target(s)", where, total)
            return
        log.warning("notification for %s failed (%d of %d): %s", where, len(failed), total,
                    "; ".join(failed))

    @staticmethod
    async def _notify(urls: list[str], title: str, body: str, kind: apprise.NotifyType,
                      timeout_s: float) -> tuple[list[str], int]:
        """Deliver to ``urls``: (a one-line reason per target that failed, targets)."""
        try:
            # Apprise enforces the limit itself; the outer one guards against a hung plugin.
            async with asyncio.timeout(timeout_s + 1):
                result = await apprise.Apprise(urls).async_notify(
                    body=body, title=title, notify_type=kind, timeout=timeout_s)
        except TimeoutError:
            return [f"no answer within {timeout_s:g} s"], len(urls)
        except Exception as exc:  # a plugin bug must not take the service down
            return [f"{type(exc).__name__}: {one_line(exc)}"], len(urls)
        with result:
            if len(result) == 0:  # nothing was dispatched
                return [result.status.name.lower()], len(urls)
            failed = [r for r in result if r.status != apprise.AppriseResultStatus.SUCCESS]
            reasons = [
                f"{r.name} {r.status.name.lower()}"
                + "".join(f": {one_line(entry.message)}" for entry in list(r.logs())[-1:])
                for r in failed
            ]
            return reasons, len(result)

    async def test(self, timeout_s: float | None = None) -> list[TargetResult]:
        """Send a test notification to every configured target, each on its own; one
        result per target (URL), in config order."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        return list(await asyncio.gather(
            *(self._test_one(target, limit) for target in self.all_targets())))

    async def _test_one(self, target: Target, timeout_s: float) -> TargetResult:
        severity = ("every severity" if target.min_severity == "info"
                    else f"{target.min_severity} and above")
        text = (f"A test from minerwatch-alerts: this target gets alert notifications "
                f"({severity}), configured as {', '.join(target.keys)}.")
        if self.public_url is not None:
            text += f"\n{self.public_url}/"
        failed, _ = await self._notify([target.url], "[info] minerwatch test notification",
                                       text, apprise.NotifyType.INFO, timeout_s)
        error = scrub("; ".join(failed), target.url) if failed else None
        return TargetResult(shown_url(target.url), target.keys, error)
