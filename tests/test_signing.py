"""The emulator's signature verifier against Alibaba's official test vectors and Alibaba's own signing code."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from alibabacloud_tea_openapi.utils import Utils
from darabonba.request import DaraRequest

from sms_mcp.emulator.signing import (
    EMPTY_SHA256,
    IncomingRequest,
    RequestVerifier,
    canonical_query_string,
    decode_form,
    sha256_hex,
    v2_signature,
    v2_string_to_sign,
    v3_canonical_request,
    v3_signature,
)
from sms_mcp.wire.base import GatewayError

# ------------------------------------------------------------------------------------------------ official vectors

V3A_HEADERS = [
    ("host", "ecs.cn-shanghai.aliyuncs.com"),
    ("x-acs-action", "RunInstances"),
    ("x-acs-version", "2014-05-26"),
    ("x-acs-date", "2023-10-26T10:22:32Z"),
    ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
    ("x-acs-content-sha256", EMPTY_SHA256),
]


def test_v3_vector_a_official_documentation() -> None:
    query = decode_form("ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai")
    canonical = v3_canonical_request("POST", query, V3A_HEADERS, [h for h, _ in V3A_HEADERS], EMPTY_SHA256)
    assert sha256_hex(canonical.encode()) == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    assert v3_signature("YourAccessKeySecret", canonical) == (
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


V3B_QUERY = [
    ("PhoneNumbers", "13800138000"),
    ("SignName", "阿里云"),
    ("TemplateCode", "SMS_154950909"),
    ("TemplateParam", '{"code":"123456"}'),
]
V3B_HEADERS = [
    ("host", "dysmsapi.aliyuncs.com"),
    ("x-acs-action", "SendSms"),
    ("x-acs-version", "2017-05-25"),
    ("x-acs-date", "2025-06-01T00:00:00Z"),
    ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
    ("x-acs-content-sha256", EMPTY_SHA256),
]
V3B_SIGNATURE = "b04305b4c446388f98651cc9af79a49978ae9f86a39f1950769f149651e68945"


def test_v3_vector_b_dysmsapi_sendsms() -> None:
    assert canonical_query_string(V3B_QUERY) == (
        "PhoneNumbers=13800138000&SignName=%E9%98%BF%E9%87%8C%E4%BA%91&TemplateCode=SMS_154950909"
        "&TemplateParam=%7B%22code%22%3A%22123456%22%7D"
    )
    canonical = v3_canonical_request("POST", V3B_QUERY, V3B_HEADERS, [h for h, _ in V3B_HEADERS], EMPTY_SHA256)
    assert sha256_hex(canonical.encode()) == "5389d6a8b28a0314ec1068d31f3d940dbe1f5b525ce72a34bfc6047c6f19f44f"
    assert v3_signature("testsecret", canonical) == V3B_SIGNATURE


V2_VECTOR_1 = [
    ("AccessKeyId", "testId"),
    ("Action", "SendSms"),
    ("Format", "XML"),
    ("OutId", "123"),
    ("PhoneNumbers", "15300000001"),
    ("RegionId", "cn-hangzhou"),
    ("SignName", "阿里云短信测试专用"),
    ("SignatureMethod", "HMAC-SHA1"),
    ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
    ("SignatureVersion", "1.0"),
    ("TemplateCode", "SMS_71390007"),
    ("TemplateParam", '{"customer":"test"}'),
    ("Timestamp", "2017-07-12T02:42:19Z"),
    ("Version", "2017-05-25"),
]


def test_v2_vector_1_official_sms_example() -> None:
    assert v2_string_to_sign("GET", V2_VECTOR_1) == (
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123%26PhoneNumbers%3D15300000001"
        "%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4"
        "%25BF%25A1%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1"
        "%26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0%26TemplateCode%3D"
        "SMS_71390007%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D%26Timestamp%3D"
        "2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25"
    )
    assert v2_signature("testSecret", "GET", V2_VECTOR_1) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    assert v2_signature("testSecret", "POST", V2_VECTOR_1) == "Xvhv7fPXrPkLVSnlt0jIr08o8NQ="
    # Case matters: the same vector with lower-case credentials does not match.
    lower = [(k, "testid" if k == "AccessKeyId" else v) for k, v in V2_VECTOR_1]
    assert v2_signature("testsecret", "GET", lower) != "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_v2_vector_2_generic_rpc_example() -> None:
    params = [
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ]
    assert v2_signature("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


V2_VECTOR_3 = [
    ("AccessKeyId", "testid"),
    ("Action", "SendSms"),
    ("Format", "json"),
    ("PhoneNumbers", "13800138000"),
    ("SignName", "阿里云"),
    ("SignatureMethod", "HMAC-SHA1"),
    ("SignatureNonce", "0123456789abcdef0123456789abcdef"),
    ("SignatureVersion", "1.0"),
    ("TemplateCode", "SMS_154950909"),
    ("TemplateParam", '{"code":"123456"}'),
    ("Timestamp", "2025-06-01T00:00:00Z"),
    ("Version", "2017-05-25"),
]


def test_v2_vector_3_sdk_style_post() -> None:
    assert v2_signature("testsecret", "POST", V2_VECTOR_3) == "CwZBK3RJyfvpVcavqJJ0hC2Vivg="
    assert v2_signature("testsecret", "GET", V2_VECTOR_3) == "hwFZ6U1gUnLfoVmE04RauFi5N6s="


# ------------------------------------------------------------------------------------------------ the verifier

VECTOR_B_TIME = float(calendar.timegm((2025, 6, 1, 0, 0, 0)))


def _fixed(t: float) -> Callable[[], float]:
    return lambda: t


def _v3_vector_b_request(signature: str = V3B_SIGNATURE, key_id: str = "testid") -> IncomingRequest:
    # The query as the sync SDK puts it on the wire (form encoding), not canonical.
    raw_query = urlencode(V3B_QUERY)
    auth = (
        f"ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        f"x-acs-date;x-acs-signature-nonce;x-acs-version,Signature={signature}"
    )
    headers = [*V3B_HEADERS, ("Authorization", auth), ("Accept-Encoding", "identity"), ("Content-Length", "0")]
    return IncomingRequest("POST", raw_query, headers)


def test_verifier_accepts_vector_b_and_ignores_unsigned_headers() -> None:
    verifier = RequestVerifier({"testid": "testsecret"}, clock=_fixed(VECTOR_B_TIME + 60))
    verified = verifier.verify(_v3_vector_b_request())
    assert verified.action == "SendSms"
    assert verified.signature_version == "v3"
    assert verified.params == dict(V3B_QUERY)


@pytest.mark.parametrize(
    ("keys", "request_factory", "status", "code"),
    [
        ({"testid": "wrongsecret"}, _v3_vector_b_request, 400, "SignatureDoesNotMatch"),
        ({"other": "testsecret"}, _v3_vector_b_request, 404, "InvalidAccessKeyId.NotFound"),
        ({"testid": "testsecret"}, lambda: _v3_vector_b_request(signature="0" * 64), 400, "SignatureDoesNotMatch"),
    ],
)
def test_verifier_rejects_bad_credentials(
    keys: dict[str, str], request_factory: Callable[[], IncomingRequest], status: int, code: str
) -> None:
    verifier = RequestVerifier(keys, clock=_fixed(VECTOR_B_TIME))
    with pytest.raises(GatewayError) as caught:
        verifier.verify(request_factory())
    assert (caught.value.status, caught.value.code) == (status, code)


def test_verifier_rejects_stale_timestamp_both_ways() -> None:
    for offset in (16 * 60, -16 * 60):
        verifier = RequestVerifier({"testid": "testsecret"}, clock=_fixed(VECTOR_B_TIME + offset))
        with pytest.raises(GatewayError) as caught:
            verifier.verify(_v3_vector_b_request())
        assert (caught.value.status, caught.value.code) == (400, "InvalidTimeStamp.Expired")
    # 14 minutes off is still inside the window.
    RequestVerifier({"testid": "testsecret"}, clock=_fixed(VECTOR_B_TIME + 14 * 60)).verify(_v3_vector_b_request())


def test_verifier_rejects_reused_nonce() -> None:
    verifier = RequestVerifier({"testid": "testsecret"}, clock=_fixed(VECTOR_B_TIME))
    verifier.verify(_v3_vector_b_request())
    with pytest.raises(GatewayError) as caught:
        verifier.verify(_v3_vector_b_request())
    assert (caught.value.status, caught.value.code) == (400, "SignatureNonceUsed")


def test_forged_request_does_not_burn_the_nonce() -> None:
    verifier = RequestVerifier({"testid": "testsecret"}, clock=_fixed(VECTOR_B_TIME))
    with pytest.raises(GatewayError):
        verifier.verify(_v3_vector_b_request(signature="f" * 64))
    verifier.verify(_v3_vector_b_request())  # the genuine request with the same nonce still passes


def test_verifier_rejects_unsigned_nonce_header() -> None:
    auth = (
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        f"x-acs-date;x-acs-version,Signature={V3B_SIGNATURE}"
    )
    headers = [*V3B_HEADERS, ("Authorization", auth)]
    verifier = RequestVerifier({"testid": "testsecret"}, clock=_fixed(VECTOR_B_TIME))
    with pytest.raises(GatewayError) as caught:
        verifier.verify(IncomingRequest("POST", urlencode(V3B_QUERY), headers))
    assert caught.value.code == "IncompleteSignature"


# Requests signed by Alibaba's own signing function (tea-openapi's Utils.get_authorization), with bodies and
# encodings the SDK really produces, verify; any tampering does not.


def _sdk_signed(
    query: dict[str, str],
    body: bytes = b"",
    *,
    secret: str = "sk",
    key_id: str = "ak",
    nonce: str = "n-1",
    extra_headers: dict[str, str] | None = None,
) -> tuple[dict[str, str], str]:
    request = DaraRequest()
    request.method = "POST"
    request.pathname = "/"
    request.query = dict(query)
    request.headers = {
        "host": "127.0.0.1:8080",
        "x-acs-version": "2017-05-25",
        "x-acs-action": "SendBatchSms",
        "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": nonce,
        "accept": "application/json",
        "x-acs-content-sha256": sha256_hex(body),
        **(extra_headers or {}),
    }
    if body:
        request.headers["content-type"] = "application/x-www-form-urlencoded"
    auth = Utils.get_authorization(request, "ACS3-HMAC-SHA256", sha256_hex(body), key_id, secret)
    return {**request.headers, "Authorization": auth}, urlencode(query)


def test_sdk_signed_form_body_request_verifies_and_merges_params() -> None:
    body = urlencode(
        {"PhoneNumberJson": '["13800138000"]', "SignNameJson": '["速通 科技"]', "TemplateParamJson": '[{"a":"1+2"}]'}
    ).encode()
    headers, raw_query = _sdk_signed({"TemplateCode": "SMS_1", "OutId": "a b*c~"}, body)
    verified = RequestVerifier({"ak": "sk"}).verify(IncomingRequest("POST", raw_query, list(headers.items()), body))
    assert verified.params == {
        "TemplateCode": "SMS_1",
        "OutId": "a b*c~",
        "PhoneNumberJson": '["13800138000"]',
        "SignNameJson": '["速通 科技"]',
        "TemplateParamJson": '[{"a":"1+2"}]',
    }


def test_aiohttp_style_requoted_query_verifies() -> None:
    # aiohttp re-quotes the URL and leaves ':', '*', ',' and '/' raw (reference §6); the canonical form is the same.
    params = {"TemplateParam": '{"code":"1234 5*6~+/&="}', "PhoneNumbers": "13800138000,13900000001"}
    headers, _ = _sdk_signed(params)
    raw = "TemplateParam=%7B%22code%22:%221234+5*6~%2B/%26%3D%22%7D&PhoneNumbers=13800138000,13900000001"
    verified = RequestVerifier({"ak": "sk"}).verify(IncomingRequest("POST", raw, list(headers.items())))
    assert verified.params == params


def test_tampered_body_is_rejected() -> None:
    body = b"PhoneNumberJson=%5B%2213800138000%22%5D"
    headers, raw_query = _sdk_signed({"TemplateCode": "SMS_1"}, body)
    tampered = b"PhoneNumberJson=%5B%2213900000009%22%5D"
    with pytest.raises(GatewayError) as caught:
        RequestVerifier({"ak": "sk"}).verify(IncomingRequest("POST", raw_query, list(headers.items()), tampered))
    assert caught.value.code == "SignatureDoesNotMatch"


def test_tampered_query_is_rejected() -> None:
    headers, _ = _sdk_signed({"PhoneNumbers": "13800138000"})
    with pytest.raises(GatewayError) as caught:
        RequestVerifier({"ak": "sk"}).verify(IncomingRequest("POST", "PhoneNumbers=13900000009", list(headers.items())))
    assert caught.value.code == "SignatureDoesNotMatch"
    assert "server string to sign is" in caught.value.message


def test_sdk_v2_signature_verifies_and_strips_envelope() -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    params = {
        "Action": "SendSms",
        "Format": "json",
        "Version": "2017-05-25",
        "Timestamp": now,
        "SignatureNonce": "nonce-v2",
        "PhoneNumbers": "13800138000",
        "SignName": "速通科技",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": "ak",
    }
    params["Signature"] = Utils.get_rpcsignature(params, "POST", "sk")
    verifier = RequestVerifier({"ak": "sk"})
    verified = verifier.verify(IncomingRequest("POST", urlencode(params), [("x-acs-action", "SendSms")]))
    assert verified.signature_version == "v2"
    assert verified.action == "SendSms"
    assert verified.params == {"PhoneNumbers": "13800138000", "SignName": "速通科技"}
    with pytest.raises(GatewayError) as caught:
        verifier.verify(IncomingRequest("POST", urlencode(params), []))
    assert caught.value.code == "SignatureNonceUsed"
    # The HTTP method is part of a V2 signature.
    params["SignatureNonce"] = "nonce-v2-get"
    params["Signature"] = Utils.get_rpcsignature({k: v for k, v in params.items() if k != "Signature"}, "POST", "sk")
    with pytest.raises(GatewayError) as caught:
        verifier.verify(IncomingRequest("GET", urlencode(params), []))
    assert caught.value.code == "SignatureDoesNotMatch"


def test_v2_missing_and_stale_parameters() -> None:
    verifier = RequestVerifier({"ak": "sk"})
    with pytest.raises(GatewayError) as caught:
        verifier.verify(IncomingRequest("POST", "Action=SendSms&Signature=x", []))
    assert (caught.value.status, caught.value.code) == (400, "MissingAccessKeyId")
    stale = {
        "Action": "SendSms",
        "Version": "2017-05-25",
        "Timestamp": "2017-07-12T02:42:19Z",
        "SignatureNonce": "n",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": "ak",
    }
    stale["Signature"] = Utils.get_rpcsignature(stale, "POST", "sk")
    with pytest.raises(GatewayError) as caught:
        verifier.verify(IncomingRequest("POST", urlencode(stale), []))
    assert (caught.value.status, caught.value.code) == (400, "InvalidTimeStamp.Expired")
