"""The store's own health for ``GET /metrics`` (``shared.metrics``): what it received,
wrote and holds unacknowledged, and how long its commits take."""

from __future__ import annotations

from minerwatch.shared.metrics import stat
from minerwatch.shared.schemas import ServiceMetric
from minerwatch.store.writer import Writer


def store_stats(writer: Writer) -> list[ServiceMetric]:
    """What the store publishes on its stats topic."""
    return [
        stat("minerwatch_store_messages_total", writer.received),
        stat("minerwatch_store_rows_written_total", writer.written),
        stat("minerwatch_store_samples_written_total", writer.new_samples),
        stat("minerwatch_store_batch_commit_seconds", writer.commit_s, count=writer.commits),
        # Every pending entry is a message whose acknowledgement waits for its commit.
        stat("minerwatch_store_messages_held", writer.pending),
    ]
