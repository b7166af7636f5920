"""Configuration: one TOML file decoded into typed Structs, ``MINERWATCH_*`` variables on top.

The file is ``$MINERWATCH_CONFIG``, else ``./minerwatch.toml`` when present. A bad value
raises ConfigError whose message is one line naming the key and the problem; services
print it and exit 2 (see ``service.run_service``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

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
    url: str
    name: str | None = None

    def __post_init__(self) -> None:
        endpoint(self.url)  # validates scheme, host and port
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
    client_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] = (
        "minerwatch-store")
    group: TopicLevel | None = None
    keep_raw_days: Days = 7.0
    keep_1m_days: Days = 90.0
    keep_1h_days: Days = 0.0
    retention_interval_s: Positive = 600.0
    retention_batch: PositiveInt = 5000


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8000"

    def __post_init__(self) -> None:
        host_port(self.listen)


Op = Literal[">", ">=", "<", "<="]


class RuleConfig(_Section, kw_only=True):
    """``field op threshold`` held for ``for_s`` seconds fires; it resolves past the
    hysteresis band. After firing, the same (miner, rule) cannot fire again until
    ``cooldown_s`` has passed; resolves are always published."""

    name: RuleName
    field: str
    op: Op = ">"
    threshold: float
    for_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    cooldown_s: Annotated[float, msgspec.Meta(ge=0)] = 600.0
    hysteresis: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    severity: Literal["info", "warning", "critical"] = "warning"
    notify: list[str] = msgspec.field(default_factory=list)


def default_rules() -> list[RuleConfig]:
    return [
        RuleConfig(name="overheat", field="temp_c", op=">", threshold=75, for_s=60,
                   cooldown_s=600, hysteresis=3, severity="warning"),
        RuleConfig(name="vr_overheat", field="vr_temp_c", op=">", threshold=90, for_s=60,
                   cooldown_s=600, hysteresis=5, severity="critical"),
    ]


class AlertsConfig(_Section):
    rules: list[RuleConfig] = msgspec.field(default_factory=default_rules)
    #: Apprise URLs that every firing and resolved event goes to.
    notify: list[str] = msgspec.field(default_factory=list)


class Config(_Section):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    collector: CollectorConfig = msgspec.field(default_factory=CollectorConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)


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
