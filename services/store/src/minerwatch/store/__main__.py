"""``minerwatch-store``: subscribes to samples, status, info, alerts, command results and
autotune progress and writes history (and the audit of control).

Only the wiring lives here: the database is prepared first (a bad ``MINERWATCH_DB_URL``
stops the service with one line; an unreachable database is waited for), then the MQTT
session (``consumer``) routes every message (``routing``) to the writer (``writer``),
while retention (``retention``) deletes what is past its time and the fleet rollups
(``fleet``) are recomputed for the buckets new samples touched, and the store's own
health goes out on its stats topic (``stats``). On SIGTERM the pending rows are written
and acknowledged before the process exits.
"""

from __future__ import annotations

import asyncio
import logging

from minerwatch.shared.config import Config
from minerwatch.shared.rejects import RejectLog
from minerwatch.shared.service import fewer_collections, run_service
from minerwatch.shared.stats import StatsPublisher
from minerwatch.store.consumer import mqtt_session, store_link
from minerwatch.store.fleet import FleetRollups
from minerwatch.store.retention import Horizon, Retention, policy
from minerwatch.store.stats import store_stats
from minerwatch.store.writer import Writer, open_engine, prepare_schema

log = logging.getLogger("minerwatch.store")


async def serve(config: Config) -> None:
    store = config.store
    engine = open_engine(config.database.url)
    rejects = RejectLog(log)
    try:
        await prepare_schema(engine)
        writer = Writer(engine, batch_size=store.batch_size,
                        interval_s=store.batch_interval_s)
        retention = Retention(engine, policy(store), batch=store.retention_batch,
                              interval_s=store.retention_interval_s)
        async with writer, asyncio.TaskGroup() as group:
            # A writer or retention that dies of a bug ends the group, and so the service,
            # with its error: a store that takes messages nothing writes must not look alive.
            watch = group.create_task(writer.failure(), name="store-writer-watch")
            expiring = group.create_task(retention.run(), name="store-retention")
            fleet = group.create_task(FleetRollups(engine).run(), name="store-fleet-rollups")
            session = mqtt_session(config.mqtt.base_topic, writer, rejects,
                                   group=store.group, horizon=Horizon(store.keep_raw_days))
            stats = StatsPublisher(config.mqtt.base_topic, "store",
                                   config.metrics.stats_interval_s, lambda: store_stats(writer))
            await store_link(config).run(stats.around(session))
            watch.cancel()
            expiring.cancel()
            fleet.cancel()
    finally:
        rejects.close()
        await engine.dispose()


def main() -> None:
    # Every message leaves short-lived objects behind (the message, its row, the rollup
    # buckets, its acknowledgement): collecting the young generation every 700
    # allocations, over everything the imports created, cost a large share of the rate.
    with fewer_collections():
        run_service("store", serve)


if __name__ == "__main__":
    main()
