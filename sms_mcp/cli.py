"""``sms-mcp``: serve (default, MCP over stdio), demo, doctor, emulator."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import textwrap
from pathlib import Path
from types import FrameType
from typing import Any

from sms_mcp import __version__
from sms_mcp.config import ConfigError, Settings, check_data_dir, unknown_variables

log = logging.getLogger("sms_mcp")


def _configure_logging(level: str) -> None:
    # stdout is the MCP protocol: every log line goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- serve
class AbandonableStdin:
    """Lines of stdin, read in a worker thread that is *abandoned* on cancellation.

    The SDK's own stdin reader cannot be cancelled while it blocks in ``readline()``, so when anything else
    ends the session (an error while serving, such as a client that closed our stdout) its task group waits
    for the next stdin line before it unwinds, and no cleanup runs. Abandoning the read lets the session end
    at once; the thread dies with the process."""

    def __init__(self) -> None:
        import io

        # A private duplicate of fd 0: the SDK points fd 0 at /dev/null while serving.
        self._file = io.TextIOWrapper(os.fdopen(os.dup(0), "rb", buffering=0), encoding="utf-8",
                                      errors="replace")
        #: Where answers to unreadable requests go (the SDK drops them unanswered); set once stdio is up.
        self.answers: Any = None

    def __aiter__(self) -> AbandonableStdin:
        return self

    async def __anext__(self) -> str:
        import anyio

        while True:
            line = await anyio.to_thread.run_sync(self._file.readline, abandon_on_cancel=True)
            if not line:
                raise StopAsyncIteration
            if self.answers is not None:
                from sms_mcp.protocol_guards import answer_for_unreadable_request

                answer = answer_for_unreadable_request(line)
                if answer is not None:
                    from mcp.shared.message import SessionMessage

                    await self.answers.send(SessionMessage(answer))
                    continue
            return line


async def serve_stdio(server: Any) -> None:
    """``MCPServer.run_stdio_async`` with an abandonable stdin (stdout is still claimed by the SDK, so a stray
    print cannot reach the wire). Uses the SDK's low-level server, the object ``run_stdio_async`` drives."""
    from mcp.server.stdio import stdio_server

    lowlevel = server._lowlevel_server  # mcp 2.x: no public hook to pass our own stdin
    stdin = AbandonableStdin()
    async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # type: ignore[arg-type]
        stdin.answers = write_stream  # unreadable requests get their JSON-RPC error on the protocol's own writer
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def settle_startup_objects() -> None:
    """Move what start-up built (modules, the SDKs, the server) out of the cyclic collector's reach: it lives as
    long as the process, yet every full collection would rescan it, and a large confirmation (10,000 recipients)
    allocates enough to trigger such collections, each a pause of tens of milliseconds on the event loop. (No
    ``gc.collect()`` first: freezing is constant-time, a collection would delay the first answer.)"""
    gc.freeze()
    gc.enable()


