"""Operator policy and local pre-checks. Configuration only: no tool argument reaches these decisions.

Checked when a plan is prepared and again when it is confirmed (the configuration may change in between):
read-only mode, promotional templates, the number allow-list and the per-plan recipient cap. The limits that
depend on the send history (daily budgets, the local mirror of Alibaba's flow control) are in
:mod:`sms_mcp.core.limits`, decided atomically by the ledger when a chunk is claimed.
"""

from __future__ import annotations

from collections.abc import Callable

from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.models import TemplateInfo
from sms_mcp.core.phones import Phone


class Policy:
    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock

    def check_can_send(self) -> None:
        if self.settings.read_only:
            raise SmsError("sms_mcp.READ_ONLY", "This server is configured read-only (SMS_MCP_READ_ONLY); "
                           "nothing was sent.", "Sending is disabled by the operator; tell the user. Reads work.")

    def check_recipients(self, phones: list[Phone]) -> None:
        cap = self.settings.max_recipients
        if len(phones) > cap:
            raise SmsError("sms_mcp.TOO_MANY_RECIPIENTS",
                           f"{len(phones)} recipients; this server allows at most {cap} per plan "
                           "(SMS_MCP_MAX_RECIPIENTS).", "Split the recipients into several plans.")
        allowed = self.settings.allowed_numbers
        if allowed:
            refused = [p.masked for p in phones if not any(
                p.e164 == a or p.wire == a or p.e164.startswith(a) or p.wire.startswith(a) for a in allowed)]
            if refused:
                raise SmsError("sms_mcp.NUMBER_NOT_ALLOWED",
                               f"{', '.join(refused[:5])}{' …' if len(refused) > 5 else ''} not in the operator's "
                               "allow-list (SMS_MCP_ALLOWED_NUMBERS); nothing was sent.",
                               "Only allow-listed numbers can receive SMS from this server; tell the user.")

    def check_template(self, template: TemplateInfo) -> None:
        if template.type == "promotional" and not self.settings.allow_promotional:
            raise SmsError("sms_mcp.PROMOTIONAL_DISABLED",
                           f"Template {template.template_code} is promotional; promotional sends are disabled.",
                           "Promotional SMS need SMS_MCP_ALLOW_PROMOTIONAL=true set by the operator.")
        if template.type == "digital":
            raise SmsError("sms_mcp.UNSUPPORTED_TEMPLATE", f"Template {template.template_code} is a digital "
                           "(multimedia) template; SendSms cannot send it.", "Choose a text template.")
