"""The real network path, emulated: HTTPS to the emulator (``--tls``) behind ``bench/latency_proxy.py``.

Three processes: the emulator (HTTPS, signature-verifying, its test CA), the latency proxy in front of it, and this
one, the client. Measured in one run, interleaved (ours, SDK async, SDK sync, ours, ...):

* one read (``QuerySmsSignList``) after warm-up: sms-mcp's openapi backend vs Alibaba's Dysmsapi client, async
  (``*_with_options_async``: a new TLS context and connection per call) and sync (a pooled ``requests`` session);
* the 10,000-recipient confirmation, 100 ``SendBatchSms`` calls with 8 in flight: ``SmsService.send_batch_sms``
  (ledger included) vs the bare async SDK (asyncio, 8 in flight) vs the bare sync SDK in 8 threads;
* client CPU per call (``time.process_time`` of this process: the emulator and the proxy run elsewhere);
* the server's own time: the same read and the same 100 calls made by sms-mcp's transport straight to the HTTPS
  emulator, without the proxy.

Every client trusts the emulator's test CA the documented way: sms-mcp through ``SMS_MCP_CA_BUNDLE``, the SDK through
``RuntimeOptions(ca=...)``. Both verify the certificate and host name.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.env import EmulatorProcess, LatencyProxyProcess
from bench.measures import BATCH_CHUNK, NOTIFY_TEMPLATE, PAGE, SEND_CONCURRENCY, SIGN, Sizes, numbers

#: One TCP handshake + one TLS 1.3 handshake, in round trips: what a new connection costs before its request.
HANDSHAKE_RTTS = 2


def floor_seconds(calls: int, rtt: float) -> float:
    """The confirmation's floor: ⌈calls / in flight⌉ round trips, plus one handshake per pooled connection (the
    connections are opened side by side, so their handshakes overlap in time)."""
    return math.ceil(calls / SEND_CONCURRENCY) * rtt + HANDSHAKE_RTTS * rtt


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = await call()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _transport(endpoint_url: str, ca_file: Path, data_dir: Path) -> tuple[Any, Any]:
    from alibabacloud_credentials.client import Client as CredentialClient
    from alibabacloud_credentials.models import Config as CredentialConfig

    from sms_mcp.config import Settings
    from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
    from sms_mcp.wire.openapi import OpenApiTransport

    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "openapi",
                                  "SMS_MCP_ENDPOINT": endpoint_url, "SMS_MCP_CA_BUNDLE": str(ca_file)})
    credential = CredentialClient(CredentialConfig(type="access_key", access_key_id=DEMO_ACCESS_KEY_ID,
                                                   access_key_secret=DEMO_ACCESS_KEY_SECRET))
    return settings, OpenApiTransport(settings, credential=credential)


def _sdk(endpoint: str) -> Any:
    """Alibaba's Dysmsapi client as its documentation shows it, over HTTPS."""
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi.models import Config

    from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET

    return Client(Config(access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=DEMO_ACCESS_KEY_SECRET,
                         endpoint=endpoint, protocol="HTTPS"))


def _check(name: str, body: dict[str, Any]) -> None:
    if body.get("Code") != "OK":
        raise RuntimeError(f"{name}: {str(body)[:300]}")


