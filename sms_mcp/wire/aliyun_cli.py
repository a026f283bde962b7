"""The aliyun CLI backend (``SMS_MCP_BACKEND=cli``): Dysmsapi through Alibaba's own ``aliyun`` binary.

This is the path Alibaba's official agent skill ``alibabacloud-sms-send-short-message`` uses, made safe to run
inside a long-lived server. Every call is one argument vector, never a shell::

    aliyun dysmsapi send-sms --api-version 2017-05-25 --phone-numbers ... --sign-name ... --template-code ...
        --user-agent AlibabaCloud-Agent-Skills/alibabacloud-sms-send-short-message --read-timeout 3
        --cli-ai-mode [--profile P] [--region R] [--endpoint host:port]

run with stdin = /dev/null (a TTY stdin makes the CLI ask "install plugin? [Y/n]" and wait), ``NO_COLOR=1``
(the CLI colours stderr even into a pipe) and ``ALIBABA_CLOUD_CLI_AI_MODE=1`` in the child's environment.
JSON on stdout is the wire body (business errors exit 0 with ``Code != "OK"``); a non-zero exit is parsed from
stderr (the ``ERROR: SDK.ServerError`` text, or the one-line JSON of CLI 3.5.x) into ``GatewayError``; a timeout,
a killed child or unreadable output is ``OutcomeUnknownError``. The hard timeout kills the child's whole process
group (the CLI runs the dysmsapi plugin as a grandchild).

Region: ``--region`` is passed only when ``ALIBABA_CLOUD_REGION_ID`` is set, or when the chosen aliyun profile
has no region (the CLI would otherwise fail with "region can't be empty"; then ``cn-hangzhou``, Dysmsapi's home
region, is used). A region configured in the aliyun profile is respected, unlike the skill's script, which always
forces ``cn-hangzhou``.

AI-mode lifecycle (the skill's sequence, done by the server instead of the agent):

* ``start()``: ``aliyun version`` must be >= 3.3.3; ``aliyun configure set --auto-plugin-install true``;
  ``aliyun plugin update`` (5 s, failure tolerated: it needs the network); the dysmsapi plugin must be listed by
  ``aliyun plugin list``; then ``aliyun configure ai-mode enable`` and ``aliyun configure ai-mode set-user-agent
  --user-agent AlibabaCloud-Agent-Skills/alibabacloud-sms-send-short-message``.
  If anything fails after ``enable`` was attempted, ``start()`` disables AI mode again before raising.
* ``aclose()`` (called by the server's lifespan on every exit path): ``aliyun configure ai-mode disable``,
  bounded to about 1 s (the child is killed past that), idempotent. ``disable_ai_mode_sync()`` does the same from
  a last-resort signal/atexit path when no event loop is left; whichever runs first wins, the other does nothing.

Several sms-mcp processes on one machine: AI mode lives in one file per user, ``~/.aliyun/ai-mode.json``, read by
every ``aliyun`` process. Each sms-mcp enables it at start and disables it at exit, so when one of two servers
exits, the file says "disabled" while the other is still running. That does not change the other server's
requests: each call carries its own AI-mode markers (``--cli-ai-mode`` for CLI 3.3.3-3.4.x,
``ALIBABA_CLOUD_CLI_AI_MODE=1`` for 3.5.x, and the skill's ``--user-agent``), so every request is tagged the same
whatever the file says, including while another process is half-way through rewriting it (the CLI writes it
non-atomically). The file is kept in step with the skill for the user's other tools; it is not what makes
sms-mcp's calls compliant. Consequence: after any sms-mcp exits, AI mode is off for the user's own ``aliyun``
commands too, even if they had turned it on themselves (the skill behaves the same way).

Never logged: AccessKey secrets and tokens (``aliyun configure get``, which prints the secret, is never run),
template parameters, full phone numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from sms_mcp.config import Settings
from sms_mcp.wire.aliyun_output import kebab, mask_secrets, params_to_flags, parse_failure, parse_success
from sms_mcp.wire.base import ACTIONS, AGENT_USER_AGENT, API_VERSION, GatewayError, OutcomeUnknownError, WireBody
from sms_mcp.wire.credentials import usable_environment

log = logging.getLogger("sms_mcp.wire.aliyun_cli")

MIN_VERSION: tuple[int, int, int] = (3, 3, 3)
INSTALL_URL = "https://github.com/aliyun/aliyun-cli#installation"
INSTALL_HINT = (
    f"install aliyun CLI >= {'.'.join(map(str, MIN_VERSION))} ({INSTALL_URL}; macOS: `brew install aliyun-cli`; "
    'Linux: `/bin/bash -c "$(curl -fsSL https://aliyuncli.alicdn.com/install.sh)"`)'
)
PLUGIN_INSTALL_COMMAND = "aliyun plugin install --names dysmsapi"
DEFAULT_REGION = "cn-hangzhou"


class CliBackendError(ValueError):
    """The aliyun CLI backend cannot start. The message says what to do."""


@dataclass
class CliResult:
    """One finished (or killed) CLI run."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def stderr_text(self, limit: int = 400) -> str:
        text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", self.stderr.decode("utf-8", "replace")).strip()
        text = mask_secrets(text)
        return text if len(text) <= limit else text[:limit] + "…"


