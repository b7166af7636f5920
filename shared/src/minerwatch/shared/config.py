"""Configuration: one TOML file decoded into typed Structs, ``MINERWATCH_*`` variables on top.

The file is ``$MINERWATCH_CONFIG``, else ``./minerwatch.toml`` when present. A bad value
raises ConfigError whose message is one line naming the key and the problem; services
print it and exit 2 (see ``service.run_service``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from minerwatch.shared.schemas import Label, Severity
from minerwatch.shared.topics import is_miner_id

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
TopicLevel = Annotated[str, msgspec.Meta(pattern=r"^[^/#+]+$")]
#: A rule name: one topic level the decoder accepts (``topics.parse_topic``): printable,
#: no wildcards, at most 128 characters.
RuleName = Annotated[str, msgspec.Meta(pattern=r"^[^/#+\x00-\x1f]{1,128}$")]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]

DRIVERS = ("axeos", "cgminer")
DEFAULT_PORTS = {"axeos": 80, "cgminer": 4028}


class ConfigError(Exception):
    """A configuration problem, phrased as one line that names the key."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class MqttConfig(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    base_topic: TopicLevel = "minerwatch"
    keepalive_s: PositiveInt = 30
    #: Reconnect backoff: first delay, doubled per failure up to the max, with jitter.
    reconnect_min_s: Positive = 0.5
    reconnect_max_s: Positive = 30.0

    def __post_init__(self) -> None:
        parse_mqtt_url(self.url)


class MinerConfig(_Section, kw_only=True):
    """One miner to poll. ``name`` is its stable id (a slug: topics, history); ``label``
    any text shown to people in its place (``Garage Bitaxe``)."""

    url: str
    name: str | None = None
    label: Label | None = None
    #: NerdQAxe with OTP on: the base32 secret its X-TOTP header is made from (else
    #: ``[control] otp_secret``).
    otp_secret: str | None = None
    #: A stock Antminer's web interface port, for control (``reboot.cgi``); else
    #: ``[control] antminer_web_port``.
    web_port: Port | None = None

    def __post_init__(self) -> None:
        endpoint(self.url)  # validates scheme, host and port
        check_otp_secret(self.otp_secret)
        if self.name is not None and not is_miner_id(self.name):
            raise ValueError(f"name {self.name!r} must be 1-64 characters of [a-z0-9_-]")


#: The most addresses one configured range may hold: a /16.
MAX_SCAN_ADDRESSES = 1 << 16


