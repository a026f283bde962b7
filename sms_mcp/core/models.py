"""Result models: what every tool returns (structured output), in one vocabulary."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Backend = Literal["sandbox", "openapi", "cli"]

SANDBOX_NOTICE = "Sandbox backend: no real SMS was sent or will be sent; data comes from the local emulator."


class Served(BaseModel):
    """Every result says which backend served it; sandbox results say plainly that nothing is real."""

    backend: Backend = Field(description="Which backend served this call: sandbox, openapi or cli.")
    notice: str | None = Field(default=None, description="Set on the sandbox: no real SMS is involved.")


class SignInfo(BaseModel):
    sign_name: str
    status: Literal["approved", "reviewing", "rejected", "cancelled"]
    raw_status: str = Field(description="Alibaba's own value (AuditStatus string or SignStatus number).")
    reason: str | None = Field(default=None, description="Why it was rejected, when Alibaba says.")
    created_at: str | None = None
    business_type: str | None = Field(default=None, description="Alibaba's BusinessType (验证码类型 / 通用类型).")


class SignList(Served):
    status_filter: str
    total_count: int = Field(description="Signatures matching the filter.")
    page_index: int
    page_size: int
    signs: list[SignInfo]
    next_step: str


class TemplateInfo(BaseModel):
    template_code: str
    template_name: str
    type: Literal["verification", "notification", "promotional", "international", "digital"]
    content: str
    variables: list[str] = Field(description="The ${...} placeholders: ask the user for a value for each.")
    status: Literal["approved", "reviewing", "rejected", "cancelled"]
    raw_status: str
    reason: str | None = None
    created_at: str | None = None


class TemplateList(Served):
    status_filter: str
    total_count: int
    page_index: int
    page_size: int
    templates: list[TemplateInfo]
    next_step: str


class RecipientPreview(BaseModel):
    phone_number: str = Field(description="Masked number.")
    region: str = Field(description="ISO region of the number (CN for mainland China).")
    sign_name: str
    text: str = Field(description="The exact message text the recipient will get, 【signature】 included.")
    length: int = Field(description="Characters counted for billing.")
    segments: int = Field(description="Billed messages for this recipient.")


class Plan(BaseModel):
    """What a confirmed send will do, exactly. Show it to the user before confirming."""

    plan_id: str
    action: Literal["SendSms", "SendBatchSms"]
    template_code: str
    template_name: str
    template_type: str
    sign_names: list[str]
    recipient_count: int
    domestic_count: int
    international_count: int
    duplicates_removed: list[str] = Field(default_factory=list, description="Masked numbers given twice.")
    total_segments: int = Field(description="Billed messages in total (long texts bill several segments).")
    previews: list[RecipientPreview] = Field(description="Rendered message per recipient (first 20 shown).")
    out_id: str = Field(description="External id sent with the request, to find it again in receipts "
                        "(with -1, -2 … per request when the plan needs several).")
    chunk_count: int = Field(default=1, description="API requests this plan needs (1,000 numbers or 100 "
                             "recipients each).")
    warnings: list[str] = Field(default_factory=list)


class ChunkOutcome(BaseModel):
    """One API request of a plan (plans beyond 1,000 numbers / 100 recipients are split into chunks)."""

    chunk_no: int
    recipient_count: int
    state: Literal["pending", "sending", "accepted", "rejected", "unknown", "not_sent"] = Field(
        description="accepted: Alibaba took it. rejected / not_sent: nothing was sent. unknown: it may have "
        "been sent; never resent, reconcile with query_details(plan_id). pending: not attempted yet."
    )
    out_id: str
    biz_id: str | None = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class SendResult(Served):
    status: Literal[
        "pending_confirmation", "accepted", "partial", "rejected", "unknown", "not_sent", "cancelled",
    ] = Field(
        description="pending_confirmation: nothing sent yet. accepted: Alibaba took every request (NOT yet "
        "delivered). partial: some chunks accepted, some not (see chunks). rejected / not_sent / cancelled: "
        "nothing was sent. unknown: some of it may or may not have been sent; reconcile with query_details."
    )
    plan_id: str
    plan: Plan
    confirm_token: str | None = Field(default=None, description="First step only: pass it back to send.")
    expires_at: str | None = Field(default=None, description="First step only: when the token expires (UTC).")
    biz_id: str | None = Field(default=None, description="Alibaba's receipt id (first chunk), for query_details.")
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    chunks: list[ChunkOutcome] = Field(default_factory=list, description="Per-request outcomes after sending.")
    replayed: bool = Field(default=False, description="True when this call sent nothing itself and reports "
                           "what earlier confirmation(s) of the plan did.")
    message: str = Field(description="What happened, in one sentence.")
    next_step: str


class Reconciliation(BaseModel):
    """What query_details(plan_id) learnt about chunks whose outcome was unknown."""

    chunk_no: int
    before: str
    after: str
    evidence: str


class DeliveryRecord(BaseModel):
    phone_number: str = Field(description="Masked number.")
    status: Literal["delivered", "failed", "pending"]
    send_status: int = Field(description="Alibaba's SendStatus: 1 waiting for receipt, 2 failed, 3 delivered.")
    err_code: str | None = Field(default=None, description="Carrier receipt code (DELIVERED on success).")
    content: str | None = None
    template_code: str | None = None
    out_id: str | None = None
    send_date: str | None = None
    receive_date: str | None = None


class DeliverySummary(BaseModel):
    delivered: int = 0
    failed: int = 0
    pending: int = 0


class DeliveryReport(Served):
    plan_id: str | None = None
    plan_status: str | None = Field(default=None, description="For a plan: its status after reconciliation.")
    reconciled: list[Reconciliation] = Field(default_factory=list)
    biz_id: str | None = None
    send_date: str
    total_count: int = Field(description="Records Alibaba reports (for one number: its TotalCount).")
    current_page: int
    page_size: int
    records: list[DeliveryRecord]
    summary: DeliverySummary
    next_step: str


class DailyStatistics(BaseModel):
    date: str = Field(description="yyyyMMdd (UTC+8).")
    total_count: int = Field(description="Messages submitted successfully (billable).")
    delivered: int
    failed: int
    pending: int = Field(description="No receipt yet.")


class Statistics(Served):
    scope: Literal["domestic", "international"]
    start_date: str
    end_date: str
    template_type: str | None = None
    sign_name: str | None = None
    total_size: int
    page_index: int
    page_size: int
    days: list[DailyStatistics]
    totals: DailyStatistics | None = Field(default=None, description="Sum over the days on this page.")


class QualificationRecord(BaseModel):
    group_id: int
    name: str
    company_name: str
    legal_person_name: str = Field(description="Masked.")
    status: Literal["approved", "reviewing", "rejected", "needs_more_info", "cancelled"]
    raw_status: str
    use_by_self: bool | None = None
    work_order_id: int | None = None
    audit_remark: str | None = Field(default=None, description="Alibaba's review remark (rejection reason).")
    audit_time: str | None = None
    created_at: str | None = None


class QualificationResult(Served):
    total: int
    page_no: int
    page_size: int
    records: list[QualificationRecord]
    detail: dict[str, Any] | None = Field(
        default=None, description="One record in detail (group_id given); personal data masked."
    )
    next_step: str
