"""Hostile MQTT traffic for the services (issue 8): the payloads the issue names, seeded
random ones, and valid samples interleaved among them so that a test can tell exactly
what got through.

Everything comes from one seed, so a failing run replays. The functions here build
bytes and topics and do no I/O; ``build_plan`` returns what a test publishes.

Name spaces keep the checks exact: the valid samples belong to ``VALID_MINERS`` and no
hostile payload that could pass the contract's checks ever names one of them (hostile
payloads on their topics are all malformed or impossible), so any extra row for them
in the database is a hostile message that was wrongly accepted. Payload miner ids that
disagree with their topic start with ``MISMATCH_PREFIX`` and must never be stored.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, TypeVar

import msgspec

from minerwatch.shared.schemas import Sample, encode, format_ts, parse_ts

T = TypeVar("T")
Kind = Literal["sample", "status", "info", "label", "alert", "mute", "service", "stats",
               "junk"]
KINDS: tuple[Kind, ...] = ("sample", "status", "info", "label", "alert", "mute", "service",
                           "stats", "junk")

VALID_MINERS = ("v0", "v1", "v2", "v3", "v4")
VALID_PER_MINER = 1000
MISMATCH_PREFIX = "mismatch-"
#: The miner whose 1-minute rollup gets three samples of hashrate_ths 1.7e308, and in
#: which minute of its history (its samples are one second apart from a minute start).
HUGE_MINER = "v0"
HUGE_MINUTE = 5
HUGE_HASHRATE = 1.7e308
#: Sizes of the huge payloads: past the decoder's 64 KiB, past the store's 1 MiB packet
#: limit, and 2 MiB (Mosquitto's default limit is 256 MiB).
HUGE_SIZES = (65 * 1024 + 1, 256 * 1024, (1 << 20) + 1, 2 << 20)
HOSTILE_TOTAL = 100_000
#: Miner ids of hostile messages: h0 to h99999, so that most topics are new ones (a cache
#: of every topic ever seen grows with them).
HOSTILE_IDS = 100_000

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


@dataclass(frozen=True, slots=True)
class Publication:
    topic: str
    payload: bytes
    retain: bool
    #: What it is: ``valid``, ``canary``, ``named:<case>``, ``random-bytes``, ...
    label: str
    #: For a valid sample: (miner_id, ts).
    key: tuple[str, str] | None = None


@dataclass
class Plan:
    base: str
    seed: int
    #: ``poison``: published retained before any service starts.
    retained_first: list[Publication]
    #: Hostile messages with the valid samples interleaved, in publishing order.
    flood: list[Publication]
    #: Every valid sample by (miner_id, ts), as sent.
    valid: dict[tuple[str, str], Sample]
    #: The start of the minute of HUGE_MINER that holds the three 1.7e308 samples.
    huge_bucket: datetime
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def hostile_count(self) -> int:
        """Every hostile message, the retained set published first included."""
        return sum(n for label, n in self.counts.items() if label != "valid")


# --- valid samples ----------------------------------------------------------------------


def valid_sample(miner_index: int, i: int, start: datetime) -> Sample:
    """The i-th valid sample of ``VALID_MINERS[miner_index]``, one second after the last;
    every value depends on (miner, i) so a stored row can be compared with what was sent."""
    hashrate = 100.0 + miner_index + (i % 100) / 100
    power = 3000.0 + i % 7
    return Sample(
        miner_id=VALID_MINERS[miner_index],
        ts=format_ts(start + timedelta(seconds=i)),
        hashrate_ths=hashrate,
        expected_hashrate_ths=110.0,
        power_w=power,
        efficiency_jth=power / hashrate,
        temp_c=60.0 + (i % 10) * 0.5,
        vr_temp_c=55.0,
        fan_rpm=[4000 + i % 50, 4100],
        shares_accepted=i,
        shares_rejected=0,
        best_diff=1e9,
        uptime_s=1000 + i,
        pool_url="stratum+tcp://pool.example:3333",
        is_mining=True,
    )


def ts_ms(ts: str) -> int:
    return round(parse_ts(ts).timestamp() * 1000)


def below(rng: random.Random, n: int) -> int:
    """``rng.randrange(n)`` at a fifth of its cost (the plan draws a million of these)."""
    return int(rng.random() * n)


def pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[int(rng.random() * len(items))]


# --- payload building blocks ------------------------------------------------------------


def dumps(value: object) -> bytes:
    """JSON as a careless publisher writes it: NaN and Infinity allowed, lone surrogates
    written as raw bytes (``surrogatepass``) when not escaped."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def sample_dict(miner_id: str, ts: str, **changes: object) -> dict[str, object]:
    sample: dict[str, object] = {
        "schema": 1, "miner_id": miner_id, "ts": ts, "hashrate_ths": 95.5,
        "expected_hashrate_ths": 100.0, "power_w": 3100.0, "efficiency_jth": 32.5,
        "temp_c": 65.0, "vr_temp_c": 60.0, "fan_rpm": [4200, 4300],
        "shares_accepted": 10, "shares_rejected": 1, "best_diff": 1e9, "uptime_s": 3600,
        "pool_url": "stratum+tcp://pool.example:3333", "is_mining": True,
    }
    sample.update(changes)
    return sample


