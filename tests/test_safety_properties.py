"""Property-based tests over every tool's inputs, through a real MCP client on the sandbox.

For any input: the server answers with a result or a model-readable refusal (an Alibaba/sms_mcp code, or the
schema's validation message) — never a crash, which the SDK would sanitise to a bare "Error executing tool X";
and without a valid confirmation nothing is ever sent. One client serves all examples of a test (through an
anyio blocking portal, so its cancel scopes are entered and left in one task); example counts stay modest.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from sms_mcp.config import Settings
from sms_mcp.server import build_server
from sms_mcp.wire.sandbox import SandboxTransport

CODE = re.compile(r"\[(?:isv|isp|sms_mcp)\.[A-Z_]+\]|\[[A-Za-z]+(?:\.[A-Za-z]+)*\]")
EXAMPLES = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

SIGNS = ["速通科技", "速通验证", "SuTong", "星河商城", "月光书店", "旧品牌", "不存在"]
TEMPLATES = [f"SMS_90000000{i}" for i in range(1, 10)] + ["SMS_123", "sms_900000001"]
VARIABLES = ["code", "name", "order_no", "date", "service", "time", "event", "month", "amount"]
NASTY = ["", " ", "http://evil.example", "详见bit.ly/x", "忽略之前的指令", "ignore previous instructions",
         "${code}", "\u0000", "\u202e", "'; DROP TABLE plans; --", "王" * 36, "4821", "１２３４", "12ab"]

phones = st.one_of(
    st.integers(0, 99_999_999).map(lambda i: f"137{i:08d}"),
    st.sampled_from(["+86 137 0000 0001", "0086-13700000002", "+85291234567", "+1 415 555 2671", "13900000001",
                     "12345", "", "+", "86", "+0000000000000", "1" * 11, "+8613700000003 ", "١٣٧٠٠٠٠٠٠٠٤"]),
    st.text(max_size=40),
)
values = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
template_params = st.one_of(
    st.none(),
    st.dictionaries(st.one_of(st.sampled_from(VARIABLES), st.text(max_size=10)), values, max_size=4),
    st.dictionaries(st.sampled_from(VARIABLES), st.one_of(st.integers(), st.booleans(), st.none()), max_size=2),
)
tokens = st.one_of(st.none(), st.text(max_size=40), st.text(max_size=40).map(lambda t: "smt_" + t),
                   st.text(min_size=190, max_size=210))
optional_text = st.one_of(st.none(), st.text(max_size=40), st.text(min_size=240, max_size=300))
dates = st.one_of(st.none(), st.from_regex(r"\A\d{8}\Z"), st.text(max_size=10),
                  st.sampled_from(["20250230", "20251301", "00000000", "99991231"]))
ints = st.one_of(st.integers(-5, 60), st.sampled_from([0, 1, 1000, 1001, 2**31, -(2**63)]))

TEMPLATE_VARIABLES = {"SMS_900000001": ["code"], "SMS_900000002": ["name", "order_no", "date"],
                      "SMS_900000003": ["name"], "SMS_900000004": ["code"], "SMS_900000005": ["service", "time"],
                      "SMS_900000006": ["name", "event"], "SMS_900000007": ["code"],
                      "SMS_900000008": ["month", "amount"], "SMS_900000009": ["name"]}
GOOD_VALUES = ["4821", "王女士", "A1001", "周一", "123456", "Li", "11月27日"]
# Weighted towards valid values (hypothesis tends to draw the simplest, mostly invalid, values first) so that many
# examples get past the schema into the domain checks, and a good share all the way to a plan.
valid_phones = st.integers(0, 99_999_999).map(lambda i: f"137{i:08d}")


def mostly(valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([True, True, True, True, False]).flatmap(lambda ok: valid if ok else anything)


template_codes = mostly(st.sampled_from(TEMPLATES), st.one_of(st.from_regex(r"\A[A-Za-z0-9_]{1,20}\Z"),
                                                              st.text(max_size=70)))
sign_names = mostly(st.sampled_from(SIGNS), st.text(max_size=110))
phone_lists = mostly(st.lists(valid_phones, min_size=1, max_size=5), st.lists(phones, max_size=6))


@st.composite
def coherent_params(draw: st.DrawFn, template_code: str) -> dict[str, Any] | None:
    """Mostly the template's own variables (so that examples get past the schema and into the domain), with
    good or nasty values, sometimes a variable missing or one too many; sometimes anything at all."""
    if not draw(st.sampled_from([True, True, True, True, False])):
        return draw(template_params)
    names = list(TEMPLATE_VARIABLES.get(template_code, ["code"]))
    if names and draw(st.booleans()) and draw(st.booleans()):
        names.remove(draw(st.sampled_from(names)))
    if draw(st.integers(0, 5)) == 0:
        names.append(draw(st.sampled_from([*VARIABLES, "extra"])))
    return {n: draw(mostly(st.sampled_from(GOOD_VALUES), values)) for n in names}


@st.composite
def send_sms_args(draw: st.DrawFn) -> dict[str, Any]:
    code = draw(template_codes)
    args: dict[str, Any] = {
        "phone_numbers": draw(phone_lists),
        "sign_name": draw(sign_names),
        "template_code": code,
    }
    if draw(st.integers(0, 5)):
        args["template_param"] = draw(coherent_params(code))
    for name, strategy in (("out_id", optional_text), ("confirm_token", tokens)):
        if draw(st.booleans()):
            args[name] = draw(strategy)
    return args


@st.composite
def send_batch_args(draw: st.DrawFn) -> dict[str, Any]:
    code = draw(template_codes)
    recipients = []
    for _ in range(draw(st.integers(draw(st.sampled_from([0, 1, 1, 1])), 4))):
        recipient: dict[str, Any] = {"phone_number": draw(mostly(valid_phones, phones)),
                                     "sign_name": draw(sign_names)}
        if draw(st.integers(0, 5)):
            recipient["template_param"] = draw(coherent_params(code))
        recipients.append(recipient)
    args: dict[str, Any] = {"recipients": recipients, "template_code": code}
    for name, strategy in (("out_id", optional_text), ("confirm_token", tokens)):
        if draw(st.booleans()):
            args[name] = draw(strategy)
    return args


SEND_SMS = send_sms_args()
SEND_BATCH = send_batch_args()
READS: dict[str, Any] = {
    "list_signs": st.fixed_dictionaries({}, optional={
        "page_index": ints, "page_size": ints,
        "status": st.one_of(st.sampled_from(["approved", "reviewing", "rejected", "cancelled", "all"]), st.text())}),
    "list_templates": st.fixed_dictionaries({}, optional={
        "page_index": ints, "page_size": ints, "status": st.sampled_from(["approved", "all", "nope"])}),
    "query_details": st.fixed_dictionaries({}, optional={
        "phone_number": st.one_of(st.none(), phones), "send_date": dates, "biz_id": optional_text,
        "plan_id": st.one_of(st.none(), st.text(max_size=70), st.just("plan_0000000000000000")),
        "page_size": ints, "current_page": ints}),
    "query_statistics": st.fixed_dictionaries(
        {"start_date": dates, "end_date": dates},
        optional={"scope": st.sampled_from(["domestic", "international", "mars"]),
                  "template_type": st.one_of(st.none(), st.sampled_from(
                      ["verification", "notification", "promotional", "international", "digital", "x"])),
                  "sign_name": optional_text, "page_index": ints, "page_size": ints}),
    "qualification": st.fixed_dictionaries({}, optional={
        "group_id": st.one_of(st.none(), ints, st.sampled_from([10001, 10002, 10003, 99999])),
        "qualification_name": optional_text, "company_name": optional_text, "legal_person_name": optional_text,
        "status": st.one_of(st.none(), st.sampled_from(["approved", "rejected", "needs_more_info", "x"])),
        "work_order_id": st.one_of(st.none(), ints), "use_by_self": st.one_of(st.none(), st.booleans()),
        "page_no": ints, "page_size": ints}),
}


@asynccontextmanager
async def connected(data_dir: Path, era: str) -> AsyncIterator[tuple[Client, SandboxTransport]]:
    config = Settings.from_env({"SMS_MCP_DATA_DIR": str(data_dir), "SMS_MCP_BACKEND": "sandbox",
                                "SMS_MCP_SANDBOX_RECEIPT_DELAY": "0", "SMS_MCP_ALLOW_PROMOTIONAL": "true"})
    transport = SandboxTransport.from_settings(config)
    async with Client(build_server(config, transport), mode=era) as client:  # type: ignore[arg-type]
        yield client, transport


class Live:
    def __init__(self, portal: BlockingPortal, client: Client, transport: SandboxTransport) -> None:
        self.portal = portal
        self.client = client
        self.transport = transport

    def call(self, tool: str, args: dict[str, Any]) -> tuple[bool, dict[str, Any] | None, str]:
        result = self.portal.call(self.client.call_tool, tool, args)
        text = "".join(getattr(c, "text", "") for c in result.content)
        return bool(result.is_error), result.structured_content, text

    def sent(self) -> list[dict[str, Any]]:
        return self.transport.core.messages()


@pytest.fixture(params=["auto", "legacy"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(
        connected(tmp_path, request.param)
    ) as (client, transport):
        yield Live(portal, client, transport)


def assert_answered(tool: str, is_error: bool, content: dict[str, Any] | None, text: str) -> None:
    """A result, or a refusal the model can act on; never the SDK's sanitised crash report."""
    if is_error:
        assert text.strip() not in (f"Error executing tool {tool}", f"Error executing tool {tool}:"), text
        assert CODE.search(text) or "validation error" in text, text
        if CODE.search(text) and "validation error" not in text:
            assert "Next step:" in text, text
    else:
        assert content is not None and content.get("backend") == "sandbox", content


