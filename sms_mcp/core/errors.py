"""Domain errors and the catalogue that explains Alibaba's codes to an agent.

Every refusal the model sees carries three things: the Alibaba code (or ours, prefixed ``sms_mcp.``), what it
means, and what to do next. The skin returns :class:`SmsError` as an error result with exactly that text; nothing
else leaks. Alibaba's codes are explained by the one catalogue in :mod:`sms_mcp.dysmsapi`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sms_mcp.dysmsapi import CATALOGUE as ALIBABA_CATALOGUE
from sms_mcp.dysmsapi import LIST_SIGNS, LIST_TEMPLATES, GatewayError, OutcomeUnknownError
from sms_mcp.dysmsapi import explain as explain_code

__all__ = ["CATALOGUE", "LIST_SIGNS", "LIST_TEMPLATES", "SmsError", "explain", "from_business", "from_gateway",
           "from_unanswered_read"]

#: The one catalogue (sms_mcp.dysmsapi) plus the codes of our own that a recorded chunk can carry.
CATALOGUE: dict[str, tuple[str, str]] = {
    **ALIBABA_CATALOGUE,
    # Ours: a chunk refused locally at send time (concurrent confirmations used up the operator's budget).
    "sms_mcp.DAILY_LIMIT": ("The operator's daily message limit (SMS_MCP_DAILY_LIMIT, UTC+8 day) is used up; "
                            "nothing was sent.", "Wait until tomorrow (UTC+8) or ask the operator to raise the "
                            "limit."),
    "sms_mcp.PRINCIPAL_DAILY_LIMIT": ("Your own daily message limit (the operator's policy, UTC+8 day) is used "
                                      "up; nothing was sent.", "Wait until tomorrow (UTC+8) or ask the operator "
                                      "to raise your limit."),
}


@dataclass
class SmsError(Exception):
    """A refusal or failure the agent can act on. Raised only before anything was sent, or with the outcome."""

    code: str
    message: str
    next_step: str = ""
    request_id: str = ""

    def __post_init__(self) -> None:
        Exception.__init__(self, self.render())

    def render(self) -> str:
        # An echo of caller input may hold a lone surrogate (legal in JSON, not in UTF-8): shown escaped, so the
        # refusal can be encoded on every transport instead of failing as an internal error.
        message = self.message.encode("utf-8", "backslashreplace").decode("utf-8")
        text = f"[{self.code}] {message}"
        if self.next_step:
            text += f" Next step: {self.next_step}"
        if self.request_id:
            text += f" (RequestId {self.request_id})"
        return text


def explain(code: str, message: str = "") -> tuple[str, str]:
    """``(meaning, next step)`` for a code: ours first, then the one catalogue of Alibaba's."""
    if code in CATALOGUE and code not in ALIBABA_CATALOGUE:
        return CATALOGUE[code]
    return explain_code(code, message)


def from_business(body: dict) -> SmsError:
    code = str(body.get("Code") or "Unknown")
    meaning, step = explain(code, str(body.get("Message") or ""))
    return SmsError(code, meaning, step, str(body.get("RequestId") or ""))


def from_gateway(err: GatewayError) -> SmsError:
    meaning, step = explain(err.code, err.message)
    return SmsError(err.code, f"HTTP {err.status}: {meaning}", step, err.request_id)


def from_unanswered_read(action: str, err: OutcomeUnknownError) -> SmsError:
    """A read (a list, a look-up, a receipt query; also the checks of a send's first step) got no answer. Not
    OUTCOME_UNKNOWN, which means a send may have gone out: a read sends nothing."""
    return SmsError(
        "sms_mcp.READ_UNANSWERED",
        f"No answer from Alibaba Cloud to {action} ({err.reason}); nothing was sent.",
        "Retry in a moment; if it keeps failing, run `sms-mcp doctor` (network, endpoint, credentials).",
    )
