"""CGMiner RPC (Antminer, Whatsminer, Avalon, any cgminer): JSON over TCP 4028.

- ``transport``: one command per connection, bounded in time and size; the envelope (NUL,
  STATUS, joined ``a+b`` replies) and the repair of the JSON real units send.
- ``replies``: the reply fields every family shares, and ``build_reading``.
- ``antminer``, ``whatsminer``, ``avalon``: each family's own replies.
- ``families``: which family a miner is, what to ask it and how to read it.
- ``driver``: ``CgminerDriver``, one poll of one miner, and its ``Quirks`` (what it
  learned about that miner's firmware).
"""

from minerwatch.collector.drivers.cgminer.driver import CgminerDriver, Quirks

__all__ = ["CgminerDriver", "Quirks"]
