"""Large sends: one plan and one confirmation, split into API-sized chunks, each with its own OutId and outcome,
progress per chunk, partial results when some chunks fail, and replays that never resend a chunk."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from mcp import Client
from mcp_harness import call_ok as call
from mcp_harness import call_refused as error
from mcp_harness import reconcile_at_once

from sms_mcp.config import Settings
from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer
from sms_mcp.server import build_server
from sms_mcp.wire.openapi import OpenApiTransport
from sms_mcp.wire.sandbox import SandboxTransport

ERAS = pytest.mark.parametrize("era", ["auto", "legacy"])
PARAMS = {"name": "王女士", "order_no": "C3001", "date": "周二"}


def numbers(count: int, start: int = 0) -> list[str]:
    """Distinct valid mainland numbers (137…, away from the sandbox's fixed-outcome 139000000xx)."""
    return [f"137{i:08d}" for i in range(start, start + count)]


def bulk(nums: list[str], **extra: Any) -> dict[str, Any]:
    return {"phone_numbers": nums, "sign_name": "速通科技", "template_code": "SMS_900000002",
            "template_param": PARAMS, **extra}


@asynccontextmanager
async def sandbox(data_dir: Path, era: str = "auto", **env: str) -> AsyncIterator[tuple[Client, SandboxTransport]]:
    settings = reconcile_at_once(Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "sandbox",
                                                    "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0", **env}))
    transport = SandboxTransport.from_settings(settings)
    async with Client(build_server(settings, transport), mode=era) as client:  # type: ignore[arg-type]
        yield client, transport


class Progress:
    def __init__(self) -> None:
        self.reports: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.reports.append((progress, total, message))


@ERAS
async def test_2500_numbers_are_three_chunks_with_progress(tmp_path: Path, era: str) -> None:
    nums = numbers(2500)
    args = bulk(nums)
    async with sandbox(tmp_path, era) as (client, transport):
        plan = await call(client, "send_sms", args)
        p = plan["plan"]
        assert p["recipient_count"] == 2500 and p["chunk_count"] == 3
        assert len(p["previews"]) == 20  # a preview, not 2,500 texts
        assert any("3 API requests" in w for w in p["warnings"])
        assert transport.core.messages() == []

        progress = Progress()
        sent = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]},
                          progress_callback=progress)
        assert sent["status"] == "accepted" and sent["replayed"] is False
        base = plan["plan_id"]
        assert [(c["chunk_no"], c["recipient_count"], c["state"], c["out_id"]) for c in sent["chunks"]] == [
            (1, 1000, "accepted", f"{base}-1"), (2, 1000, "accepted", f"{base}-2"), (3, 500, "accepted", f"{base}-3")]
        assert len({c["biz_id"] for c in sent["chunks"]}) == 3

        # One notification per chunk, increasing, out of 3.
        assert [(r[0], r[1]) for r in progress.reports] == [(1, 3), (2, 3), (3, 3)]
        assert all(r[2] and "chunk" in r[2] for r in progress.reports)

        messages = transport.core.messages()
        assert sorted(m["phone_number"] for m in messages) == sorted(nums)  # each number exactly once
        assert Counter(m["out_id"] for m in messages) == {f"{base}-1": 1000, f"{base}-2": 1000, f"{base}-3": 500}

        replay_progress = Progress()
        replay = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]},
                            progress_callback=replay_progress)
        assert replay["replayed"] is True and replay["status"] == "accepted"
        assert replay_progress.reports == []  # nothing was sent, so no progress
        assert len(transport.core.messages()) == 2500


async def test_exactly_1000_numbers_are_one_request_with_the_plain_out_id(tmp_path: Path) -> None:
    async with sandbox(tmp_path) as (client, transport):
        plan = await call(client, "send_sms", bulk(numbers(1000), out_id="campaign-7"))
        assert plan["plan"]["chunk_count"] == 1 and plan["plan"]["out_id"] == "campaign-7"
        sent = await call(client, "send_sms", bulk(numbers(1000), out_id="campaign-7",
                                                   confirm_token=plan["confirm_token"]))
        assert [c["out_id"] for c in sent["chunks"]] == ["campaign-7"]
        assert {m["out_id"] for m in transport.core.messages()} == {"campaign-7"}


async def test_users_out_id_gets_a_suffix_per_chunk(tmp_path: Path) -> None:
    async with sandbox(tmp_path) as (client, transport):
        args = bulk(numbers(1001), out_id="campaign-8")
        plan = await call(client, "send_sms", args)
        sent = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert [c["out_id"] for c in sent["chunks"]] == ["campaign-8-1", "campaign-8-2"]
        assert Counter(m["out_id"] for m in transport.core.messages()) == {"campaign-8-1": 1000, "campaign-8-2": 1}


@ERAS
async def test_batch_of_250_recipients_is_three_chunks(tmp_path: Path, era: str) -> None:
    recipients = [{"phone_number": n, "sign_name": "速通科技",
                   "template_param": {"name": f"客户{i}", "order_no": f"N{i}", "date": "周二"}}
                  for i, n in enumerate(numbers(250, start=5000))]
    args = {"recipients": recipients, "template_code": "SMS_900000002"}
    async with sandbox(tmp_path, era) as (client, transport):
        plan = await call(client, "send_batch_sms", args)
        assert plan["plan"]["chunk_count"] == 3 and plan["plan"]["action"] == "SendBatchSms"
        progress = Progress()
        sent = await call(client, "send_batch_sms", {**args, "confirm_token": plan["confirm_token"]},
                          progress_callback=progress)
        assert [c["recipient_count"] for c in sent["chunks"]] == [100, 100, 50]
        assert [r[0] for r in progress.reports] == [1, 2, 3]
        messages = transport.core.messages()
        assert len(messages) == 250
        by_number = {m["phone_number"]: m["content"] for m in messages}
        assert "客户249" in by_number["13700005249"] and "客户0" in by_number["13700005000"]


