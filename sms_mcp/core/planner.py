"""The planner: a send's arguments -> the typed request the token is bound to -> the plan and its chunks.

Pure: no I/O, no clock, no randomness (the plan id is given). The service fetches what the planner needs (the
approved template) and stores what it returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sms_mcp.core.errors import SmsError
from sms_mcp.core.models import Plan, RecipientPreview, TemplateInfo
from sms_mcp.core.phones import Phone, parse_many, parse_phone
from sms_mcp.core.ports import NewChunk, Recipient
from sms_mcp.core.render import MAX_MESSAGE_LENGTH, render
from sms_mcp.core.validation import check_params, check_scope, instruction_flags

MAX_SEND_SMS_NUMBERS = 1000
MAX_BATCH_RECIPIENTS = 100
PREVIEW_LIMIT = 20


def _digest(payload: Any) -> str:
    # surrogatepass: a lone surrogate (legal in JSON) still hashes, to something no other text hashes to.
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
                          ).hexdigest()


@dataclass(frozen=True)
class Addressee:
    """One recipient of a send: the parsed number, the SMS signature and the template values for them."""

    phone: Phone
    sign_name: str
    params: Mapping[str, str]

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.phone.wire, self.sign_name)


@dataclass(frozen=True)
class SendRequest:
    """A send_sms / send_batch_sms call, normalised: what a confirmation token is bound to."""

    tool: str  # "send_sms" | "send_batch_sms"
    template_code: str
    addressees: tuple[Addressee, ...]
    out_id: str | None
    duplicates: tuple[str, ...]  # masked numbers removed as duplicates

    @classmethod
    def send_sms(cls, phone_numbers: Sequence[str], sign_name: str, template_code: str,
                 template_param: Mapping[str, str] | None, out_id: str | None) -> SendRequest:
        phones, duplicates = parse_many(list(phone_numbers))
        if not phones:
            raise SmsError("isv.MOBILE_NUMBER_ILLEGAL", "No phone number given.", "Ask the user for the number.")
        params = dict(template_param or {})
        return cls("send_sms", template_code, tuple(Addressee(p, sign_name, params) for p in phones), out_id,
                   tuple(duplicates))

    @classmethod
    def send_batch_sms(cls, recipients: Sequence[Mapping[str, Any]], template_code: str,
                       out_id: str | None) -> SendRequest:
        """Duplicates (by normalised number) keep their first occurrence."""
        if not recipients:
            raise SmsError("isv.MOBILE_NUMBER_ILLEGAL", "No recipient given.", "Ask the user for the recipients.")
        addressees: list[Addressee] = []
        seen: set[str] = set()
        duplicates: list[str] = []
        for r in recipients:
            phone = parse_phone(r["phone_number"])
            if phone.e164 in seen:
                duplicates.append(phone.masked)
                continue
            seen.add(phone.e164)
            addressees.append(Addressee(phone, r["sign_name"], dict(r.get("template_param") or {})))
        return cls("send_batch_sms", template_code, tuple(addressees), out_id, tuple(duplicates))

    @property
    def batch(self) -> bool:
        return self.tool == "send_batch_sms"

    @property
    def phones(self) -> list[Phone]:
        return [a.phone for a in self.addressees]

    @property
    def sign_names(self) -> list[str]:
        return list(dict.fromkeys(a.sign_name for a in self.addressees))

    @property
    def args_hash(self) -> str:
        """The token's binding: the normalised arguments (number order and out_id included)."""
        if self.batch:
            args: dict[str, Any] = {
                "tool": self.tool, "template_code": self.template_code, "out_id": self.out_id,
                "recipients": [[a.phone.e164, a.sign_name, dict(a.params)] for a in self.addressees]}
        else:
            first = self.addressees[0]
            args = {"tool": self.tool, "phones": [a.phone.e164 for a in self.addressees],
                    "sign_name": first.sign_name, "template_code": self.template_code,
                    "template_param": dict(first.params), "out_id": self.out_id}
        return _digest(args)

    @property
    def content_hash(self) -> str:
        """What reaches the handsets, independent of number order and out_id: the duplicate guard's key."""
        return _digest({"template_code": self.template_code, "messages": sorted(
            json.dumps([a.phone.e164, a.sign_name, dict(a.params)], sort_keys=True, ensure_ascii=False)
            for a in self.addressees)})