def status_dict(**changes: object) -> dict[str, object]:
    status: dict[str, object] = {"state": "online", "reason": None,
                                 "since": "2026-01-01T00:00:00.000Z",
                                 "last_seen": "2026-01-01T00:00:00.000Z", "failures": 0}
    status.update(changes)
    return status


def info_dict(miner_id: str, **changes: object) -> dict[str, object]:
    info: dict[str, object] = {"miner_id": miner_id, "driver": "axeos", "host": "10.0.0.5",
                               "port": 80, "make": "Bitaxe", "model": "Gamma",
                               "firmware": "v2.4", "hostname": "bitaxe", "mac": "aa:bb"}
    info.update(changes)
    return info


def alert_dict(miner_id: str, rule: str, **changes: object) -> dict[str, object]:
    alert: dict[str, object] = {"miner_id": miner_id, "rule": rule, "state": "firing",
                                "severity": "warning", "value": 80.0, "threshold": 75.0,
                                "message": "hot", "ts": "2026-01-01T00:00:00.000Z"}
    alert.update(changes)
    return alert


def stats_dict(service: str, ts: str, *metrics: dict[str, object]) -> dict[str, object]:
    return {"service": service, "ts": ts, "metrics": list(metrics)}


def surrogate_100_bytes(miner_id: str, ts: str) -> bytes:
    """Exactly 100 bytes: a sample-looking object with the UTF-8 encoding of the lone
    surrogate U+D800 (``ED A0 80``, invalid UTF-8) inside a JSON string."""
    tail = b'"}'
    head = f'{{"miner_id":"{miner_id}","ts":"{ts}","pool_url":"'.encode() + b"\xed\xa0\x80"
    if len(head) + len(tail) > 100:  # a long topic id: claim a short one instead
        head = f'{{"miner_id":"h1","ts":"{ts}","pool_url":"'.encode() + b"\xed\xa0\x80"
    return head + b"x" * (100 - len(head) - len(tail)) + tail


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_extra(document: dict[str, object], extra: bytes) -> bytes:
    """``document`` as JSON with one more field whose value is the raw JSON ``extra``."""
    return dumps(document)[:-1] + b', "extra": ' + extra + b"}"


def huge_string_payload(size: int) -> bytes:
    head = b'{"pool_url":"'
    return head + b"a" * (size - len(head) - 2) + b'"}'


INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff\x00{",
    b'{"miner_id":"\xc3\x28"}',  # a lead byte followed by a non-continuation
    b'{"pool_url":"\xc0\xaf"}',  # overlong encoding of "/"
    b'{"pool_url":"\xf4\x90\x80\x80"}',  # past U+10FFFF
    b'{"pool_url":"\xe2\x82"}',  # truncated sequence
    b"\x80\x80\x80",  # lone continuation bytes
)

# A case: (name, kinds it goes to, maker(topic id, ts) -> payload). The topic id is the
# miner id (or the rule or service name) of the topic the payload is published on, so a
# case that is wrong in one respect only is right in all the others.
Maker = Callable[[str, str], bytes]
Case = tuple[str, tuple[Kind, ...], Maker]

ALL: tuple[Kind, ...] = KINDS
MINER_KINDS: tuple[Kind, ...] = ("sample", "status", "info", "alert")


def constant(payload: bytes) -> Maker:
    return lambda mid, ts: payload


def _sample_case(name: str, **changes: object) -> Case:
    return (name, ("sample",), lambda mid, ts: dumps({**sample_dict(mid, ts), **changes}))