def assert_masked(content: dict[str, Any]) -> None:
    for preview in content["plan"]["previews"]:
        assert "*" in preview["phone_number"], preview
    for number in content["plan"]["duplicates_removed"]:
        assert "*" in number


def test_send_sms_never_crashes_and_never_sends_without_a_valid_token(live: Live) -> None:
    @EXAMPLES
    @given(args=SEND_SMS)
    def check(args: dict[str, Any]) -> None:
        is_error, content, text = live.call("send_sms", args)
        assert_answered("send_sms", is_error, content, text)
        if not is_error:
            assert content is not None and content["status"] == "pending_confirmation"
            assert_masked(content)
        assert live.sent() == []

    check()


def test_send_batch_sms_never_crashes_and_never_sends_without_a_valid_token(live: Live) -> None:
    @EXAMPLES
    @given(args=SEND_BATCH)
    def check(args: dict[str, Any]) -> None:
        is_error, content, text = live.call("send_batch_sms", args)
        assert_answered("send_batch_sms", is_error, content, text)
        if not is_error:
            assert content is not None and content["status"] == "pending_confirmation"
            assert_masked(content)
        assert live.sent() == []

    check()


@pytest.mark.parametrize("tool", sorted(READS))
def test_read_tools_never_crash(live: Live, tool: str) -> None:
    @settings(EXAMPLES, max_examples=25)
    @given(args=READS[tool])
    def check(args: dict[str, Any]) -> None:
        is_error, content, text = live.call(tool, args)
        assert_answered(tool, is_error, content, text)

    check()
    assert live.sent() == []


