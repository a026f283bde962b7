"""The measurements. Each returns plain numbers (seconds, kB, counts); ``bench.run`` turns them into the table.

Every comparison is made in the same run, interleaved (ours, baseline, ours, baseline ...), so slow drift of the
machine (other load, CPU frequency) hits both sides alike.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.env import REPO_ROOT, EmulatorProcess, bare_argv, child_env, sms_mcp_argv
from bench.stdio import StdioServer

NOTIFY_TEMPLATE = "SMS_900000002"  # notification: no per-minute flow control on the emulator's side
SIGN = "速通科技"
NOTIFY_PARAM = {"name": "王女士", "order_no": "20261125001", "date": "11月27日"}
PAGE = {"PageIndex": "1", "PageSize": "50"}
BATCH_CHUNK = 100  # recipients per SendBatchSms, as sms-mcp splits them
SEND_CONCURRENCY = 8  # requests in flight for the bare SDK baseline, as sms-mcp's SEND_CONCURRENCY


@dataclass(frozen=True)
class Sizes:
    starts: int  # start-ups of each server (items 1 and 5)
    idle_seconds: float  # pause between tools/list and the RSS reading
    read_calls: int  # list_signs calls over stdio (item 2)
    openapi_calls: int  # calls of each client against the emulator (item 3)
    prepare_numbers: int  # numbers in the send_sms prepare (item 4)
    prepare_reps: int
    batch_recipients: int  # recipients in the send_batch_sms confirm (item 4)
    batch_reps: int
    cli_calls: int  # CLI backend calls (item 6)
    net_one_way_ms: float  # the latency proxy's delay each way (item 7: RTT = 2 x this)
    net_reads: int  # reads of each client through the proxy (item 7)
    net_batch_reps: int  # confirmations through the proxy (item 7)


FULL = Sizes(starts=20, idle_seconds=0.3, read_calls=1000, openapi_calls=300, prepare_numbers=1000,
             prepare_reps=20, batch_recipients=10_000, batch_reps=3, cli_calls=30, net_one_way_ms=20.0,
             net_reads=30, net_batch_reps=3)
SMOKE = Sizes(starts=2, idle_seconds=0.1, read_calls=20, openapi_calls=10, prepare_numbers=100, prepare_reps=3,
              batch_recipients=200, batch_reps=1, cli_calls=3, net_one_way_ms=2.0, net_reads=3, net_batch_reps=1)


def numbers(count: int, offset: int = 0) -> list[str]:
    """Distinct mainland mobile numbers, none of them a sandbox number with a fixed outcome."""
    return [f"137{i:08d}" for i in range(offset, offset + count)]


def server_env(tmp: Path) -> dict[str, str]:
    """One environment for both servers: sandbox, a data dir that persists across the runs, no credentials."""
    return child_env(tmp / "home", SMS_MCP_BACKEND="sandbox", SMS_MCP_DATA_DIR=str(tmp / "data"),
                     SMS_MCP_SANDBOX_RECEIPT_DELAY="0")


# ------------------------------------------------------------------------------------------- 1 + 5: start, RSS
def measure_start(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """Process spawn -> tools/list answered, and VmRSS once idle, for sms-mcp serve and the bare MCPServer."""
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = server_env(tmp)
    servers = {"sms": (sms_mcp_argv(), 7), "bare": (bare_argv(), 1)}
    # Warm-up (untimed): fills the OS page cache and creates the data dir (a host restarts an existing one).
    for argv, _ in servers.values():
        with StdioServer(argv, env) as warm:
            warm.start()
    times: dict[str, list[float]] = {"sms": [], "bare": []}
    rss: dict[str, list[int]] = {"sms": [], "bare": []}
    hwm: dict[str, list[int]] = {"sms": [], "bare": []}
    for i in range(sizes.starts):
        order = ["sms", "bare"] if i % 2 == 0 else ["bare", "sms"]
        for name in order:
            argv, tool_count = servers[name]
            with StdioServer(argv, env) as server:
                times[name].append(server.start())
                if len(server.tools) != tool_count:
                    raise RuntimeError(f"{name}: {len(server.tools)} tools, expected {tool_count}")
                time.sleep(sizes.idle_seconds)
                memory = server.memory_kb()
                rss[name].append(memory["VmRSS"])
                hwm[name].append(memory["VmHWM"])
                if server.close() != 0:
                    raise RuntimeError(f"{name} did not exit cleanly on stdin EOF")
    return {"times": times, "rss_kb": rss, "hwm_kb": hwm}


# ------------------------------------------------------------------------------------------- 2: a read over stdio
def measure_read(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """Round trips of tools/call list_signs on the sandbox; the bare server's echo tool is the floor."""
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = server_env(tmp)
    out: dict[str, list[float]] = {}
    for name, argv, tool, args in (("sms", sms_mcp_argv(), "list_signs", {}),
                                   ("bare", bare_argv(), "echo", {"text": "x"})):
        with StdioServer(argv, env) as server:
            server.start()
            for _ in range(min(20, sizes.read_calls)):
                server.call_tool(tool, args)
            samples = []
            for _ in range(sizes.read_calls):
                started = time.perf_counter()
                result = server.call_tool(tool, args)
                samples.append(time.perf_counter() - started)
            if name == "sms":
                signs = (result.get("structuredContent") or {}).get("signs") or []
                if not signs or result["structuredContent"].get("backend") != "sandbox":
                    raise RuntimeError(f"list_signs returned no sandbox signatures: {str(result)[:300]}")
            out[name] = samples
    return out


