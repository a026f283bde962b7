"""The aliyun CLI backend against the stand-in ``aliyun`` (tests/aliyun_standin.py) and the real emulator."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from aliyun_standin import Standin, read_log, setup

from sms_mcp.config import Settings
from sms_mcp.emulator.core import EmulatorCore
from sms_mcp.wire.aliyun_cli import AliyunCliTransport, CliBackendError, plugin_listed
from sms_mcp.wire.aliyun_output import kebab, params_to_flags, parse_failure
from sms_mcp.wire.base import AGENT_USER_AGENT, GatewayError, OutcomeUnknownError

SIGN = "速通科技"


def _today() -> str:
    return datetime.now(timezone(timedelta(hours=8))).strftime("%Y%m%d")


@pytest.fixture
def standin(tmp_path: Path) -> Standin:
    return setup(tmp_path)


def _transport(standin: Standin, **kwargs: object) -> AliyunCliTransport:
    kwargs.setdefault("aliyun_bin", str(standin.bin))
    return AliyunCliTransport(env=standin.env, **kwargs)  # type: ignore[arg-type]


def _pair(argv: list[str], flag: str) -> str | None:
    """The value following ``flag`` in ``argv`` (None when absent)."""
    return argv[argv.index(flag) + 1] if flag in argv else None


def assert_compliant(record: dict, command: str) -> None:
    """The skill's flags and the AI-mode environment, on one logged dysmsapi invocation."""
    argv = record["argv"]
    assert argv[:2] == ["dysmsapi", command]
    assert _pair(argv, "--api-version") == "2017-05-25"
    assert (
        _pair(argv, "--user-agent")
        == AGENT_USER_AGENT
        == ("AlibabaCloud-Agent-Skills/alibabacloud-sms-send-short-message")
    )
    assert _pair(argv, "--read-timeout") == "3"
    assert "--cli-ai-mode" in argv
    assert record["env"] == {"ALIBABA_CLOUD_CLI_AI_MODE": "1", "NO_COLOR": "1"}
    assert record["stdin"] == "devnull"


def _params() -> dict[str, dict[str, str]]:
    today = _today()
    return {
        "SendSms": {
            "PhoneNumbers": "13800138000",
            "SignName": SIGN,
            "TemplateCode": "SMS_900000001",
            "TemplateParam": '{"code":"1234"}',
            "OutId": "order-1",
        },
        "SendBatchSms": {
            "PhoneNumberJson": '["13800138000","13900000001"]',
            "SignNameJson": json.dumps([SIGN, SIGN]),
            "TemplateCode": "SMS_900000002",
            "TemplateParamJson": json.dumps([{"name": "王女士", "order_no": "1", "date": "明天"}] * 2),
        },
        "QuerySendDetails": {"PhoneNumber": "13800138000", "SendDate": today, "PageSize": "10", "CurrentPage": "1"},
        "QuerySendStatistics": {
            "IsGlobe": "1",
            "StartDate": today,
            "EndDate": today,
            "PageIndex": "1",
            "PageSize": "10",
        },
        "QuerySmsSignList": {"PageIndex": "1", "PageSize": "10"},
        "QuerySmsTemplateList": {"PageIndex": "1", "PageSize": "10"},
        "GetSmsSign": {"SignName": SIGN},
        "GetSmsTemplate": {"TemplateCode": "SMS_900000001"},
        "QuerySmsQualificationRecord": {"PageNo": "1", "PageSize": "20"},
        "QuerySingleSmsQualification": {"QualificationGroupId": "10001"},
    }


# ------------------------------------------------------------------------------------------- the ten actions


