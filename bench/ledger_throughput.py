"""``python -m bench.ledger_throughput [--smoke] [--plans N] [--ledger-url URL] [--json FILE]``: confirms by ledger.

The domain service (``SmsService``, sandbox backend with instant receipts) confirming single-message plans on
the SQLite ledger (the stdio default) and on the PostgreSQL ledger (the gateway's), measured in the same run
with the same plans: sequentially, then with 16 confirmations in flight at once. Each confirmation is the whole
lifecycle a send goes through in the ledger: read the plan by token, confirm (lease), claim the chunk (intent,
limits under their locks, the sends mirror), the API call, settle, read the outcome. A daily limit is set, so
the claims serialise on the budget as they do in a real deployment. Plans are prepared beforehand (untimed).

PostgreSQL: ``--ledger-url`` (a database the benchmark may fill), else a throwaway server started with the
machine's PostgreSQL binaries through ``tests/pg_server.py`` (as root, it runs as an unprivileged user).
``--smoke``: a few plans, so CI keeps this working; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.env import REPO_ROOT, isolate_this_process, machine, package_versions
from bench.measures import NOTIFY_PARAM, NOTIFY_TEMPLATE, SIGN, numbers
from bench.stats import median, percentile

CONCURRENCY = 16


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    """The given database URL, or a fresh database on a throwaway server (removed afterwards)."""
    if url:
        yield url
        return
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from pg_server import PostgresServer  # the tests' own server helper: initdb + pg_ctl in a temp dir

    with PostgresServer() as server:
        yield server.create_database("bench")


async def _confirms(settings: Any, plans: int, offset: int) -> dict[str, dict[str, float]]:
    from sms_mcp.core.service import SmsService
    from sms_mcp.ledger import open_ledger
    from sms_mcp.wire.sandbox import SandboxTransport

    transport = SandboxTransport.from_settings(settings)
    await transport.start()
    ledger = await open_ledger(settings)
    service = SmsService(settings, transport, ledger)
    await service.start()
    out: dict[str, dict[str, float]] = {}
    try:
        for scenario, width, first in (("sequential", 1, offset), (f"{CONCURRENCY} concurrent", CONCURRENCY,
                                                                     offset + plans)):
            phones = numbers(plans, first)
            tokens = []
            for phone in phones:  # untimed: the plans to confirm
                plan = await service.send_sms([phone], SIGN, NOTIFY_TEMPLATE, NOTIFY_PARAM)
                if plan.status != "pending_confirmation":
                    raise RuntimeError(f"prepare: {plan.status} {plan.message}")
                tokens.append(plan.confirm_token)
            samples: list[float] = []
            gate = asyncio.Semaphore(width)

            async def confirm(phone: str, token: str, gate: asyncio.Semaphore = gate,
                              samples: list[float] = samples) -> None:
                async with gate:
                    started = time.perf_counter()
                    sent = await service.send_sms([phone], SIGN, NOTIFY_TEMPLATE, NOTIFY_PARAM, confirm_token=token)
                    samples.append(time.perf_counter() - started)
                    if sent.status != "accepted":
                        raise RuntimeError(f"confirm: {sent.status} {sent.message}")

            started = time.perf_counter()
            await asyncio.gather(*(confirm(p, t) for p, t in zip(phones, tokens, strict=True)))
            wall = time.perf_counter() - started
            out[scenario] = {"p50_ms": median(samples) * 1000, "p99_ms": percentile(samples, 99) * 1000,
                             "confirms_per_s": len(samples) / wall, "plans": float(len(samples))}
    finally:
        await ledger.aclose()
        await transport.aclose()
    return out


def run(plans: int, ledger_url: str | None, tmp: Path) -> dict[str, dict[str, dict[str, float]]]:
    from sms_mcp.config import Settings

    base = {"SMS_MCP_BACKEND": "sandbox", "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0", "SMS_MCP_DAILY_LIMIT": "1000000"}
    results: dict[str, dict[str, dict[str, float]]] = {}
    sqlite = Settings.from_env({**base, "SMS_MCP_DATA_DIR": str(tmp / "sqlite")})
    results["SQLite"] = asyncio.run(_confirms(sqlite, plans, 0))
    with postgres(ledger_url) as url:
        pg = Settings.from_env({**base, "SMS_MCP_DATA_DIR": str(tmp / "pg"), "SMS_MCP_LEDGER_URL": url})
        results["PostgreSQL"] = asyncio.run(_confirms(pg, plans, 0))
    return results


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| Scenario | Ledger | p50 | p99 | confirms/s | vs SQLite |", "|---|---|---|---|---|---|"]
    for scenario in results["SQLite"]:
        base = results["SQLite"][scenario]["confirms_per_s"]
        for ledger, by_scenario in results.items():
            f = by_scenario[scenario]
            lines.append(f"| {scenario} ({int(f['plans'])}) | {ledger} | {f['p50_ms']:.1f} ms | {f['p99_ms']:.1f} ms "
                         f"| {f['confirms_per_s']:.0f} | {f['confirms_per_s'] / base:.2f}× |")
    return "\n".join(lines)


def _pg_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("psycopg", "psycopg-pool"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few plans; the figures mean nothing")
    parser.add_argument("--plans", type=int, default=300, help="confirmations per scenario and ledger")
    parser.add_argument("--ledger-url", help="a PostgreSQL database to use (default: a throwaway server)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    isolate_this_process()
    plans = 8 if args.smoke else args.plans
    with tempfile.TemporaryDirectory(prefix="sms-mcp-bench-ledger-") as tmp:
        results = run(plans, args.ledger_url, Path(tmp))
    box = machine()
    print(f"Confirm throughput by ledger ({box['CPU']}, {box['cores']} cores; "
          f"{'smoke' if args.smoke else 'full'} run)\n")
    print(table(results))
    versions = {**package_versions(), **_pg_versions()}
    print(f"\n{box['Python']}; " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
