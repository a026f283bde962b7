"""SQLite-only behaviour of the ledger adapter: ledgers written by sms-mcp 0.1 (schema version 0) keep working
after the upgrade, and the adapter's own guards (a newer schema, a file replaced under it)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sms_mcp.config import Settings
from sms_mcp.core.lifecycle import ChunkState, PlanState
from sms_mcp.core.planner import SendRequest
from sms_mcp.core.ports import LOCAL_PRINCIPAL, LedgerUnavailable
from sms_mcp.core.service import SmsService
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.ledger.sqlite import SCHEMA_VERSION, SqliteLedger
from sms_mcp.wire.sandbox import SandboxTransport

REPO = Path(__file__).resolve().parent.parent
ARGS = {"sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "M1", "date": "周二"}}


#: The schema sms-mcp 0.1.0 wrote (unversioned), verbatim.
V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id     TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    tool        TEXT NOT NULL,
    args_hash   TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    sent_at     REAL,
    plan_json   TEXT NOT NULL,
    content_hash TEXT
);
CREATE INDEX IF NOT EXISTS plans_args ON plans(args_hash);
CREATE TABLE IF NOT EXISTS chunks (
    plan_id       TEXT NOT NULL,
    chunk_no      INTEGER NOT NULL,
    state         TEXT NOT NULL,
    action        TEXT NOT NULL,
    params_json   TEXT NOT NULL,
    recipients    TEXT NOT NULL,
    out_id        TEXT NOT NULL,
    owner         TEXT,
    claimed_at    REAL,
    biz_id        TEXT,
    request_id    TEXT,
    error_code    TEXT,
    error_message TEXT,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (plan_id, chunk_no)
);
CREATE TABLE IF NOT EXISTS sends (
    number        TEXT NOT NULL,
    sign_name     TEXT NOT NULL,
    template_code TEXT NOT NULL,
    template_type TEXT NOT NULL,
    sent_at       REAL NOT NULL,
    plan_id       TEXT NOT NULL,
    chunk_no      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_number ON sends(number, sign_name);
CREATE INDEX IF NOT EXISTS sends_time ON sends(sent_at);
"""


def write_v0_plan(db: sqlite3.Connection, plan_id: str, token: str, request: SendRequest, summary: dict[str, Any],
                  params: dict[str, str], now: float) -> None:
    """A plan and its chunk as 0.1's Ledger.create stored them."""
    db.execute("INSERT INTO plans (plan_id, token_hash, tool, args_hash, content_hash, state, created_at, expires_at, "
               "updated_at, plan_json) VALUES (?, ?, 'send_sms', ?, ?, 'prepared', ?, ?, ?, ?)",
               (plan_id, hashlib.sha256(token.encode()).hexdigest(), request.args_hash, request.content_hash, now,
                now + 600, now, json.dumps(summary, ensure_ascii=False)))
    number = params["PhoneNumbers"]
    db.execute("INSERT INTO chunks (plan_id, chunk_no, state, action, params_json, recipients, out_id, updated_at) "
               "VALUES (?, 1, 'pending', 'SendSms', ?, ?, ?, ?)",
               (plan_id, json.dumps(params, ensure_ascii=False),
                json.dumps([{"number": number, "sign": "速通科技"}], ensure_ascii=False), plan_id, now))


def test_a_version_0_ledger_is_migrated_and_its_plans_still_work(tmp_path: Path) -> None:
    """A plan prepared by 0.1 is confirmed by this version with its token; a send 0.1 left unknown still blocks
    an identical plan; the flow-control history carries over."""
    path = tmp_path / "ledger.sqlite3"
    now = time.time()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(V0_SCHEMA)
    summary = {"plan_id": "plan_old1", "action": "SendSms", "template_code": "SMS_900000002",
               "template_name": "发货通知", "template_type": "notification", "sign_names": ["速通科技"],
               "recipient_count": 1, "domestic_count": 1, "international_count": 0, "duplicates_removed": [],
               "total_segments": 1, "previews": [], "out_id": "plan_old1", "chunk_count": 1, "warnings": []}
    params = {"PhoneNumbers": "13700009901", "SignName": "速通科技", "TemplateCode": "SMS_900000002",
              "OutId": "plan_old1", "TemplateParam": json.dumps(ARGS["template_param"], ensure_ascii=False)}
    # A plan 0.1 prepared and nobody confirmed yet (args and content hashed as 0.1 did).
    waiting = SendRequest.send_sms(["13700009901"], ARGS["sign_name"], ARGS["template_code"],
                                   ARGS["template_param"], None)
    write_v0_plan(db, "plan_old1", "smt_old-token", waiting, summary, params, now)
    # And one 0.1 left unknown (its process died mid-send), with its message in the send history.
    lost = SendRequest.send_sms(["13700009902"], ARGS["sign_name"], ARGS["template_code"], ARGS["template_param"],
                                None)
    write_v0_plan(db, "plan_old2", "smt_old-token-2", lost, {**summary, "plan_id": "plan_old2"},
                  {**params, "PhoneNumbers": "13700009902", "OutId": "plan_old2"}, now)
    db.execute("UPDATE plans SET state = 'sending', sent_at = ? WHERE plan_id = 'plan_old2'", (now,))
    db.execute("UPDATE chunks SET state = 'unknown', owner = 'oldhost:123', claimed_at = ?, "
               "error_code = 'sms_mcp.OUTCOME_UNKNOWN' WHERE plan_id = 'plan_old2'", (now,))
    db.execute("INSERT INTO sends VALUES ('13700009902', '速通科技', 'SMS_900000002', 'notification', ?, "
               "'plan_old2', 1)", (now,))
    db.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0

    core = EmulatorCore(None, receipt_delay=0.0)
    settings = Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path), "SMS_MCP_BACKEND": "sandbox"})
    service = SmsService(settings, SandboxTransport(core))
    try:
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        import asyncio

        async def scenario() -> None:
            record = await service.ledger.get_plan("plan_old1")
            assert record.principal == LOCAL_PRINCIPAL and record.template_type == "notification"
            sent = await service.send_sms(["13700009901"], **ARGS, confirm_token="smt_old-token")  # type: ignore[arg-type]
            assert sent.status == "accepted" and sent.replayed is False
            from sms_mcp.core.errors import SmsError

            try:
                await service.send_sms(["13700009902"], **ARGS)  # type: ignore[arg-type]
            except SmsError as err:
                assert err.code == "sms_mcp.UNRECONCILED" and "plan_old2" in err.message
            else:
                raise AssertionError("the unknown 0.1 send must block an identical plan")
            chunk = (await service.ledger.chunks("plan_old2"))[0]
            assert chunk.state is ChunkState.UNKNOWN
            assert await service.ledger.sends_since(0) == 2  # 0.1's history counts for flow control

        asyncio.run(scenario())
        assert [m["out_id"] for m in core.messages()] == ["plan_old1"]
    finally:
        service.ledger.close()
        core.close()


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger.open_sync(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerUnavailable) as refused:
        SqliteLedger.open_sync(path)
    assert refused.value.location == str(path) and "newer" in refused.value.reason