@pytest.mark.parametrize("action", list(_params()))
async def test_each_action_through_the_cli(standin: Standin, action: str) -> None:
    params = _params()[action]
    body = await _transport(standin).call(action, params)

    # The same answer the emulator gives in-process (the CLI adds nothing and loses nothing).
    expected = EmulatorCore(None, receipt_delay=0).handle(action, params)
    volatile = {"RequestId", "BizId"}
    assert {k: v for k, v in body.items() if k not in volatile} == {
        k: v for k, v in expected.items() if k not in volatile
    }
    assert body["Code"] == "OK" and body["RequestId"]

    (record,) = standin.records()
    assert_compliant(record, kebab(action))
    argv = record["argv"]
    for name, value in params.items():
        assert _pair(argv, params_to_flags({name: value})[0]) == value


async def test_send_reaches_the_emulator_with_kebab_flags(standin: Standin) -> None:
    transport = _transport(standin)
    await transport.call("SendBatchSms", _params()["SendBatchSms"])
    await transport.call("QuerySingleSmsQualification", {"QualificationGroupId": "10002"})
    batch, qualification = standin.records()
    assert _pair(batch["argv"], "--template-param-json") == _params()["SendBatchSms"]["TemplateParamJson"]
    assert _pair(batch["argv"], "--phone-number-json") == '["13800138000","13900000001"]'
    assert _pair(qualification["argv"], "--qualification-group-id") == "10002"
    sent = EmulatorCore(standin.db).messages()
    assert [m["phone_number"] for m in sent] == ["13800138000", "13900000001"]
    assert sent[0]["content"] == "【速通科技】尊敬的王女士，您的订单1已发货，预计明天送达，请保持电话畅通。"


async def test_shell_metacharacters_travel_untouched(standin: Standin) -> None:
    # The skill's script rejects these (defect 4); with an argv and no shell they are just text.
    name = '"$(id)"; `x` | & > < ! # * ? 张三'
    params = {
        "PhoneNumbers": "13800138000",
        "SignName": SIGN,
        "TemplateCode": "SMS_900000002",
        "TemplateParam": json.dumps({"name": name, "order_no": "A-1", "date": "d"}, ensure_ascii=False),
    }
    body = await _transport(standin).call("SendSms", params)
    assert body["Code"] == "OK"
    assert name in EmulatorCore(standin.db).messages()[0]["content"]


async def test_business_error_is_returned_not_raised(standin: Standin) -> None:
    params = {**_params()["SendSms"], "SignName": "不存在的签名"}
    body = await _transport(standin).call("SendSms", params)
    assert body["Code"] == "isv.SMS_SIGNATURE_ILLEGAL"
    assert EmulatorCore(standin.db).messages() == []


# ------------------------------------------------------------------------------------------- argv choices


async def test_region_profile_and_endpoint_flags(standin: Standin) -> None:
    # No aliyun profile: the CLI would fail with "region can't be empty", so the default region is passed.
    argv = _transport(standin).build_argv("GetSmsSign", {"SignName": SIGN})
    assert _pair(argv, "--region") == "cn-hangzhou"
    assert "--profile" not in argv and "--endpoint" not in argv

    # A profile with its own region: respected (the skill always forced cn-hangzhou, defect 5).
    config = {"current": "work", "profiles": [{"name": "work", "mode": "AK", "region_id": "cn-shanghai"}]}
    (standin.home / ".aliyun").mkdir()
    (standin.home / ".aliyun" / "config.json").write_text(json.dumps(config))
    argv = _transport(standin, profile="work").build_argv("GetSmsSign", {"SignName": SIGN})
    assert "--region" not in argv
    assert _pair(argv, "--profile") == "work"

    # An explicit region and an endpoint given with a scheme (the CLI breaks on schemes: host:port only).
    argv = _transport(standin, region="cn-beijing", endpoint="https://127.0.0.1:8443/").build_argv(
        "GetSmsSign", {"SignName": SIGN}
    )
    assert _pair(argv, "--region") == "cn-beijing"
    assert _pair(argv, "--endpoint") == "127.0.0.1:8443"


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALIBABA_CLOUD_REGION_ID", raising=False)
    env = {
        "SMS_MCP_ALIYUN_BIN": "/opt/aliyun",
        "SMS_MCP_ALIYUN_PROFILE": "p1",
        "SMS_MCP_READ_TIMEOUT": "2.5",
        "SMS_MCP_ENDPOINT": "dysmsapi.aliyuncs.com",
    }
    transport = AliyunCliTransport.from_settings(Settings.from_env(env))
    assert transport.name == "cli"
    argv = transport.build_argv("QuerySmsSignList", {})
    assert argv[:3] == ["/opt/aliyun", "dysmsapi", "query-sms-sign-list"]
    assert _pair(argv, "--profile") == "p1"
    assert _pair(argv, "--read-timeout") == "3"  # whole seconds, rounded up
    assert _pair(argv, "--endpoint") == "dysmsapi.aliyuncs.com"
    monkeypatch.setenv("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou")
    explicit = AliyunCliTransport.from_settings(Settings.from_env({"ALIBABA_CLOUD_REGION_ID": "cn-hangzhou"}))
    assert _pair(explicit.build_argv("QuerySmsSignList", {}), "--region") == "cn-hangzhou"