def _kill_group(pid: int) -> None:
    """Kill the child and everything it started (the CLI runs plugins as grandchildren)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


async def _drain(stream: anyio.abc.ByteReceiveStream | None, buf: bytearray) -> None:
    if stream is None:
        return
    async for chunk in stream:
        buf += chunk


async def run_cli(argv: list[str], *, env: dict[str, str], timeout: float) -> CliResult:
    """Run ``argv`` with stdin=/dev/null; kill its process group at ``timeout`` or on cancellation.

    Raises ``OSError`` when the binary cannot be started.
    """
    process = await anyio.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # Own process group: a timeout must also take down the plugin grandchild, which would otherwise keep
        # our pipes open; and a Ctrl-C on the server's terminal must not hit the CLI mid-request.
        start_new_session=True,
    )
    out, err = bytearray(), bytearray()
    timed_out = False
    try:
        with anyio.move_on_after(timeout) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_drain, process.stdout, out)
                tg.start_soon(_drain, process.stderr, err)
            await process.wait()
        timed_out = scope.cancelled_caught
    finally:
        if timed_out or process.returncode is None:
            _kill_group(process.pid)
        with anyio.CancelScope(shield=True):
            await process.aclose()
    return CliResult(process.returncode, bytes(out), bytes(err), timed_out)


def _parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def plugin_listed(text: str) -> bool:
    """Whether ``aliyun plugin list`` output names the dysmsapi plugin (table or JSON)."""
    return bool(
        re.search(r"(?<![\w-])aliyun-cli-dysmsapi(?![\w-])", text)
        or re.search(r"(?mi)^[\s|│]*dysmsapi\b", text)
        or re.search(r'"(?:name|Name)"\s*:\s*"(?:aliyun-cli-)?dysmsapi"', text)
    )


def mask_key_id(key_id: str) -> str:
    """``LTAI5tAbCdEf1234`` -> ``LTAI****1234``."""
    key_id = key_id.strip()
    if len(key_id) <= 8:
        return "****" if key_id else ""
    return f"{key_id[:4]}****{key_id[-4:]}"


def _endpoint_hostport(endpoint: str) -> str:
    """``https://host:port/path`` -> ``host:port``: the CLI breaks on a scheme (aliyun-cli.md §5)."""
    value = endpoint.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    return value.split("/", 1)[0]


