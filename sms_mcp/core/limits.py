"""The send limits: the operator's daily budgets and a local mirror of Alibaba's per-number flow control.

One pure function, :func:`evaluate`, decides; it is used twice: as a pre-check when a plan is prepared or
confirmed (a clear "try again at …" before anything is claimed), and — decisively — by every ledger adapter
*inside* the transaction that claims a chunk, so concurrent confirmations (threads, processes, replicas) cannot
pass a limit together.

Alibaba's rules (dysmsapi.md §9.4): verification codes, same signature -> same number: 1 per minute, 5 per hour,
10 per day; notifications and promotions, same signature and template -> same number: 50 per day. Minute and
hour windows are natural clock windows in UTC+8; the day is a rolling 24 h.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone

from sms_mcp.core.phones import mask
from sms_mcp.core.ports import FlowWindow, Recipient, Refusal, SendLimits, SentMessage

CHINA_TZ = timezone(timedelta(hours=8))
DAY = 86_400.0
#: Alibaba's defaults for verification codes per number and signature.
VERIFICATION_LIMITS = ((60.0, 1, "minute"), (3600.0, 5, "hour"), (DAY, 10, "day"))
#: Notifications and promotions per number, signature and template, per rolling 24 h.
OTHER_DAILY_LIMIT = 50


def china_day_start(now: float) -> float:
    local = datetime.fromtimestamp(now, CHINA_TZ)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def _natural_window_start(now: float, seconds: float) -> float:
    local = datetime.fromtimestamp(now, CHINA_TZ)
    if seconds == 60.0:
        return local.replace(second=0, microsecond=0).timestamp()
    return local.replace(minute=0, second=0, microsecond=0).timestamp()


def flow_windows(template_type: str, now: float) -> tuple[FlowWindow, ...]:
    """The windows that apply to a template type at ``now``."""
    if template_type == "verification":
        windows = []
        for seconds, limit, name in VERIFICATION_LIMITS:
            if seconds >= DAY:
                windows.append(FlowWindow(name, now - DAY, limit))
            else:
                start = _natural_window_start(now, seconds)
                windows.append(FlowWindow(name, start, limit, reopens_at=start + seconds))
        return tuple(windows)
    return (FlowWindow("day", now - DAY, OTHER_DAILY_LIMIT, same_template=True),)


def send_limits(template_type: str, now: float, daily_limit: int | None,
                principal_daily_limit: int | None = None) -> SendLimits:
    return SendLimits(day_start=china_day_start(now), daily_limit=daily_limit,
                      principal_daily_limit=principal_daily_limit, flow_windows=flow_windows(template_type, now))


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S UTC+8")


def evaluate(
    limits: SendLimits, template_code: str, messages: Sequence[Recipient], *, used_today: int = 0,
    used_today_by_principal: int = 0, history: Iterable[SentMessage] = (),
) -> Refusal | None:
    """Would sending ``messages`` (with ``template_code``) break a limit, given what was already counted?

    ``used_today``: messages since ``limits.day_start`` server-wide; ``used_today_by_principal``: the same for
    the plan's principal; ``history``: messages to these numbers since ``limits.history_since``."""
    count = len(messages)
    if limits.daily_limit is not None and used_today + count > limits.daily_limit:
        return Refusal("sms_mcp.DAILY_LIMIT",
                       f"{count} message(s) would exceed the daily limit: {used_today} of the {limits.daily_limit} "
                       "allowed today (UTC+8, SMS_MCP_DAILY_LIMIT) are used; nothing was sent.")
    if limits.principal_daily_limit is not None and \
            used_today_by_principal + count > limits.principal_daily_limit:
        return Refusal("sms_mcp.PRINCIPAL_DAILY_LIMIT",
                       f"{count} message(s) would exceed your own daily limit: {used_today_by_principal} of the "
                       f"{limits.principal_daily_limit} allowed to you today (UTC+8, the operator's policy) are "
                       "used; nothing was sent.")
    if not limits.flow_windows:
        return None
    by_recipient: dict[tuple[str, str], list[SentMessage]] = {}
    for sent in history:
        by_recipient.setdefault((sent.number, sent.sign_name), []).append(sent)
    blocked: list[str] = []
    retry_at = 0.0
    for recipient in messages:
        sent = by_recipient.get((recipient.number, recipient.sign_name), [])
        for window in limits.flow_windows:
            inside = [m for m in sent if m.sent_at >= window.since
                      and (not window.same_template or m.template_code == template_code)]
            if len(inside) + 1 > window.limit:
                blocked.append(f"{mask(recipient.number)} ({window.limit} per {window.name})")
                reopens = window.reopens_at if window.reopens_at is not None else \
                    min(m.sent_at for m in inside) + DAY
                retry_at = max(retry_at, reopens)
                break
    if not blocked:
        return None
    return Refusal("isv.BUSINESS_LIMIT_CONTROL",
                   "Local flow-control pre-check: Alibaba would refuse this send for "
                   f"{', '.join(blocked[:5])}{' …' if len(blocked) > 5 else ''}; nothing was sent. It can be "
                   f"tried again after {when(retry_at)}.", retry_at)
