"""Metrics (Prometheus text at ``/metrics``), structured JSON logs, and the per-call gate of the HTTP skin.

Prometheus rather than OpenTelemetry: a pull endpoint every replica serves by itself, readable with curl, with
no collector to run. The SDK's OpenTelemetry middleware stays on (a span per message) for operators who
install an OTel SDK.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_REQUEST, CallToolResult, TextContent
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sms_mcp.core.ports import LOCAL_PRINCIPAL, Principal
from sms_mcp.http.auth import SCOPE_READ, SCOPE_SEND
from sms_mcp.wire.base import GatewayError, OutcomeUnknownError, Transport

log = logging.getLogger("sms_mcp.http")

SEND_TOOLS = frozenset({"send_sms", "send_batch_sms"})
SEND_ACTIONS = frozenset({"SendSms", "SendBatchSms"})


#: The authenticated caller of the tool call in progress, for the log lines written during it.
current_caller: ContextVar[Principal | None] = ContextVar("sms_mcp_current_caller", default=None)


def principal_from_token() -> Principal:
    """The verified caller of this request (the SDK's auth contextvar, both eras); without authentication (a
    loopback-only gateway) the one local principal, as on stdio."""
    token = get_access_token()
    if token is None:
        return LOCAL_PRINCIPAL
    return Principal(subject=token.subject or token.client_id, client_id=token.client_id)


class Metrics:
    """One registry per server (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tool_calls = Counter("sms_mcp_tool_calls", "MCP tool calls by tool and outcome (ok, error, refused).",
                                  ["tool", "outcome"], registry=self.registry)
        self.tool_seconds = Histogram("sms_mcp_tool_call_seconds", "MCP tool call duration.", ["tool"],
                                      registry=self.registry)
        self.sends = Counter("sms_mcp_sends", "Send requests to Alibaba (one per chunk) by outcome: accepted, "
                             "rejected (a business error code), error (failed before reaching Alibaba) or unknown "
                             "(cut off; reconciled later).", ["outcome"], registry=self.registry)
        self.api_seconds = Histogram("sms_mcp_api_call_seconds", "Dysmsapi call latency by action.", ["action"],
                                     registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class InstrumentedTransport:
    """A Transport that measures every Dysmsapi call and counts sends by outcome; everything else delegates."""

    def __init__(self, inner: Transport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.name = inner.name
        self.started = False

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inner, item)

    async def start(self) -> None:
        await self._inner.start()
        self.started = True

    async def aclose(self) -> None:
        self.started = False
        await self._inner.aclose()

    async def call(self, action: str, params: Any) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            body = await self._inner.call(action, params)
            outcome = "accepted" if isinstance(body, Mapping) and body.get("Code") == "OK" else "rejected"
            return body
        except OutcomeUnknownError:
            outcome = "unknown"
            raise
        except GatewayError:
            outcome = "error"
            raise
        finally:
            self._metrics.api_seconds.labels(action).observe(time.perf_counter() - started)
            if action in SEND_ACTIONS:
                self._metrics.sends.labels(outcome).inc()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the calling principal when there is one (phone numbers are masked by the
    code that logs them; secrets and tokens are never logged)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
            "msg": record.getMessage(),
        }
        caller = current_caller.get()
        if caller is not None:
            entry["principal"] = caller.subject
            entry["client_id"] = caller.client_id
        for key in ("tool", "plan_id", "outcome", "duration_ms", "protocol", "replica"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)[-2000:]
        return json.dumps(entry, ensure_ascii=False)


def configure_json_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level, logging.INFO))


def refusal(code: str, text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=f"[{code}] {text}")], is_error=True)


def _structured(result: Any) -> Mapping[str, Any]:
    if isinstance(result, CallToolResult):
        return result.structured_content or {}
    if isinstance(result, Mapping):
        content = result.get("structuredContent")
        return content if isinstance(content, Mapping) else {}
    return {}


def _is_error(result: Any) -> bool:
    if isinstance(result, CallToolResult):
        return bool(result.is_error)
    return isinstance(result, Mapping) and result.get("isError") is True


