"""Home Assistant MQTT discovery: the retained configs that make each miner a device.

Pure derivation, no I/O: the collector publishes what these functions return
(``collector.homeassistant``), and the api and ``minerwatch-collector forget`` clear
``discovery_topics`` of a forgotten miner.

Per-entity configs (every Home Assistant since 2021; device-based discovery needs 2024.12),
one per entity, on ``{prefix}/{component}/{node}/{miner_id}_{key}/config`` where ``node`` is
the base topic (so a broker ACL can grant ``{prefix}/+/{base}/#``) and ``key`` the Sample
field, or ``connectivity`` for the miner's status. Every key is written out in full (no
abbreviations). For each miner:

- a device: identifiers ``{base}_{miner_id}``, its MAC as a connection where known, make,
  model, firmware, its name (label, else hostname, else miner id), its AxeOS web page, and
  ``via_device`` the collector's device;
- per Sample field (``fields.SAMPLE_FIELDS``, its ``ha_device_class``, ``ha_state_class`` and
  unit): numbers are sensors; flags binary sensors; ``fan_rpm`` one sensor, the slowest fan,
  with every fan as the ``fans`` attribute; ``pool_url`` a text sensor;
- a ``connectivity`` binary sensor from the miner's status (online or idle: on), with the
  status's reason, since, last_seen and failures as attributes.

What a person sees is never a dead number shown as live:

- the Sample entities are available only while both the collector's service status says
  ``online`` and the miner's status is ``online`` or ``idle`` (``availability_mode: all``);
  the connectivity sensor only while the collector is online;
- they expire (``expire_after``) when no sample came for 3 poll intervals, so a stale
  retained sample is not shown as live for long after Home Assistant starts;
- a null field renders ``None``, which Home Assistant's MQTT sensor (2024.3.3, checked by the
  tests) turns into ``unknown`` for a sensor that expects a number, and its binary sensor
  into ``unknown``; a text sensor has no such state, so ``pool_url`` is unavailable while it
  is null (a third availability entry, on the sample itself).

One more device, the collector (identifiers ``{base}:collector``), with a connectivity
binary sensor of its service status: what every miner's ``via_device`` points at.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import msgspec

from minerwatch.shared.fields import SAMPLE_FIELDS, FieldDescription
from minerwatch.shared.schemas import MinerInfo
from minerwatch.shared.topics import (
    mac_miner_id,
    sample_topic,
    service_status_topic,
    status_topic,
)

Component = Literal["sensor", "binary_sensor"]

#: What Home Assistant's discovery accepts as a node id or object id (its TOPIC_MATCHER).
_NODE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_NODE_DROP = re.compile(r"[^A-Za-z0-9_-]+")
#: The key of the status's connectivity binary sensor (no Sample field is called so).
CONNECTIVITY = "connectivity"
#: Sample entities expire after this many poll intervals without a sample.
EXPIRE_INTERVALS = 3
#: The payload Home Assistant's MQTT sensors and binary sensors take as "no value".
NONE = "None"
ON, OFF = "ON", "OFF"


class DiscoveryMessage(NamedTuple):
    """One retained discovery message: its topic and JSON payload (empty: removed)."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Presentation:
    """How Home Assistant shows one Sample field, beside what ``fields`` says of it."""

    name: str
    icon: str | None = None
    precision: int | None = None
    diagnostic: bool = False


#: Names and icons of the Sample fields' entities (a field missing here still gets an
#: entity, named from its description: the tests keep this table complete).
PRESENTATION: dict[str, Presentation] = {
    "hashrate_ths": Presentation("Hashrate", "mdi:pickaxe", 2),
    "expected_hashrate_ths": Presentation("Expected hashrate", "mdi:speedometer", 2),
    "power_w": Presentation("Power", None, 1),
    "efficiency_jth": Presentation("Efficiency", "mdi:leaf", 1),
    "temp_c": Presentation("Temperature", None, 1),
    "vr_temp_c": Presentation("VR temperature", None, 1),
    "fan_rpm": Presentation("Slowest fan", "mdi:fan", 0),
    "shares_accepted": Presentation("Accepted shares", "mdi:check-circle-outline", 0),
    "shares_rejected": Presentation("Rejected shares", "mdi:close-circle-outline", 0),
    "best_diff": Presentation("Best difficulty", "mdi:trophy-outline", 0),
    "uptime_s": Presentation("Uptime", None, 0, diagnostic=True),
    "pool_url": Presentation("Pool", "mdi:server-network", diagnostic=True),
    "is_mining": Presentation("Mining", "mdi:pickaxe"),
    "pool_fallback": Presentation("Fallback pool", "mdi:swap-horizontal"),
    "pool_connected": Presentation("Pool connection", "mdi:lan-connect"),
    "blocks_found": Presentation("Blocks found", "mdi:cube-outline", 0),
}


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """What every config of one collector shares."""

    prefix: str
    base: str
    #: ``expire_after`` of the Sample entities, in whole seconds.
    expire_after_s: int
    #: ``origin``: minerwatch's version, and where people find it (the dashboard).
    sw_version: str
    support_url: str | None = None

    @property
    def node_id(self) -> str:
        return node_id(self.base)


