"""Pure helpers for the aliyun CLI backend: wire names -> CLI argv, CLI output -> wire body or typed error.

Kept free of process handling so every rule here is unit-testable on plain strings. Facts come from
``shared/reference/aliyun-cli.md`` (§3 command/flag names, §4 output conventions, §1.6 the 3.5.x JSON errors).
"""

from __future__ import annotations

import json
import re
from typing import Any

from sms_mcp.wire.base import GatewayError, OutcomeUnknownError, WireBody

#: Wire parameter names the ten actions use, with their CLI flag (aliyun-cli.md §3). Written out rather than
#: only derived so a surprising name (acronyms, digits) cannot silently become a flag the plugin rejects.
PARAM_FLAGS: dict[str, str] = {
    "PhoneNumbers": "--phone-numbers",
    "SignName": "--sign-name",
    "TemplateCode": "--template-code",
    "TemplateParam": "--template-param",
    "SmsUpExtendCode": "--sms-up-extend-code",
    "OutId": "--out-id",
    "PhoneNumberJson": "--phone-number-json",
    "SignNameJson": "--sign-name-json",
    "TemplateParamJson": "--template-param-json",
    "SmsUpExtendCodeJson": "--sms-up-extend-code-json",
    "PhoneNumber": "--phone-number",
    "SendDate": "--send-date",
    "PageSize": "--page-size",
    "CurrentPage": "--current-page",
    "BizId": "--biz-id",
    "IsGlobe": "--is-globe",
    "StartDate": "--start-date",
    "EndDate": "--end-date",
    "PageIndex": "--page-index",
    "TemplateType": "--template-type",
    "SkuCode": "--sku-code",
    "QualificationGroupName": "--qualification-group-name",
    "CompanyName": "--company-name",
    "State": "--state",
    "WorkOrderId": "--work-order-id",
    "LegalPersonName": "--legal-person-name",
    "UseBySelf": "--use-by-self",
    "PageNo": "--page-no",
    "QualificationGroupId": "--qualification-group-id",
    "OrderId": "--order-id",
}

#: Flags the transport itself sets; a wire parameter must never smuggle one in (e.g. ``Profile``, ``Endpoint``).
RESERVED_FLAGS = frozenset(
    {
        "--api-version",
        "--user-agent",
        "--read-timeout",
        "--region",
        "--profile",
        "--endpoint",
        "--cli-ai-mode",
        "--no-cli-ai-mode",
        "--config-path",
        "--mode",
        "--access-key-id",
        "--access-key-secret",
        "--sts-token",
        "--quiet",
        "--cli-query",
        "--cli-dry-run",
        "--dryrun",
        "--force",
        "--insecure",
        "--help",
    }
)

_NAME_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_KEBAB_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_AK_RE = re.compile(r"(LTAI|STS\.)[A-Za-z0-9]{4,}([A-Za-z0-9]{4})(?![A-Za-z0-9])")


def kebab(name: str) -> str:
    """``SendSms`` -> ``send-sms``; ``QuerySmsQualificationRecord`` -> ``query-sms-qualification-record``."""
    if not _NAME_RE.match(name):
        raise ValueError(f"not a Dysmsapi name: {name!r}")
    return _KEBAB_RE.sub("-", name).lower()


def param_flag(name: str) -> str:
    """The CLI flag for a wire parameter name; refuses names that would collide with the transport's own flags."""
    flag = PARAM_FLAGS.get(name) or "--" + kebab(name)
    if flag in RESERVED_FLAGS:
        raise ValueError(f"wire parameter {name!r} maps to a reserved CLI flag {flag}")
    return flag


