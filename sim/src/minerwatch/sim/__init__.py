"""minerwatch-sim: simulated AxeOS (HTTP) and CGMiner (TCP) miners on 127.0.0.1.

Start with ``minerwatch.sim.fleet.Fleet`` (Python) or the ``minerwatch-sim`` console script.
"""
