"""What every measured field of a Sample means, written down once.

``SAMPLE_FIELDS`` describes each field a Sample carries besides ``schema``, ``miner_id``
and ``ts``: its type and unit, what kind of value it is, how a rollup condenses it, the
range a real reading can have, and how Home Assistant and Prometheus should present it.
The history tables, the rollups, the api's rollup model, the alert rules and the
collector's readings are built from these descriptions (or checked against them by a
test), so a field added to ``schemas.Sample`` without its description fails the suite.

The one rule for values that cannot be real readings (``messages.sanitize``): an
out-of-range value of an optional field becomes ``null`` (a missing reading, as the
contract already writes missing values); fan speeds out of range are dropped from the
list; a required field (``hashrate_ths``) out of range rejects the whole message. A number
JSON cannot hold in a float (``1e999``) never gets this far: the decoder rejects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: gauge: a level that goes up and down; counter: only grows (until the miner restarts);
#: text: a free-form string; flag: true or false.
Kind = Literal["gauge", "counter", "text", "flag"]
#: mean: a rollup keeps sum, count, min and max; last: the value of the bucket's newest
#: sample; derived: computed from other rolled-up fields, not stored in rollups.
Rollup = Literal["mean", "last", "derived"]
ValueType = Literal["float", "int", "bool", "str", "list[int]"]

INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One measured field of a Sample (in the style of Home Assistant's entity
    descriptions: one frozen record per field, everything else derived from it)."""

    name: str
    type: ValueType
    kind: Kind
    rollup: Rollup
    description: str
    unit: str | None = None
    required: bool = False
    #: Inclusive bounds a real reading stays within (``sanitize``); None: no bound.
    minimum: float | None = None
    maximum: float | None = None
    #: Home Assistant's MQTT sensor ``device_class``, ``state_class`` and unit.
    ha_device_class: str | None = None
    ha_state_class: str | None = None
    #: Prometheus metric name (base units, per its naming guide) and the factor from
    #: this field's unit to it; None: not exported as a metric.
    prometheus: str | None = None
    prometheus_scale: float = 1.0
    #: Labels of this field's series besides ``miner``: fields that share a metric name
    #: tell their series apart by them (``sensor="vr"``).
    prometheus_labels: tuple[tuple[str, str], ...] = ()
    #: For a list: the label holding each item's position (one series per item).
    prometheus_item: str | None = None

    @property
    def numeric(self) -> bool:
        """A single number (what an alert threshold can compare)."""
        return self.type in ("float", "int")

    def in_range(self, value: float) -> bool:
        """False for NaN, infinities and anything outside the bounds."""
        low = -float("inf") if self.minimum is None else self.minimum
        high = float("inf") if self.maximum is None else self.maximum
        return low <= value <= high


