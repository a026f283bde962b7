"""``python -m bench.run [--smoke] [--profile] [--only STEP,...] [--out BENCHMARKS.md] [--json FILE]``: the benchmarks.

Prints one table and writes it, with the machine, the package versions and the command to reproduce it, to a
Markdown file (default ``BENCHMARKS.md`` in the repository for a full run; a smoke run writes only with --out).
Every comparing figure is a ratio against a baseline measured in the same run. ``--smoke`` runs tiny sizes (a
few seconds) so CI keeps the suite working; its figures mean nothing. ``--profile`` adds where the time and
memory of the slow paths go (start-up imports and phases, the 1,000-number prepare, idle memory by package).
``--only network`` (or ``emulator``, ``start``, ...; comma-separated) runs only those steps and prints their rows,
for working on one figure; it writes a Markdown file only with --out, since the table is incomplete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import measures, network
from bench.env import REPO_ROOT, isolate_this_process, machine, package_versions
from bench.stats import median, percentile, ratio

#: The row ids, in table order. tests/test_bench_smoke.py checks that every one is present.
ROW_IDS = ("1", "2", "2b", "3", "4a", "4b", "4c", "4d", "4e", "5", "6", "7a", "7b", "7c", "7d", "7e", "7f", "7g", "7h")
HEADER = ("#", "Measure", "sms-mcp", "Baseline", "Ratio", "Target", "Result")


@dataclass
class Row:
    id: str
    measure: str
    ours: float  # in `unit`
    unit: str
    baseline: float | None
    baseline_label: str
    target: str
    met: bool | None  # None: informational, or not applicable at this size
    extra: str = ""  # appended to the sms-mcp cell

    @property
    def ratio(self) -> float | None:
        return ratio(self.ours, self.baseline) if self.baseline is not None else None

    def cells(self, smoke_na: bool) -> tuple[str, ...]:
        ours = _fmt(self.ours, self.unit) + (f" ({self.extra})" if self.extra else "")
        base = f"{_fmt(self.baseline, self.unit)} {self.baseline_label}" if self.baseline is not None else "—"
        rat = f"{self.ratio:.2f}×" if self.ratio is not None else "—"
        if self.target == "—":
            result = "info"
        elif smoke_na:
            result = "n/a (smoke size)"
        else:
            result = "met" if self.met else "**MISSED**"
        return (self.id, self.measure, ours, base, rat, self.target, result)


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


#: The steps, in run order, and the rows each one produces (a row needs every step named here).
STEPS = ("start", "read", "emulator", "prepare", "network")
ROW_STEPS = {"1": ("start",), "5": ("start",), "2": ("read",), "2b": ("read",), "3": ("emulator",),
             "4a": ("prepare",), "4b": ("prepare",), "4c": ("emulator",), "4d": ("emulator",), "4e": ("emulator",),
             "6": ("emulator",), **{r: ("network",) for r in ROW_IDS if r.startswith("7")}}


def rows_of(sizes: measures.Sizes, raw: dict[str, Any]) -> list[Row]:
    """The rows of the steps that ran (all of them for a full run)."""
    if all(step in raw for step in STEPS):
        return build_rows(sizes, raw["start"], raw["read"], raw["emulator"], raw["prepare"], raw["network"])
    # A partial run (--only): rows whose steps did not run are left out; stand-ins fill the unused arguments.
    empty: dict[str, Any] = {"times": {"sms": [1.0], "bare": [1.0]}, "rss_kb": {"sms": [1.0], "bare": [1.0]}}
    emu_empty = {"read": {"ours": [1.0], "sdk": [1.0]}, "batch": {"confirm": [1.0], "sdk": [1.0], "prepare": [1.0]},
                 "batch_calls": 1, "batch_recipients": 1, "cli": {"calls": [1.0]},
                 "busy": {"sends": 0, "busy": 1.0, "empty": 1.0}}
    rows = build_rows(sizes, raw.get("start", empty), raw.get("read", {"sms": [1.0], "bare": [1.0]}),
                      raw.get("emulator", emu_empty), raw.get("prepare", {"service": [1.0], "mcp": [1.0]}),
                      raw.get("network"))
    return [row for row in rows if all(step in raw for step in ROW_STEPS[row.id])]


def build_rows(sizes: measures.Sizes, start: dict[str, Any], read: dict[str, list[float]],
               emu: dict[str, Any], prepare: dict[str, list[float]], net: dict[str, Any] | None) -> list[Row]:
    ms = 1000.0
    t_sms, t_bare = median(start["times"]["sms"]), median(start["times"]["bare"])
    rss_sms, rss_bare = median(start["rss_kb"]["sms"]) / 1024, median(start["rss_kb"]["bare"]) / 1024
    r50, r99 = percentile(read["sms"], 50) * ms, percentile(read["sms"], 99) * ms
    e50, e99 = percentile(read["bare"], 50) * ms, percentile(read["bare"], 99) * ms
    o_med, s_med = median(emu["read"]["ours"]) * ms, median(emu["read"]["sdk"]) * ms
    p_svc, p_mcp = median(prepare["service"]) * ms, median(prepare["mcp"]) * ms
    confirm, sdk_batch = median(emu["batch"]["confirm"]), median(emu["batch"]["sdk"])
    calls = emu["batch_calls"]
    cli = median(emu["cli"]["calls"]) * ms
    n_num, n_rec = sizes.prepare_numbers, emu["batch_recipients"]
    busy = emu["busy"]
    return [
        Row("1", f"stdio start → `tools/list` answered (median of {sizes.starts})", t_sms * ms, "ms", t_bare * ms,
            "bare MCPServer, 1 tool", "≤ 1.10×", ratio(t_sms, t_bare) <= 1.10),
        Row("2", f"`list_signs` over stdio, sandbox, p50 of {sizes.read_calls}", r50, "ms", e50,
            "bare `echo` tool p50", "p50 ≤ 3 ms", r50 <= 3.0),
        Row("2b", f"`list_signs` over stdio, sandbox, p99 of {sizes.read_calls}", r99, "ms", e99,
            "bare `echo` tool p99", "—", None),
        Row("3", f"openapi backend `QuerySmsSignList` per call vs bare SDK (median of {sizes.openapi_calls})",
            o_med, "ms", s_med, "`query_sms_sign_list_with_options_async`", "≤ 1.2×", ratio(o_med, s_med) <= 1.2),
        Row("4a", f"prepare `send_sms` to {n_num:,} numbers, `SmsService` (median of {sizes.prepare_reps})",
            p_svc, "ms", None, "", "≤ 50 ms", p_svc <= 50),
        Row("4b", f"prepare `send_sms` to {n_num:,} numbers, in-memory `mcp.Client` (median of "
            f"{sizes.prepare_reps})", p_mcp, "ms", p_svc, "`SmsService` alone (4a)", "≤ 50 ms", p_mcp <= 50),
        Row("4c", f"confirm `send_batch_sms`, {n_rec:,} personalised recipients = {calls} API calls, openapi → "
            f"emulator (median of {sizes.batch_reps})", confirm, "s", sdk_batch,
            f"bare SDK, same {calls} calls, {measures.SEND_CONCURRENCY} in flight", "≤ 1 s", confirm <= 1.0,
            extra=f"{calls / confirm:.0f} API calls/s, {n_rec / confirm:,.0f} recipients/s"),
        Row("4d", f"prepare of that {n_rec:,}-recipient batch, `SmsService`", median(emu["batch"]["prepare"]), "s",
            None, "", "—", None),
        Row("4e", f"prepare `send_sms` to {n_num:,} numbers, openapi → emulator, with {busy['sends']:,} sends of "
            "the last 24 h in the ledger (median of 5)", busy["busy"] * ms, "ms", busy["empty"] * ms,
            "same prepare, empty ledger", "≤ 50 ms", busy["busy"] * ms <= 50),
        Row("5", f"idle RSS after start, serving, after `tools/list` (median of {sizes.starts})", rss_sms, "MB",
            rss_bare, "bare MCPServer, 1 tool", "≤ 1.2×", ratio(rss_sms, rss_bare) <= 1.2),
        Row("6", f"cli backend per call, **Python stand-in** for `aliyun` (upper bound of spawn + interpreter; "
            f"median of {sizes.cli_calls})", cli, "ms", o_med, "openapi backend per call (3)", "—", None),
        *(network_rows(sizes, net) if net is not None else []),
    ]


def network_rows(sizes: measures.Sizes, net: dict[str, Any]) -> list[Row]:
    """Item 7: HTTPS to the emulator behind the latency proxy (bench/network.py)."""
    ms = 1000.0
    rtt = net["rtt"] * ms
    where = f"HTTPS, {rtt:.0f} ms RTT"
    med = {k: median(v) * ms for k, v in net["read"].items()}
    cpu = {k: median(v) * ms for k, v in net["read_cpu"].items()}
    bat = {k: median(v) for k, v in net["batch"].items()}
    calls, n_rec = net["batch_calls"], net["batch_recipients"]
    bcpu = {k: median(v) * ms / calls for k, v in net["batch_cpu"].items()}
    floor = net["floor"]
    read_bound = 1.2 * rtt + med["direct"]
    conf = f"confirm {n_rec:,} recipients = {calls} `SendBatchSms` calls, {measures.SEND_CONCURRENCY} in flight"
    reps = f"median of {sizes.net_batch_reps}"
    handshakes = max(net["handshakes"])
    return [
        Row("7a", f"one read (`QuerySmsSignList`) after warm-up, {where} (median of {sizes.net_reads})", med["ours"],
            "ms", med["sdk_async"], "bare SDK async", f"≤ 1.2 RTT + server's {med['direct']:.1f} ms = "
            f"{read_bound:.1f} ms", med["ours"] <= read_bound),
        Row("7b", "the same read, vs the bare SDK's sync client (pooled `requests` session)", med["ours"], "ms",
            med["sdk_sync"], "bare SDK sync", "—", None),
        Row("7c", f"{conf}, `SmsService` (ledger included), {where}, cold pool ({reps})", bat["ours"], "s",
            bat["sdk_async"], "bare SDK async, same calls", f"≤ 1.3 × floor {floor:.2f} s and ≥ 3× faster",
            bat["ours"] <= 1.3 * floor and bat["sdk_async"] >= 3 * bat["ours"],
            extra=f"{handshakes} TLS handshakes"),
        Row("7d", f"the same {calls} calls by the openapi transport alone (no ledger), {where}, cold pool ({reps})",
            bat["transport"], "s", bat["sdk_sync"], "bare SDK sync in 8 threads", f"≤ 1.3 × floor {floor:.2f} s",
            bat["transport"] <= 1.3 * floor),
        Row("7e", f"server's time: the same {calls} calls by the transport straight to the HTTPS emulator, no proxy "
            f"({reps})", bat["direct"], "s", floor, "the floor (⌈calls/8⌉ RTT + one handshake)", "—", None),
        Row("7f", f"client CPU per read, openapi backend, {where} (median of {sizes.net_reads})", cpu["ours"], "ms",
            cpu["sdk_async"], "bare SDK async", "≤ 2 ms", cpu["ours"] <= 2.0),
        Row("7g", f"client CPU per `SendBatchSms` call (100 recipients), openapi transport alone ({reps})",
            bcpu["transport"], "ms", bcpu["sdk_async"], "bare SDK async", "≤ 2 ms", bcpu["transport"] <= 2.0),
        Row("7h", f"client CPU per API call of the whole confirmation (`SmsService`: plan, ledger, audit; {reps})",
            bcpu["ours"], "ms", bcpu["sdk_sync"], "bare SDK sync in threads", "—", None),
    ]


SIZE_BOUND = {"4a", "4b", "4c", "4e", "7a", "7c", "7d", "7f", "7g"}  # targets stated for the full sizes only


def table(rows: list[Row], smoke: bool) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row.cells(smoke and row.id in SIZE_BOUND)) + " |")
    return "\n".join(lines)


NOTES = """\
How it is measured:

