"""Phone numbers: parse, validate and normalise with libphonenumber; tell mainland China from the rest.

Wire forms follow Alibaba: a mainland number goes out as its 11 digits; an international (incl. Hong Kong,
Macao, Taiwan) number as country code + national number with no ``+`` (``85291234567``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sms_mcp.core.errors import SmsError
from sms_mcp.core.text import normalise_text

_SEPARATORS = re.compile(r"[\s\-().]")
_MAINLAND = re.compile(r"^(?:\+?86|0086)?(1[0-9]{10})$")


@dataclass(frozen=True)
class Phone:
    wire: str  # what Alibaba gets
    e164: str  # +8613800138000
    region: str  # ISO region, e.g. CN, HK
    domestic: bool  # mainland China

    @property
    def masked(self) -> str:
        return mask(self.wire)


def mask(number: str) -> str:
    """138****8000: keep the first 3 and last 4 digits of the national part."""
    digits = re.sub(r"\D", "", number)
    if len(digits) <= 7:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


@functools.lru_cache(maxsize=65_536)
def parse_phone(raw: str) -> Phone:
    """Accept ``13800138000``, ``+8613800138000``, ``008613800138000``, ``8613800138000``, ``+85291234567``,
    ``0085291234567`` or ``85291234567``; raise ``isv.MOBILE_NUMBER_ILLEGAL`` otherwise.

    Cached: libphonenumber costs ~30 µs a number, and a confirmation parses the plan's numbers again. The
    library is imported on first use, not at server start (it is ~12 ms of import time)."""
    import phonenumbers

    mobile_types = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
    text = canonical_digits(raw)
    bad = SmsError(
        "isv.MOBILE_NUMBER_ILLEGAL",
        f"{mask(text) or 'an empty value'} is not a valid mobile number.",
        "Ask the user for the correct number: mainland China numbers are 11 digits starting with 1 "
        "(optionally +86); international numbers start with + and the country code. Never invent or reuse "
        "an example number.",
    )
    if not text or not re.fullmatch(r"\+?[0-9]{6,20}", text):
        raise bad
    mainland = _MAINLAND.match(text)
    if mainland:
        candidate = "+86" + mainland.group(1)
    elif text.startswith("+"):
        candidate = text
    elif text.startswith("00"):
        candidate = "+" + text[2:]
    else:
        candidate = "+" + text
    try:
        parsed = phonenumbers.parse(candidate, None)
    except phonenumbers.NumberParseException:
        raise bad from None
    if not phonenumbers.is_valid_number(parsed) or phonenumbers.number_type(parsed) not in mobile_types:
        raise bad
    region = phonenumbers.region_code_for_number(parsed) or "ZZ"
    national = str(parsed.national_number)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if parsed.country_code == 86:
        return Phone(wire=national, e164=e164, region="CN", domestic=True)
    return Phone(wire=f"{parsed.country_code}{national}", e164=e164, region=region, domestic=False)


def canonical_digits(raw: object) -> str:
    """One rule for every way of typing a number: NFKC (full-width ``＋８６１３８…`` and ``１３８…`` become ASCII),
    format characters (zero-width spaces) and separators (spaces, ``-``, ``.``, brackets) removed. What is left must
    be ASCII digits with an optional leading ``+``; other scripts' digits are not folded and are refused."""
    return _SEPARATORS.sub("", normalise_text(str(raw)).strip())


def normalise_allow_list(entries: Iterable[str]) -> tuple[str, ...]:
    """``SMS_MCP_ALLOWED_NUMBERS`` entries -> ``+E.164`` numbers and ``+<digits>*`` patterns, de-duplicated.

    An entry is a full number, normalised exactly as a recipient is (so ``+86 138 0013 8000`` and
    ``13800138000`` are the same entry), or an explicit pattern: ``+``, a country calling code and optionally more
    digits, then ``*`` (``+86138*``, ``+852*``). Anything else (``+``, ``1``, a 10-digit typo) raises
    ``ValueError`` naming the entry: a prefix that allows more than the operator meant is never guessed."""
    import phonenumbers

    normalised: list[str] = []
    for entry in entries:
        text = canonical_digits(entry)
        shown = repr(entry.strip()[:40]) + ("…" if len(entry.strip()) > 40 else "")
        if text.endswith("*"):
            digits = text[:-1]
            if digits.startswith("00"):
                digits = "+" + digits[2:]
            if not re.fullmatch(r"\+[0-9]{1,15}", digits) or not any(
                    digits[1 : 1 + n].isdigit() and int(digits[1 : 1 + n]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE
                    for n in (1, 2, 3) if len(digits) > n):
                raise ValueError(f"entry {shown}: a pattern is + and a country calling code, optionally more digits, "
                                 "then * (e.g. +86138*)")
            value = digits + "*"
        else:
            try:
                value = parse_phone(text).e164
            except SmsError:
                raise ValueError(f"entry {shown} is not a valid mobile number (for a range, write a pattern "
                                 "ending in *, e.g. +86138*)") from None
        if value not in normalised:
            normalised.append(value)
    return tuple(normalised)


def allow_listed(phone: Phone, allowed: Iterable[str]) -> bool:
    """``phone`` is one of the normalised entries or starts with a pattern's digits."""
    return any(phone.e164 == entry or (entry.endswith("*") and phone.e164.startswith(entry[:-1]))
               for entry in allowed)


def parse_many(raws: list[str]) -> tuple[list[Phone], list[str]]:
    """Parse and de-duplicate (by normalised number, first occurrence kept). Returns (phones, masked dups)."""
    seen: set[str] = set()
    phones: list[Phone] = []
    duplicates: list[str] = []
    for raw in raws:
        phone = parse_phone(raw)
        if phone.e164 in seen:
            duplicates.append(phone.masked)
            continue
        seen.add(phone.e164)
        phones.append(phone)
    return phones, duplicates
