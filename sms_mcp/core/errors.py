"""Domain errors and the catalogue that explains Alibaba's codes to an agent.

Every refusal the model sees carries three things: the Alibaba code (or ours, prefixed ``sms_mcp.``), what it
means, and what to do next. The skin turns :class:`SmsError` into a ``ToolError``; nothing else leaks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sms_mcp.wire.base import GatewayError, OutcomeUnknownError

LIST_SIGNS = "Call list_signs to see the approved signatures and ask the user which one to use; never guess."
LIST_TEMPLATES = (
    "Call list_templates to see the approved templates and ask the user which one to use; never guess."
)

# code -> (meaning, next step). Business codes come back as HTTP 200 bodies; gateway codes as HTTP >= 400.
CATALOGUE: dict[str, tuple[str, str]] = {
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
    # Ours: a chunk refused locally at send time (concurrent confirmations used up the operator's budget).
    "sms_mcp.DAILY_LIMIT": ("The operator's daily message limit (SMS_MCP_DAILY_LIMIT, UTC+8 day) is used up; "
                            "nothing was sent.", "Wait until tomorrow (UTC+8) or ask the operator to raise the "
                            "limit."),
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
        text = f"[{self.code}] {self.message}"
        if self.next_step:
            text += f" Next step: {self.next_step}"
        if self.request_id:
            text += f" (RequestId {self.request_id})"
        return text


def explain(code: str, message: str = "") -> tuple[str, str]:
    """``(meaning, next step)`` for an Alibaba code; unknown codes keep Alibaba's own message."""
    if code in CATALOGUE:
        meaning, step = CATALOGUE[code]
        if message and message not in meaning:
            meaning = f"{meaning} (Alibaba says: {message})"
        return meaning, step
    if code.startswith("Missing"):
        return f"A required parameter is missing: {message or code}", "Supply the parameter."
    return (message or "Alibaba Cloud returned an error."), "See the Alibaba code in the troubleshooting table."


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