def scan_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``192.168.1.0/24`` (host bits allowed) -> the network; ValueError for bad or absurd
    ranges: scanning more than a /16 is never what someone at home meant."""
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{cidr!r} is not an address range like 192.168.1.0/24") from None
    if network.num_addresses > MAX_SCAN_ADDRESSES:
        raise ValueError(f"{cidr!r} is larger than a /16 ({network.num_addresses} addresses): "
                         "list smaller ranges")
    return network


class DiscoveryConfig(_Section):
    """Finding miners on the network. Off unless ranges are listed or ``mdns`` is on:
    nothing outside ``cidrs`` is ever probed."""

    cidrs: list[str] = msgspec.field(default_factory=list)
    #: Every address is probed on these ports (80: AxeOS, 4028: CGMiner).
    ports: Annotated[list[Port], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [80, 4028])
    rescan_interval_s: Positive = 600.0
    concurrency: PositiveInt = 64
    timeout_s: Positive = 1.0
    #: A whole scan stops after this long; what was found by then joins.
    budget_s: Positive = 120.0
    mdns: bool = False

    def __post_init__(self) -> None:
        for cidr in self.cidrs:
            scan_network(cidr)


class CollectorConfig(_Section):
    poll_interval_s: Positive = 10.0
    timeout_s: Positive = 5.0
    concurrency: PositiveInt = 256
    offline_after: PositiveInt = 3
    #: Messages kept while the broker is unreachable (past it the oldest samples go);
    #: unset: ten minutes of the whole fleet.
    buffer_messages: PositiveInt | None = None
    #: Follow AxeOS v2.14+ miners over their live WebSocket instead of polling them over
    #: HTTP. Off, every miner is polled: less CPU per miner at large fleets.
    live_push: bool = True
    miners: list[MinerConfig] = msgspec.field(default_factory=list)
    discovery: DiscoveryConfig = msgspec.field(default_factory=DiscoveryConfig)


class DatabaseConfig(_Section):
    url: str = "sqlite:///data/minerwatch.db"


Days = Annotated[float, msgspec.Meta(ge=0)]


CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
_CLIENT_ID_DROP = re.compile(r"[^A-Za-z0-9_.:-]+")


def store_client_id(config: Config) -> str:
    """The store's MQTT client id: the configured one, else ``{base_topic}-store``
    (``minerwatch-store`` for the default base). A base topic with characters a client id
    cannot hold gets them replaced and a short hash of the original added, so two bases
    never map to one id."""
    if config.store.client_id is not None:
        return config.store.client_id
    base = config.mqtt.base_topic
    safe = _CLIENT_ID_DROP.sub("-", base)
    if safe != base:
        safe = f"{safe[:100]}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"
    return f"{safe[:110]}-store"


class StoreConfig(_Section):
    """Rows are written in batches of up to ``batch_size`` (or every ``batch_interval_s``);
    the broker sends at most two batches' worth of unacknowledged messages at a time.

    The store keeps an MQTT session under ``client_id`` while it is away (the broker queues
    for it): give every store process its own id. Processes with the same ``group`` share
    the work as an MQTT v5 shared subscription (``$share/<group>/...``).

    History is kept ``keep_raw_days`` as raw samples, ``keep_1m_days`` as 1-minute and
    ``keep_1h_days`` as 1-hour rollups; 0 keeps forever. Retention runs every
    ``retention_interval_s``, deleting at most ``retention_batch`` rows per transaction.
    """

    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 5000
    batch_interval_s: Positive = 0.5
    #: Unset: ``{base_topic}-store`` (``store_client_id``), so stacks with different base
    #: topics on one broker never share a session.
    client_id: Annotated[str, msgspec.Meta(pattern=CLIENT_ID_PATTERN)] | None = None
    group: TopicLevel | None = None
    keep_raw_days: Days = 7.0
    keep_1m_days: Days = 90.0
    keep_1h_days: Days = 0.0
    retention_interval_s: Positive = 600.0
    retention_batch: PositiveInt = 5000


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8000"
    #: ``token``: every request needs a token (``minerwatch-api token create``) or the
    #: dashboard's session; ``lan``: reads are open to the network, writes still need a
    #: token of role operator or admin (what ``make demo`` uses).
    auth: Literal["token", "lan"] = "token"
    #: Origins, besides the api's own, whose pages may open the WebSocket
    #: (``https://dash.example``).
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    #: How long a dashboard sign-in lasts.
    session_ttl_s: Positive = 7 * 24 * 3600.0
    #: How long the api waits for the collector to carry out a command: longer than the
    #: collector's ``[control] restart_timeout_s``, so a slow restart is still answered.
    command_timeout_s: Positive = 240.0
    #: Where people reach the dashboard (``http://minerwatch.lan:8000``): notifications
    #: link to a miner's page under it. Unset: no links.
    public_url: str | None = None
    #: What a kWh costs, for the energy cost the dashboard shows; unset: no cost shown.
    energy_price_per_kwh: Annotated[float, msgspec.Meta(ge=0)] | None = None
    #: The currency of that price as people write it (``EUR``, ``$``); shown beside costs.
    currency: Annotated[str, msgspec.Meta(max_length=8, pattern=r"^[^\x00-\x1f]*$")] = ""

    def __post_init__(self) -> None:
        host_port(self.listen)
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"public_url {self.public_url!r} must be an http:// or "
                                 "https:// URL")
            self.public_url = self.public_url.rstrip("/")


Op = Literal[">", ">=", "<", "<="]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]


class RuleConfig(_Section, kw_only=True):
    """A free threshold rule (``[[alerts.rules]]``): ``field op threshold`` held for
    ``for_s`` seconds fires; it resolves past the hysteresis band. After firing, the same
    (miner, rule) cannot fire again until ``cooldown_s`` has passed; resolves are always
    published."""

    name: RuleName
    field: str
    op: Op = ">"
    threshold: float
    for_s: Seconds = 60.0
    cooldown_s: Seconds = 600.0
    hysteresis: Seconds = 0.0
    severity: Severity = "warning"
    notify: list[str] = msgspec.field(default_factory=list)


# --- built-in rules: one table each, ``[alerts.<rule>]`` ---------------------------------


class BuiltinRule(_Section, kw_only=True):
    """What every built-in rule has: on or off, how long its condition must hold, how
    bad it is, how soon it may fire again, and Apprise URLs of its own."""

    enabled: bool = True
    for_s: Seconds = 60.0
    severity: Severity = "warning"
    cooldown_s: Seconds = 600.0
    notify: list[str] = msgspec.field(default_factory=list)


class OfflineRule(BuiltinRule, kw_only=True):
    """The miner's status is ``offline`` for ``for_s``; resolves when it answers again."""

    severity: Severity = "critical"


