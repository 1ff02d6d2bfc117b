"""Catalog and shopper text made safe to show: no bidirectional controls, and a bound on how
much of a submitted value an answer repeats."""
from __future__ import annotations

import re

# Embedding, override and isolate controls, and the left-to-right / right-to-left marks: in a
# name they reorder what is shown around them ("Trojan Source"), so a product could read as
# another's or a price as another price. Catalog text never needs them to be read.
BIDI_CONTROLS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# How much of a value typed or sent by someone an error message repeats.
ECHO_CHARS = 80


def shown_text(value) -> str:
    """`value` as text to show, without bidirectional control characters."""
    return BIDI_CONTROLS.sub("", str(value))


def clipped(value, limit: int = ECHO_CHARS) -> str:
    """At most `limit` characters of `value` (bidi controls removed), with an ellipsis when cut."""
    text = shown_text(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


__all__ = ["BIDI_CONTROLS", "ECHO_CHARS", "shown_text", "clipped"]