SAMPLE_FIELDS: tuple[FieldDescription, ...] = (
    FieldDescription(
        "hashrate_ths", "float", "gauge", "mean", "hashrate the miner reports now",
        unit="TH/s", required=True, minimum=0.0, maximum=1e5,
        ha_state_class="measurement",
        prometheus="minerwatch_hashrate_hashes_per_second", prometheus_scale=1e12),
    FieldDescription(
        "expected_hashrate_ths", "float", "gauge", "last",
        "hashrate the miner should reach at its settings",
        unit="TH/s", minimum=0.0, maximum=1e5, ha_state_class="measurement",
        prometheus="minerwatch_expected_hashrate_hashes_per_second", prometheus_scale=1e12),
    FieldDescription(
        "power_w", "float", "gauge", "mean", "power drawn at the wall or the board",
        unit="W", minimum=0.0, maximum=1e5, ha_device_class="power",
        ha_state_class="measurement", prometheus="minerwatch_power_watts"),
    FieldDescription(
        "efficiency_jth", "float", "gauge", "derived", "energy per unit of work",
        unit="J/TH", minimum=0.0, maximum=1e6, ha_state_class="measurement",
        prometheus="minerwatch_efficiency_joules_per_hash", prometheus_scale=1e-12),
    FieldDescription(
        "temp_c", "float", "gauge", "mean", "hottest chip or board temperature",
        unit="°C", minimum=-40.0, maximum=200.0, ha_device_class="temperature",
        ha_state_class="measurement", prometheus="minerwatch_temperature_celsius",
        prometheus_labels=(("sensor", "chip"),)),
    FieldDescription(
        "vr_temp_c", "float", "gauge", "mean", "voltage regulator temperature",
        unit="°C", minimum=-40.0, maximum=200.0, ha_device_class="temperature",
        ha_state_class="measurement", prometheus="minerwatch_temperature_celsius",
        prometheus_labels=(("sensor", "vr"),)),
    FieldDescription(
        "fan_rpm", "list[int]", "gauge", "last", "speed of each fan",
        unit="rpm", minimum=0, maximum=100_000, ha_state_class="measurement",
        prometheus="minerwatch_fan_rpm", prometheus_item="fan"),
    FieldDescription(
        "shares_accepted", "int", "counter", "last", "shares the pool accepted since start",
        minimum=0, maximum=INT64_MAX, ha_state_class="total_increasing",
        prometheus="minerwatch_shares_total", prometheus_labels=(("result", "accepted"),)),
    FieldDescription(
        "shares_rejected", "int", "counter", "last", "shares the pool rejected since start",
        minimum=0, maximum=INT64_MAX, ha_state_class="total_increasing",
        prometheus="minerwatch_shares_total", prometheus_labels=(("result", "rejected"),)),
    FieldDescription(
        "best_diff", "float", "gauge", "last", "best share difficulty found",
        minimum=0.0, maximum=1e30, ha_state_class="measurement",
        prometheus="minerwatch_best_difficulty"),
    FieldDescription(
        "uptime_s", "int", "gauge", "last", "time since the miner started",
        unit="s", minimum=0, maximum=10**10, ha_device_class="duration",
        ha_state_class="measurement", prometheus="minerwatch_uptime_seconds"),
    FieldDescription(
        "pool_url", "str", "text", "last", "the pool the miner works for"),
    FieldDescription(
        "is_mining", "bool", "flag", "last", "whether the miner is hashing",
        ha_device_class="running", prometheus="minerwatch_mining"),
    FieldDescription(
        "pool_fallback", "bool", "flag", "last",
        "whether the miner works for a fallback pool instead of its first one",
        ha_device_class="problem", prometheus="minerwatch_pool_fallback"),
    FieldDescription(
        "pool_connected", "bool", "flag", "last",
        "whether the miner's connection to its pool is up",
        ha_device_class="connectivity", prometheus="minerwatch_pool_connected"),
    FieldDescription(
        "blocks_found", "int", "counter", "last",
        "blocks the miner found, as its firmware counts them",
        minimum=0, maximum=INT64_MAX, ha_state_class="total_increasing",
        prometheus="minerwatch_blocks_found_total"),
)

FIELDS: dict[str, FieldDescription] = {field.name: field for field in SAMPLE_FIELDS}

#: Names in Sample order, and the subsets the history and the rules are built from.
FIELD_NAMES: tuple[str, ...] = tuple(FIELDS)
NUMERIC_FIELDS: tuple[str, ...] = tuple(f.name for f in SAMPLE_FIELDS if f.numeric)
ROLLUP_MEAN: tuple[str, ...] = tuple(f.name for f in SAMPLE_FIELDS if f.rollup == "mean")
ROLLUP_LAST: tuple[str, ...] = tuple(f.name for f in SAMPLE_FIELDS if f.rollup == "last")
#: Fields whose value is checked against bounds (``sanitize``).
BOUNDED: tuple[FieldDescription, ...] = tuple(
    f for f in SAMPLE_FIELDS if f.minimum is not None or f.maximum is not None)