def settings(prefix: str, base: str, poll_interval_s: float, sw_version: str,
             support_url: str | None = None) -> DiscoverySettings:
    """The settings of a collector polling every ``poll_interval_s``."""
    expire = max(1, math.ceil(EXPIRE_INTERVALS * poll_interval_s))
    return DiscoverySettings(prefix, base, expire, sw_version, support_url)


def node_id(base: str) -> str:
    """The base topic as Home Assistant's node id: itself when it fits ``[A-Za-z0-9_-]``
    (what ``deploy/render-acl.sh`` accepts), else with the rest replaced and a short hash of
    the original added, so two bases never share one."""
    if _NODE_ID.match(base):
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{_NODE_DROP.sub('_', base).strip('_')[:100]}_{digest}".lstrip("_")


def config_topic(prefix: str, component: Component, base: str, object_id: str) -> str:
    return f"{prefix}/{component}/{node_id(base)}/{object_id}/config"


def component_of(field: FieldDescription) -> Component:
    return "binary_sensor" if field.type == "bool" else "sensor"


#: Every entity of a miner: (component, key), the Sample fields in order, then the status.
MINER_ENTITIES: tuple[tuple[Component, str], ...] = (
    *((component_of(field), field.name) for field in SAMPLE_FIELDS),
    ("binary_sensor", CONNECTIVITY),
)


def discovery_topics(prefix: str, base: str, miner_id: str) -> list[str]:
    """Every config topic of one miner: what forgetting it clears."""
    return [config_topic(prefix, component, base, f"{miner_id}_{key}")
            for component, key in MINER_ENTITIES]


def collector_topics(prefix: str, base: str) -> list[str]:
    return [config_topic(prefix, "binary_sensor", base, "collector_status")]


def encode(config: dict[str, Any]) -> bytes:
    return msgspec.json.encode(config)


# --- pieces every config has ------------------------------------------------------------


def origin(settings: DiscoverySettings) -> dict[str, str]:
    found = {"name": "minerwatch", "sw_version": settings.sw_version}
    if settings.support_url:
        found["support_url"] = settings.support_url
    return found


def collector_device_id(base: str) -> str:
    # ":" is in no miner id, so a miner named "collector" keeps a device of its own.
    return f"{base}:collector"


def collector_availability(base: str) -> dict[str, str]:
    """The collector's service status: plain ``online`` / ``offline`` (its Last Will)."""
    return {"topic": service_status_topic(base, "collector"),
            "payload_available": "online", "payload_not_available": "offline"}


#: The miner's status (JSON ``MinerStatus``): answering, hashing or not.
ANSWERING = "value_json is defined and value_json.state in ('online', 'idle')"


def miner_availability(base: str, miner_id: str) -> dict[str, str]:
    return {"topic": status_topic(base, miner_id),
            "value_template": f"{{{{ 'online' if {ANSWERING} else 'offline' }}}}",
            "payload_available": "online", "payload_not_available": "offline"}


def device(info: MinerInfo, base: str) -> dict[str, Any]:
    """The miner as a Home Assistant device."""
    found: dict[str, Any] = {
        "identifiers": [f"{base}_{info.miner_id}"],
        "name": info.label or info.hostname or info.miner_id,
    }
    mac = mac_miner_id(info.mac) if info.mac else None
    if mac is not None:
        found["connections"] = [["mac", ":".join(mac[i:i + 2] for i in range(0, 12, 2))]]
    for key, value in (("manufacturer", info.make), ("model", info.model),
                       ("sw_version", info.firmware)):
        if value:
            found[key] = value
    if info.driver == "axeos":  # AxeOS serves its own web page on its API's port
        host = f"[{info.host}]" if ":" in info.host else info.host
        found["configuration_url"] = (f"http://{host}" if info.port == 80
                                      else f"http://{host}:{info.port}")
    found["via_device"] = collector_device_id(base)
    return found


# --- the entities of one Sample field ---------------------------------------------------


def value_template(field: FieldDescription) -> str:
    """The field's value from the Sample, ``None`` when it is null (see the module doc)."""
    value = f"value_json.{field.name}"
    if field.type == "bool":
        return (f"{{{{ '{NONE}' if {value} is none else ('{ON}' if {value} else '{OFF}') "
                "}}")
    if field.type == "list[int]":
        return f"{{{{ {value} | min if {value} else '{NONE}' }}}}"
    return f"{{{{ '{NONE}' if {value} is none else {value} }}}}"


def presentation(field: FieldDescription) -> Presentation:
    return PRESENTATION.get(field.name) or Presentation(field.description.capitalize())