- **1, 5** — each server is spawned as a subprocess with the same environment (sandbox backend, `HOME` and
  data dir in a temporary directory, no credentials); the client writes `initialize` (protocol 2025-11-25),
  `notifications/initialized` and `tools/list` as raw JSON-RPC lines on stdin and the clock stops when the
  `tools/list` response line arrives. Runs alternate sms-mcp / baseline, after one untimed warm-up start each
  (page cache warm, data dir created: a host restarting the server). RSS is `VmRSS` from `/proc/PID/status`
  after {idle} s idle. The baseline is `bench/bare_server.py`: `MCPServer` with one tool, `server.run()`.
- **2** — one server session, 20 untimed calls, then sequential `tools/call` round trips over the pipes.
- **3, 4c** — the HTTP emulator (`sms-mcp emulator`, signature-verifying) runs as a separate process on
  127.0.0.1, so it does not share the measured client's interpreter lock. Calls alternate ours / SDK after 5
  warm-ups each. The SDK baseline is Alibaba's `alibabacloud_dysmsapi20170525` client with an AccessKey config,
  as its documentation shows; ours is `OpenApiTransport.call` (generic `call_api_async`, explicit credential).
- **4c** — `SmsService.send_batch_sms` confirm: ledger claims, 100-recipient `SendBatchSms` requests, 8 in
  flight (`SEND_CONCURRENCY`), outcome recording. The baseline sends the same chunks with the bare SDK and the
  same concurrency, without any ledger: the ratio is sms-mcp's cost on top of the emulator's.