async def test_a_ledger_replaced_under_a_running_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await SqliteLedger.open(path)
    try:
        assert (await ledger.health()).plans == 0
        path.rename(tmp_path / "moved.sqlite3")
        SqliteLedger.open_sync(path).close()  # a fresh, empty ledger where the old one was
        with pytest.raises(LedgerUnavailable) as refused:
            await ledger.get_plan("p")
        assert "deleted or replaced" in refused.value.reason
    finally:
        await ledger.aclose()


@pytest.mark.parametrize(("modules", "forbidden"), [
    # Imports flow skin -> domain -> ports <- adapters: the core imports no adapter, driver, backend or MCP.
    ("sms_mcp.core.service, sms_mcp.core.dispatcher, sms_mcp.core.reconciler",
     ("sms_mcp.ledger", "sqlite3", "sms_mcp.wire", "sms_mcp.emulator", "mcp")),
    # The emulator and the wire layer meet only on the neutral sms_mcp.dysmsapi.
    ("sms_mcp.emulator.core, sms_mcp.emulator.http, sms_mcp.emulator.signing", ("sms_mcp.wire", "sms_mcp.core")),
])
def test_layers_import_only_what_they_may(modules: str, forbidden: tuple[str, ...]) -> None:
    code = (f"import sys, {modules}; banned = {forbidden!r}; "
            "print(sorted(m for m in sys.modules if m in banned or any(m.startswith(b + '.') for b in banned)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    core = EmulatorCore(None, receipt_delay=0.0)
    service = SmsService(Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path)}), SandboxTransport(core))
    import asyncio

    plan = asyncio.run(service.send_sms(["13700009911"], **ARGS))  # type: ignore[arg-type]
    service.ledger.close()
    core.close()
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("ledger.sqlite3*"))
    assert plan.confirm_token and plan.confirm_token.encode() not in raw
    assert hashlib.sha256(plan.confirm_token.encode()).hexdigest().encode() in raw
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT state FROM plans").fetchone()[0] == PlanState.PREPARED.value


class LedgerDiesDuringTheCall(SandboxTransport):
    """The send reaches the emulator; while it is in flight the ledger file is deleted (disk pulled, operator
    error): the outcome can no longer be recorded."""

    def __init__(self, core: EmulatorCore, ledger_path: Path) -> None:
        super().__init__(core)
        self.ledger_path = ledger_path

    async def call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        body = await super().call(action, params)
        if action == "SendSms":
            self.ledger_path.unlink()
        return body


async def test_a_ledger_failing_after_the_call_says_the_sms_may_have_left(tmp_path: Path) -> None:
    from sms_mcp.core.errors import SmsError

    core = EmulatorCore(None, receipt_delay=0.0)
    service = SmsService(Settings.from_env({"SMS_MCP_DATA_DIR": str(tmp_path)}),
                         LedgerDiesDuringTheCall(core, tmp_path / "ledger.sqlite3"))
    try:
        plan = await service.send_sms(["13700009921"], **ARGS)  # type: ignore[arg-type]
        with pytest.raises(SmsError) as failed:
            await service.send_sms(["13700009921"], **ARGS, confirm_token=plan.confirm_token)  # type: ignore[arg-type]
        text = failed.value.render()
        assert text.startswith("[sms_mcp.LEDGER_FAILED_MID_SEND]") and "may have been sent" in text
        assert "Do NOT send again" in text and plan.plan_id in text
        assert len(core.messages()) == 1  # it did leave
    finally:
        service.ledger.close()
        core.close()
