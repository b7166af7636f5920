"""Errors as one line, for logs and status topics."""

from __future__ import annotations

#: Longer reasons are cut: a log line, not a dump of the input.
MAX_REASON = 300


def one_line(error: BaseException | str, limit: int = MAX_REASON) -> str:
    """The error's text on one line (whitespace collapsed, at most ``limit`` characters);
    the type's name when the error has no text. A database error's driver message
    (``.orig``) is used when there is one: it is the readable part."""
    if isinstance(error, BaseException):
        source = getattr(error, "orig", None) or error
        text = str(source) or type(source).__name__
    else:
        text = error
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
