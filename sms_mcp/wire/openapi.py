"""The real Alibaba Cloud backend: Dysmsapi through Alibaba's own generic OpenAPI client.

Signing (V3 ``ACS3-HMAC-SHA256``, or V2 on request) and credentials come from Alibaba's libraries
(``alibabacloud-tea-openapi``'s generic call, ``alibabacloud-credentials``' default chain); nothing here computes
a signature. This module adds what the SDK leaves to the caller:

* the endpoint, from the *documented* region table (reference §4; the SDK's own map disagrees with the docs);
* timeouts, and retries only for reads (SendSms/SendBatchSms are not idempotent: never retried);
* error translation into the wire layer's two failure kinds, with credential problems (AccessKey / request
  signing) spelled out so they are never confused with SMS *sign name* errors.

The Alibaba packages are imported lazily, in :meth:`OpenApiTransport.start`, so ``serve`` with the sandbox never
pays for them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from sms_mcp import __version__
from sms_mcp.config import ConfigError, Settings
from sms_mcp.wire.base import (
    AGENT_USER_AGENT,
    API_VERSION,
    FORM_BODY_PARAMS,
    SEND_ACTIONS,
    GatewayError,
    OutcomeUnknownError,
    WireBody,
    WireParams,
)
from sms_mcp.wire.credentials import find_credentials, mask_access_key_id

log = logging.getLogger("sms_mcp.wire")

DEFAULT_HOST = "dysmsapi.aliyuncs.com"

#: Non-mainland regions with their own documented host (https://help.aliyun.com/document_detail/68360.html).
#: Every ``cn-*`` region (mainland, the finance clouds, and cn-hongkong) uses DEFAULT_HOST.
REGION_HOSTS: dict[str, str] = {
    "ap-southeast-1": "dysmsapi.ap-southeast-1.aliyuncs.com",
    "ap-southeast-5": "dysmsapi.ap-southeast-5.aliyuncs.com",
    "eu-central-1": "dysmsapi.eu-central-1.aliyuncs.com",
}

#: Gateway codes that are about the AccessKey or the API request signature, never about the SMS sign name.
CREDENTIAL_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidTimeStamp.Expired",
        "InvalidTimeStamp.Format",
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.Malformed",
        "InvalidSecurityToken.MismatchWithAccessKey",
        "Forbidden.RAM",
        "InvalidCredentials",
        "SignatureNonceUsed",
    }
)

CREDENTIAL_PREFIX = "Credential problem (Alibaba Cloud AccessKey / API request signing, not the SMS sign name): "

#: Read retries: attempts in all, and the most time spent sleeping between them.
READ_ATTEMPTS = 3
READ_BACKOFF_BASE = 0.2
READ_BACKOFF_BUDGET = 1.5


# --------------------------------------------------------------------------------------------------------------
# Endpoint
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    host: str  # host[:port], never a scheme: the SDK would put a scheme into the Host header and sign it
    protocol: str  # "HTTPS" | "HTTP"

    @property
    def url(self) -> str:
        return f"{self.protocol.lower()}://{self.host}"


def parse_endpoint(value: str) -> Endpoint:
    """``https://host``, ``http://host:port`` or a bare ``host[:port]`` (HTTPS) -> :class:`Endpoint`."""
    raw = value.strip()
    scheme, sep, rest = raw.partition("://")
    if sep:
        protocol = scheme.upper()
        if protocol not in ("HTTP", "HTTPS"):
            raise ConfigError(f"SMS_MCP_ENDPOINT={value!r}: the scheme must be http or https")
    else:
        protocol, rest = "HTTPS", raw
    host = rest.split("/", 1)[0].strip()
    if not host or any(c in host for c in " ?#@"):
        raise ConfigError(f"SMS_MCP_ENDPOINT={value!r}: expected https://host, http://host:port or host")
    return Endpoint(host, protocol)


def endpoint_for(settings: Settings) -> Endpoint:
    """``settings.endpoint`` if set, else the documented host for ``settings.region_id``."""
    if settings.endpoint:
        return parse_endpoint(settings.endpoint)
    region = (settings.region_id or "cn-hangzhou").strip().lower()
    if region.startswith("cn-"):
        return Endpoint(DEFAULT_HOST, "HTTPS")
    if region in REGION_HOSTS:
        return Endpoint(REGION_HOSTS[region], "HTTPS")
    log.warning(
        "ALIBABA_CLOUD_REGION_ID=%s has no documented Dysmsapi endpoint; using %s (set SMS_MCP_ENDPOINT to override)",
        region,
        DEFAULT_HOST,
    )
    return Endpoint(DEFAULT_HOST, "HTTPS")


