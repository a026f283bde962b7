"""The duplicate-send guard keys on what reaches the handsets, not on how the arguments were written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sms_mcp.config import Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.base import OutcomeUnknownError
from sms_mcp.wire.sandbox import SandboxTransport

ARGS = {"sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "A1", "date": "周三"}}


class LostAnswers(SandboxTransport):
    """The send reaches the emulator, but the answer is lost on the way back (the "did it send?" case)."""

    async def call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        body = await super().call(action, params)
        if action == "SendSms":
            raise OutcomeUnknownError("connection_lost", "answer dropped after the send was recorded")
        return body


async def test_reordered_numbers_or_new_out_id_cannot_bypass_an_unreconciled_plan(tmp_path: Path) -> None:
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), "SMS_MCP_RECONCILE_GRACE_SECONDS": "0"})
    transport = LostAnswers(EmulatorCore(tmp_path / "sandbox.sqlite3", receipt_delay=0))
    service = SmsService(settings, transport)
    plan = await service.send_sms(["13712340001", "13712340002"], **ARGS)
    sent = await service.send_sms(["13712340001", "13712340002"], **ARGS, confirm_token=plan.confirm_token)
    assert sent.status == "unknown" and len(transport.core.messages()) == 2
    for numbers, out_id in ((["13712340002", "+8613712340001"], None), (["13712340001", "13712340002"], "x")):
        with pytest.raises(SmsError) as refused:
            await service.send_sms(numbers, **ARGS, out_id=out_id)
        assert refused.value.code == "sms_mcp.UNRECONCILED" and plan.plan_id in refused.value.message
    report = await service.query_details(plan_id=plan.plan_id)
    assert report.plan_status == "accepted"  # the emulator has the OutId: it was sent
    again = await service.send_sms(["13712340002", "13712340001"], **ARGS)  # now an explicit new send is allowed
    assert again.status == "pending_confirmation"
    assert len(transport.core.messages()) == 2


@pytest.mark.parametrize("value", ["详见bit.ly/x", "请访问evil.top了解", "详见http://a.cn"])
def test_emulator_refuses_urls_glued_to_chinese_text(value: str) -> None:
    core = EmulatorCore(None, receipt_delay=0)
    body = core.handle("SendSms", {"PhoneNumbers": "13712340003", "SignName": "速通科技",
                                   "TemplateCode": "SMS_900000003", "TemplateParam": f'{{"name":"{value}"}}'})
    assert body["Code"] == "isv.PARAM_NOT_SUPPORT_URL" and core.messages() == []