class NotHashingRule(BuiltinRule, kw_only=True):
    """The miner answers but is ``idle`` (not hashing) for ``for_s``."""

    for_s: Seconds = 120.0


class HashrateLowRule(BuiltinRule, kw_only=True):
    """Hashrate below ``pct`` percent of what the miner should do, for ``for_s``: its
    ``expected_hashrate_ths``, else its own median of the last 24 hours of hourly means."""

    for_s: Seconds = 600.0
    pct: Percent = 80.0


class StalledRule(BuiltinRule, kw_only=True):
    """Online and answering, but accepted shares have not risen for ``for_s``, or the
    hashrate reading stayed identical for ``polls`` samples in a row (the flatline)."""

    for_s: Seconds = 900.0
    polls: Annotated[int, msgspec.Meta(ge=2)] = 20
    #: Restart a stalled miner (a command, audited like any other; needs ``[control]
    #: enabled``), at most once per ``restart_backoff_s`` per miner.
    restart: bool = False
    restart_backoff_s: Annotated[float, msgspec.Meta(ge=60)] = 3600.0


class FanFailureRule(BuiltinRule, kw_only=True):
    """Any reported fan below ``min_rpm`` while mining, for ``for_s``."""

    severity: Severity = "critical"
    min_rpm: Annotated[int, msgspec.Meta(ge=0)] = 500


class RejectsHighRule(BuiltinRule, kw_only=True):
    """Rejected shares above ``pct`` percent of the shares of the last ``window_s``
    (judged once the window holds at least ``min_shares``), from counter deltas that
    survive counter resets."""

    for_s: Seconds = 0.0
    pct: Percent = 2.0
    window_s: Positive = 1800.0
    min_shares: PositiveInt = 20


class PoolFallbackRule(BuiltinRule, kw_only=True):
    """The miner works for a fallback pool, or its pool connection is down, where its
    firmware says so (``pool_fallback``, ``pool_connected``), for ``for_s``."""


class TemperatureRule(BuiltinRule, kw_only=True):
    """The temperature above ``threshold`` for ``for_s``; resolves at ``threshold -
    hysteresis``. Unset ``threshold``: the limit known for the miner's make and model
    (``alerts.limits``), else ``default_threshold``."""

    threshold: float | None = None
    default_threshold: float = 75.0
    hysteresis: Seconds = 3.0


class VrTemperatureRule(TemperatureRule, kw_only=True):
    severity: Severity = "critical"
    default_threshold: float = 90.0
    hysteresis: Seconds = 5.0


class EventRule(BuiltinRule, kw_only=True):
    """A one-off: recorded and notified once, never resolved (``for_s`` and
    ``cooldown_s`` do not apply)."""

    severity: Severity = "info"
    for_s: Seconds = 0.0
    cooldown_s: Seconds = 0.0


class ServiceDownRule(BuiltinRule, kw_only=True):
    """A minerwatch service ``offline`` for ``for_s``; published under the miner id
    ``minerwatch-<service>``."""

    severity: Severity = "critical"


