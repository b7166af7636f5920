"""Check MQTT discovery configs with Home Assistant's own code (run with .tools/ha/bin/python).

    ha_validate.py [--prefix homeassistant] [--full-names] < configs.jsonl
    ha_validate.py --render < templates.jsonl

Validating (the default): each input line is a JSON object ``{"topic": ..., "payload": {...}}``
(``component`` may stand for ``topic``, or beside it). Each config goes the way Home
Assistant's MQTT discovery takes it (``homeassistant.components.mqtt.discovery``): the topic
must match its topic pattern under the prefix and name a supported component; the payload
must be a JSON object; abbreviations are expanded; ``origin`` must pass its schema; then the
component's ``DISCOVERY_SCHEMA`` validates it. Beyond what that schema raises, this also
fails a key the schema silently drops (a misspelled key never works), a sensor whose unit or
state class Home Assistant's sensor tables do not allow for its device class (HA only logs
those at run time), and, with ``--full-names``, an abbreviated key. One line per failure on
stdout, a count on stderr; exit status 1 when anything failed.

Rendering (``--render``): each input line is ``{"template": ..., "payload": ...}``; each
output line ``{"rendered": ...}`` (or ``{"error": ...}``), rendered the way an MQTT entity
renders a ``value_template`` against a received payload, by Home Assistant's template engine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import tempfile
from typing import Any

import voluptuous as vol
from homeassistant.components.mqtt.abbreviations import (
    ABBREVIATIONS,
    DEVICE_ABBREVIATIONS,
    ORIGIN_ABBREVIATIONS,
)
from homeassistant.components.mqtt.discovery import (
    MQTT_ORIGIN_INFO_SCHEMA,
    SUPPORTED_COMPONENTS,
    TOPIC_MATCHER,
)
from homeassistant.components.sensor import DEVICE_CLASS_STATE_CLASSES, DEVICE_CLASS_UNITS


def expand(mapping: dict[str, Any], abbreviations: dict[str, str], where: str,
           problems: list[str], full_names: bool) -> None:
    """Expand abbreviated keys in place, as discovery does."""
    for key in list(mapping):
        if abbreviations.get(key, key) != key:  # some map a name to itself
            if full_names:
                problems.append(f"{where}{key!r} is an abbreviation of "
                                f"{abbreviations[key]!r}")
            mapping[abbreviations[key]] = mapping.pop(key)


def component_of(entry: dict[str, Any], prefix: str, problems: list[str]) -> str | None:
    topic = entry.get("topic")
    component = entry.get("component")
    if topic is not None:
        if not isinstance(topic, str) or not topic.startswith(prefix + "/"):
            problems.append(f"topic {topic!r} is not under the prefix {prefix!r}")
            return None
        match = TOPIC_MATCHER.fullmatch(topic[len(prefix) + 1:])
        if match is None:
            problems.append(f"topic {topic!r} does not match Home Assistant's discovery "
                            "topic pattern")
            return None
        if component is not None and component != match["component"]:
            problems.append(f"component {component!r} but the topic says "
                            f"{match['component']!r}")
        component = match["component"]
    if not isinstance(component, str) or component not in SUPPORTED_COMPONENTS:
        problems.append(f"component {component!r} is not one Home Assistant discovers")
        return None
    return component


def check_sensor(config: dict[str, Any], problems: list[str]) -> None:
    """What Home Assistant's sensor reports at run time as impossible."""
    device_class = config.get("device_class")
    if device_class is None:
        return
    units = DEVICE_CLASS_UNITS.get(device_class)
    unit = config.get("unit_of_measurement")
    if units is not None and unit not in units:
        problems.append(f"unit {unit!r} is not one of device class {str(device_class)!r}: "
                        f"{sorted(str(u) for u in units)}")
    classes = DEVICE_CLASS_STATE_CLASSES.get(device_class)
    state_class = config.get("state_class")
    if state_class is not None and classes is not None and state_class not in classes:
        problems.append(f"state class {state_class!r} is impossible for device class "
                        f"{str(device_class)!r}")


def validate(entry: Any, prefix: str, full_names: bool) -> list[str]:
    """The problems of one input line (none: Home Assistant takes it)."""
    if not isinstance(entry, dict):
        return ["the line is not a JSON object"]
    problems: list[str] = []
    component = component_of(entry, prefix, problems)
    payload = entry.get("payload")
    if not isinstance(payload, dict):
        return [*problems, "the payload is not a JSON object"]
    if component is None:
        return problems
    payload = json.loads(json.dumps(payload))  # a copy: the checks below change it
    expand(payload, ABBREVIATIONS, "", problems, full_names)
    if isinstance(payload.get("device"), dict):
        expand(payload["device"], DEVICE_ABBREVIATIONS, "device: ", problems, full_names)
    if isinstance(payload.get("availability"), list):
        for index, item in enumerate(payload["availability"]):
            if isinstance(item, dict):
                expand(item, ABBREVIATIONS, f"availability[{index}]: ", problems, full_names)
    if "origin" in payload:
        if isinstance(payload["origin"], dict):
            expand(payload["origin"], ORIGIN_ABBREVIATIONS, "origin: ", problems, full_names)
        try:
            MQTT_ORIGIN_INFO_SCHEMA(payload["origin"])
        except vol.Invalid as exc:
            problems.append(f"origin: {exc}")
    given = set(payload)
    payload["platform"] = "mqtt"  # what discovery adds before the schema sees it
    schema = importlib.import_module(f"homeassistant.components.mqtt.{component}")
    try:
        validated = schema.DISCOVERY_SCHEMA(payload)
    except vol.Invalid as exc:
        return [*problems, str(exc)]
    dropped = sorted(given - set(validated))
    if dropped:
        problems.append(f"Home Assistant drops the key(s) {dropped}")
    if component == "sensor":
        check_sensor(validated, problems)
    return problems


def run_validate(prefix: str, full_names: bool) -> int:
    checked = failed = 0
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        checked += 1
        try:
            entry = json.loads(line)
        except ValueError as exc:
            problems = [f"not JSON: {exc}"]
            entry = None
        else:
            problems = validate(entry, prefix, full_names)
        if problems:
            failed += 1
            where = entry.get("topic") if isinstance(entry, dict) else None
            for problem in problems:
                print(f"{where or f'line {number}'}: {' '.join(problem.split())}")
    print(f"ha_validate: {checked} config(s), {failed} rejected", file=sys.stderr)
    return 1 if failed or not checked else 0


async def run_render() -> int:
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.template import Template

    logging.disable(logging.WARNING)  # an undefined value_json is an answer, not news
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        try:
            for line in sys.stdin:
                if not line.strip():
                    continue
                entry = json.loads(line)
                try:
                    template = Template(entry["template"], hass)
                    rendered = template.async_render_with_possible_json_value(entry["payload"])
                    print(json.dumps({"rendered": str(rendered)}))
                except Exception as exc:  # the error is the answer
                    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        finally:
            await hass.async_stop(force=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="homeassistant", help="the discovery prefix")
    parser.add_argument("--full-names", action="store_true",
                        help="also fail abbreviated keys")
    parser.add_argument("--render", action="store_true",
                        help="render templates against payloads instead")
    args = parser.parse_args()
    if args.render:
        return asyncio.run(run_render())
    return run_validate(args.prefix, args.full_names)


if __name__ == "__main__":
    sys.exit(main())