def test_wire_names_that_would_be_transport_flags_are_refused() -> None:
    for name in ("Profile", "Endpoint", "Region", "UserAgent", "ApiVersion", "ReadTimeout"):
        with pytest.raises(ValueError):
            params_to_flags({name: "x"})
    with pytest.raises(ValueError):
        params_to_flags({"--profile": "x"})
    assert params_to_flags({"OutId": "", "PageSize": "5"}) == ["--page-size", "5"]
    assert kebab("QuerySmsQualificationRecord") == "query-sms-qualification-record"


# ------------------------------------------------------------------------------------------- CLI errors


async def test_gateway_error_text_format_with_ansi(standin: Standin) -> None:
    standin.env["STANDIN_FORCE_COLOR"] = "1"  # a CLI that colours stderr regardless of NO_COLOR
    with pytest.raises(GatewayError) as info:
        await _transport(standin).call("SendSms", {"SignName": SIGN, "TemplateCode": "SMS_900000001"})
    err = info.value
    assert (err.status, err.code) == (400, "MissingPhoneNumbers")
    assert err.message == "PhoneNumbers is mandatory for this action."
    assert err.request_id and err.recommend.startswith("https://api.aliyun.com/troubleshoot")
    assert "\x1b" not in str(err) + err.message + err.recommend


@pytest.mark.parametrize(
    ("injected", "status", "retryable"),
    [
        ("404:InvalidAccessKeyId.NotFound", 404, False),
        ("503:ServiceUnavailable", 503, True),
        ("400:Throttling.User", 400, True),
    ],
)
@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_gateway_error_status(standin: Standin, injected: str, status: int, retryable: bool, fmt: str) -> None:
    standin.env.update(STANDIN_GATEWAY_ERROR=injected, STANDIN_ERROR_FORMAT=fmt)
    with pytest.raises(GatewayError) as info:
        await _transport(standin).call("QuerySmsSignList", {})
    assert (info.value.status, info.value.code) == (status, injected.split(":")[1])
    assert info.value.retryable is retryable
    assert info.value.request_id


async def test_gateway_error_json_format(standin: Standin) -> None:
    standin.env["STANDIN_ERROR_FORMAT"] = "json"
    with pytest.raises(GatewayError) as info:
        await _transport(standin).call("SendSms", {"SignName": SIGN, "TemplateCode": "SMS_900000001"})
    assert (info.value.status, info.value.code) == (400, "MissingPhoneNumbers")
    assert info.value.message == "PhoneNumbers is mandatory for this action."
    assert "troubleshoot" in info.value.recommend


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_cli_usage_error(standin: Standin, fmt: str) -> None:
    standin.env["STANDIN_ERROR_FORMAT"] = fmt
    with pytest.raises(GatewayError) as info:
        await _transport(standin).call("QuerySmsSignList", {"Bogus": "1"})
    assert info.value.status == 400
    assert info.value.code == ("CLI.UsageError" if fmt == "text" else "UNKNOWN_FLAG")
    assert "--bogus" in info.value.message


