"""The drivers' Reading against the field descriptions in ``shared.fields``: a Sample field
added without its description, or without its place in Reading, fails here."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from minerwatch.collector.drivers import Reading
from minerwatch.shared.fields import FIELD_NAMES, SAMPLE_FIELDS, FieldDescription
from minerwatch.shared.schemas import MinerInfo, Sample

DERIVED = tuple(f.name for f in SAMPLE_FIELDS if f.rollup == "derived")
MEASURED = tuple(name for name in FIELD_NAMES if name not in DERIVED)
#: What Reading carries besides the measurements: the miner's identity, for MinerInfo.
IDENTITY = ("make", "model", "firmware", "hostname", "mac")


def struct_fields(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.name: f for f in msgspec.structs.fields(cls)}


def distinct(field: FieldDescription, index: int) -> Any:
    """A value of the field's type unlike its default and unlike every other field's."""
    return {"float": 1.25 + index, "int": 100 + index, "bool": False, "str": f"text-{index}",
            "list[int]": [1000 + index, 2000 + index]}[field.type]


def test_the_only_derived_field_is_efficiency() -> None:
    assert DERIVED == ("efficiency_jth",)  # Reading.sample computes it: nothing else


def test_reading_measures_exactly_the_described_fields_in_sample_order() -> None:
    names = tuple(struct_fields(Reading))
    assert names[: len(MEASURED)] == MEASURED
    assert names[len(MEASURED):] == IDENTITY


@pytest.mark.parametrize("name", MEASURED)
def test_each_measured_field_has_the_sample_type(name: str) -> None:
    assert struct_fields(Reading)[name].type == struct_fields(Sample)[name].type


@pytest.mark.parametrize("name", IDENTITY)
def test_each_identity_field_has_the_info_type(name: str) -> None:
    assert struct_fields(Reading)[name].type == struct_fields(MinerInfo)[name].type


def test_sample_and_info_carry_every_field_of_the_reading() -> None:
    by_name = {f.name: f for f in SAMPLE_FIELDS}
    values = {name: distinct(by_name[name], i) for i, name in enumerate(MEASURED)}
    identity = {name: f"{name}-value" for name in IDENTITY}
    reading = Reading(**values, **identity)
    sample = reading.sample("rig-1", "2026-11-22T10:00:00.000Z")
    assert {name: getattr(sample, name) for name in MEASURED} == values
    assert sample.efficiency_jth == pytest.approx(values["power_w"] / values["hashrate_ths"])
    assert (sample.miner_id, sample.ts) == ("rig-1", "2026-11-22T10:00:00.000Z")
    assert sample.fan_rpm is not reading.fan_rpm  # the sample owns its list
    info = reading.info("rig-1", "axeos", "10.0.0.5", 80)
    assert {name: getattr(info, name) for name in IDENTITY} == identity
    assert (info.miner_id, info.driver, info.host, info.port) == ("rig-1", "axeos",
                                                                  "10.0.0.5", 80)
