"""Labels set through the api (``{base}/miners/{id}/label``): the display names that win
over the config's ``label`` in the info the collector publishes.

A label may arrive before its miner is polled (the retained labels come at subscribe, and
discovery may find the miner later), so labels are kept by miner id whether or not it is
polled, up to ``MAX_LABELS``: a flood of label topics cannot grow the collector without
bound (past it, new miners' labels are refused and counted; changes to kept ones still
apply).
"""

from __future__ import annotations

#: The most labels kept, polled or not.
MAX_LABELS = 10_000


class Labels:
    """The label set through the api for each miner id (absent: none, the config's
    ``label`` applies)."""

    def __init__(self, max_labels: int = MAX_LABELS) -> None:
        self.max_labels = max_labels
        self._labels: dict[str, str] = {}
        #: Labels refused because ``max_labels`` were kept already.
        self.refused = 0

    def __len__(self) -> int:
        return len(self._labels)

    def get(self, miner_id: str, default: str | None = None) -> str | None:
        """The label of ``miner_id``: the api's, else ``default`` (the config's)."""
        return self._labels.get(miner_id, default)

    def set(self, miner_id: str, label: str | None) -> bool:
        """Set (``None``: remove) the label of ``miner_id``; whether anything changed.
        False as well for a new miner's label past ``max_labels`` (``refused`` counts it).
        """
        if label is None:
            return self._labels.pop(miner_id, None) is not None
        current = self._labels.get(miner_id)
        if current == label:
            return False
        if current is None and len(self._labels) >= self.max_labels:
            self.refused += 1
            return False
        self._labels[miner_id] = label
        return True
