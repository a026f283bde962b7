"""Where the slow paths spend their time and memory: ``python -m bench.profile [--smoke]`` (also ``bench.run
--profile``, which puts this report into BENCHMARKS.md).

* start-up (item 1): the modules ``sms-mcp serve`` imports that the bare MCPServer does not (``-X importtime``
  of both real servers through the handshake), and the start-up phases timed in a fresh interpreter;
* idle memory (item 5): RSS after each of the same phases;
* the 1,000-number prepare and the 10,000-recipient confirm (item 4): cProfile, top functions;
* the prepare again on a ledger that already holds a busy day's sends (the local flow-control check reads them).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import logging
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import measures
from bench.env import REPO_ROOT, EmulatorProcess, bare_argv, isolate_this_process, sms_mcp_argv
from bench.stdio import StdioServer

# ------------------------------------------------------------------------------------------------ start-up imports
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _imports(argv: list[str], env: dict[str, str]) -> dict[str, int]:
    """module -> self import time (µs) of one real start through the handshake."""
    server = StdioServer([argv[0], "-X", "importtime", *argv[1:]], env)
    try:
        server.start()
        text = server.stderr_text()
    finally:
        server.close()
    return {m.group(4): int(m.group(1)) for m in map(_IMPORT_LINE.match, text.splitlines()) if m}


def import_report(tmp: Path, runs: int = 3) -> str:
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = measures.server_env(tmp)
    _imports(sms_mcp_argv(), env)  # warm-up: page cache, data dir, bytecode caches
    samples: dict[str, list[dict[str, int]]] = {"sms": [], "bare": []}
    for _ in range(runs):
        samples["sms"].append(_imports(sms_mcp_argv(), env))
        samples["bare"].append(_imports(bare_argv(), env))

    def med(name: str) -> dict[str, int]:
        modules = set().union(*samples[name])
        return {m: sorted(s.get(m, 0) for s in samples[name])[len(samples[name]) // 2] for m in modules}

    sms, bare = med("sms"), med("bare")
    extra = {m: us for m, us in sms.items() if m not in bare}
    by_package = Counter()
    for module, us in extra.items():
        by_package[module.split(".")[0]] += us
    lines = [
        f"Self import time, median of {runs} real starts under `-X importtime` (which inflates every figure "
        f"alike): sms-mcp {sum(sms.values()) / 1000:.0f} ms, bare MCPServer {sum(bare.values()) / 1000:.0f} ms. "
        f"The {len(extra)} modules only sms-mcp imports take {sum(extra.values()) / 1000:.1f} ms:",
        "",
        "| top-level package | self import time |",
        "|---|---|",
        *(f"| `{pkg}` | {us / 1000:.1f} ms |" for pkg, us in by_package.most_common(8)),
        "",
        "| module (only in sms-mcp) | self import time |",
        "|---|---|",
        *(f"| `{m}` | {us / 1000:.1f} ms |" for m, us in sorted(extra.items(), key=lambda kv: -kv[1])[:12]),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ phases
_PHASES = r"""
import json, sys, time, asyncio
t = [time.perf_counter()]
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
marks = [("interpreter", rss())]
def mark(name):
    t.append(time.perf_counter()); marks.append((name, rss()))
import mcp.server
mark("import the MCP SDK (mcp.server)")
if sys.argv[1] == "sms":
    import sms_mcp.cli, sms_mcp.server, sms_mcp.wire.factory
    mark("import sms-mcp (server, domain, phonenumbers, sqlite3)")
    from sms_mcp.config import Settings
    from sms_mcp.wire.factory import make_transport, resolve_backend
    settings = Settings.from_env()
    transport = make_transport(settings, resolve_backend(settings)[0])
    mark("open the sandbox (emulator SQLite)")
    server = sms_mcp.server.build_server(settings, transport, manage_transport=False)
    mark("build_server (7 tools, schemas)")
    from sms_mcp.core.service import SmsService
    service = SmsService(settings, transport)
    mark("SmsService (ledger SQLite, audit log)")
else:
    from mcp.server import MCPServer
    server = MCPServer("bench-bare")
    @server.tool()
    def echo(text: str = "") -> str:
        return text
    mark("MCPServer + 1 tool")
