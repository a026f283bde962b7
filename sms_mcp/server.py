"""The MCP skin: tool declarations, annotations, lifespan. No business logic lives here.

Every tool delegates to :class:`sms_mcp.core.service.SmsService`. Domain refusals (:class:`SmsError`) come back
as an error result (``isError``) whose text is exactly ``[code] meaning Next step: …``: returned rather than
raised as ``ToolError``, which the SDK would prefix with ``Error executing tool <name>:``.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import (
    AcceptedElicitation,
    CancelledElicitation,
    Context,
    Elicit,
    ElicitationResult,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from sms_mcp import __version__
from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.models import (
    DeliveryReport,
    Plan,
    QualificationResult,
    SendResult,
    SignList,
    Statistics,
    TemplateList,
)
from sms_mcp.core.ports import LOCAL_PRINCIPAL, LedgerPort, LedgerUnavailable, Principal
from sms_mcp.core.principal_policy import PrincipalPolicy
from sms_mcp.core.service import SmsService, ledger_unavailable
from sms_mcp.protocol_guards import RefuseUnknownArguments
from sms_mcp.wire.base import Transport
from sms_mcp.wire.factory import make_transport, resolve_backend

log = logging.getLogger("sms_mcp.server")
SHUTDOWN_BUDGET_SECONDS = 1.5
T = TypeVar("T")

INSTRUCTIONS = """\
sms-mcp sends SMS through Alibaba Cloud Short Message Service. SMS cost money and cannot be recalled.
Workflow: (1) list_signs and list_templates show what is approved; ask the user which signature and template
to use — never guess or invent one. (2) Ask the user for the recipient numbers and for a value for every
${variable} of the template — never reuse example numbers. (3) Call send_sms / send_batch_sms WITHOUT
confirm_token: nothing is sent; you get a plan and a confirm_token. (4) Show the plan (recipients, signature,
full text, billed segments) to the user and wait for their explicit confirmation. (5) Call the same tool again
with exactly the same arguments plus confirm_token. (6) "accepted" is not "delivered": check query_details
(plan_id=...) 10-30 s later. Never repeat a send whose outcome is "unknown": reconcile it with query_details."""

VERIFICATION_PROMPT = """\
Send a verification code by SMS to {phone_number}, with sms-mcp, step by step:
1. Call list_signs and list_templates. Show the user the approved signatures and the approved templates of type
   "verification" and let them choose one of each; do not pick for them. A verification-only signature
   (BusinessType 验证码类型) can send only verification templates.
2. Ask the user for the code to send (4-6 characters; digits only when the template says so), or ask whether you
   should generate a random one. Never reuse an example number or code.
3. Call send_sms with phone_numbers=["{phone_number}"], the chosen sign_name and template_code, and
   template_param={{"<the template's variable>": "<code>"}}, WITHOUT confirm_token. Nothing is sent yet.
4. Show the user the plan: the masked number, the exact text, the billed segments and any warnings. Ask "Send it?"
5. Only after the user explicitly says yes, call send_sms again with exactly the same arguments plus the
   confirm_token from step 3. If they say no, stop.
6. "accepted" is not "delivered": after 10-30 s call query_details(plan_id=...) and tell the user the outcome.
   If the status is "unknown", never send again; reconcile with query_details(plan_id=...).
   Verification codes are limited to 1 per minute, 5 per hour and 10 per day per number and signature.