def field_config(field: FieldDescription, info: MinerInfo,
                 settings: DiscoverySettings) -> tuple[Component, dict[str, Any]]:
    """The config of the entity of one Sample field of one miner."""
    base, miner_id = settings.base, info.miner_id
    shown = presentation(field)
    component = component_of(field)
    availability = [collector_availability(base), miner_availability(base, miner_id)]
    config: dict[str, Any] = {
        "name": shown.name,
        "unique_id": f"{base}_{miner_id}_{field.name}",
        "state_topic": sample_topic(base, miner_id),
        "value_template": value_template(field),
    }
    if component == "binary_sensor":
        config["payload_on"], config["payload_off"] = ON, OFF
    if field.ha_device_class:
        config["device_class"] = field.ha_device_class
    if component == "sensor":
        if field.ha_state_class:
            config["state_class"] = field.ha_state_class
        if field.unit:
            config["unit_of_measurement"] = field.unit
        if shown.precision is not None and field.type != "str":
            config["suggested_display_precision"] = shown.precision
    if field.type == "list[int]":
        config["json_attributes_topic"] = sample_topic(base, miner_id)
        config["json_attributes_template"] = (
            f"{{{{ {{'fans': value_json.{field.name}}} | tojson }}}}")
    if field.type == "str":  # no "unknown" for text: unavailable while it is null
        availability.append({
            "topic": sample_topic(base, miner_id),
            "value_template": (f"{{{{ 'online' if value_json is defined and "
                               f"value_json.{field.name} else 'offline' }}}}"),
            "payload_available": "online", "payload_not_available": "offline"})
    if shown.icon:
        config["icon"] = shown.icon
    if shown.diagnostic:
        config["entity_category"] = "diagnostic"
    config["expire_after"] = settings.expire_after_s
    config["availability"] = availability
    config["availability_mode"] = "all"
    return component, config


def connectivity_config(info: MinerInfo, settings: DiscoverySettings) -> dict[str, Any]:
    """The miner's status as a connectivity binary sensor (unknown for a status that does
    not decode), available while the collector is."""
    base, miner_id = settings.base, info.miner_id
    state = "value_json.state in ('online', 'idle')"
    return {
        "name": "Status",
        "unique_id": f"{base}_{miner_id}_{CONNECTIVITY}",
        "device_class": "connectivity",
        "state_topic": status_topic(base, miner_id),
        "value_template": (f"{{{{ ('{ON}' if {state} else '{OFF}') if value_json is defined "
                           f"else '{NONE}' }}}}"),
        "payload_on": ON,
        "payload_off": OFF,
        "json_attributes_topic": status_topic(base, miner_id),
        "json_attributes_template": (
            "{{ {'reason': value_json.reason, 'since': value_json.since, "
            "'last_seen': value_json.last_seen, 'failures': value_json.failures} "
            "| tojson }}"),
        "availability": [collector_availability(base)],
    }


# --- whole messages ---------------------------------------------------------------------


def miner_configs(info: MinerInfo, settings: DiscoverySettings) -> list[DiscoveryMessage]:
    """Every discovery config of one miner, in ``MINER_ENTITIES`` order (the topics of
    ``discovery_topics``)."""
    the_device = device(info, settings.base)
    the_origin = origin(settings)
    messages = []
    for field in SAMPLE_FIELDS:
        component, config = field_config(field, info, settings)
        messages.append((component, field.name, config))
    messages.append(("binary_sensor", CONNECTIVITY, connectivity_config(info, settings)))
    return [
        DiscoveryMessage(
            config_topic(settings.prefix, component, settings.base, f"{info.miner_id}_{key}"),
            encode({**config, "device": the_device, "origin": the_origin}))
        for component, key, config in messages
    ]


def collector_configs(settings: DiscoverySettings) -> list[DiscoveryMessage]:
    """The collector's device and its service status as a connectivity binary sensor."""
    base = settings.base
    name = "minerwatch collector" + ("" if base == "minerwatch" else f" ({base})")
    config = {
        "name": "Status",
        "unique_id": f"{base}_collector_status",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "state_topic": service_status_topic(base, "collector"),
        "payload_on": "online",
        "payload_off": "offline",
        "device": {"identifiers": [collector_device_id(base)], "name": name,
                   "manufacturer": "minerwatch", "model": "collector",
                   "sw_version": settings.sw_version},
        "origin": origin(settings),
    }
    [topic] = collector_topics(settings.prefix, base)
    return [DiscoveryMessage(topic, encode(config))]


def removals(prefix: str, base: str, miner_id: str) -> list[DiscoveryMessage]:
    """Empty retained payloads on every config topic of a miner: Home Assistant removes
    its entities (and the device, once it has none)."""
    return [DiscoveryMessage(topic, b"") for topic in discovery_topics(prefix, base, miner_id)]
