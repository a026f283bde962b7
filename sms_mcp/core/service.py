"""The domain service behind the seven tools. No MCP here: plain async methods, plain pytest.

Sending is two-step and the model cannot skip it: the first call validates, renders and stores a plan and
returns a confirmation token; only a second call with the same (normalised) arguments and that token performs
the one API call per chunk the ledger allows. The work is split along the plan's lifecycle
(:mod:`sms_mcp.core.lifecycle`): the :mod:`~sms_mcp.core.planner` (arguments -> plan, pure), the
:mod:`~sms_mcp.core.dispatcher` (claim, call, settle) and the :mod:`~sms_mcp.core.reconciler`; this facade adds
the reads and the agent-facing answers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

from sms_mcp.config import Settings
from sms_mcp.core import errors
from sms_mcp.core.audit import AuditLog
from sms_mcp.core.dispatcher import LEASE_SECONDS, BudgetFor, Dispatcher, Progress, precheck_limits
from sms_mcp.core.errors import SmsError
from sms_mcp.core.lifecycle import Outcome
from sms_mcp.core.models import (
    SANDBOX_NOTICE,
    DailyStatistics,
    DeliveryReport,
    Plan,
    QualificationResult,
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
from sms_mcp.core.phones import parse_phone
from sms_mcp.core.planner import SendRequest, draft, token_hash
from sms_mcp.core.policy import Policy
from sms_mcp.core.ports import LOCAL_PRINCIPAL, LedgerPort, LedgerUnavailable, NewPlan, Principal
from sms_mcp.core.principal_policy import PrincipalPolicy
from sms_mcp.core.reconciler import Reconciler, china_today, details, details_next_step, record, summary
from sms_mcp.core.throttle import Limiters
from sms_mcp.dysmsapi import GatewayError, OutcomeUnknownError, Transport

log = logging.getLogger("sms_mcp.service")

CHINA_TZ = timezone(timedelta(hours=8))
_DATE = re.compile(r"^\d{8}$")

__all__ = ["Progress", "SmsService", "china_today", "ledger_unavailable", "storage_warning"]


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


def ledger_unavailable(err: LedgerUnavailable) -> SmsError:
    """A storage fault at a point where this call has sent nothing."""
    return SmsError("sms_mcp.LEDGER_UNAVAILABLE",
                    f"The ledger ({err.location}) cannot be used: {err.reason}. This call sent nothing.",
                    f"Tell the user and the operator: {err.hint} Do not prepare a send again until it works.")


def storage_warning(plans_in_ledger: int, audit_path: Path) -> str | None:
    """The ledger is empty but the audit log records earlier plans: it was deleted or replaced, and with it the
    confirmation tokens, the duplicate-send guard and the flow-control history."""
    try:
        earlier = audit_path.stat().st_size > 0
    except OSError:
        earlier = False
    if plans_in_ledger or not earlier:
        return None
    return (f"WARNING: the ledger is empty, but the audit log {audit_path} records earlier plans: the ledger was "
            "deleted or replaced. Earlier confirmation tokens are void, and sends whose outcome was unknown and "
            "the flow-control history are forgotten: check query_details for recent sends before sending again, "
            "and restore the ledger from a backup if there is one.")


class SmsService:
    def __init__(
        self, settings: Settings, transport: Transport, ledger: LedgerPort | None = None,
        clock: Callable[[], float] = time.time, *, budget_for: BudgetFor | None = None,
        lease_seconds: float = LEASE_SECONDS, max_wait: float | None = None,
        principal_policy: PrincipalPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.clock = clock
        if ledger is None:
            from sms_mcp.ledger.sqlite import SqliteLedger

            ledger = SqliteLedger.open_sync(settings.data_dir / "ledger.sqlite3")
        self.ledger: Any = ledger  # a LedgerPort (Any: tests and benchmarks also use the adapter's own close())
        self.policy = Policy(settings, clock)
        self.audit = AuditLog(settings.data_dir / "audit.jsonl", clock=clock)
        self.limiters = Limiters()
        #: Per-caller rules on top of ``policy`` (HTTP with a policy file); None: server-wide policy only.
        self.principal_policy = principal_policy
        if budget_for is None and principal_policy is not None:
            budget_for = principal_policy.daily_limit
        self.budget_for: BudgetFor = budget_for or (lambda _principal: None)
        self.warning: str | None = None
        self.dispatcher = Dispatcher(settings, transport, ledger, self.audit, self.policy, clock, self._served,
                                     budget_for=self.budget_for, lease_seconds=lease_seconds,
                                     limiters=self.limiters, max_wait=max_wait, principal_policy=principal_policy)
        self.reconciler = Reconciler(settings, ledger, self.audit, clock, self._read, self.limiters, self._served)

    async def start(self) -> None:
        """Check the ledger once at start; a warning about it goes into the first result."""
        health = await self.ledger.health()
        self.warning = storage_warning(health.plans, self.audit.path)
        if self.warning:
            log.warning("%s", self.warning)

    # ----------------------------------------------------------------- plumbing
    @property
    def backend(self) -> str:
        return self.transport.name

    def _served(self) -> dict[str, Any]:
        # A transport may carry its own notice (wire/factory.py: credential variables ignored as placeholders).
        notices = [SANDBOX_NOTICE if self.backend == "sandbox" else None, getattr(self.transport, "notice", None)]
        if self.warning:  # said once, loudly, first, in the first result
            notices.insert(0, self.warning)
            self.warning = None
        return {"backend": self.backend, "notice": " ".join(n for n in notices if n) or None}

    async def _read(
        self, action: str, params: dict[str, str], *, not_found: tuple[str, SmsError] | None = None
    ) -> dict[str, Any]:
        """A read call: any failure becomes an SmsError the agent can act on. ``not_found`` maps a gateway
        code (e.g. ``SignatureNotFound``) to the refusal the agent should see instead."""
        try:
            body = await self.transport.call(action, params)
        except GatewayError as err:
            if not_found is not None and err.code == not_found[0]:
                raise dataclasses.replace(not_found[1], request_id=err.request_id) from None
            raise errors.from_gateway(err) from None
        except OutcomeUnknownError as err:
            raise errors.from_unanswered_read(action, err) from None
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
        body = await self._read("GetSmsSign", {"SignName": sign_name}, not_found=("SignatureNotFound", SmsError(
            "isv.SMS_SIGNATURE_ILLEGAL", f"The sign name {sign_name!r} does not exist in this account.",
            errors.LIST_SIGNS)))
        sign = sign_from_get(body)
        if sign.status != "approved":
            why = f" Reason: {sign.reason}." if sign.reason else ""
            raise SmsError("isv.SMS_SIGNATURE_ILLEGAL",
                           f"The sign name {sign_name!r} is {sign.status}, not approved.{why}", errors.LIST_SIGNS)

    async def _approved_template(self, template_code: str) -> tuple[TemplateInfo, dict[str, str]]:
        body = await self._read("GetSmsTemplate", {"TemplateCode": template_code}, not_found=(
            "TemplateNotFound", SmsError("isv.SMS_TEMPLATE_ILLEGAL",
                                         f"The template {template_code!r} does not exist in this account.",
                                         errors.LIST_TEMPLATES)))
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

    # ----------------------------------------------------------------- sending
    async def send_sms(
        self, phone_numbers: Sequence[str], sign_name: str, template_code: str,
        template_param: Mapping[str, str] | None = None, out_id: str | None = None,
        confirm_token: str | None = None, progress: Progress | None = None, *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> SendResult:
        request = SendRequest.send_sms(phone_numbers, sign_name, template_code, template_param, out_id)
        if confirm_token:
            return await self.dispatcher.confirm(confirm_token, request, principal, progress)
        return await self.prepare(request, principal)

    async def send_batch_sms(
        self, recipients: Sequence[Mapping[str, Any]], template_code: str, out_id: str | None = None,
        confirm_token: str | None = None, progress: Progress | None = None, *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> SendResult:
        request = SendRequest.send_batch_sms(recipients, template_code, out_id)
        if confirm_token:
            return await self.dispatcher.confirm(confirm_token, request, principal, progress)
        return await self.prepare(request, principal)

    @staticmethod
    def request_of(tool: str, arguments: Mapping[str, Any]) -> SendRequest | None:
        """The normalised request of a send tool's arguments; None if they do not parse."""
        try:
            if tool == "send_sms":
                return SendRequest.send_sms(arguments["phone_numbers"], arguments["sign_name"],
                                            arguments["template_code"], arguments.get("template_param"),
                                            arguments.get("out_id"))
            return SendRequest.send_batch_sms(arguments["recipients"], arguments["template_code"],
                                              arguments.get("out_id"))
        except (SmsError, KeyError, TypeError):
            return None

    async def plan_awaiting(self, token: str, tool: str, arguments: Mapping[str, Any], *,
                            principal: Principal = LOCAL_PRINCIPAL) -> Plan | None:
        """The plan this exact confirmation would send, if it is still waiting (for the human prompt)."""
        request = self.request_of(tool, arguments)
        if request is None:
            return None
        return await self.dispatcher.awaiting(token, request, principal)

    async def decline(self, token: str, *, principal: Principal = LOCAL_PRINCIPAL) -> SendResult:
        """The human said no: the plan is cancelled for good; nothing is sent."""
        return await self.dispatcher.decline(token, principal)

    async def unanswered(self, token: str, tool: str, arguments: Mapping[str, Any], *,
                         principal: Principal = LOCAL_PRINCIPAL) -> SendResult:
        """The human dismissed the prompt without answering: the plan keeps waiting for a confirmation."""
        request = self.request_of(tool, arguments)
        if request is None:
            raise SmsError("sms_mcp.TOKEN_ARGUMENT_MISMATCH", "The arguments do not describe a send; nothing was "
                           "sent.", "Confirm with exactly the arguments of the plan.")
        return await self.dispatcher.unanswered(token, request, principal)

    async def prepare(self, request: SendRequest, principal: Principal = LOCAL_PRINCIPAL) -> SendResult:
        """Validate everything, render every message, store the plan and its chunks; send nothing."""
        self.policy.check_can_send()
        phones = request.phones
        self.policy.check_recipients(phones)
        content_hash = request.content_hash
        earlier = await self._outstanding(content_hash)
        if earlier:
            raise SmsError("sms_mcp.UNRECONCILED",
                           f"An identical send, plan {earlier}, has an unknown outcome: it may already have "
                           "been delivered. Nothing was prepared.",
                           f"Call query_details(plan_id='{earlier}') to reconcile it; only if it reports "
                           "not_sent may the same send be prepared again.")
        for sign in request.sign_names:
            await self._approved_sign(sign)
        template, attributes = await self._approved_template(request.template_code)
        self.policy.check_template(template)
        if self.principal_policy is not None:
            self.principal_policy.check_plan(principal, phones, template)
        plan_id = "plan_" + secrets.token_hex(8)
        drafted = draft(request, template, attributes, plan_id)
        await precheck_limits(self.ledger, self.settings, self.clock(), template.template_code, template.type,
                              [a.recipient for a in request.addressees], principal, self.budget_for(principal))
        plan = drafted.plan
        token = "smt_" + secrets.token_urlsafe(24)  # 192 random bits
        now = self.clock()
        ttl = self.settings.confirm_ttl_seconds
        await self.ledger.create_plan(NewPlan(
            plan_id=plan_id, token_hash=token_hash(token), tool=request.tool, args_hash=request.args_hash,
            content_hash=content_hash, principal=principal, template_code=template.template_code,
            template_type=template.type, created_at=now, expires_at=now + ttl, summary=plan.model_dump(mode="json"),
            chunks=drafted.chunks,
        ))
        self.audit.write("prepared", plan_id, recipients=len(phones), template=template.template_code,
                         signs=request.sign_names, chunks=len(drafted.chunks),
                         numbers=[p.masked for p in phones[:20]],
                         principal={"subject": principal.subject, "client_id": principal.client_id})
        expires = datetime.fromtimestamp(now + ttl, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.info("prepared %s: %d recipient(s) in %d chunk(s)", plan_id, len(phones), len(drafted.chunks))
        return SendResult(
            **self._served(), status=Outcome.PENDING_CONFIRMATION.value, plan_id=plan_id, plan=plan,
            confirm_token=token, expires_at=expires,
            message=f"Nothing has been sent. Plan {plan_id}: {len(phones)} recipient(s), {plan.total_segments} "
                    f"billed message(s), template {template.template_code}.",
            next_step="Show this plan (recipients, signature, full text, segments, warnings) to the user and ask "
                      "them to confirm. Only after they explicitly confirm, call this tool again with exactly "
                      "the same arguments plus confirm_token. If they want changes, prepare a new plan.",
        )

    async def _outstanding(self, content_hash: str) -> str | None:
        """An identical confirmed plan whose outcome is not final, after recovering what a dead owner left."""
        earlier = await self.ledger.outstanding_like(content_hash)
        if earlier is None:
            return None
        await self.ledger.recover(earlier, self.clock())
        return await self.ledger.outstanding_like(content_hash)

    # ----------------------------------------------------------------- receipts
    async def query_details(
        self, phone_number: str | None = None, send_date: str | None = None, biz_id: str | None = None,
        plan_id: str | None = None, page_size: int = 10, current_page: int = 1, *,
        principal: Principal = LOCAL_PRINCIPAL,
    ) -> DeliveryReport:
        if plan_id:
            return await self.reconciler.plan_details(plan_id, principal)
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
        records = [record(d) for d in details(body)]
        return DeliveryReport(
            **self._served(), biz_id=biz_id, send_date=date, total_count=int(body.get("TotalCount") or 0),
            current_page=current_page, page_size=page_size, records=records, summary=summary(records),
            next_step=details_next_step(records),
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