async def test_plugin_missing_at_call_time(standin: Standin) -> None:
    standin.env["STANDIN_PLUGIN"] = "0"
    with pytest.raises(GatewayError) as info:
        await _transport(standin).call("QuerySmsSignList", {})
    assert info.value.code == "CLI.PluginMissing"
    assert info.value.recommend == "aliyun plugin install --names dysmsapi"


async def test_unparsable_stdout_is_unknown(standin: Standin) -> None:
    standin.env["STANDIN_GARBAGE"] = "1"
    with pytest.raises(OutcomeUnknownError) as info:
        await _transport(standin).call("SendSms", _params()["SendSms"])
    assert info.value.reason == "malformed_response"


async def test_unknown_action_is_refused_locally(standin: Standin) -> None:
    with pytest.raises(GatewayError) as info:
        await _transport(standin).call("DeleteSmsSign", {"SignName": SIGN})
    assert (info.value.status, info.value.code) == (404, "InvalidApi.NotFound")
    assert standin.records() == []


async def test_binary_gone_at_call_time(standin: Standin) -> None:
    transport = _transport(standin)
    standin.bin.unlink()
    with pytest.raises(GatewayError) as info:
        await transport.call("QuerySmsSignList", {})
    assert info.value.code == "CLI.Unavailable" and "SMS_MCP_ALIYUN_BIN" in info.value.message


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_hanging_cli_is_killed_and_outcome_unknown(standin: Standin) -> None:
    # The host runs the plugin as a child process, and the plugin hangs: both must die.
    standin.env.update(STANDIN_HANG="send-sms", STANDIN_HANG_SECONDS="60", STANDIN_SPAWN_PLUGIN="1")
    with pytest.raises(OutcomeUnknownError) as info:
        await _transport(standin, call_timeout=1.5).call("SendSms", _params()["SendSms"])
    assert info.value.reason == "timeout"
    pids = [r["pid"] for r in read_log(standin.log) if r["event"] == "start"]
    assert len(pids) == 2  # host and plugin
    for pid in pids:
        with anyio.move_on_after(5):
            while _alive(pid):
                await anyio.sleep(0.05)
        assert not _alive(pid), f"process {pid} survived the timeout"
    assert EmulatorCore(standin.db).messages() == []


async def test_concurrent_calls_overlap(standin: Standin) -> None:
    standin.env.update(STANDIN_HANG="send-sms", STANDIN_HANG_SECONDS="0.6")
    transport = _transport(standin)
    results: list[dict] = []

    async def send(i: int) -> None:
        # Distinct numbers: the emulator applies Alibaba's per-number flow control.
        params = {**_params()["SendSms"], "PhoneNumbers": f"1380013800{i}", "OutId": f"c{i}"}
        results.append(await transport.call("SendSms", params))

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(send, i)
    assert sorted(r["Code"] for r in results) == ["OK"] * 6
    assert len({r["BizId"] for r in results}) == 6
    assert sorted(m["out_id"] for m in EmulatorCore(standin.db).messages()) == [f"c{i}" for i in range(6)]
    # Every call had started before the first one finished: they ran side by side, not one after another.
    events = read_log(standin.log)
    first_end = next(i for i, r in enumerate(events) if r["event"] == "end")
    assert sum(r["event"] == "start" for r in events[:first_end]) == 6
    for record in standin.records():
        assert_compliant(record, "send-sms")


# ------------------------------------------------------------------------------------------- parsing units


def test_parse_failure_text_variants() -> None:
    text = (
        b"\x1b[1;31mERROR: SDK.ServerError\nErrorCode: SignatureDoesNotMatch\nRecommend: https://r\n"
        b"RequestId: REQ-1\nMessage: Specified signature is not matched. string to sign is:\n"
        b"POST&%2F&AccessKeyId%3DLTAI5tAbCdEfGh1234\nRespHeaders: map[X:[y]]\x1b[0m\n"
    )
    err = parse_failure(1, b"", text)
    assert isinstance(err, GatewayError)
    assert (err.status, err.code, err.request_id, err.recommend) == (400, "SignatureDoesNotMatch", "REQ-1", "https://r")
    assert "string to sign is:" in err.message and "LTAI5tAbCdEfGh1234" not in err.message
    assert err.body["Code"] == "SignatureDoesNotMatch"

    with_status = parse_failure(
        1, b"", b"ERROR: SDK.ServerError\nErrorCode: Forbidden.RAM\nStatusCode: 400\nRequestId: R\nMessage: no"
    )
    assert isinstance(with_status, GatewayError) and with_status.status == 400


