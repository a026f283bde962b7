"""Settings: every value validated once at start, one clear line per bad value; `serve` refuses, `doctor` fails."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROXY_VARS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_mcp.config import RECONCILE_MARGIN_SECONDS, ConfigError, Settings, check_data_dir
from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer

VARIABLES = Settings.variables()


def refusal(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    return caught.value.lines


# ------------------------------------------------------------------------------------------ one line per bad value


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("SMS_MCP_CONFIRM_TTL_SECONDS", "nan", "from 1 to 86400"),
        ("SMS_MCP_CONFIRM_TTL_SECONDS", "inf", "from 1 to 86400"),
        ("SMS_MCP_CONFIRM_TTL_SECONDS", "1e12", "from 1 to 86400"),
        ("SMS_MCP_CONFIRM_TTL_SECONDS", "-inf", "from 1 to 86400"),
        ("SMS_MCP_MAX_RECIPIENTS", "99999999999999999999999", "from 1 to 100000"),
        ("SMS_MCP_MAX_RECIPIENTS", "1.5", "from 1 to 100000"),
        ("SMS_MCP_CONNECT_TIMEOUT", "inf", "from 0.1 to 120"),
        ("SMS_MCP_READ_TIMEOUT", "0", "from 0.1 to 300"),
        ("SMS_MCP_SANDBOX_RECEIPT_DELAY", "nan", "from 0 to 3600"),
        ("SMS_MCP_DAILY_LIMIT", "-1", "from 0 to 100000000"),
        ("SMS_MCP_DATA_DIR", "~nosuchuser-sms-mcp/x", "directory"),
        ("SMS_MCP_DATA_DIR", "/tmp/a\0b", "directory"),
        ("SMS_MCP_LOG_LEVEL", "bogus", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("SMS_MCP_BACKEND", "magic", "auto, sandbox, openapi, cli"),
        ("SMS_MCP_CONFIRM_MODE", "maybe", "token, elicit, auto"),
        ("SMS_MCP_READ_ONLY", "perhaps", "true or false"),
        ("SMS_MCP_ENDPOINT", "::::", "http://host:port"),
        ("SMS_MCP_ENDPOINT", "http://[::1", "http://host:port"),
        ("SMS_MCP_ENDPOINT", "127.0.0.1:99999", "http://host:port"),
        ("SMS_MCP_ENDPOINT", "ftp://host", "http://host:port"),
        ("SMS_MCP_ENDPOINT", "http://host/some/path", "http://host:port"),
        ("SMS_MCP_ALIYUN_PROFILE", "a b", "profile name"),
        ("ALIBABA_CLOUD_REGION_ID", "Mars Base 1", "region id"),
        ("SMS_MCP_ALLOWED_NUMBERS", "+", "patterns ending in *"),
    ],
)
def test_a_bad_value_is_one_line_naming_variable_value_and_what_is_allowed(
        variable: str, value: str, allowed: str) -> None:
    lines = refusal({variable: value, "HOME": "/tmp"})
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"{variable}=") and allowed in line and "allowed:" in line
    assert repr(value)[1:-1][:20] in line  # the value, as given
    assert "Traceback" not in line and "\n" not in line


def test_every_bad_value_gets_its_own_line() -> None:
    lines = refusal({"SMS_MCP_CONFIRM_TTL_SECONDS": "nan", "SMS_MCP_MAX_RECIPIENTS": "0", "SMS_MCP_LOG_LEVEL": "x",
                     "SMS_MCP_ENDPOINT": "http://[::1", "SMS_MCP_SANDBOX_RECEIPT_DELAY": "inf"})
    named = sorted(line.split("=", 1)[0] for line in lines)
    assert named == ["SMS_MCP_CONFIRM_TTL_SECONDS", "SMS_MCP_ENDPOINT", "SMS_MCP_LOG_LEVEL", "SMS_MCP_MAX_RECIPIENTS",
                     "SMS_MCP_SANDBOX_RECEIPT_DELAY"]


def test_echoes_are_bounded_and_never_carry_a_password() -> None:
    (line,) = refusal({"SMS_MCP_BACKEND": "x" * 100_000})
    assert len(line) < 400 and "100000 characters" in line
    (line,) = refusal({"SMS_MCP_ENDPOINT": "http://admin:hunter2@example.com"})
    assert "hunter2" not in line and "admin" not in line and "***@" in line


def test_an_unexpanded_host_placeholder_is_named_as_such() -> None:
    # A host passes "${VAR}" through literally when VAR is unset: an allow-list must not silently become "none".
    (line,) = refusal({"SMS_MCP_ALLOWED_NUMBERS": "${SMS_ALLOWED}"})
    assert line.startswith("SMS_MCP_ALLOWED_NUMBERS='${SMS_ALLOWED}'") and "unexpanded" in line
    (line,) = refusal({"SMS_MCP_LOG_LEVEL": "$LEVEL"})
    assert "unexpanded" in line


def test_good_values_are_parsed_and_blank_means_default() -> None:
    s = Settings.from_env({"SMS_MCP_BACKEND": " OpenAPI ", "SMS_MCP_LOG_LEVEL": "debug", "SMS_MCP_READ_ONLY": "on",
                           "SMS_MCP_CONFIRM_TTL_SECONDS": " ", "SMS_MCP_ENDPOINT": "http://[::1]:8080",
                           "SMS_MCP_DATA_DIR": "~/sms", "HOME": "/home/u", "ALIBABA_CLOUD_REGION_ID": "ap-southeast-1"})
    assert (s.backend, s.log_level, s.read_only, s.confirm_ttl_seconds) == ("openapi", "DEBUG", True, 600.0)
    assert s.endpoint == "http://[::1]:8080" and s.region_id == "ap-southeast-1"
    assert s.data_dir == Path("~/sms").expanduser()  # expanded once, at start


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError):
        Settings(confirm_ttl_seconds=math.nan)
    assert Settings(endpoint="http://127.0.0.1:9").endpoint == "http://127.0.0.1:9"


def test_a_data_dir_that_cannot_hold_files_is_one_line(tmp_path: Path) -> None:
    assert check_data_dir(tmp_path / "new" / "dir") is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    for bad in (Path("/proc/self"), blocker, blocker / "below"):
        line = check_data_dir(bad)
        assert line is not None and line.startswith(f"SMS_MCP_DATA_DIR='{bad}'") and "writable directory" in line


# ------------------------------------------------------------------------------------------ reconcile grace


def test_reconcile_grace_below_the_timeouts_plus_the_margin_is_refused() -> None:
    minimum = 5 + 3 + RECONCILE_MARGIN_SECONDS  # the default connect and read timeouts
    (line,) = refusal({"SMS_MCP_RECONCILE_GRACE_SECONDS": str(minimum - 0.5)})
    assert line.startswith("SMS_MCP_RECONCILE_GRACE_SECONDS=") and f"{minimum:g}" in line
    assert "SMS_MCP_READ_TIMEOUT" in line and "margin" in line
    assert Settings.from_env({"SMS_MCP_RECONCILE_GRACE_SECONDS": str(minimum)}).reconcile_grace_seconds == minimum
    # Lower timeouts allow a shorter grace; a longer read timeout needs a longer one.
    assert Settings.from_env({"SMS_MCP_RECONCILE_GRACE_SECONDS": "7", "SMS_MCP_READ_TIMEOUT": "1",
                              "SMS_MCP_CONNECT_TIMEOUT": "1"}).reconcile_grace_seconds == 7
    refusal({"SMS_MCP_READ_TIMEOUT": "60"})  # the default grace (30) no longer covers an attempt
    refusal({"SMS_MCP_RECONCILE_GRACE_SECONDS": "0"})


# ------------------------------------------------------------------------------------------ property


SPECIAL = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e308", "1e-308", "-0", "0", "1", "-1", "1e12", "0x10",
                           "99999999999999999999999", "true", "false", "yes", "", " ", "null", "[]", "{}", "~",
                           "~nosuchuser/x", "/proc/self", "::::", "http://[::1", "http://x:0", "+", "1", "+86138*",
                           "\0", "１０", "３", "1_000", "٣"])
VALUES = st.one_of(SPECIAL, st.text(max_size=40), st.floats().map(str), st.integers().map(str))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env=st.dictionaries(st.sampled_from(sorted(VARIABLES.values())), VALUES, max_size=6))
def test_any_settings_values_give_settings_or_clear_lines_never_a_traceback(env: dict[str, str]) -> None:
    try:
        s = Settings.from_env({"HOME": "/tmp", **env})
    except ConfigError as err:
        assert err.lines
        for line in err.lines:
            assert line.split("=", 1)[0] in VARIABLES.values() and "allowed" in line and len(line) < 800
        return
    for value in (s.confirm_ttl_seconds, s.reconcile_grace_seconds, s.sandbox_receipt_delay, s.read_timeout,
                  s.connect_timeout):
        assert math.isfinite(value) and value >= 0
    assert 1 <= s.confirm_ttl_seconds <= 86_400 and 1 <= s.max_recipients <= 100_000
    assert s.reconcile_grace_seconds >= s.read_timeout + s.connect_timeout + RECONCILE_MARGIN_SECONDS
    assert all(a.startswith("+") for a in s.allowed_numbers)


# ------------------------------------------------------------------------------------------ serve and doctor


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALIBABA_CLOUD_", "SMS_MCP_")) and k not in PROXY_VARS}
    env.update({"HOME": str(tmp_path), "SMS_MCP_DATA_DIR": str(tmp_path / "data"), "NO_PROXY": "127.0.0.1",
                "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"})
    return env


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sms_mcp", command], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("bad", [{"SMS_MCP_CONFIRM_TTL_SECONDS": "inf", "SMS_MCP_MAX_RECIPIENTS": "1e30"},
                                 {"SMS_MCP_DATA_DIR": "/proc/self"}, {"SMS_MCP_DATA_DIR": "~nosuchuser-sms-mcp/x"},
                                 {"SMS_MCP_RECONCILE_GRACE_SECONDS": "1"}])
def test_serve_refuses_to_start_and_doctor_fails_without_a_traceback(tmp_path: Path, bad: dict[str, str]) -> None:
    env = {**base_env(tmp_path), "SMS_MCP_BACKEND": "sandbox", **bad}
    for command in ("serve", "doctor"):
        done = run(command, env)
        assert done.returncode != 0, (command, done.stdout, done.stderr)
        output = done.stdout + done.stderr
        assert "Traceback" not in output
        for variable in bad:
            assert f"{variable}=" in output, (command, output)
        if command == "serve":
            assert done.stdout == ""  # stdout is the protocol: nothing but MCP ever goes there


def test_doctor_shows_the_normalised_allow_list(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "SMS_MCP_BACKEND": "sandbox",
           "SMS_MCP_ALLOWED_NUMBERS": "+86 138 0013 8000, １３９１２３４５６７８; +852*"}
    done = run("doctor", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"allowed_numbers": ["+86 138****8000", "+86 139****5678", "+852*"]' in done.stdout
    refused = run("doctor", {**env, "SMS_MCP_ALLOWED_NUMBERS": "1380013800"})  # a 10-digit typo
    assert refused.returncode != 0 and "SMS_MCP_ALLOWED_NUMBERS='138***3800'" in refused.stderr  # masked as in logs
    assert "'1380013800'" not in refused.stderr


@pytest.mark.parametrize(("key_id", "secret", "code"), [
    (DEMO_ACCESS_KEY_ID, "not-the-secret", "SignatureDoesNotMatch"),
    ("no-such-key-id", DEMO_ACCESS_KEY_SECRET, "InvalidAccessKeyId"),
    (None, None, "credentials"),
    (DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, None),
])
def test_doctor_fails_when_the_openapi_backend_cannot_work(
        emulator_server: EmulatorServer, tmp_path: Path, key_id: str | None, secret: str | None, code: str | None
) -> None:
    env = {**base_env(tmp_path), "SMS_MCP_BACKEND": "openapi", "SMS_MCP_ENDPOINT": emulator_server.url}
    if key_id and secret:
        env.update({"ALIBABA_CLOUD_ACCESS_KEY_ID": key_id, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret})
    done = run("doctor", env)
    assert "Traceback" not in done.stdout + done.stderr
    if code is None:  # the right pair: doctor passes, so the failures above are about the credentials
        assert done.returncode == 0, done.stdout
        assert '"reachable": true' in done.stdout
    else:
        assert done.returncode == 1 and code in done.stdout, done.stdout
        assert "cannot work" in done.stdout
    assert DEMO_ACCESS_KEY_SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("typo", ["SMS_MCP_ALLOWED_NUMBER", "SMS_MCP_READONLY", "sms_mcp_daily_limits"])
def test_a_misspelt_policy_variable_refuses_to_start(tmp_path: Path, typo: str) -> None:
    env = {**base_env(tmp_path), "SMS_MCP_BACKEND": "sandbox", typo: "+8613800138000"}
    for command in ("serve", "doctor"):
        done = run(command, env)
        assert done.returncode != 0 and "did you mean SMS_MCP_" in done.stdout + done.stderr, (command, done)
        assert "Traceback" not in done.stdout + done.stderr


def test_an_unrelated_unknown_variable_is_only_a_warning(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "SMS_MCP_BACKEND": "sandbox", "SMS_MCP_SOMETHING_FROM_THE_FUTURE": "1",
           "SMS_MCP_HOST_TOOLS": "/x"}
    done = run("serve", env)  # stdin is empty: serves, sees EOF, exits 0
    assert done.returncode == 0, done.stderr
    assert "SMS_MCP_SOMETHING_FROM_THE_FUTURE' is not a setting" in done.stderr
    assert "SMS_MCP_HOST_TOOLS" not in done.stderr


def test_doctor_fails_for_the_cli_backend_without_the_cli(tmp_path: Path) -> None:
    done = run("doctor", {**base_env(tmp_path), "SMS_MCP_BACKEND": "cli", "SMS_MCP_ALIYUN_BIN": str(tmp_path / "no")})
    assert done.returncode == 1 and "aliyun CLI not found" in done.stdout and "Traceback" not in done.stderr
