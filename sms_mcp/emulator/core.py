"""EmulatorCore: an in-process implementation of the ten Dysmsapi actions over SQLite.

This is not a table of canned replies: signatures, templates and qualifications live in the database
(seeded with the demo account of :mod:`sms_mcp.emulator.seed`), every accepted message is stored with its
rendered content and its receipt schedule, flow control counts stored messages, and the query actions compute
their answers from what was stored. Response bodies reproduce Alibaba's wire shapes exactly, quirks included
(dysmsapi.md §2-§3), because the rest of sms-mcp and the official SDK must not be able to tell the emulator
from the service.

Concurrency: one lock per instance serialises threads; several processes may share one database file (WAL
journal, busy timeout, and every send runs in a ``BEGIN IMMEDIATE`` transaction so that two processes cannot
both pass the same flow-control check).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

from sms_mcp.dysmsapi import GatewayError, WireBody
from sms_mcp.emulator import seed
from sms_mcp.emulator.numbers import PhoneNumber, parse_number
from sms_mcp.sqlite_wal import enable_wal

#: Alibaba's dates and flow-control windows are in China Standard Time.
CST = timezone(timedelta(hours=8))
HOST_ID = "dysmsapi.aliyuncs.com"

MAX_SEND_SMS_NUMBERS = 1000
MAX_SEND_BATCH_NUMBERS = 100
MAX_PARAM_LENGTH = 35
MAX_CONTENT_LENGTH = 500
QUERY_LOOKBACK_DAYS = 30
DAY = 86400.0
_INT64_MAX = 2**63 - 1

_VARIABLE = re.compile(r"\$\{([^}]+)\}")
# ASCII-only boundaries: ``\b`` treats CJK characters as word characters, so "详见bit.ly/x" would slip through.
_URL = re.compile(
    r"(?i)(?:https?://|ftp://|www\.|(?<![a-z0-9])[a-z0-9-]+\.(?:com|cn|net|org|top|xyz|io|cc|vip|shop|info|me|co|ly"
    r"|link)(?![a-z0-9]))"
)
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_YYYYMMDD = re.compile(r"[0-9]{8}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signs (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, audit_status TEXT NOT NULL, business_type TEXT NOT NULL,
    create_date TEXT NOT NULL, audit_date TEXT NOT NULL, reject_info TEXT NOT NULL, order_id TEXT NOT NULL,
    qualification_id INTEGER NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    code TEXT PRIMARY KEY, position INTEGER NOT NULL, name TEXT NOT NULL, outer_type INTEGER NOT NULL,
    content TEXT NOT NULL, audit_status TEXT NOT NULL, variables TEXT NOT NULL, related_sign TEXT NOT NULL,
    create_date TEXT NOT NULL, audit_date TEXT NOT NULL, reject_info TEXT NOT NULL, order_id TEXT NOT NULL,
    remark TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS qualifications (
    group_id INTEGER PRIMARY KEY, name TEXT NOT NULL, company TEXT NOT NULL, legal_person TEXT NOT NULL,
    state_name TEXT NOT NULL, state TEXT NOT NULL, use_by_self INTEGER NOT NULL,
    work_order_id INTEGER NOT NULL,
    audit_remark TEXT NOT NULL, audit_time TEXT NOT NULL, create_date TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    biz_id TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    international INTEGER NOT NULL,
    sign_name TEXT NOT NULL,
    template_code TEXT NOT NULL,
    outer_type INTEGER NOT NULL,
    content TEXT NOT NULL,
    out_id TEXT,
    send_time REAL NOT NULL,
    receipt_time REAL NOT NULL,
    -- The receipt the carrier will report at receipt_time; NULL status = the receipt never arrives.
    final_status INTEGER,
    final_err_code TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_number ON messages (phone_number, send_time);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (send_time);
CREATE INDEX IF NOT EXISTS messages_by_biz_id ON messages (biz_id);
"""
_SCHEMA_VERSION = "1"


class _BusinessError(Exception):
    """An ``isv.*`` answer: returned as an HTTP 200 body with ``Code != "OK"``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _GatewayFault(Exception):
    """A gateway refusal; turned into :class:`GatewayError` once the request id is known."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> _BusinessError:
    return _BusinessError("isv.INVALID_PARAMETERS", f"参数格式不正确：{message}")


