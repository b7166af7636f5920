"""Autotune: find a miner's best stable frequency and voltage inside its safe range.

``Tuner`` runs it for the collector's command executor (``tune`` and ``tune_abort``
commands); ``minerwatch-collector tune MINER_ID`` runs it from a terminal (``tune.cli``).
The rules and the run are in ``tune.engine``.
"""

from minerwatch.collector.tune.engine import TuneFailure, TuneRun
from minerwatch.collector.tune.tuner import Tuner, TuneRefused

__all__ = ["TuneFailure", "TuneRefused", "TuneRun", "Tuner"]
