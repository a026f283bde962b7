"""A stand-in for Alibaba's ``aliyun`` CLI (the real one cannot be installed in CI), faithful to
shared/reference/aliyun-cli.md: the commands sms-mcp's CLI backend runs, the files they write, and the output
conventions of the dysmsapi plugin. ``dysmsapi`` commands are answered by the real emulator (``EmulatorCore``).

``install(directory)`` writes an executable ``aliyun`` launcher (``#!<this python>``) that runs :func:`main`.
Behaviour is configured through the environment, so a test can set it for a whole ``sms-mcp serve`` process:

===========================  ===========================================================================
``STANDIN_LOG``              JSON-lines log of every invocation (argv, pid, AI-mode env, NO_COLOR, stdin kind)
``STANDIN_VERSION``          what ``aliyun version`` prints (default 3.4.11)
``STANDIN_DB``               emulator database (default ``$HOME/standin.sqlite3``)
``STANDIN_PLUGIN``           ``0``: the dysmsapi plugin is not installed
``STANDIN_FAIL``             comma list of steps that fail: version, configure-set, plugin-update, plugin-list,
                             enable, disable, set-user-agent, show, or a kebab action (``send-sms``)
``STANDIN_HANG``             comma list of steps that hang (sleep ``STANDIN_HANG_SECONDS``, default 30)
``STANDIN_ERROR_FORMAT``     ``text`` (default: ``ERROR: SDK.ServerError`` text, ANSI unless NO_COLOR, exit 1)
                             or ``json`` (3.5.x AI mode: one JSON line on stderr, exit 2)
``STANDIN_GATEWAY_ERROR``    ``<status>:<code>`` answer every dysmsapi call with that gateway error
``STANDIN_GARBAGE``          ``1``: dysmsapi calls print non-JSON and exit 0
``STANDIN_SPAWN_PLUGIN``     ``1``: run the dysmsapi part in a child process, like the real CLI runs a plugin
===========================  ===========================================================================

It never prints a secret (it has none; ``configure get`` is refused and logged so tests can assert it never ran).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

PRODUCT = "dysmsapi"
PLUGIN_NAME = "aliyun-cli-dysmsapi"

#: kebab command -> (Dysmsapi action, {flag: wire name}); aliyun-cli.md §3. Independent of the transport's own
#: table on purpose: a mapping bug in either shows up as a refused flag.
COMMANDS: dict[str, tuple[str, dict[str, str]]] = {
    "send-sms": (
        "SendSms",
        {
            "--phone-numbers": "PhoneNumbers",
            "--sign-name": "SignName",
            "--template-code": "TemplateCode",
            "--template-param": "TemplateParam",
            "--sms-up-extend-code": "SmsUpExtendCode",
            "--out-id": "OutId",
        },
    ),
    "send-batch-sms": (
        "SendBatchSms",
        {
            "--phone-number-json": "PhoneNumberJson",
            "--sign-name-json": "SignNameJson",
            "--template-code": "TemplateCode",
            "--template-param-json": "TemplateParamJson",
            "--sms-up-extend-code-json": "SmsUpExtendCodeJson",
            "--out-id": "OutId",
        },
    ),
    "query-send-details": (
        "QuerySendDetails",
        {
            "--phone-number": "PhoneNumber",
            "--send-date": "SendDate",
            "--page-size": "PageSize",
            "--current-page": "CurrentPage",
            "--biz-id": "BizId",
        },
    ),
    "query-send-statistics": (
        "QuerySendStatistics",
        {
            "--is-globe": "IsGlobe",
            "--start-date": "StartDate",
            "--end-date": "EndDate",
            "--page-index": "PageIndex",
            "--page-size": "PageSize",
            "--template-type": "TemplateType",
            "--sign-name": "SignName",
            "--sku-code": "SkuCode",
        },
    ),
    "query-sms-sign-list": ("QuerySmsSignList", {"--page-index": "PageIndex", "--page-size": "PageSize"}),
    "query-sms-template-list": (
        "QuerySmsTemplateList",
        {"--page-index": "PageIndex", "--page-size": "PageSize", "--sku-code": "SkuCode"},
    ),
    "get-sms-sign": ("GetSmsSign", {"--sign-name": "SignName"}),
    "get-sms-template": ("GetSmsTemplate", {"--template-code": "TemplateCode"}),
    "query-sms-qualification-record": (
        "QuerySmsQualificationRecord",
        {
            "--qualification-group-name": "QualificationGroupName",
            "--company-name": "CompanyName",
            "--state": "State",
            "--work-order-id": "WorkOrderId",
            "--legal-person-name": "LegalPersonName",
            "--use-by-self": "UseBySelf",
            "--page-no": "PageNo",
            "--page-size": "PageSize",
        },
    ),
    "query-single-sms-qualification": (
        "QuerySingleSmsQualification",
        {"--qualification-group-id": "QualificationGroupId", "--order-id": "OrderId"},
    ),
}

#: Global flags a plugin command accepts (aliyun-cli.md §3 "Global flags"), with or without a value.
GLOBAL_VALUE_FLAGS = {
    "--api-version",
    "--user-agent",
    "--read-timeout",
    "--connect-timeout",
    "--region",
    "--endpoint",
    "--profile",
    "--cli-query",
    "--log-level",
    "--config-path",
}
GLOBAL_BOOL_FLAGS = {
    "--cli-ai-mode",
    "--no-cli-ai-mode",
    "--quiet",
    "-q",
    "--cli-dry-run",
    "--insecure",
    "--pager",
    "--all-pages",
}

RED, RESET = "\x1b[1;31m", "\x1b[0m"


# ---------------------------------------------------------------------------------------------- helpers


def install(directory: Path) -> Path:
    """Write the ``aliyun`` launcher into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    launcher = directory / "aliyun"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path[:0] = [{str(REPO_ROOT)!r}, {str(Path(__file__).resolve().parent)!r}]\n"
        "import aliyun_standin\n"
        "sys.exit(aliyun_standin.main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return launcher


