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


@runtime_checkable
class WarmableTransport(Protocol):
    """An optional capability of a :class:`Transport` (the openapi one): opening connections ahead of the calls."""

    async def warm(self, connections: int) -> None:
        """Open up to ``connections`` connections to the endpoint, sending no request. Best effort: a failure
        changes nothing (each call opens its own connection, as without it)."""


def mask_access_key_id(key_id: str) -> str:
    """``LTAI5tAbCdEf1234`` -> ``LTAI****1234``. Short ids keep less, so a masked id never reveals most of it."""
    key_id = key_id.strip()
    if len(key_id) >= 12:
        return f"{key_id[:4]}****{key_id[-4:]}"
    if len(key_id) >= 6:
        return f"{key_id[:2]}****{key_id[-2:]}"
    return "****"


# --------------------------------------------------------------------------------------------------------------
# The one catalogue of Alibaba's codes: what each means and what to do next (the domain shows it to an agent;
# `sms-mcp doctor` shows it to a person). Business codes come back as HTTP 200 bodies; gateway codes as HTTP >= 400.
# --------------------------------------------------------------------------------------------------------------

LIST_SIGNS = "Call list_signs to see the approved signatures and ask the user which one to use; never guess."
LIST_TEMPLATES = (
    "Call list_templates to see the approved templates and ask the user which one to use; never guess."
)

