"""How a simulated miner's values move: pure functions of its seed and of time.

Nothing here ticks. Every value is computed from ``now`` when a request arrives, so a fleet
of thousands of miners costs nothing between requests. Noise is deterministic (an integer
hash of the miner's key and a time step, smoothly interpolated), so a given seed always
tells the same story relative to the fleet's start.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum

_MASK64 = (1 << 64) - 1


class Fault(StrEnum):
    """What is wrong with a miner, switched on from tests or the control API.

    One at a time: a new fault replaces the previous one. The one-shot faults (``ONE_SHOT``)
    change a counter once and then leave the miner at ``none``.
    """

    NONE = "none"
    TIMEOUT = "timeout"  # accept connections, never answer
    REFUSE = "refuse"  # stop listening: connects are refused
    GARBAGE = "garbage"  # answer with bytes that are not valid JSON
    PAUSED = "paused"  # reachable but not hashing
    NO_LIVE = "nolive"  # AxeOS live WebSocket down: open ones drop, new ones get 503
    STALLED = "stalled"  # claims to mine, hashrate reading frozen, share counters stopped
    FAN_STOPPED = "fan_stopped"  # one fan reads 0 rpm, the others normal
    REJECTS = "rejects"  # a burst of rejects: BURST_REJECT_RATIO of new shares rejected
    FALLBACK_POOL = "fallback_pool"  # mining on the fallback pool, the first one dead
    POOL_DOWN = "pool_down"  # no pool connection: every pool dead, no shares
    BLOCK = "block"  # one-shot: the found-blocks counter rises by one
    BEST_DIFF = "best_diff"  # one-shot: a new all-time best difficulty
    SLOW = "slow"  # hashing at SLOW_FACTOR of its nominal rate (a failing board, a bad PSU)


#: Faults that act once when set and then read back as ``none``.
ONE_SHOT = frozenset({Fault.BLOCK, Fault.BEST_DIFF})
#: The share of its nominal hashrate a SLOW miner reaches.
SLOW_FACTOR = 0.5
#: Faults during which no share is found (the share counters stand still).
NO_SHARES = frozenset({Fault.STALLED, Fault.POOL_DOWN})
#: The share of new shares rejected during a REJECTS burst: far above any healthy miner.
BURST_REJECT_RATIO = 0.2


def _mix64(value: int) -> int:
    """splitmix64 finalizer: a cheap, well-spread integer hash."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def hash_unit(key: int, step: int) -> float:
    """A deterministic value in [-1, 1) for (key, step)."""
    return _mix64(key ^ _mix64(step & _MASK64)) / float(1 << 63) - 1.0


def value_noise(key: int, t: float, period_s: float) -> float:
    """Smooth noise in [-1, 1): random lattice values every ``period_s``, eased between."""
    position = t / period_s
    step = math.floor(position)
    frac = position - step
    eased = frac * frac * (3.0 - 2.0 * frac)
    start = hash_unit(key, step)
    return start + (hash_unit(key, step + 1) - start) * eased


def channel_key(key: int, channel: int) -> int:
    """An independent noise stream of the same miner (hashrate, temperature, fans...)."""
    return _mix64(key * 1_000_003 + channel)


@dataclass(frozen=True, slots=True)
class Profile:
    """What a kind of hardware does nominally; each miner draws its own values around it."""

    nominal_ghs: tuple[float, float]  # range of this unit's real average
    expected_ghs: float  # what the firmware claims it should do
    temp_setpoint_c: tuple[float, float]  # where the hottest sensor settles
    temp_start_c: tuple[float, float]  # where it starts warming from at boot
    temp_tau_s: tuple[float, float]  # how slowly it warms up
    share_rate_per_s: tuple[float, float]
    reject_ratio: tuple[float, float]
    session_best_diff: tuple[float, float]  # best share of the first ten minutes
    all_time_best_diff: tuple[float, float]
    power_w: tuple[float, float]  # 0 when the hardware reports no power
    max_boot_offset_s: float  # miners were booted up to this long before the fleet start


BITAXE_GAMMA = Profile(
    nominal_ghs=(1170.0, 1230.0),
    expected_ghs=1224.0,  # 600 MHz x 2040 small cores (BM1370)
    temp_setpoint_c=(55.0, 63.0),
    temp_start_c=(38.0, 46.0),
    temp_tau_s=(240.0, 480.0),
    share_rate_per_s=(0.15, 0.35),
    reject_ratio=(0.001, 0.006),
    session_best_diff=(2e6, 4e7),
    all_time_best_diff=(5e8, 2e10),
    power_w=(17.2, 19.2),
    max_boot_offset_s=900.0,
)

