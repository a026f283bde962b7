"""Phone-number parsing with the service's rules (dysmsapi.md §9.1).

Mainland China: 11 digits starting with 1, bare or prefixed ``+``, ``+86``, ``0086`` or ``86``; stored as the
11 digits. International: country code + number (an optional leading ``+`` or ``00`` is tolerated), validated
with libphonenumber; stored as digits including the country code (E.164 without the ``+``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAINLAND = re.compile(r"1[0-9]{10}")
_DIGITS = re.compile(r"[0-9]{5,20}")


@dataclass(frozen=True)
class PhoneNumber:
    digits: str
    international: bool


def parse_number(raw: str, *, international_first: bool = False) -> PhoneNumber | None:
    """Normalise one number, or None when the service would reject it as ``isv.MOBILE_NUMBER_ILLEGAL``.

    Alibaba's documented international form has no ``+`` (``14155552671`` for the US), which collides with the
    mainland form (11 digits starting with 1). The template decides: for an international template
    (``international_first``) a valid foreign reading wins; otherwise bare 11 digits starting with 1 are
    mainland, and a foreign reading wins only when the caller wrote an explicit ``+`` or ``00`` prefix.
    """
    text = raw.strip()
    prefixed = text.startswith(("+", "00"))
    body = text[1:] if text.startswith("+") else text[2:] if text.startswith("00") else text
    if not _DIGITS.fullmatch(body):
        return None
    if body.startswith("86") and _MAINLAND.fullmatch(body[2:]):
        return PhoneNumber(body[2:], False)
    if _MAINLAND.fullmatch(body):
        if prefixed or international_first:
            foreign = _international(body)
            if foreign is not None:
                return foreign
        return PhoneNumber(body, False)
    return _international(body)


def _international(body: str) -> PhoneNumber | None:
    try:
        import phonenumbers  # on first use: keeps it out of server start-up

        parsed = phonenumbers.parse("+" + body, None)
    except phonenumbers.NumberParseException:
        return None
    # A +86 number that is not an 11-digit mobile (a landline, say) cannot receive SMS.
    if parsed.country_code == 86 or not phonenumbers.is_valid_number(parsed):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(e164[1:], True)
