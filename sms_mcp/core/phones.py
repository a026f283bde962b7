"""Phone numbers: parse, validate and normalise with libphonenumber; tell mainland China from the rest.

Wire forms follow Alibaba: a mainland number goes out as its 11 digits; an international (incl. Hong Kong,
Macao, Taiwan) number as country code + national number with no ``+`` (``85291234567``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sms_mcp.core.errors import SmsError

_SEPARATORS = re.compile(r"[\s\-().]")
_MAINLAND = re.compile(r"^(?:\+?86|0086)?(1\d{10})$")


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
    text = _SEPARATORS.sub("", str(raw).strip())
    bad = SmsError(
        "isv.MOBILE_NUMBER_ILLEGAL",
        f"{mask(text) or 'an empty value'} is not a valid mobile number.",
        "Ask the user for the correct number: mainland China numbers are 11 digits starting with 1 "
        "(optionally +86); international numbers start with + and the country code. Never invent or reuse "
        "an example number.",
    )
    if not text or not re.fullmatch(r"\+?\d{6,20}", text):
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