@pytest.mark.parametrize(
    "stderr",
    [
        b'ERROR: Post "https://dysmsapi.aliyuncs.com/": context deadline exceeded (Client.Timeout exceeded)',
        b"ERROR: read tcp 10.0.0.2:5123->1.2.3.4:443: read: connection reset by peer",
        b'{"ok":false,"category":"NETWORK_FAILURE","code":"NETWORK_FAILURE","message":"i/o timeout"}',
        b"panic: runtime error: invalid memory address\ngoroutine 1 [running]:",
    ],
)
def test_parse_failure_unknown_outcomes(stderr: bytes) -> None:
    assert isinstance(parse_failure(1, b"", stderr), OutcomeUnknownError)


def test_parse_failure_other_cases() -> None:
    killed = parse_failure(-9, b"", b"")
    assert isinstance(killed, OutcomeUnknownError) and killed.reason == "cli_killed"
    # A usage error that merely mentions a timeout flag is a refusal, not an unknown outcome.
    usage = parse_failure(2, b"", b"ERROR: invalid value 'x' for flag --read-timeout")
    assert isinstance(usage, GatewayError) and usage.code == "CLI.UsageError"
    config = parse_failure(3, b"", b"ERROR: region can't be empty\nTip: run aliyun configure")
    assert (
        isinstance(config, GatewayError) and config.code == "CLI.ConfigError" and "REGION" in (config.recommend.upper())
    )
    envelope = parse_failure(
        2,
        b"",
        b'Note: something\n{"message":"Specified api is not found",'
        b'"error_code":"InvalidApi.NotFound","request_id":"R9",'
        b'"recovery":{"action":"fix","hint":"check the action"}}\n',
    )
    assert isinstance(envelope, GatewayError)
    assert (envelope.status, envelope.code, envelope.request_id, envelope.recommend) == (
        404,
        "InvalidApi.NotFound",
        "R9",
        "check the action",
    )
    on_stdout = parse_failure(1, b'{"Code":"InternalError","Message":"m","HostId":"h","RequestId":"R"}', b"")
    assert isinstance(on_stdout, GatewayError) and on_stdout.status == 500 and on_stdout.retryable


def test_plugin_listed() -> None:
    assert plugin_listed("Name  Version\naliyun-cli-dysmsapi  0.3.1  SMS\n")
    assert plugin_listed('[{"name": "aliyun-cli-dysmsapi", "version": "0.3.1"}]')
    assert plugin_listed("NAME     VERSION\ndysmsapi 0.3.1\n")
    assert not plugin_listed("No plugins installed. Install one with: aliyun plugin install --names dysmsapi")
    assert not plugin_listed("aliyun-cli-dysmsapi-next 1.0\n")


# ------------------------------------------------------------------------------------------- lifecycle

AI_ON = {"enabled": True, "user_agent": AGENT_USER_AGENT}
AI_OFF = {"enabled": False, "user_agent": AGENT_USER_AGENT}