"""

Page = Annotated[int, Field(ge=1, le=1000, description="Page number, from 1.")]
StatusFilter = Literal["approved", "reviewing", "rejected", "cancelled", "all"]
Date = Annotated[str, Field(pattern=r"^\d{8}$", description="yyyyMMdd (UTC+8), e.g. 20261125.")]
ConfirmToken = Annotated[
    str | None,
    Field(
        description="Leave empty on the first call (nothing is sent; a plan and a token come back). Pass the "
        "token only after the user explicitly confirmed the plan, with exactly the same other arguments.",
        max_length=200,
    ),
]
OutId = Annotated[
    str | None,
    Field(description="Optional external id for your own bookkeeping (sent as OutId; < 256 characters). "
          "Defaults to the plan id.", max_length=255),
]
TemplateParam = Annotated[
    dict[str, Annotated[str, Field(max_length=500)]] | None,
    Field(description="A value for every ${variable} of the template, as strings, e.g. {\"code\": \"4821\"}. "
          "Ask the user for each value; never invent one."),
]


class BatchRecipient(BaseModel):
    """One recipient of a personalised batch send."""

    model_config = ConfigDict(extra="forbid")
    phone_number: str = Field(max_length=32, description="Mainland: 11 digits (+86 optional); others: + and "
                              "country code.")
    sign_name: str = Field(min_length=1, max_length=100, description="An approved signature (list_signs).")
    template_param: TemplateParam = None


#: Who is calling, from the request context. stdio has one caller: the local principal. The HTTP gateway
#: passes its own (from the verified access token).
PrincipalOf = Callable[[Context], Principal]


@dataclass
class AppState:
    service: SmsService
    principal_of: PrincipalOf


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=True)
SEND = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)


def refusal(err: SmsError) -> CallToolResult:
    """A refusal as the model reads it: ``[code] meaning Next step: …`` and nothing else."""
    return CallToolResult(content=[TextContent(type="text", text=err.render())], is_error=True)


async def _run(call: Awaitable[T]) -> T | CallToolResult:
    """A tool's result, or its refusal as an error result: the model sees the code, the cause and the next step.
    A storage fault at a point where nothing was sent gets its own code (a fault mid-send is an SmsError that
    says the SMS may have left)."""
    try:
        return await call
    except SmsError as err:
        return refusal(err)
    except LedgerUnavailable as err:
        log.error("%s", err)
        return refusal(ledger_unavailable(err))


async def _resource(call: Awaitable[T]) -> T:
    try:
        return await call
    except SmsError as err:
        raise ToolError(err.render()) from None
    except LedgerUnavailable as err:
        raise ToolError(ledger_unavailable(err).render()) from None


async def close_transport(transport: Transport) -> None:
    """Release a backend (for the aliyun CLI: AI-mode disable). Shielded, because on a signal this runs inside
    a cancelled scope; bounded, because an MCP client waits about 2 s before it escalates to SIGKILL."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_BUDGET_SECONDS):
        await transport.aclose()


def _service(ctx: Context) -> SmsService:
    state: AppState = ctx.request_context.lifespan_context
    return state.service


def _principal(ctx: Context) -> Principal:
    state: AppState = ctx.request_context.lifespan_context
    return state.principal_of(ctx)


class HumanConfirmation(BaseModel):
    """What the human is asked (form elicitation): flat and boolean, as the spec requires."""

    send: bool = Field(description="Send these SMS now? They cost money and cannot be recalled.")


def client_can_ask(ctx: Context) -> bool:
    """Form elicitation support: ``{}`` means form mode; ``{"url": {}}`` alone means URL mode only."""
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    if elicitation is None:
        return False
    return elicitation.form is not None or elicitation.url is None


def confirmation_question(plan: Plan) -> str:
    """Deterministic in the plan (it is pinned across the protocol's retry rounds)."""
    sample = plan.previews[0]
    more = f" and {plan.recipient_count - 1} more" if plan.recipient_count > 1 else ""
    lines = [
        f"sms-mcp asks: send {plan.recipient_count} SMS ({plan.total_segments} billed) with template "
        f"{plan.template_code} and signature {', '.join(plan.sign_names)}?",
        f"To {sample.phone_number}{more}: {sample.text}",
    ]
    lines.extend(f"Warning: {w}" for w in plan.warnings)
    return "\n".join(lines)


