"""One in-memory MCP session on the sandbox, shared by the tool and safety tests.

Use it as a context manager inside the test: an async yield fixture would enter the client's cancel scopes in
one task and leave them in another under pytest-asyncio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client

from sms_mcp.config import Settings
from sms_mcp.server import build_server
from sms_mcp.wire.sandbox import SandboxTransport


async def call_ok(client: Client, tool: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """A tool call that must succeed; its structured result."""
    result = await client.call_tool(tool, args, **kw)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def call_refused(client: Client, tool: str, args: dict[str, Any]) -> str:
    """A tool call that must be refused; the error text the model sees."""
    result = await client.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return "".join(getattr(c, "text", "") for c in result.content)


class Box:
    """A connected client plus the sandbox it talks to."""

    def __init__(self, client: Client, transport: SandboxTransport, data_dir: Path) -> None:
        self.client = client
        self.transport = transport
        self.data_dir = data_dir

    async def ok(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        return await call_ok(self.client, tool, args)

    async def refused(self, tool: str, args: dict[str, Any]) -> str:
        return await call_refused(self.client, tool, args)

    async def send(self, args: dict[str, Any]) -> dict[str, Any]:
        """Both steps of send_sms: prepare, then confirm with the plan's token."""
        plan = await self.ok("send_sms", args)
        return await self.ok("send_sms", {**args, "confirm_token": plan["confirm_token"]})

    def sent(self) -> list[dict[str, Any]]:
        """Every message the emulator accepted."""
        return self.transport.core.messages()

    def plan_state(self, plan_id: str) -> str:
        with sqlite3.connect(self.data_dir / "ledger.sqlite3") as db:
            return db.execute("SELECT state FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()[0]


def reconcile_at_once(settings: Settings) -> Settings:
    """Tests settle an unknown send at once. The setting itself refuses a grace below the timeouts plus a margin
    (config.py), so this is a copy made after validation, for tests only."""
    return settings.model_copy(update={"reconcile_grace_seconds": 0.0})


def sandbox_settings(data_dir: Path, **env: str) -> Settings:
    return reconcile_at_once(Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "sandbox",
                                                "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0", **env}))


@asynccontextmanager
async def box(
    data_dir: Path, era: str = "auto", *, human: Callable[..., Awaitable[Any]] | None = None, **env: str
) -> AsyncIterator[Box]:
    """A session in protocol era ``era`` ("auto" = 2026-07-28, "legacy" = 2025-11-25); ``human`` answers
    elicitation requests (the client then declares form elicitation)."""
    settings = sandbox_settings(data_dir, **env)
    transport = SandboxTransport.from_settings(settings)
    async with Client(build_server(settings, transport), mode=era,  # type: ignore[arg-type]
                      elicitation_callback=human) as client:
        yield Box(client, transport, data_dir)
