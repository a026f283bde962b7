"""Masking of personal data in results and logs (qualification records carry ID numbers, names, phones)."""

from __future__ import annotations

from urllib.parse import urlsplit


def mask_name(name: str) -> str:
    """张三 -> 张*, Zhang San -> Z*********: enough to recognise a record, not to identify a person."""
    name = name.strip()
    if len(name) <= 1:
        return name
    return name[0] + "*" * (len(name) - 1)


def mask_id_number(number: str) -> str:
    """330106199001011234 -> 3301**********1234."""
    number = number.strip()
    if len(number) <= 8:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def mask_document(code: str) -> str:
    """Organisation codes: keep the last 4 characters."""
    code = code.strip()
    if len(code) <= 4:
        return code
    return "*" * (len(code) - 4) + code[-4:]


def mask_url(url: str) -> str:
    """Licence and ID images are signed URLs: show only that one exists and where it is hosted."""
    if not url:
        return ""
    host = urlsplit(url).hostname or "?"
    return f"<image on {host}>"