def named_cases() -> list[Case]:
    """The payloads issue 8 names, and their close relatives."""
    cases: list[Case] = [
        ("surrogate-100-bytes", ALL, surrogate_100_bytes),
        ("surrogate-escape", ("sample",),
         lambda mid, ts: dumps(sample_dict(mid, ts))[:-1] + b', "pool_url": "\\ud800"}'),
        ("brackets-5000", ALL, lambda mid, ts: nested_list(5000)),
        ("braces-5000", ALL, lambda mid, ts: nested_object(5000)),
        ("deep-extra-list-1000", ("sample",),
         lambda mid, ts: with_extra(sample_dict(mid, ts), nested_list(1000))),
        ("deep-extra-object-1000", ("sample",),
         lambda mid, ts: with_extra(sample_dict(mid, ts), nested_object(1000))),
        ("deep-extra-status-1000", ("status",),
         lambda mid, ts: with_extra(status_dict(), nested_list(1000))),
        ("deep-extra-info-1000", ("info",),
         lambda mid, ts: with_extra(info_dict(mid), nested_list(1000))),
        ("deep-extra-alert-1000", ("alert",),
         lambda mid, ts: with_extra(alert_dict(mid, "overheat"), nested_list(1000))),
        ("deep-33", ALL, lambda mid, ts: nested_list(33)),
        _sample_case("hashrate-1.7e308", hashrate_ths=HUGE_HASHRATE),
        _sample_case("hashrate-negative", hashrate_ths=-1.0),
        _sample_case("hashrate-nan", hashrate_ths=float("nan")),
        _sample_case("hashrate-inf", hashrate_ths=float("inf")),
        ("hashrate-1e400", ("sample",),
         lambda mid, ts: dumps(sample_dict(mid, ts))[:-1] + b', "hashrate_ths": 1e400}'),
        _sample_case("temp-1e308", temp_c=1e308),
        _sample_case("temp-nan", temp_c=float("nan")),
        _sample_case("power-negative-inf", power_w=float("-inf")),
        _sample_case("fans-huge", fan_rpm=[2**40, -1, 4000]),
        _sample_case("fans-10000", fan_rpm=[4000] * 10000),
        _sample_case("shares-2**64", shares_accepted=2**64),
        _sample_case("shares-2**63", shares_accepted=2**63),
        _sample_case("shares-negative", shares_rejected=-5),
        _sample_case("uptime-10**30", uptime_s=10**30),
        _sample_case("best-diff-1e300", best_diff=1e300),
        _sample_case("pool-nul", pool_url="stratum\x00evil"),
        _sample_case("pool-60k", pool_url="p" * 60_000),
        _sample_case("ts-month-13", ts="2026-13-45T99:99:99.999Z"),
        _sample_case("ts-year-0", ts="0000-01-01T00:00:00.000Z"),
        _sample_case("ts-year-9999", ts="9999-12-31T23:59:59.999Z"),
        _sample_case("ts-number", ts=1_700_000_000),
        _sample_case("ts-naive", ts="2026-01-01T00:00:00"),
        _sample_case("miner-id-upper", miner_id="UPPER"),
        _sample_case("miner-id-65", miner_id="h" * 65),
        _sample_case("miner-id-number", miner_id=5),
        ("miner-id-missing", ("sample",),
         lambda mid, ts: dumps({k: v for k, v in sample_dict(mid, ts).items()
                                if k != "miner_id"})),
        ("hashrate-missing", ("sample",),
         lambda mid, ts: dumps({k: v for k, v in sample_dict(mid, ts).items()
                                if k != "hashrate_ths"})),
        ("mismatch-miner-id", ("sample", "info", "alert"),
         lambda mid, ts: dumps(sample_dict(MISMATCH_PREFIX + "a", ts))),
        ("claims-valid-miner", ("sample",),
         lambda mid, ts: dumps(sample_dict(VALID_MINERS[1], ts))),
        ("mismatch-info", ("info",), lambda mid, ts: dumps(info_dict(MISMATCH_PREFIX + "b"))),
        ("mismatch-alert-miner", ("alert",),
         lambda mid, ts: dumps(alert_dict(MISMATCH_PREFIX + "c", mid))),
        ("mismatch-alert-rule", ("alert",),
         lambda mid, ts: dumps(alert_dict(mid, "some-other-rule"))),
        ("bom-prefix", ("sample",), lambda mid, ts: b"\xef\xbb\xbf" + dumps(sample_dict(mid, ts))),
        ("trailing-garbage", ("sample",), lambda mid, ts: dumps(sample_dict(mid, ts)) + b"xyz"),
        ("duplicate-keys", ("sample",),
         lambda mid, ts: dumps(sample_dict(mid, ts))[:-1] + b', "hashrate_ths": "dup"}'),
        ("empty", ALL, lambda mid, ts: b""),
        ("whitespace", ALL, lambda mid, ts: b" \n\t "),
        ("json-null", ALL, lambda mid, ts: b"null"),
        ("json-number", ALL, lambda mid, ts: b"1e999"),
        ("json-string", ALL, lambda mid, ts: b'"online"'),
        ("json-list", ALL, lambda mid, ts: b"[]"),
        ("json-object", ALL, lambda mid, ts: b"{}"),
        ("json-true", ALL, lambda mid, ts: b"true"),
        ("nul-bytes", ALL, lambda mid, ts: b"\x00" * 64),
        # status
        ("status-state", ("status",), lambda mid, ts: dumps(status_dict(state="burning"))),
        ("status-failures-negative", ("status",), lambda mid, ts: dumps(status_dict(failures=-1))),
        ("status-failures-2**40", ("status",),
         lambda mid, ts: dumps(status_dict(failures=2**40))),
        ("status-failures-float", ("status",),
         lambda mid, ts: dumps(status_dict(failures=1e300))),
        ("status-since-bad", ("status",),
         lambda mid, ts: dumps(status_dict(since="2026-02-30T25:61:61.000Z"))),
        ("status-since-number", ("status",), lambda mid, ts: dumps(status_dict(since=5))),
        ("status-reason-100k", ("status",),
         lambda mid, ts: dumps(status_dict(reason="r" * 100_000))),
        ("status-reason-nul", ("status",), lambda mid, ts: dumps(status_dict(reason="a\x00b"))),
        # info
        ("info-port", ("info",), lambda mid, ts: dumps(info_dict(mid, port=70000))),
        ("info-port-negative", ("info",), lambda mid, ts: dumps(info_dict(mid, port=-1))),
        ("info-port-text", ("info",), lambda mid, ts: dumps(info_dict(mid, port="80"))),
        ("info-driver-1k", ("info",), lambda mid, ts: dumps(info_dict(mid, driver="d" * 1000))),
        ("info-mac-1k", ("info",), lambda mid, ts: dumps(info_dict(mid, mac="m" * 1000))),
        ("info-host-nul", ("info",), lambda mid, ts: dumps(info_dict(mid, host="10.0.0.5\x00"))),
        # alert
        ("alert-state", ("alert",), lambda mid, ts: dumps(alert_dict(mid, "overheat",
                                                                     state="burning"))),
        ("alert-severity", ("alert",), lambda mid, ts: dumps(alert_dict(mid, "overheat",
                                                                        severity="doom"))),
        ("alert-threshold-nan", ("alert",),
         lambda mid, ts: dumps(alert_dict(mid, "overheat", threshold=float("nan")))),
        ("alert-threshold-1e400", ("alert",),
         lambda mid, ts: dumps(alert_dict(mid, "overheat"))[:-1] + b', "threshold": 1e400}'),
        ("alert-value-text", ("alert",), lambda mid, ts: dumps(alert_dict(mid, "overheat",
                                                                          value="hot"))),
        ("alert-ts-bad", ("alert",),
         lambda mid, ts: dumps(alert_dict(mid, "overheat", ts="2026-99-99T00:00:00.000Z"))),
        ("alert-message-100k", ("alert",),
         lambda mid, ts: dumps(alert_dict(mid, "overheat", message="m" * 100_000))),
        # labels and mutes (what the api publishes and the collector and alerts read)
        ("label-too-long", ("label",), lambda mid, ts: dumps({"label": "L" * 101, "ts": ts})),
        ("label-control", ("label",), lambda mid, ts: dumps({"label": "a\nb", "ts": ts})),
        ("label-number", ("label",), lambda mid, ts: dumps({"label": 7, "ts": ts})),
        ("label-ts-bad", ("label",),
         lambda mid, ts: dumps({"label": "x", "ts": "2026-99-99T00:00:00.000Z"})),
        ("mute-other-id", ("mute",), lambda mid, ts: dumps(
            {"id": "someone-else", "until": ts, "created": ts})),
        ("mute-until-bad", ("mute",), lambda mid, ts: dumps(
            {"id": mid, "until": "2026-02-30T00:00:00.000Z", "created": ts})),
        ("mute-bad-miner", ("mute",), lambda mid, ts: dumps(
            {"id": mid, "miner_id": "Not A/Slug", "until": ts, "created": ts})),
        # service status (plain text)
        ("service-nul", ("service",), lambda mid, ts: b"online\x00"),
        ("service-upper", ("service",), lambda mid, ts: b"ONLINE"),
        ("service-newline", ("service",), lambda mid, ts: b"offline\n"),
        ("service-json", ("service",), lambda mid, ts: b'{"state": "online"}'),
        ("service-100k", ("service",), lambda mid, ts: b"o" * 100_000),
        # a service's stats (what the api exposes at GET /metrics)
        ("stats-unknown-metric", ("stats",), lambda mid, ts: dumps(stats_dict(
            mid, ts, {"name": "minerwatch_evil_total", "value": 1}))),
        ("stats-300-metrics", ("stats",), lambda mid, ts: dumps(stats_dict(
            mid, ts, *[{"name": "minerwatch_collector_miners", "value": 1}] * 300))),
        ("stats-label-1k", ("stats",), lambda mid, ts: dumps(stats_dict(
            mid, ts, {"name": "minerwatch_collector_poll_failures_total", "value": 1,
                      "labels": {"reason": "r" * 1000}}))),
        ("stats-labels-100", ("stats",), lambda mid, ts: dumps(stats_dict(
            mid, ts, {"name": "minerwatch_collector_polls_total", "value": 1,
                      "labels": {f"l{n}": "v" for n in range(100)}}))),
        ("stats-value-nan", ("stats",), lambda mid, ts: dumps(stats_dict(
            mid, ts, {"name": "minerwatch_collector_miners", "value": float("nan")}))),
        ("stats-value-text", ("stats",), lambda mid, ts: dumps(stats_dict(
            mid, ts, {"name": "minerwatch_collector_miners", "value": "many"}))),
        ("stats-other-service", ("stats",), lambda mid, ts: dumps(stats_dict("store", ts))),
        ("stats-metrics-object", ("stats",),
         lambda mid, ts: dumps({"service": mid, "ts": ts, "metrics": {"a": 1}})),
    ]
    for schema in (0, 2, -1, "1", 1.5, 2**64, None, True):
        cases.append(_sample_case(f"schema-{schema!r}", schema=schema))
    for name, wrong in (("hashrate_ths", "fast"), ("power_w", [1]), ("temp_c", {"c": 1}),
                        ("fan_rpm", "4000"), ("fan_rpm", [1.5]), ("is_mining", "yes"),
                        ("shares_accepted", 1.5), ("uptime_s", "1h"), ("pool_url", 7),
                        ("best_diff", True), ("vr_temp_c", "60")):
        cases.append(_sample_case(f"type-{name}-{type(wrong).__name__}", **{name: wrong}))
    for index, raw in enumerate(INVALID_UTF8):
        cases.append((f"invalid-utf8-{index}", ALL, constant(raw)))
    cases.append(("invalid-utf8-in-sample", ("sample",),
                  lambda mid, ts: dumps(sample_dict(mid, ts, pool_url="pool"))
                  .replace(b"pool", b"po\xfe\xffl", 1)))
    for size in HUGE_SIZES:
        cases.append((f"huge-{size}", ALL, constant(huge_string_payload(size))))
    cases.append(("huge-sample-200k", ("sample",),
                  lambda mid, ts: dumps(sample_dict(mid, ts, pool_url="u" * 200_000))))
    return cases


