"""Finding Alibaba Cloud credentials cheaply, and building Alibaba's credential client without its traps.

Two jobs:

* :func:`find_credentials` answers "would the default credential chain find something?" for
  ``SMS_MCP_BACKEND=auto``. It mirrors the chain of ``alibabacloud-credentials`` (env vars -> OIDC ->
  ``~/.aliyun/config.json`` -> ``~/.alibabacloud/credentials.ini`` -> ECS RAM role -> credentials URI) by looking at
  the environment and the files directly: it never imports the SDK, never runs a provider, never touches the
  network, so it cannot hang startup.
* :func:`build_credential_client` builds the SDK's default chain (``alibabacloud_credentials.client.Client()``)
  after defusing the traps in reference §10: the library reads the environment once at *import* time, and
  building the chain starts an APScheduler thread that probes the ECS metadata service 100.100.100.200 and logs
  to its own stderr handler.

AccessKey ids are only ever shown masked (``LTAI****abcd``); secrets and tokens are never read into any
message.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from sms_mcp.dysmsapi import mask_access_key_id  # re-exported: callers import it from here too

log = logging.getLogger("sms_mcp.wire")

ECS_DISABLED_VAR = "ALIBABA_CLOUD_ECS_METADATA_DISABLED"
ECS_ROLE_VAR = "ALIBABA_CLOUD_ECS_METADATA"

#: CLI profile modes the credentials library understands (``cli_profile.py``).
CLI_MODES = frozenset(
    {"AK", "StsToken", "RamRoleArn", "EcsRamRole", "OIDC", "ChainableRamRoleArn", "CloudSSO", "OAuth", "External"}
)
#: INI ``type`` values the credentials library understands (``profile.py``).
INI_TYPES = frozenset({"access_key", "ram_role_arn", "oidc_role_arn", "ecs_ram_role", "rsa_key_pair"})


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def ecs_role_opted_in(env: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked for the ECS RAM role provider.

    Design choice: the ECS provider is OFF unless asked for, because on a laptop it starts a background thread
    that probes 100.100.100.200 every minute and logs failures to stderr. Asking for it means either naming the
    role (``ALIBABA_CLOUD_ECS_METADATA=<role>``) or setting ``ALIBABA_CLOUD_ECS_METADATA_DISABLED`` explicitly to
    something other than ``true``.
    """
    env = os.environ if env is None else env
    explicit = env.get(ECS_DISABLED_VAR, "").strip()
    if explicit:
        return explicit.lower() != "true"
    return bool(env.get(ECS_ROLE_VAR, "").strip())


def _home(env: Mapping[str, str]) -> Path:
    # Same lookup order as alibabacloud_credentials.utils.auth_util.get_home on POSIX.
    return Path(env.get("HOME") or env.get("HOMEPATH") or Path.home())


def _cli_profile(env: Mapping[str, str]) -> str | None:
    if _true(env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED")):
        return None
    path = _home(env) / ".aliyun" / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    name = env.get("ALIBABA_CLOUD_PROFILE") or config.get("current")
    if not name:
        return None
    for profile in config.get("profiles") or []:
        if not isinstance(profile, dict) or profile.get("name") != name:
            continue
        mode = profile.get("mode")
        if mode not in CLI_MODES:
            return None
        if mode in ("AK", "StsToken", "RamRoleArn"):
            key_id = str(profile.get("access_key_id") or "")
            if not key_id or not profile.get("access_key_secret"):
                return None  # `aliyun configure` leaves empty AK profiles behind; the SDK would fail on them.
            return f"cli profile '{name}' ({mode} {mask_access_key_id(key_id)})"
        return f"cli profile '{name}' ({mode})"
    return None


def _ini_profile(env: Mapping[str, str]) -> str | None:
    path = Path(env.get("ALIBABA_CLOUD_CREDENTIALS_FILE") or _home(env) / ".alibabacloud" / "credentials.ini")
    parser = configparser.ConfigParser()
    try:
        text = path.read_text(encoding="utf-8")
        parser.read_string(text)
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    section = env.get("ALIBABA_CLOUD_PROFILE") or "default"
    if not parser.has_section(section):
        return None

    def value(key: str) -> str:
        # The library strips inline "# comments".
        return parser.get(section, key, fallback="").split("#")[0].strip()

    kind = value("type")
    if kind not in INI_TYPES:
        return None
    if kind in ("access_key", "ram_role_arn"):
        key_id = value("access_key_id")
        if not key_id or not value("access_key_secret"):
            return None
        return f"credentials file '{section}' ({kind} {mask_access_key_id(key_id)})"
    return f"credentials file '{section}' ({kind})"


def find_credentials(env: Mapping[str, str] | None = None) -> str | None:
    """Where the default credential chain would find credentials, as a short masked description, or None.

    Cheap and offline: environment variables and two small files, in the chain's order.
    """
    env = os.environ if env is None else env
    key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "").strip()
    if key_id and env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "").strip():
        kind = "sts " if env.get("ALIBABA_CLOUD_SECURITY_TOKEN", "").strip() else ""
        return f"env ({kind}{mask_access_key_id(key_id)})"
    if all(
        env.get(name, "").strip()
        for name in ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE")
    ):
        return "oidc role (ALIBABA_CLOUD_ROLE_ARN)"
    found = _cli_profile(env) or _ini_profile(env)
    if found:
        return found
    if ecs_role_opted_in(env):
        role = env.get(ECS_ROLE_VAR, "").strip()
        return f"ecs ram role ({role})" if role else "ecs ram role"
    if env.get("ALIBABA_CLOUD_CREDENTIALS_URI", "").strip():
        return "credentials uri (ALIBABA_CLOUD_CREDENTIALS_URI)"
    return None


def prepare_environment(env: MutableMapping[str, str] | None = None) -> None:
    """Make importing ``alibabacloud_credentials`` safe. Call before the first import of any Alibaba SDK module.

    Unless the user opted into the ECS RAM role (:func:`ecs_role_opted_in`), set
    ``ALIBABA_CLOUD_ECS_METADATA_DISABLED=true``: the library reads it at import time, and without it building the
    default chain starts a metadata-probing thread. Also quiets the library's own loggers
    (see :func:`quiet_sdk_loggers`).
    """
    env = os.environ if env is None else env
    if not ecs_role_opted_in(env):
        env[ECS_DISABLED_VAR] = "true"
    _sync_imported_sdk(env)
    quiet_sdk_loggers()


def _sync_imported_sdk(env: Mapping[str, str]) -> None:
    """If something imported the credentials library before us, its import-time snapshot missed our setting."""
    import sys

    auth_util = sys.modules.get("alibabacloud_credentials.utils.auth_util")
    if auth_util is not None and not ecs_role_opted_in(env):
        auth_util.environment_ecs_metadata_disabled = "true"  # type: ignore[attr-defined]


def quiet_sdk_loggers() -> None:
    """The SDK's ``credentials`` and ``darabonba-core`` loggers attach their own stderr handlers at import, at INFO
    and DEBUG; the ``credentials`` logger even prints refreshed credential values at DEBUG. Drop those handlers
    (records then flow through the application's logging, stderr only) and keep only warnings and errors."""
    for name in ("credentials", "darabonba-core"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.setLevel(logging.WARNING)


def build_credential_client() -> Any:
    """Alibaba's default credential chain (``alibabacloud_credentials.client.Client()``), built safely.

    Raises ``ImportError`` when the SDK is not installed.
    """
    prepare_environment()
    from alibabacloud_credentials.client import Client as CredentialClient

    quiet_sdk_loggers()  # the provider modules are imported (and attach their handlers) only now
    return CredentialClient()
