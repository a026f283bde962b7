"""Rendering the final text per recipient and counting billed segments (dysmsapi.md §9.3).

Domestic: every character counts 1; <= 70 is one message, longer texts bill segments of 67.
International: pure GSM-7 text counts 160 / 153 per segment (a few characters count 2); anything else is UCS-2,
70 / 67. A pure-English signature is shown in [] rather than 【】 on international messages.
"""

from __future__ import annotations

import math
import re

_VARIABLE = re.compile(r"\$\{([^}]+)\}")

# GSM 03.38 basic set and the extension table (extension characters cost two septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€")

MAX_MESSAGE_LENGTH = 500


def signed_text(sign_name: str, body: str, international: bool) -> str:
    if international and sign_name.isascii():
        return f"[{sign_name}]{body}"
    return f"【{sign_name}】{body}"


def fill(content: str, params: dict[str, str]) -> str:
    """Replace each ``${name}`` with its value (values are plain data, never re-interpreted)."""
    return _VARIABLE.sub(lambda m: params.get(m.group(1), m.group(0)), content)


def is_gsm7(text: str) -> bool:
    return all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text)


def billing(text: str, international: bool) -> tuple[int, int]:
    """``(billed length, segments)`` for one recipient's full text."""
    if international and is_gsm7(text):
        length = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        return length, 1 if length <= 160 else math.ceil(length / 153)
    length = len(text)
    return length, 1 if length <= 70 else math.ceil(length / 67)


def render(sign_name: str, content: str, params: dict[str, str], international: bool) -> tuple[str, int, int]:
    """``(text, billed length, segments)``."""
    text = signed_text(sign_name, fill(content, params), international)
    length, segments = billing(text, international)
    return text, length, segments