ANTMINER_S19_PRO = Profile(
    nominal_ghs=(107_000.0, 112_000.0),
    expected_ghs=110_000.0,
    temp_setpoint_c=(68.0, 74.0),
    temp_start_c=(40.0, 48.0),
    temp_tau_s=(300.0, 600.0),
    share_rate_per_s=(0.8, 1.6),
    reject_ratio=(0.0005, 0.003),
    session_best_diff=(5e7, 8e8),
    all_time_best_diff=(1e10, 3e11),
    power_w=(0.0, 0.0),
    max_boot_offset_s=900.0,
)


def _draw(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(bounds[0], bounds[1])


@dataclass(slots=True)
class Stopwatch:
    """Total time spent in some condition (paused, stalled...), so values stay functions of
    ``now``: the time inside is subtracted instead of anything ticking."""

    total_s: float = 0.0
    since: float | None = None

    @property
    def running(self) -> bool:
        return self.since is not None

    def set(self, running: bool, now: float) -> None:
        if running and self.since is None:
            self.since = now
        elif not running and self.since is not None:
            self.total_s += max(0.0, now - self.since)
            self.since = None

    def elapsed_s(self, now: float) -> float:
        if self.since is None:
            return self.total_s
        return self.total_s + max(0.0, now - self.since)


@dataclass(slots=True)
class MinerModel:
    """One miner's nominal values plus the little state that time alone cannot give."""

    key: int
    boot_at: float  # epoch seconds
    nominal_ghs: float
    expected_ghs: float
    temp_setpoint_c: float
    temp_start_c: float
    temp_tau_s: float
    share_rate_per_s: float
    share_phase: float
    reject_ratio: float
    session_best_diff: float
    all_time_best_diff: float
    power_w: float
    condition: Fault = Fault.NONE  # the lasting fault in force (never a one-shot)
    pause_clock: Stopwatch = field(default_factory=Stopwatch)
    no_share_clock: Stopwatch = field(default_factory=Stopwatch)  # stalled or pool down
    burst_clock: Stopwatch = field(default_factory=Stopwatch)  # rejects burst
    stalled_at: float | None = None  # the readings frozen by STALLED are those of this time
    best_floor: float = 0.0  # the best set by BEST_DIFF; the session best never falls below
    new_bests: int = 0
    blocks_found: int = 0
    temp_override: float | None = field(default=None)

    @classmethod
    def create(cls, seed: int, kind: str, index: int, profile: Profile, t0: float) -> MinerModel:
        rng = random.Random(f"minerwatch-sim:{seed}:{kind}:{index}")
        return cls(
            key=rng.getrandbits(64),
            boot_at=t0 - rng.uniform(0.0, profile.max_boot_offset_s),
            nominal_ghs=_draw(rng, profile.nominal_ghs),
            expected_ghs=profile.expected_ghs,
            temp_setpoint_c=_draw(rng, profile.temp_setpoint_c),
            temp_start_c=_draw(rng, profile.temp_start_c),
            temp_tau_s=_draw(rng, profile.temp_tau_s),
            share_rate_per_s=_draw(rng, profile.share_rate_per_s),
            share_phase=rng.random(),
            reject_ratio=_draw(rng, profile.reject_ratio),
            session_best_diff=_draw(rng, profile.session_best_diff),
            all_time_best_diff=float(int(_draw(rng, profile.all_time_best_diff))),
            power_w=_draw(rng, profile.power_w),
        )

    # -- time ---------------------------------------------------------------------------

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.boot_at)

    def uptime_s(self, now: float) -> int:
        return int(self.age_s(now))

    @property
    def paused(self) -> bool:
        return self.pause_clock.running

    @property
    def stalled(self) -> bool:
        return self.stalled_at is not None

    def set_paused(self, paused: bool, now: float) -> None:
        """Pausing freezes share counters; the model keeps how long it was paused."""
        self.pause_clock.set(paused, now)

    def apply(self, fault: Fault, now: float) -> None:
        """Put ``fault`` in force at ``now``: one-shots act once and leave ``none``.

        Setting the fault already in force changes nothing (a stall keeps its frozen values).
        """
        if fault is Fault.BLOCK:
            self.blocks_found += 1
            fault = Fault.NONE
        elif fault is Fault.BEST_DIFF:
            self.raise_best(now)
            fault = Fault.NONE
        self.condition = fault
        self.pause_clock.set(fault is Fault.PAUSED, now)
        self.no_share_clock.set(fault in NO_SHARES, now)
        self.burst_clock.set(fault is Fault.REJECTS, now)
        if fault is not Fault.STALLED:
            self.stalled_at = None
        elif self.stalled_at is None:
            self.stalled_at = now

    def raise_best(self, now: float) -> None:
        """A share better than any before: 1.25 to 2.25 times the best so far."""
        bump = 1.25 + (hash_unit(self.key, 6_000 + self.new_bests) + 1.0) / 2.0
        self.new_bests += 1
        best = float(int(self.best_ever(now) * bump) + 1)
        self.all_time_best_diff = best
        self.best_floor = best

    def mining_s(self, now: float) -> float:
        return max(0.0, self.age_s(now) - self.pause_clock.elapsed_s(now))

    def share_s(self, now: float) -> float:
        """Time spent finding shares: mining, not stalled, with a pool to send them to."""
        return max(0.0, self.mining_s(now) - self.no_share_clock.elapsed_s(now))

    def reading_time(self, now: float) -> float:
        """The time the hashrate reading is taken at: a stall freezes it where it began."""
        return now if self.stalled_at is None else self.stalled_at

    # -- values -------------------------------------------------------------------------

    def noise(self, now: float, channel: int, period_s: float) -> float:
        return value_noise(channel_key(self.key, channel), self.age_s(now), period_s)

    def hashrate_ghs(self, now: float, channel: int = 0) -> float:
        """Short-window hashrate: a few percent of slow drift plus faster jitter; 0 paused,
        SLOW_FACTOR of it slow."""
        if self.paused:
            return 0.0
        at = self.reading_time(now)
        wobble = 0.02 * self.noise(at, 10 + channel, 90.0) + 0.015 * self.noise(
            at, 20 + channel, 3.0
        )
        factor = SLOW_FACTOR if self.condition is Fault.SLOW else 1.0
        return self.nominal_ghs * factor * (1.0 + wobble)

    def average_ghs(self, now: float) -> float:
        """Lifetime average: nominal, diluted by time spent paused."""
        age = self.age_s(now)
        if age <= 0.0:
            return 0.0
        return (
            self.nominal_ghs
            * (1.0 + 0.004 * self.noise(now, 30, 600.0))
            * (self.mining_s(now) / age)
        )

    def temp_c(self, now: float, channel: int = 0) -> float:
        """Hottest sensor: warms from boot toward a slowly wandering setpoint.

        An override (set from a test or the control API) wins outright, so an overheat
        is visible on the very next request.
        """
        if self.temp_override is not None:
            return self.temp_override
        return self.natural_temp_c(now, channel)

    def natural_temp_c(self, now: float, channel: int = 0) -> float:
        """The temperature the model gives, ignoring any override."""
        age = self.age_s(now)
        setpoint = self.temp_setpoint_c + 1.5 * self.noise(now, 40, 900.0)
        warm_up = (self.temp_start_c - setpoint) * math.exp(-age / self.temp_tau_s)
        jitter = 0.6 * self.noise(now, 50 + channel, 7.0)
        return setpoint + warm_up + jitter

    def shares(self, now: float) -> tuple[int, int]:
        """(accepted, rejected), each only ever rising; still while no share is found.

        Both are floors of non-decreasing sums, so neither ever steps back by one when the
        other ticks; a rejects burst rejects ``BURST_REJECT_RATIO`` of what it finds.
        """
        burst_s = self.burst_clock.elapsed_s(now)
        normal = self.share_rate_per_s * max(0.0, self.share_s(now) - burst_s) + self.share_phase
        burst = self.share_rate_per_s * burst_s
        rejected = normal * self.reject_ratio + burst * BURST_REJECT_RATIO
        accepted = normal * (1.0 - self.reject_ratio) + burst * (1.0 - BURST_REJECT_RATIO)
        return int(accepted), int(rejected)

    def session_best(self, now: float) -> float:
        """Best share since boot: steps up at ever longer intervals, never goes down."""
        level = int(math.log2(1.0 + self.share_s(now) / 600.0))
        bump = (hash_unit(self.key, 1_000 + level) + 1.0) / 4.0  # [0, 0.5)
        natural = float(int(self.session_best_diff * (2**level) * (1.0 + bump)))
        return max(natural, self.best_floor)

    def best_ever(self, now: float) -> float:
        return max(self.all_time_best_diff, self.session_best(now))

    def power(self, now: float) -> float:
        """Watts at the wall of the hashing part: falls to idle draw when paused."""
        if self.paused:
            return self.power_w * 0.25
        return self.power_w * (1.0 + 0.02 * self.noise(now, 60, 20.0))