# ------------------------------------------------------------------------------------------- 3, 4b, 6: emulator
def _openapi(emu: EmulatorProcess, data_dir: Path) -> tuple[Any, Any]:
    from alibabacloud_credentials.client import Client as CredentialClient
    from alibabacloud_credentials.models import Config as CredentialConfig

    from sms_mcp.config import Settings
    from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
    from sms_mcp.wire.openapi import OpenApiTransport

    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "openapi",
                                  "SMS_MCP_ENDPOINT": emu.url})
    credential = CredentialClient(CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID,
                                                   access_key_secret=DEMO_ACCESS_KEY_SECRET))
    return settings, OpenApiTransport(settings, credential=credential)


def _sdk(emu: EmulatorProcess) -> Any:
    """Alibaba's own Dysmsapi client, configured as its documentation shows; nothing of sms-mcp in the path."""
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi.models import Config

    from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET

    return Client(Config(access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=DEMO_ACCESS_KEY_SECRET,
                         endpoint=emu.endpoint, protocol="HTTP"))


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


async def _emulator_measures(sizes: Sizes, tmp: Path, emu: EmulatorProcess) -> dict[str, Any]:
    from alibabacloud_dysmsapi20170525 import models
    from darabonba.runtime import RuntimeOptions

    from sms_mcp.core.service import SmsService

    settings, transport = _openapi(emu, tmp / "openapi-data")
    sdk = _sdk(emu)
    runtime = RuntimeOptions()
    await transport.start()

    async def ours_read() -> dict[str, Any]:
        return await transport.call("QuerySmsSignList", dict(PAGE))

    async def sdk_read() -> dict[str, Any]:
        request = models.QuerySmsSignListRequest(page_index=1, page_size=50)
        response = await sdk.query_sms_sign_list_with_options_async(request, runtime)
        return response.body.to_map()

    # -- 3: one read, ours vs the bare SDK
    for _ in range(5):
        await ours_read()
        await sdk_read()
    read: dict[str, list[float]] = {"ours": [], "sdk": []}
    for i in range(sizes.openapi_calls):
        pair = [("ours", ours_read), ("sdk", sdk_read)]
        for name, call in pair if i % 2 == 0 else reversed(pair):
            elapsed, body = await _timed(call)
            if body.get("Code") != "OK" or not body.get("SmsSignList"):
                raise RuntimeError(f"{name} QuerySmsSignList: {str(body)[:300]}")
            read[name].append(elapsed)

    # -- 4b: confirm of a personalised batch, ours vs the same API calls made by the bare SDK
    service = SmsService(settings, transport)
    count = sizes.batch_recipients
    chunks = -(-count // BATCH_CHUNK)
    recipients = [{"phone_number": n, "sign_name": SIGN,
                   "template_param": {"name": f"客户{i}", "order_no": f"SO{i:06d}", "date": "11月27日"}}
                  for i, n in enumerate(numbers(count))]

    async def sdk_batch() -> int:
        limiter = asyncio.Semaphore(SEND_CONCURRENCY)

        async def one(part: list[dict[str, Any]]) -> None:
            request = models.SendBatchSmsRequest(
                phone_number_json=json.dumps([r["phone_number"] for r in part]),
                sign_name_json=json.dumps([r["sign_name"] for r in part], ensure_ascii=False),
                template_code=NOTIFY_TEMPLATE,
                template_param_json=json.dumps([r["template_param"] for r in part], ensure_ascii=False),
            )
            async with limiter:
                response = await sdk.send_batch_sms_with_options_async(request, runtime)
            if response.body.code != "OK":
                raise RuntimeError(f"SDK SendBatchSms: {response.body.to_map()}")

        await asyncio.gather(*(one(recipients[i:i + BATCH_CHUNK]) for i in range(0, count, BATCH_CHUNK)))
        return chunks

    phones = numbers(sizes.prepare_numbers)

    async def prepare_on_ledger() -> float:
        """Median prepare of the send_sms plan on the ledger as it is now (a warm-up, then 5)."""
        samples = []
        for _ in range(6):
            elapsed, plan = await _timed(lambda: service.send_sms(phones, SIGN, NOTIFY_TEMPLATE, NOTIFY_PARAM))
            if plan.status != "pending_confirmation":
                raise RuntimeError(f"prepare: {plan.status} {plan.message}")
            samples.append(elapsed)
        return sorted(samples[1:])[2]

    batch: dict[str, list[float]] = {"prepare": [], "confirm": [], "sdk": []}
    busy: dict[str, float] = {}
    try:
        busy["empty"] = await prepare_on_ledger()
        for rep in range(sizes.batch_reps):
            # A distinct out_id per repetition: each repetition is its own plan, as a user would make it.
            elapsed, plan = await _timed(lambda rep=rep: service.send_batch_sms(recipients, NOTIFY_TEMPLATE,
                                                                                 out_id=f"bench-{rep}"))
            if plan.status != "pending_confirmation" or plan.plan.chunk_count != chunks:
                raise RuntimeError(f"batch prepare: {plan.status} {plan.message}")
            batch["prepare"].append(elapsed)
            elapsed, sent = await _timed(lambda rep=rep, token=plan.confirm_token: service.send_batch_sms(
                recipients, NOTIFY_TEMPLATE, out_id=f"bench-{rep}", confirm_token=token))
            if sent.status != "accepted" or len(sent.chunks) != chunks:
                raise RuntimeError(f"batch confirm: {sent.status} {sent.message}")
            batch["confirm"].append(elapsed)
            elapsed, _ = await _timed(sdk_batch)
            batch["sdk"].append(elapsed)
        # The same prepare once the ledger holds the day's sends (the local flow-control pre-check reads them).
        busy["sends"] = await service.ledger.sends_since(time.time() - 86_400)
        busy["busy"] = await prepare_on_ledger()
    finally:
        service.ledger.close()

    # -- 6: the CLI backend (a Python stand-in for `aliyun`) per call
    cli = await _cli_calls(sizes, tmp)
    await transport.aclose()
    return {"read": read, "batch": batch, "batch_calls": chunks, "batch_recipients": count, "cli": cli,
            "busy": busy}


async def _cli_calls(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    try:
        import aliyun_standin  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO_ROOT / "tests"))
    from sms_mcp.wire.aliyun_cli import AliyunCliTransport

    standin = aliyun_standin.setup(tmp / "cli")
    env = {k: v for k, v in standin.env.items() if k != "STANDIN_LOG"}  # the log is for tests, not timing
    transport = AliyunCliTransport(aliyun_bin=str(standin.bin), env=env, read_timeout=3.0)
    start_seconds, _ = await _timed(transport.start)
    try:
        await transport.call("QuerySmsSignList", dict(PAGE))  # warm-up: creates and seeds the stand-in's DB
        samples = []
        for _ in range(sizes.cli_calls):
            elapsed, body = await _timed(lambda: transport.call("QuerySmsSignList", dict(PAGE)))
            if body.get("Code") != "OK":
                raise RuntimeError(f"cli QuerySmsSignList: {str(body)[:300]}")
            samples.append(elapsed)
    finally:
        await transport.aclose()
    return {"calls": samples, "start": start_seconds}