#: The built-in rules by name, with the Struct of their table.
BUILTIN_RULES: dict[str, type[BuiltinRule]] = {
    "offline": OfflineRule,
    "not_hashing": NotHashingRule,
    "hashrate_low": HashrateLowRule,
    "stalled": StalledRule,
    "fan_failure": FanFailureRule,
    "rejects_high": RejectsHighRule,
    "pool_fallback": PoolFallbackRule,
    "temp_high": TemperatureRule,
    "vr_temp_high": VrTemperatureRule,
    "best_difficulty": EventRule,
    "block_found": EventRule,
    "service_down": ServiceDownRule,
}


class OverrideMatch(_Section):
    """Which miners an override applies to: every key given must match (exact, case
    insensitive for make and model)."""

    miner_id: str | None = None
    make: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.miner_id is None and self.make is None and self.model is None:
            raise ValueError("match needs at least one of miner_id, make, model")


Changes = dict[str, Any] | None


class OverrideConfig(_Section, kw_only=True):
    """``[[alerts.overrides]]``: ``match`` and, per built-in rule, the keys it changes::

        [[alerts.overrides]]
        match = { model = "S19 Pro" }
        temp_high = { threshold = 85 }

    A miner id match wins over a model match, which wins over a make match; among equals
    the later override wins."""

    match: OverrideMatch
    offline: Changes = None
    not_hashing: Changes = None
    hashrate_low: Changes = None
    stalled: Changes = None
    fan_failure: Changes = None
    rejects_high: Changes = None
    pool_fallback: Changes = None
    temp_high: Changes = None
    vr_temp_high: Changes = None
    best_difficulty: Changes = None
    block_found: Changes = None
    service_down: Changes = None

    def __post_init__(self) -> None:
        for rule, values in self.changes().items():
            check_override(rule, values)

    def changes(self) -> dict[str, dict[str, Any]]:
        """The keys this override changes, per built-in rule it names."""
        found = {name: getattr(self, name) for name in BUILTIN_RULES}
        return {name: values for name, values in found.items() if values is not None}


def check_override(rule: str, values: Mapping[str, Any]) -> None:
    """ValueError (one line, naming the rule and key) when ``values`` are not keys of
    built-in rule ``rule`` with values of the right type."""
    kind = BUILTIN_RULES.get(rule)
    if kind is None:
        raise ValueError(f"{rule!r} is not a built-in rule ({', '.join(BUILTIN_RULES)})")
    if "notify" in values:
        raise ValueError(f"{rule}.notify cannot be overridden per miner")
    try:
        msgspec.convert(dict(values), kind)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        key = where.rstrip("`").lstrip(".")
        raise ValueError(f"{rule}.{key}: {message}" if key else f"{rule}: {message}") from None


class NotifyTarget(_Section, kw_only=True):
    """An Apprise URL and the least severity it is sent (``min_severity``)."""

    url: str
    min_severity: Severity = "info"


class AlertsConfig(_Section):
    """``[alerts]``: the built-in rules (each its own table), free threshold rules,
    overrides, and where notifications go.

    ``notify`` takes Apprise URLs (every severity) or tables ``{url, min_severity}``.
    Events of one rule and state within ``group_s`` seconds go out as one notification
    naming every miner.
    """

    offline: OfflineRule = msgspec.field(default_factory=OfflineRule)
    not_hashing: NotHashingRule = msgspec.field(default_factory=NotHashingRule)
    hashrate_low: HashrateLowRule = msgspec.field(default_factory=HashrateLowRule)
    stalled: StalledRule = msgspec.field(default_factory=StalledRule)
    fan_failure: FanFailureRule = msgspec.field(default_factory=FanFailureRule)
    rejects_high: RejectsHighRule = msgspec.field(default_factory=RejectsHighRule)
    pool_fallback: PoolFallbackRule = msgspec.field(default_factory=PoolFallbackRule)
    temp_high: TemperatureRule = msgspec.field(default_factory=TemperatureRule)
    vr_temp_high: VrTemperatureRule = msgspec.field(default_factory=VrTemperatureRule)
    best_difficulty: EventRule = msgspec.field(default_factory=EventRule)
    block_found: EventRule = msgspec.field(default_factory=EventRule)
    service_down: ServiceDownRule = msgspec.field(default_factory=ServiceDownRule)
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    overrides: list[OverrideConfig] = msgspec.field(default_factory=list)
    notify: list[str | NotifyTarget] = msgspec.field(default_factory=list)
    group_s: Seconds = 10.0

    def builtin(self, name: str) -> BuiltinRule:
        """The table of built-in rule ``name``."""
        rule: BuiltinRule = getattr(self, name)
        return rule

    def targets(self) -> list[NotifyTarget]:
        """``notify`` with every plain URL as a target of every severity."""
        return [NotifyTarget(url=item) if isinstance(item, str) else item
                for item in self.notify]