tools = asyncio.run(server.list_tools())
payload = json.dumps({"tools": [x.model_dump(mode="json", by_alias=True, exclude_none=True) for x in tools]})
mark("tools/list result (%d bytes)" % len(payload))
print(json.dumps({"marks": marks, "t": t}))
"""


def _phases(kind: str, env: dict[str, str]) -> list[tuple[str, float, int]]:
    out = subprocess.run([sys.executable, "-c", _PHASES, kind], env=env, capture_output=True, text=True,
                         timeout=60, cwd=REPO_ROOT, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    t, marks = data["t"], data["marks"]
    return [(name, (t[i] - t[i - 1]) * 1000 if i else 0.0, kb) for i, (name, kb) in enumerate(marks)]


def phase_report(tmp: Path, runs: int = 5) -> str:
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = measures.server_env(tmp)
    report = []
    for kind, label in (("sms", "sms-mcp"), ("bare", "bare MCPServer")):
        _phases(kind, env)  # warm-up
        samples = [_phases(kind, env) for _ in range(runs)]
        rows = []
        for i, (name, _, _) in enumerate(samples[0]):
            ms = sorted(s[i][1] for s in samples)[runs // 2]
            kb = sorted(s[i][2] for s in samples)[runs // 2]
            delta = kb - (sorted(s[i - 1][2] for s in samples)[runs // 2] if i else 0)
            rows.append(f"| {label} | {name} | {ms:.1f} ms | {kb / 1024:.1f} MB | {delta / 1024:+.1f} MB |")
        report += rows
    return "\n".join([
        f"Start-up phases in a fresh interpreter (median of {runs}; time since the previous mark, RSS after it). "
        "The interpreter line is the RSS before any import:",
        "",
        "| server | phase | time | RSS after | RSS added |",
        "|---|---|---|---|---|",
        *report,
    ])


# ------------------------------------------------------------------------------------------------ prepare/confirm
def _top(profiler: cProfile.Profile, limit: int, sort: str) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats(sort).print_stats(limit)
    text = stream.getvalue()
    # Shorter paths: the repository, site-packages and the standard library.
    text = text.replace(str(REPO_ROOT) + "/", "")
    text = re.sub(r"\S*/site-packages/", "", text)
    text = re.sub(r"\S*/lib/python3\.\d+/", "", text)
    body = text[text.find("ncalls"):] if "ncalls" in text else text
    return body.rstrip()


async def _service_profiles(tmp: Path, emu: EmulatorProcess, smoke: bool) -> dict[str, Any]:
    from sms_mcp.core.service import SmsService

    settings, transport = measures._openapi(emu, tmp / "ledger")
    service = SmsService(settings, transport)
    phones = measures.numbers(100 if smoke else 1000)
    count = 200 if smoke else 10_000
    recipients = [{"phone_number": n, "sign_name": measures.SIGN,
                   "template_param": {"name": f"客户{i}", "order_no": f"SO{i:06d}", "date": "11月27日"}}
                  for i, n in enumerate(measures.numbers(count))]
    out: dict[str, Any] = {"numbers": len(phones), "recipients": count}

    async def prepare() -> float:
        started = time.perf_counter()
        plan = await service.send_sms(phones, measures.SIGN, measures.NOTIFY_TEMPLATE, measures.NOTIFY_PARAM)
        assert plan.status == "pending_confirmation", plan.message
        return time.perf_counter() - started

    async def median_prepare() -> float:
        await prepare()
        return sorted([await prepare() for _ in range(5)])[2]

    try:
        out["prepare_empty"] = await median_prepare()
        profiler = cProfile.Profile()
        profiler.enable()
        await prepare()
        profiler.disable()
        out["prepare_profile"] = _top(profiler, 14, "cumulative")

        days = 1 if smoke else 3
        confirm_profile = None
        for rep in range(days):
            plan = await service.send_batch_sms(recipients, measures.NOTIFY_TEMPLATE, out_id=f"profile-{rep}")
            profiler = cProfile.Profile()
            profiler.enable()
            sent = await service.send_batch_sms(recipients, measures.NOTIFY_TEMPLATE, out_id=f"profile-{rep}",
                                                confirm_token=plan.confirm_token)
            profiler.disable()
            assert sent.status == "accepted", sent.message
            confirm_profile = confirm_profile or profiler
        assert confirm_profile is not None
        out["confirm_profile"] = _top(confirm_profile, 16, "cumulative")
        out["sends_in_ledger"] = await service.ledger.sends_since(time.time() - 86400)
        out["prepare_busy"] = await median_prepare()
    finally:
        service.ledger.close()
        await transport.aclose()
    return out


def service_report(tmp: Path, smoke: bool) -> str:
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    logging.disable(logging.INFO)  # the service's per-chunk INFO lines are not what is measured here
    try:
        with EmulatorProcess(tmp / "home") as emu:
            data = asyncio.run(_service_profiles(tmp, emu, smoke))
    finally:
        logging.disable(logging.NOTSET)
    return "\n".join([
        f"`send_sms` prepare of {data['numbers']:,} numbers (openapi backend → emulator, so `GetSmsSign` and "
        f"`GetSmsTemplate` are two HTTP round trips): median {data['prepare_empty'] * 1000:.1f} ms on an empty "
        f"ledger, **{data['prepare_busy'] * 1000:.1f} ms** once the ledger holds {data['sends_in_ledger']:,} "
        "sends of the last 24 h (the local flow-control pre-check reads all of them). cProfile of one prepare "
        "on the empty ledger (cumulative; profiling roughly doubles the times):",
        "",
        "```text",
        data["prepare_profile"],
        "```",
        "",
        f"`send_batch_sms` confirm of {data['recipients']:,} personalised recipients "
        f"({-(-data['recipients'] // 100)} `SendBatchSms` calls), cProfile (cumulative):",
        "",
        "```text",
        data["confirm_profile"],
        "```",
    ])


# ------------------------------------------------------------------------------------------------ entry
def report(tmp: Path, smoke: bool = False) -> str:
    runs = 1 if smoke else 3
    sections = [
        "### Start-up (item 1) and idle memory (item 5)",
        "",
        phase_report(tmp / "phases", runs=1 if smoke else 5),
        "",
        import_report(tmp / "imports", runs=runs),
        "",
        "### Prepare and confirm (item 4)",
        "",
        service_report(tmp / "service", smoke),
    ]
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="sms-mcp-profile-") as tmp:
        isolate_this_process(pycache=Path(tmp) / "pycache")
        print(report(Path(tmp), smoke="--smoke" in args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
