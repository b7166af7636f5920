"""Carrying out commands: control drivers per firmware (``driver``, ``drivers``), the
executor that checks, writes and verifies (``executor``) and the command listener on the
collector's MQTT session (``commands``)."""

from minerwatch.collector.control.driver import (
    ControlDriver,
    ControlError,
    MinerAction,
    MinerFacts,
    ReadBack,
)
from minerwatch.collector.control.drivers import control_kind, create_control

__all__ = [
    "ControlDriver", "ControlError", "MinerAction", "MinerFacts", "ReadBack", "control_kind",
    "create_control",
]