_BUSINESS_AND_GATEWAY: dict[str, tuple[str, str]] = {
    # Signature (the SMS "sign name", 【...】 in the message) — not the API request signature.
    "isv.SMS_SIGNATURE_ILLEGAL": (
        "The SMS sign name does not exist in this account or is not approved.",
        LIST_SIGNS,
    ),
    "isv.SMS_SIGN_ILLEGAL": ("The SMS sign name is forbidden (rejected or cancelled).", LIST_SIGNS),
    "isv.SIGN_STATE_ILLEGAL": ("The SMS sign name is not usable (not approved).", LIST_SIGNS),
    "isv.SMS_SIGN_NAME_ILLEGAL": ("The SMS sign name is not valid.", LIST_SIGNS),
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": (
        "The sign name and the template do not match: a verification-code signature can only send "
        "verification-code templates.",
        "Use a general-purpose signature for this template, or a verification-code template. " + LIST_SIGNS,
    ),
    "isv.SMS_TEMPLATE_ILLEGAL": (
        "The template does not exist in this account, is not approved, or its parameters do not match.",
        LIST_TEMPLATES,
    ),
    "isv.MOBILE_NUMBER_ILLEGAL": (
        "A phone number is not valid.",
        "Ask the user for the correct number: mainland China numbers are 11 digits starting with 1 "
        "(optionally +86); international numbers start with + and the country code.",
    ),
    "isv.MOBILE_COUNT_OVER_LIMIT": (
        "Too many phone numbers in one request.",
        "Send at most 1,000 numbers with send_sms or 100 recipients with send_batch_sms per plan.",
    ),
    "isv.TEMPLATE_MISSING_PARAMETERS": (
        "A template variable has no value.",
        "Ask the user for a value for every ${variable} of the template (list_templates shows them).",
    ),
    "isv.INVALID_JSON_PARAM": (
        "Template parameters must be a JSON object of string values naming only the template's variables.",
        "Pass template_param as {\"variable\": \"value\"} with string values, one per ${variable}.",
    ),
    "isv.PARAM_LENGTH_LIMIT": (
        "A template value is too long (each variable takes 1-35 characters; a message at most 500).",
        "Ask the user for a shorter value.",
    ),
    "isv.PARAM_NOT_SUPPORT_URL": (
        "Template variables may not contain URLs.",
        "Remove the URL from the value; links must be part of an approved template's fixed text.",
    ),
    "isv.TEMPLATE_PARAMS_ILLEGAL": (
        "A template value does not match the variable's type (verification codes: 4-6 characters).",
        "Ask the user for a value of the right type.",
    ),
    "isv.DOMESTIC_NUMBER_NOT_SUPPORTED": (
        "An international template cannot be sent to a mainland China number.",
        "Use a domestic template for mainland numbers, or split the recipients.",
    ),
    "isv.BUSINESS_LIMIT_CONTROL": (
        "Flow control: this number already received too many messages from this signature "
        "(verification codes: 1/minute, 5/hour, 10/day).",
        "Do not resend now. Wait for the window to pass and tell the user when it can be tried again.",
    ),
    "isv.DAY_LIMIT_CONTROL": ("The account's daily sending cap was reached.", "Wait until tomorrow or raise "
                              "the cap in the Alibaba Cloud SMS console."),
    "isv.MONTH_LIMIT_CONTROL": ("The account's monthly sending cap was reached.", "Wait until next month or "
                                "raise the cap in the console."),
    "isv.AMOUNT_NOT_ENOUGH": ("The Alibaba Cloud account balance is too low.", "Ask the account owner to top up."),
    "isv.OUT_OF_SERVICE": ("The SMS service is suspended (balance).", "Ask the account owner to top up."),
    "isv.PRODUCT_UN_SUBSCRIPT": ("SMS is not activated for this account.", "Activate Short Message Service."),
    "isv.PRODUCT_UNSUBSCRIBE": ("SMS is not activated for this account.", "Activate Short Message Service."),
    "isv.ACCOUNT_NOT_EXISTS": ("The account does not exist (wrong AccessKey?).", "Check the credentials."),
    "isv.ACCOUNT_ABNORMAL": ("The account is abnormal.", "Contact Alibaba Cloud support."),
    "isv.SMS_CONTENT_ILLEGAL": ("The content contains forbidden text.", "Change the template values."),
    "isv.BLACK_KEY_CONTROL_LIMIT": ("A value contains a blacklisted keyword.", "Change the template values."),
    "isv.DENY_IP_RANGE": ("Mainland SMS must be sent from a mainland source IP.", "Send from a mainland host."),
    "isv.CUSTOMER_REFUSED": ("The recipient unsubscribed from promotional SMS.", "Do not send promotions "
                             "to this number."),
    "isv.INVALID_PARAMETERS": ("A parameter has the wrong format.", "Fix the parameter named in the message."),
    "isp.SYSTEM_ERROR": ("Alibaba Cloud had a system error.", "For a read, retry later. For a send, check the "
                         "receipt with query_details before preparing a new plan."),
    "isp.GATEWAY_ERROR": ("Alibaba Cloud's sending module failed.", "Check the receipt with query_details "
                          "before preparing a new plan."),
    "isp.RAM_PERMISSION_DENY": ("The RAM user lacks permission for this SMS action.", "Grant dysms:<Action> "
                                "(or AliyunDysmsFullAccess) to the RAM user."),
    # Gateway (HTTP >= 400). The credential ones are about the AccessKey and API request signing.
    "SignatureDoesNotMatch": (
        "Credential problem: the API request signature did not verify, so the AccessKey secret is wrong "
        "(this is about the AccessKey, not the SMS sign name).",
        "Check ALIBABA_CLOUD_ACCESS_KEY_SECRET / the aliyun profile's secret, then run `sms-mcp doctor`.",
    ),
    "IncompleteSignature": ("Credential problem: the API request signature is malformed.",
                            "Run `sms-mcp doctor`; check the AccessKey configuration."),
    "InvalidAccessKeyId.NotFound": (
        "Credential problem: the AccessKey ID is unknown to Alibaba Cloud.",
        "Check ALIBABA_CLOUD_ACCESS_KEY_ID / the aliyun profile, then run `sms-mcp doctor`.",
    ),
    "InvalidAccessKeyId.Inactive": ("Credential problem: the AccessKey is disabled.",
                                    "Enable or replace the AccessKey in the RAM console."),
    "InvalidTimeStamp.Expired": (
        "Credential problem: the request timestamp is outside Alibaba's window; this machine's clock is off.",
        "Fix the system clock (NTP), then retry.",
    ),
    "InvalidTimeStamp.Format": ("The request timestamp is malformed.", "Fix the system clock, then retry."),
    "SignatureNonceUsed": ("A request nonce was reused.", "Retry; a new nonce is generated per request."),
    "Forbidden.RAM": ("Credential problem: the RAM user is not authorised for this SMS action.",
                      "Grant dysms:<Action> (or AliyunDysmsFullAccess) to the RAM user."),
    "ForbiddenAction": ("Access to the account is denied.", "Ask the account administrator."),
    "InvalidCredentials": ("No Alibaba Cloud credentials were found.",
                           "Set ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET or configure the aliyun CLI; run "
                           "`sms-mcp doctor`."),
    "SignatureNotFound": ("The SMS sign name does not exist in this account.", LIST_SIGNS),
    "TemplateNotFound": ("The template code does not exist in this account.", LIST_TEMPLATES),
    "InvalidApi.NotFound": ("The API action is unknown to the endpoint.", "Check SMS_MCP_ENDPOINT/region."),
    "Throttling.User": ("Alibaba Cloud throttled the request.", "Wait a moment and retry a read; for a send, "
                        "nothing was sent."),
    "Throttling.Api": ("Alibaba Cloud throttled the API.", "Wait a moment and retry."),
    "Throttling": ("Alibaba Cloud throttled the request.", "Wait a moment and retry."),
    "InternalError": ("Alibaba Cloud had an internal error.", "Retry a read later; for a send, reconcile with "
                      "query_details first."),
    "ServiceUnavailable": ("Alibaba Cloud is temporarily unavailable.", "Retry later."),
}

