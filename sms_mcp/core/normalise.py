"""Wire bodies -> one vocabulary.

Alibaba reports the same facts with different types and words depending on the action (dysmsapi.md §3):
string ``AuditStatus`` enums (with a typo) in the lists, integer ``SignStatus``, string ``TemplateStatus``, two
template-type numberings, two qualification state vocabularies. Everything above this module sees one
vocabulary; the raw value is kept beside it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from sms_mcp.core.models import QualificationRecord, SignInfo, TemplateInfo
from sms_mcp.core.phones import mask
from sms_mcp.core.privacy import mask_document, mask_id_number, mask_name, mask_url

Status = Literal["approved", "reviewing", "rejected", "cancelled"]
TemplateType = Literal["verification", "notification", "promotional", "international", "digital"]
QualificationStatus = Literal["approved", "reviewing", "rejected", "needs_more_info", "cancelled"]

AUDIT_STATUS: dict[str, Status] = {
    "AUDIT_STATE_INIT": "reviewing",
    "AUDIT_STATE_PASS": "approved",
    "AUDIT_STATE_NOT_PASS": "rejected",
    "AUDIT_STATE_CANCEL": "cancelled",
    "AUDIT_SATE_CANCEL": "cancelled",  # sic: Alibaba's template list uses this misspelling too
}
# GetSmsSign.SignStatus (int), GetSmsTemplate.TemplateStatus (string), legacy QuerySms*.Status (int).
NUMERIC_STATUS: dict[str, Status] = {"0": "reviewing", "1": "approved", "2": "rejected", "10": "cancelled"}

# OuterTemplateType, GetSmsTemplate.TemplateType and QuerySendStatistics.TemplateType share this numbering.
OUTER_TYPE: dict[str, TemplateType] = {
    "0": "verification", "1": "notification", "2": "promotional", "3": "international", "7": "digital",
}
OUTER_CODE: dict[str, str] = {v: k for k, v in OUTER_TYPE.items()}
# QuerySmsTemplateList.TemplateType uses a different numbering.
LIST_TYPE: dict[str, TemplateType] = {
    "0": "notification", "1": "promotional", "2": "verification", "6": "international", "7": "digital",
}

QUALIFICATION_STATUS: dict[str, QualificationStatus] = {
    # QuerySmsQualificationRecord.StateName
    "INIT": "reviewing", "PASS": "approved", "NOT_PASS": "rejected", "NOT_FINISH": "needs_more_info",
    "CANCEL": "cancelled",
    # QuerySingleSmsQualification.State (a different vocabulary; "INT" is spelt so by Alibaba)
    "INT": "reviewing", "PASSED": "approved", "FAILED": "rejected", "CANCELED": "cancelled",
}

_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_NO_REMARK = {"无审核备注", "无审批备注", ""}


def status_of(raw: Any) -> Status:
    """Any of Alibaba's audit status spellings/types -> the one vocabulary."""
    text = str(raw).strip()
    if text in AUDIT_STATUS:
        return AUDIT_STATUS[text]
    if text in NUMERIC_STATUS:
        return NUMERIC_STATUS[text]
    raise ValueError(f"unknown audit status {raw!r}")


def template_type_of(entry: dict[str, Any]) -> TemplateType:
    """Prefer the 'outer' numbering (OuterTemplateType); fall back to the list's own TemplateType."""
    outer = entry.get("OuterTemplateType")
    if outer is not None and str(outer) in OUTER_TYPE:
        return OUTER_TYPE[str(outer)]
    listed = entry.get("TemplateType")
    if listed is not None and str(listed) in LIST_TYPE:
        return LIST_TYPE[str(listed)]
    raise ValueError(f"unknown template type {outer!r}/{listed!r}")


def variables_of(content: str) -> list[str]:
    """``${name}`` placeholders in order of appearance, each once."""
    seen: list[str] = []
    for name in _VARIABLE.findall(content or ""):
        if name not in seen:
            seen.append(name)
    return seen


def _reason(entry: dict[str, Any], status: Status) -> str | None:
    """Rejection reasons live in ``Reason`` (object in lists, string in legacy) or ``AuditInfo`` (Get*)."""
    if status == "approved":
        return None
    reason = entry.get("Reason")
    if isinstance(reason, dict):
        text = reason.get("RejectInfo") or reason.get("RejectSubInfo") or ""
    elif isinstance(reason, str):
        text = reason
    else:
        audit = entry.get("AuditInfo") or {}
        text = audit.get("RejectInfo", "") if isinstance(audit, dict) else ""
    text = str(text).strip()
    return None if text in _NO_REMARK else text


