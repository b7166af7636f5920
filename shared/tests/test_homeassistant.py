"""The Home Assistant discovery configs derived from the field descriptions and a MinerInfo
(tests/test_homeassistant_discovery.py checks them with Home Assistant's own schemas)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from minerwatch.shared import fields
from minerwatch.shared import homeassistant as ha
from minerwatch.shared.config import ConfigError, load_config
from minerwatch.shared.schemas import MinerInfo

SETTINGS = ha.settings("homeassistant", "mw", 10.0, "1.2.3", "http://mw.lan:8000")
BITAXE = MinerInfo(miner_id="aabbccddeeff", driver="axeos", host="10.0.0.5", port=80,
                   make="Bitaxe", model="Gamma", firmware="v2.4.1", hostname="bitaxe",
                   mac="AA-BB-CC-DD-EE-FF", label="Garage Bitaxe ☀")
S19 = MinerInfo(miner_id="s19", driver="cgminer", host="10.0.0.6", port=4028,
                make="Bitmain", model="S19 Pro")


def configs(info: MinerInfo, settings: ha.DiscoverySettings = SETTINGS
            ) -> dict[str, dict[str, Any]]:
    """Topic -> decoded config."""
    return {message.topic: json.loads(message.payload)
            for message in ha.miner_configs(info, settings)}


def by_key(info: MinerInfo) -> dict[str, dict[str, Any]]:
    prefix = f"homeassistant/{{}}/mw/{info.miner_id}_"
    found = {}
    for topic, config in configs(info).items():
        for component in ("sensor", "binary_sensor"):
            if topic.startswith(prefix.format(component)):
                found[topic.removeprefix(prefix.format(component)).removesuffix("/config")] = (
                    config | {"component": component})
    return found


def test_one_config_per_sample_field_and_the_status_on_the_documented_topics() -> None:
    messages = ha.miner_configs(BITAXE, SETTINGS)
    assert [m.topic for m in messages] == ha.discovery_topics("homeassistant", "mw",
                                                              "aabbccddeeff")
    assert len(messages) == len(fields.SAMPLE_FIELDS) + 1
    pattern = re.compile(r"^homeassistant/(sensor|binary_sensor)/mw/aabbccddeeff_(\w+)/config$")
    keys = [pattern.fullmatch(m.topic).group(2) for m in messages]  # type: ignore[union-attr]
    assert keys == [*fields.FIELD_NAMES, "connectivity"]
    entities = by_key(BITAXE)
    assert {e["unique_id"] for e in entities.values()} == {
        f"mw_aabbccddeeff_{key}" for key in keys}


def test_every_field_has_its_name_and_the_description_types_decide_the_component() -> None:
    assert set(ha.PRESENTATION) == set(fields.FIELD_NAMES)
    entities = by_key(S19)
    for field in fields.SAMPLE_FIELDS:
        entity = entities[field.name]
        assert entity["name"] == ha.PRESENTATION[field.name].name
        assert entity["component"] == ("binary_sensor" if field.type == "bool" else "sensor")
        assert entity.get("device_class") == field.ha_device_class, field.name
        if entity["component"] == "sensor":
            assert entity.get("state_class") == field.ha_state_class, field.name
            assert entity.get("unit_of_measurement") == field.unit, field.name
        else:
            assert (entity["payload_on"], entity["payload_off"]) == ("ON", "OFF")
            assert "state_class" not in entity and "unit_of_measurement" not in entity
        assert entity["state_topic"] == "mw/miners/s19/sample"
        assert f"value_json.{field.name}" in entity["value_template"]
    fan = entities["fan_rpm"]
    assert fan["json_attributes_topic"] == "mw/miners/s19/sample"
    assert "'fans': value_json.fan_rpm" in fan["json_attributes_template"]
    assert entities["uptime_s"]["entity_category"] == "diagnostic"


def test_the_device_is_the_miner_and_hangs_off_the_collector() -> None:
    for config in configs(BITAXE).values():
        assert config["device"] == {
            "identifiers": ["mw_aabbccddeeff"], "name": "Garage Bitaxe ☀",
            "connections": [["mac", "aa:bb:cc:dd:ee:ff"]], "manufacturer": "Bitaxe",
            "model": "Gamma", "sw_version": "v2.4.1", "configuration_url": "http://10.0.0.5",
            "via_device": "mw:collector"}
        assert config["origin"] == {"name": "minerwatch", "sw_version": "1.2.3",
                                    "support_url": "http://mw.lan:8000"}
    s19 = next(iter(configs(S19).values()))["device"]
    assert s19 == {"identifiers": ["mw_s19"], "name": "s19", "manufacturer": "Bitmain",
                   "model": "S19 Pro", "via_device": "mw:collector"}  # no MAC, no web page
    named = MinerInfo(miner_id="x1", driver="axeos", host="fd00::5", port=8080,
                      hostname="bitaxe-7", mac="00:00:00:00:00:00")
    device = ha.device(named, "mw")
    assert device["name"] == "bitaxe-7" and "connections" not in device
    assert device["configuration_url"] == "http://[fd00::5]:8080"
    plain = ha.settings("homeassistant", "mw", 10.0, "1.2.3")
    assert ha.origin(plain) == {"name": "minerwatch", "sw_version": "1.2.3"}
    # The payload is JSON with the label as written.
    raw = ha.miner_configs(BITAXE, SETTINGS)[0].payload
    assert "Garage Bitaxe ☀" in raw.decode("utf-8")


def test_availability_needs_the_collector_and_the_miner_and_values_expire() -> None:
    collector = {"topic": "mw/services/collector/status",
                 "payload_available": "online", "payload_not_available": "offline"}
    entities = by_key(S19)
    for key, entity in entities.items():
        if key == "connectivity":
            continue
        assert entity["availability_mode"] == "all"
        first, second, *rest = entity["availability"]
        assert first == collector
        assert second["topic"] == "mw/miners/s19/status"
        assert "('online', 'idle')" in second["value_template"]
        assert rest == ([] if key != "pool_url" else [{
            "topic": "mw/miners/s19/sample", "payload_available": "online",
            "payload_not_available": "offline",
            "value_template": "{{ 'online' if value_json is defined and value_json.pool_url "
                              "else 'offline' }}"}])
        assert entity["expire_after"] == 30  # 3 poll intervals
    status = entities["connectivity"]
    assert status["device_class"] == "connectivity"
    assert status["state_topic"] == status["json_attributes_topic"] == "mw/miners/s19/status"
    assert status["availability"] == [collector]
    assert "expire_after" not in status  # an offline status is not refreshed: it stays true
    assert ha.settings("h", "b", 0.5, "v").expire_after_s == 2
    assert ha.settings("h", "b", 0.01, "v").expire_after_s == 1


def test_a_null_field_renders_none_never_a_number() -> None:
    templates = {field.name: ha.value_template(field) for field in fields.SAMPLE_FIELDS}
    assert templates["power_w"] == (
        "{{ 'None' if value_json.power_w is none else value_json.power_w }}")
    assert templates["is_mining"] == (
        "{{ 'None' if value_json.is_mining is none else "
        "('ON' if value_json.is_mining else 'OFF') }}")
    assert templates["fan_rpm"] == (
        "{{ value_json.fan_rpm | min if value_json.fan_rpm else 'None' }}")


def test_the_collector_device_and_the_removals() -> None:
    [message] = ha.collector_configs(SETTINGS)
    assert message.topic == "homeassistant/binary_sensor/mw/collector_status/config"
    assert [message.topic] == ha.collector_topics("homeassistant", "mw")
    config = json.loads(message.payload)
    assert config["device"]["identifiers"] == ["mw:collector"]
    assert config["device"]["name"] == "minerwatch collector (mw)"
    assert config["state_topic"] == "mw/services/collector/status"
    assert (config["payload_on"], config["payload_off"]) == ("online", "offline")
    removals = ha.removals("ha", "mw", "s19")
    assert [m.topic for m in removals] == ha.discovery_topics("ha", "mw", "s19")
    assert all(m.payload == b"" for m in removals)
    assert all(t.startswith("ha/") for t in ha.discovery_topics("ha", "mw", "s19"))


def test_a_base_topic_home_assistant_cannot_take_as_node_id_is_made_one() -> None:
    assert ha.node_id("minerwatch") == "minerwatch"
    assert ha.node_id("site_2-b") == "site_2-b"
    odd = {ha.node_id(base) for base in ("site 2", "site.2", "site é", "ü")}
    assert len(odd) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", node) for node in odd)
    topic = ha.discovery_topics("homeassistant", "site 2", "m1")[0]
    assert topic.startswith(f"homeassistant/sensor/{ha.node_id('site 2')}/m1_")


def test_config_section_and_variables(tmp_path: Path) -> None:
    default = load_config(environ={}).homeassistant
    assert (default.discovery, default.prefix) == (True, "homeassistant")
    path = tmp_path / "minerwatch.toml"
    path.write_text('[homeassistant]\ndiscovery = false\nprefix = "hass"\n')
    loaded = load_config(path, environ={}).homeassistant
    assert (loaded.discovery, loaded.prefix) == (False, "hass")
    env = load_config(path, environ={"MINERWATCH_HA_DISCOVERY": "true",
                                     "MINERWATCH_HA_PREFIX": "ha2"}).homeassistant
    assert (env.discovery, env.prefix) == (True, "ha2")
    assert not load_config(environ={"MINERWATCH_HA_DISCOVERY": "0"}).homeassistant.discovery
    for environ, key in (({"MINERWATCH_HA_DISCOVERY": "maybe"}, "MINERWATCH_HA_DISCOVERY"),
                         ({"MINERWATCH_HA_PREFIX": "a/b"}, "MINERWATCH_HA_PREFIX")):
        with pytest.raises(ConfigError, match=key) as caught:
            load_config(environ=environ)
        assert "\n" not in str(caught.value)
    path.write_text('[homeassistant]\nprefix = "home/assistant"\n')
    with pytest.raises(ConfigError, match=r"homeassistant\.prefix"):
        load_config(path, environ={})
    path.write_text('[homeassistant]\ndiscovery = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"homeassistant\.discovery"):
        load_config(path, environ={})