class MetricsConfig(_Section):
    """``[metrics]``: how often the collector, store and alerts publish their own health
    on ``{base}/services/{service}/stats`` (what the api's ``GET /metrics`` shows)."""

    stats_interval_s: Positive = 10.0


class HomeAssistantConfig(_Section):
    """``[homeassistant]``: MQTT discovery. The collector publishes (retained) a Home
    Assistant config per miner entity under ``{prefix}/<component>/{base_topic}/...``, so
    the miners appear in Home Assistant with no YAML (see ``homeassistant``)."""

    discovery: bool = True
    #: Home Assistant's discovery prefix (its MQTT integration's setting).
    prefix: TopicLevel = "homeassistant"


class TuneConfig(_Section):
    """``[control.tune]``: how autotune steps and what it keeps. A step waits
    ``settle_s`` for the temperature to settle (keep it at 90 s or more on real miners;
    the simulator's tests use less), then samples for ``window_s``."""

    settle_s: Positive = 90.0
    window_s: Positive = 120.0
    #: How often the miner is read while settling and sampling.
    poll_s: Positive = 5.0
    chip_temp_max_c: Annotated[float, msgspec.Meta(gt=0, le=120)] = 65.0
    vr_temp_max_c: Annotated[float, msgspec.Meta(gt=0, le=150)] = 85.0
    min_hashrate_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.94
    max_reject_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    frequency_step_mhz: PositiveInt = 25
    voltage_step_mv: PositiveInt = 20
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=200)] = 60


class ControlConfig(_Section):
    """``[control]``: acting on miners (restart, settings, autotune). Off until
    ``enabled``; frequency and voltage stay inside ``shared.control``'s safe ranges, or
    its overclock bound with ``allow_overclock``."""

    enabled: bool = False
    allow_overclock: bool = False
    #: How long one command may take with its read-back (a restart: ``restart_timeout_s``).
    timeout_s: Positive = 20.0
    restart_timeout_s: Positive = 180.0
    #: NerdQAxe's OTP secret (base32) for the X-TOTP header, for every miner without one.
    otp_secret: str | None = None
    #: A stock Antminer's web interface (HTTP digest auth) for ``reboot.cgi``.
    antminer_user: str = "root"
    antminer_password: str | None = None
    antminer_web_port: Port = 80
    #: The CGMiner API's privileged commands (``restart``, ``switchpool``, ``ascset``)
    #: need the miner to allow this host (``--api-allow W:...``).
    tune: TuneConfig = msgspec.field(default_factory=TuneConfig)

    def __post_init__(self) -> None:
        check_otp_secret(self.otp_secret)


_BASE32 = re.compile(r"^[A-Z2-7]+=*$")


def check_otp_secret(secret: str | None) -> None:
    if secret is not None and (len(secret) < 16 or not _BASE32.match(
            secret.replace(" ", "").upper())):
        raise ValueError("otp_secret must be a base32 secret of 16 characters or more")


