"""Rate-limited logging of bad input: totals are flushed by a timer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from minerwatch.shared.rejects import RejectLog


async def test_the_first_is_logged_at_once_and_the_rest_by_the_timer(
        caplog: pytest.LogCaptureFixture) -> None:
    log = RejectLog(logging.getLogger("test.rejects"), window_s=0.2)
    with caplog.at_level(logging.WARNING, "test.rejects"):
        for index in range(50):
            log.note("sample", f"mw/miners/a/sample: bad {index}")
        log.note("info", "mw/miners/a/info: bad")
        assert [r.getMessage() for r in caplog.records] == [
            "bad sample message ignored: mw/miners/a/sample: bad 0",
            "bad info message ignored: mw/miners/a/info: bad",
        ]
        await asyncio.sleep(0.4)  # no further bad message: the timer reports the rest
    assert caplog.records[-1].getMessage() == (
        "49 more bad sample messages ignored in 0.2 s (50 in all)")
    assert log.counts == {"sample": 50, "info": 1} and log.total == 51


def test_without_a_loop_the_next_window_reports(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RejectLog(logging.getLogger("test.rejects"), window_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.rejects"):
        log.note("sample", "one")
        log.note("sample", "two")
        now[0] = 11.0
        log.note("sample", "three")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["bad sample message ignored: one",
                        "1 more bad sample messages ignored in 10 s (2 in all)",
                        "bad sample message ignored: three"]