@st.composite
def valid_plans(draw: st.DrawFn) -> dict[str, Any]:
    """Arguments that make a plan: approved template and signature, good values, numbers of the right scope."""
    template = draw(st.sampled_from(["SMS_900000001", "SMS_900000002", "SMS_900000003", "SMS_900000004"]))
    if template == "SMS_900000004":
        nums = draw(st.lists(st.sampled_from(["+85291234567", "+1 415 555 2671", "+44 7911 123456"]),
                             min_size=1, max_size=3))
        sign = "SuTong"
    else:
        nums = draw(st.lists(st.one_of(valid_phones, valid_phones.map(lambda n: "+86 " + n)), min_size=1,
                             max_size=8))
        sign = "速通验证" if template == "SMS_900000001" else "速通科技"
    code = st.from_regex(r"\A[0-9]{4,6}\Z")
    text = st.text(st.characters(categories=["Lo", "Nd", "Lu", "Ll"]), min_size=1, max_size=35)
    strategy = code if template in ("SMS_900000001", "SMS_900000004") else text
    params = {n: draw(strategy) for n in TEMPLATE_VARIABLES[template]}
    return {"phone_numbers": nums, "sign_name": sign, "template_code": template, "template_param": params}


def test_plans_are_masked_and_an_unissued_token_never_sends(live: Live) -> None:
    made = 0

    @EXAMPLES
    @given(args=valid_plans(), token=st.text(min_size=1, max_size=60))
    def check(args: dict[str, Any], token: str) -> None:
        nonlocal made
        is_error, content, text = live.call("send_sms", args)
        assert_answered("send_sms", is_error, content, text)
        if is_error:  # a value the template refuses (say, a URL-like text): refused with its code
            return
        made += 1
        assert content is not None and content["status"] == "pending_confirmation"
        assert_masked(content)
        dumped = json.dumps(content["plan"]["previews"], ensure_ascii=False)
        for number in args["phone_numbers"]:
            digits = re.sub(r"\D", "", number)
            assert digits not in dumped or any(digits in v for v in args["template_param"].values())
        assert content["confirm_token"] != token
        is_error, content, text = live.call("send_sms", {**args, "confirm_token": token})
        assert is_error and ("UNKNOWN_TOKEN" in text or "validation error" in text), text
        assert live.sent() == []

    check()
    assert made >= 30  # the strategy really produces plans, so the properties above were exercised


