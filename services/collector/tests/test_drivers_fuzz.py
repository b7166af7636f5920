"""Every parser, fed every fixture with values swapped for junk: a Reading that encodes as
a valid Sample, or a PollError; never another exception. Seeded, so failures repeat."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minerwatch.collector.drivers import PollError, Reading
from minerwatch.collector.drivers.axeos import parse_system_info
from minerwatch.collector.drivers.cgminer.families import FAMILIES, parse_version
from minerwatch.collector.drivers.cgminer.replies import build_reading, parse_pools, parse_summary
from minerwatch.collector.drivers.cgminer.transport import decode_reply
from minerwatch.shared import schemas
from minerwatch.shared.schemas import Sample

FIXTURES = Path(__file__).parent / "fixtures"
JUNK: list[Any] = [None, True, False, 0, -1, -273, 1e308, -1e308, math.nan, math.inf, "", "x",
                   "nan", "-5G", "1-2--3", "4.29G", [], [None], ["x", -1], {}, {"a": [1]}, 2**70]
ROUNDS = 40


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from leaves(value, (*path, index))


def mutated(data: Any, rng: random.Random) -> Any:
    result = json.loads(json.dumps(data))
    paths = list(leaves(result))
    for path in rng.sample(paths, k=min(len(paths), rng.randint(1, 6))):
        parent = result
        try:
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict) != isinstance(path[-1], str):
                continue  # an earlier swap put another container here (JSON keys are str)
            parent[path[-1]] = copy.deepcopy(rng.choice(JUNK))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier swap replaced this branch
    return result


def check(reading: Reading) -> None:
    sample = reading.sample("fuzz", "2026-11-22T10:00:00.123Z")
    assert schemas.decode(schemas.encode(sample), Sample) == sample
    for name in ("hashrate_ths", "power_w", "temp_c", "best_diff", "efficiency_jth"):
        value = getattr(sample, name)
        assert value is None or (math.isfinite(value) and value >= -40), (name, value)


def outcome(parse: Callable[[], Reading]) -> None:
    try:
        reading = parse()
    except PollError as exc:
        assert exc.reason and "\n" not in exc.reason
    else:
        check(reading)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*system_info.json")))
def test_axeos_junk(fixture: str) -> None:
    data = json.loads((FIXTURES / fixture).read_text())
    rng = random.Random(fixture)
    for _ in range(ROUNDS):
        junk = mutated(data, rng)
        outcome(lambda junk=junk: parse_system_info(junk))


CGMINER_SETS = {
    "antminer_s19pro_bmminer": ("summary", "stats", "pools", "version"),
    "antminer_s9_bmminer": ("summary", "stats_malformed", "pools", "version"),
    "whatsminer_m30s+_20210322": ("summary", "devdetails", "pools", "version"),
    "avalon_nano3s_25021401": ("summary", "estats", "pools", "version"),
}


def _load(prefix: str, part: str) -> dict[str, Any]:
    name = f"{prefix}_{part}." + ("txt" if part.endswith("malformed") else "json")
    return decode_reply((FIXTURES / name).read_bytes(), check=False)


@pytest.mark.parametrize("prefix", sorted(CGMINER_SETS))
def test_cgminer_junk(prefix: str) -> None:
    replies = {part.removesuffix("_malformed"): _load(prefix, part)
               for part in CGMINER_SETS[prefix]}
    rng = random.Random(prefix)
    for _ in range(ROUNDS):
        junk = {command: mutated(reply, rng) for command, reply in replies.items()}
        for family in FAMILIES.values():  # every family's parsers, right or wrong family
            def parse(junk: dict[str, Any] = junk, family: Any = family) -> Reading:
                details = [parser(junk[command]) for command, parser in family.parsers.items()
                           if command in junk]
                return build_reading(parse_summary(junk["summary"]), details,
                                     parse_pools(junk["pools"]), parse_version(junk["version"]))
            outcome(parse)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.iterdir()
                                           if "system_info" not in p.name))
def test_cgminer_broken_bytes(fixture: str) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    rng = random.Random(fixture)
    for _ in range(ROUNDS):
        broken = bytearray(raw[: rng.randint(0, len(raw))])  # truncated anywhere
        for _ in range(rng.randint(0, 4)):  # and a few bytes changed
            if broken:
                broken[rng.randrange(len(broken))] = rng.randrange(256)
        try:
            reply = decode_reply(bytes(broken))
        except PollError as exc:
            assert exc.reason.startswith("bad reply: ") and "\n" not in exc.reason
        else:
            assert isinstance(reply, dict)
