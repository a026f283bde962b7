"""``python -m bench.over_http [--smoke] [--calls N] [--out FILE] [--json FILE]``: MCP over Streamable HTTP.

One ``sms-mcp serve --http`` replica (sandbox backend, an API key checked on every request, the JSON logs and
metrics on) against a bare ``MCPServer`` with one tool served over Streamable HTTP by the same SDK, measured in
the same run with the same client: the Python SDK's HTTP client in the per-request era (2026-07-28), one
``tools/call`` per POST. Sequential calls, then 16 concurrent callers: p50, p99 and calls/s. The ratio is the
cost sms-mcp adds per call on top of the SDK's own HTTP serving (auth, the tool's work on the sandbox, logs).
``--smoke``: a few calls, so CI keeps this working; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.env import REPO_ROOT, child_env, isolate_this_process, machine, package_versions
from bench.stats import median, percentile

CONCURRENCY = 16
API_KEY = "smsk_bench_" + "k" * 40
BARE_TOOL = "echo"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_bare(port: int) -> None:
    """The baseline: a bare MCPServer with one tool over Streamable HTTP (``run()``'s defaults)."""
    from mcp.server import MCPServer

    server = MCPServer("bench-bare-http")

    @server.tool()
    def echo(text: str = "") -> str:
        """Return the text unchanged."""
        return text

    server.run(transport="streamable-http", host="127.0.0.1", port=port)


class Process:
    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log)

    def wait(self, probe: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}; see {self._log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{probe}", timeout=2) as r:
                    if r.status in (200, 405, 406):
                        return
            except urllib.error.HTTPError as err:
                if err.code in (400, 401, 405, 406):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"server on {self.port} never became ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


async def _run_calls(url: str, token: str | None, tool: str, args: dict[str, Any], calls: int,
                     concurrency: int) -> dict[str, float]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60,
                                  limits=httpx2.Limits(max_connections=concurrency * 2)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as client:  # type: ignore[arg-type]
            for _ in range(3):  # warm-up: imports, connections, first-call caches
                result = await client.call_tool(tool, args)
                if result.is_error:
                    raise SystemExit(f"{tool} failed: {result.content}")
            latencies: list[float] = []
            remaining = iter(range(calls))

            async def worker() -> None:
                for _ in remaining:
                    started = time.perf_counter()
                    result = await client.call_tool(tool, args)
                    latencies.append(time.perf_counter() - started)
                    if result.is_error:
                        raise SystemExit(f"{tool} failed: {result.content}")

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
    return {"p50_ms": median(latencies) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "calls_per_s": calls / elapsed, "calls": calls}


def measure(calls: int, tmp: Path) -> dict[str, Any]:
    from sms_mcp.http.auth import hash_api_key

    ours_port, bare_port = _free_port(), _free_port()
    ours = Process([sys.executable, "-m", "sms_mcp", "serve", "--http", "--port", str(ours_port)], child_env(
        tmp / "home", SMS_MCP_BACKEND="sandbox", SMS_MCP_DATA_DIR=str(tmp / "data"), SMS_MCP_LOG_LEVEL="INFO",
        SMS_MCP_API_KEYS=f"bench:sms.read:{hash_api_key(API_KEY)}", SMS_MCP_REQUEST_STATE_KEYS="b" * 40),
        ours_port, tmp / "sms-mcp.stderr")
    bare = Process([sys.executable, "-m", "bench.over_http", "--serve-bare", str(bare_port)], child_env(tmp / "home"),
                   bare_port, tmp / "bare.stderr")
    try:
        ours.wait("/readyz")
        bare.wait("/mcp")
        results: dict[str, Any] = {}
        for label, concurrency in (("sequential", 1), (f"{CONCURRENCY} concurrent", CONCURRENCY)):
            results[label] = {
                "sms-mcp list_signs": asyncio.run(_run_calls(ours.url, API_KEY, "list_signs", {}, calls,
                                                             concurrency)),
                "bare MCPServer echo": asyncio.run(_run_calls(bare.url, None, BARE_TOOL, {"text": "x"}, calls,
                                                              concurrency)),
            }
        return results
    finally:
        ours.stop()
        bare.stop()


def table(results: dict[str, Any]) -> str:
    lines = ["| Calls | Server | p50 | p99 | calls/s | p50 ratio (sms-mcp / bare) |", "|---|---|---|---|---|---|"]
    for label, servers in results.items():
        ours, bare = servers["sms-mcp list_signs"], servers["bare MCPServer echo"]
        for name, figures in servers.items():
            ratio = f"{ours['p50_ms'] / bare['p50_ms']:.2f}×" if name.startswith("sms-mcp") else ""
            lines.append(f"| {label} ({figures['calls']}) | {name} | {figures['p50_ms']:.1f} ms | "
                         f"{figures['p99_ms']:.1f} ms | {figures['calls_per_s']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.over_http", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few calls (CI); the figures mean nothing")
    parser.add_argument("--calls", type=int, default=400, help="calls per scenario (default 400)")
    parser.add_argument("--out", help="also write the table (Markdown) here")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    isolate_this_process()
    calls = 32 if args.smoke else max(args.calls, CONCURRENCY)
    with tempfile.TemporaryDirectory(prefix="sms-mcp-bench-http-") as tmp:
        results = measure(calls, Path(tmp))
    versions = package_versions()
    text = "\n".join([
        "## MCP over Streamable HTTP: one sms-mcp replica vs a bare MCPServer (same run, same client)",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + ".",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "Reproduce: `python -m bench.over_http" + (" --smoke" if args.smoke else f" --calls {calls}") + "`"
        + (" — **smoke run: the figures mean nothing**." if args.smoke else "."),
        "",
        table(results),
        "",
    ])
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
