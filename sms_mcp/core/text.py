"""Text as a check must see it: one normal form for every content check (URLs, instructions, numbers).

Checks that run on the raw string are defeated by look-alikes: full-width letters and dots (``ｅｖｉｌ．ｃｏｍ``), the
ideographic full stop (``evil。com``), zero-width and other format characters (``evil\\u200b.com``), doubled or
exotic spaces. :func:`normalise_text` folds all of them (NFKC, format characters removed, every dot-like
character a ``.``, runs of white space one space); the checks run on its result. The value sent is never changed:
normalisation is for looking, not for rewriting.
"""

from __future__ import annotations

import re
import unicodedata

#: Dot-like characters NFKC leaves alone (it already folds the full-width ``．`` and half-width ``｡``).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": ".", "\u2024": ".", "\ufe52": ".", "\u0701": ".",
                       "\u0702": ".", "\u00b7": ".", "\u30fb": ".", "\u2027": "."})
_SPACES = re.compile(r"\s+")


def normalise_text(value: str) -> str:
    """NFKC, without format characters (zero-width spaces and joiners, bidi controls, soft hyphens), with every
    dot-like character as ``.`` and every run of white space as one space."""
    text = unicodedata.normalize("NFKC", value)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return _SPACES.sub(" ", text.translate(_DOTS))


#: Bidirectional overrides and isolates: they reorder what the confirming human sees, and an SMS has no use for them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def control_characters(value: str) -> list[str]:
    """The control characters in ``value`` (NUL, escape, DEL, C1 controls; tab and newlines too), the bidi
    overrides/isolates and lone surrogates (no UTF-8 for them), as ``U+XXXX``."""
    return sorted({f"U+{ord(c):04X}" for c in value
                   if unicodedata.category(c) in ("Cc", "Cs") or c in _BIDI_CONTROLS})
