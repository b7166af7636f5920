"""What a miner should hash: its own median of the last 24 hourly mean hashrates.

``HourlyMeans`` keeps, per UTC hour, the sum and count of the hashrates seen (the way the
store's ``rollups_1h`` does), at most ``HOURS + 1`` hours. It is fed each sample, and at
start seeded from the database's hourly rollups so a restart does not forget the day.
The baseline is the median of the means of the hours within the last 24 hours; the
current, unfinished hour counts only once no finished hour is known, so a fresh miner
gets a baseline after its first samples rather than after an hour.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

HOUR_S = 3600.0
HOURS = 24


@dataclass(slots=True)
class HourlyMeans:
    """Hourly (sum, count) of one miner's hashrate, keyed by the hour's start (epoch s)."""

    hours: dict[int, tuple[float, int]] = field(default_factory=dict)

    def add(self, at: float, hashrate: float) -> None:
        bucket = int(at // HOUR_S)
        total, count = self.hours.get(bucket, (0.0, 0))
        self.hours[bucket] = (total + hashrate, count + 1)
        if len(self.hours) > HOURS + 1:
            del self.hours[min(self.hours)]

    def seed(self, bucket_start: float, total: float, count: int) -> None:
        """One hour from the history; an hour already seen here is kept as it is."""
        bucket = int(bucket_start // HOUR_S)
        if count <= 0 or bucket in self.hours:
            return
        self.hours[bucket] = (total, count)
        while len(self.hours) > HOURS + 1:
            del self.hours[min(self.hours)]

    def median(self, now: float) -> float | None:
        """The median hourly mean of the last ``HOURS`` hours before ``now``, or None."""
        current = int(now // HOUR_S)
        done = [total / count for bucket, (total, count) in self.hours.items()
                if current - HOURS <= bucket < current and count]
        if not done:
            this_hour = self.hours.get(current)
            if this_hour is None or not this_hour[1]:
                return None
            return this_hour[0] / this_hour[1]
        return float(statistics.median(done))