class AliyunCliTransport:
    """Dysmsapi through the ``aliyun`` CLI and its dysmsapi plugin, with the skill's AI-mode lifecycle."""

    name = "cli"

    #: Bounds for the lifecycle commands (seconds). Plain attributes so tests and callers can tighten them.
    version_timeout = 10.0
    admin_timeout = 10.0
    plugin_update_timeout = 5.0
    disable_timeout = 1.0

    def __init__(
        self,
        *,
        aliyun_bin: str = "aliyun",
        profile: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        read_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        call_timeout: float | None = None,
        max_concurrency: int = 8,
        env: dict[str, str] | None = None,
    ) -> None:
        self._bin = aliyun_bin
        self._profile = profile
        self._region = region
        self._endpoint = _endpoint_hostport(endpoint) if endpoint else None
        # The CLI takes whole seconds; never round a short timeout down to 0 (= no timeout).
        self._read_timeout = str(max(1, math.ceil(read_timeout)))
        # The CLI's own read timeout should fire first; ours only catches a CLI that hangs regardless.
        self._call_timeout = call_timeout or (int(self._read_timeout) + connect_timeout + 5.0)
        self._max_concurrency = max_concurrency
        self._base_env = env
        self._path: str | None = None
        self._region_args: list[str] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        # True from the moment `ai-mode enable` is attempted until a disable has been started.
        self._disable_pending = False
        self._state_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> AliyunCliTransport:
        # Settings defaults region_id to cn-hangzhou; only an explicit choice should override the profile.
        explicit_region = bool(os.environ.get("ALIBABA_CLOUD_REGION_ID", "").strip()) or (
            settings.region_id != DEFAULT_REGION
        )
        return cls(
            aliyun_bin=settings.aliyun_bin,
            profile=settings.aliyun_profile,
            region=settings.region_id if explicit_region else None,
            endpoint=settings.endpoint,
            read_timeout=settings.read_timeout,
            connect_timeout=settings.connect_timeout,
        )

    # ------------------------------------------------------------------ environment and argv

    def child_env(self) -> dict[str, str]:
        # Placeholder credential values (``${ALIBABA_CLOUD_ACCESS_KEY_ID}`` from a host) count as absent here too.
        env = usable_environment(os.environ if self._base_env is None else self._base_env)
        env["NO_COLOR"] = "1"
        # Per process, so each call is in AI mode whatever ~/.aliyun/ai-mode.json says right now (3.5.x honours
        # this variable; 3.3.3-3.4.x get --cli-ai-mode on the command line).
        env["ALIBABA_CLOUD_CLI_AI_MODE"] = "1"
        return env

    def _resolve_bin(self, env: dict[str, str]) -> str:
        candidate = self._bin
        if os.sep in candidate or (os.altsep and os.altsep in candidate):
            found = candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
        else:
            found = shutil.which(candidate, path=env.get("PATH"))
        if not found:
            raise CliBackendError(
                f"aliyun CLI not found: SMS_MCP_ALIYUN_BIN={self._bin!r} is not an executable "
                f"(on PATH or as a path). {INSTALL_HINT[0].upper() + INSTALL_HINT[1:]}, "
                "or set SMS_MCP_ALIYUN_BIN to its full path."
            )
        return found

    def _bin_path(self) -> str:
        return self._path or self._bin

    def _profile_args(self) -> list[str]:
        return ["--profile", self._profile] if self._profile else []

    def build_argv(self, action: str, params: dict[str, str]) -> list[str]:
        """The exact argument vector for one action (public so tests and ``doctor`` can show it)."""
        if self._region_args is None:
            self._region_args = self._compute_region_args(self.child_env())
        argv = [self._bin_path(), "dysmsapi", kebab(action), "--api-version", API_VERSION]
        argv += params_to_flags(params)
        argv += ["--user-agent", AGENT_USER_AGENT, "--read-timeout", self._read_timeout, "--cli-ai-mode"]
        argv += self._profile_args() + self._region_args
        if self._endpoint:
            argv += ["--endpoint", self._endpoint]
        return argv

    def _compute_region_args(self, env: dict[str, str]) -> list[str]:
        if self._region:
            return ["--region", self._region]
        profile = read_profile(env, self._profile)
        if profile.get("region_id"):
            return []  # the user's profile region wins (the skill's defect 5 was to override it)
        return ["--region", DEFAULT_REGION]

    # ------------------------------------------------------------------ calls

    async def call(self, action: str, params: dict[str, str]) -> WireBody:
        if action not in ACTIONS:
            raise GatewayError(404, "InvalidApi.NotFound", f"Specified api is not found: {action}")
        argv = self.build_argv(action, params)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_concurrency)
        started = time.monotonic()
        async with self._limiter:
            try:
                result = await run_cli(argv, env=self.child_env(), timeout=self._call_timeout)
            except OSError as exc:
                # Nothing was sent: the binary could not even start.
                raise GatewayError(
                    400,
                    "CLI.Unavailable",
                    f"cannot run the aliyun CLI ({exc.strerror or exc}); check SMS_MCP_ALIYUN_BIN={self._bin!r}",
                    recommend=INSTALL_HINT,
                ) from exc
        log.debug(
            "aliyun dysmsapi %s %s -> rc=%s%s in %.2fs",
            argv[2],
            " ".join(a for a in argv[5:] if a[:2] == "--"),
            result.returncode,
            " (timed out, killed)" if result.timed_out else "",
            time.monotonic() - started,
        )
        if result.timed_out:
            raise OutcomeUnknownError(
                "timeout", f"aliyun dysmsapi {argv[2]} did not finish within {self._call_timeout:g}s; killed"
            )
        if result.returncode == 0:
            return parse_success(result.stdout)
        raise parse_failure(result.returncode if result.returncode is not None else -9, result.stdout, result.stderr)

    # ------------------------------------------------------------------ lifecycle

    async def _admin(self, args: list[str], timeout: float | None = None) -> CliResult:
        env = self.child_env()
        return await run_cli([self._bin_path(), *args], env=env, timeout=timeout or self.admin_timeout)

    async def _admin_checked(self, args: list[str], timeout: float | None = None) -> CliResult:
        what = "aliyun " + " ".join(args)
        try:
            result = await self._admin(args, timeout)
        except OSError as exc:
            raise CliBackendError(f"{what}: cannot run the CLI ({exc}); check SMS_MCP_ALIYUN_BIN") from exc
        if result.timed_out:
            raise CliBackendError(f"{what}: no answer within {timeout or self.admin_timeout:g}s")
        if not result.ok:
            raise CliBackendError(f"{what} failed (exit {result.returncode}): {result.stderr_text()}")
        return result

    async def start(self) -> None:
        env = self.child_env()
        self._path = self._resolve_bin(env)
        version_text = (
            (await self._admin_checked(["version"], self.version_timeout)).stdout.decode("utf-8", "replace").strip()
        )
        version = _parse_version(version_text)
        if version is None:
            raise CliBackendError(
                f"`{self._path} version` printed {version_text[:80]!r}, not a version. "
                f"Is SMS_MCP_ALIYUN_BIN the Alibaba Cloud CLI? {INSTALL_HINT}"
            )
        if version < MIN_VERSION:
            raise CliBackendError(
                f"aliyun CLI {'.'.join(map(str, version))} at {self._path} is too old: AI mode needs "
                f">= {'.'.join(map(str, MIN_VERSION))}. Upgrade: {INSTALL_HINT}"
            )
        try:
            result = await self._admin(["configure", "set", "--auto-plugin-install", "true", *self._profile_args()])
            if not result.ok:
                log.warning(
                    "aliyun configure set --auto-plugin-install true failed (exit %s): %s",
                    result.returncode,
                    result.stderr_text(),
                )
        except OSError as exc:
            log.warning("aliyun configure set --auto-plugin-install true: %s", exc)
        try:
            # Needs the network (aliyuncli.alicdn.com); an offline start must still work with the installed plugin.
            result = await self._admin(["plugin", "update"], self.plugin_update_timeout)
            if not result.ok:
                log.info(
                    "aliyun plugin update skipped (%s): %s",
                    "timed out" if result.timed_out else f"exit {result.returncode}",
                    result.stderr_text(200),
                )
        except OSError as exc:
            log.info("aliyun plugin update skipped: %s", exc)
        listing = await self._admin_checked(["plugin", "list"])
        if not plugin_listed(listing.stdout.decode("utf-8", "replace")):
            raise CliBackendError(f"the aliyun CLI's dysmsapi plugin is not installed. Run: {PLUGIN_INSTALL_COMMAND}")
        self._region_args = self._compute_region_args(env)

        with self._state_lock:
            self._disable_pending = True  # set before `enable` runs: even a half-done enable gets undone
        try:
            await self._admin_checked(["configure", "ai-mode", "enable"])
            await self._admin_checked(["configure", "ai-mode", "set-user-agent", "--user-agent", AGENT_USER_AGENT])
        except BaseException:
            await self.aclose()
            raise
        log.info(
            "aliyun CLI %s at %s, dysmsapi plugin present, AI mode enabled", ".".join(map(str, version)), self._path
        )

    def _take_disable(self) -> bool:
        with self._state_lock:
            pending, self._disable_pending = self._disable_pending, False
        return pending

    def _disable_argv(self) -> list[str]:
        return [self._bin_path(), "configure", "ai-mode", "disable"]

    async def aclose(self) -> None:
        """Turn AI mode off again (bounded, idempotent, safe inside a cancelled scope)."""
        if not self._take_disable():
            return
        argv = self._disable_argv()
        # Shielded: this runs from the server's `finally`, often while the surrounding scope is being cancelled.
        with anyio.move_on_after(self.disable_timeout + 0.5, shield=True):
            try:
                result = await run_cli(argv, env=self.child_env(), timeout=self.disable_timeout)
            except OSError as exc:
                log.warning(
                    "could not run `aliyun configure ai-mode disable` (%s); AI mode may still be on in "
                    "~/.aliyun/ai-mode.json: run that command yourself",
                    exc,
                )
                return
            if result.ok:
                log.info("aliyun AI mode disabled")
            else:
                log.warning(
                    "`aliyun configure ai-mode disable` %s: %s; run it yourself",
                    "timed out (killed)" if result.timed_out else f"failed (exit {result.returncode})",
                    result.stderr_text(200),
                )

    def disable_ai_mode_sync(self, timeout: float | None = None) -> None:
        """Last-resort synchronous disable (signal handler / atexit, no event loop). Idempotent with ``aclose``."""
        if not self._take_disable():
            return
        timeout = self.disable_timeout if timeout is None else timeout
        try:
            proc = subprocess.Popen(
                self._disable_argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self.child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("could not run `aliyun configure ai-mode disable` (%s); run it yourself", exc)
            return
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.communicate()
            log.warning("`aliyun configure ai-mode disable` timed out after %gs (killed)", timeout)
            return
        if proc.returncode != 0:
            log.warning(
                "`aliyun configure ai-mode disable` failed (exit %s): %s",
                proc.returncode,
                mask_secrets(err.decode("utf-8", "replace").strip()[:200]),
            )

    #: The name ``sms-mcp serve`` looks up for its last-resort synchronous cleanup.
    shutdown_sync = disable_ai_mode_sync

    # ------------------------------------------------------------------ doctor

    async def diagnose(self) -> dict[str, Any]:
        """What ``sms-mcp doctor`` shows for this backend. Never raises; never contains a secret."""
        env = self.child_env()
        info: dict[str, Any] = {
            "backend": self.name,
            "aliyun_bin": self._bin,
            "path": None,
            "version": None,
            "version_ok": None,
            "min_version": ".".join(map(str, MIN_VERSION)),
            "dysmsapi_plugin": None,
            "credentials": read_profile(env, self._profile),
            "region_args": self._compute_region_args(env),
            "ai_mode": None,
            "problems": [],
        }
        problems: list[str] = info["problems"]
        try:
            path = self._resolve_bin(env)
        except CliBackendError as exc:
            problems.append(str(exc))
            info["ai_mode"] = read_ai_mode_file(env)
            return info
        info["path"] = path
        argv0 = [path]
        try:
            result = await run_cli([*argv0, "version"], env=env, timeout=self.version_timeout)
            version = _parse_version(result.stdout.decode("utf-8", "replace"))
            if version:
                info["version"] = ".".join(map(str, version))
                info["version_ok"] = version >= MIN_VERSION
                if not info["version_ok"]:
                    problems.append(f"aliyun CLI {info['version']} is older than {info['min_version']}: {INSTALL_HINT}")
            else:
                problems.append(f"`aliyun version` gave no version: {result.stderr_text(200)}")
            result = await run_cli([*argv0, "plugin", "list"], env=env, timeout=self.admin_timeout)
            info["dysmsapi_plugin"] = result.ok and plugin_listed(result.stdout.decode("utf-8", "replace"))
            if not info["dysmsapi_plugin"]:
                problems.append(f"dysmsapi plugin not installed: {PLUGIN_INSTALL_COMMAND}")
            result = await run_cli([*argv0, "configure", "ai-mode", "show"], env=env, timeout=self.admin_timeout)
            shown = None
            if result.ok:
                try:
                    shown = json.loads(result.stdout.decode("utf-8", "replace"))
                except ValueError:
                    shown = None
            info["ai_mode"] = shown if isinstance(shown, dict) else read_ai_mode_file(env)
        except OSError as exc:
            problems.append(f"cannot run {path}: {exc}")
        if info["ai_mode"] is None:
            info["ai_mode"] = read_ai_mode_file(env)
        if not info["credentials"].get("mode") and not info["credentials"].get("env_access_key_id"):
            problems.append("no aliyun profile and no ALIBABA_CLOUD_ACCESS_KEY_ID: run `aliyun configure`")
        return info


def _aliyun_dir(env: dict[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home()) / ".aliyun"


def read_ai_mode_file(env: dict[str, str]) -> dict[str, Any]:
    """``~/.aliyun/ai-mode.json`` as the CLI reads it: missing or unparsable counts as disabled."""
    path = _aliyun_dir(env) / "ai-mode.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {"enabled": bool(data.get("enabled")), "user_agent": data.get("user_agent", ""), "config_file": str(path)}


def read_profile(env: dict[str, str], profile: str | None) -> dict[str, Any]:
    """The aliyun profile the CLI would use: name, mode, region, masked key id. Never the secret."""
    path = _aliyun_dir(env) / "config.json"
    info: dict[str, Any] = {"config_file": str(path), "config_exists": path.is_file()}
    env_key = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
    if env_key:
        info["env_access_key_id"] = mask_key_id(env_key)
    if env.get("ALIBABA_CLOUD_IGNORE_PROFILE", "").upper() == "TRUE":
        info["ignored"] = "ALIBABA_CLOUD_IGNORE_PROFILE=TRUE"
        info["region_id"] = DEFAULT_REGION  # the CLI's own default in that mode
        return info
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return info
    if not isinstance(config, dict):
        return info
    name = (
        profile
        or next(
            (env[v] for v in ("ALIBABA_CLOUD_PROFILE", "ALIBABACLOUD_PROFILE", "ALICLOUD_PROFILE") if env.get(v)),
            None,
        )
        or config.get("current")
        or "default"
    )
    info["profile"] = name
    for entry in config.get("profiles") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            info["mode"] = entry.get("mode", "")
            info["region_id"] = entry.get("region_id", "")
            if entry.get("access_key_id"):
                info["access_key_id"] = mask_key_id(str(entry["access_key_id"]))
            info["auto_plugin_install"] = bool(entry.get("auto_plugin_install"))
            break
    else:
        info["missing"] = f"profile {name!r} not in {path}"
    return info
