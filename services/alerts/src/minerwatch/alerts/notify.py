"""Notifications through Apprise: every alert event to the global URLs plus its rule's own.

Delivery runs in background tasks with a time limit, so a slow or dead endpoint never holds
up rule evaluation; a failure is one log line (without the URL, which often holds a token).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import apprise

from minerwatch.shared.config import ConfigError, RuleConfig
from minerwatch.shared.schemas import AlertEvent

log = logging.getLogger("minerwatch.alerts.notify")

_FIRING_TYPES = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "critical": apprise.NotifyType.FAILURE,
}


def is_apprise_url(url: str) -> bool:
    return bool(apprise.Apprise().add(url))


def check_urls(urls: Sequence[str], key: str) -> None:
    """ConfigError naming ``key[i]`` for the first URL Apprise cannot use."""
    for index, url in enumerate(urls):
        if not is_apprise_url(url):
            scheme = urlsplit(url).scheme or url.partition(":")[0]
            raise ConfigError(f"{key}[{index}]: not a usable Apprise URL (scheme {scheme!r})")


def title(event: AlertEvent) -> str:
    return f"[{event.severity}] {event.miner_id} {event.rule} {event.state}"


def body(event: AlertEvent) -> str:
    return f"{event.miner_id}: {event.message} (at {event.ts})"


def notify_type(event: AlertEvent) -> apprise.NotifyType:
    if event.state == "resolved":
        return apprise.NotifyType.SUCCESS
    return _FIRING_TYPES[event.severity]


class Notifier:
    """Sends events in the background; ``drain`` waits for what is in flight."""

    def __init__(
        self,
        urls: Sequence[str],
        rules: Sequence[RuleConfig],
        *,
        timeout_s: float = 10.0,
        max_in_flight: int = 100,
    ) -> None:
        # Apprise logs each failure itself; we report it once, in our own line.
        logging.getLogger("apprise").propagate = False
        check_urls(urls, "alerts.notify")
        self._targets: dict[str, tuple[str, ...]] = {}
        for index, rule in enumerate(rules):
            check_urls(rule.notify, f"alerts.rules[{index}].notify")
            self._targets[rule.name] = tuple(dict.fromkeys([*urls, *rule.notify]))
        self._global = tuple(urls)
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    def targets(self, rule: str) -> tuple[str, ...]:
        return self._targets.get(rule, self._global)

    def send(self, event: AlertEvent) -> None:
        """Start delivering ``event``; returns at once. Needs a running event loop."""
        urls = self.targets(event.rule)
        if not urls:
            return
        if len(self._tasks) >= self.max_in_flight:
            log.warning("notification for %s/%s %s dropped: %d still in flight",
                        event.miner_id, event.rule, event.state, len(self._tasks))
            return
        task = asyncio.create_task(self._deliver(event, urls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the notifications in flight (at most ``timeout_s``), then cancel the rest."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _deliver(self, event: AlertEvent, urls: tuple[str, ...]) -> None:
        where = f"{event.miner_id}/{event.rule} {event.state}"
        try:
            # Apprise enforces the limit itself; the outer one guards against a hung plugin.
            async with asyncio.timeout(self.timeout_s + 1):
                result = await apprise.Apprise(list(urls)).async_notify(
                    body=body(event),
                    title=title(event),
                    notify_type=notify_type(event),
                    timeout=self.timeout_s,
                )
        except TimeoutError:
            log.warning("notification for %s failed: no answer within %.0f s",
                        where, self.timeout_s)
            return
        except Exception as exc:  # a plugin bug must not take the service down
            log.warning("notification for %s failed: %s: %s", where, type(exc).__name__, exc)
            return
        with result:
            failed = [r for r in result if r.status != apprise.AppriseResultStatus.SUCCESS]
            if not failed and result:
                log.info("notification for %s sent to %d target(s)", where, len(result))
                return
            reasons = "; ".join(
                f"{r.name} {r.status.name.lower()}"
                + "".join(f": {entry.message}" for entry in list(r.logs())[-1:])
                for r in failed
            )
            log.warning("notification for %s failed (%d of %d): %s", where, len(failed),
                        len(result), reasons or result.status.name.lower())
