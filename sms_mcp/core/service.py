"""The domain service behind the seven tools. No MCP here: plain async methods, plain pytest.

Sending is two-step and the model cannot skip it: the first call validates, renders and stores a plan and
returns a confirmation token; only a second call with the same (normalised) arguments and that token performs
the one API call the ledger allows for the plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import anyio

from sms_mcp.config import Settings
from sms_mcp.core import errors
from sms_mcp.core.errors import SmsError
from sms_mcp.core.ledger import Ledger, PlanRow
from sms_mcp.core.models import (
    SANDBOX_NOTICE,
    DailyStatistics,
    DeliveryRecord,
    DeliveryReport,
    DeliverySummary,
    Plan,
    QualificationResult,
    RecipientPreview,
    SendResult,
    SignList,
    Statistics,
    TemplateInfo,
    TemplateList,
)
from sms_mcp.core.normalise import (
    OUTER_CODE,
    qualification_detail,
    qualification_from_list,
    sign_from_get,
    sign_from_list,
    template_from_get,
    template_from_list,
)
from sms_mcp.core.phones import Phone, mask, parse_many, parse_phone
from sms_mcp.core.render import MAX_MESSAGE_LENGTH, render
from sms_mcp.wire.base import GatewayError, OutcomeUnknownError, Transport

log = logging.getLogger("sms_mcp.service")

CHINA_TZ = timezone(timedelta(hours=8))
MAX_SEND_SMS_NUMBERS = 1000
MAX_BATCH_RECIPIENTS = 100
PREVIEW_LIMIT = 20
_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[a-z0-9-]+\.(?:com|cn|net|org|io|top|xyz|cc)(?:/\S*)?\b")
_DATE = re.compile(r"^\d{8}$")
STATUS_FILTERS = ("approved", "reviewing", "rejected", "cancelled", "all")
ACCEPTED_IS_NOT_DELIVERED = (
    "Accepted is not delivered: Alibaba took the request; carriers report delivery 10-30 s later."
)


def china_today(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, CHINA_TZ).strftime("%Y%m%d")


def _check_date(value: str, name: str) -> str:
    if not _DATE.match(value or ""):
        raise SmsError("isv.INVALID_PARAMETERS", f"{name} must be yyyyMMdd, got {value!r}.",
                       "Pass the date as 8 digits, e.g. 20261125.")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise SmsError("isv.INVALID_PARAMETERS", f"{name} {value!r} is not a calendar date.",
                       "Pass a real date as yyyyMMdd.") from None
    return value


def _args_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class SmsService:
    def __init__(
        self, settings: Settings, transport: Transport, ledger: Ledger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.clock = clock
        self.ledger = ledger or Ledger(settings.data_dir / "ledger.sqlite3", clock=clock)

    # ----------------------------------------------------------------- plumbing
    @property
    def backend(self) -> str:
        return self.transport.name

    def _served(self) -> dict[str, Any]:
        return {"backend": self.backend, "notice": SANDBOX_NOTICE if self.backend == "sandbox" else None}

    async def _read(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        """A read call: any failure becomes an SmsError the agent can act on."""
        try:
            body = await self.transport.call(action, params)
        except GatewayError as err:
            raise errors.from_gateway(err) from None
        except OutcomeUnknownError as err:
            raise errors.from_unknown(err) from None
        if body.get("Code") != "OK":
            raise errors.from_business(body)
        return body

    async def _all_pages(self, action: str, key: str, max_pages: int = 20) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in range(1, max_pages + 1):
            body = await self._read(action, {"PageIndex": str(page), "PageSize": "50"})
            batch = body.get(key) or []
            items.extend(batch)
            if not batch or len(items) >= int(body.get("TotalCount") or 0):
                break
        return items

    # ----------------------------------------------------------------- lists
    async def list_signs(self, page_index: int = 1, page_size: int = 50, status: str = "approved") -> SignList:
        signs = [sign_from_list(e) for e in await self._all_pages("QuerySmsSignList", "SmsSignList")]
        if status != "all":
            signs = [s for s in signs if s.status == status]
        start = (page_index - 1) * page_size
        return SignList(
            **self._served(), status_filter=status, total_count=len(signs), page_index=page_index,
            page_size=page_size, signs=signs[start:start + page_size],
            next_step="Ask the user which approved signature to use; do not pick one for them."
            if signs else "No signature matches. Signatures are applied for in the Alibaba Cloud SMS console.",
        )

    async def list_templates(
        self, page_index: int = 1, page_size: int = 50, status: str = "approved"
    ) -> TemplateList:
        entries = await self._all_pages("QuerySmsTemplateList", "SmsTemplateList")
        templates = [template_from_list(e) for e in entries]
        if status != "all":
            templates = [t for t in templates if t.status == status]
        start = (page_index - 1) * page_size
        return TemplateList(
            **self._served(), status_filter=status, total_count=len(templates), page_index=page_index,
            page_size=page_size, templates=templates[start:start + page_size],
            next_step="Ask the user which template to use, then ask for a value for each of its variables."
            if templates else "No template matches. Templates are applied for in the Alibaba Cloud SMS console.",
        )

    async def _approved_sign(self, sign_name: str) -> None:
        try:
            body = await self.transport.call("GetSmsSign", {"SignName": sign_name})
        except GatewayError as err:
            if err.code == "SignatureNotFound":
                raise SmsError("isv.SMS_SIGNATURE_ILLEGAL",
                               f"The sign name {sign_name!r} does not exist in this account.",
                               errors.LIST_SIGNS, err.request_id) from None
            raise errors.from_gateway(err) from None
        except OutcomeUnknownError as err:
            raise errors.from_unknown(err) from None
        if body.get("Code") != "OK":
            raise errors.from_business(body)
        sign = sign_from_get(body)
        if sign.status != "approved":
            why = f" Reason: {sign.reason}." if sign.reason else ""
            raise SmsError("isv.SMS_SIGNATURE_ILLEGAL",
                           f"The sign name {sign_name!r} is {sign.status}, not approved.{why}", errors.LIST_SIGNS)

    async def _approved_template(self, template_code: str) -> tuple[TemplateInfo, dict[str, str]]:
        try:
            body = await self.transport.call("GetSmsTemplate", {"TemplateCode": template_code})
        except GatewayError as err:
            if err.code == "TemplateNotFound":
                raise SmsError("isv.SMS_TEMPLATE_ILLEGAL",
                               f"The template {template_code!r} does not exist in this account.",
                               errors.LIST_TEMPLATES, err.request_id) from None
            raise errors.from_gateway(err) from None
        except OutcomeUnknownError as err:
            raise errors.from_unknown(err) from None
        if body.get("Code") != "OK":
            raise errors.from_business(body)
        template = template_from_get(body)
        if template.status != "approved":
            why = f" Reason: {template.reason}." if template.reason else ""
            raise SmsError("isv.SMS_TEMPLATE_ILLEGAL",
                           f"The template {template_code!r} is {template.status}, not approved.{why}",
                           errors.LIST_TEMPLATES)
        try:
            attributes = json.loads(body.get("VariableAttribute") or "{}")
        except ValueError:
            attributes = {}
        return template, attributes if isinstance(attributes, dict) else {}

    # ----------------------------------------------------------------- validation
    def _check_policy(self, template: TemplateInfo | None = None, phones: list[Phone] | None = None) -> None:
        if self.settings.read_only:
            raise SmsError("sms_mcp.READ_ONLY", "This server is configured read-only (SMS_MCP_READ_ONLY).",
                           "Sending is disabled by the operator; tell the user. Reads still work.")
        if template is not None and template.type == "promotional" and not self.settings.allow_promotional:
            raise SmsError("sms_mcp.PROMOTIONAL_DISABLED",
                           f"Template {template.template_code} is promotional; promotional sends are disabled.",
                           "Promotional SMS need SMS_MCP_ALLOW_PROMOTIONAL=true set by the operator.")
        allowed = self.settings.allowed_numbers
        if allowed and phones:
            for phone in phones:
                if not any(phone.e164 == a or phone.wire == a or phone.e164.startswith(a)
                           or phone.wire.startswith(a) for a in allowed):
                    raise SmsError("sms_mcp.NUMBER_NOT_ALLOWED",
                                   f"{phone.masked} is not in SMS_MCP_ALLOWED_NUMBERS.",
                                   "Only the operator's allow-list can be sent to; tell the user.")

    @staticmethod
    def _check_params(
        template: TemplateInfo, attributes: dict[str, str], params: dict[str, str] | None
    ) -> dict[str, str]:
        params = dict(params or {})
        missing = [v for v in template.variables if v not in params]
        if missing:
            raise SmsError("isv.TEMPLATE_MISSING_PARAMETERS",
                           f"Template {template.template_code} needs a value for: "
                           + ", ".join("${" + v + "}" for v in missing) + ".",
                           "Ask the user for each missing value; never invent one.")
        extra = [k for k in params if k not in template.variables]
        if extra:
            raise SmsError("isv.INVALID_JSON_PARAM",
                           f"Template {template.template_code} has no variable(s) {', '.join(extra)}; "
                           f"its variables are: {', '.join(template.variables) or 'none'}.",
                           "Pass exactly the template's variables.")
        for name, value in params.items():
            if not isinstance(value, str):
                raise SmsError("isv.INVALID_JSON_PARAM", f"The value of {name} must be a string.",
                               "Pass every template value as a string, e.g. \"1234\".")
            if not 1 <= len(value) <= 35:
                raise SmsError("isv.PARAM_LENGTH_LIMIT",
                               f"The value of {name} has {len(value)} characters; 1-35 are allowed.",
                               "Ask the user for a shorter (non-empty) value.")
            if _URL.search(value):
                raise SmsError("isv.PARAM_NOT_SUPPORT_URL", f"The value of {name} contains a URL.",
                               "Template values may not carry links; links belong in an approved template.")
            if template.type == "verification" or (template.type == "international" and name == "code"):
                if not 4 <= len(value) <= 6 or (attributes.get(name) == "numberCaptcha" and not value.isdigit()):
                    raise SmsError("isv.TEMPLATE_PARAMS_ILLEGAL",
                                   f"The verification code {name} must be 4-6 characters"
                                   + (" of digits." if attributes.get(name) == "numberCaptcha" else "."),
                                   "Ask the user for (or generate, if they say so) a valid code.")
        return params

    @staticmethod
    def _check_scope(template: TemplateInfo, phones: list[Phone]) -> None:
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

    # ----------------------------------------------------------------- sending
    async def send_sms(
        self, phone_numbers: list[str], sign_name: str, template_code: str,
        template_param: dict[str, str] | None = None, out_id: str | None = None,
        confirm_token: str | None = None,
    ) -> SendResult:
        phones, duplicates = parse_many(phone_numbers)
        if not phones:
            raise SmsError("isv.MOBILE_NUMBER_ILLEGAL", "No phone number given.", "Ask the user for the number.")
        args = {
            "tool": "send_sms", "phones": [p.e164 for p in phones], "sign_name": sign_name,
            "template_code": template_code, "template_param": dict(template_param or {}), "out_id": out_id,
        }
        if confirm_token:
            return await self._confirm(confirm_token, _args_hash(args))
        if len(phones) > MAX_SEND_SMS_NUMBERS:
            raise SmsError("isv.MOBILE_COUNT_OVER_LIMIT",
                           f"{len(phones)} numbers; send_sms takes at most {MAX_SEND_SMS_NUMBERS}.",
                           "Split the recipients into several plans.")
        self._check_policy(None, phones)
        await self._approved_sign(sign_name)
        template, attributes = await self._approved_template(template_code)
        self._check_policy(template, phones)
        params = self._check_params(template, attributes, template_param)
        self._check_scope(template, phones)
        plan_id = "plan_" + secrets.token_hex(8)
        wire_out_id = out_id or plan_id
        previews = [self._preview(p, sign_name, template, params) for p in phones]
        wire_params = {"PhoneNumbers": ",".join(p.wire for p in phones), "SignName": sign_name,
                       "TemplateCode": template_code, "OutId": wire_out_id}
        if params:
            wire_params["TemplateParam"] = json.dumps(params, ensure_ascii=False)
        return self._prepare(
            args, plan_id, "SendSms", template, [sign_name], phones, duplicates, previews, wire_out_id,
            wire_params,
        )

    async def send_batch_sms(
        self, recipients: list[dict[str, Any]], template_code: str, out_id: str | None = None,
        confirm_token: str | None = None,
    ) -> SendResult:
        if not recipients:
            raise SmsError("isv.MOBILE_NUMBER_ILLEGAL", "No recipient given.", "Ask the user for the recipients.")
        entries: list[tuple[Phone, str, dict[str, str]]] = []
        seen: set[str] = set()
        duplicates: list[str] = []
        for r in recipients:
            phone = parse_phone(r["phone_number"])
            if phone.e164 in seen:
                duplicates.append(phone.masked)
                continue
            seen.add(phone.e164)
            entries.append((phone, r["sign_name"], dict(r.get("template_param") or {})))
        args = {
            "tool": "send_batch_sms", "template_code": template_code, "out_id": out_id,
            "recipients": [[p.e164, s, tp] for p, s, tp in entries],
        }
        if confirm_token:
            return await self._confirm(confirm_token, _args_hash(args))
        if len(entries) > MAX_BATCH_RECIPIENTS:
            raise SmsError("isv.MOBILE_COUNT_OVER_LIMIT",
                           f"{len(entries)} recipients; send_batch_sms takes at most {MAX_BATCH_RECIPIENTS}.",
                           "Split the recipients into several plans.")
        phones = [p for p, _, _ in entries]
        self._check_policy(None, phones)
        signs = list(dict.fromkeys(s for _, s, _ in entries))
        for sign in signs:
            await self._approved_sign(sign)
        template, attributes = await self._approved_template(template_code)
        self._check_policy(template, phones)
        checked = [self._check_params(template, attributes, tp) for _, _, tp in entries]
        self._check_scope(template, phones)
        plan_id = "plan_" + secrets.token_hex(8)
        wire_out_id = out_id or plan_id
        previews = [self._preview(p, s, template, tp) for (p, s, _), tp in zip(entries, checked, strict=True)]
        wire_params = {
            "PhoneNumberJson": json.dumps([p.wire for p in phones], ensure_ascii=False),
            "SignNameJson": json.dumps([s for _, s, _ in entries], ensure_ascii=False),
            "TemplateCode": template_code, "OutId": wire_out_id,
        }
        if template.variables:
            wire_params["TemplateParamJson"] = json.dumps(checked, ensure_ascii=False)
        return self._prepare(
            args, plan_id, "SendBatchSms", template, signs, phones, duplicates, previews, wire_out_id,
            wire_params,
        )

    @staticmethod
    def _preview(phone: Phone, sign_name: str, template: TemplateInfo, params: dict[str, str]) -> RecipientPreview:
        text, length, segments = render(sign_name, template.content, params, international=not phone.domestic)
        if length > MAX_MESSAGE_LENGTH:
            raise SmsError("isv.PARAM_LENGTH_LIMIT", f"The message to {phone.masked} would have {length} "
                           f"characters; at most {MAX_MESSAGE_LENGTH} are allowed.", "Use shorter values.")
        return RecipientPreview(phone_number=phone.masked, region=phone.region, sign_name=sign_name, text=text,
                                length=length, segments=segments)

    def _prepare(
        self, args: dict[str, Any], plan_id: str, action: str, template: TemplateInfo, signs: list[str],
        phones: list[Phone], duplicates: list[str], previews: list[RecipientPreview], out_id: str,
        wire_params: dict[str, str],
    ) -> SendResult:
        plan = Plan(
            plan_id=plan_id, action=action, template_code=template.template_code,  # type: ignore[arg-type]
            template_name=template.template_name, template_type=template.type, sign_names=signs,
            recipient_count=len(phones), domestic_count=sum(p.domestic for p in phones),
            international_count=sum(not p.domestic for p in phones), duplicates_removed=duplicates,
            total_segments=sum(p.segments for p in previews), previews=previews[:PREVIEW_LIMIT], out_id=out_id,
            warnings=[f"{len(duplicates)} duplicate number(s) removed."] if duplicates else [],
        )
        token = "smt_" + secrets.token_urlsafe(24)  # 192 random bits
        ttl = self.settings.confirm_ttl_seconds
        self.ledger.create(
            plan_id=plan_id, token=token, tool=args["tool"], args_hash=_args_hash(args), ttl=ttl,
            plan=plan.model_dump(), wire={"action": action, "params": wire_params,
                                          "recipients": [p.wire for p in phones]},
        )
        expires = datetime.fromtimestamp(self.clock() + ttl, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.info("prepared %s: %s to %d recipient(s)", plan_id, action, len(phones))
        return SendResult(
            **self._served(), status="pending_confirmation", plan_id=plan_id, plan=plan, confirm_token=token,
            expires_at=expires,
            message=f"Nothing has been sent. Plan {plan_id}: {len(phones)} recipient(s), "
                    f"{plan.total_segments} billed message(s), template {template.template_code}.",
            next_step="Show this plan (recipients, signature, full text, segments) to the user and ask them to "
                      "confirm. Only after they explicitly confirm, call this tool again with exactly the same "
                      "arguments plus confirm_token. If they want changes, prepare a new plan instead.",
        )

    async def _confirm(self, token: str, args_hash: str) -> SendResult:
        row = self.ledger.by_token(token)
        if row is None:
            raise SmsError("sms_mcp.UNKNOWN_TOKEN", "This confirm_token is not valid; nothing was sent.",
                           "Call the tool without confirm_token to prepare a plan, show it to the user, then "
                           "confirm with the token it returns.")
        if row.args_hash != args_hash:
            raise SmsError("sms_mcp.TOKEN_ARGUMENT_MISMATCH",
                           f"The token belongs to plan {row.plan_id}, which was prepared with different "
                           "arguments; nothing was sent.",
                           "Confirm with exactly the arguments of the plan, or prepare a new plan for the new "
                           "arguments and show it to the user.")
        if row.state != "prepared":
            return await self._replay(row)
        if row.expires_at <= self.clock():
            raise SmsError("sms_mcp.TOKEN_EXPIRED",
                           f"The token of plan {row.plan_id} expired; nothing was sent.",
                           "Prepare the plan again (call without confirm_token), show it to the user and "
                           "confirm with the new token.")
        if not self.ledger.claim(row.plan_id):
            fresh = self.ledger.get(row.plan_id)
            assert fresh is not None
            if fresh.state == "prepared":  # expired between the two checks
                raise SmsError("sms_mcp.TOKEN_EXPIRED", f"The token of plan {row.plan_id} expired; nothing "
                               "was sent.", "Prepare the plan again.")
            return await self._replay(fresh)
        return await self._send(row)

    async def _replay(self, row: PlanRow) -> SendResult:
        """Another confirmation of this plan already ran (or is running): report its outcome, send nothing."""
        deadline = self.clock() + self.settings.read_timeout + 5.0
        while row.state == "sending" and self.clock() < deadline:
            await anyio.sleep(0.05)
            fresh = self.ledger.get(row.plan_id)
            assert fresh is not None
            row = fresh
        if row.result is not None:
            return SendResult.model_validate({**row.result, "replayed": True, "confirm_token": None,
                                              "expires_at": None})
        return SendResult(
            **self._served(), status="unknown", plan_id=row.plan_id, plan=Plan.model_validate(row.plan),
            replayed=True,
            message="Another confirmation of this plan is still in flight; this call sent nothing.",
            next_step=f"Call query_details(plan_id='{row.plan_id}') shortly to see the outcome; do not "
                      "prepare a new plan.",
        )

    async def _send(self, row: PlanRow) -> SendResult:
        action, params = row.wire["action"], row.wire["params"]
        plan = Plan.model_validate(row.plan)
        base = {**self._served(), "plan_id": row.plan_id, "plan": plan}
        try:
            body = await self.transport.call(action, params)
        except GatewayError as err:
            # 4xx: the gateway refused before the action ran. 5xx: it may have run.
            meaning, step = errors.explain(err.code, err.message)
            state = "unknown" if err.status >= 500 else "rejected"
            result = self._failed(base, state, err.code, f"HTTP {err.status}: {meaning}", step, err.request_id)
        except OutcomeUnknownError as err:
            result = self._failed(base, "unknown", "sms_mcp.OUTCOME_UNKNOWN", f"No answer ({err.reason}).", "",
                                  None)
        except BaseException:
            # Cancelled (client timeout) or a bug: the request may be on the wire. Record before unwinding.
            result = self._failed(base, "unknown", "sms_mcp.OUTCOME_UNKNOWN",
                                  "The call was interrupted while sending.", "", None)
            self.ledger.record(row.plan_id, "unknown", result.model_dump())
            raise
        else:
            if body.get("Code") == "OK":
                result = SendResult(
                    **base, status="accepted", biz_id=str(body.get("BizId") or ""),
                    request_id=str(body.get("RequestId") or ""),
                    message=f"Alibaba accepted the request for {plan.recipient_count} recipient(s). "
                            + ACCEPTED_IS_NOT_DELIVERED,
                    next_step=f"Wait 10-30 s, then call query_details(plan_id='{row.plan_id}') to see "
                              "delivery receipts. Do not send again.",
                )
            else:
                code = str(body.get("Code") or "Unknown")
                meaning, step = errors.explain(code, str(body.get("Message") or ""))
                result = self._failed(base, "rejected", code, meaning, step, str(body.get("RequestId") or ""))
        self.ledger.record(row.plan_id, result.status, result.model_dump())
        log.info("plan %s: %s", row.plan_id, result.status)
        return result

    @staticmethod
    def _failed(base: dict[str, Any], state: str, code: str, meaning: str, step: str,
                request_id: str | None) -> SendResult:
        plan_id = base["plan_id"]
        if state == "rejected":
            message = f"Alibaba rejected the request ({code}); nothing was sent."
            next_step = step or "Fix the cause and prepare a new plan."
        else:
            message = ("It is UNKNOWN whether Alibaba accepted this request; it may have been sent. "
                       "It will not be resent automatically.")
            next_step = (f"Do NOT prepare the same send again. Call query_details(plan_id='{plan_id}') to "
                         "reconcile it against Alibaba's receipts first.")
        return SendResult(**base, status=state, error_code=code, error_message=meaning,  # type: ignore[arg-type]
                          request_id=request_id or None, message=message, next_step=next_step)

    # ----------------------------------------------------------------- receipts
    async def query_details(
        self, phone_number: str | None = None, send_date: str | None = None, biz_id: str | None = None,
        plan_id: str | None = None, page_size: int = 10, current_page: int = 1,
    ) -> DeliveryReport:
        if plan_id:
            return await self._plan_details(plan_id)
        if not phone_number:
            raise SmsError("sms_mcp.MISSING_ARGUMENT", "Give either plan_id, or phone_number (with send_date).",
                           "Pass the plan_id returned by send_sms/send_batch_sms, or a number and a date.")
        phone = parse_phone(phone_number)
        date = _check_date(send_date, "send_date") if send_date else china_today(self.clock())
        params = {"PhoneNumber": phone.wire, "SendDate": date, "PageSize": str(page_size),
                  "CurrentPage": str(current_page)}
        if biz_id:
            params["BizId"] = biz_id
        body = await self._read("QuerySendDetails", params)
        records = [self._record(d) for d in self._details(body)]
        return DeliveryReport(
            **self._served(), biz_id=biz_id, send_date=date, total_count=int(body.get("TotalCount") or 0),
            current_page=current_page, page_size=page_size, records=records, summary=self._summary(records),
            next_step=self._details_next_step(records),
        )

    @staticmethod
    def _details(body: dict[str, Any]) -> list[dict[str, Any]]:
        wrapper = body.get("SmsSendDetailDTOs") or {}
        return list(wrapper.get("SmsSendDetailDTO") or []) if isinstance(wrapper, dict) else []

    @staticmethod
    def _record(d: dict[str, Any]) -> DeliveryRecord:
        status_code = int(d.get("SendStatus") or 1)
        status = {3: "delivered", 2: "failed"}.get(status_code, "pending")
        return DeliveryRecord(
            phone_number=mask(str(d.get("PhoneNum") or "")), status=status,  # type: ignore[arg-type]
            send_status=status_code, err_code=d.get("ErrCode") or None, content=d.get("Content") or None,
            template_code=d.get("TemplateCode") or None, out_id=d.get("OutId") or None,
            send_date=d.get("SendDate") or None, receive_date=d.get("ReceiveDate") or None,
        )

    @staticmethod
    def _summary(records: list[DeliveryRecord]) -> DeliverySummary:
        return DeliverySummary(
            delivered=sum(r.status == "delivered" for r in records),
            failed=sum(r.status == "failed" for r in records),
            pending=sum(r.status == "pending" for r in records),
        )

    @staticmethod
    def _details_next_step(records: list[DeliveryRecord]) -> str:
        if any(r.status == "pending" for r in records):
            return "Some receipts are pending; query again in 10-30 s. Do not resend."
        if any(r.status == "failed" for r in records):
            return "Some messages failed (see err_code); tell the user. Resend only if they ask, as a new plan."
        if not records:
            return "No record found for that number and date."
        return "All queried messages were delivered."

    async def _plan_details(self, plan_id: str) -> DeliveryReport:
        row = self.ledger.get(plan_id)
        if row is None:
            raise SmsError("sms_mcp.UNKNOWN_PLAN", f"No plan {plan_id!r} in this server's ledger.",
                           "Use the plan_id returned by send_sms or send_batch_sms.")
        if row.state in ("prepared", "rejected"):
            raise SmsError("sms_mcp.PLAN_NOT_SENT", f"Plan {plan_id} was {row.state}: nothing was sent.",
                           "There are no receipts for it." if row.state == "rejected" else
                           "Confirm it first (with the user's consent) if it should be sent.")
        result = row.result or {}
        biz_id = result.get("biz_id") or None
        out_id = row.plan.get("out_id")
        date = china_today(row.sent_at or row.created_at)
        limiter = anyio.Semaphore(8)
        found: dict[str, DeliveryRecord | None] = {}

        async def one(number: str) -> None:
            async with limiter:
                params = {"PhoneNumber": number, "SendDate": date, "PageSize": "50", "CurrentPage": "1"}
                if biz_id:
                    params["BizId"] = biz_id
                body = await self._read("QuerySendDetails", params)
                matches = [d for d in self._details(body) if not out_id or d.get("OutId") in (out_id, None, "")]
                found[number] = self._record(matches[0]) if matches else None

        async with anyio.create_task_group() as tg:
            for number in row.wire["recipients"]:
                tg.start_soon(one, number)
        records = [r if r else DeliveryRecord(phone_number=mask(n), status="pending", send_status=1)
                   for n, r in ((n, found.get(n)) for n in row.wire["recipients"])]
        return DeliveryReport(
            **self._served(), plan_id=plan_id, biz_id=biz_id, send_date=date, total_count=len(records),
            current_page=1, page_size=len(records), records=records, summary=self._summary(records),
            next_step=self._details_next_step(records),
        )

    # ----------------------------------------------------------------- statistics
    async def query_statistics(
        self, start_date: str, end_date: str, scope: str = "domestic", template_type: str | None = None,
        sign_name: str | None = None, page_index: int = 1, page_size: int = 10,
    ) -> Statistics:
        _check_date(start_date, "start_date")
        _check_date(end_date, "end_date")
        if start_date > end_date:
            raise SmsError("isv.INVALID_PARAMETERS", "start_date is after end_date.", "Swap or fix the dates.")
        params = {"IsGlobe": "2" if scope == "international" else "1", "StartDate": start_date,
                  "EndDate": end_date, "PageIndex": str(page_index), "PageSize": str(page_size)}
        if template_type:
            params["TemplateType"] = OUTER_CODE[template_type]
        if sign_name:
            params["SignName"] = sign_name
        body = await self._read("QuerySendStatistics", params)
        data = body.get("Data") or {}
        days = [
            DailyStatistics(
                date=str(t.get("SendDate") or ""), total_count=int(t.get("TotalCount") or 0),
                delivered=int(t.get("RespondedSuccessCount") or 0), failed=int(t.get("RespondedFailCount") or 0),
                pending=int(t.get("NoRespondedCount") or 0),
            )
            for t in data.get("TargetList") or []
        ]
        totals = DailyStatistics(
            date=f"{start_date}-{end_date}", total_count=sum(d.total_count for d in days),
            delivered=sum(d.delivered for d in days), failed=sum(d.failed for d in days),
            pending=sum(d.pending for d in days),
        ) if days else None
        return Statistics(
            **self._served(), scope=scope, start_date=start_date, end_date=end_date,  # type: ignore[arg-type]
            template_type=template_type, sign_name=sign_name, total_size=int(data.get("TotalSize") or 0),
            page_index=page_index, page_size=page_size, days=days, totals=totals,
        )

    # ----------------------------------------------------------------- qualifications
    STATE_FILTER: ClassVar[dict[str, str]] = {"approved": "PASS", "reviewing": "INIT", "rejected": "NOT_PASS",
                    "needs_more_info": "NOT_FINISH", "cancelled": "CANCEL"}

    async def qualification(
        self, group_id: int | None = None, qualification_name: str | None = None,
        company_name: str | None = None, legal_person_name: str | None = None, status: str | None = None,
        work_order_id: int | None = None, use_by_self: bool | None = None, page_no: int = 1,
        page_size: int = 20,
    ) -> QualificationResult:
        params = {"PageNo": str(page_no), "PageSize": str(page_size)}
        for key, value in (("QualificationGroupName", qualification_name), ("CompanyName", company_name),
                           ("LegalPersonName", legal_person_name)):
            if value:
                params[key] = value
        if status:
            params["State"] = self.STATE_FILTER[status]
        if work_order_id is not None:
            params["WorkOrderId"] = str(work_order_id)
        if use_by_self is not None:
            params["UseBySelf"] = "True" if use_by_self else "False"  # as the official SDK sends booleans
        body = await self._read("QuerySmsQualificationRecord", params)
        data = body.get("Data") or {}
        records = [qualification_from_list(e) for e in data.get("List") or []]
        detail = None
        if group_id is not None:
            single = await self._read("QuerySingleSmsQualification", {"QualificationGroupId": str(group_id)})
            detail = qualification_detail(single.get("Data") or {})
            remark = next((r.audit_remark for r in records if r.group_id == group_id), None)
            if remark:
                detail["audit_remark"] = remark
        return QualificationResult(
            **self._served(), total=int(data.get("Total") or 0), page_no=int(data.get("PageNo") or page_no),
            page_size=int(data.get("PageSize") or page_size), records=records, detail=detail,
            next_step="Reviews run 09:00-21:00 daily and usually finish within 2 working days; re-query "
                      "rather than re-submit. Personal data is masked.",
        )
