"""The built-in rules' settings for one miner: ``[alerts.<rule>]`` with the matching
``[[alerts.overrides]]`` applied on top.

An override matches when every key of its ``match`` does (``miner_id`` exactly, ``make``
and ``model`` ignoring case). Its rank is the most specific key it names: a ``miner_id``
override wins over a ``model`` one, which wins over a ``make`` one; among equals the
later one wins (they are applied in that order, each on top of the last).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from minerwatch.shared.config import BUILTIN_RULES, AlertsConfig, BuiltinRule, OverrideConfig

#: The settings of every built-in rule for one miner, by rule name.
RuleSettings = Mapping[str, BuiltinRule]


def defaults(alerts: AlertsConfig) -> dict[str, BuiltinRule]:
    """The tables as configured, before any override."""
    return {name: alerts.builtin(name) for name in BUILTIN_RULES}


def _same(want: str | None, got: str | None) -> bool:
    return want is None or (got is not None and want.strip().lower() == got.strip().lower())


def matches(override: OverrideConfig, miner_id: str, make: str | None,
            model: str | None) -> bool:
    match = override.match
    return ((match.miner_id is None or match.miner_id == miner_id)
            and _same(match.make, make) and _same(match.model, model))


def rank(override: OverrideConfig) -> int:
    """2 for a miner id match, 1 for a model match, 0 for a make-only match."""
    if override.match.miner_id is not None:
        return 2
    return 1 if override.match.model is not None else 0


def applying(alerts: AlertsConfig, miner_id: str, make: str | None,
             model: str | None) -> list[OverrideConfig]:
    """The overrides that match, least specific first (config order among equals)."""
    found = [(rank(o), index, o) for index, o in enumerate(alerts.overrides)
             if matches(o, miner_id, make, model)]
    return [o for _, _, o in sorted(found, key=lambda item: item[:2])]


def apply_changes(rule: BuiltinRule, changes: Mapping[str, Any]) -> BuiltinRule:
    """``rule`` with ``changes`` on top (checked at load, so this converts cleanly)."""
    merged = {**msgspec.structs.asdict(rule), **changes}
    return msgspec.convert(merged, type(rule))


def resolve(alerts: AlertsConfig, miner_id: str, make: str | None = None,
            model: str | None = None, *, base: RuleSettings | None = None
            ) -> RuleSettings:
    """Every built-in rule's settings for this miner. Without a matching override that
    is ``base`` itself (``defaults``), shared by every such miner."""
    settings = base if base is not None else defaults(alerts)
    overrides = applying(alerts, miner_id, make, model)
    if not overrides:
        return settings
    changed = dict(settings)
    for override in overrides:
        for name, values in override.changes().items():
            changed[name] = apply_changes(changed[name], values)
    return changed