async def test_recipient_cap_from_configuration(tmp_path: Path) -> None:
    async with sandbox(tmp_path, SMS_MCP_MAX_RECIPIENTS="1500") as (client, transport):
        # The schema carries the cap: more items are a validation error before the tool runs.
        assert "validation error" in await error(client, "send_sms", bulk(numbers(1501)))
        # The schema counts the items as given (duplicates included); 1,500 distinct numbers pass.
        assert "validation error" in await error(client, "send_sms", bulk(numbers(1500) + numbers(1)))
        plan = await call(client, "send_sms", bulk(numbers(1500)))
        assert plan["plan"]["recipient_count"] == 1500 and plan["plan"]["chunk_count"] == 2
        batch = [{"phone_number": n, "sign_name": "速通科技", "template_param": PARAMS} for n in numbers(1501)]
        assert "validation error" in await error(client, "send_batch_sms", {"recipients": batch,
                                                                             "template_code": "SMS_900000002"})
        assert transport.core.messages() == []


async def test_default_cap_is_10000(tmp_path: Path) -> None:
    async with sandbox(tmp_path) as (client, transport):
        assert "validation error" in await error(client, "send_sms", bulk(numbers(10_001)))
        plan = await call(client, "send_sms", bulk(numbers(10_000)))
        assert plan["plan"]["chunk_count"] == 10
        assert transport.core.messages() == []


# ------------------------------------------------------------------------------------------ partial results


@asynccontextmanager
async def over_http(emu: EmulatorServer, data_dir: Path) -> AsyncIterator[Client]:
    settings = reconcile_at_once(Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "openapi",
                                                    "SMS_MCP_ENDPOINT": emu.url}))
    credential = CredentialClient(CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID,
                                                   access_key_secret=DEMO_ACCESS_KEY_SECRET))
    async with Client(build_server(settings, OpenApiTransport(settings, credential=credential))) as client:
        yield client


def recorded(emu: EmulatorServer, nums: list[str]) -> int:
    wanted = set(nums)
    return sum(m["phone_number"] in wanted for m in emu.core.messages())


async def test_one_rejected_chunk_is_a_partial_result_and_is_never_resent(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    nums = numbers(3000, start=100_000)
    args = bulk(nums)
    emu.faults.clear()
    async with over_http(emu, tmp_path) as client:
        plan = await call(client, "send_sms", args)
        emu.faults.add("throttle", action="SendSms", count=1)  # whichever chunk comes first is refused
        progress = Progress()
        result = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]},
                            progress_callback=progress)
        assert result["status"] == "partial"
        states = Counter(c["state"] for c in result["chunks"])
        assert states == {"accepted": 2, "rejected": 1}
        bad = next(c for c in result["chunks"] if c["state"] == "rejected")
        assert bad["error_code"] == "Throttling.User" and result["error_code"] == "Throttling.User"
        assert "2000 recipient(s) accepted, 1000 not sent" in result["message"]
        assert "new plan" in result["next_step"]
        assert [r[0] for r in progress.reports] == [1, 2, 3]
        assert recorded(emu, nums) == 2000

        replay = await call(client, "send_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay["status"] == "partial" and replay["replayed"] is True
        assert recorded(emu, nums) == 2000  # the rejected chunk is not retried either


async def test_one_unknown_batch_chunk_makes_the_plan_unknown_until_reconciled(
    emu: EmulatorServer, tmp_path: Path
) -> None:
    nums = numbers(250, start=200_000)
    recipients = [{"phone_number": n, "sign_name": "速通科技", "template_param": PARAMS} for n in nums]
    args = {"recipients": recipients, "template_code": "SMS_900000002"}
    emu.faults.clear()
    async with over_http(emu, tmp_path) as client:
        plan = await call(client, "send_batch_sms", args)
        emu.faults.add("error_503", action="SendBatchSms", count=1)
        result = await call(client, "send_batch_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert result["status"] == "unknown"  # any unknown chunk makes the whole plan unknown
        assert Counter(c["state"] for c in result["chunks"]) == {"accepted": 2, "unknown": 1}
        unknown_size = next(c["recipient_count"] for c in result["chunks"] if c["state"] == "unknown")
        assert recorded(emu, nums) == 250 - unknown_size
        assert "UNRECONCILED" in await error(client, "send_batch_sms", args)
        replay = await call(client, "send_batch_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert replay["status"] == "unknown" and replay["replayed"] is True
        assert recorded(emu, nums) == 250 - unknown_size
        report = await call(client, "query_details", {"plan_id": plan["plan_id"]})
        assert [r["after"] for r in report["reconciled"]] == ["not_sent"]
        assert report["plan_status"] == "partial"
        assert report["summary"]["delivered"] == 250 - unknown_size
        final = await call(client, "send_batch_sms", {**args, "confirm_token": plan["confirm_token"]})
        assert final["status"] == "partial"
        assert Counter(c["state"] for c in final["chunks"]) == {"accepted": 2, "not_sent": 1}
    assert recorded(emu, nums) == 250 - unknown_size