def serve(settings: Settings) -> int:
    """Serve MCP over stdio until stdin closes, SIGTERM or SIGINT; the lifespan cleanup runs on every path.

    The SDK installs no signal handlers and reads stdin in a blocking thread (mcp-python.md §6), so: signals
    raise KeyboardInterrupt (which unwinds the lifespan), a second signal during shutdown is ignored (cleanup is
    already running), and the process leaves with os._exit so the blocked stdin thread cannot keep it alive.
    """
    # No cyclic collections while start-up imports and builds (hundreds of modules, the tool schemas): every
    # collection there rescans all of it for nothing, tens of milliseconds of the time to the first answer.
    # settle_startup_objects() freezes what was built and switches the collector back on.
    gc.disable()
    import anyio

    from sms_mcp.core.ports import LedgerUnavailable
    from sms_mcp.ledger import open_ledger
    from sms_mcp.server import build_server, close_transport
    from sms_mcp.wire.factory import make_transport, resolve_backend

    _configure_logging(settings.log_level)
    code = 0
    transport = None
    shutting_down = False

    def interrupt() -> None:
        raise KeyboardInterrupt

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal shutting_down
        if shutting_down:
            log.warning("signal %s during shutdown: cleanup is already running", signum)
            return
        shutting_down = True
        log.info("signal %s: shutting down", signum)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving (yet): unwind the main thread directly
            raise KeyboardInterrupt from None
        # Raised from a loop callback rather than from whatever task happens to be running, the interrupt
        # leaves the loop cleanly; asyncio then cancels the server task, which runs the lifespan cleanup.
        loop.call_soon_threadsafe(interrupt)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        name, why = resolve_backend(settings)
        log.info("sms-mcp %s: backend %s (%s); data dir %s", __version__, name, why, settings.data_dir)

        async def run() -> None:
            # Open the ledger (first: it names the data directory's faults in one line) and start the backend
            # before stdio is claimed: if either cannot, we fail fast instead of waiting for stdin. The finally is
            # the shutdown hook for every path (EOF, signal, error while serving).
            nonlocal transport
            ledger = await open_ledger(settings)
            try:
                await ledger.health()
                started = transport = make_transport(settings, name)
                await started.start()
                try:
                    server = build_server(settings, started, manage_transport=False, ledger=ledger)
                    settle_startup_objects()
                    await serve_stdio(server)
                finally:
                    await close_transport(started)
            finally:
                with anyio.CancelScope(shield=True):
                    await ledger.aclose()

        anyio.run(run)
    except KeyboardInterrupt:
        pass
    except BaseException as err:  # startup failure or an unhandled error while serving
        code = 1
        if isinstance(err, (ConfigError, ValueError, OSError, LedgerUnavailable)):
            log.error("sms-mcp cannot serve: %s", err)
        else:
            log.exception("sms-mcp stopped on an unexpected error")
    finally:
        shutting_down = True
        # Last resort for backends holding external state: if the loop died before the lifespan cleanup
        # finished, release it synchronously (idempotent with the async cleanup).
        last_resort = getattr(transport, "shutdown_sync", None)
        if callable(last_resort):
            try:
                last_resort()
            except Exception:
                log.exception("backend cleanup failed")
        logging.shutdown()
        os._exit(code)
    return code  # pragma: no cover - os._exit above


def settings_for_serving() -> Settings:
    """The settings, validated once; a misspelt variable or an unusable data directory refuses to serve
    (unknown SMS_MCP_ names that look like no setting only warn)."""
    settings = Settings.from_env()
    typos, others = unknown_variables()
    problem = check_data_dir(settings.data_dir)
    if typos or problem:
        raise ConfigError([*typos, *([problem] if problem else [])])
    for line in others:
        print(f"sms-mcp: warning: {line}", file=sys.stderr)
    return settings