#: Gateway codes about the AccessKey, the request signature, the endpoint and transport (these texts win).
_GATEWAY: dict[str, tuple[str, str]] = {
    "SignatureDoesNotMatch": (
        "The AccessKey secret does not match the AccessKey ID (the API request signature did not verify). "
        "This is a credential problem, not an SMS sign name problem.",
        "Check ALIBABA_CLOUD_ACCESS_KEY_SECRET or the secret in your aliyun profile; then run `sms-mcp doctor`.",
    ),
    "IncompleteSignature": (
        "The API request signature is malformed (a credential/signing problem, not the SMS sign name).",
        "Check the credential configuration and run `sms-mcp doctor`.",
    ),
    "InvalidAccessKeyId.NotFound": (
        "Alibaba Cloud does not know this AccessKey ID (a credential problem, not the SMS sign name).",
        "Check ALIBABA_CLOUD_ACCESS_KEY_ID or your aliyun profile; then run `sms-mcp doctor`.",
    ),
    "InvalidAccessKeyId": (
        "The AccessKey ID is invalid (a credential problem, not the SMS sign name).",
        "Check ALIBABA_CLOUD_ACCESS_KEY_ID or your aliyun profile; then run `sms-mcp doctor`.",
    ),
    "InvalidAccessKeyId.Inactive": (
        "The AccessKey is disabled (a credential problem, not the SMS sign name).",
        "Enable it or create a new AccessKey in the RAM console, then update your credentials.",
    ),
    "InvalidTimeStamp.Expired": (
        "The request timestamp is too far from Alibaba Cloud's clock (more than 15 minutes): this machine's clock "
        "is wrong, so the request signature is rejected. A credential/signing problem, not the SMS sign name.",
        "Synchronise the system clock (NTP), then retry.",
    ),
    "InvalidTimeStamp.Format": (
        "The request timestamp is malformed (request signing problem).",
        "Check the system clock and time zone settings, then retry.",
    ),
    "SignatureNonceUsed": (
        "The request's signature nonce was already used (request signing problem).",
        "Retry: every request gets a fresh nonce.",
    ),
    "InvalidSecurityToken.Expired": (
        "The STS security token has expired (a credential problem).",
        "Refresh the STS token (ALIBABA_CLOUD_SECURITY_TOKEN or the profile), or use a RAM role that refreshes.",
    ),
    "InvalidSecurityToken.Malformed": (
        "The STS security token is malformed (a credential problem).",
        "Check ALIBABA_CLOUD_SECURITY_TOKEN or the profile's sts_token.",
    ),
    "InvalidSecurityToken.MismatchWithAccessKey": (
        "The STS security token does not belong to this AccessKey ID (a credential problem).",
        "Use the AccessKey ID, secret and token from the same AssumeRole result.",
    ),
    "Forbidden.RAM": (
        "The credentials are valid but the RAM user or role may not call this SMS action (a permission problem "
        "with the AccessKey's identity, not the SMS sign name).",
        "Grant dysms:<Action> (or the AliyunDysmsFullAccess policy) to the RAM user/role.",
    ),
    "InvalidCredentials": (
        "No usable Alibaba Cloud credentials were found (AccessKey missing), so nothing was sent.",
        "Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure a profile with "
        "`aliyun configure`; then run `sms-mcp doctor`.",
    ),
    "Throttling.User": (
        "Alibaba Cloud throttled the request (API rate limit). It was not processed.",
        "Wait a moment and retry.",
    ),
    "Throttling.Api": ("Alibaba Cloud throttled this API. The request was not processed.", "Wait and retry."),
    "Throttling": ("Alibaba Cloud throttled the request. It was not processed.", "Wait and retry."),
    "InternalError": (
        "Alibaba Cloud had an internal error.",
        "Retry a read later; for a send, check the receipt (QuerySendDetails) before sending again.",
    ),
    "ServiceUnavailable": ("Alibaba Cloud is temporarily unavailable.", "Retry later."),
    "InvalidApi.NotFound": (
        "The endpoint does not know this API action.",
        "Check SMS_MCP_ENDPOINT / ALIBABA_CLOUD_REGION_ID point at Dysmsapi.",
    ),
    "InvalidVersion": ("The endpoint does not serve Dysmsapi 2017-05-25.", "Check SMS_MCP_ENDPOINT."),
    "InvalidProtocol.NeedSsl": ("This API requires HTTPS.", "Use an https:// SMS_MCP_ENDPOINT."),
    "UnsupportedHTTPMethod": ("The API does not accept this HTTP method.", "Report this as an sms-mcp bug."),
    "TlsVerificationFailed": (
        "The endpoint's TLS certificate did not verify against the trusted CAs, so nothing was sent.",
        "Point SMS_MCP_CA_BUNDLE (or SSL_CERT_FILE) at the CA file that issued the endpoint's certificate "
        "(for `sms-mcp emulator --tls`: DATA_DIR/tls/emulator-ca.pem); check SMS_MCP_ENDPOINT's host name.",
    ),
}

CATALOGUE: dict[str, tuple[str, str]] = {**_BUSINESS_AND_GATEWAY, **_GATEWAY}


def explain(code: str, message: str = "", status: int = 0, *, quote: bool = True) -> tuple[str, str]:
    """``(meaning, next step)`` for an Alibaba code. ``quote`` appends Alibaba's own message to a known meaning;
    unknown codes keep Alibaba's message."""
    if code in CATALOGUE:
        meaning, step = CATALOGUE[code]
        if quote and message and message not in meaning:
            meaning = f"{meaning} (Alibaba says: {message})"
        return meaning, step
    if code.startswith("Missing"):
        name = code.removeprefix("Missing") or "a parameter"
        return f"The required parameter {name} was missing.", f"Supply {name}."
    if code.startswith("InvalidParameter"):
        return f"A parameter was rejected: {message}", "Fix the parameter named in the message."
    if code.startswith("Throttling"):
        return CATALOGUE["Throttling"]
    if status >= 500:
        return "Alibaba Cloud had a server error.", "Retry a read later; for a send, check the receipt first."
    return (message or f"Alibaba Cloud refused the request ({code})."), \
        "See the Alibaba code in the troubleshooting table (or the Recommend URL Alibaba sent)."