# --------------------------------------------------------------------------------------------------------------
# Error explanation
# --------------------------------------------------------------------------------------------------------------

_EXPLANATIONS: dict[str, tuple[str, str]] = {
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
}


def explain_gateway_error(err: GatewayError) -> tuple[str, str]:
    """``(meaning, next step)`` for a gateway error, for the domain layer to show an agent."""
    if err.code in _EXPLANATIONS:
        return _EXPLANATIONS[err.code]
    if err.code.startswith("Missing"):
        name = err.code.removeprefix("Missing") or "a parameter"
        return f"The required parameter {name} was missing.", f"Supply {name}."
    if err.code.startswith("InvalidParameter"):
        return f"A parameter was rejected: {err.message}", "Fix the parameter named in the message."
    if err.code.startswith("Throttling"):
        return _EXPLANATIONS["Throttling"]
    if err.status >= 500:
        return "Alibaba Cloud had a server error.", "Retry a read later; for a send, check the receipt first."
    return (
        err.message or f"Alibaba Cloud refused the request ({err.code}).",
        "See the code in Alibaba's troubleshooting page (Recommend URL).",
    )


def is_credential_error(err: GatewayError) -> bool:
    return err.code in CREDENTIAL_CODES


# --------------------------------------------------------------------------------------------------------------
# Exception translation
# --------------------------------------------------------------------------------------------------------------

_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def _scrub(text: str) -> str:
    """Drop query strings from URLs in SDK/aiohttp messages: they carry phone numbers and message variables."""
    return _URL_QUERY.sub(r"\1?…", text)[:500]


def _credential_error(status: int, code: str, message: str, **extra: Any) -> GatewayError:
    return GatewayError(status, code, CREDENTIAL_PREFIX + message, **extra)


def translate_exception(exc: BaseException) -> GatewayError | OutcomeUnknownError:
    """Map an exception from the tea-openapi client to the wire layer's error types."""
    from alibabacloud_credentials.exceptions import CredentialException
    from darabonba.exceptions import ResponseException
    from Tea.exceptions import UnretryableException

    if isinstance(exc, ResponseException):
        # ClientException / ServerException / ThrottlingException: the gateway answered HTTP >= 400 (or the SDK
        # itself refused before sending: status None, e.g. code InvalidCredentials when there is no credential).
        data = exc.data if isinstance(exc.data, dict) else {}
        body = {k: v for k, v in data.items() if k != "statusCode"}
        status = int(exc.status_code or 0)
        code = str(exc.code or body.get("Code") or "Unknown")
        message = str(body.get("Message") or body.get("message") or exc.message or "")
        # SignatureDoesNotMatch carries the server's string-to-sign, i.e. every parameter (phone numbers, message
        # variables): useless to an agent and unfit for logs. The raw body keeps it for debugging.
        message = message.split(" server string to sign is:")[0].split("server string to sign is:")[0].rstrip()
        extra = {
            "request_id": str(body.get("RequestId") or ""),
            "host_id": str(body.get("HostId") or ""),
            "recommend": str(body.get("Recommend") or ""),
            "body": body,
        }
        if code in CREDENTIAL_CODES:
            return _credential_error(status, code, message, **extra)
        return GatewayError(status, code, message, **extra)

    inner: BaseException = exc
    if isinstance(exc, UnretryableException) and exc.inner_exception is not None:
        inner = exc.inner_exception
    if isinstance(inner, ResponseException):
        return translate_exception(inner)
    if isinstance(inner, CredentialException):
        # Raised while resolving credentials, before any request left this machine.
        return _credential_error(
            0,
            "InvalidCredentials",
            "no Alibaba Cloud credentials could be loaded, so nothing was sent ("
            + _scrub(str(inner.message if hasattr(inner, "message") else inner))
            + "). Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure a profile "
            "(`aliyun configure`).",
        )
    text = str(getattr(inner, "message", None) or inner)
    # darabonba turns a JSON decode failure into RuntimeError('Failed to parse the value as json format, Value:
    # "<the whole body>"'); the body may hold phone numbers, so it is left out of the detail.
    if isinstance(inner, ValueError) or text.startswith("Failed to parse the value as json"):
        return OutcomeUnknownError("malformed_response", "the response body is not valid JSON")
    detail = _scrub(text or type(inner).__name__)
    lowered = detail.lower()
    if "cannot connect to host" in lowered:
        return OutcomeUnknownError(
            "connect_failed", f"could not connect ({detail}); the request most likely never reached Alibaba Cloud"
        )
    if "timeout" in lowered or isinstance(inner, (asyncio.TimeoutError, TimeoutError)):
        return OutcomeUnknownError("timeout", f"no answer in time ({detail})")
    return OutcomeUnknownError("connection_lost", f"{type(inner).__name__}: {detail}")