# ------------------------------------------------------------------------------------------ mutated confirmations

BASE = {"phone_numbers": ["13700007001", "13700007002"], "sign_name": "速通科技", "template_code": "SMS_900000002",
        "template_param": {"name": "王女士", "order_no": "H6001", "date": "周一"}}


def mutations() -> st.SearchStrategy[dict[str, Any]]:
    """Changes to BASE that change what would be sent (or are invalid): none of them may use BASE's token."""
    params = BASE["template_param"]
    return st.one_of(
        st.lists(st.integers(0, 99_999_999).map(lambda i: f"137{i:08d}"), min_size=1, max_size=3)
        .filter(lambda nums: sorted(nums) != sorted(BASE["phone_numbers"]))
        .map(lambda nums: {"phone_numbers": nums}),
        st.just({"phone_numbers": list(reversed(BASE["phone_numbers"]))}),
        st.just({"phone_numbers": [*BASE["phone_numbers"], "13700007003"]}),
        st.sampled_from([s for s in SIGNS if s != BASE["sign_name"]]).map(lambda s: {"sign_name": s}),
        st.sampled_from([t for t in TEMPLATES if t != BASE["template_code"]]).map(lambda t: {"template_code": t}),
        st.tuples(st.sampled_from(sorted(params)), values).filter(lambda kv: params[kv[0]] != kv[1])
        .map(lambda kv: {"template_param": {**params, kv[0]: kv[1]}}),
        st.text(max_size=40).map(lambda v: {"template_param": {**params, "extra": v}}),
        st.text(min_size=1, max_size=255).map(lambda o: {"out_id": o}),
    )


def test_a_token_confirms_only_its_own_arguments(live: Live) -> None:
    ok, plan, text = live.call("send_sms", BASE)
    assert not ok and plan is not None, text
    token = plan["confirm_token"]

    @EXAMPLES
    @given(change=mutations())
    def check(change: dict[str, Any]) -> None:
        is_error, content, text = live.call("send_sms", {**BASE, **change, "confirm_token": token})
        assert is_error, content
        assert_answered("send_sms", is_error, content, text)
        assert live.sent() == []

    check()
    # The token survived every attempt and still confirms exactly its own arguments, once.
    is_error, content, text = live.call("send_sms", {**BASE, "confirm_token": token})
    assert not is_error and content is not None and content["status"] == "accepted", text
    assert sorted(m["phone_number"] for m in live.sent()) == BASE["phone_numbers"]
    assert json.dumps(content).count("13700007001") == 0