@dataclass(frozen=True)
class PlanDraft:
    plan: Plan
    chunks: tuple[NewChunk, ...]


def _wire_params(batch: bool, template: TemplateInfo, group: Sequence[Addressee], values: Sequence[Mapping[str, str]],
                 out_id: str) -> dict[str, str]:
    if batch:
        params = {
            "PhoneNumberJson": json.dumps([a.phone.wire for a in group], ensure_ascii=False),
            "SignNameJson": json.dumps([a.sign_name for a in group], ensure_ascii=False),
            "TemplateCode": template.template_code, "OutId": out_id,
        }
        if template.variables:
            params["TemplateParamJson"] = json.dumps([dict(v) for v in values], ensure_ascii=False)
        return params
    params = {"PhoneNumbers": ",".join(a.phone.wire for a in group), "SignName": group[0].sign_name,
              "TemplateCode": template.template_code, "OutId": out_id}
    if values[0]:
        params["TemplateParam"] = json.dumps(dict(values[0]), ensure_ascii=False)
    return params


def draft(request: SendRequest, template: TemplateInfo, attributes: Mapping[str, str], plan_id: str) -> PlanDraft:
    """Validate every value, render every message and cut the send into API-sized chunks."""
    checked: dict[str, dict[str, str]] = {}  # one validation per distinct parameter set
    values: list[dict[str, str]] = []
    for addressee in request.addressees:
        key = json.dumps(dict(addressee.params), sort_keys=True, ensure_ascii=False)
        if key not in checked:
            checked[key] = check_params(template, dict(attributes), dict(addressee.params))
        values.append(checked[key])
    phones = request.phones
    check_scope(template, phones)

    base_out_id = request.out_id or plan_id
    size = MAX_BATCH_RECIPIENTS if request.batch else MAX_SEND_SMS_NUMBERS
    action = "SendBatchSms" if request.batch else "SendSms"
    starts = range(0, len(request.addressees), size)
    chunks: list[NewChunk] = []
    for n, start in enumerate(starts, start=1):
        group = request.addressees[start:start + size]
        out_id = base_out_id if len(starts) == 1 else f"{base_out_id[:240]}-{n}"
        chunks.append(NewChunk(
            chunk_no=n, action=action, out_id=out_id, recipients=tuple(a.recipient for a in group),
            params=_wire_params(request.batch, template, group, values[start:start + size], out_id),
        ))

    previews: list[RecipientPreview] = []
    total_segments = 0
    for addressee, params in zip(request.addressees, values, strict=True):
        phone = addressee.phone
        text, length, segments = render(addressee.sign_name, template.content, params,
                                        international=not phone.domestic)
        if length > MAX_MESSAGE_LENGTH:
            raise SmsError("isv.PARAM_LENGTH_LIMIT", f"The message to {phone.masked} would have {length} "
                           f"characters; at most {MAX_MESSAGE_LENGTH} are allowed.", "Use shorter values.")
        total_segments += segments
        if len(previews) < PREVIEW_LIMIT:
            previews.append(RecipientPreview(phone_number=phone.masked, region=phone.region,
                                             sign_name=addressee.sign_name, text=text, length=length,
                                             segments=segments))
    duplicates = list(request.duplicates)
    warnings = [f"{len(duplicates)} duplicate number(s) removed."] if duplicates else []
    for params in checked.values():
        warnings.extend(w for w in instruction_flags(params) if w not in warnings)
    if len(chunks) > 1:
        warnings.append(f"Sent as {len(chunks)} API requests of at most {size} recipients, each with its own "
                        "OutId; one confirmation covers all of them.")
    plan = Plan(
        plan_id=plan_id, action=action, template_code=template.template_code,  # type: ignore[arg-type]
        template_name=template.template_name, template_type=template.type, sign_names=request.sign_names,
        recipient_count=len(phones), domestic_count=sum(p.domestic for p in phones),
        international_count=sum(not p.domestic for p in phones), duplicates_removed=duplicates[:100],
        total_segments=total_segments, previews=previews, out_id=base_out_id, chunk_count=len(chunks),
        warnings=warnings,
    )
    return PlanDraft(plan, tuple(chunks))


def token_hash(token: str) -> str:
    """Tokens are stored only as this hash."""
    return hashlib.sha256(token.encode()).hexdigest()
