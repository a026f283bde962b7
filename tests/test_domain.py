"""The domain core with plain pytest: normalisation of every raw value, numbers, rendering, the ledger."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sms_mcp.config import ConfigError, Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.normalise import (
    qualification_from_list,
    qualification_status_of,
    sign_from_get,
    sign_from_list,
    status_of,
    template_from_get,
    template_from_list,
    template_type_of,
    variables_of,
)
from sms_mcp.core.phones import mask, parse_many, parse_phone
from sms_mcp.core.render import billing, render


@pytest.mark.parametrize(("raw", "status"), [
    ("AUDIT_STATE_INIT", "reviewing"), ("AUDIT_STATE_PASS", "approved"), ("AUDIT_STATE_NOT_PASS", "rejected"),
    ("AUDIT_STATE_CANCEL", "cancelled"), ("AUDIT_SATE_CANCEL", "cancelled"),
    (0, "reviewing"), (1, "approved"), (2, "rejected"), (10, "cancelled"),
    ("0", "reviewing"), ("1", "approved"), ("2", "rejected"), ("10", "cancelled"),
])
def test_every_audit_status_spelling(raw: object, status: str) -> None:
    assert status_of(raw) == status


def test_unknown_status_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError):
        status_of("AUDIT_STATE_MAYBE")


@pytest.mark.parametrize(("entry", "kind"), [
    ({"OuterTemplateType": 0, "TemplateType": 2}, "verification"),
    ({"OuterTemplateType": 1, "TemplateType": 0}, "notification"),
    ({"OuterTemplateType": 2, "TemplateType": 1}, "promotional"),
    ({"OuterTemplateType": 3, "TemplateType": 6}, "international"),
    ({"OuterTemplateType": 7, "TemplateType": 7}, "digital"),
    # Without OuterTemplateType the list's own numbering applies.
    ({"TemplateType": 2}, "verification"), ({"TemplateType": 0}, "notification"),
    ({"TemplateType": 1}, "promotional"), ({"TemplateType": 6}, "international"), ({"TemplateType": 7}, "digital"),
])
def test_both_template_type_numberings(entry: dict, kind: str) -> None:
    assert template_type_of(entry) == kind


@pytest.mark.parametrize(("raw", "status"), [
    ("INIT", "reviewing"), ("PASS", "approved"), ("NOT_PASS", "rejected"), ("NOT_FINISH", "needs_more_info"),
    ("CANCEL", "cancelled"), ("INT", "reviewing"), ("PASSED", "approved"), ("FAILED", "rejected"),
    ("CANCELED", "cancelled"),
])
def test_both_qualification_vocabularies(raw: str, status: str) -> None:
    assert qualification_status_of(raw) == status


def test_variables_in_order_once() -> None:
    assert variables_of("${a}x${b}y${a}") == ["a", "b"]
    assert variables_of("no variables") == []


def test_sign_shapes_from_list_and_get() -> None:
    listed = sign_from_list({"SignName": "阿里云", "AuditStatus": "AUDIT_STATE_NOT_PASS",
                             "CreateDate": "2020-01-08 16:44:13",
                             "Reason": {"RejectInfo": "文件不能证明信息真实性", "RejectDate": "x"}})
    assert (listed.status, listed.reason, listed.raw_status) == ("rejected", "文件不能证明信息真实性",
                                                                 "AUDIT_STATE_NOT_PASS")
    got = sign_from_get({"SignName": "阿里云", "SignStatus": 1, "AuditInfo": {"RejectInfo": "无审核备注"}})
    assert (got.status, got.reason, got.raw_status) == ("approved", None, "1")
    pending = sign_from_list({"SignName": "x", "AuditStatus": "AUDIT_STATE_INIT",
                              "Reason": {"RejectInfo": "无审核备注"}})
    assert pending.reason is None


def test_template_shapes_from_list_and_get() -> None:
    listed = template_from_list({"TemplateCode": "SMS_1", "TemplateName": "n", "OuterTemplateType": 0,
                                 "TemplateType": 2, "AuditStatus": "AUDIT_SATE_CANCEL",
                                 "TemplateContent": "验证码${code}"})
    assert (listed.type, listed.status, listed.variables) == ("verification", "cancelled", ["code"])
    got = template_from_get({"TemplateCode": "SMS_1", "TemplateStatus": "2", "TemplateType": "1",
                             "TemplateContent": "${x}", "AuditInfo": {"RejectInfo": "变量不符合规范"}})
    assert (got.type, got.status, got.reason) == ("notification", "rejected", "变量不符合规范")


def test_qualification_list_string_booleans_and_masking() -> None:
    record = qualification_from_list({"GroupId": 1, "StateName": "NOT_FINISH", "UseBySelf": "false",
                                      "LegalPersonName": "欧阳娜娜", "WorkOrderId": 5})
    assert record.status == "needs_more_info" and record.use_by_self is False
    assert record.legal_person_name == "欧***"


@pytest.mark.parametrize(("raw", "wire", "domestic"), [
    ("13800138000", "13800138000", True),
    ("+8613800138000", "13800138000", True),
    ("008613800138000", "13800138000", True),
    ("8613800138000", "13800138000", True),
    ("+86 138-0013-8000", "13800138000", True),
    ("+85291234567", "85291234567", False),
    ("0085291234567", "85291234567", False),
    ("+14155552671", "14155552671", False),
])
def test_numbers_normalise(raw: str, wire: str, domestic: bool) -> None:
    phone = parse_phone(raw)
    assert (phone.wire, phone.domestic) == (wire, domestic)


@pytest.mark.parametrize("raw", ["", "123", "1380013800", "138001380001", "+8612345678901", "abc", "+999123",
                                 "13800138000,13800138001"])
def test_bad_numbers_raise_mobile_number_illegal(raw: str) -> None:
    with pytest.raises(SmsError) as info:
        parse_phone(raw)
    assert info.value.code == "isv.MOBILE_NUMBER_ILLEGAL"


def test_duplicates_and_masking() -> None:
    phones, dups = parse_many(["13800138000", "+8613800138000", "13900000001"])
    assert [p.wire for p in phones] == ["13800138000", "13900000001"] and dups == ["138****8000"]
    assert mask("13800138000") == "138****8000"


def test_segments_domestic_and_international() -> None:
    assert billing("字" * 70, international=False) == (70, 1)
    assert billing("字" * 71, international=False) == (71, 2)
    assert billing("字" * 160, international=False) == (160, 3)  # 67 + 67 + 26
    assert billing("a" * 160, international=True) == (160, 1)
    assert billing("a" * 161, international=True) == (161, 2)
    assert billing("a" * 306, international=True) == (306, 2)
    assert billing("a" * 307, international=True) == (307, 3)
    assert billing("{" * 80, international=True) == (160, 1)  # extension characters count 2
    assert billing("é" * 70, international=True) == (70, 1)  # é is GSM-7
    assert billing("中" * 71, international=True) == (71, 2)  # UCS-2


def test_render_signature_brackets() -> None:
    text, length, segments = render("阿里云", "验证码${code}", {"code": "1234"}, international=False)
    assert text == "【阿里云】验证码1234" and length == 12 and segments == 1
    text, _, _ = render("SuTong", "Code ${code}", {"code": "1234"}, international=True)
    assert text == "[SuTong]Code 1234"


def test_values_are_data_not_templates() -> None:
    text, _, _ = render("s", "${a}", {"a": "${b}"}, international=False)
    assert text == "【s】${b}"


# The ledger's own tests are the port's contract (tests/ledger_contract.py), run on SQLite in
# tests/test_ledger_contract_sqlite.py.


def test_settings_validate_values() -> None:
    s = Settings.from_env({"SMS_MCP_ALLOWED_NUMBERS": "+8613800138000; +852", "SMS_MCP_READ_ONLY": "yes",
                           "SMS_MCP_DATA_DIR": "/tmp/x"})
    assert s.allowed_numbers == ("+8613800138000", "+852") and s.read_only is True
    assert str(s.data_dir) == "/tmp/x" and s.backend == "auto" and s.confirm_ttl_seconds == 600
    for env in ({"SMS_MCP_BACKEND": "magic"}, {"SMS_MCP_READ_ONLY": "perhaps"},
                {"SMS_MCP_CONFIRM_TTL_SECONDS": "soon"}, {"SMS_MCP_MAX_RECIPIENTS": "0"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
    assert Settings.from_env({"HOME": "/home/u"}).data_dir == Path("/home/u/.local/share/sms-mcp")


def test_every_setting_is_documented() -> None:
    repo = Path(__file__).resolve().parent.parent
    source = (repo / "sms_mcp" / "config.py").read_text()
    variables = set(re.findall(r'"((?:SMS_MCP|ALIBABA_CLOUD)_[A-Z_]+)"', source))
    assert len(variables) >= 18
    readme, example = (repo / "README.md").read_text(), (repo / ".env.example").read_text()
    for variable in variables:
        assert variable in example, variable
        assert variable in readme, variable