- **4a/4b** — in-process on the sandbox backend (SQLite ledger and emulator in a temporary directory), two
  untimed warm-ups; 4b goes through `mcp.Client(server)` in memory (argument validation, result serialisation).
- **4e** — the 4a prepare, on the openapi backend (so `GetSmsSign`/`GetSmsTemplate` are HTTP round trips),
  once on an empty ledger and once after the 4c repetitions recorded their sends: the local flow-control
  pre-check reads the last 24 h of sends of the plan's numbers (an indexed query), so the day's volume should
  cost little.
- **6** — `AliyunCliTransport` running `tests/aliyun_standin.py` (a Python stand-in for the real Go binary that
  answers from the emulator core): each call pays a process spawn, a Python interpreter start and an SQLite
  open, so the figure is an upper bound of what the real `aliyun` costs to spawn, not a measure of it.
- **7** — the real network path, emulated: `sms-mcp emulator --tls` (HTTPS, a trustme test CA, signatures verified
  as over HTTP, state in memory) behind `python -m bench.latency_proxy`, a TCP proxy of the benchmark's own on
  127.0.0.1 in its own process that delivers every segment {one_way:g} ms later in each direction and connects
  upstream one round trip after accepting (the TCP handshake), so a new HTTPS connection costs TCP + TLS 1.3 + the
  exchange = 3 RTT and a kept-alive one 1 RTT (this kernel has no `netem`). Clients trust the test CA the
  documented way (sms-mcp: `SMS_MCP_CA_BUNDLE`; the SDK: `RuntimeOptions(ca=...)`) and verify it. Reads alternate
  sms-mcp / bare SDK async / bare SDK sync after 3 warm-ups each; "server's time" is the same read, or the same
  100 calls, made by sms-mcp's transport straight to the HTTPS emulator without the proxy. The confirmation
  starts on a cold pool (every handshake counted); the bare async SDK sends the same chunks with 8 in flight,
  the bare sync SDK with 8 threads. The floor is ⌈calls / 8⌉ RTT plus one TCP + TLS handshake (2 RTT; the pool's
  connections open side by side). Client CPU is `time.process_time()` of the benchmark process (the emulator and
  the proxy run in their own processes). Rows 3 and 4c are the same comparisons over plain HTTP on loopback.
