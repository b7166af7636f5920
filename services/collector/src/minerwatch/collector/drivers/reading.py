"""What every driver returns: one normalized reading, or a PollError with a short reason."""

from __future__ import annotations

import json
from http import HTTPStatus

import msgspec

from minerwatch.collector.drivers.values import tidy
from minerwatch.shared.errors import one_line
from minerwatch.shared.schemas import MinerInfo, Sample, efficiency, finite


class PollError(Exception):
    """A poll that failed; ``reason`` is one short line for the status topic and the CLI
    that starts with what happened, so a person (and an alert) reads it at a glance:

    - ``timeout after 5.0 s``: no complete reply in time;
    - ``refused: nothing listens on port 80``: the address answered, the port did not;
    - ``unreachable: No route to host``: no connection at all (network, DNS);
    - ``closed without a reply``, ``closed mid-reply``, ``reset without a reply``: the
      miner hung up;
    - ``HTTP 503 Service Unavailable``: the miner's web server said no;
    - ``bad reply: not JSON at byte 12``: it answered, but not what a miner says.
    """

    def __init__(self, reason: str) -> None:
        reason = one_line(reason)  # whatever a firmware put in it
        super().__init__(reason)
        self.reason = reason


def refused_reason(port: int) -> str:
    return f"refused: nothing listens on port {port}"


def http_reason(status: int) -> str:
    """``HTTP 503 Service Unavailable``; just the code when it has no standard phrase."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


class Reading(msgspec.Struct, kw_only=True):
    """A Sample's measured fields (those ``shared.fields`` describes, but the derived
    ``efficiency_jth``), in Sample order and with Sample's types, plus the miner's
    identity. tests/test_reading.py holds the two to the descriptions."""

    hashrate_ths: float
    expected_hashrate_ths: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    vr_temp_c: float | None = None
    fan_rpm: list[int] = msgspec.field(default_factory=list)
    shares_accepted: int | None = None
    shares_rejected: int | None = None
    best_diff: float | None = None
    uptime_s: int | None = None
    pool_url: str | None = None
    is_mining: bool = True
    pool_fallback: bool | None = None
    pool_connected: bool | None = None
    blocks_found: int | None = None
    # identity
    make: str | None = None
    model: str | None = None
    firmware: str | None = None
    hostname: str | None = None
    mac: str | None = None

    def sample(self, miner_id: str, ts: str) -> Sample:
        # Field by field on purpose: once per poll, and a generic copy (a dict of the
        # described names into ``Sample(**...)``) measured 3x the cost (~6 µs, not 2).
        return Sample(
            miner_id=miner_id,
            ts=ts,
            hashrate_ths=self.hashrate_ths,
            expected_hashrate_ths=self.expected_hashrate_ths,
            power_w=self.power_w,
            efficiency_jth=tidy(finite(efficiency(self.power_w, self.hashrate_ths))),
            temp_c=self.temp_c,
            vr_temp_c=self.vr_temp_c,
            fan_rpm=list(self.fan_rpm),
            shares_accepted=self.shares_accepted,
            shares_rejected=self.shares_rejected,
            best_diff=self.best_diff,
            uptime_s=self.uptime_s,
            pool_url=self.pool_url,
            is_mining=self.is_mining,
            pool_fallback=self.pool_fallback,
            pool_connected=self.pool_connected,
            blocks_found=self.blocks_found,
        )

    def info(self, miner_id: str, driver: str, host: str, port: int,
             label: str | None = None) -> MinerInfo:
        return MinerInfo(
            miner_id=miner_id,
            driver=driver,
            host=host,
            port=port,
            make=self.make,
            model=self.model,
            firmware=self.firmware,
            hostname=self.hostname,
            mac=self.mac,
            label=label,
        )


def format_seconds(seconds: float) -> str:
    """``5`` -> ``5.0``, ``0.25`` -> ``0.25``: for "timeout after 5.0 s"."""
    return f"{seconds:.1f}" if round(seconds, 1) == seconds else f"{seconds:g}"


def timeout_reason(seconds: float) -> str:
    return f"timeout after {format_seconds(seconds)} s"


def decode_json(body: bytes | str) -> object:
    """Parse a reply; PollError with the byte where it breaks when it is not JSON.

    Bytes are decoded as UTF-8 with replacement (firmwares put raw bytes in names), and
    raw control characters inside strings are accepted (seen in the field)."""
    reply = body if isinstance(body, str) else body.decode("utf-8", errors="replace")
    if not reply.strip():
        raise PollError("bad reply: empty")
    try:
        return json.loads(reply, strict=False)
    except json.JSONDecodeError as exc:
        at = len(reply[: exc.pos].encode("utf-8"))
        truncated = exc.pos >= len(reply.rstrip()) or exc.msg.startswith("Unterminated")
        what = "truncated JSON" if truncated else "not JSON"
        raise PollError(f"bad reply: {what} at byte {at}") from None
    except RecursionError:
        raise PollError("bad reply: JSON nested too deep") from None
