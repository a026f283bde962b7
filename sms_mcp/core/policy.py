"""Operator policy and local pre-checks. Configuration only: no tool argument reaches these decisions.

Checked when a plan is prepared and again when it is confirmed (time passes and other plans send in between):
read-only mode, promotional templates, the number allow-list, the per-plan recipient cap, the daily message
budget (UTC+8 day), and a local mirror of Alibaba's per-number flow control, so that a plan is refused with a
clear "try again at …" before Alibaba answers ``isv.BUSINESS_LIMIT_CONTROL``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.ledger import Ledger
from sms_mcp.core.models import TemplateInfo
from sms_mcp.core.phones import Phone, allow_listed, mask

CHINA_TZ = timezone(timedelta(hours=8))
DAY = 86_400.0

#: Alibaba's defaults (dysmsapi.md §9.4): verification codes per number and signature.
VERIFICATION_LIMITS = ((60.0, 1, "minute"), (3600.0, 5, "hour"), (DAY, 10, "day"))
#: Notifications and promotions per number, signature and template, per rolling 24 h.
OTHER_DAILY_LIMIT = 50


def _window_start(now: float, seconds: float) -> float:
    """Minute and hour windows are natural clock windows in UTC+8; the day window is a rolling 24 h."""
    if seconds >= DAY:
        return now - DAY
    local = datetime.fromtimestamp(now, CHINA_TZ)
    if seconds == 60.0:
        start = local.replace(second=0, microsecond=0)
    else:
        start = local.replace(minute=0, second=0, microsecond=0)
    return start.timestamp()


def _china_day_start(now: float) -> float:
    local = datetime.fromtimestamp(now, CHINA_TZ)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S UTC+8")


class Policy:
    def __init__(self, settings: Settings, ledger: Ledger, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.ledger = ledger
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
            # Entries are normalised at start (config.py): full +E.164 numbers, or explicit "+86138*" patterns.
            refused = [p.masked for p in phones if not allow_listed(p, allowed)]
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

    def check_daily_budget(self, count: int) -> None:
        limit = self.settings.daily_limit
        if limit is None:
            return
        used = self.ledger.sends_since(_china_day_start(self.clock()))
        if used + count > limit:
            raise SmsError("sms_mcp.DAILY_LIMIT",
                           f"This plan has {count} message(s); {used} of the {limit} allowed today (UTC+8, "
                           "SMS_MCP_DAILY_LIMIT) are used; nothing was sent.",
                           "Wait until tomorrow (UTC+8) or ask the operator to raise the limit.")

    def check_flow_control(self, template_code: str, template_type: str,
                           recipients: list[tuple[str, str]]) -> None:
        """Mirror Alibaba's per-number flow control from this server's own send history.

        ``recipients`` are ``(wire number, sign name)``; the history is read once for the whole plan."""
        now = self.clock()
        history: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for number, sign, code, sent_at in self.ledger.recent_sends(now - DAY, [n for n, _ in recipients]):
            history.setdefault((number, sign), []).append((code, sent_at))
        if not history:
            return
        blocked: list[str] = []
        retry_at = 0.0
        for number, sign in recipients:
            sent = history.get((number, sign))
            if not sent:
                continue
            if template_type == "verification":
                for seconds, limit, name in VERIFICATION_LIMITS:
                    start = _window_start(now, seconds)
                    if sum(1 for _, at in sent if at >= start) >= limit:
                        blocked.append(f"{mask(number)} ({limit} per {name})")
                        oldest = min(at for _, at in sent)
                        retry_at = max(retry_at, start + seconds if seconds < DAY else oldest + DAY)
                        break
            elif sum(1 for code, _ in sent if code == template_code) >= OTHER_DAILY_LIMIT:
                blocked.append(f"{mask(number)} ({OTHER_DAILY_LIMIT} per day)")
                oldest = min(at for code, at in sent if code == template_code)
                retry_at = max(retry_at, oldest + DAY)
        if blocked:
            raise SmsError("isv.BUSINESS_LIMIT_CONTROL",
                           "Local flow-control pre-check: Alibaba would refuse this send for "
                           f"{', '.join(blocked[:5])}{' …' if len(blocked) > 5 else ''}; nothing was sent.",
                           f"Do not resend now; tell the user it can be tried again after {_when(retry_at)}.")