def sign_from_list(entry: dict[str, Any]) -> SignInfo:
    status = status_of(entry["AuditStatus"])
    return SignInfo(
        sign_name=entry["SignName"],
        status=status,
        raw_status=str(entry["AuditStatus"]),
        reason=_reason(entry, status),
        created_at=entry.get("CreateDate") or None,
        business_type=entry.get("BusinessType") or None,
    )


def sign_from_get(body: dict[str, Any]) -> SignInfo:
    status = status_of(body["SignStatus"])
    return SignInfo(
        sign_name=body["SignName"],
        status=status,
        raw_status=str(body["SignStatus"]),
        reason=_reason(body, status),
        created_at=body.get("CreateDate") or None,
        business_type=None,
    )


def template_from_list(entry: dict[str, Any]) -> TemplateInfo:
    status = status_of(entry["AuditStatus"])
    content = entry.get("TemplateContent") or ""
    return TemplateInfo(
        template_code=entry["TemplateCode"],
        template_name=entry.get("TemplateName") or "",
        type=template_type_of(entry),
        content=content,
        variables=variables_of(content),
        status=status,
        raw_status=str(entry["AuditStatus"]),
        reason=_reason(entry, status),
        created_at=entry.get("CreateDate") or None,
    )


def template_from_get(body: dict[str, Any]) -> TemplateInfo:
    status = status_of(body["TemplateStatus"])
    content = body.get("TemplateContent") or ""
    raw_type = str(body.get("TemplateType", ""))
    if raw_type not in OUTER_TYPE:
        raise ValueError(f"unknown template type {raw_type!r}")
    return TemplateInfo(
        template_code=body["TemplateCode"],
        template_name=body.get("TemplateName") or "",
        type=OUTER_TYPE[raw_type],
        content=content,
        variables=variables_of(content),
        status=status,
        raw_status=str(body["TemplateStatus"]),
        reason=_reason(body, status),
        created_at=body.get("CreateDate") or None,
    )


def qualification_status_of(raw: Any) -> QualificationStatus:
    text = str(raw).strip().upper()
    if text not in QUALIFICATION_STATUS:
        raise ValueError(f"unknown qualification state {raw!r}")
    return QUALIFICATION_STATUS[text]


def _bool(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    if raw is None or raw == "":
        return None
    return str(raw).strip().lower() == "true"


def qualification_from_list(entry: dict[str, Any]) -> QualificationRecord:
    return QualificationRecord(
        group_id=int(entry["GroupId"]),
        name=entry.get("QualificationGroupName") or "",
        company_name=entry.get("CompanyName") or "",
        legal_person_name=mask_name(entry.get("LegalPersonName") or ""),
        status=qualification_status_of(entry["StateName"]),
        raw_status=str(entry["StateName"]),
        use_by_self=_bool(entry.get("UseBySelf")),  # a STRING "true"/"false" in the list API
        work_order_id=int(entry["WorkOrderId"]) if entry.get("WorkOrderId") not in (None, "") else None,
        audit_remark=entry.get("AuditRemark") or None,
        audit_time=entry.get("AuditTime") or None,
        created_at=entry.get("CreateDate") or None,
    )


def qualification_detail(data: dict[str, Any]) -> dict[str, Any]:
    """QuerySingleSmsQualification.Data with every personal datum masked (never returned or logged raw)."""
    return {
        "group_id": int(data.get("QualificationGroupId") or 0),
        "name": data.get("QualificationName") or "",
        "status": qualification_status_of(data.get("State", "")),
        "raw_status": str(data.get("State", "")),
        "work_order_id": data.get("WorkOrderId"),
        "company_name": data.get("CompanyName") or "",
        "company_type": data.get("CompanyType") or None,
        "organization_code": mask_document(data.get("OrganizationCode") or ""),
        "validity": data.get("EffTimeStr") or None,
        "legal_person_name": mask_name(data.get("LegalPersonName") or ""),
        "legal_person_id_number": mask_id_number(data.get("LegalPersonIDCardNo") or ""),
        "legal_person_id_type": data.get("LegalPersonIDCardType") or None,
        "admin_name": mask_name(data.get("AdminName") or ""),
        "admin_phone": mask(data.get("AdminPhoneNo") or ""),
        "admin_id_number": mask_id_number(data.get("AdminIDCardNo") or ""),
        "admin_id_type": data.get("AdminIDCardType") or None,
        "business_licences": [
            {"type": pic.get("Type"), "image": mask_url(pic.get("PicUrl") or pic.get("LicensePic") or "")}
            for pic in data.get("BusinessLicensePics") or []
        ],
        "other_files": len(data.get("OtherFiles") or []),
        "use_by_self": _bool(data.get("UseBySelf")),  # a real bool in the detail API
        "whether_share": _bool(data.get("WhetherShare")),
        "remark": data.get("Remark") or None,
    }