def _json_error(message: str) -> _BusinessError:
    return _BusinessError("isv.INVALID_JSON_PARAM", f"JSON参数不合法，只接受字符串值：{message}")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _loads(raw: str) -> Any:
    """json.loads, with absurd nesting reported as bad JSON instead of a RecursionError."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _offset(page: int, page_size: int) -> int:
    # Clamped: a huge page number must give an empty page, not an integer SQLite cannot bind.
    return min((page - 1) * page_size, _INT64_MAX)


def _new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _new_biz_id() -> str:
    # Real BizIds look like "336006646937050335^0": 18 digits, then "^0".
    return f"{secrets.randbelow(9 * 10**17) + 10**17}^0"


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, CST).strftime("%Y-%m-%d %H:%M:%S")


def _cst_date(ts: float) -> date:
    return datetime.fromtimestamp(ts, CST).date()


def _day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=CST).timestamp()


def _parse_yyyymmdd(raw: str, name: str) -> date:
    text = raw.strip()
    if not _YYYYMMDD.fullmatch(text):
        raise _invalid(f"{name} 应为 yyyyMMdd 格式的日期")
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise _invalid(f"{name}={text} 不是有效日期") from None


def _require(params: Mapping[str, str], *names: str) -> None:
    for name in names:
        if not params.get(name, "").strip():
            raise _GatewayFault(400, f"Missing{name}", f"{name} is mandatory for this action.")


def _int_param(
    params: Mapping[str, str],
    name: str,
    default: int | None = None,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        if default is None:  # required parameters were checked by _require
            raise _GatewayFault(400, f"Missing{name}", f"{name} is mandatory for this action.")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(f"{name} 应为整数") from None
    # Every integer on this API is at most int64, and SQLite cannot bind anything wider.
    low = -_INT64_MAX if low is None else low
    high_bound = _INT64_MAX if high is None else high
    if value < low or value > high_bound:
        bounds = f"{low} 到 {high} 之间" if high is not None else f"不小于 {low}"
        raise _invalid(f"{name} 应在 {bounds}")
    return value


def _bool_param(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name, "").strip().lower()
    if not raw:
        return None
    # The Python SDK sends str(True) == "True"; accept the lowercase JSON spelling as well.
    if raw in ("true", "false"):
        return raw == "true"
    raise _invalid(f"{name} 应为 true 或 false")


class EmulatorCore:
    """The Dysmsapi emulator. ``handle(action, params)`` returns the wire body or raises ``GatewayError``."""

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        receipt_delay: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = None if db_path is None else Path(db_path)
        self.receipt_delay = float(receipt_delay)
        self._clock = clock
        self._lock = threading.RLock()
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE for writes), never implicit.
        conn = sqlite3.connect(
            ":memory:" if self.db_path is None else str(self.db_path),
            timeout=30.0,
            isolation_level=None,
            check_same_thread=False,  # access is serialised by self._lock
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        if self.db_path is not None:
            enable_wal(conn, 30.0)
            conn.execute("PRAGMA synchronous = NORMAL")
        self._conn: sqlite3.Connection | None = conn
        try:
            self._open()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    # ------------------------------------------------------------------ plumbing

    def _open(self) -> None:
        # executescript() commits implicitly, so the schema is created outside the seeding transaction;
        # CREATE ... IF NOT EXISTS makes that safe when several processes open the same file at once.
        self._connection().executescript(_SCHEMA)
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'seeded'").fetchone()
            if row is None:
                seed.populate(conn)
                conn.execute("INSERT INTO meta (key, value) VALUES ('seeded', ?)", (_SCHEMA_VERSION,))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the write lock up front so check-then-insert is atomic."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("EmulatorCore is closed")
        return self._conn

    def close(self) -> None:
        """Close the database. Safe to call more than once."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def now(self) -> float:
        return float(self._clock())

    # ------------------------------------------------------------------ public API

    def handle(self, action: str, params: Mapping[str, str]) -> WireBody:
        """Perform one action: the wire body (``Code`` "OK" or an ``isv.*`` code), or raise GatewayError."""
        request_id = _new_request_id()
        handler = self._HANDLERS.get(action)
        wire = {str(k): "" if v is None else str(v) for k, v in params.items()}
        try:
            if handler is None:
                raise _GatewayFault(
                    404,
                    "InvalidApi.NotFound",
                    "Specified api is not found, please check your url and method.",
                )
            with self._lock:
                try:
                    if not all(_is_utf8(k) and _is_utf8(v) for k, v in wire.items()):
                        # Lone surrogates cannot travel in a UTF-8 request, so the real service never sees them.
                        raise _invalid("参数不是合法的 UTF-8 文本")
                    body = handler(self, wire)
                except _BusinessError as exc:
                    body = {"Code": exc.code, "Message": exc.message}
                    if action in ("QuerySmsQualificationRecord", "QuerySingleSmsQualification"):
                        body.update({"Success": False, "AccessDeniedDetail": ""})
        except _GatewayFault as fault:
            error = GatewayError(
                status=fault.status,
                code=fault.code,
                message=fault.message,
                request_id=request_id,
                host_id=HOST_ID,
                recommend=(
                    f"https://api.aliyun.com/troubleshoot?q={fault.code}&product=Dysmsapi&requestId={request_id}"
                ),
            )
            error.body = error.to_body()
            raise error from None
        return {"RequestId": request_id, **body}

    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message in sending order, with its receipt status as of now (for tests)."""
        with self._lock:
            rows = self._connection().execute("SELECT * FROM messages ORDER BY id").fetchall()
            now = self.now()
        result = []
        for row in rows:
            status, err_code, _ = self._receipt(row, now)
            result.append(
                {
                    "biz_id": row["biz_id"],
                    "phone_number": row["phone_number"],
                    "sign_name": row["sign_name"],
                    "template_code": row["template_code"],
                    "content": row["content"],
                    "out_id": row["out_id"],
                    "send_time": row["send_time"],
                    "send_status": status,
                    "err_code": err_code,
                }
            )
        return result

    def add_template(
        self,
        code: str,
        name: str,
        outer_type: int,
        content: str,
        *,
        audit_status: str = "AUDIT_STATE_PASS",
        variables: Mapping[str, str] | None = None,
        related_sign: str = "",
    ) -> None:
        """Add a template to the account (tests and demos; the real CreateSmsTemplate is out of scope)."""
        if outer_type not in seed.OUTER_TO_LIST_TYPE:
            raise ValueError(f"unknown template type {outer_type}")
        if audit_status not in seed.TEMPLATE_STATUS_CODES:
            raise ValueError(f"unknown audit status {audit_status!r}")
        names = _VARIABLE.findall(content)
        attrs = dict(variables) if variables is not None else {n: "others" for n in names}
        today = _fmt_time(self.now())
        with self._lock, self._write() as conn:
            seed.insert_template(
                conn,
                {
                    "code": code,
                    "name": name,
                    "outer_type": outer_type,
                    "content": content,
                    "audit_status": audit_status,
                    "variables": attrs,
                    "related_sign": related_sign,
                    "create_date": today,
                    "audit_date": today if audit_status != "AUDIT_STATE_INIT" else "",
                    "reject_info": seed.NO_REMARK,
                    "order_id": str(secrets.randbelow(9 * 10**10) + 10**10),
                    "remark": "",
                },
            )

    # ------------------------------------------------------------------ receipts

    def _receipt(self, row: sqlite3.Row, now: float) -> tuple[int, str, str]:
        """(SendStatus, ErrCode, ReceiveDate) of a stored message as of ``now``."""
        if row["final_status"] is None or now < row["receipt_time"]:
            return 1, "", ""
        return int(row["final_status"]), row["final_err_code"], _fmt_time(row["receipt_time"])

    # ------------------------------------------------------------------ sends

    def _send_sms(self, p: dict[str, str]) -> WireBody:
        _require(p, "PhoneNumbers", "SignName", "TemplateCode")
        raw_numbers = p["PhoneNumbers"].split(",")
        if len(raw_numbers) > MAX_SEND_SMS_NUMBERS:
            raise _BusinessError(
                "isv.MOBILE_COUNT_OVER_LIMIT", f"手机号码数量超过限制：单次最多 {MAX_SEND_SMS_NUMBERS} 个号码"
            )
        raw_param = p.get("TemplateParam", "")
        template_param: Any = _MISSING
        if raw_param.strip():
            try:
                template_param = _loads(raw_param)
            except ValueError:
                raise _json_error("TemplateParam 不是合法的 JSON") from None
        sign = p["SignName"].strip()
        return self._accept(
            [(n, sign, template_param) for n in raw_numbers],
            p["TemplateCode"].strip(),
            p.get("OutId") or None,
        )

    def _send_batch_sms(self, p: dict[str, str]) -> WireBody:
        _require(p, "PhoneNumberJson", "SignNameJson", "TemplateCode")
        numbers = _json_array(p["PhoneNumberJson"], "PhoneNumberJson")
        signs = _json_array(p["SignNameJson"], "SignNameJson")
        if not all(isinstance(n, str) for n in numbers):
            raise _json_error("PhoneNumberJson 的元素必须是字符串")
        if not all(isinstance(s, str) for s in signs):
            raise _json_error("SignNameJson 的元素必须是字符串")
        if len(numbers) > MAX_SEND_BATCH_NUMBERS:
            raise _BusinessError(
                "isv.MOBILE_COUNT_OVER_LIMIT",
                f"手机号码数量超过限制：单次最多 {MAX_SEND_BATCH_NUMBERS} 个号码",
            )
        if len(signs) != len(numbers):
            raise _json_error("SignNameJson 与 PhoneNumberJson 的长度必须一致")
        template_params: list[Any] = [_MISSING] * len(numbers)
        if p.get("TemplateParamJson", "").strip():
            template_params = _json_array(p["TemplateParamJson"], "TemplateParamJson")
            if len(template_params) != len(numbers):
                raise _json_error("TemplateParamJson 与 PhoneNumberJson 的长度必须一致")
        if p.get("SmsUpExtendCodeJson", "").strip():
            codes = _json_array(p["SmsUpExtendCodeJson"], "SmsUpExtendCodeJson")
            if len(codes) != len(numbers) or not all(isinstance(c, str) for c in codes):
                raise _json_error("SmsUpExtendCodeJson 必须是与 PhoneNumberJson 等长的字符串数组")
        entries = [(n, s.strip(), tp) for n, s, tp in zip(numbers, signs, template_params, strict=True)]
        return self._accept(entries, p["TemplateCode"].strip(), p.get("OutId") or None)

    def _accept(self, entries: list[tuple[str, str, Any]], template_code: str, out_id: str | None) -> WireBody:
        """Validate a whole send, then store every message, or nothing (one transaction)."""
        if not entries:
            raise _BusinessError("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号：没有手机号码")
        with self._write() as conn:
            now = self.now()
            template = conn.execute("SELECT * FROM templates WHERE code = ?", (template_code,)).fetchone()
            signs: dict[str, sqlite3.Row] = {}
            for _, sign_name, _ in entries:
                if sign_name not in signs:
                    signs[sign_name] = self._usable_sign(conn, sign_name)
            if template is None or template["audit_status"] != "AUDIT_STATE_PASS":
                raise _BusinessError(
                    "isv.SMS_TEMPLATE_ILLEGAL", f"该账号下找不到对应模板：{template_code} 不存在或未审核通过"
                )
            outer_type = int(template["outer_type"])
            for sign in signs.values():
                if sign["business_type"] == seed.VERIFICATION_SIGN and outer_type != seed.VERIFICATION:
                    raise _BusinessError(
                        "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
                        f"签名和模板类型不一致：验证码签名 {sign['name']} 只能发送验证码模板",
                    )
            numbers: list[PhoneNumber] = []
            for position, (raw, _, _) in enumerate(entries, start=1):
                number = parse_number(raw, international_first=outer_type == seed.INTERNATIONAL)
                if number is None:
                    # The position, not the number: messages end up in logs, and numbers are personal data.
                    raise _BusinessError("isv.MOBILE_NUMBER_ILLEGAL", f"非法手机号：第 {position} 个号码格式错误")
                numbers.append(number)
            for number in numbers:
                if outer_type == seed.INTERNATIONAL and not number.international:
                    raise _BusinessError("isv.DOMESTIC_NUMBER_NOT_SUPPORTED", "国际/港澳台消息模板不支持发送境内号码")
                if outer_type != seed.INTERNATIONAL and number.international:
                    raise _BusinessError(
                        "isv.MOBILE_NUMBER_ILLEGAL",
                        "非法手机号：国内短信模板不能发送到国际/港澳台号码 "
                        "(domestic templates cannot be sent to international numbers)",
                    )
            variables: dict[str, str] = json.loads(template["variables"])
            contents = [
                _render(sign_name, template, variables, template_param) for (_, sign_name, template_param) in entries
            ]
            pending: list[tuple[str, str]] = []
            for number, (_, sign_name, _) in zip(numbers, entries, strict=True):
                self._flow_control(conn, number.digits, sign_name, template, now, pending)
                pending.append((number.digits, sign_name))
            biz_id = _new_biz_id()
            for number, (_, sign_name, _), content in zip(numbers, entries, contents, strict=True):
                fixed = seed.FIXED_RECEIPTS.get(number.digits, (3, "DELIVERED"))
                conn.execute(
                    "INSERT INTO messages (biz_id, phone_number, international, sign_name, template_code, "
                    "outer_type, content, out_id, send_time, receipt_time, final_status, final_err_code) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        biz_id,
                        number.digits,
                        int(number.international),
                        sign_name,
                        template_code,
                        outer_type,
                        content,
                        out_id,
                        now,
                        now + self.receipt_delay,
                        None if fixed is None else fixed[0],
                        "" if fixed is None else fixed[1],
                    ),
                )
        return {"Code": "OK", "Message": "OK", "BizId": biz_id}

    def _usable_sign(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        sign = conn.execute("SELECT * FROM signs WHERE name = ?", (name,)).fetchone()
        if sign is None or sign["audit_status"] == "AUDIT_STATE_INIT":
            raise _BusinessError("isv.SMS_SIGNATURE_ILLEGAL", f"该账号下找不到对应签名：{name} 不存在或未审核通过")
        if sign["audit_status"] != "AUDIT_STATE_PASS":
            raise _BusinessError("isv.SMS_SIGN_ILLEGAL", f"签名禁止使用：{name} 审核未通过或已取消")
        return sign

    def _flow_control(
        self,
        conn: sqlite3.Connection,
        phone: str,
        sign_name: str,
        template: sqlite3.Row,
        now: float,
        pending: list[tuple[str, str]],
    ) -> None:
        """Alibaba's per-number limits (dysmsapi.md §9.4), counting earlier numbers of this same call too."""
        outer_type = int(template["outer_type"])
        earlier_in_call = pending.count((phone, sign_name))
        if outer_type == seed.VERIFICATION:
            # Same signature -> same number, any verification template. Minute and hour are natural clock
            # windows in UTC+8; the offset is a whole number of hours, so they start where UTC's do.
            rows = conn.execute(
                "SELECT send_time FROM messages WHERE phone_number = ? AND sign_name = ? AND outer_type = ? "
                "AND send_time > ?",
                (phone, sign_name, seed.VERIFICATION, now - DAY),
            ).fetchall()
            times = [r[0] for r in rows] + [now] * earlier_in_call
            minute_start = math.floor(now / 60) * 60
            hour_start = math.floor(now / 3600) * 3600
            if sum(t >= minute_start for t in times) >= 1:
                raise _BusinessError("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
            if sum(t >= hour_start for t in times) >= 5:
                raise _BusinessError("isv.BUSINESS_LIMIT_CONTROL", "触发小时级流控Permits:5")
            if len(times) >= 10:
                raise _BusinessError("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:10")
        elif outer_type in (seed.NOTIFICATION, seed.PROMOTIONAL, seed.DIGITAL):
            # Same signature + same template -> same number: 50 per rolling 24 h.
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE phone_number = ? AND sign_name = ? "
                "AND template_code = ? AND send_time > ?",
                (phone, sign_name, template["code"], now - DAY),
            ).fetchone()
            if count + earlier_in_call >= 50:
                raise _BusinessError("isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:50")

    # ------------------------------------------------------------------ delivery queries

    def _query_send_details(self, p: dict[str, str]) -> WireBody:
        _require(p, "PhoneNumber", "SendDate", "PageSize", "CurrentPage")
        number = parse_number(p["PhoneNumber"])
        if number is None:
            raise _BusinessError("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号：PhoneNumber 格式错误")
        day = _parse_yyyymmdd(p["SendDate"], "SendDate")
        now = self.now()
        if (_cst_date(now) - day).days > QUERY_LOOKBACK_DAYS:
            raise _invalid(f"SendDate 只能查询最近 {QUERY_LOOKBACK_DAYS} 天的记录")
        page_size = _int_param(p, "PageSize", low=1, high=50)
        page = _int_param(p, "CurrentPage", low=1)
        where = "phone_number = ? AND send_time >= ? AND send_time < ?"
        args: list[Any] = [number.digits, _day_start(day), _day_start(day) + DAY]
        biz_id = p.get("BizId", "").strip()
        if biz_id:
            # The "^0" suffix is part of the BizId; accept it with or without.
            where += " AND (biz_id = ? OR biz_id LIKE ?)"
            args += [biz_id, biz_id.split("^")[0] + "^%"]
        conn = self._connection()
        (total,) = conn.execute(f"SELECT COUNT(*) FROM messages WHERE {where}", args).fetchone()
        rows = conn.execute(
            f"SELECT * FROM messages WHERE {where} ORDER BY send_time DESC, id DESC LIMIT ? OFFSET ?",
            [*args, page_size, _offset(page, page_size)],
        ).fetchall()
        details = []
        for row in rows:
            status, err_code, receive_date = self._receipt(row, now)
            detail: dict[str, Any] = {
                "ErrCode": err_code,
                "TemplateCode": row["template_code"],
                "ReceiveDate": receive_date,
                "SendDate": _fmt_time(row["send_time"]),
                "PhoneNum": row["phone_number"],
                "Content": row["content"],
                "SendStatus": status,
            }
            if row["out_id"] is not None:
                detail["OutId"] = row["out_id"]
            details.append(detail)
        return {
            "Code": "OK",
            "Message": "OK",
            "TotalCount": str(total),  # a string on the wire, unlike every other count
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": details},
        }

    def _query_send_statistics(self, p: dict[str, str]) -> WireBody:
        _require(p, "IsGlobe", "StartDate", "EndDate", "PageIndex", "PageSize")
        is_globe = _int_param(p, "IsGlobe", low=1, high=2)
        start = _parse_yyyymmdd(p["StartDate"], "StartDate")
        end = _parse_yyyymmdd(p["EndDate"], "EndDate")
        if end < start:
            raise _invalid("EndDate 不能早于 StartDate")
        page = _int_param(p, "PageIndex", low=1)
        page_size = _int_param(p, "PageSize", low=1, high=50)
        where = "international = ? AND send_time >= ? AND send_time < ?"
        args: list[Any] = [int(is_globe == 2), _day_start(start), _day_start(end) + DAY]
        if p.get("TemplateType", "").strip():
            template_type = _int_param(p, "TemplateType")
            if template_type not in seed.OUTER_TO_LIST_TYPE:
                raise _invalid("TemplateType 取值应为 0、1、2、3 或 7")
            where += " AND outer_type = ?"
            args.append(template_type)
        if p.get("SignName", "").strip():
            where += " AND sign_name = ?"
            args.append(p["SignName"].strip())
        now = self.now()
        days: dict[str, dict[str, Any]] = {}
        for row in self._connection().execute(f"SELECT * FROM messages WHERE {where} ORDER BY send_time", args):
            key = _cst_date(row["send_time"]).strftime("%Y%m%d")
            stats = days.setdefault(
                key,
                {
                    "TotalCount": 0,
                    "RespondedSuccessCount": 0,
                    "RespondedFailCount": 0,
                    "NoRespondedCount": 0,
                    "SendDate": key,
                },
            )
            status, _, _ = self._receipt(row, now)
            stats["TotalCount"] += 1
            if status == 3:
                stats["RespondedSuccessCount"] += 1
            elif status == 2:
                stats["RespondedFailCount"] += 1
            else:
                stats["NoRespondedCount"] += 1
        ordered = [days[k] for k in sorted(days)]
        page_rows = ordered[(page - 1) * page_size : page * page_size]
        return {
            "Code": "OK",
            "Message": "OK",
            "Data": {"TotalSize": len(ordered), "TargetList": page_rows},
        }

    # ------------------------------------------------------------------ signatures and templates

    def _list_page(self, p: dict[str, str], table: str) -> tuple[int, int, int, list[sqlite3.Row]]:
        """PageIndex/PageSize paging (defaults 1 and 10, size 1-50) over the signs or templates table."""
        page = _int_param(p, "PageIndex", 1, low=1)
        page_size = _int_param(p, "PageSize", 10, low=1, high=50)
        conn = self._connection()
        (total,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        rows = conn.execute(
            f"SELECT * FROM {table} ORDER BY position LIMIT ? OFFSET ?", (page_size, _offset(page, page_size))
        ).fetchall()
        return page, page_size, total, rows

    def _query_sms_sign_list(self, p: dict[str, str]) -> WireBody:
        page, page_size, total, rows = self._list_page(p, "signs")
        signs = []
        for row in rows:
            signs.append(
                {
                    "SignName": row["name"],
                    "AuditStatus": row["audit_status"],
                    "CreateDate": row["create_date"],
                    "Reason": _list_reason(row),
                    "BusinessType": row["business_type"],
                    "OrderId": row["order_id"],
                    "AppIcpRecordId": 0,
                    "TrademarkId": 0,
                    "AuthorizationLetterId": 0,
                    # Lowercase first letter: that is how the list API really spells it (GetSmsSign does not).
                    "authorizationLetterAuditPass": row["audit_status"] == "AUDIT_STATE_PASS",
                }
            )
        return {
            "Code": "OK",
            "Message": "OK",
            "TotalCount": total,
            "CurrentPage": page,
            "PageSize": page_size,
            "SmsSignList": signs,
        }

    def _query_sms_template_list(self, p: dict[str, str]) -> WireBody:
        page, page_size, total, rows = self._list_page(p, "templates")
        templates = []
        for row in rows:
            templates.append(
                {
                    "TemplateCode": row["code"],
                    "TemplateName": row["name"],
                    "OuterTemplateType": row["outer_type"],
                    "TemplateType": seed.OUTER_TO_LIST_TYPE[row["outer_type"]],  # the list's own numbering
                    "AuditStatus": row["audit_status"],
                    "TemplateContent": row["content"],
                    "CreateDate": row["create_date"],
                    "Reason": _list_reason(row),
                    "OrderId": row["order_id"],
                    "SignatureName": row["related_sign"],
                }
            )
        return {
            "Code": "OK",
            "Message": "OK",
            "TotalCount": total,
            "CurrentPage": page,
            "PageSize": page_size,
            "SmsTemplateList": templates,
        }

    def _get_sms_sign(self, p: dict[str, str]) -> WireBody:
        _require(p, "SignName")
        row = self._connection().execute("SELECT * FROM signs WHERE name = ?", (p["SignName"].strip(),)).fetchone()
        if row is None:
            raise _GatewayFault(404, "SignatureNotFound", "The signature does not exist.")
        detail = json.loads(row["detail"])
        status = row["audit_status"]
        passed = status == "AUDIT_STATE_PASS"
        register_status = 3 if passed else -1 if status == "AUDIT_STATE_INIT" else -2
        register = [
            {
                "OperatorCode": operator,
                "OperatorCompleteTime": row["audit_date"] if passed else "",
                "RegisterStatus": register_status,
                "RegisterStatusReasons": [],
            }
            for operator in ("mobile", "unicom", "telecom")
        ]
        return {
            "Code": "OK",
            "Message": "OK",
            "SignName": row["name"],
            "SignStatus": seed.SIGN_STATUS_CODES[status],  # an int here, a string enum in the list
            "CreateDate": row["create_date"],
            "OrderId": row["order_id"],
            "QualificationId": row["qualification_id"],
            "Remark": detail["remark"],
            "AuditInfo": {"RejectInfo": row["reject_info"], "AuditDate": row["audit_date"]},
            "FileUrlList": [
                f"https://dysms-sign.oss-cn-hangzhou.example.com/{detail['sign_code']}/business-proof.jpg"
            ],  # bare here, wrapped in GetSmsTemplate
            "SignCode": detail["sign_code"],
            "SignTag": "2",
            "ApplyScene": detail["apply_scene"],
            "SignUsage": detail["sign_usage"],
            "ThirdParty": False,
            "AppIcpRecordId": 0,
            "TrademarkId": 0,
            "AuthorizationLetterId": 0,
            "AuthorizationLetterAuditPass": passed,
            "RegisterResult": 1 if passed else -1,
            "SignIspRegisterDetailList": register,
        }

    def _get_sms_template(self, p: dict[str, str]) -> WireBody:
        _require(p, "TemplateCode")
        row = (
            self._connection()
            .execute("SELECT * FROM templates WHERE code = ?", (p["TemplateCode"].strip(),))
            .fetchone()
        )
        if row is None:
            raise _GatewayFault(404, "TemplateNotFound", "The template does not exist.")
        body: dict[str, Any] = {
            "Code": "OK",
            "Message": "OK",
            "TemplateCode": row["code"],
            "TemplateName": row["name"],
            "TemplateContent": row["content"],
            "TemplateStatus": seed.TEMPLATE_STATUS_CODES[row["audit_status"]],  # a string here
            "TemplateType": str(row["outer_type"]),  # a string, outer numbering
            # JSON serialised into a string, exactly as Alibaba returns it.
            "VariableAttribute": json.dumps(json.loads(row["variables"]), ensure_ascii=False, separators=(",", ":")),
            "TemplateTag": 2,
            "RelatedSignName": row["related_sign"],
            "Remark": row["remark"],
            "ApplyScene": "",
            "OrderId": row["order_id"],
            "CreateDate": row["create_date"],
            "AuditInfo": {"RejectInfo": row["reject_info"], "AuditDate": row["audit_date"]},
            "FileUrlList": {"FileUrl": []},  # wrapped here, bare in GetSmsSign
            "MoreDataFileUrlList": {"MoreDataFileUrl": []},
            "SignList": {"SignList": [row["related_sign"]] if row["related_sign"] else []},
        }
        if row["outer_type"] == seed.DIGITAL:
            vendor = int(seed.TEMPLATE_STATUS_CODES[row["audit_status"]])
            body["VendorAuditStatus"] = {
                "MOBILE_VENDOR": vendor,
                "TELECOM_VENDOR": vendor,
                "UNICOM_VENDOR": vendor,
            }
        return body

    # ------------------------------------------------------------------ qualifications

    def _query_sms_qualification_record(self, p: dict[str, str]) -> WireBody:
        page = _int_param(p, "PageNo", 1, low=1)
        page_size = _int_param(p, "PageSize", 10, low=1, high=50)
        where, args = ["1 = 1"], []
        # The console's search is a fuzzy match on the names.
        for param, column in (
            ("QualificationGroupName", "name"),
            ("CompanyName", "company"),
            ("LegalPersonName", "legal_person"),
        ):
            if p.get(param, "").strip():
                where.append(f"instr({column}, ?) > 0")
                args.append(p[param].strip())
        if p.get("State", "").strip():
            state = p["State"].strip().upper()
            if state not in ("INIT", "NOT_PASS", "PASS", "NOT_FINISH", "CANCEL"):
                raise _invalid("State 取值应为 INIT、NOT_PASS、PASS、NOT_FINISH 或 CANCEL")
            where.append("state_name = ?")
            args.append(state)
        if p.get("WorkOrderId", "").strip():
            where.append("work_order_id = ?")
            args.append(_int_param(p, "WorkOrderId"))
        use_by_self = _bool_param(p, "UseBySelf")
        if use_by_self is not None:
            where.append("use_by_self = ?")
            args.append(int(use_by_self))
        clause = " AND ".join(where)
        conn = self._connection()
        (total,) = conn.execute(f"SELECT COUNT(*) FROM qualifications WHERE {clause}", args).fetchone()
        rows = conn.execute(
            f"SELECT * FROM qualifications WHERE {clause} ORDER BY group_id LIMIT ? OFFSET ?",
            [*args, page_size, _offset(page, page_size)],
        ).fetchall()
        records = [
            {
                "GroupId": row["group_id"],
                "QualificationGroupName": row["name"],
                "CompanyName": row["company"],
                "LegalPersonName": row["legal_person"],
                "StateName": row["state_name"],
                "UseBySelf": "true" if row["use_by_self"] else "false",  # a string in the list, bool in detail
                "WorkOrderId": row["work_order_id"],
                "AuditRemark": row["audit_remark"],
                "AuditTime": row["audit_time"],
                "CreateDate": row["create_date"],
            }
            for row in rows
        ]
        return {
            "Code": "OK",
            "Message": "OK",
            "Success": True,
            "AccessDeniedDetail": "",
            "Data": {"PageNo": page, "PageSize": page_size, "Total": total, "List": records},
        }

    def _query_single_sms_qualification(self, p: dict[str, str]) -> WireBody:
        _require(p, "QualificationGroupId")
        group_id = _int_param(p, "QualificationGroupId")
        row = self._connection().execute("SELECT * FROM qualifications WHERE group_id = ?", (group_id,)).fetchone()
        if row is not None and p.get("OrderId", "").strip() and _int_param(p, "OrderId") != row["work_order_id"]:
            row = None
        if row is None:
            raise _GatewayFault(404, "QualificationNotFound", "The qualification does not exist.")
        detail = json.loads(row["detail"])
        data = {
            "QualificationGroupId": row["group_id"],
            "QualificationName": row["name"],
            "WorkOrderId": row["work_order_id"],
            "Remark": detail["Remark"],
            "BusinessType": detail["BusinessType"],
            "CompanyName": row["company"],
            "CompanyType": detail["CompanyType"],
            "OrganizationCode": detail["OrganizationCode"],
            "EffTimeStr": detail["EffTimeStr"],
            "LegalPersonName": row["legal_person"],
            "LegalPersonIDCardNo": detail["LegalPersonIDCardNo"],
            "LegalPersonIDCardType": detail["LegalPersonIDCardType"],
            "LegalPersonIdCardEffTime": detail["LegalPersonIdCardEffTime"],
            "AdminName": detail["AdminName"],
            "AdminPhoneNo": detail["AdminPhoneNo"],
            "AdminIDCardNo": detail["AdminIDCardNo"],
            "AdminIDCardType": detail["AdminIDCardType"],
            "AdminIDCardExpDate": detail["AdminIDCardExpDate"],
            "AdminIDCardFrontFace": detail["AdminIDCardFrontFace"],
            "AdminIDCardPic": detail["AdminIDCardPic"],
            "BusinessLicensePics": detail["BusinessLicensePics"],
            "OtherFiles": detail["OtherFiles"],
            "UseBySelf": bool(row["use_by_self"]),
            "WhetherShare": detail["WhetherShare"],
            "State": row["state"],  # INT/FAILED/PASSED/...: not the list's vocabulary
        }
        return {"Code": "OK", "Message": "OK", "Success": True, "AccessDeniedDetail": "", "Data": data}

    _HANDLERS: ClassVar[dict[str, Callable[[EmulatorCore, dict[str, str]], WireBody]]] = {
        "SendSms": _send_sms,
        "SendBatchSms": _send_batch_sms,
        "QuerySendDetails": _query_send_details,
        "QuerySendStatistics": _query_send_statistics,
        "QuerySmsSignList": _query_sms_sign_list,
        "QuerySmsTemplateList": _query_sms_template_list,
        "GetSmsSign": _get_sms_sign,
        "GetSmsTemplate": _get_sms_template,
        "QuerySmsQualificationRecord": _query_sms_qualification_record,
        "QuerySingleSmsQualification": _query_single_sms_qualification,
    }


class _Missing:
    """TemplateParam not supplied at all (distinct from ``{}``)."""


_MISSING: Any = _Missing()


def _json_array(raw: str, name: str) -> list[Any]:
    try:
        value = _loads(raw)
    except ValueError:
        raise _json_error(f"{name} 不是合法的 JSON") from None
    if not isinstance(value, list):
        raise _json_error(f"{name} 必须是 JSON 数组")
    return value


def _list_reason(row: sqlite3.Row) -> dict[str, str]:
    """The list APIs' ``Reason`` object."""
    return {
        "RejectDate": row["audit_date"],
        "RejectInfo": row["reject_info"],
        "RejectSubInfo": row["reject_info"],
    }


def _render(sign_name: str, template: sqlite3.Row, variables: Mapping[str, str], template_param: Any) -> str:
    """Check TemplateParam against the template (dysmsapi.md §9.2) and return the text the handset shows."""
    content: str = template["content"]
    names = _VARIABLE.findall(content)
    if template_param is _MISSING:
        template_param = {}
        if names:
            raise _BusinessError("isv.TEMPLATE_MISSING_PARAMETERS", f"模板变量中存在未赋值变量：{', '.join(names)}")
    if not isinstance(template_param, dict):
        raise _json_error("TemplateParam 必须是 JSON 对象")
    for key, value in template_param.items():
        if not isinstance(value, str):
            raise _json_error(f"变量 {key} 的值必须是字符串")
    unknown = [k for k in template_param if k not in names]
    if unknown:
        raise _json_error(f"模板中没有变量 {', '.join(unknown)}")
    missing = [n for n in names if not template_param.get(n)]
    if missing:
        raise _BusinessError("isv.TEMPLATE_MISSING_PARAMETERS", f"模板变量中存在未赋值变量：{', '.join(missing)}")
    is_verification = int(template["outer_type"]) == seed.VERIFICATION
    for name in names:
        value: str = template_param[name]
        if len(value) > MAX_PARAM_LENGTH:
            raise _BusinessError(
                "isv.PARAM_LENGTH_LIMIT", f"参数超出长度限制：变量 {name} 不能超过 {MAX_PARAM_LENGTH} 个字符"
            )
        if _URL.search(value):
            raise _BusinessError("isv.PARAM_NOT_SUPPORT_URL", f"变量不支持传入URL：{name}")
        attribute = variables.get(name, "")
        if attribute == "numberCaptcha":
            valid, expected = bool(4 <= len(value) <= 6 and _DIGITS.fullmatch(value)), "4-6 位数字"
        elif attribute in ("characterWithNumber", "characterWithNumber2"):
            valid, expected = bool(4 <= len(value) <= 6 and _ALNUM.fullmatch(value)), "4-6 位数字或字母"
        elif is_verification:
            valid, expected = 4 <= len(value) <= 6, "4-6 个字符"
        else:
            valid, expected = True, ""
        if not valid:
            raise _BusinessError(
                "isv.TEMPLATE_PARAMS_ILLEGAL", f"变量值与模板变量属性不匹配：{name} 应为{expected}的验证码"
            )
    rendered = f"【{sign_name}】" + _VARIABLE.sub(lambda m: template_param[m.group(1)], content)
    if len(rendered) > MAX_CONTENT_LENGTH:
        raise _BusinessError(
            "isv.PARAM_LENGTH_LIMIT",
            f"参数超出长度限制：短信内容（含签名）不能超过 {MAX_CONTENT_LENGTH} 个字符",
        )
    return rendered
