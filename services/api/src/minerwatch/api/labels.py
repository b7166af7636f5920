"""Checking a label a client sends: the contract's ``Label`` (1-100 printable characters),
surrounding spaces dropped."""

from __future__ import annotations

import re
import typing

from minerwatch.api.history import BadParameter
from minerwatch.shared.schemas import Label

#: The contract's own pattern, so what the api publishes every consumer decodes.
_LABEL_RE = re.compile(typing.get_args(Label)[1].pattern)
MAX_LABEL_CHARS = 100


def check_label(label: str | None) -> str | None:
    """The label to publish (None removes it); BadParameter naming ``label`` if invalid."""
    if label is None:
        return None
    text = label.strip()
    if not text:
        raise BadParameter("label: must not be empty (send null to remove the label)")
    if len(text) > MAX_LABEL_CHARS:
        raise BadParameter(f"label: at most {MAX_LABEL_CHARS} characters, got {len(text)}")
    if not _LABEL_RE.match(text):
        raise BadParameter("label: must be printable text (no control characters)")
    return text
