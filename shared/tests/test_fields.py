"""The field descriptions cover the Sample exactly, and what is derived from them agrees."""

from __future__ import annotations

import msgspec

from minerwatch.shared import fields
from minerwatch.shared.schemas import Sample

#: Sample fields that are envelope, not measurement: they have no description.
ENVELOPE = ("schema", "miner_id", "ts")


def _annotation_kind(annotation: object) -> str:
    text = str(annotation).replace("typing.", "")
    for prefix, kind in (("list[int]", "list[int]"), ("float", "float"), ("int", "int"),
                         ("bool", "bool"), ("str", "str")):
        if text.startswith(prefix):
            return kind
    raise AssertionError(f"unexpected annotation {annotation!r}")


def test_every_sample_field_has_exactly_one_description_in_sample_order() -> None:
    measured = tuple(f for f in Sample.__struct_fields__ if f not in ENVELOPE)
    assert measured == fields.FIELD_NAMES  # a new Sample field needs its description


def test_descriptions_agree_with_the_sample_types() -> None:
    info = {field.name: field for field in msgspec.inspect.type_info(Sample).fields}
    hints = Sample.__annotations__
    for field in fields.SAMPLE_FIELDS:
        assert _annotation_kind(hints[field.name]) == field.type, field.name
        assert info[field.name].required == field.required, field.name


def test_derived_groups() -> None:
    assert fields.ROLLUP_MEAN == ("hashrate_ths", "power_w", "temp_c", "vr_temp_c")
    assert "efficiency_jth" not in fields.ROLLUP_MEAN + fields.ROLLUP_LAST
    assert set(fields.NUMERIC_FIELDS) >= {"temp_c", "uptime_s", "shares_rejected"}
    assert "fan_rpm" not in fields.NUMERIC_FIELDS and "pool_url" not in fields.NUMERIC_FIELDS
    names = [f.prometheus for f in fields.SAMPLE_FIELDS if f.prometheus]
    series = [(f.prometheus, f.prometheus_labels) for f in fields.SAMPLE_FIELDS if f.prometheus]
    assert len(series) == len(set(series))  # fields sharing a name differ in their labels
    assert all(name.startswith("minerwatch_") for name in names)
    counters = [f for f in fields.SAMPLE_FIELDS if f.kind == "counter"]
    assert all(f.prometheus and f.prometheus.endswith("_total") for f in counters)


def test_in_range_refuses_nan_and_infinities() -> None:
    temp = fields.FIELDS["temp_c"]
    assert temp.in_range(65.0)
    for bad in (float("nan"), float("inf"), -float("inf"), 1e308, -273.0):
        assert not temp.in_range(bad)
    assert fields.FIELDS["pool_url"].in_range(1e308)  # unbounded: not checked
