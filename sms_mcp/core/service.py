"""The domain service behind the seven tools. No MCP here: plain async methods, plain pytest.

Sending is two-step and the model cannot skip it: the first call validates, renders and stores a plan and
returns a confirmation token; only a second call with the same (normalised) arguments and that token performs
the one API call the ledger allows for the plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import anyio

from sms_mcp.config import Settings
from sms_mcp.core import errors
from sms_mcp.core.audit import AuditLog
from sms_mcp.core.errors import SmsError
from sms_mcp.core.ledger import ChunkRow, Ledger, NewChunk, PlanRow
from sms_mcp.core.models import (
    SANDBOX_NOTICE,
    ChunkOutcome,
    DailyStatistics,
    DeliveryRecord,
    DeliveryReport,
    DeliverySummary,
    Plan,
    QualificationResult,
    RecipientPreview,
    Reconciliation,
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
from sms_mcp.core.policy import Policy
from sms_mcp.core.policy import _china_day_start as china_day_start
from sms_mcp.core.principal_policy import PrincipalPolicy, current_caller
from sms_mcp.core.render import MAX_MESSAGE_LENGTH, render
from sms_mcp.core.throttle import Limiters
from sms_mcp.core.validation import check_params, check_scope, instruction_flags
from sms_mcp.wire.base import GatewayError, OutcomeUnknownError, Transport

log = logging.getLogger("sms_mcp.service")

CHINA_TZ = timezone(timedelta(hours=8))
MAX_SEND_SMS_NUMBERS = 1000
MAX_BATCH_RECIPIENTS = 100
PREVIEW_LIMIT = 20
SEND_CONCURRENCY = 8
#: ``await progress(done, total, message)``: the skin forwards it as MCP progress notifications.
Progress = Callable[[float, float, str], Awaitable[None]]
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
        self.policy = Policy(settings, self.ledger, clock)
        self.limiters = Limiters()
        self.audit = AuditLog(settings.data_dir / "audit.jsonl", clock=clock)
        #: Per-caller rules on top of ``policy`` (HTTP with a policy file); None: server-wide policy only.
        self.principal_policy: PrincipalPolicy | None = None

    # ----------------------------------------------------------------- plumbing
    @property
    def backend(self) -> str:
        return self.transport.name

    def _served(self) -> dict[str, Any]:
        return {"backend": self.backend, "notice": SANDBOX_NOTICE if self.backend == "sandbox" else None}

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

    # ----------------------------------------------------------------- sending: prepare
    @staticmethod
    def _sms_entries(
        phone_numbers: list[str], sign_name: str, template_code: str, template_param: dict[str, str] | None,
        out_id: str | None,
    ) -> tuple[dict[str, Any], list[tuple[Phone, str, dict[str, str]]], list[str]]:
        """Normalised arguments (what a token is bound to), recipients and removed duplicates of send_sms."""
        phones, duplicates = parse_many(phone_numbers)
        if not phones:
            raise SmsError("isv.MOBILE_NUMBER_ILLEGAL", "No phone number given.", "Ask the user for the number.")
        params = dict(template_param or {})
        args = {"tool": "send_sms", "phones": [p.e164 for p in phones], "sign_name": sign_name,
                "template_code": template_code, "template_param": params, "out_id": out_id}
        return args, [(p, sign_name, params) for p in phones], duplicates

    @staticmethod
    def _batch_entries(
        recipients: list[dict[str, Any]], template_code: str, out_id: str | None,
    ) -> tuple[dict[str, Any], list[tuple[Phone, str, dict[str, str]]], list[str]]:
        """The same for send_batch_sms: duplicates (by normalised number) keep their first occurrence."""
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
        args = {"tool": "send_batch_sms", "template_code": template_code, "out_id": out_id,
                "recipients": [[p.e164, s, tp] for p, s, tp in entries]}
        return args, entries, duplicates

    async def send_sms(
        self, phone_numbers: list[str], sign_name: str, template_code: str,
        template_param: dict[str, str] | None = None, out_id: str | None = None,
        confirm_token: str | None = None, progress: Progress | None = None,
    ) -> SendResult:
        args, entries, duplicates = self._sms_entries(phone_numbers, sign_name, template_code, template_param,
                                                      out_id)
        if confirm_token:
            return await self._confirm(confirm_token, _args_hash(args), progress, [p for p, _, _ in entries])
        return await self._prepare(args, template_code, entries, duplicates, out_id)

    async def send_batch_sms(
        self, recipients: list[dict[str, Any]], template_code: str, out_id: str | None = None,
        confirm_token: str | None = None, progress: Progress | None = None,
    ) -> SendResult:
        args, entries, duplicates = self._batch_entries(recipients, template_code, out_id)
        if confirm_token:
            return await self._confirm(confirm_token, _args_hash(args), progress, [p for p, _, _ in entries])
        return await self._prepare(args, template_code, entries, duplicates, out_id)

    async def _prepare(
        self, args: dict[str, Any], template_code: str, entries: list[tuple[Phone, str, dict[str, str]]],
        duplicates: list[str], out_id: str | None,
    ) -> SendResult:
        """Validate everything, render every message, store the plan and its chunks; send nothing."""
        self.policy.check_can_send()
        phones = [p for p, _, _ in entries]
        self.policy.check_recipients(phones)
        args_hash = _args_hash(args)
        # What reaches the handsets, independent of number order and out_id: the duplicate-send guard's key.
        content_hash = _args_hash({"template_code": template_code, "messages": sorted(
            json.dumps([p.e164, s, params], sort_keys=True, ensure_ascii=False) for p, s, params in entries)})
        earlier = self.ledger.unreconciled_like(content_hash)
        if earlier:
            raise SmsError("sms_mcp.UNRECONCILED",
                           f"An identical send, plan {earlier}, has an unknown outcome: it may already have "
                           "been delivered. Nothing was prepared.",
                           f"Call query_details(plan_id='{earlier}') to reconcile it; only if it reports "
                           "not_sent may the same send be prepared again.")
        signs = list(dict.fromkeys(s for _, s, _ in entries))
        for sign in signs:
            await self._approved_sign(sign)
        template, attributes = await self._approved_template(template_code)
        self.policy.check_template(template)
        if self.principal_policy is not None:
            self.principal_policy.check_plan(current_caller.get(), phones, template)
        checked: dict[str, dict[str, str]] = {}  # one validation per distinct parameter set
        values: list[dict[str, str]] = []
        for _, _, params in entries:
            key = json.dumps(params, sort_keys=True, ensure_ascii=False)
            if key not in checked:
                checked[key] = check_params(template, attributes, params)
            values.append(checked[key])
        check_scope(template, phones)
        self.policy.check_daily_budget(len(phones))
        self.policy.check_flow_control(template.template_code, template.type,
                                       [(p.wire, s) for p, s, _ in entries])

        plan_id = "plan_" + secrets.token_hex(8)
        base_out_id = out_id or plan_id
        batch = args["tool"] == "send_batch_sms"
        size = MAX_BATCH_RECIPIENTS if batch else MAX_SEND_SMS_NUMBERS
        groups = [list(range(i, min(i + size, len(entries)))) for i in range(0, len(entries), size)]
        chunks = []
        for n, group in enumerate(groups, start=1):
            chunk_out_id = base_out_id if len(groups) == 1 else f"{base_out_id[:240]}-{n}"
            chunks.append(NewChunk(
                action="SendBatchSms" if batch else "SendSms",
                params=self._wire_params(batch, template, [entries[i] for i in group],
                                         [values[i] for i in group], chunk_out_id),
                recipients=[{"number": entries[i][0].wire, "sign": entries[i][1]} for i in group],
                out_id=chunk_out_id,
            ))

        previews: list[RecipientPreview] = []
        total_segments = 0
        for (phone, sign, _), params in zip(entries, values, strict=True):
            text, length, segments = render(sign, template.content, params, international=not phone.domestic)
            if length > MAX_MESSAGE_LENGTH:
                raise SmsError("isv.PARAM_LENGTH_LIMIT", f"The message to {phone.masked} would have {length} "
                               f"characters; at most {MAX_MESSAGE_LENGTH} are allowed.", "Use shorter values.")
            total_segments += segments
            if len(previews) < PREVIEW_LIMIT:
                previews.append(RecipientPreview(phone_number=phone.masked, region=phone.region, sign_name=sign,
                                                 text=text, length=length, segments=segments))
        warnings = [f"{len(duplicates)} duplicate number(s) removed."] if duplicates else []
        for params in checked.values():
            warnings.extend(w for w in instruction_flags(params) if w not in warnings)
        if len(chunks) > 1:
            warnings.append(f"Sent as {len(chunks)} API requests of at most {size} recipients, each with its own "
                            "OutId; one confirmation covers all of them.")
        plan = Plan(
            plan_id=plan_id, action="SendBatchSms" if batch else "SendSms", template_code=template.template_code,
            template_name=template.template_name, template_type=template.type, sign_names=signs,
            recipient_count=len(phones), domestic_count=sum(p.domestic for p in phones),
            international_count=sum(not p.domestic for p in phones), duplicates_removed=duplicates[:100],
            total_segments=total_segments, previews=previews, out_id=base_out_id, chunk_count=len(chunks),
            warnings=warnings,
        )
        token = "smt_" + secrets.token_urlsafe(24)  # 192 random bits
        ttl = self.settings.confirm_ttl_seconds
        self.ledger.create(plan_id=plan_id, token=token, tool=args["tool"], args_hash=args_hash,
                           content_hash=content_hash, ttl=ttl,
                           plan=plan.model_dump(), chunks=chunks)
        self.audit.write("prepared", plan_id, recipients=len(phones), template=template.template_code,
                         signs=signs, chunks=len(chunks), numbers=[p.masked for p in phones[:20]])
        expires = datetime.fromtimestamp(self.clock() + ttl, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.info("prepared %s: %d recipient(s) in %d chunk(s)", plan_id, len(phones), len(chunks))
        return SendResult(
            **self._served(), status="pending_confirmation", plan_id=plan_id, plan=plan, confirm_token=token,
            expires_at=expires,
            message=f"Nothing has been sent. Plan {plan_id}: {len(phones)} recipient(s), {total_segments} "
                    f"billed message(s), template {template.template_code}.",
            next_step="Show this plan (recipients, signature, full text, segments, warnings) to the user and ask "
                      "them to confirm. Only after they explicitly confirm, call this tool again with exactly "
                      "the same arguments plus confirm_token. If they want changes, prepare a new plan.",
        )

    @staticmethod
    def _wire_params(batch: bool, template: TemplateInfo, entries: list[tuple[Phone, str, dict[str, str]]],
                     values: list[dict[str, str]], out_id: str) -> dict[str, str]:
        if batch:
            params = {
                "PhoneNumberJson": json.dumps([p.wire for p, _, _ in entries], ensure_ascii=False),
                "SignNameJson": json.dumps([s for _, s, _ in entries], ensure_ascii=False),
                "TemplateCode": template.template_code, "OutId": out_id,
            }
            if template.variables:
                params["TemplateParamJson"] = json.dumps(values, ensure_ascii=False)
            return params
        params = {"PhoneNumbers": ",".join(p.wire for p, _, _ in entries), "SignName": entries[0][1],
                  "TemplateCode": template.template_code, "OutId": out_id}
        if values[0]:
            params["TemplateParam"] = json.dumps(values[0], ensure_ascii=False)
        return params

    # ----------------------------------------------------------------- sending: confirm
    def plan_awaiting(self, token: str, tool: str, arguments: dict[str, Any]) -> Plan | None:
        """The plan this exact confirmation would send, if it is still waiting (for the human prompt).

        None when the token is unknown, used, expired or bound to other arguments: then no human is asked and
        the confirmation itself refuses or replays."""
        try:
            if tool == "send_sms":
                args = self._sms_entries(arguments["phone_numbers"], arguments["sign_name"],
                                         arguments["template_code"], arguments.get("template_param"),
                                         arguments.get("out_id"))[0]
            else:
                args = self._batch_entries(arguments["recipients"], arguments["template_code"],
                                           arguments.get("out_id"))[0]
        except (SmsError, KeyError, TypeError):
            return None
        row = self.ledger.by_token(token)
        if row is None or row.args_hash != _args_hash(args) or row.state != "prepared":
            return None
        if row.expires_at <= self.clock():
            return None
        return Plan.model_validate(row.plan)

    def decline(self, token: str) -> SendResult:
        """The human said no: the plan is cancelled for good; nothing is sent."""
        row = self.ledger.by_token(token)
        if row is None:
            raise SmsError("sms_mcp.UNKNOWN_TOKEN", "This confirm_token is not valid; nothing was sent.",
                           "Prepare a plan first.")
        if self.ledger.cancel(row.plan_id):
            self.audit.write("declined", row.plan_id)
        else:
            fresh = self.ledger.get(row.plan_id)
            if fresh is not None and fresh.state != "cancelled":
                # Another confirmation of this plan sent it while this human was being asked: report what was
                # recorded. Answering "cancelled, nothing was sent" here would be false.
                result = self._assemble(row.plan_id, replayed=True)
                return result.model_copy(update={"message": "The user declined, but another confirmation had "
                                                 "already sent this plan. " + result.message})
        return SendResult(
            **self._served(), status="cancelled", plan_id=row.plan_id, plan=Plan.model_validate(row.plan),
            message="The user declined the confirmation; the plan is cancelled and nothing was sent.",
            next_step="Ask the user what they want instead; a new send needs a new plan.",
        )

    async def _confirm(self, token: str, args_hash: str, progress: Progress | None,
                       phones: list[Phone]) -> SendResult:
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
        if row.state == "cancelled":
            raise SmsError("sms_mcp.PLAN_CANCELLED", f"Plan {row.plan_id} was declined and cancelled; nothing "
                           "was sent.", "Prepare a new plan if the user now wants to send.")
        if row.state == "prepared":
            if row.expires_at <= self.clock():
                raise SmsError("sms_mcp.TOKEN_EXPIRED", f"The token of plan {row.plan_id} expired; nothing was "
                               "sent.", "Prepare the plan again (call without confirm_token), show it to the user "
                               "and confirm with the new token.")
            # Time has passed since the plan was made: the operator's budgets are checked again.
            self.policy.check_can_send()
            plan = Plan.model_validate(row.plan)
            # The operator may have tightened the configuration since the plan was made (a restart with a new
            # allow-list, cap or promotional setting): as policy.py promises, those are checked again too.
            # ``phones`` are the plan's own recipients (the arguments' hash matched).
            self.policy.check_recipients(phones)
            template = TemplateInfo.model_construct(template_code=plan.template_code, type=plan.template_type)
            self.policy.check_template(template)
            if self.principal_policy is not None:
                self.principal_policy.check_plan(current_caller.get(), phones, template)
            chunks = self.ledger.chunks(row.plan_id)
            self.policy.check_daily_budget(plan.recipient_count)
            self.policy.check_flow_control(plan.template_code, plan.template_type,
                                           [(r["number"], r["sign"]) for c in chunks for r in c.recipients])
            if not self.ledger.claim(row.plan_id):
                fresh = self.ledger.get(row.plan_id)
                if fresh is not None and fresh.state == "prepared":
                    raise SmsError("sms_mcp.TOKEN_EXPIRED", f"The token of plan {row.plan_id} expired; nothing "
                                   "was sent.", "Prepare the plan again.")
            else:
                self.audit.write("confirmed", row.plan_id)
        sent = await self._drive(row, progress)
        return self._assemble(row.plan_id, replayed=sent == 0)

    async def _drive(self, row: PlanRow, progress: Progress | None) -> int:
        """Send every chunk nobody has claimed yet, then wait for chunks other callers are sending.

        Returns how many API calls this caller made. Several callers may drive one plan at once (a replayed
        confirmation, a second server process): each chunk is still sent at most once."""
        plan = Plan.model_validate(row.plan)
        stale_after = self.settings.read_timeout + self.settings.connect_timeout + 30.0
        self.ledger.expire_orphans(row.plan_id, stale_after)
        chunks = self.ledger.chunks(row.plan_id)
        pending = [c for c in chunks if c.state == "pending"]
        total = len(chunks)
        done = total - len(pending)
        made = 0
        limiter = anyio.Semaphore(SEND_CONCURRENCY)

        async def one(chunk: ChunkRow) -> None:
            nonlocal done, made
            async with limiter:
                if await self._send_chunk(row.plan_id, plan, chunk):
                    made += 1
                done += 1
                if progress is not None:
                    await progress(done, total, f"chunk {chunk.chunk_no}/{total} done")

        if pending:
            async with anyio.create_task_group() as tg:
                for chunk in pending:
                    tg.start_soon(one, chunk)
        deadline = self.clock() + stale_after
        while any(c.state == "sending" for c in self.ledger.chunks(row.plan_id)) and self.clock() < deadline:
            await anyio.sleep(0.05)
            self.ledger.expire_orphans(row.plan_id, stale_after)
        return made

    async def _send_chunk(self, plan_id: str, plan: Plan, chunk: ChunkRow) -> bool:
        """One API call, at most once ever: intent first, then the call, then the outcome."""
        await self.limiters[chunk.action].acquire()
        history = [(r["number"], r["sign"], plan.template_code, plan.template_type) for r in chunk.recipients]
        limit = self.settings.daily_limit
        # The daily limit is enforced atomically with the claim (see Ledger.claim_chunk): concurrent
        # confirmations of different plans could otherwise all pass the check made in _confirm.
        if not self.ledger.claim_chunk(plan_id, chunk.chunk_no, history, daily_limit=limit,
                                       day_start=china_day_start(self.clock()) if limit is not None else 0.0):
            return False  # another caller holds it (or the daily limit refused it: the chunk is rejected)
        settle = self.ledger.settle_chunk
        try:
            body = await self.transport.call(chunk.action, chunk.params)
        except GatewayError as err:
            # 4xx: the gateway refused before the action ran. 5xx: it may have run.
            meaning, _ = errors.explain(err.code, err.message)
            settle(plan_id, chunk.chunk_no, "unknown" if err.status >= 500 else "rejected",
                   request_id=err.request_id or None, error_code=err.code,
                   error_message=f"HTTP {err.status}: {meaning}")
        except OutcomeUnknownError as err:
            settle(plan_id, chunk.chunk_no, "unknown", error_code="sms_mcp.OUTCOME_UNKNOWN",
                   error_message=f"No answer from Alibaba Cloud ({err.reason}).")
        except BaseException:
            # Cancelled (client timeout, shutdown) or a bug: the request may be on the wire. Record, then unwind.
            settle(plan_id, chunk.chunk_no, "unknown", error_code="sms_mcp.OUTCOME_UNKNOWN",
                   error_message="The call was interrupted while sending.")
            self.audit.write("unknown", plan_id, chunk=chunk.chunk_no, reason="interrupted")
            raise
        else:
            if body.get("Code") == "OK":
                settle(plan_id, chunk.chunk_no, "accepted", biz_id=str(body.get("BizId") or "") or None,
                       request_id=str(body.get("RequestId") or "") or None)
            else:
                code = str(body.get("Code") or "Unknown")
                meaning, _ = errors.explain(code, str(body.get("Message") or ""))
                settle(plan_id, chunk.chunk_no, "rejected", request_id=str(body.get("RequestId") or "") or None,
                       error_code=code, error_message=meaning)
        final = self.ledger.chunk(plan_id, chunk.chunk_no)
        self.audit.write(final.state, plan_id, chunk=chunk.chunk_no, recipients=len(chunk.recipients),
                         biz_id=final.biz_id, code=final.error_code)
        log.info("plan %s chunk %d: %s", plan_id, chunk.chunk_no, final.state)
        return True

    def _assemble(self, plan_id: str, replayed: bool) -> SendResult:
        """The plan's result, derived from its chunks' recorded outcomes."""
        row = self.ledger.get(plan_id)
        assert row is not None
        plan = Plan.model_validate(row.plan)
        chunks = self.ledger.chunks(plan_id)
        outcomes = [ChunkOutcome(chunk_no=c.chunk_no, recipient_count=len(c.recipients), state=c.state,  # type: ignore[arg-type]
                                 out_id=c.out_id, biz_id=c.biz_id, request_id=c.request_id, error_code=c.error_code,
                                 error_message=c.error_message) for c in chunks]
        states = {c.state for c in chunks}
        count = {s: sum(len(c.recipients) for c in chunks if c.state == s) for s in states}
        first_ok = next((c for c in chunks if c.state == "accepted"), None)
        first_bad = next((c for c in chunks if c.state not in ("accepted", "pending")), None)
        reconcile = f"query_details(plan_id='{plan_id}')"
        if states & {"pending", "sending", "unknown"}:
            status = "unknown"
            message = (f"It is UNKNOWN whether {count.get('unknown', 0) + count.get('sending', 0)} recipient(s) "
                       "were sent; nothing is resent automatically."
                       + (f" {count['accepted']} recipient(s) were accepted." if "accepted" in count else ""))
            next_step = (f"Do NOT prepare the same send again. Call {reconcile} to reconcile against Alibaba's "
                         "records first; only a not_sent outcome allows a fresh plan.")
        elif states == {"accepted"}:
            status = "accepted"
            message = (f"Alibaba accepted the request for {plan.recipient_count} recipient(s)"
                       + (f" in {len(chunks)} requests" if len(chunks) > 1 else "") + ". " + ACCEPTED_IS_NOT_DELIVERED)
            next_step = f"Wait 10-30 s, then call {reconcile} to see delivery receipts. Do not send again."
        elif states == {"not_sent"}:
            status = "not_sent"
            message = "Reconciliation showed that nothing of this plan reached Alibaba; nothing was sent."
            next_step = "With the user's consent, a fresh plan with the same arguments may now be prepared."
        elif "accepted" not in states:
            status = "rejected"
            message = f"Alibaba rejected the request ({first_bad.error_code if first_bad else '?'}); nothing was sent."
            step = errors.explain(first_bad.error_code or "")[1] if first_bad else ""
            next_step = step or "Fix the cause and prepare a new plan."
        else:
            status = "partial"
            refused = sum(v for s, v in count.items() if s != "accepted")
            message = (f"Partly sent: {count['accepted']} recipient(s) accepted, {refused} not sent "
                       f"({first_bad.error_code if first_bad else '?'}). See chunks.")
            next_step = (f"Check {reconcile} for the accepted ones. To reach the others, fix the cause and prepare "
                         "a new plan with only those numbers, with the user's consent.")
        return SendResult(
            **self._served(), status=status, plan_id=plan_id, plan=plan,  # type: ignore[arg-type]
            biz_id=first_ok.biz_id if first_ok else None,
            request_id=(first_ok or first_bad).request_id if (first_ok or first_bad) else None,
            error_code=first_bad.error_code if first_bad else None,
            error_message=first_bad.error_message if first_bad else None,
            chunks=outcomes, replayed=replayed, message=message, next_step=next_step,
        )

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
        """Receipts for every recipient of a plan, reconciling chunks whose outcome was unknown on the way."""
        row = self.ledger.get(plan_id)
        if row is None:
            raise SmsError("sms_mcp.UNKNOWN_PLAN", f"No plan {plan_id!r} in this server's ledger.",
                           "Use the plan_id returned by send_sms or send_batch_sms.")
        if row.state in ("prepared", "cancelled"):
            raise SmsError("sms_mcp.PLAN_NOT_SENT", f"Plan {plan_id} is {row.state}: nothing was sent.",
                           "Confirm it first (with the user's consent) if it should be sent."
                           if row.state == "prepared" else "There are no receipts for it.")
        self.ledger.expire_orphans(plan_id, self.settings.read_timeout + self.settings.connect_timeout + 30.0)
        chunks = [c for c in self.ledger.chunks(plan_id) if c.state in ("accepted", "unknown")]
        date = china_today(row.sent_at or row.created_at)
        limiter = anyio.Semaphore(SEND_CONCURRENCY)
        found: dict[tuple[int, str], dict[str, Any] | None] = {}

        async def one(chunk: ChunkRow, number: str) -> None:
            async with limiter:
                await self.limiters["QuerySendDetails"].acquire()
                params = {"PhoneNumber": number, "SendDate": date, "PageSize": "50", "CurrentPage": "1"}
                if chunk.biz_id:
                    params["BizId"] = chunk.biz_id
                body = await self._read("QuerySendDetails", params)
                # The OutId ties a record to this chunk even when the BizId never reached us.
                matches = [d for d in self._details(body) if d.get("OutId") == chunk.out_id]
                found[(chunk.chunk_no, number)] = matches[0] if matches else None

        async with anyio.create_task_group() as tg:
            for chunk in chunks:
                for r in chunk.recipients:
                    tg.start_soon(one, chunk, r["number"])

        reconciled: list[Reconciliation] = []
        now = self.clock()
        for chunk in chunks:
            if chunk.state != "unknown":
                continue
            hits = sum(found.get((chunk.chunk_no, r["number"])) is not None for r in chunk.recipients)
            if hits:
                self.ledger.settle_chunk(plan_id, chunk.chunk_no, "accepted", expect=("unknown",))
                evidence = (f"Alibaba has records with OutId {chunk.out_id} for {hits} of "
                            f"{len(chunk.recipients)} numbers.")
                reconciled.append(Reconciliation(chunk_no=chunk.chunk_no, before="unknown", after="accepted",
                                                 evidence=evidence))
            elif now - (chunk.claimed_at or 0) >= self.settings.reconcile_grace_seconds:
                self.ledger.settle_chunk(plan_id, chunk.chunk_no, "not_sent", expect=("unknown",),
                                         error_code=chunk.error_code, error_message=chunk.error_message)
                reconciled.append(Reconciliation(
                    chunk_no=chunk.chunk_no, before="unknown", after="not_sent",
                    evidence=f"No record with OutId {chunk.out_id} for any of its {len(chunk.recipients)} numbers "
                             f"{int(now - (chunk.claimed_at or 0))} s after the attempt."))
            else:
                wait = self.settings.reconcile_grace_seconds - (now - (chunk.claimed_at or 0))
                reconciled.append(Reconciliation(
                    chunk_no=chunk.chunk_no, before="unknown", after="unknown",
                    evidence=f"No record yet; too early to conclude. Query again in {max(1, int(wait))} s."))
        for r in reconciled:
            if r.after != r.before:
                self.audit.write(f"reconciled_{r.after}", plan_id, chunk=r.chunk_no)
        records: list[DeliveryRecord] = []
        for chunk in self.ledger.chunks(plan_id):
            if chunk.state not in ("accepted", "unknown"):
                continue
            for r in chunk.recipients:
                detail = found.get((chunk.chunk_no, r["number"]))
                records.append(self._record(detail) if detail else DeliveryRecord(
                    phone_number=mask(r["number"]), status="pending", send_status=1))
        result = self._assemble(plan_id, replayed=True)
        if result.status == "not_sent":
            next_step = result.next_step
        elif result.status == "unknown":
            next_step = ("The outcome is still unknown; query again shortly. Do not prepare the same send again "
                         "before this reports not_sent or accepted.")
        else:
            next_step = self._details_next_step(records)
        return DeliveryReport(
            **self._served(), plan_id=plan_id, plan_status=result.status, reconciled=reconciled,
            biz_id=result.biz_id, send_date=date, total_count=len(records), current_page=1,
            page_size=len(records), records=records, summary=self._summary(records), next_step=next_step,
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
