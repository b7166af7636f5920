"""The small normalizing functions every driver leans on."""

from __future__ import annotations

import math

import pytest

from minerwatch.collector.drivers.values import (
    count,
    dashed_numbers,
    mac_address,
    number,
    si_number,
    temperature,
    tidy,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4.29G", 4.29e9),
        ("512M", 512e6),
        ("1.2T", 1.2e12),
        ("10k", 1e4),
        ("10K", 1e4),
        ("3P", 3e15),
        ("1E", 1e18),
        ("987", 987.0),
        (" 4.29 G ", 4.29e9),
        (123456, 123456.0),
        (1.5e9, 1.5e9),
        ("", None),
        ("lots", None),
        ("4.29X", None),
        ("-5G", None),
        (-1, None),
        (math.nan, None),
        (None, None),
        (True, None),
    ],
)
def test_si_number(text: object, expected: float | None) -> None:
    result = si_number(text)
    assert result == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("62-60-75-77", [62, 60, 75, 77]),
        ("2--1-20-22", [2, -1, 20, 22]),
        ("-3-4", [-3, 4]),
        ("0-0-0-0", [0, 0, 0, 0]),
        ("61.5-x-70", [61.5, 70]),
        ("", []),
    ],
)
def test_dashed_numbers(text: str, expected: list[float]) -> None:
    assert dashed_numbers(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(55.5, 55.5), ("61", 61.0), (-273, None), (-273.15, None), (math.nan, None),
     (math.inf, None), (255, None), (-10, -10.0), ("hot", None), (False, None)],
)
def test_temperature(value: object, expected: float | None) -> None:
    assert temperature(value) == expected


def test_numbers_and_counts() -> None:
    assert number("95012.34") == 95012.34
    assert number("nan") is None
    assert number([1]) is None
    assert count(12.9) == 12
    assert count(-1) is None
    assert count("17") == 17
    assert tidy(1234.5678 / 1e3) == 1.2345678
    assert tidy(5e-8) == 5e-8  # tiny hashrates are not rounded away


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("24:dc:c3:4a:1b:2c", "24:DC:C3:4A:1B:2C"),
        ("24-DC-C3-4A-1B-2C", "24:DC:C3:4A:1B:2C"),
        ("24DCC34A1B2C", "24:DC:C3:4A:1B:2C"),
        ("00:00:00:00:00:00", None),
        ("24:dc:c3", None),
        (None, None),
        (12, None),
    ],
)
def test_mac_address(value: object, expected: str | None) -> None:
    assert mac_address(value) == expected
