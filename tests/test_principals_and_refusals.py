"""Who may act on a plan (the principal that prepared it, nobody else), the per-principal daily budget, and the
exact text a refusal reaches the model with (``[code] meaning Next step: …``, no SDK prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_harness import box
from test_safety_duplicates import notify, over_http, sent_to

from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.ports import LOCAL_PRINCIPAL, Principal
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.emulator.http import EmulatorServer
from sms_mcp.wire.sandbox import SandboxTransport

ALICE = Principal("alice@example.com", "claude-code")
BOB = Principal("bob@example.com", "claude-code")
ALICE_ELSEWHERE = Principal("alice@example.com", "inspector")


def service(tmp_path: Path, clock: Any, emulator: EmulatorCore, **kw: Any) -> SmsService:
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path)})
    return SmsService(settings, SandboxTransport(emulator), clock=clock, **kw)


async def test_only_the_preparer_can_confirm_decline_replay_or_query(
    tmp_path: Path, clock: Any, emulator: EmulatorCore
) -> None:
    svc = service(tmp_path, clock, emulator)
    args = notify("13700009001")
    plan = await svc.send_sms(**args, principal=ALICE)
    with pytest.raises(SmsError) as made_up:
        await svc.send_sms(**args, confirm_token="smt_not-a-token", principal=BOB)
    for stranger in (BOB, ALICE_ELSEWHERE, LOCAL_PRINCIPAL):
        for attempt in (svc.send_sms(**args, confirm_token=plan.confirm_token, principal=stranger),
                        svc.decline(plan.confirm_token or "", principal=stranger),
                        svc.unanswered(plan.confirm_token or "", "send_sms", args, principal=stranger)):
            with pytest.raises(SmsError) as refused:
                await attempt
            # Exactly the answer a made-up token gets: nothing about the plan leaks.
            assert refused.value.render() == made_up.value.render()
            assert plan.plan_id not in refused.value.render()
        assert await svc.plan_awaiting(plan.confirm_token or "", "send_sms", args, principal=stranger) is None
    assert emulator.messages() == []
    sent = await svc.send_sms(**args, confirm_token=plan.confirm_token, principal=ALICE)
    assert sent.status == "accepted" and len(emulator.messages()) == 1
    with pytest.raises(SmsError) as replay:  # a replay by another principal learns nothing either
        await svc.send_sms(**args, confirm_token=plan.confirm_token, principal=BOB)
    assert replay.value.render() == made_up.value.render()
    with pytest.raises(SmsError) as query:
        await svc.query_details(plan_id=plan.plan_id, principal=BOB)
    assert query.value.code == "sms_mcp.UNKNOWN_PLAN"
    assert (await svc.query_details(plan_id=plan.plan_id, principal=ALICE)).plan_status == "accepted"
    # The audit log says who did what.
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"subject": "alice@example.com"' in audit and "bob@example.com" not in audit
    svc.ledger.close()


async def test_per_principal_daily_budget_is_enforced_atomically(
    tmp_path: Path, clock: Any, emulator: EmulatorCore
) -> None:
    """Alice may send 2 a day, Bob is unlimited; Alice's concurrent confirmations cannot pass her limit together
    (the pre-check at preparation sees none of them; the claims decide)."""
    budgets = {ALICE.subject: 2}
    svc = service(tmp_path, clock, emulator, budget_for=lambda who: budgets.get(who.subject))
    plans = []
    for n in range(4):
        args = notify(f"1370000910{n}")
        plans.append((args, await svc.send_sms(**args, principal=ALICE)))
    results: list[Any] = []

    async def confirm(args: dict[str, Any], token: str) -> None:
        try:
            results.append((await svc.send_sms(**args, confirm_token=token, principal=ALICE)).status)
        except SmsError as err:
            results.append(err.code)

    async with anyio.create_task_group() as tg:
        for args, plan in plans:
            tg.start_soon(confirm, args, plan.confirm_token)
    assert sorted(results).count("accepted") == 2, results
    assert all(r in ("accepted", "rejected", "sms_mcp.PRINCIPAL_DAILY_LIMIT") for r in results), results
    assert len(emulator.messages()) == 2
    with pytest.raises(SmsError) as refused:
        await svc.send_sms(**notify("13700009110"), principal=ALICE)
    assert refused.value.code == "sms_mcp.PRINCIPAL_DAILY_LIMIT" and "2 of the 2" in refused.value.message
    bob = await svc.send_sms(**notify("13700009111"), principal=BOB)  # Bob's budget is his own
    assert (await svc.send_sms(**notify("13700009111"), confirm_token=bob.confirm_token,
                               principal=BOB)).status == "accepted"
    svc.ledger.close()


async def test_refusals_reach_the_model_as_code_meaning_next_step(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        text = await b.refused("send_sms", {**notify("13700009201"), "confirm_token": "smt_forged"})
    assert text == ("[sms_mcp.UNKNOWN_TOKEN] This confirm_token is not valid; nothing was sent. Next step: Call the "
                    "tool without confirm_token to prepare a plan, show it to the user, then confirm with the token "
                    "it returns.")


async def test_a_read_failing_while_preparing_has_its_own_code(emu: EmulatorServer, tmp_path: Path) -> None:
    """No answer to a look-up during the first step: nothing can have been sent, so not OUTCOME_UNKNOWN."""
    number = "13700009301"
    async with over_http(emu, tmp_path) as client:
        emu.faults.add("drop_before", action="GetSmsSign", count=10)  # more than the read retries
        result = await client.call_tool("send_sms", notify(number))
        text = "".join(getattr(c, "text", "") for c in result.content)
        assert result.is_error and text.startswith("[sms_mcp.READ_UNANSWERED] No answer from Alibaba Cloud to "
                                                   "GetSmsSign"), text
        assert "nothing was sent" in text and "Next step: Retry" in text and "OUTCOME_UNKNOWN" not in text
        emu.faults.clear()
        assert not (await client.call_tool("send_sms", notify(number))).is_error  # it was only a read
    assert sent_to(emu, number) == []