async def _network(sizes: Sizes, tmp: Path, emu: EmulatorProcess, proxy: LatencyProxyProcess) -> dict[str, Any]:
    from alibabacloud_dysmsapi20170525 import models
    from darabonba.runtime import RuntimeOptions

    from sms_mcp.core.service import SmsService

    assert emu.ca_file is not None
    rtt = 2 * sizes.net_one_way_ms / 1000
    settings, ours = _transport(f"https://{proxy.endpoint}", emu.ca_file, tmp / "ours-data")
    _, direct = _transport(emu.url, emu.ca_file, tmp / "direct-data")
    sdk = _sdk(proxy.endpoint)
    runtime = RuntimeOptions(ca=str(emu.ca_file))
    await ours.start()
    await direct.start()

    read_request = models.QuerySmsSignListRequest(page_index=1, page_size=50)

    async def ours_read() -> dict[str, Any]:
        return await ours.call("QuerySmsSignList", dict(PAGE))

    async def direct_read() -> dict[str, Any]:
        return await direct.call("QuerySmsSignList", dict(PAGE))

    async def sdk_async_read() -> dict[str, Any]:
        response = await sdk.query_sms_sign_list_with_options_async(read_request, runtime)
        return response.body.to_map()

    async def sdk_sync_read() -> dict[str, Any]:
        # Called on the loop's thread on purpose: nothing else runs meanwhile, and no thread hop is measured.
        return sdk.query_sms_sign_list_with_options(read_request, runtime).body.to_map()

    clients = {"ours": ours_read, "sdk_async": sdk_async_read, "sdk_sync": sdk_sync_read}
    for _ in range(3):  # warm-up: imports, credentials, and the pooled clients' first connection
        for call in (*clients.values(), direct_read):
            _check("warm-up read", await call())
    read: dict[str, list[float]] = {name: [] for name in (*clients, "direct")}
    read_cpu: dict[str, list[float]] = {name: [] for name in (*clients, "direct")}
    order = list(clients.items())
    for i in range(sizes.net_reads):
        for name, call in order[i % 3:] + order[:i % 3]:
            wall, cpu, body = await _timed(call)
            _check(f"{name} read", body)
            read[name].append(wall)
            read_cpu[name].append(cpu)
        wall, cpu, body = await _timed(direct_read)
        _check("direct read", body)
        read["direct"].append(wall)
        read_cpu["direct"].append(cpu)

    # -- the 10,000-recipient confirmation: 100 SendBatchSms calls, 8 in flight
    count = sizes.batch_recipients
    chunks = -(-count // BATCH_CHUNK)
    recipients = [{"phone_number": n, "sign_name": SIGN,
                   "template_param": {"name": f"客户{i}", "order_no": f"SO{i:06d}", "date": "11月27日"}}
                  for i, n in enumerate(numbers(count, offset=50_000_000))]
    parts = [recipients[i:i + BATCH_CHUNK] for i in range(0, count, BATCH_CHUNK)]

    def batch_request(part: list[dict[str, Any]]) -> Any:
        return models.SendBatchSmsRequest(
            phone_number_json=json.dumps([r["phone_number"] for r in part]),
            sign_name_json=json.dumps([r["sign_name"] for r in part], ensure_ascii=False),
            template_code=NOTIFY_TEMPLATE,
            template_param_json=json.dumps([r["template_param"] for r in part], ensure_ascii=False),
        )

    def wire_params(part: list[dict[str, Any]]) -> dict[str, str]:
        return {"PhoneNumberJson": json.dumps([r["phone_number"] for r in part]),
                "SignNameJson": json.dumps([r["sign_name"] for r in part], ensure_ascii=False),
                "TemplateCode": NOTIFY_TEMPLATE,
                "TemplateParamJson": json.dumps([r["template_param"] for r in part], ensure_ascii=False)}

    async def sdk_async_batch() -> None:
        limiter = asyncio.Semaphore(SEND_CONCURRENCY)

        async def one(part: list[dict[str, Any]]) -> None:
            async with limiter:
                response = await sdk.send_batch_sms_with_options_async(batch_request(part), runtime)
            _check("SDK async SendBatchSms", response.body.to_map())

        await asyncio.gather(*(one(part) for part in parts))

    async def sdk_sync_batch() -> None:
        def one(part: list[dict[str, Any]]) -> None:
            _check("SDK sync SendBatchSms", sdk.send_batch_sms_with_options(batch_request(part), runtime).body.to_map())

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=SEND_CONCURRENCY) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, one, part) for part in parts))

    def transport_batch(transport: Any) -> Callable[[], Awaitable[None]]:
        """The same 100 calls made by sms-mcp's transport alone (no ledger, no plan), 8 in flight."""

        async def run() -> None:
            limiter = asyncio.Semaphore(SEND_CONCURRENCY)

            async def one(part: list[dict[str, Any]]) -> None:
                async with limiter:
                    _check("transport SendBatchSms", await transport.call("SendBatchSms", wire_params(part)))

            await asyncio.gather(*(one(part) for part in parts))

        return run

    service = SmsService(settings, ours)
    batch: dict[str, list[float]] = {"ours": [], "transport": [], "sdk_async": [], "sdk_sync": [], "direct": []}
    batch_cpu: dict[str, list[float]] = {name: [] for name in batch}
    handshakes: list[int] = []
    try:
        for rep in range(sizes.net_batch_reps):
            plan = await service.send_batch_sms(recipients, NOTIFY_TEMPLATE, out_id=f"net-{rep}")
            if plan.status != "pending_confirmation" or plan.plan.chunk_count != chunks:
                raise RuntimeError(f"batch prepare: {plan.status} {plan.message}")
            # A cold pool, as after any pause longer than the keep-alive: the figure includes every handshake.
            assert ours.pool is not None
            await ours.pool.aclose()
            opened = ours.pool.connections_opened

            async def confirm(rep: int = rep, token: str = plan.confirm_token) -> Any:
                return await service.send_batch_sms(recipients, NOTIFY_TEMPLATE, out_id=f"net-{rep}",
                                                    confirm_token=token)

            wall, cpu, sent = await _timed(confirm)
            if sent.status != "accepted" or len(sent.chunks) != chunks:
                raise RuntimeError(f"batch confirm: {sent.status} {sent.message}")
            batch["ours"].append(wall)
            batch_cpu["ours"].append(cpu)
            handshakes.append(ours.pool.connections_opened - opened)
            for name, run in (("transport", transport_batch(ours)), ("sdk_async", sdk_async_batch),
                              ("sdk_sync", sdk_sync_batch), ("direct", transport_batch(direct))):
                wall, cpu, _ = await _timed(run)
                batch[name].append(wall)
                batch_cpu[name].append(cpu)
    finally:
        service.ledger.close()
        await ours.aclose()
        await direct.aclose()
    return {"rtt": rtt, "read": read, "read_cpu": read_cpu, "batch": batch, "batch_cpu": batch_cpu,
            "batch_calls": chunks, "batch_recipients": count, "handshakes": handshakes,
            "floor": floor_seconds(chunks, rtt)}


def measure_network(sizes: Sizes, tmp: Path) -> dict[str, Any]:
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    with EmulatorProcess(tmp / "home", tls=True) as emu, \
            LatencyProxyProcess(emu.endpoint, sizes.net_one_way_ms) as proxy:
        return asyncio.run(_network(sizes, tmp, emu, proxy))
