"""Catalog and shopper text made safe to show: no bidirectional controls, and a bound on how
much of a submitted value an answer repeats."""
from __future__ import annotations

import re
import unicodedata

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


def stem(word: str) -> str:
    """A crude singular: enough to make "shoes", "dresses", "ladies" and "watches" meet the
    catalog's "Shoe"/"Dress"/"lady"/"Watch"; applied to both sides, so its mistakes cancel."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lower-case words, possessives dropped ("men's" -> "men"), split at anything not a letter or digit.

    NFKC first: full-width and other compatibility forms ("ｗｏｍｅｎ", "ﬁt") are the words they look like."""
    text = unicodedata.normalize("NFKC", str(text)).casefold().replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"(\w)'s?\b", r"\1", text)
    return re.findall(r"[^\W_]+", text)


def meaning(value) -> str:
    """One key for the spellings of one meaning: "Dress" and "Dresses", "T-shirt" and "T shirts"."""
    return " ".join(stem(w) for w in words(value))


__all__ = ["BIDI_CONTROLS", "ECHO_CHARS", "shown_text", "clipped", "meaning", "stem", "words"]
