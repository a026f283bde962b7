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

Both see the environment through :func:`usable_environment`: a credential variable whose value looks like a
placeholder (an unexpanded ``${VAR}`` or ``$VAR`` a host passed through literally, ``<your key>``, ``LTAI…``,
empty) counts as absent, so "no AccessKeys -> sandbox" holds for registrations such as
``openclaw mcp add … --env 'ALIBABA_CLOUD_ACCESS_KEY_ID=${ALIBABA_CLOUD_ACCESS_KEY_ID}'`` with the variable unset.
:func:`placeholder_notice` names the ignored variables for ``doctor`` and the tool results.

AccessKey ids are only ever shown masked (``LTAI****abcd``); secrets and tokens are never read into any
message.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
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


#: The environment variables the default chain reads credentials (or where to find them) from.
CREDENTIAL_VARS: tuple[str, ...] = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "ALIBABA_CLOUD_ROLE_ARN",
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
    "ALIBABA_CLOUD_PROFILE",
    "ALIBABA_CLOUD_CREDENTIALS_FILE",
    "ALIBABA_CLOUD_ECS_METADATA",
    "ALIBABA_CLOUD_CREDENTIALS_URI",
)
_BRACED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_BARE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")


def placeholder_kind(value: str | None) -> str | None:
    """Why ``value`` looks like a placeholder rather than a credential, or None when it could be real.

    Real AccessKey ids, secrets, STS tokens, ARNs, paths and URIs never contain ``${``, are never only ``$NAME`` or
    ``<…>``, and never contain an ellipsis; hosts pass unexpanded ``${VAR}`` through literally when ``VAR`` is
    unset, and READMEs write ``LTAI…`` or ``<your AccessKey ID>``. The returned text never quotes the value unless it
    is exactly an unexpanded reference (which names a variable, not a secret).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return "empty" if not value else "whitespace only"
    if _BRACED.fullmatch(text) or _BARE.fullmatch(text):
        return f"unexpanded {text[:64]!r}"
    if "${" in text:
        return "contains an unexpanded ${…}"
    if text.startswith("<") and text.endswith(">"):
        return "a <…> placeholder"
    if "…" in text or "..." in text:
        return "contains an ellipsis (…)"
    return None


def placeholder_variables(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The credential variables (:data:`CREDENTIAL_VARS`) that are set to placeholder-looking values -> why."""
    env = os.environ if env is None else env
    found = {}
    for name in CREDENTIAL_VARS:
        kind = placeholder_kind(env.get(name))
        if kind is not None:
            found[name] = kind
    return found


def usable_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` without the credential variables that only hold placeholders."""
    env = os.environ if env is None else env
    ignored = placeholder_variables(env)
    return {k: v for k, v in env.items() if k not in ignored}


def placeholder_notice(env: Mapping[str, str] | None = None) -> str | None:
    """One bounded sentence naming the credential variables ignored as placeholders, or None when there are none.

    Empty variables are named only beside a non-empty placeholder: an empty AccessKey (a host's blank optional
    setting) is the ordinary way of asking for the sandbox and needs no remark.
    """
    ignored = placeholder_variables(env)
    if not any(kind not in ("empty", "whitespace only") for kind in ignored.values()):
        return None
    listed = "; ".join(f"{name} ({kind})" for name, kind in ignored.items())
    return (f"Ignored credential variables that look like placeholders, not values: {listed}. They count as "
            "absent; set real values (or remove them) to use a real backend.")


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
    if explicit and placeholder_kind(explicit) is None:  # `${ALIBABA_CLOUD_ECS_METADATA_DISABLED}` asks nothing
        return explicit.lower() != "true"
    role = env.get(ECS_ROLE_VAR, "").strip()
    return bool(role) and placeholder_kind(role) is None


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

    Cheap and offline: environment variables and two small files, in the chain's order. Placeholder-looking
    values count as absent (:func:`usable_environment`).
    """
    env = usable_environment(env)
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

    Credential variables holding placeholders (:func:`placeholder_variables`) are removed, so the chain skips
    them exactly as :func:`find_credentials` does instead of signing with ``${ALIBABA_CLOUD_ACCESS_KEY_ID}``.
    """
    env = os.environ if env is None else env
    ignored = placeholder_variables(env)
    for name in ignored:
        del env[name]
    if ignored:
        log.warning("ignoring credential variables that look like placeholders: %s", ", ".join(ignored))
    if not ecs_role_opted_in(env):
        env[ECS_DISABLED_VAR] = "true"
    _sync_imported_sdk(env, ignored)
    quiet_sdk_loggers()


#: ``alibabacloud_credentials.utils.auth_util``'s import-time snapshot attribute for each variable.
_SNAPSHOT_ATTRS = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "environment_access_key_id",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "environment_access_key_secret",
    "ALIBABA_CLOUD_SECURITY_TOKEN": "environment_security_token",
    "ALIBABA_CLOUD_ROLE_ARN": "environment_role_arn",
    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "environment_oidc_provider_arn",
    "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "environment_oidc_token_file",
    "ALIBABA_CLOUD_PROFILE": "environment_profile_name",
    "ALIBABA_CLOUD_CREDENTIALS_FILE": "environment_credentials_file",
    "ALIBABA_CLOUD_ECS_METADATA": "environment_ecs_metadata",
    "ALIBABA_CLOUD_CREDENTIALS_URI": "environment_credentials_uri",
}


def _sync_imported_sdk(env: Mapping[str, str], ignored: Mapping[str, str] | None = None) -> None:
    """If something imported the credentials library before us, its import-time snapshot missed our settings."""
    import sys

    auth_util = sys.modules.get("alibabacloud_credentials.utils.auth_util")
    if auth_util is None:
        return
    if not ecs_role_opted_in(env):
        auth_util.environment_ecs_metadata_disabled = "true"  # type: ignore[attr-defined]
    for name in ignored or ():
        setattr(auth_util, _SNAPSHOT_ATTRS[name], None)
    if "ALIBABA_CLOUD_ECS_METADATA" in (ignored or ()):
        auth_util.environment_ECSMeta_data = None  # type: ignore[attr-defined]
    if "ALIBABA_CLOUD_PROFILE" in (ignored or ()):
        auth_util.client_type = "default"  # type: ignore[attr-defined]
    if {"ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE"} & set(
        ignored or ()
    ):
        auth_util.enable_oidc_credential = False  # type: ignore[attr-defined]


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