class Config(_Section):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    collector: CollectorConfig = msgspec.field(default_factory=CollectorConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    homeassistant: HomeAssistantConfig = msgspec.field(default_factory=HomeAssistantConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    control: ControlConfig = msgspec.field(default_factory=ControlConfig)


class Endpoint(msgspec.Struct, frozen=True):
    driver: str
    host: str
    port: int
    name: str | None = None


def endpoint(url: str) -> Endpoint:
    """``axeos://10.0.0.5``, ``cgminer://10.0.0.6:4028?name=s19`` -> Endpoint."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DRIVERS:
        raise ValueError(f"miner URL {url!r} must start with one of: "
                         + ", ".join(f"{d}://" for d in DRIVERS))
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"miner URL {url!r} has a bad port") from None
    if not parts.hostname:
        raise ValueError(f"miner URL {url!r} has no host")
    name = parse_qs(parts.query).get("name", [None])[0]
    return Endpoint(parts.scheme, parts.hostname, port, name)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def redact(text: str) -> str:
    """``text`` with any password of a ``scheme://user:password@host`` URL replaced by
    ``***``, even in a malformed one: what may appear in an error or a log line."""
    userinfo, at, host = text.rpartition("@")
    if not at:
        return text
    scheme, sep, user = userinfo.rpartition("://")
    name, colon, _password = user.partition(":")
    if not colon:
        return text
    return f"{scheme}{sep}{name}:***@{host}"


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://user:pass@host:1883`` or ``mqtts://host`` (TLS, port 8883). Errors show
    the URL without its password."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"broker URL {shown!r} is not a URL") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {shown!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {shown!r} has no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError(f"broker URL {shown!r} has a bad port") from None
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


# Environment variable -> (path in the config, how to turn the text into the value)
_ENV: dict[str, tuple[tuple[str, ...], Any]] = {
    "MINERWATCH_MQTT_URL": (("mqtt", "url"), str),
    "MINERWATCH_BASE_TOPIC": (("mqtt", "base_topic"), str),
    "MINERWATCH_DB_URL": (("database", "url"), str),
    "MINERWATCH_API_LISTEN": (("api", "listen"), str),
    "MINERWATCH_POLL_INTERVAL_S": (("collector", "poll_interval_s"), str),
    "MINERWATCH_MINERS": (
        ("collector", "miners"),
        lambda text: [{"url": u.strip()} for u in text.split(",") if u.strip()],
    ),
    "MINERWATCH_DISCOVER_CIDRS": (
        ("collector", "discovery", "cidrs"),
        lambda text: [c.strip() for c in text.split(",") if c.strip()],
    ),
    # Replicas of one store image each need their own session id, and share a group.
    "MINERWATCH_STORE_CLIENT_ID": (("store", "client_id"), str),
    "MINERWATCH_STORE_GROUP": (("store", "group"), str),
    # true or false (1 or 0).
    "MINERWATCH_HA_DISCOVERY": (("homeassistant", "discovery"), str),
    "MINERWATCH_CONTROL_ENABLED": (("control", "enabled"), str),
    "MINERWATCH_API_AUTH": (("api", "auth"), str),
    "MINERWATCH_HA_PREFIX": (("homeassistant", "prefix"), str),
}


def _error_line(err: msgspec.ValidationError, source: str) -> str:
    # msgspec says "... - at `$.collector.poll_interval_s`"; turn that into a key name.
    text = str(err)
    message, _, where = text.partition(" - at `$")
    key = where.rstrip("`").lstrip(".")
    return f"{source}: {key or 'top level'}: {message}" if where else f"{source}: {message}"


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (if any), apply ``MINERWATCH_*`` overrides, validate."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get("MINERWATCH_CONFIG") or None
        if path is None and Path("minerwatch.toml").is_file():
            path = "minerwatch.toml"
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_error_line(exc, source)) from None

    overrides = {name: environ[name] for name in _ENV if environ.get(name, "").strip()}
    for name, text in overrides.items():
        keys, parse = _ENV[name]
        merged = msgspec.to_builtins(config)
        target = merged
        for part in keys[:-1]:
            target = target[part]
        target[keys[-1]] = parse(text.strip())
        try:
            config = msgspec.convert(merged, Config, strict=False)
        except msgspec.ValidationError as exc:
            message = str(exc).partition(" - at `$")[0]
            raise ConfigError(f"{name}={redact(text)!r}: {redact(message)}") from None
    return config