# --------------------------------------------------------------------------------------------------------------
# The transport
# --------------------------------------------------------------------------------------------------------------


class OpenApiTransport:
    """Dysmsapi over HTTPS with Alibaba's generic client (``call_api_async``) and default credential chain.

    ``credential`` may be any ``alibabacloud_credentials`` client/provider wrapper (tests pass a static one);
    by default the default chain is used. ``signature_algorithm="v2"`` selects the legacy RPC signature.
    """

    name = "openapi"

    def __init__(
        self,
        settings: Settings,
        *,
        credential: Any = None,
        signature_algorithm: str | None = None,
        read_attempts: int = READ_ATTEMPTS,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint_for(settings)
        self._credential = credential
        self._signature_algorithm = signature_algorithm
        self._read_attempts = max(1, read_attempts)
        self._sleep = sleep
        self._client: Any = None
        self._credential_client: Any = None
        self._start_lock = asyncio.Lock()
        self.last_response_headers: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenApiTransport:
        return cls(settings)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._client is None:
                self._client = self._build_client()

    def _build_client(self) -> Any:
        from sms_mcp.wire.credentials import build_credential_client, prepare_environment, quiet_sdk_loggers

        prepare_environment()  # before the first Alibaba import: it reads the environment at import time
        from alibabacloud_tea_openapi.client import Client
        from alibabacloud_tea_openapi.models import Config

        quiet_sdk_loggers()
        credential = self._credential
        if credential is None:
            if find_credentials() is None:
                log.warning(
                    "openapi backend: no Alibaba Cloud credentials found (env, OIDC, ~/.aliyun/config.json, "
                    "~/.alibabacloud/credentials.ini); calls will fail until credentials are configured"
                )
            credential = build_credential_client()
        self._credential_client = credential
        config = Config(
            credential=credential,
            endpoint=self.endpoint.host,
            protocol=self.endpoint.protocol,
            region_id=self.settings.region_id,
            read_timeout=int(self.settings.read_timeout * 1000),
            connect_timeout=int(self.settings.connect_timeout * 1000),
            # The SDK appends this to its own "AlibabaCloud (...) Python/... TeaDSL/2" agent string.
            user_agent=f"{AGENT_USER_AGENT} sms-mcp/{__version__}",
            signature_algorithm=self._signature_algorithm,
            # retry_options stays unset: the SDK then never retries (reference §7.4). Sends must never be
            # retried; read retries are done below, where they can be bounded and jittered.
        )
        log.info("openapi backend: endpoint %s", self.endpoint.url)
        return Client(config)

    async def aclose(self) -> None:
        # tea-openapi 0.4.6's async path opens an aiohttp session per request and closes it itself; the client
        # holds no sockets between calls, so dropping the reference releases everything.
        self._client = None

    # -- calls ----------------------------------------------------------------------------------------------------

    async def call(self, action: str, params: WireParams) -> WireBody:
        body, _ = await self._call_with_retries(action, params)
        return body

    async def _call_with_retries(self, action: str, params: WireParams) -> tuple[WireBody, dict[str, str]]:
        attempts = 1 if action in SEND_ACTIONS else self._read_attempts
        slept = 0.0
        for attempt in range(1, attempts + 1):
            try:
                return await self._call_once(action, params)
            except (GatewayError, OutcomeUnknownError) as err:
                delay = self._retry_delay(err, attempt)
                if attempt >= attempts or delay is None or slept + delay > READ_BACKOFF_BUDGET:
                    raise
                log.info("openapi %s: %s; retrying in %.2fs (attempt %d/%d)", action, err, delay, attempt + 1, attempts)
                slept += delay
                await self._sleep(delay)
        raise AssertionError("unreachable")

    @staticmethod
    def _retry_delay(err: GatewayError | OutcomeUnknownError, attempt: int) -> float | None:
        """Seconds to wait before retrying a *read*, or None when the error is not worth retrying."""
        if isinstance(err, GatewayError):
            if not err.retryable or err.status == 0:
                return None
        elif err.reason == "malformed_response":
            return None  # the server answered; asking again would most likely get the same answer
        # Full jitter on an exponential base: 0.1-0.2 s, then 0.2-0.4 s.
        base = READ_BACKOFF_BASE * (2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)

    async def _call_once(self, action: str, params: WireParams) -> tuple[WireBody, dict[str, str]]:
        if self._client is None:
            await self.start()
        from alibabacloud_tea_openapi.models import OpenApiRequest, Params
        from darabonba.runtime import RuntimeOptions

        form_names = FORM_BODY_PARAMS.get(action, frozenset())
        query = {k: str(v) for k, v in params.items() if k not in form_names and v is not None}
        form = {k: str(v) for k, v in params.items() if k in form_names and v is not None}
        request = OpenApiRequest(query=query, body=form or None)
        api = Params(
            action=action,
            version=API_VERSION,
            protocol=self.endpoint.protocol,
            method="POST",
            auth_type="AK",
            style="RPC",
            pathname="/",
            req_body_type="formData",
            body_type="json",
        )
        runtime = RuntimeOptions(
            read_timeout=int(self.settings.read_timeout * 1000),
            connect_timeout=int(self.settings.connect_timeout * 1000),
        )
        try:
            response = await self._client.call_api_async(api, request, runtime)
        except Exception as exc:
            raise translate_exception(exc) from None
        body = response.get("body") if isinstance(response, dict) else None
        if not isinstance(body, dict):
            raise OutcomeUnknownError("malformed_response", f"expected a JSON object, got {type(body).__name__}")
        headers = response.get("headers") or {}
        self.last_response_headers = {str(k).lower(): str(v) for k, v in dict(headers).items()}
        return body, self.last_response_headers

    # -- doctor ---------------------------------------------------------------------------------------------------

    async def diagnose(self) -> dict[str, Any]:
        """For ``sms-mcp doctor``: where credentials come from, the endpoint, one harmless read, the clock skew."""
        report: dict[str, Any] = {
            "backend": self.name,
            "endpoint": self.endpoint.url,
            "region_id": self.settings.region_id,
            "credentials": find_credentials() if self._credential is None else "explicit",
            "reachable": False,
            "warnings": [],
        }
        try:
            await self.start()
            model = await self._credential_client.get_credential_async()
            report["credential_provider"] = getattr(model, "provider_name", None) or getattr(model, "type", None)
            report["access_key_id"] = mask_access_key_id(getattr(model, "access_key_id", "") or "")
        except Exception as exc:
            err = translate_exception(exc)
            report["error"] = {"code": getattr(err, "code", err.__class__.__name__), "message": str(err)}
            report["warnings"].append("credentials could not be loaded")
            return report

        started = time.time()
        try:
            body, headers = await self._call_once("QuerySmsSignList", {"PageIndex": "1", "PageSize": "1"})
        except GatewayError as err:
            meaning, step = explain_gateway_error(err)
            report["reachable"] = err.status > 0  # an HTTP answer, even an error, proves the endpoint answers
            report["error"] = {
                "code": err.code,
                "status": err.status,
                "message": err.message,
                "meaning": meaning,
                "next_step": step,
                "request_id": err.request_id,
            }
            return report
        except OutcomeUnknownError as err:
            report["error"] = {"code": err.reason, "message": str(err)}
            return report
        finished = time.time()
        report["reachable"] = True
        report["request_id"] = body.get("RequestId", "")
        report["code"] = body.get("Code", "")
        skew = _clock_skew(headers.get("date"), (started + finished) / 2)
        report["clock_skew_seconds"] = skew
        if skew is not None and abs(skew) > 60:
            report["warnings"].append(
                f"this machine's clock is {skew:+.0f} s off the server's; Alibaba rejects requests more than 15 "
                "minutes off (InvalidTimeStamp.Expired)"
            )
        return report


def _clock_skew(date_header: str | None, local_time: float) -> float | None:
    """Local clock minus the server's ``Date`` header (1 s resolution), or None without a usable header."""
    if not date_header:
        return None
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return round(local_time - server_time, 1)