def params_to_flags(params: dict[str, str]) -> list[str]:
    """Wire params -> ``[--flag, value, ...]``. Empty values are left out (the SDKs leave unset fields out too)."""
    argv: list[str] = []
    for name, value in params.items():
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise TypeError(f"wire parameter {name} must be a string, got {type(value).__name__}")
        # Separate argv items, as the official skill does: no shell is involved, so JSON with quotes, `$`, `;`
        # etc. travels untouched (the skill's metacharacter blacklist, defect 4, is unnecessary here).
        argv += [param_flag(name), value]
    return argv


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


def mask_secrets(text: str) -> str:
    """Mask anything shaped like an AccessKey id before it reaches a log or an error message."""
    return _AK_RE.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)


def _decode(data: bytes) -> str:
    return strip_ansi(data.decode("utf-8", errors="replace"))


def _first_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``: the whole text, else the first ``{`` that starts a decodable object."""
    text = text.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
        decoder = json.JSONDecoder()
        for match in re.finditer(r"\{", text):
            try:
                value, _ = decoder.raw_decode(text, match.start())
            except ValueError:
                continue
            break
    return value if isinstance(value, dict) else None


def parse_success(stdout: bytes) -> WireBody:
    """Exit 0: stdout is the wire body (business errors included). Anything else is an unknown outcome."""
    body = _first_json_object(_decode(stdout))
    if body is None:
        raise OutcomeUnknownError(
            "malformed_response", f"aliyun exited 0 without a JSON object on stdout: {_snippet(stdout)!r}"
        )
    return body


#: HTTP status for gateway codes whose status is not 400 (dysmsapi.md §8.3); used when the CLI text omits it.
_STATUS_BY_CODE: dict[str, int] = {
    "InvalidAccessKeyId.NotFound": 404,
    "InvalidApi.NotFound": 404,
    "InvalidAction.NotFound": 404,
    "InvalidProtocol.NeedSsl": 404,
    "Forbidden.RAM": 403,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}

# Errors after which the request may have reached Alibaba: never reported as a definite refusal.
_UNKNOWN_PATTERNS = re.compile(
    r"(?<![-\w])timeout|timed out|deadline exceeded|connection reset|broken pipe|unexpected eof|\bEOF\b|"
    r"connection refused|no such host|network is unreachable|tls handshake|panic:",
    re.IGNORECASE,
)
_UNKNOWN_CATEGORIES = {"NETWORK_FAILURE", "NETWORK_ERROR", "TIMEOUT", "INTERNAL_ERROR"}

_TEXT_KEYS = ("ErrorCode", "Recommend", "RequestId", "Message", "StatusCode", "HttpStatus", "RespHeaders", "HostId")


def _snippet(data: bytes | str, limit: int = 500) -> str:
    text = data if isinstance(data, str) else _decode(data)
    text = mask_secrets(text.strip())
    return text if len(text) <= limit else text[:limit] + "…"


def _status(value: Any) -> int | None:
    try:
        status = int(value)
    except (TypeError, ValueError):
        return None
    return status if 100 <= status <= 599 else None


def _from_envelope(env: dict[str, Any], returncode: int) -> GatewayError | OutcomeUnknownError:
    """The 3.5.x one-line JSON errors on stderr (both shapes seen in aliyun-cli, §1.6)."""
    category = str(env.get("category") or "")
    code = str(env.get("error_code") or env.get("errorCode") or env.get("code") or category or "CLI.Error")
    message = str(env.get("message") or "")
    status = _status(env.get("status_code") or env.get("statusCode") or env.get("http_status"))
    request_id = str(env.get("request_id") or env.get("requestId") or "")
    if status is None and (category.upper() in _UNKNOWN_CATEGORIES or _UNKNOWN_PATTERNS.search(code)):
        return OutcomeUnknownError("cli_network", _snippet(json.dumps(env, ensure_ascii=False)))
    recovery = env.get("recovery") if isinstance(env.get("recovery"), dict) else {}
    hints = [str(recovery.get(k)) for k in ("hint", "command") if recovery.get(k)]
    suggestions = env.get("suggestions") or env.get("did_you_mean")
    if isinstance(suggestions, list):
        hints += [str(s) for s in suggestions]
    elif suggestions:
        hints.append(str(suggestions))
    if status is None:
        status = _STATUS_BY_CODE.get(code, 400)
    return GatewayError(
        status=status,
        code=code,
        message=mask_secrets(message),
        request_id=request_id,
        recommend=mask_secrets("; ".join(hints)),
        body=dict(env),
    )


def _from_server_error_text(text: str) -> GatewayError:
    """``ERROR: SDK.ServerError\\nErrorCode: X\\nRecommend: ...\\nRequestId: ...\\nMessage: ...`` (§4.3)."""
    fields: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in _TEXT_KEYS:
            current = key.strip()
            fields[current] = value.strip()
        elif current == "Message" and line.strip():
            # Messages may span lines (e.g. "server string to sign is: ..."); keep them whole.
            fields["Message"] += "\n" + line.strip()
    code = fields.get("ErrorCode", "") or "SDK.ServerError"
    status = _status(fields.get("StatusCode") or fields.get("HttpStatus")) or _STATUS_BY_CODE.get(code, 400)
    error = GatewayError(
        status=status,
        code=code,
        message=mask_secrets(fields.get("Message", "")),
        request_id=fields.get("RequestId", ""),
        host_id=fields.get("HostId", ""),
        recommend=fields.get("Recommend", ""),
    )
    error.body = error.to_body()
    return error


def parse_failure(returncode: int, stdout: bytes, stderr: bytes) -> GatewayError | OutcomeUnknownError:
    """A non-zero exit -> the same typed error the other backends raise."""
    if returncode < 0:
        # Killed by a signal we did not send (OOM killer, a user's kill): the request may be in flight.
        return OutcomeUnknownError("cli_killed", f"aliyun was killed by signal {-returncode}")
    err = _decode(stderr).strip()
    for candidate in [err, *(line for line in err.splitlines() if line.lstrip().startswith("{"))]:
        env = _first_json_object(candidate) if candidate.lstrip().startswith("{") else None
        if env is not None and ("message" in env or "code" in env or "error_code" in env):
            return _from_envelope(env, returncode)
    if re.search(r"^\s*ErrorCode:", err, re.MULTILINE):
        return _from_server_error_text(err)
    # Some plugins may print the gateway body itself on stdout and exit non-zero.
    body = _first_json_object(_decode(stdout))
    if body and body.get("Code") and (body.get("HostId") or body.get("Recommend")):
        code = str(body["Code"])
        return GatewayError(
            status=_status(body.get("StatusCode")) or _STATUS_BY_CODE.get(code, 400),
            code=code,
            message=mask_secrets(str(body.get("Message", ""))),
            request_id=str(body.get("RequestId", "")),
            host_id=str(body.get("HostId", "")),
            recommend=str(body.get("Recommend", "")),
            body=body,
        )
    if _UNKNOWN_PATTERNS.search(err):
        return OutcomeUnknownError("cli_network", f"aliyun exit {returncode}: {_snippet(err)}")
    # Usage or configuration errors: the CLI refused before sending anything (exit 2 usage, 3 config, §4.1).
    message = _snippet(re.sub(r"^ERROR:\s*", "", err, flags=re.MULTILINE) or f"aliyun exited {returncode}", 1000)
    code = {2: "CLI.UsageError", 3: "CLI.ConfigError"}.get(returncode, "CLI.Error")
    recommend = ""
    if "not a valid product" in err or "install it with" in err.lower():
        code, recommend = "CLI.PluginMissing", "aliyun plugin install --names dysmsapi"
    elif "region" in err.lower() and "empty" in err.lower():
        recommend = "set ALIBABA_CLOUD_REGION_ID or a region in the aliyun profile"
    error = GatewayError(status=400, code=code, message=message, recommend=recommend)
    error.body = error.to_body() | {"ExitCode": returncode}
    return error