class Drain:
    """Shutdown state: once draining, new tool calls are refused and in-flight sends get a deadline."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace = grace_seconds
        self.draining = False
        self.deadline: float | None = None
        self._sends: set[anyio.CancelScope] = set()

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.deadline = anyio.current_time() + self.grace if self._in_loop() else None
        for scope in self._sends:
            scope.deadline = self.deadline if self.deadline is not None else scope.deadline
        log.info("draining: %d send(s) in flight, %.1f s to finish", len(self._sends), self.grace)

    @staticmethod
    def _in_loop() -> bool:
        try:
            anyio.current_time()
        except Exception:
            return False
        return True

    @property
    def in_flight(self) -> int:
        return len(self._sends)

    async def run_send(self, call: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Run a send tool call shielded from cancellation (a client going away, or the server stopping, must
        not cut a chunk between its durable intent and Alibaba's answer), bounded by the drain deadline once
        the server is stopping. Returns (finished, result)."""
        with anyio.CancelScope(shield=True):
            with anyio.CancelScope() as bounded:
                if self.deadline is not None:
                    bounded.deadline = self.deadline
                self._sends.add(bounded)
                try:
                    return True, await call()
                finally:
                    self._sends.discard(bounded)
        return False, None


class GatewayMiddleware:
    """Per tool call: scope check, the caller in context (per-principal policy, logs), draining, the send
    shield, one structured log line and the tool-call metrics."""

    def __init__(self, metrics: Metrics, drain: Drain) -> None:
        self.metrics = metrics
        self.drain = drain

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "resources/read":  # the resources are the sign and template lists: read data
            token = get_access_token()
            if token is not None and SCOPE_READ not in token.scopes:
                raise MCPError(INVALID_REQUEST, f"[sms_mcp.INSUFFICIENT_SCOPE] reading resources needs the "
                               f"{SCOPE_READ} scope; ask your administrator for it.")
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        tool = str(params.get("name") or "")[:64]
        token = get_access_token()
        reset = current_caller.set(principal_from_token() if token else None)
        started = time.perf_counter()
        outcome = "ok"
        result: Any = None
        try:
            if self.drain.draining:
                outcome = "refused"
                result = refusal("sms_mcp.SHUTTING_DOWN", "This replica is shutting down and takes no new tool "
                                 "calls; nothing was done. Next step: call again (the balancer routes you to "
                                 "another replica).")
                return result
            needed = SCOPE_SEND if tool in SEND_TOOLS else SCOPE_READ
            if token is not None and needed not in token.scopes:
                outcome = "refused"
                result = refusal("sms_mcp.INSUFFICIENT_SCOPE", f"{tool} needs the {needed} scope; your access "
                                 f"token has {' '.join(token.scopes) or 'no scopes'}. Nothing was done. Next step: "
                                 f"ask your administrator for {needed}" + (
                                     "; the read tools (list_signs, list_templates, query_details, "
                                     "query_statistics, qualification) work with sms.read."
                                     if needed == SCOPE_SEND else "."))
                return result
            if tool in SEND_TOOLS:
                finished, result = await self.drain.run_send(lambda: call_next(ctx))
                if not finished:
                    outcome = "error"
                    result = refusal("sms_mcp.SHUTTING_DOWN", "This replica stopped before the call finished. "
                                     "Next step: do NOT prepare a new plan; call query_details(plan_id=...) to "
                                     "learn what was sent (an interrupted chunk is reconciled, never resent).")
                    return result
            else:
                result = await call_next(ctx)
            if _is_error(result):
                outcome = "error"
            return result
        except BaseException:
            outcome = "error"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.tool_calls.labels(tool, outcome).inc()
            self.metrics.tool_seconds.labels(tool).observe(elapsed)
            content = _structured(result)
            log.info("tool call %s: %s", tool, outcome, extra={
                "tool": tool, "outcome": outcome, "duration_ms": round(elapsed * 1000, 1),
                "plan_id": content.get("plan_id"), "protocol": getattr(ctx, "protocol_version", None)})
            current_caller.reset(reset)