- **7c vs 7d** — the same 100 calls on the same pool; what 7c adds is `SmsService`'s own work (7h). Before the
  first call: parsing the 10,000 recipients and checking the token's binding (the arguments' hash), the limits
  re-checked on the plan's messages (the day's sends to its 10,000 numbers: this grows with each repetition, which
  resends to the same numbers), the plan claimed. Per chunk: its claim (the intent and the limits, one SQLite
  transaction, `synchronous=FULL`, off the event loop) before its call, its outcome after, the audit line. The
  ledger group-commits (a chunk's outcome and the next chunk's claim share one fsync) and claims up to 2 chunks
  ahead of a free call slot, so the per-chunk work mostly overlaps the calls in flight; it still competes for the
  2 CPUs with the emulator and the proxy. 7e is the emulator's own serial time for the 100 calls (it handles one
  request at a time), which no client can overlap fully.
- **As served** — before the in-process confirmations (4c, 7c) the benchmark freezes the objects built so far out
  of the cyclic garbage collector, as `sms-mcp serve` does once started (`gc.freeze()`): otherwise the full
  collections a 10,000-recipient confirmation triggers rescan every long-lived object, pausing the loop for
  50–100 ms.
- Percentiles are nearest-rank. Ratios are sms-mcp ÷ baseline; "met" compares against the target column.
  On a small shared VM the absolute figures move by several percent from run to run (start-up ratios by about
  ±0.03); the ratios, measured side by side, are the figures to compare across machines.