# --- seeded random payloads -------------------------------------------------------------


_KEYS = ("schema", "miner_id", "ts", "hashrate_ths", "power_w", "temp_c", "fan_rpm",
         "is_mining", "state", "since", "failures", "rule", "threshold", "value", "port",
         "driver", "host", "extra", "", "\u0000", "é", "\ud800")


_LEAVES: tuple[JsonValue, ...] = (
    None, True, False, 0, -1, 7, 2**63, 2**64, -(2**63) - 1, 10**30, 1.7e308, -1.7e308,
    5e-324, -0.0, float("nan"), float("inf"), float("-inf"), 3.25, "", "online", "offline",
    "firing", "2026-01-01T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "\ud800", "\x00",
    [], {},
)


def random_leaf(rng: random.Random) -> JsonValue:
    roll = rng.random()
    if roll < 0.75:
        return _LEAVES[int(roll * 4 * len(_LEAVES) / 3)]
    if roll < 0.85:
        return rng.random() * 2e6 - 1e6
    if roll < 0.97:  # any UTF-16 code unit: controls and lone surrogates included
        return rng.randbytes(2 * int(1 + rng.random() * 8)).decode("utf-16-le", "surrogatepass")
    return "x" * int(100 + rng.random() * 900)


def random_json_value(rng: random.Random, depth: int) -> JsonValue:
    """A random JSON value nesting exactly ``depth`` levels along one path."""
    if depth <= 0:
        return random_leaf(rng)
    width = 1 + int(rng.random() * 3)
    deep_at = int(rng.random() * width)
    children = [random_json_value(rng, depth - 1) if i == deep_at else random_leaf(rng)
                for i in range(width)]
    if rng.random() < 0.5:
        return children
    return {_KEYS[int(rng.random() * len(_KEYS))] + str(i): child
            for i, child in enumerate(children)}


