"""Validation of what a send will carry, before anything is sent: template values and number scope.

Template values are data. Alibaba refuses links in them (``isv.PARAM_NOT_SUPPORT_URL``) and so do we: any host-like
token (a domain with any top-level domain, an IP address, an e-mail address, a scheme://) is refused. Text that
reads like instructions to a model is not refused (it may be legitimate) but flagged in the plan, so the human
who confirms sees it. Both checks look at :func:`~sms_mcp.core.text.normalise_text` of the value, so full-width
letters, ideographic dots, zero-width characters and doubled spaces cannot hide a link or an instruction. Control
characters (NUL, escape, newlines) are refused outright: an SMS cannot show them and they only serve to hide text.
"""

from __future__ import annotations

import re

from sms_mcp.core.errors import SmsError
from sms_mcp.core.models import TemplateInfo
from sms_mcp.core.phones import Phone
from sms_mcp.core.text import control_characters, normalise_text

# ASCII-only boundaries, not ``\b``: Python's ``\b`` sees CJK characters as word characters, so "详见bit.ly/x",
# "详见http://…" or "请访问evil.top了解" (the natural way to write a link in Chinese) slipped through. Matched on
# normalised text, so "ｅｖｉｌ．ｃｏｍ", "evil。com" and "evil\u200b.com" are "evil.com" here.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
URL = re.compile(
    r"(?i)(?<![a-z0-9.-])(?:"
    r"[a-z][a-z0-9+.-]*://\S*"  # any scheme
    r"|www\.\S+"
    r"|[a-z0-9._%+-]+@" + _LABEL + r"(?:\." + _LABEL + r")*"  # e-mail, with or without a TLD
    r"|\d{1,3}(?:\.\d{1,3}){3}(?![0-9])(?:[/:?#]\S*)?"  # IPv4
    r"|\[[0-9a-f:.]*:[0-9a-f:.]*\](?::\d+)?"  # [IPv6]
    r"|" + _LABEL + r"(?:\." + _LABEL + r")*\.(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})(?![a-z0-9-])(?:[/:?#]\S*)?"  # any TLD
    r")"
)
# A space before a dot ("evil .com", "evil . com") is an obfuscation, not prose (prose spaces after the dot).
_SPACED_DOT = re.compile(r"\s+\.\s*")
INSTRUCTION_LIKE = re.compile(
    r"(?i)(ignore (?:all |the )?(?:previous|above|prior)|disregard (?:all |the )?(?:previous|above|prior)|"
    r"system prompt|you are now|new instructions|act as|jailbreak|developer mode|confirm_token|"
    r"忽略(?:之前|以上|上面)|无视(?:之前|以上)|系统提示|你现在是)"
)
MAX_VALUE_LENGTH = 35
#: Longest echo of a caller-given name in a refusal.
ECHO_LIMIT = 60


def _echo(value: str, limit: int = ECHO_LIMIT) -> str:
    return value if len(value) <= limit else f"{value[:limit]}… ({len(value):,} characters)"


def _names(names: list[str], limit: int = 300) -> str:
    """Bounded list of caller-given names: each cut, at most ``limit`` characters, "and N more"."""
    shown: list[str] = []
    used = 0
    for name in names:
        item = _echo(name)
        if shown and used + len(item) > limit:
            break
        shown.append(item)
        used += len(item) + 2
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" … and {more:,} more ({len(names):,} in all)" if more else "")


def host_like(value: str) -> str | None:
    """The first host-like token (domain with any TLD, IP address, e-mail, scheme://) in the normalised value."""
    text = _SPACED_DOT.sub(".", normalise_text(value))
    match = URL.search(text)
    return match.group(0) if match else None


def check_params(template: TemplateInfo, attributes: dict[str, str], params: dict[str, str] | None) -> dict[str, str]:
    """Exactly the template's variables, string values of 1-35 characters, no URLs, codes of 4-6 characters."""
    params = dict(params or {})
    missing = [v for v in template.variables if v not in params]
    if missing:
        raise SmsError("isv.TEMPLATE_MISSING_PARAMETERS",
                       f"Template {template.template_code} needs a value for: "
                       + ", ".join("${" + v + "}" for v in missing) + ".",
                       "Ask the user for each missing value; never invent one.")
    extra = [str(k) for k in params if k not in template.variables]
    if extra:
        raise SmsError("isv.INVALID_JSON_PARAM",
                       f"Template {template.template_code} has no variable(s) {_names(extra)}; its variables "
                       f"are: {', '.join(template.variables) or 'none'}.",
                       "Pass exactly the template's variables.")
    for name, value in params.items():
        if not isinstance(value, str):
            raise SmsError("isv.INVALID_JSON_PARAM", f"The value of {name} must be a string.",
                           "Pass every template value as a string, e.g. \"1234\".")
        if not 1 <= len(value) <= MAX_VALUE_LENGTH:
            raise SmsError("isv.PARAM_LENGTH_LIMIT",
                           f"The value of {name} has {len(value)} characters; 1-{MAX_VALUE_LENGTH} are allowed.",
                           "Ask the user for a shorter (non-empty) value.")
        controls = control_characters(value)
        if controls:
            raise SmsError("isv.INVALID_JSON_PARAM",
                           f"The value of {name} contains control characters ({', '.join(controls[:5])}).",
                           "Template values are plain text on one line: remove NUL, escape, tab, line breaks and "
                           "direction overrides.")
        host = host_like(value)
        if host:
            raise SmsError("isv.PARAM_NOT_SUPPORT_URL",
                           f"The value of {name} contains a link or address ({_echo(host, 40)!r}, as normalised).",
                           "Template values may not carry links, domains, IP or e-mail addresses; links belong in "
                           "an approved template's text.")
        is_code = template.type == "verification" or (template.type == "international" and name == "code")
        if is_code:
            digits_only = attributes.get(name) == "numberCaptcha"
            if not 4 <= len(value) <= 6 or (digits_only and not value.isdigit()):
                raise SmsError("isv.TEMPLATE_PARAMS_ILLEGAL",
                               f"The verification code {name} must be 4-6 " + ("digits." if digits_only
                                                                                 else "characters."),
                               "Ask the user for (or generate, if they say so) a valid code.")
    return params


def instruction_flags(params: dict[str, str]) -> list[str]:
    """Values that read like instructions to a model: shown to the human as a warning, never obeyed."""
    return [f"The value of {name} looks like an instruction ({match.group(0)!r}); it is sent as plain text. "
            "Make sure the user really wants it." for name, value in params.items()
            if (match := INSTRUCTION_LIKE.search(normalise_text(value)))]


def check_scope(template: TemplateInfo, phones: list[Phone]) -> None:
    """International templates only to numbers outside mainland China, domestic ones only inside."""
    if template.type == "international":
        mainland = [p.masked for p in phones if p.domestic]
        if mainland:
            raise SmsError("isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
                           f"Template {template.template_code} is international; mainland China numbers "
                           f"({', '.join(mainland[:5])}) cannot receive it.",
                           "Use a domestic template for mainland numbers, or remove them.")
    else:
        foreign = [p.masked for p in phones if not p.domestic]
        if foreign:
            raise SmsError("isv.MOBILE_NUMBER_ILLEGAL",
                           f"Template {template.template_code} is domestic; international numbers "
                           f"({', '.join(foreign[:5])}) cannot receive it.",
                           "Use an approved international template for numbers outside mainland China.")
