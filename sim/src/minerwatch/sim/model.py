"""How a simulated miner's values move: pure functions of its seed and of time.

Nothing here ticks. Every value is computed from ``now`` when a request arrives, so a fleet
of thousands of miners costs nothing between requests. Noise is deterministic (an integer
hash of the miner's key and a time step, smoothly interpolated), so a given seed always
tells the same story relative to the fleet's start.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
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
#: Faults a restart cures: a hung mining loop, a paused miner; hardware and pool faults stay.
CURED_BY_RESTART = frozenset({Fault.STALLED, Fault.PAUSED})
#: Where the temperatures would settle with no power at all.
AMBIENT_C = 25.0
#: How fast the chip temperature follows a change of settings (boot warm-up is slower).
SETTINGS_TAU_S = 30.0
#: Above its stability limit a miner keeps this share of its hashrate at first, then loses
#: UNSTABLE_LOSS_PER_MHZ more per MHz beyond, never below UNSTABLE_FLOOR.
UNSTABLE_KEEP = 0.87
UNSTABLE_LOSS_PER_MHZ = 0.004
UNSTABLE_FLOOR = 0.4
#: ...and rejects this share of its shares, UNSTABLE_REJECTS_PER_MHZ more per MHz beyond.
UNSTABLE_REJECTS = 0.04
UNSTABLE_REJECTS_PER_MHZ = 0.002
UNSTABLE_REJECTS_MAX = 0.5


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
    frequency_mhz: float  # the settings every miner boots with, where the values above hold
    core_voltage_mv: int
    #: The hidden stability limit at ``core_voltage_mv`` lies this far above
    #: ``frequency_mhz``, so every miner is stable as it boots; it moves by ``limit_slope``
    #: MHz per mV of core voltage.
    limit_margin_mhz: tuple[float, float]
    limit_slope: tuple[float, float]


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
    frequency_mhz=600.0,
    core_voltage_mv=1150,
    limit_margin_mhz=(10.0, 40.0),  # 610-640 MHz at 1150 mV
    limit_slope=(0.4, 0.6),
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
    frequency_mhz=675.0,
    core_voltage_mv=1360,  # not reported by stock firmware; only the ratios matter
    limit_margin_mhz=(40.0, 80.0),
    limit_slope=(0.4, 0.6),
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


@dataclass(frozen=True, slots=True)
class Pool:
    """A stratum pool as the miner stores it (AxeOS keeps the host alone in ``host``)."""

    host: str
    port: int
    user: str
    password: str = ""

    @property
    def url(self) -> str:
        return f"stratum+tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Settings:
    """What can be written to a miner. Frozen: a change is a new object at a known time."""

    frequency_mhz: float
    core_voltage_mv: int
    auto_fan: bool = True
    fan_percent: int = 100  # the manual fan speed, in force while auto_fan is off
    temp_target_c: int = 60  # what the automatic fan aims for
    pools: tuple[Pool, ...] = ()  # by pool number
    pool_priority: tuple[int, ...] = ()  # pool numbers, first priority first


@dataclass(frozen=True, slots=True)
class ShareSegment:
    """The share counters since the last change of rates: counts at its start plus rate x
    time since, so they stay monotonic however the settings move."""

    accepted: float
    rejected: float
    share_s: float  # share time at the start of the segment
    burst_s: float  # burst time at the start of the segment
    rate_per_s: float
    reject_ratio: float


@dataclass(slots=True)
class MinerModel:
    """One miner's nominal values plus the little state that time alone cannot give.

    The nominal values (``nominal_ghs``, ``power_w``, ``temp_setpoint_c``) hold at the
    reference settings (``f0_mhz``/``v0_mv``, ``ref_asic_count`` chips); other settings
    scale them: hashrate with frequency, power with frequency x voltage squared, the
    temperature rise above ambient with the power per chip.
    """

    key: int
    boot_at: float  # epoch seconds
    nominal_ghs: float
    expected_ghs: float  # what the firmware claims at the reference settings
    temp_setpoint_c: float
    temp_start_c: float
    temp_tau_s: float
    share_rate_per_s: float
    share_phase: float
    reject_ratio: float
    session_best_diff: float
    all_time_best_diff: float
    power_w: float
    f0_mhz: float
    v0_mv: int
    limit_base_mhz: float  # the hidden highest stable frequency at v0_mv
    limit_slope: float  # MHz per mV
    settings: Settings
    segment: ShareSegment
    ref_asic_count: int = 1
    asic_count: int = 1
    core_scale: float = 1.0  # small cores relative to the reference chip
    condition: Fault = Fault.NONE  # the lasting fault in force (never a one-shot)
    user_paused: bool = False  # paused by a command (AxeOS pause, Avalon softoff)
    pause_clock: Stopwatch = field(default_factory=Stopwatch)
    no_share_clock: Stopwatch = field(default_factory=Stopwatch)  # stalled or pool down
    burst_clock: Stopwatch = field(default_factory=Stopwatch)  # rejects burst
    stalled_at: float | None = None  # the readings frozen by STALLED are those of this time
    best_floor: float = 0.0  # the best set by BEST_DIFF; the session best never falls below
    new_bests: int = 0
    blocks_found: int = 0
    temp_override: float | None = field(default=None)
    changed_at: float | None = None  # when the settings last changed (None: never)
    heat_from: float = 1.0  # the heat load the temperature was following at changed_at

    @classmethod
    def create(cls, seed: int, kind: str, index: int, profile: Profile, t0: float) -> MinerModel:
        rng = random.Random(f"minerwatch-sim:{seed}:{kind}:{index}")
        # the draws keep their order: a seed tells the same story as before settings existed
        key = rng.getrandbits(64)
        boot_at = t0 - rng.uniform(0.0, profile.max_boot_offset_s)
        nominal_ghs = _draw(rng, profile.nominal_ghs)
        temp_setpoint_c = _draw(rng, profile.temp_setpoint_c)
        temp_start_c = _draw(rng, profile.temp_start_c)
        temp_tau_s = _draw(rng, profile.temp_tau_s)
        share_rate_per_s = _draw(rng, profile.share_rate_per_s)
        share_phase = rng.random()
        reject_ratio = _draw(rng, profile.reject_ratio)
        session_best_diff = _draw(rng, profile.session_best_diff)
        all_time_best_diff = float(int(_draw(rng, profile.all_time_best_diff)))
        power_w = _draw(rng, profile.power_w)
        limit_base_mhz = profile.frequency_mhz + _draw(rng, profile.limit_margin_mhz)
        limit_slope = _draw(rng, profile.limit_slope)
        return cls(
            key=key,
            boot_at=boot_at,
            nominal_ghs=nominal_ghs,
            expected_ghs=profile.expected_ghs,
            temp_setpoint_c=temp_setpoint_c,
            temp_start_c=temp_start_c,
            temp_tau_s=temp_tau_s,
            share_rate_per_s=share_rate_per_s,
            share_phase=share_phase,
            reject_ratio=reject_ratio,
            session_best_diff=session_best_diff,
            all_time_best_diff=all_time_best_diff,
            power_w=power_w,
            f0_mhz=profile.frequency_mhz,
            v0_mv=profile.core_voltage_mv,
            limit_base_mhz=limit_base_mhz,
            limit_slope=limit_slope,
            settings=Settings(profile.frequency_mhz, profile.core_voltage_mv),
            segment=_first_segment(share_rate_per_s, share_phase, reject_ratio),
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
        """Pause or resume by command: share counters freeze, the model keeps how long."""
        self.user_paused = paused
        self.pause_clock.set(paused or self.condition is Fault.PAUSED, now)

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
        self.pause_clock.set(fault is Fault.PAUSED or self.user_paused, now)
        self.no_share_clock.set(fault in NO_SHARES, now)
        self.burst_clock.set(fault is Fault.REJECTS, now)
        if fault is not Fault.STALLED:
            self.stalled_at = None
        elif self.stalled_at is None:
            self.stalled_at = now

    def reboot(self, now: float) -> None:
        """Boot again at ``now``: uptime, session counters and the warm-up start over, the
        settings stay, a command pause and the faults in CURED_BY_RESTART are gone."""
        self.all_time_best_diff = self.best_ever(now)
        self.boot_at = now
        self.user_paused = False
        self.pause_clock = Stopwatch()
        self.no_share_clock = Stopwatch()
        self.burst_clock = Stopwatch()
        self.stalled_at = None
        self.best_floor = 0.0
        self.blocks_found = 0
        self.apply(Fault.NONE if self.condition in CURED_BY_RESTART else self.condition, now)
        rate, ratio = self.share_rates()
        self.segment = _first_segment(rate, self.share_phase, ratio)
        self.changed_at = None
        self.heat_from = self.heat_load(self.settings)

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

    # -- settings -----------------------------------------------------------------------

    def apply_settings(self, settings: Settings, now: float) -> None:
        """New settings from ``now`` on: the counters keep what they had, the temperature
        sets off toward the new setpoint from where it is."""
        self._retune(now, lambda: setattr(self, "settings", settings))

    def set_limit(self, base_limit_mhz: float, mhz_per_mv: float, now: float) -> None:
        """Pin the hidden stability limit (tests): ``base`` MHz at ``v0_mv``."""

        def update() -> None:
            self.limit_base_mhz = float(base_limit_mhz)
            self.limit_slope = float(mhz_per_mv)

        self._retune(now, update)

    def set_chips(self, asic_count: int, core_scale: float, now: float) -> None:
        """Another board: ``asic_count`` chips of ``core_scale`` times the reference cores."""

        def update() -> None:
            self.asic_count = asic_count
            self.core_scale = core_scale

        self._retune(now, update)

    def _retune(self, now: float, update: Callable[[], None]) -> None:
        accepted, rejected = self._share_totals(now)
        self.heat_from = self.heat_now(now)
        update()
        self.changed_at = now
        rate, ratio = self.share_rates()
        self.segment = ShareSegment(
            accepted=accepted,
            rejected=rejected,
            share_s=self.share_s(now),
            burst_s=self.burst_clock.elapsed_s(now),
            rate_per_s=rate,
            reject_ratio=ratio,
        )

    def limit_mhz(self, voltage_mv: float | None = None) -> float:
        """The hidden highest stable frequency at ``voltage_mv`` (default: the setting)."""
        volts = self.settings.core_voltage_mv if voltage_mv is None else voltage_mv
        return self.limit_base_mhz + self.limit_slope * (volts - self.v0_mv)

    def over_limit_mhz(self) -> float:
        """How far the frequency is above the stability limit (<= 0: stable)."""
        return self.settings.frequency_mhz - self.limit_mhz()

    @property
    def stable(self) -> bool:
        return self.over_limit_mhz() <= 0.0

    def stability(self) -> tuple[float, float]:
        """(share of the hashrate kept, reject ratio) at the current settings."""
        over = self.over_limit_mhz()
        if over <= 0.0:
            return 1.0, self.reject_ratio
        kept = max(UNSTABLE_FLOOR, UNSTABLE_KEEP - UNSTABLE_LOSS_PER_MHZ * over)
        ratio = min(UNSTABLE_REJECTS_MAX, UNSTABLE_REJECTS + UNSTABLE_REJECTS_PER_MHZ * over)
        return kept, max(ratio, self.reject_ratio)

    def chip_scale(self) -> float:
        """How much more hashing hardware than the reference board."""
        return self.asic_count / self.ref_asic_count * self.core_scale

    def expected_now_ghs(self) -> float:
        """What the firmware claims at the current settings (follows the frequency)."""
        return self.expected_ghs * (self.settings.frequency_mhz / self.f0_mhz) * self.chip_scale()

    def nominal_now_ghs(self) -> float:
        """What this unit really does at the current settings, stability included."""
        kept, _ = self.stability()
        return self.nominal_ghs / self.expected_ghs * self.expected_now_ghs() * kept

    def share_rates(self) -> tuple[float, float]:
        """(shares per second of share time, reject ratio): shares come with hashrate."""
        _, ratio = self.stability()
        return self.share_rate_per_s * self.nominal_now_ghs() / self.nominal_ghs, ratio

    def heat_load(self, settings: Settings) -> float:
        """Heat per chip relative to the reference settings: f x V^2."""
        return (settings.frequency_mhz / self.f0_mhz) * (
            settings.core_voltage_mv / self.v0_mv
        ) ** 2

    def heat_now(self, now: float) -> float:
        """The heat load the temperature follows: the settings' own, SETTINGS_TAU_S behind."""
        target = self.heat_load(self.settings)
        if self.changed_at is None:
            return target
        lag = math.exp(-max(0.0, now - self.changed_at) / SETTINGS_TAU_S)
        return target + (self.heat_from - target) * lag

    # -- values -------------------------------------------------------------------------

    def noise(self, now: float, channel: int, period_s: float) -> float:
        return value_noise(channel_key(self.key, channel), self.age_s(now), period_s)

    def hashrate_ghs(self, now: float, channel: int = 0) -> float:
        """Short-window hashrate: a few percent of slow drift plus faster jitter; 0 paused,
        SLOW_FACTOR of it slow, less above the stability limit."""
        if self.paused:
            return 0.0
        at = self.reading_time(now)
        wobble = 0.02 * self.noise(at, 10 + channel, 90.0) + 0.015 * self.noise(
            at, 20 + channel, 3.0
        )
        factor = SLOW_FACTOR if self.condition is Fault.SLOW else 1.0
        return self.nominal_now_ghs() * factor * (1.0 + wobble)

    def average_ghs(self, now: float) -> float:
        """Lifetime average: nominal, diluted by time spent paused."""
        age = self.age_s(now)
        if age <= 0.0:
            return 0.0
        return (
            self.nominal_now_ghs()
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
        """The temperature the model gives, ignoring any override: the rise above ambient
        follows the heat load, the boot warm-up fades it in."""
        age = self.age_s(now)
        setpoint = self.temp_setpoint_c + 1.5 * self.noise(now, 40, 900.0)
        rise = (setpoint - AMBIENT_C) * self.heat_now(now)
        warm = math.exp(-age / self.temp_tau_s)
        jitter = 0.6 * self.noise(now, 50 + channel, 7.0)
        return AMBIENT_C + rise * (1.0 - warm) + (self.temp_start_c - AMBIENT_C) * warm + jitter

    def _share_totals(self, now: float) -> tuple[float, float]:
        segment = self.segment
        burst_s = max(0.0, self.burst_clock.elapsed_s(now) - segment.burst_s)
        share_s = max(0.0, self.share_s(now) - segment.share_s)
        normal = segment.rate_per_s * max(0.0, share_s - burst_s)
        burst = segment.rate_per_s * burst_s
        ratio = segment.reject_ratio
        rejected = segment.rejected + normal * ratio + burst * BURST_REJECT_RATIO
        accepted = segment.accepted + normal * (1.0 - ratio) + burst * (1.0 - BURST_REJECT_RATIO)
        return accepted, rejected

    def shares(self, now: float) -> tuple[int, int]:
        """(accepted, rejected), each only ever rising; still while no share is found.

        Both are floors of non-decreasing sums, so neither ever steps back by one when the
        other ticks; a rejects burst rejects ``BURST_REJECT_RATIO`` of what it finds.
        """
        accepted, rejected = self._share_totals(now)
        return int(accepted), int(rejected)

    def session_best(self, now: float) -> float:
        """Best share since boot: steps up at ever longer intervals, never goes down."""
        level = int(math.log2(1.0 + self.share_s(now) / 600.0))
        bump = (hash_unit(self.key, 1_000 + level) + 1.0) / 4.0  # [0, 0.5)
        natural = float(int(self.session_best_diff * (2**level) * (1.0 + bump)))
        return max(natural, self.best_floor)

    def best_ever(self, now: float) -> float:
        return max(self.all_time_best_diff, self.session_best(now))

    def power_load(self) -> float:
        """Power relative to the reference: f x V^2, times the hashing hardware."""
        return self.heat_load(self.settings) * self.chip_scale()

    def power(self, now: float) -> float:
        """Watts at the wall of the hashing part: falls to idle draw when paused."""
        if self.paused:
            return self.power_w * 0.25 * self.chip_scale()
        return self.power_w * self.power_load() * (1.0 + 0.02 * self.noise(now, 60, 20.0))


def _first_segment(rate_per_s: float, phase: float, reject_ratio: float) -> ShareSegment:
    """The counters at boot: the phase (where the first share falls) and nothing yet."""
    return ShareSegment(
        accepted=phase * (1.0 - reject_ratio),
        rejected=phase * reject_ratio,
        share_s=0.0,
        burst_s=0.0,
        rate_per_s=rate_per_s,
        reject_ratio=reject_ratio,
    )