def build_server(
    settings: Settings, transport: Transport | None = None, *, manage_transport: bool = True,
    ledger: LedgerPort | None = None, principal_of: PrincipalOf | None = None,
    principal_policy: PrincipalPolicy | None = None, on_service: Callable[[SmsService | None], None] | None = None,
    **server_options: Any,
) -> MCPServer:
    """The MCP server. ``transport`` overrides the backend chosen from ``settings`` (tests, benchmarks).

    With ``manage_transport`` (the default) the lifespan starts the backend and closes it on the way out;
    ``sms-mcp serve`` passes False and does both itself, outside the stdio machinery, so that a backend that
    cannot start fails before stdin is claimed (a failing lifespan would otherwise wait for stdin to close).
    ``ledger``: an opened ledger the caller owns (``serve`` opens it first, to refuse a broken one in one
    line); otherwise the lifespan opens the configured one and closes it. ``principal_of``: who is calling
    (default: the one local principal of stdio).

    The HTTP skin also passes ``principal_policy`` (per-caller rules and daily budgets on top of the server's),
    ``on_service`` (sees the running service, and None when it stops: the readiness check) and
    ``server_options`` for ``MCPServer`` (auth, request-state keys)."""

    # Static resources get no Context in the SDK, so they reach the running service through this list.
    live: list[SmsService] = []

    def _live_service() -> SmsService:
        if not live:
            raise ToolError("sms-mcp is not serving yet")
        return live[-1]

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[AppState]:
        if transport is not None:
            chosen = transport
        else:
            name, why = resolve_backend(settings)
            log.info("backend: %s (%s)", name, why)
            chosen = make_transport(settings, name)
        service: SmsService | None = None
        opened: LedgerPort | None = None
        if manage_transport:
            await chosen.start()
        try:
            if ledger is None:
                from sms_mcp.ledger import open_ledger

                opened = await open_ledger(settings)
            service = SmsService(settings, chosen, ledger or opened, principal_policy=principal_policy)
            await service.start()
            live.append(service)
            if on_service is not None:
                on_service(service)
            yield AppState(service, principal_of or (lambda _ctx: LOCAL_PRINCIPAL))
        finally:
            if on_service is not None:
                on_service(None)
            if service in live:
                live.remove(service)
            # The shutdown hook: release the backend (for the aliyun CLI: AI-mode disable) on every exit.
            try:
                if manage_transport:
                    await close_transport(chosen)
            finally:
                if opened is not None:
                    with anyio.CancelScope(shield=True):
                        await opened.aclose()

    server: MCPServer = MCPServer(
        "sms-mcp", title="Alibaba Cloud SMS", version=__version__, instructions=INSTRUCTIONS,
        lifespan=lifespan, log_level=settings.log_level if settings.log_level in (
            "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO",  # type: ignore[arg-type]
        **server_options,
    )

    async def ask_for_sms(
        ctx: Context, phone_numbers: list[str], sign_name: str, template_code: str,
        template_param: dict[str, str] | None = None, out_id: str | None = None, confirm_token: str | None = None,
    ) -> HumanConfirmation | Elicit[HumanConfirmation]:
        return await _question(ctx, confirm_token, "send_sms", {
            "phone_numbers": phone_numbers, "sign_name": sign_name, "template_code": template_code,
            "template_param": template_param, "out_id": out_id})

    async def ask_for_batch(
        ctx: Context, recipients: list[BatchRecipient], template_code: str, out_id: str | None = None,
        confirm_token: str | None = None,
    ) -> HumanConfirmation | Elicit[HumanConfirmation]:
        return await _question(ctx, confirm_token, "send_batch_sms", {
            "recipients": [r.model_dump() for r in recipients], "template_code": template_code, "out_id": out_id})

    async def _question(ctx: Context, token: str | None, tool: str, arguments: dict[str, Any],
                        ) -> HumanConfirmation | Elicit[HumanConfirmation]:
        """Ask the human only on a confirming call of a plan still waiting, when the mode and client allow."""
        if not token or settings.confirm_mode == "token" or not client_can_ask(ctx):
            return HumanConfirmation(send=True)
        try:
            plan = await _service(ctx).plan_awaiting(token, tool, arguments, principal=_principal(ctx))
        except LedgerUnavailable:
            plan = None  # the confirmation itself reports the fault
        if plan is None:
            return HumanConfirmation(send=True)
        return Elicit(confirmation_question(plan), HumanConfirmation)

    async def _confirm_or_answer(ctx: Context, token: str | None, tool: str, arguments: dict[str, Any],
                                 human: ElicitationResult[HumanConfirmation],
                                 send: Callable[[Principal], Awaitable[SendResult]],
                                 ) -> SendResult | CallToolResult:
        """Send, or act on the human's answer: a "no" (declined, or the box left unticked) cancels the plan for
        good; a prompt dismissed without a choice (cancel: what a headless client answers) leaves the plan
        waiting and says the human did not answer. Refused when a human answer is required but cannot be asked
        for."""
        service, principal = _service(ctx), _principal(ctx)
        answer = "send"
        if token and settings.confirm_mode != "token":
            if not client_can_ask(ctx):
                if settings.confirm_mode == "elicit":
                    return refusal(SmsError(
                        "sms_mcp.CONFIRMATION_UNAVAILABLE", "SMS_MCP_CONFIRM_MODE=elicit requires a human answer, "
                        "and this client cannot ask the user (no form elicitation); nothing was sent.",
                        "Use a client that supports elicitation, or ask the operator to set "
                        "SMS_MCP_CONFIRM_MODE=auto or token."))
            elif isinstance(human, CancelledElicitation):
                answer = "unanswered"
            elif not (isinstance(human, AcceptedElicitation) and human.data.send):
                answer = "decline"
        if answer == "send":
            return await _run(send(principal))
        if answer == "unanswered":
            return await _run(service.unanswered(token or "", tool, arguments, principal=principal))
        return await _run(service.decline(token or "", principal=principal))

    @server.tool(title="List SMS signatures", annotations=READ_ONLY)
    async def list_signs(
        ctx: Context,
        page_index: Page = 1,
        page_size: Annotated[int, Field(ge=1, le=50, description="Signatures per page (1-50).")] = 50,
        status: Annotated[StatusFilter, Field(description="Audit status to show; 'all' shows every one.")]
        = "approved",
    ) -> Annotated[CallToolResult, SignList]:
        """List the account's SMS signatures (the 【name】 shown at the start of every message).

        Only approved signatures can send. Show them to the user and let the user choose; never guess a
        signature or make one up."""
        return await _run(_service(ctx).list_signs(page_index, page_size, status))

    @server.tool(title="List SMS templates", annotations=READ_ONLY)
    async def list_templates(
        ctx: Context,
        page_index: Page = 1,
        page_size: Annotated[int, Field(ge=1, le=50, description="Templates per page (1-50).")] = 50,
        status: Annotated[StatusFilter, Field(description="Audit status to show; 'all' shows every one.")]
        = "approved",
    ) -> Annotated[CallToolResult, TemplateList]:
        """List the account's SMS templates with their type, text and ${variables}.

        Only approved templates can send. Let the user choose one, then ask the user for a value for each of
        its variables. Promotional templates may be disabled by the operator."""
        return await _run(_service(ctx).list_templates(page_index, page_size, status))

    @server.tool(title="Send SMS (two-step)", annotations=SEND)
    async def send_sms(
        ctx: Context,
        phone_numbers: Annotated[
            list[Annotated[str, Field(max_length=32)]],
            Field(min_length=1, max_length=settings.max_recipients,
                  description="Recipients, given by the user. Mainland China: 11 digits (+86 optional); others: + "
                  "and country code. Duplicates are removed. More than 1,000 are sent as several requests."),
        ],
        sign_name: Annotated[str, Field(min_length=1, max_length=100,
                                        description="An approved signature chosen by the user (list_signs).")],
        template_code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$",
                                            description="An approved template code chosen by the user "
                                            "(list_templates), e.g. SMS_900000001.")],
        template_param: TemplateParam = None,
        out_id: OutId = None,
        confirm_token: ConfirmToken = None,
        human: Annotated[ElicitationResult[HumanConfirmation], Resolve(ask_for_sms)] = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, SendResult]:
        """Send one template to one or more numbers, in two steps.

        First call (no confirm_token): validates everything, renders the exact text per recipient, counts billed
        segments, and returns a plan with a confirm_token. NOTHING is sent. Show the plan to the user and ask for
        explicit confirmation. Second call: the same arguments plus confirm_token sends, once; repeating it
        returns the recorded result (replayed) and sends nothing. "accepted" is not "delivered": use
        query_details(plan_id=...) afterwards."""
        arguments = {"phone_numbers": phone_numbers, "sign_name": sign_name, "template_code": template_code,
                     "template_param": template_param, "out_id": out_id}
        return await _confirm_or_answer(ctx, confirm_token, "send_sms", arguments, human, lambda who: _service(
            ctx).send_sms(phone_numbers, sign_name, template_code, template_param, out_id, confirm_token,
                          progress=ctx.report_progress, principal=who))

    @server.tool(title="Send personalised batch SMS (two-step)", annotations=SEND)
    async def send_batch_sms(
        ctx: Context,
        recipients: Annotated[
            list[BatchRecipient],
            Field(min_length=1, max_length=settings.max_recipients,
                  description="One object per recipient: phone_number, sign_name and that recipient's "
                  "template_param values. More than 100 are sent as several requests."),
        ],
        template_code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$",
                                            description="One approved template for every recipient.")],
        out_id: OutId = None,
        confirm_token: ConfirmToken = None,
        human: Annotated[ElicitationResult[HumanConfirmation], Resolve(ask_for_batch)] = None,  # type: ignore[assignment]
    ) -> Annotated[CallToolResult, SendResult]:
        """Send one template to many recipients, each with its own signature and values, in two steps.

        Same protocol as send_sms: the first call returns a plan and a confirm_token and sends nothing; show the
        plan to the user, and only after explicit confirmation call again with the same arguments plus the
        token."""
        plain = [r.model_dump() for r in recipients]
        arguments = {"recipients": plain, "template_code": template_code, "out_id": out_id}
        return await _confirm_or_answer(ctx, confirm_token, "send_batch_sms", arguments, human, lambda who: _service(
            ctx).send_batch_sms(plain, template_code, out_id, confirm_token, progress=ctx.report_progress,
                                principal=who))

    @server.tool(title="Query delivery receipts", annotations=READ_ONLY)
    async def query_details(
        ctx: Context,
        phone_number: Annotated[str | None, Field(max_length=32, description="One number to look up.")] = None,
        send_date: Annotated[str | None, Field(pattern=r"^\d{8}$", description="yyyyMMdd (UTC+8); default "
                                               "today. Only the last 30 days.")] = None,
        biz_id: Annotated[str | None, Field(max_length=64, description="BizId from a send, to narrow the "
                                            "search.")] = None,
        plan_id: Annotated[str | None, Field(max_length=64, description="A plan_id from send_sms/"
                                             "send_batch_sms: every recipient of the plan is queried.")] = None,
        page_size: Annotated[int, Field(ge=1, le=50)] = 10,
        current_page: Page = 1,
    ) -> Annotated[CallToolResult, DeliveryReport]:
        """Delivery receipts: by plan_id (every recipient of a send, summarised as delivered / failed / pending)
        or by phone_number and send_date. Receipts usually arrive 10-30 s after sending; pending is normal at
        first. Use this, never a resend, to find out what happened to a send."""
        return await _run(_service(ctx).query_details(phone_number, send_date, biz_id, plan_id, page_size,
                                                      current_page, principal=_principal(ctx)))

    @server.tool(title="Query sending statistics", annotations=READ_ONLY)
    async def query_statistics(
        ctx: Context,
        start_date: Date,
        end_date: Date,
        scope: Annotated[Literal["domestic", "international"], Field(description="Mainland China or "
                                                                     "international/HK/Macao/Taiwan.")]
        = "domestic",
        template_type: Annotated[
            Literal["verification", "notification", "promotional", "international", "digital"] | None,
            Field(description="Only this template type."),
        ] = None,
        sign_name: Annotated[str | None, Field(max_length=100, description="Only this signature.")] = None,
        page_index: Page = 1,
        page_size: Annotated[int, Field(ge=1, le=50)] = 10,
    ) -> Annotated[CallToolResult, Statistics]:
        """Daily totals between two dates: submitted, delivered, failed and still pending."""
        return await _run(_service(ctx).query_statistics(start_date, end_date, scope, template_type, sign_name,
                                                         page_index, page_size))

    @server.tool(title="SMS qualification records", annotations=READ_ONLY)
    async def qualification(
        ctx: Context,
        group_id: Annotated[int | None, Field(ge=1, description="Show this qualification in detail.")] = None,
        qualification_name: Annotated[str | None, Field(max_length=100)] = None,
        company_name: Annotated[str | None, Field(max_length=200)] = None,
        legal_person_name: Annotated[str | None, Field(max_length=100)] = None,
        status: Annotated[
            Literal["approved", "reviewing", "rejected", "needs_more_info", "cancelled"] | None,
            Field(description="Only records in this review state."),
        ] = None,
        work_order_id: Annotated[int | None, Field(ge=1)] = None,
        use_by_self: Annotated[bool | None, Field(description="true: for own use; false: for a third "
                                                  "party.")] = None,
        page_no: Page = 1,
        page_size: Annotated[int, Field(ge=1, le=50)] = 20,
    ) -> Annotated[CallToolResult, QualificationResult]:
        """The account's SMS qualification (business verification) records, or one in detail with group_id.
        Review states are reported in one vocabulary; ID numbers, names and phone numbers are masked."""
        return await _run(_service(ctx).qualification(group_id, qualification_name, company_name,
                                                      legal_person_name, status, work_order_id, use_by_self,
                                                      page_no, page_size))

    @server.resource("sms://signs", name="approved_signs", title="Approved SMS signatures",
                     description="The account's approved signatures (JSON), for clients that surface resources.",
                     mime_type="application/json")
    async def approved_signs() -> str:
        return (await _resource(_live_service().list_signs(1, 50, "approved"))).model_dump_json(indent=2)

    @server.resource("sms://templates", name="approved_templates", title="Approved SMS templates",
                     description="The account's approved templates with their ${variables} (JSON).",
                     mime_type="application/json")
    async def approved_templates() -> str:
        return (await _resource(_live_service().list_templates(1, 50, "approved"))).model_dump_json(indent=2)

    @server.prompt(name="send_verification_code", title="Send a verification code by SMS")
    def send_verification_code(
        phone_number: Annotated[str, Field(description="The recipient's number, as the user gave it.")],
    ) -> str:
        """Walks an agent through sending a one-time verification code safely."""
        return VERIFICATION_PROMPT.format(phone_number=phone_number)

    server.middleware.append(RefuseUnknownArguments.for_tools(
        (list_signs, list_templates, send_sms, send_batch_sms, query_details, query_statistics, qualification)))
    return server