@dataclass
class Standin:
    """One installed stand-in with its own HOME, log and emulator database."""

    bin: Path
    home: Path
    log: Path
    db: Path
    env: dict[str, str]

    def records(self, role: str = "host") -> list[dict[str, Any]]:
        """The logged invocations (start events) of ``role``, in order."""
        return [r for r in read_log(self.log) if r["event"] == "start" and r["role"] == role]

    def commands(self) -> list[list[str]]:
        return [r["argv"] for r in self.records()]

    def ai_mode_text(self) -> str:
        return (self.home / ".aliyun" / "ai-mode.json").read_text(encoding="utf-8")

    def ai_mode(self) -> dict[str, Any]:
        return json.loads(self.ai_mode_text())


def setup(tmp_path: Path) -> Standin:
    """Install a stand-in under ``tmp_path`` and an environment for running it (no real Alibaba settings)."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    launcher = install(tmp_path / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ALIBABA_CLOUD_", "ALIBABACLOUD_", "ALICLOUD_", "STANDIN_", "SMS_MCP_"))
    }
    env.update(
        {
            "HOME": str(home),
            "PATH": f"{launcher.parent}{os.pathsep}{env.get('PATH', '')}",
            "STANDIN_LOG": str(tmp_path / "standin.log"),
            "STANDIN_DB": str(tmp_path / "standin.sqlite3"),
        }
    )
    return Standin(launcher, home, tmp_path / "standin.log", tmp_path / "standin.sqlite3", env)


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def _stdin_kind() -> str:
    try:
        st = os.fstat(0)
    except OSError:
        return "closed"
    if os.isatty(0):
        return "tty"
    try:
        null = os.stat(os.devnull)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
            return "devnull"
    except OSError:
        pass
    return "pipe" if stat.S_ISFIFO(st.st_mode) else "file"


def _aliyun_dir() -> Path:
    return Path(os.environ.get("HOME") or Path.home()) / ".aliyun"


def _log(argv: list[str], role: str, event: str = "start") -> None:
    path = os.environ.get("STANDIN_LOG")
    if not path:
        return
    record = {
        "event": event,
        "argv": argv,
        "role": role,
        "pid": os.getpid(),
        "time": time.time(),
        "env": {k: os.environ.get(k) for k in ("ALIBABA_CLOUD_CLI_AI_MODE", "NO_COLOR")},
        "stdin": _stdin_kind(),
    }
    # One write() on an O_APPEND descriptor: concurrent invocations never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _maybe_hang(step: str) -> None:
    if step in _env_list("STANDIN_HANG"):
        time.sleep(float(os.environ.get("STANDIN_HANG_SECONDS", "30")))


def _err(message: str, code: int = 1) -> int:
    # STANDIN_FORCE_COLOR: a CLI build that colours even with NO_COLOR set; the caller must strip the codes.
    color = not os.environ.get("NO_COLOR") or os.environ.get("STANDIN_FORCE_COLOR") == "1"
    sys.stderr.write(f"{RED if color else ''}ERROR: {message}{RESET if color else ''}\n")
    return code


def _write_json_file(path: Path, data: dict[str, Any], atomic: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent="\t")
    if atomic:  # config.json since v3.4.9
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    else:  # ai-mode.json: a plain, non-atomic write, like the real CLI
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)


# ---------------------------------------------------------------------------------------------- commands


def _ai_mode(args: list[str]) -> int:
    path = _aliyun_dir() / "ai-mode.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    sub = args[0] if args else "show"
    if sub in _env_list("STANDIN_FAIL"):
        return _err(f"failed to {sub} AI mode: simulated failure")
    _maybe_hang(sub)
    state = {"enabled": bool(data.get("enabled"))}
    if data.get("user_agent"):
        state["user_agent"] = data["user_agent"]
    if sub == "show":
        shown: dict[str, Any] = {
            "enabled": state["enabled"],
            "effective_user_agent": state.get("user_agent") or "AlibabaCloud-Agent-Skills",
            "config_file": str(path),
        }
        if state["enabled"]:
            shown["request_user_agent_suffix"] = (
                f"AlibabaCloud-AIMode/enabled {state.get('user_agent') or 'AlibabaCloud-Agent-Skills'}"
            )
        print(json.dumps(shown, indent="\t"))
        return 0
    if sub in ("enable", "disable"):
        state["enabled"] = sub == "enable"  # disable keeps user_agent (verified on 3.4.11)
    elif sub == "set-user-agent":
        if len(args) != 3 or args[1] != "--user-agent":
            return _err("usage: aliyun configure ai-mode set-user-agent --user-agent <value>", 2)
        state["user_agent"] = args[2]
    elif sub == "reset-user-agent":
        state.pop("user_agent", None)
    else:
        return _err(f"unknown ai-mode subcommand {sub!r}", 2)
    _write_json_file(path, state, atomic=False)
    print(f"AI mode {'enabled' if state['enabled'] else 'disabled'}.")
    return 0


def _configure(args: list[str]) -> int:
    if not args:
        return _err("interactive configure is not supported by the stand-in", 2)
    if args[0] == "ai-mode":
        return _ai_mode(args[1:])
    if args[0] == "get":
        return _err("the stand-in refuses `configure get` (the real one prints the secret in clear)", 2)
    if args[0] != "set":
        return _err(f"'{args[0]}' is not a valid command", 2)
    if "configure-set" in _env_list("STANDIN_FAIL"):
        return _err("configure set: simulated failure")
    _maybe_hang("configure-set")
    opts = dict(zip(args[1::2], args[2::2], strict=False))
    path = _aliyun_dir() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {"current": "", "profiles": [], "meta_path": ""}
    name = opts.get("--profile") or config.get("current") or "default"
    profile = next((p for p in config["profiles"] if p.get("name") == name), None)
    if profile is None:
        profile = {"name": name, "mode": "AK", "output_format": "json", "language": "en", "site": "china"}
        config["profiles"].append(profile)
    if "--auto-plugin-install" in opts:
        profile["auto_plugin_install"] = opts["--auto-plugin-install"] == "true"
    if "--region" in opts:
        profile["region_id"] = opts["--region"]
    config["current"] = config.get("current") or name
    _write_json_file(path, config, atomic=True)
    return 0


def _plugin(args: list[str]) -> int:
    sub = args[0] if args else ""
    present = os.environ.get("STANDIN_PLUGIN", "1") != "0"
    if sub == "update":
        _maybe_hang("plugin-update")
        if "plugin-update" in _env_list("STANDIN_FAIL"):
            return _err(
                'failed to fetch plugin index: Get "https://aliyuncli.alicdn.com/plugins/'
                'plugin_pkg_index.json": dial tcp: lookup aliyuncli.alicdn.com: no such host'
            )
        print("All installed plugins are up to date.")
        return 0
    if sub == "list":
        if "plugin-list" in _env_list("STANDIN_FAIL"):
            return _err("cannot read plugin manifest")
        if present:
            print("Name                 Version  Description")
            print(f"{PLUGIN_NAME:<20} 0.3.1    Alibaba Cloud Dysmsapi (SMS) plugin")
        else:
            print("No plugins installed. Install one with: aliyun plugin install --names <product>")
        return 0
    return _err(f"'plugin {sub}' is not supported by the stand-in", 2)


def _gateway_error(status: int, code: str, message: str, request_id: str, recommend: str) -> int:
    if os.environ.get("STANDIN_ERROR_FORMAT") == "json":
        # CLI 3.5.x with AI mode: one compact JSON object on stderr, exit 2 (aliyun-cli.md §1.6).
        sys.stderr.write(
            json.dumps(
                {
                    "message": message,
                    "error_code": code,
                    "status_code": status,
                    "request_id": request_id,
                    "recovery": {"action": "check_request", "hint": recommend},
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
        )
        return 2
    text = (
        f"SDK.ServerError\nErrorCode: {code}\nRecommend: {recommend}\nRequestId: {request_id}\n"
        f"Message: {message}\nRespHeaders: map[Content-Type:[application/json;charset=utf-8] "
        f"X-Acs-Request-Id:[{request_id}]]"
    )
    return _err(text, 1)


def _usage_error(message: str) -> int:
    if os.environ.get("STANDIN_ERROR_FORMAT") == "json":
        sys.stderr.write(
            json.dumps(
                {
                    "ok": False,
                    "category": "USAGE_ERROR",
                    "code": "UNKNOWN_FLAG",
                    "message": message,
                    "suggestions": [],
                    "retryable": False,
                    "requestId": "",
                    "recovery": {"action": "fix_command", "hint": "run: aliyun dysmsapi --help"},
                },
                separators=(",", ":"),
            )
            + "\n"
        )
        return 2
    return _err(message, 2)


def _dysmsapi(args: list[str]) -> int:
    if os.environ.get("STANDIN_PLUGIN", "1") == "0":
        if _stdin_kind() == "tty":
            sys.stderr.write(f"Plugin {PLUGIN_NAME} is not installed. Do you want to install it? [Y/n] ")
            sys.stderr.flush()
            sys.stdin.readline()  # the real CLI waits here: why stdin must be /dev/null
            return 1
        sys.stderr.write(f"Install it with: aliyun plugin install --names {PRODUCT}\n")
        return _err(f"'{PRODUCT}' is not a valid product. See 'aliyun help'.", 2)
    if not args or args[0] not in COMMANDS:
        return _usage_error(f"'{args[0] if args else ''}' is not a valid command of {PRODUCT}")
    command = args[0]
    action, flag_map = COMMANDS[command]
    params: dict[str, str] = {}
    globals_: dict[str, str] = {}
    rest = args[1:]
    i = 0
    while i < len(rest):
        flag = rest[i]
        if flag in GLOBAL_BOOL_FLAGS:
            globals_[flag] = "true"
            i += 1
            continue
        if flag not in flag_map and flag not in GLOBAL_VALUE_FLAGS:
            return _usage_error(f"'{flag}' is not a valid parameter or flag. See 'aliyun {PRODUCT} {command} -h'.")
        if i + 1 >= len(rest):
            return _usage_error(f"{flag} needs a value")
        if flag in flag_map:
            params[flag_map[flag]] = rest[i + 1]
        else:
            globals_[flag] = rest[i + 1]
        i += 2
    version = globals_.get("--api-version", "2017-05-25")
    if version != "2017-05-25":
        return _usage_error(f"api version {version} is not supported by {command}")
    _maybe_hang(command)
    if command in _env_list("STANDIN_FAIL"):
        return _err("internal plugin failure (simulated)", 1)
    if os.environ.get("STANDIN_GARBAGE") == "1":
        print("<html>502 Bad Gateway</html>")
        return 0
    request_id = str(uuid.uuid4()).upper()
    injected = os.environ.get("STANDIN_GATEWAY_ERROR")
    if injected:
        status, _, code = injected.partition(":")
        return _gateway_error(
            int(status),
            code,
            f"{code} (simulated)",
            request_id,
            f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi",
        )

    from sms_mcp.emulator.core import EmulatorCore
    from sms_mcp.wire.base import GatewayError

    db = os.environ.get("STANDIN_DB") or str(Path(os.environ.get("HOME", ".")) / "standin.sqlite3")
    core = EmulatorCore(db, receipt_delay=float(os.environ.get("STANDIN_RECEIPT_DELAY", "0")))
    try:
        body = core.handle(action, params)
    except GatewayError as exc:
        return _gateway_error(exc.status, exc.code, exc.message, exc.request_id, exc.recommend)
    finally:
        core.close()
    if "--quiet" in globals_ or "-q" in globals_:
        return 0
    # Business errors (Code != "OK") are HTTP 200: the body on stdout, exit 0 (aliyun-cli.md §4.1).
    print(json.dumps(body, indent="\t", sort_keys=True, ensure_ascii=False))
    return 0


def main(argv: list[str]) -> int:
    role = "plugin" if os.environ.get("STANDIN_IS_PLUGIN") == "1" else "host"
    _log(argv, role)
    if not argv:
        print("Alibaba Cloud Command Line Interface (stand-in)")
        return 0
    head, args = argv[0], argv[1:]
    if head == "version":
        if "version" in _env_list("STANDIN_FAIL"):
            return _err("simulated failure")
        print(os.environ.get("STANDIN_VERSION", "3.4.11"))
        return 0
    if head == "configure":
        return _configure(args)
    if head == "plugin":
        return _plugin(args)
    if head.lower() == PRODUCT:
        if role == "host" and os.environ.get("STANDIN_SPAWN_PLUGIN") == "1":
            # Like the real host: the plugin is a child process with inherited stdio; its exit code is ours.
            env = dict(os.environ, STANDIN_IS_PLUGIN="1")
            return subprocess.call([sys.argv[0], *argv], env=env)
        try:
            return _dysmsapi(args)
        finally:
            _log(argv, role, "end")
    return _err(f"'{head}' is not a valid command or product. See 'aliyun help'.", 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