async def test_start_and_aclose_follow_the_skill(standin: Standin) -> None:
    transport = _transport(standin)
    await transport.start()
    assert standin.ai_mode_text() == (
        '{\n\t"enabled": true,\n\t"user_agent": "AlibabaCloud-Agent-Skills/alibabacloud-sms-send-short-message"\n}'
    )
    config = json.loads((standin.home / ".aliyun" / "config.json").read_text())
    assert config["profiles"][0]["auto_plugin_install"] is True
    await transport.call("QuerySmsSignList", {})
    await transport.aclose()
    assert standin.ai_mode() == AI_OFF  # disable keeps the user agent, like the real CLI
    await transport.aclose()
    transport.disable_ai_mode_sync()
    assert standin.commands() == [
        ["version"],
        ["configure", "set", "--auto-plugin-install", "true"],
        ["plugin", "update"],
        ["plugin", "list"],
        ["configure", "ai-mode", "enable"],
        ["configure", "ai-mode", "set-user-agent", "--user-agent", AGENT_USER_AGENT],
        standin.commands()[6],
        ["configure", "ai-mode", "disable"],  # once: the later aclose/sync calls did nothing
    ]
    assert_compliant(standin.records()[6], "query-sms-sign-list")
    for record in standin.records():
        assert record["stdin"] == "devnull" and record["env"]["NO_COLOR"] == "1"


async def test_sync_disable_then_aclose(standin: Standin) -> None:
    transport = _transport(standin)
    await transport.start()
    transport.shutdown_sync()
    assert standin.ai_mode() == AI_OFF
    await transport.aclose()
    assert [c for c in standin.commands() if c[-1] == "disable"] == [["configure", "ai-mode", "disable"]]


async def test_aclose_inside_a_cancelled_scope_still_disables(standin: Standin) -> None:
    transport = _transport(standin)
    await transport.start()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await transport.aclose()  # the server's `finally` often runs while its scope is being cancelled
    assert standin.ai_mode() == AI_OFF


async def test_aclose_is_bounded_when_disable_hangs(standin: Standin, caplog: pytest.LogCaptureFixture) -> None:
    transport = _transport(standin)
    await transport.start()
    standin.env.update(STANDIN_HANG="disable", STANDIN_HANG_SECONDS="60")
    with caplog.at_level(logging.WARNING, "sms_mcp.wire.aliyun_cli"):
        await transport.aclose()
    assert "timed out" in caplog.text
    (record,) = [r for r in standin.records() if r["argv"][-1] == "disable"]
    assert not _alive(record["pid"])


async def test_aclose_when_binary_is_gone(standin: Standin, caplog: pytest.LogCaptureFixture) -> None:
    transport = _transport(standin)
    await transport.start()
    standin.bin.unlink()
    with caplog.at_level(logging.WARNING, "sms_mcp.wire.aliyun_cli"):
        await transport.aclose()
    assert "could not run `aliyun configure ai-mode disable`" in caplog.text
    assert standin.ai_mode()["enabled"] is True  # nothing could turn it off; the log says so
    transport.disable_ai_mode_sync()  # idempotent: no second attempt


async def test_aclose_without_start_does_nothing(standin: Standin) -> None:
    await _transport(standin).aclose()
    assert standin.records() == []


async def test_version_too_old(standin: Standin) -> None:
    standin.env["STANDIN_VERSION"] = "3.3.2"
    with pytest.raises(CliBackendError, match=r"3\.3\.2 .* too old.*>= 3\.3\.3.*github\.com/aliyun/aliyun-cli"):
        await _transport(standin).start()
    assert not (standin.home / ".aliyun" / "ai-mode.json").exists()


@pytest.mark.parametrize("binary", ["/nonexistent/aliyun", "aliyun-not-installed"])
async def test_binary_missing(standin: Standin, binary: str) -> None:
    with pytest.raises(CliBackendError, match="SMS_MCP_ALIYUN_BIN") as info:
        await _transport(standin, aliyun_bin=binary).start()
    assert "https://github.com/aliyun/aliyun-cli" in str(info.value)


async def test_found_on_path_by_name(standin: Standin) -> None:
    transport = _transport(standin, aliyun_bin="aliyun")
    await transport.start()
    await transport.aclose()
    assert standin.ai_mode() == AI_OFF


async def test_plugin_missing(standin: Standin) -> None:
    standin.env["STANDIN_PLUGIN"] = "0"
    with pytest.raises(CliBackendError, match="aliyun plugin install --names dysmsapi"):
        await _transport(standin).start()
    assert not (standin.home / ".aliyun" / "ai-mode.json").exists()


