"""The sandbox backend: the in-process Dysmsapi emulator, persisted under the data directory. No real SMS.

State lives in ``<data_dir>/sandbox.sqlite3``, so a message sent by one server process can be queried for its
receipt by the next one, exactly as with the real service.
"""

from __future__ import annotations

from sms_mcp.config import Settings
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.base import WireBody, WireParams

DB_FILENAME = "sandbox.sqlite3"


class SandboxTransport:
    """:class:`~sms_mcp.wire.base.Transport` over :class:`EmulatorCore` (exposed as ``core`` for tests)."""

    name = "sandbox"

    def __init__(self, core: EmulatorCore) -> None:
        self.core = core

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxTransport:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        core = EmulatorCore(settings.data_dir / DB_FILENAME, receipt_delay=settings.sandbox_receipt_delay)
        return cls(core)

    async def start(self) -> None:
        """Nothing to acquire: the database was opened (and seeded) by ``from_settings``."""

    async def call(self, action: str, params: WireParams) -> WireBody:
        # A local SQLite transaction takes well under a millisecond; a thread hop would cost more than it saves.
        return self.core.handle(action, params)

    async def aclose(self) -> None:
        self.core.close()