def serve_command(argv: list[str]) -> int:
    """``serve`` with flags: ``--http`` selects Streamable HTTP; without it, stdio as always."""
    parser = argparse.ArgumentParser(prog="sms-mcp serve", description="Serve MCP over stdio (default) or HTTP.")
    parser.add_argument("--http", action="store_true", help="serve MCP over Streamable HTTP (both protocol eras)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other "
                        "address requires authentication to be configured)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    args = parser.parse_args(argv)
    settings = settings_for_serving()
    if not args.http:
        if (args.host, args.port) != ("127.0.0.1", 8000):
            parser.error("--host and --port need --http")
        return serve(settings)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be 1-65535")
    from sms_mcp.http.app import serve_http
    from sms_mcp.http.observability import configure_json_logging

    configure_json_logging(settings.log_level)
    try:
        return serve_http(settings, args.host, args.port)
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        log.error("sms-mcp cannot serve over HTTP: %s", err)
        return 1


def api_key(argv: list[str]) -> int:
    from sms_mcp.http.auth import SCOPES, hash_api_key, new_api_key

    parser = argparse.ArgumentParser(prog="sms-mcp api-key", description="Make a static API key for serve --http.")
    parser.add_argument("name", help="who holds the key (becomes the principal's subject and client id)")
    parser.add_argument("--scopes", default="sms.read", help="comma-separated, from: " + ", ".join(SCOPES))
    args = parser.parse_args(argv)
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    if not scopes or any(s not in SCOPES for s in scopes) or not args.name or ":" in args.name:
        parser.error(f"a name without ':' and scopes from {', '.join(SCOPES)}")
    key = new_api_key()
    print(f"API key for {args.name} (shown once; give it to them, keep only the entry below):\n  {key}")
    print(f"SMS_MCP_API_KEYS entry:\n  {args.name}:{'+'.join(scopes)}:{hash_api_key(key)}")
    return 0


# --------------------------------------------------------------------------- demo
def _print(title: str, body: str = "") -> None:
    print(f"\n== {title}")
    if body:
        print(textwrap.indent(body.rstrip(), "   "))


async def _demo(data_dir: Path, phone: str, delay: float) -> int:
    from mcp import Client

    from sms_mcp.server import build_server

    settings = Settings.from_env({**os.environ, "SMS_MCP_BACKEND": "sandbox", "SMS_MCP_DATA_DIR": str(data_dir),
                                  "SMS_MCP_SANDBOX_RECEIPT_DELAY": str(delay)})
    server = build_server(settings)
    async with Client(server) as client:

        async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            result = await client.call_tool(tool, args)
            if result.is_error:
                text = "".join(getattr(c, "text", "") for c in result.content)
                raise SystemExit(f"{tool} failed: {text}")
            return result.structured_content or {}

        print("sms-mcp demo: a real MCP session on the embedded sandbox (no Alibaba account, no real SMS).")
        print(f"data dir: {data_dir}")
        signs = await call("list_signs", {})
        _print("1. list_signs (approved)", "\n".join(f"- {s['sign_name']}  [{s['raw_status']}]"
                                                      for s in signs["signs"]))
        templates = await call("list_templates", {})
        _print("2. list_templates (approved)", "\n".join(
            f"- {t['template_code']} {t['type']:<13} {t['content']}  variables={t['variables']}"
            for t in templates["templates"]))
        args = {"phone_numbers": [phone], "sign_name": "速通科技", "template_code": "SMS_900000002",
                "template_param": {"name": "王女士", "order_no": "20261125001", "date": "11月27日"}}
        plan = await call("send_sms", args)
        p = plan["plan"]
        _print("3. send_sms, first call: a plan, nothing sent", "\n".join([
            f"status: {plan['status']}   plan: {plan['plan_id']}   token expires {plan['expires_at']}",
            f"recipients: {p['recipient_count']} ({p['domestic_count']} domestic)   billed messages: "
            f"{p['total_segments']}",
            *(f"{r['phone_number']}: {r['text']}  ({r['length']} chars, {r['segments']} segment(s))"
              for r in p["previews"]),
            f"next: {plan['next_step']}",
        ]))
        print("\n   (an agent now shows this plan to the user and waits for \"confirm\")")
        sent = await call("send_sms", {**args, "confirm_token": plan["confirm_token"]})
        _print("4. send_sms, second call with the token: sent once", "\n".join([
            f"status: {sent['status']}   BizId: {sent['biz_id']}   RequestId: {sent['request_id']}",
            sent["message"],
        ]))
        again = await call("send_sms", {**args, "confirm_token": plan["confirm_token"]})
        _print("5. the same confirmation again: replayed, nothing re-sent",
               f"status: {again['status']}   replayed: {again['replayed']}")
        _print(f"6. waiting {delay:g} s for the carrier receipt ...")
        await asyncio.sleep(delay + 0.2)
        report = await call("query_details", {"plan_id": plan["plan_id"]})
        _print("7. query_details(plan_id)", "\n".join([
            *(f"{r['phone_number']}: {r['status']} ({r['err_code']}) received {r['receive_date']}"
              for r in report["records"]),
            f"summary: {report['summary']}",
        ]))
        from sms_mcp.core.service import china_today

        today = china_today()
        stats = await call("query_statistics", {"start_date": today, "end_date": today})
        _print("8. query_statistics (today, domestic)", "\n".join(
            f"{d['date']}: submitted {d['total_count']}, delivered {d['delivered']}, failed {d['failed']}, "
            f"pending {d['pending']}" for d in stats["days"]) or "no traffic")
        print(f"\n{sent['notice']}")
    return 0


def demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sms-mcp demo", description="Walk through a whole send on the sandbox.")
    parser.add_argument("--data-dir", help="keep the sandbox state here (default: a temporary directory)")
    parser.add_argument("--phone", default="13912345678", help="recipient for the demo (sandbox only)")
    parser.add_argument("--receipt-delay", type=float, default=1.0, help="seconds until the receipt arrives")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if args.data_dir:
        return asyncio.run(_demo(Path(args.data_dir), args.phone, args.receipt_delay))
    with tempfile.TemporaryDirectory(prefix="sms-mcp-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp), args.phone, args.receipt_delay))


# --------------------------------------------------------------------------- doctor
async def _doctor(settings: Settings, as_json: bool) -> int:
    from sms_mcp.wire.factory import make_transport, resolve_backend

    report: dict[str, Any] = {"version": __version__, "python": sys.version.split()[0]}
    name, why = resolve_backend(settings)
    report["backend"] = {"selected": name, "why": why, "setting": settings.backend}
    data_dir = settings.data_dir
    status = 0
    data_dir_problem = check_data_dir(data_dir)
    report["data_dir"] = {"path": str(data_dir), "writable": data_dir_problem is None}
    if data_dir_problem:
        report["data_dir"]["error"] = data_dir_problem
        status = 1
    missing: dict[str, list[str]] = {"openapi": [], "cli": []}
    try:
        from sms_mcp.wire.credentials import find_credentials, placeholder_notice

        ignored = placeholder_notice()
        if ignored is not None:  # e.g. ALIBABA_CLOUD_ACCESS_KEY_ID='${ALIBABA_CLOUD_ACCESS_KEY_ID}' from a host
            report["placeholder_credentials"] = ignored
        found = find_credentials()
        if found is None:
            missing["openapi"].append("credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
                                      "ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure `aliyun configure`")
        report["credentials"] = found or "none found"
    except ImportError as err:
        missing["openapi"].append(f"Alibaba Cloud SDK not importable: {err}")
    if shutil.which(settings.aliyun_bin) is None:
        missing["cli"].append(f"aliyun CLI not found ({settings.aliyun_bin!r}); install it from "
                              "https://help.aliyun.com/zh/cli/ or set SMS_MCP_ALIYUN_BIN")
    report["missing_for_real_backends"] = missing
    report["ledger"], ledger_ok = await _ledger_report(settings)
    status = status if ledger_ok else 1
    typos, others = unknown_variables()
    if typos or others:
        report["unknown_variables"] = typos + others
        status = 1 if typos else status
    report["policy"] = {
        "confirm_mode": settings.confirm_mode, "confirm_ttl_seconds": settings.confirm_ttl_seconds,
        "read_only": settings.read_only, "allow_promotional": settings.allow_promotional,
        "allowed_numbers": allow_list_for_display(settings.allowed_numbers) or "any number",
        "max_recipients": settings.max_recipients,
        "daily_limit": settings.daily_limit,
    }
    try:
        if data_dir_problem and name == "sandbox":
            raise OSError(data_dir_problem)  # the sandbox keeps its state there: it cannot work
        transport = make_transport(settings, name)
        diagnose = getattr(transport, "diagnose", None)
        if callable(diagnose):
            report["backend"]["diagnosis"] = await diagnose()
    except Exception as err:
        report["backend"]["error"] = str(err)
        status = 1
    # The selected backend must be able to work: a wrong secret, missing credentials, a missing CLI are failures.
    diagnosis = report["backend"].get("diagnosis") or {}
    if isinstance(diagnosis, dict) and (diagnosis.get("error") or diagnosis.get("problems")):
        status = 1
    if missing.get(name):
        status = 1
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(f"sms-mcp {report['version']} (Python {report['python']})")
        print(f"backend: {name} — {why}")
        for key, value in report.items():
            if key in ("version", "python"):
                continue
            print(f"{key}: {json.dumps(value, ensure_ascii=False, default=str)}")
        if name == "sandbox":
            print("note: the sandbox sends no real SMS.")
        if status:
            print(f"doctor: the selected backend ({name}) or the data directory cannot work; see above.")
    return status


async def _ledger_report(settings: Settings) -> tuple[dict[str, Any], bool]:
    """The ledger opened, migrated and checked (integrity, write lock), and whether it was recreated."""
    from sms_mcp.core.ports import LedgerUnavailable
    from sms_mcp.core.service import storage_warning
    from sms_mcp.ledger import open_ledger

    try:
        ledger = await open_ledger(settings)
    except LedgerUnavailable as err:
        print(f"sms-mcp doctor: {err}", file=sys.stderr)
        return {"location": err.location, "ok": False, "error": err.reason, "fix": err.hint}, False
    try:
        health = await ledger.health()
    except LedgerUnavailable as err:
        print(f"sms-mcp doctor: {err}", file=sys.stderr)
        return {"location": err.location, "ok": False, "error": err.reason, "fix": err.hint}, False
    finally:
        await ledger.aclose()
    report: dict[str, Any] = {"location": health.location, "ok": True, "schema_version": health.schema_version,
                              "plans": health.plans}
    warning = storage_warning(health.plans, settings.data_dir / "audit.jsonl")
    if warning:
        print(f"sms-mcp doctor: {warning}", file=sys.stderr)
        report["warning"] = warning
    return report, True


def allow_list_for_display(entries: tuple[str, ...]) -> list[str]:
    """The normalised allow-list, full numbers masked (``+86 138****8000``), patterns as written (``+86138*``)."""
    import phonenumbers

    from sms_mcp.core.phones import mask

    shown: list[str] = []
    for entry in entries:
        if entry.endswith("*"):
            shown.append(entry)
            continue
        parsed = phonenumbers.parse(entry, None)
        shown.append(f"+{parsed.country_code} {mask(str(parsed.national_number))}")
    return shown


def doctor(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sms-mcp doctor", description="Report configuration and backend health.")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    return asyncio.run(_doctor(Settings.from_env(), args.json))


# --------------------------------------------------------------------------- main
USAGE = """\
usage: sms-mcp [serve|demo|doctor|emulator] [options]

  serve      serve MCP over stdio (the default)
  demo       walk through list -> plan -> confirm -> receipt on the embedded sandbox
  doctor     report the chosen backend, data dir and what the real backends need
  emulator   serve the Dysmsapi emulator over HTTP (signature-verifying)
  api-key    make a static API key for `serve --http` (prints the key once, and its hashed config entry)

  serve --http [--host 127.0.0.1] [--port 8000]
             serve MCP over Streamable HTTP for a team (README "Run it for a team")
"""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and not args[0].startswith("-") else "serve"
    if args[:1] in (["-h"], ["--help"]) and command == "serve":
        print(USAGE)
        raise SystemExit(0)
    if args[:1] == ["--version"]:
        print(f"sms-mcp {__version__}")
        raise SystemExit(0)
    try:
        if command == "serve":
            if args:
                raise SystemExit(serve_command(args))
            raise SystemExit(serve(settings_for_serving()))
        if command == "api-key":
            raise SystemExit(api_key(args))
        if command == "demo":
            raise SystemExit(demo(args))
        if command == "doctor":
            raise SystemExit(doctor(args))
        if command == "emulator":
            from sms_mcp.emulator.http import main as emulator_main

            raise SystemExit(emulator_main(args))
    except ConfigError as err:
        # One line per bad value, each naming the variable, the value and what is allowed; no traceback.
        for line in err.lines:
            print(f"sms-mcp: configuration error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    print(USAGE, file=sys.stderr)
    raise SystemExit(2)