def measure_emulator(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    with EmulatorProcess(tmp / "home") as emu:
        return asyncio.run(_emulator_measures(sizes, tmp, emu))


# ------------------------------------------------------------------------------------------- 4a: prepare
async def _prepare(sizes: Sizes, tmp: Path) -> dict[str, list[float]]:
    from mcp import Client

    from sms_mcp.config import Settings
    from sms_mcp.core.service import SmsService
    from sms_mcp.server import build_server
    from sms_mcp.wire.sandbox import SandboxTransport

    def sandbox_settings(name: str) -> Settings:
        return Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp / name), "SMS_MCP_BACKEND": "sandbox",
                                  "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0"})

    phones = numbers(sizes.prepare_numbers)
    args = {"phone_numbers": phones, "sign_name": SIGN, "template_code": NOTIFY_TEMPLATE,
            "template_param": NOTIFY_PARAM}
    out: dict[str, list[float]] = {"service": [], "mcp": []}

    settings = sandbox_settings("prepare-service")
    transport = SandboxTransport.from_settings(settings)
    service = SmsService(settings, transport)
    try:
        for rep in range(2 + sizes.prepare_reps):
            elapsed, plan = await _timed(lambda: service.send_sms(**args))
            if plan.status != "pending_confirmation" or plan.plan.recipient_count != len(phones):
                raise RuntimeError(f"prepare: {plan.status} {plan.message}")
            if rep >= 2:  # two warm-ups
                out["service"].append(elapsed)
    finally:
        service.ledger.close()
        await transport.aclose()

    settings = sandbox_settings("prepare-mcp")
    async with Client(build_server(settings, SandboxTransport.from_settings(settings))) as client:
        for rep in range(2 + sizes.prepare_reps):
            elapsed, result = await _timed(lambda: client.call_tool("send_sms", args))
            content = result.structured_content or {}
            if result.is_error or content.get("status") != "pending_confirmation":
                raise RuntimeError(f"prepare over MCP: {result.content}")
            if rep >= 2:
                out["mcp"].append(elapsed)
    return out


def measure_prepare(sizes: Sizes, tmp: Path) -> dict[str, list[float]]:
    return asyncio.run(_prepare(sizes, tmp))