def random_depth(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.80:
        return int(rng.random() * 7)
    if roll < 0.95:
        return 28 + int(rng.random() * 12)  # around the decoder's limit of 32
    return 100 + int(rng.random() * 1400)


def json_pool(rng: random.Random, size: int = 2000) -> list[JsonValue]:
    """Random JSON values up to 6 levels deep, for ``random_json`` to pick and nest
    (building each payload's value from scratch cost most of the plan's time)."""
    return [random_json_value(rng, int(rng.random() * 7)) for _ in range(size)]


def random_json(rng: random.Random, pool: list[JsonValue], topic_id: str, ts: str, *,
                may_pose: bool) -> bytes:
    """Random JSON of random depth. When ``may_pose``, it sometimes carries the fields of
    a real message so that decoding gets further (never for a valid miner's topic)."""
    depth = random_depth(rng)
    if depth > 60:  # deeper than the test's own json module should recurse
        inner = dumps(random_leaf(rng))
        opener, closer = (b"[", b"]") if rng.random() < 0.5 else (b'{"k":', b"}")
        return opener * depth + inner + closer * depth
    value: object = pool[int(rng.random() * len(pool))]
    if depth >= 28:
        for _ in range(depth):
            value = [value] if rng.random() < 0.5 else {_KEYS[int(rng.random() * 5)]: value}
    if may_pose and rng.random() < 0.4:
        value = {**sample_dict(topic_id, ts), _KEYS[int(rng.random() * len(_KEYS))]: value}
    try:
        return dumps(value)
    except (ValueError, RecursionError):
        return b"[]"


def random_bytes(rng: random.Random) -> bytes:
    roll = rng.random()
    size = int(roll * 50) if roll < 0.3 else int(roll * 400) if roll < 0.9 else int(roll * 1500)
    data = rng.randbytes(size)
    if rng.random() < 0.3:
        data = b'{"' + data  # into the decoder a little further
    return data


def mutate(rng: random.Random, payload: bytes) -> bytes:
    """1 to 4 random edits of a valid payload: flipped, deleted, inserted, duplicated or
    swapped bytes, truncation, a digit replaced by a huge exponent."""
    data = bytearray(payload)
    for _ in range(1 + int(rng.random() * 4)):
        if not data:
            break
        op = int(rng.random() * 7)
        at = int(rng.random() * len(data))
        if op == 0:
            data[at] ^= 1 << below(rng, 8)
        elif op == 1:
            del data[at:at + 1 + below(rng, 19)]
        elif op == 2:
            data[at:at] = rng.randbytes(1 + below(rng, 9))
        elif op == 3:
            end = min(len(data), at + 1 + below(rng, 39))
            data[at:at] = data[at:end] * (2 + below(rng, 48))
        elif op == 4:
            del data[at:]
        elif op == 5:
            for _ in range(20):  # a digit, if one turns up soon
                spot = int(rng.random() * len(data))
                if 0x30 <= data[spot] <= 0x39:
                    data[spot:spot + 1] = pick(rng, (b"e999", b"e-999", b"99999999999999999999",
                                                      b".", b"-", b"NaN", b"Infinity"))
                    break
        else:
            data[at:at] = pick(rng, (b"[", b"{", b'"', b"\\", b"\xed\xa0\x80", b"\x00"))
    return bytes(data)


# --- topics -----------------------------------------------------------------------------


_BAD_IDS = ("UPPER", "a.b", "h" * 65, "ünï", "", " ", "h 1", "..", "$x", "h\u200b")
_RULES = ("overheat", "vr_overheat", "r1", "ünï", "x" * 129)
#: Not the services' own names: their status topics must say only what the services said
#: (a test reads them to tell a death seen from one unseen).
_SERVICES = ("s1", "store2", "api-x", "ünï", "x" * 129)
_STATS_SERVICES = (*_SERVICES, "collector", "store", "alerts")


@dataclass
class TopicMaker:
    """Topics for hostile messages of each kind, under ``base``."""

    base: str
    rng: random.Random
    junk_serial: int = 0

    def miner_id(self) -> str:
        roll = self.rng.random()
        if roll < 0.70:
            return f"h{below(self.rng, HOSTILE_IDS)}"
        if roll < 0.85:
            return pick(self.rng, VALID_MINERS)
        return pick(self.rng, _BAD_IDS)

    def topic(self, kind: Kind) -> tuple[str, str]:
        """(topic, the id a payload should claim to match it)."""
        base, rng = self.base, self.rng
        if kind in ("sample", "status", "info", "label"):
            mid = self.miner_id()
            return f"{base}/miners/{mid}/{kind}", mid
        if kind == "mute":
            mute_id = self.miner_id()  # the same pattern as a miner id
            return f"{base}/mutes/{mute_id}", mute_id
        if kind == "alert":
            mid, rule = self.miner_id(), pick(rng, _RULES)
            return f"{base}/alerts/{mid}/{rule}", mid
        if kind == "service":
            name = pick(rng, _SERVICES)
            return f"{base}/services/{name}/status", name
        if kind == "stats":  # the real services too: no status of theirs is touched
            name = pick(rng, _STATS_SERVICES)
            return f"{base}/services/{name}/stats", name
        return self.junk(), "junk"

    def junk(self) -> str:
        """Topics under the base that are not in the registry; three in four of them new
        each time (a cache of every topic ever seen grows with those)."""
        base, rng = self.base, self.rng
        roll = below(rng, 32)
        mid = self.miner_id()
        if roll < 24:
            self.junk_serial += 1
            return f"{base}/junk/{self.junk_serial}"
        return (
            f"{base}/miners/{mid}",
            f"{base}/miners/{mid}/sample/extra",
            f"{base}/miners/{mid}/samples",
            f"{base}/alerts/{mid}",
            f"{base}/alerts/{mid}/overheat/x",
            f"{base}/services/store",
            f"{base}/services/api/status/x",
            f"{base}/ünï/{below(rng, 100)}/{'y' * below(rng, 2000)}",
        )[roll - 24]


# --- the plan ---------------------------------------------------------------------------


#: A kind for a random payload, by weight: samples 35, status, info and alerts 10 each,
#: labels, mutes, service status and stats 5 each, junk topics 20.
_KIND_TABLE: tuple[Kind, ...] = tuple(
    kind for kind, weight in zip(KINDS, (35, 10, 10, 5, 10, 5, 5, 5, 20), strict=True)
    for _ in range(weight))


#: Cases that claim a valid miner themselves: on that miner's own topic they would be
#: valid samples.
_NEVER_ON_VALID = frozenset({"named:claims-valid-miner"})


class _Builder:
    """Hostile publications from one seeded generator, counted by label."""

    def __init__(self, base: str, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.topics = TopicMaker(base, self.rng)
        self.json_pool = json_pool(self.rng)
        self.counts: Counter[str] = Counter()
        rng = self.rng
        # Times for hostile payloads, never on a whole second (where the valid samples are).
        self.stamps = [format_ts(start + timedelta(
            milliseconds=below(rng, 20 * 60) * 1000 + 1 + below(rng, 999)))
            for _ in range(4096)]

    def stamp(self) -> str:
        return self.stamps[int(self.rng.random() * len(self.stamps))]

    def publication(self, label: str, kind: Kind, make: Maker, retain: bool) -> Publication:
        topic, topic_id = self.topics.topic(kind)
        while label in _NEVER_ON_VALID and topic_id in VALID_MINERS:
            topic, topic_id = self.topics.topic(kind)
        if kind == "sample" and topic_id in VALID_MINERS and label.startswith("named:"):
            # On a valid miner's topic a sample-shaped case claims another miner, so that
            # a case the contract keeps (an impossible optional value becomes null)
            # cannot add a row to a valid miner's history.
            topic_id = f"h{below(self.rng, HOSTILE_IDS)}"
        self.counts[label] += 1
        return Publication(topic, make(topic_id, self.stamp()), retain, label)

    def random_kind(self) -> Kind:
        return pick(self.rng, _KIND_TABLE)


def history_start(now: datetime) -> datetime:
    """The valid samples' first second: a minute start, 20 minutes before ``now``."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=20)


def poison(base: str, seed: int, now: datetime) -> list[Publication]:
    """Each named case once per kind it goes to, retained: published before the services
    start, so each meets them at its first subscribe."""
    builder = _Builder(base, seed + 1, history_start(now))
    return [builder.publication(f"named:{name}", kind, make, True)
            for name, kinds, make in named_cases() for kind in kinds]


def build_plan(base: str, seed: int, now: datetime) -> Plan:
    """Valid samples of ``VALID_MINERS`` over the 20 minutes before ``now``, interleaved
    with hostile messages: ``HOSTILE_TOTAL`` of them with the ``poison`` set."""
    start = history_start(now)
    builder = _Builder(base, seed, start)
    rng = builder.rng
    retained_first = poison(base, seed, now)
    hostile: list[Publication] = []
    for name, kinds, make in named_cases():
        for kind in kinds:
            for retain in (False, True) if name.startswith("huge-") else (False, True, False):
                hostile.append(builder.publication(f"named:{name}", kind, make, retain))

    for index in range(HOSTILE_TOTAL - len(hostile) - len(retained_first)):
        retain = rng.random() < 0.5
        family = index % 3
        if family == 0:
            hostile.append(builder.publication("random-bytes", builder.random_kind(),
                                               lambda mid, ts: random_bytes(rng), retain))
        elif family == 1:
            kind = "sample" if rng.random() < 0.8 else builder.random_kind()
            mutant = f"mut-{below(rng, 50)}"

            def mutated(mid: str, ts: str, mutant: str = mutant) -> bytes:
                # msgspec: ten times json's speed, and the template holds nothing odd
                template = msgspec.json.encode(
                    sample_dict(mutant if mid in VALID_MINERS else mid, ts))
                return mutate(rng, template)

            hostile.append(builder.publication("mutated-sample", kind, mutated, retain))
        else:
            hostile.append(builder.publication(
                "random-json", builder.random_kind(),
                lambda mid, ts: random_json(rng, builder.json_pool, mid, ts,
                                            may_pose=mid not in VALID_MINERS),
                retain))
    rng.shuffle(hostile)
    counts = builder.counts
    for pub in retained_first:
        counts[pub.label] += 1

    valid: dict[tuple[str, str], Sample] = {}
    valid_pubs: list[Publication] = []
    for i in range(VALID_PER_MINER):
        for index in range(len(VALID_MINERS)):
            sample = valid_sample(index, i, start)
            key = (sample.miner_id, sample.ts)
            valid[key] = sample
            # The collector publishes samples retained; half of these are, half not.
            valid_pubs.append(Publication(f"{base}/miners/{sample.miner_id}/sample",
                                          encode(sample), (i + index) % 2 == 0, "valid", key))
    counts["valid"] = len(valid_pubs)

    huge_bucket = start + timedelta(minutes=HUGE_MINUTE)
    huge = [Publication(
        f"{base}/miners/{HUGE_MINER}/sample",
        dumps(sample_dict(HUGE_MINER,
                          format_ts(huge_bucket + timedelta(seconds=s, milliseconds=500)),
                          hashrate_ths=HUGE_HASHRATE)),
        s == 30, "huge-hashrate-rollup") for s in (10, 20, 30)]
    counts["huge-hashrate-rollup"] = len(huge)
    huge_after = (HUGE_MINER, format_ts(huge_bucket + timedelta(seconds=30)))

    flood: list[Publication] = []
    every = len(hostile) // len(valid_pubs)
    position = 0
    for pub in valid_pubs:
        flood.append(pub)
        if pub.key == huge_after:
            flood.extend(huge)  # in the middle of that minute's valid samples
        flood.extend(hostile[position:position + every])
        position += every
    flood.extend(hostile[position:])
    return Plan(base, seed, retained_first, flood, valid, huge_bucket, counts)