- Child processes keep their bytecode in a temporary `PYTHONPYCACHEPREFIX` (filled by the warm-up starts), so
  a stale `.pyc` or `PYTHONDONTWRITEBYTECODE` in the caller's environment cannot turn start-up into a
  measurement of the compiler.
"""


def render(rows: list[Row], smoke: bool, command: str, elapsed: float, sizes: measures.Sizes,
           profile: str | None, loads: dict[str, float] | None = None) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run.py` on {now} in {elapsed:.0f} s"
        + (" — **smoke run: tiny sizes, the figures mean nothing**." if smoke else "."),
        "",
        "Reproduce (from the repository root, with the project installed, e.g. `pip install -e '.[test]'`):",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Results",
        "",
        table(rows, smoke),
        "",
        NOTES.format(idle=sizes.idle_seconds, one_way=sizes.net_one_way_ms),
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        *([f"| load (1-min average) when each step began | {', '.join(f'{k} {v:.2f}' for k, v in loads.items())} |"]
          if loads else []),
        "",
        *(["The machine is shared, and the benchmark itself keeps about one core busy: a load above about 2 means "
           "other work ran beside it. The absolute figures of the steps that began under such load are "
           "pessimistic; the side-by-side ratios less so.", ""] if loads and max(loads.values()) > 2.0 else []),
        "## Packages",
        "",
        "| package | version |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in package_versions().items()),
        "",
    ]
    if profile:
        parts += ["## Profile", "", profile.rstrip(), ""]
    return "\n".join(parts)


def _steps(text: str) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise argparse.ArgumentTypeError(f"unknown step(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(STEPS)}")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI (figures are meaningless)")
    parser.add_argument("--profile", action="store_true", help="add the profile of the slow paths")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: BENCHMARKS.md, full runs only)")
    parser.add_argument("--json", type=Path, help="also write the raw samples and rows as JSON")
    parser.add_argument("--only", type=_steps, help=f"run only these steps (comma-separated: {', '.join(STEPS)})")
    parser.add_argument("--http", action="store_true", help="also run bench.over_http (MCP over Streamable HTTP)")
    args = parser.parse_args(argv)
    sizes = measures.SMOKE if args.smoke else measures.FULL
    only = args.only or STEPS
    out = args.out or (None if args.smoke or args.only else REPO_ROOT / "BENCHMARKS.md")
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sms-mcp-bench-") as tmp_name:
        tmp = Path(tmp_name)
        isolate_this_process(pycache=tmp / "pycache")
        steps = (("start", measures.measure_start), ("read", measures.measure_read),
                 ("emulator", measures.measure_emulator), ("prepare", measures.measure_prepare),
                 ("network", network.measure_network))
        raw: dict[str, Any] = {}
        loads: dict[str, float] = {}
        for name, step in steps:
            if name not in only:
                continue
            loads[name] = os.getloadavg()[0]
            t0 = time.perf_counter()
            raw[name] = step(sizes, tmp / name)
            print(f"[bench] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        profile_text = None
        if args.profile:
            from bench import profile

            t0 = time.perf_counter()
            profile_text = profile.report(tmp / "profile", smoke=args.smoke)
            print(f"[bench] profile: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    loads["end"] = os.getloadavg()[0]
    rows = rows_of(sizes, raw)
    for row in rows:
        values = [row.ours] + ([row.baseline] if row.baseline is not None else [])
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise SystemExit(f"row {row.id}: implausible figures {values}")
    print(table(rows, args.smoke))
    if out is not None:
        out.write_text(render(rows, args.smoke, command, elapsed, sizes, profile_text, loads), encoding="utf-8")
        print(f"[bench] wrote {out}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"sizes": asdict(sizes), "raw": raw, "loads": loads,
                                         "rows": [{**asdict(r), "ratio": r.ratio} for r in rows]}, indent=1))
    if args.http:  # the HTTP scenarios have their own table (bench/over_http.py)
        from bench import over_http as http_bench

        return http_bench.main(["--smoke"] if args.smoke else [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
