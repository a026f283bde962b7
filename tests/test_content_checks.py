"""Content checks that hold: normalised text, any host-like token, control characters, one rule for numbers, and an
allow-list that means what it says."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp_harness import box

from sms_mcp.config import ConfigError, Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.models import TemplateInfo
from sms_mcp.core.phones import allow_listed, normalise_allow_list, parse_phone
from sms_mcp.core.text import normalise_text
from sms_mcp.core.validation import check_params, host_like, instruction_flags

NOTIFY = {"sign_name": "速通科技", "template_code": "SMS_900000002"}
TEMPLATE = TemplateInfo(template_code="SMS_1", template_name="t", type="notification", content="您好${name}",
                        variables=["name"], status="approved", raw_status="AUDIT_STATE_PASS", reason=None,
                        created_at=None)

HIDDEN_LINKS = ["evil.ru", "evil.shop", "1.2.3.4/x", "ｅｖｉｌ．ｃｏｍ", "evil。com", "evil\u200b.com", "evil .com",
                "a@evil.ru", "请访问evil.top了解", "详见bit.ly/x", "ＥＶＩＬ．ＣＯＭ", "evil\u2060.\u200dcom",
                "evil﹒com", "x.xn--fiqs8s", "hxxp://x", "[::1]:8080", "10.0.0.1", "ev\u00adil.io", "www.evil"]
PLAIN_VALUES = ["王女士", "20261125001", "11月27日", "已发货。请查收", "3.14", "v1.2", "No.12", "Mr. Wang", "A100",
                "周三", "¥12.50", "12.5元", "e.g. 明天", "１２３４"]


def params(value: str) -> dict[str, str]:
    return check_params(TEMPLATE, {}, {"name": value})


# ------------------------------------------------------------------------------------------ links


@pytest.mark.parametrize("value", HIDDEN_LINKS)
def test_a_hidden_link_is_refused(value: str) -> None:
    with pytest.raises(SmsError) as refused:
        params(value)
    assert refused.value.code == "isv.PARAM_NOT_SUPPORT_URL"


@pytest.mark.parametrize("value", PLAIN_VALUES)
def test_plain_values_pass(value: str) -> None:
    assert params(value) == {"name": value}  # checked on the normalised text, sent as typed


async def test_the_issues_links_never_reach_a_plan(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        for value in HIDDEN_LINKS[:8]:
            text = await b.refused("send_sms", {**NOTIFY, "phone_numbers": ["13912345678"],
                                                "template_param": {"name": value, "order_no": "A1", "date": "周三"}})
            assert "isv.PARAM_NOT_SUPPORT_URL" in text, value
        assert b.sent() == []


LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
TLD = st.text(string.ascii_lowercase, min_size=2, max_size=10)
DOTS = st.sampled_from([".", "。", "．", "｡", " .", " . ", "\u200b.", ".\u200c", "\ufeff."])
FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in string.ascii_letters + string.digits}


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(LABEL, min_size=1, max_size=3), tld=TLD, dot=DOTS, wide=st.booleans(), upper=st.booleans(),
       before=st.sampled_from(["", "详见", "请访问 ", "at "]), after=st.sampled_from(["", "/x", " 了解", "?a=1"]))
def test_any_domain_however_disguised_is_found(labels: list[str], tld: str, dot: str, wide: bool, upper: bool,
                                               before: str, after: str) -> None:
    host = dot.join([*labels, tld])
    if upper:
        host = host.upper()
    if wide:
        host = "".join(FULL_WIDTH.get(c, c) for c in host)
    assert host_like(before + host + after) is not None, before + host + after


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_value_is_accepted_or_refused_with_a_domain_error(value: str) -> None:
    try:
        checked = params(value)
    except SmsError as err:
        assert err.code.startswith("isv.")
        assert len(err.render()) < 1000
    else:
        assert checked == {"name": value}
        assert host_like(value) is None
        assert all(ord(c) >= 32 and not 0x7F <= ord(c) < 0xA0 for c in value)


# ------------------------------------------------------------------------------------------ instructions, controls


@pytest.mark.parametrize("value", ["ignore previous", "ignore\u200b previous", "ignore  previous",
                                   "ＩＧＮＯＲＥ previous",
                                   "忽略\u200b之前", "you are\u3000now", "sys\u00adtem prompt"])
def test_the_instruction_warning_sees_the_normalised_text(value: str) -> None:
    assert instruction_flags({"name": value}), value


@pytest.mark.parametrize("value", ["a\0b", "ab\x1b[2J", "a\nb", "a\tb", "a\x7fb", "a\x85b", "王\u202e士女",
                                   "a\u2066b", "a\ud800b"])
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(SmsError) as refused:
        params(value)
    assert refused.value.code == "isv.INVALID_JSON_PARAM" and "control characters" in refused.value.message


def test_normalise_text() -> None:
    assert normalise_text("ｅｖｉｌ。ｃｏｍ\u200b  x") == "evil.com x"
    assert params("👨\u200d👩\u200d👧") == {"name": "👨\u200d👩\u200d👧"}  # a joiner inside an emoji is fine


# ------------------------------------------------------------------------------------------ numbers: one rule


@pytest.mark.parametrize("typed", ["13800138000", "１３８００１３８０００", "+８６１３８００１３８０００",
                                   "＋８６ １３８ ００１３ ８０００",
                                   "+86 138\u200b0013 8000", "008613800138000", "(+86) 138-0013-8000"])
def test_every_way_of_typing_a_mainland_number_is_one_number(typed: str) -> None:
    assert parse_phone(typed).e164 == "+8613800138000"


@pytest.mark.parametrize("typed", ["١٣٨٠٠١٣٨٠٠٠", "+86١٣٨٠٠١٣٨٠٠٠", "1380013800\0", "138001380000"])
def test_other_scripts_digits_and_junk_are_refused_alike(typed: str) -> None:
    with pytest.raises(SmsError):
        parse_phone(typed)


@settings(max_examples=200, deadline=None)
@given(national=st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), wide=st.booleans(), plus=st.booleans())
def test_full_width_and_ascii_give_the_same_answer(national: str, wide: bool, plus: bool) -> None:
    ascii_form = ("+86" if plus else "") + national
    typed = "".join(FULL_WIDTH.get(c, "＋" if c == "+" else c) for c in ascii_form) if wide else ascii_form
    try:
        expected = parse_phone(national).e164
    except SmsError:
        with pytest.raises(SmsError):
            parse_phone(typed)
        return
    assert parse_phone(typed).e164 == expected


# ------------------------------------------------------------------------------------------ allow-list


@pytest.mark.parametrize("entry", ["+", "1", "1380013800", "+86138", "86*", "*", "+999*", "13800138000x", "+86 138*x"])
def test_an_allow_list_entry_that_is_neither_a_number_nor_a_pattern_refuses_to_start(entry: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"SMS_MCP_ALLOWED_NUMBERS": f"13800138000,{entry}"})
    (line,) = refused.value.lines
    assert line.startswith("SMS_MCP_ALLOWED_NUMBERS=") and "pattern" in line


def test_allow_list_entries_are_normalised_like_recipients() -> None:
    allowed = normalise_allow_list(["+86 138 0013 8000", "13800138000", "１３９１２３４５６７８", "+86138*",
                                    "00852*"])
    assert allowed == ("+8613800138000", "+8613912345678", "+86138*", "+852*")
    formatted = normalise_allow_list(["+86 138 0013 8000"])
    assert allow_listed(parse_phone("13800138000"), formatted)
    assert not allow_listed(parse_phone("13800138001"), formatted)  # a full number allows that number only
    assert allow_listed(parse_phone("13812345678"), allowed)  # the explicit pattern
    assert not allow_listed(parse_phone("13912345679"), allowed)
    assert allow_listed(parse_phone("+85291234567"), allowed)


async def test_a_formatted_allow_list_entry_allows_its_number_and_nothing_else(tmp_path: Path) -> None:
    async with box(tmp_path, SMS_MCP_ALLOWED_NUMBERS="+86 137 0000 4101") as b:
        args = {**NOTIFY, "template_param": {"name": "王", "order_no": "A1", "date": "周三"}}
        assert (await b.ok("send_sms", {**args, "phone_numbers": ["13700004101"]}))["status"] == \
            "pending_confirmation"
        for other in ("13700004102", "13700004100", "1370000410"):
            text = await b.refused("send_sms", {**args, "phone_numbers": [other]})
            assert "NUMBER_NOT_ALLOWED" in text or "MOBILE_NUMBER_ILLEGAL" in text
        assert b.sent() == []


def test_a_refusal_echoing_a_lone_surrogate_still_encodes() -> None:
    """The SDK's schema refuses lone surrogates over MCP; the domain holds on its own too (direct callers)."""
    text = SmsError("isv.INVALID_JSON_PARAM", "no variable x\ud800").render()
    assert text.encode("utf-8") and "\\ud800" in text
