"""The collector's own health (``stats``): each reason a poll fails with has its label in
the registry's bounded set, and what the collector publishes is what the registry admits."""

from __future__ import annotations

from collections import Counter

from minerwatch.collector.drivers.reading import http_reason, refused_reason, timeout_reason
from minerwatch.collector.outbox import Outbox, Outgoing
from minerwatch.collector.scheduler import PollStats
from minerwatch.collector.stats import collector_stats, failure_reason
from minerwatch.shared.metrics import POLL_FAILURE_REASONS, admitted
from minerwatch.shared.schemas import MinerStatus


def test_every_poll_error_reason_has_its_label() -> None:
    reasons = {
        timeout_reason(5.0): "timeout",
        refused_reason(4028): "refused",
        "unreachable: No route to host": "unreachable",
        "closed without a reply": "closed",
        "closed mid-reply (Connection reset by peer)": "closed",
        "reset without a reply": "closed",
        "closed by the miner": "closed",
        http_reason(503): "http",
        http_reason(599): "http",
        "bad reply: not JSON at byte 12": "bad_reply",
        "bad reply: no SUMMARY section": "bad_reply",
        "internal error: KeyError": "internal",
        "axeos on port 80: refused: x; cgminer on port 4028: timeout after 1.0 s": "other",
        "": "other",
    }
    for reason, label in reasons.items():
        assert failure_reason(reason) == label, reason
    assert set(reasons.values()) == set(POLL_FAILURE_REASONS)


def test_what_the_collector_publishes_is_admitted_whole() -> None:
    polls = PollStats()
    polls.started, polls.completed, polls.lateness_sum = 12, 11, 0.75
    outbox = Outbox()
    outbox.put(Outgoing.of("m1", MinerStatus(state="online", since="2026-01-01T00:00:00.000Z")))
    published = collector_stats(polls, Counter({"timeout": 2, "refused": 1}), 3, outbox)
    assert admitted("collector", published) == published
    values = {(s.name, tuple(s.labels.values())): (s.value, s.count) for s in published}
    assert values[("minerwatch_collector_polls_total", ())] == (11, None)
    assert values[("minerwatch_collector_poll_lateness_seconds", ())] == (0.75, 12)
    assert values[("minerwatch_collector_poll_failures_total", ("timeout",))] == (2, None)
    assert values[("minerwatch_collector_poll_failures_total", ("http",))] == (0, None)
    assert values[("minerwatch_collector_miners", ())] == (3, None)
    assert values[("minerwatch_collector_outbox_messages", ())] == (1, None)
