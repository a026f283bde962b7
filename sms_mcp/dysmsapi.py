"""The Dysmsapi protocol as every layer sees it: action names, the wire types, the two kinds of failure, the
:class:`Transport` port, and the masking of AccessKey ids. Neutral ground: ``core/`` (the domain), ``wire/`` (the
backends) and ``emulator/`` import it, and none of them imports another for these (``sms_mcp.wire.base`` re-exports
them for older imports).

The wire layer's one interface: ``(action, wire params) -> wire response body``.

Like httpx's transports, this is a strict cut at plain primitives. ``action`` is the Dysmsapi action name
(``SendSms``), ``params`` maps the exact wire parameter names to string values (``PhoneNumbers``,
``TemplateParam`` as JSON text, ...), and the result is the exact JSON body Alibaba returns, as a dict.

Two kinds of failure, kept apart because they mean different things for a send:

* Business errors (``isv.*``, ``isp.*``) are *bodies* with ``Code != "OK"``: returned, never raised.
* :class:`GatewayError`: the gateway refused the request (HTTP >= 400: signing, AccessKey, throttling,
  missing parameter, unknown action). Alibaba did not process the action.
* :class:`OutcomeUnknownError`: the request may or may not have reached Alibaba (timeout, connection lost,
  malformed response). For a send this means "did it send?" and must be reconciled, never retried blindly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

API_VERSION = "2017-05-25"

#: The ten Dysmsapi actions sms-mcp uses.
ACTIONS: tuple[str, ...] = (
    "SendSms",
    "SendBatchSms",
    "QuerySendDetails",
    "QuerySendStatistics",
    "QuerySmsSignList",
    "QuerySmsTemplateList",
    "GetSmsSign",
    "GetSmsTemplate",
    "QuerySmsQualificationRecord",
    "QuerySingleSmsQualification",
)

#: Actions that cost money and are not idempotent: never retried automatically.
SEND_ACTIONS: frozenset[str] = frozenset({"SendSms", "SendBatchSms"})

#: SendBatchSms puts these in the form body; everything else travels in the query string.
FORM_BODY_PARAMS: dict[str, frozenset[str]] = {
    "SendBatchSms": frozenset({"PhoneNumberJson", "SignNameJson", "TemplateParamJson", "SmsUpExtendCodeJson"}),
}

#: The User-Agent segment Alibaba uses to attribute agent traffic (the official skill's value).
AGENT_USER_AGENT = "AlibabaCloud-Agent-Skills/alibabacloud-sms-send-short-message"

WireParams = dict[str, str]
WireBody = dict[str, Any]


@dataclass
class GatewayError(Exception):
    """The Alibaba gateway answered HTTP >= 400 (body ``{RequestId, HostId, Code, Message, Recommend}``)."""

    status: int
    code: str
    message: str
    request_id: str = ""
    host_id: str = ""
    recommend: str = ""
    body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, f"HTTP {self.status} {self.code}: {self.message}")

    def to_body(self) -> WireBody:
        """The gateway error body exactly as Alibaba shapes it."""
        return {
            "RequestId": self.request_id,
            "HostId": self.host_id,
            "Code": self.code,
            "Message": self.message,
            "Recommend": self.recommend,
        }

    @property
    def retryable(self) -> bool:
        """Throttling and 5xx may be retried with backoff (never for a send without reconciling first)."""
        return self.status >= 500 or self.code.startswith("Throttling")


@dataclass
class OutcomeUnknownError(Exception):
    """The request may have been processed, or not: timeout, dropped connection, unreadable response."""

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        Exception.__init__(self, f"outcome unknown ({self.reason}): {self.detail}")


@runtime_checkable
class Transport(Protocol):
    """A Dysmsapi backend. Implementations: sandbox (in-process emulator), openapi, aliyun CLI."""

    #: ``sandbox`` | ``openapi`` | ``cli`` (shown in every tool result).
    name: str

    async def start(self) -> None:
        """Acquire resources (connection pools, CLI AI-mode). Called once, before the first call."""

    async def call(self, action: str, params: WireParams) -> WireBody:
        """Perform one Dysmsapi action. Business errors are returned; gateway errors raise GatewayError."""
        ...

    async def aclose(self) -> None:
        """Release everything ``start`` acquired. Must be safe to call more than once and fast (< 1 s)."""


def mask_access_key_id(key_id: str) -> str:
    """``LTAI5tAbCdEf1234`` -> ``LTAI****1234``. Short ids keep less, so a masked id never reveals most of it."""
    key_id = key_id.strip()
    if len(key_id) >= 12:
        return f"{key_id[:4]}****{key_id[-4:]}"
    if len(key_id) >= 6:
        return f"{key_id[:2]}****{key_id[-2:]}"
    return "****"