async def test_plugin_update_failure_or_hang_is_not_fatal(standin: Standin) -> None:
    standin.env["STANDIN_FAIL"] = "plugin-update"
    transport = _transport(standin)
    await transport.start()
    await transport.aclose()
    standin.env.update(STANDIN_FAIL="", STANDIN_HANG="plugin-update", STANDIN_HANG_SECONDS="60")
    transport = _transport(standin)
    transport.plugin_update_timeout = 0.5
    await transport.start()
    await transport.aclose()
    assert standin.ai_mode() == AI_OFF


@pytest.mark.parametrize("step", ["set-user-agent", "enable"])
async def test_start_failure_after_enable_disables_again(standin: Standin, step: str) -> None:
    standin.env["STANDIN_FAIL"] = step
    transport = _transport(standin)
    with pytest.raises(CliBackendError, match=f"ai-mode {step}"):
        await transport.start()
    assert standin.ai_mode()["enabled"] is False
    assert standin.commands()[-1] == ["configure", "ai-mode", "disable"]
    await transport.aclose()  # already done: nothing more runs
    assert sum(c[-1] == "disable" for c in standin.commands()) == 1


async def test_other_process_disabling_does_not_change_our_calls(standin: Standin) -> None:
    ours, theirs = _transport(standin), _transport(standin)
    await ours.start()
    await theirs.start()
    await theirs.aclose()  # the other sms-mcp exits: the shared file now says disabled
    assert standin.ai_mode()["enabled"] is False
    await ours.call("QuerySmsSignList", {})
    assert_compliant(standin.records()[-1], "query-sms-sign-list")
    await ours.aclose()


async def test_diagnose_reports_without_secrets(standin: Standin) -> None:
    secret = "VerySecretValue0123456789abcdef"
    config = {
        "current": "default",
        "profiles": [
            {
                "name": "default",
                "mode": "AK",
                "access_key_id": "LTAI5tAbCdEfGh1234",
                "access_key_secret": secret,
                "region_id": "cn-hangzhou",
            }
        ],
        "meta_path": "",
    }
    (standin.home / ".aliyun").mkdir()
    (standin.home / ".aliyun" / "config.json").write_text(json.dumps(config))
    report = await _transport(standin).diagnose()
    text = json.dumps(report, ensure_ascii=False)
    assert secret not in text and "LTAI5tAbCdEfGh1234" not in text
    assert report["path"] == str(standin.bin)
    assert report["version"] == "3.4.11" and report["version_ok"] is True
    assert report["dysmsapi_plugin"] is True
    creds = report["credentials"]
    assert (creds["profile"], creds["mode"], creds["access_key_id"]) == ("default", "AK", "LTAI****1234")
    assert report["ai_mode"]["enabled"] is False
    assert report["problems"] == []
    assert not any(c[:2] == ["configure", "get"] for c in standin.commands())


async def test_diagnose_lists_problems(standin: Standin) -> None:
    standin.env.update(STANDIN_VERSION="3.2.0", STANDIN_PLUGIN="0")
    report = await _transport(standin).diagnose()
    problems = " ".join(report["problems"])
    assert "3.2.0" in problems and "aliyun plugin install --names dysmsapi" in problems
    assert "aliyun configure" in problems  # neither a profile nor env credentials
    gone = await _transport(standin, aliyun_bin=str(standin.bin) + "-missing").diagnose()
    assert gone["path"] is None and "SMS_MCP_ALIYUN_BIN" in gone["problems"][0]


def test_env_credentials_are_masked(standin: Standin) -> None:
    from sms_mcp.wire.aliyun_cli import read_profile

    info = read_profile({**standin.env, "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tZZZZZZZZ9876"}, None)
    assert info["env_access_key_id"] == "LTAI****9876"
    assert "LTAI5tZZZZZZZZ9876" not in json.dumps(info)
