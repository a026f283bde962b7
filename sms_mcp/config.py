"""Settings, read once from the environment. Every variable is documented in README.md and .env.example.

Policy settings live here and nowhere else: no tool argument can change them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BACKENDS = ("auto", "sandbox", "openapi", "cli")
CONFIRM_MODES = ("token", "elicit", "auto")


class ConfigError(ValueError):
    """A setting has a value sms-mcp cannot use. The message names the variable and the accepted values."""


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The user's data directory (XDG on Linux, the platform's convention elsewhere)."""
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]) / "sms-mcp"
    home = Path(env.get("HOME") or Path.home())
    if os.name == "nt":
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "sms-mcp"
    if os.uname().sysname == "Darwin":
        return home / "Library" / "Application Support" / "sms-mcp"
    return home / ".local" / "share" / "sms-mcp"


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true/false")


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be >= {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be >= {minimum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def _ledger_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("SMS_MCP_LEDGER_URL", "").strip()
    if raw and not raw.startswith(("postgresql://", "postgres://")):
        scheme = raw.split(":", 1)[0][:20] if ":" in raw else "no scheme"
        # The value is not echoed: a connection URL may carry a password.
        raise ConfigError(f"SMS_MCP_LEDGER_URL ({scheme}): expected a postgresql://user:password@host:port/database "
                          "URL, or unset for the SQLite ledger in the data directory")
    return raw or None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list (empty items dropped)."""
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _replica_id(env: Mapping[str, str]) -> str | None:
    raw = env.get("SMS_MCP_REPLICA_ID", "").strip()
    if raw and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", raw):
        raise ConfigError(f"SMS_MCP_REPLICA_ID={raw[:40]!r}: expected 1-32 letters, digits, '-' or '_'")
    return raw or None


@dataclass(frozen=True)
class Settings:
    # Backend selection and storage.
    backend: str = "auto"
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    # A shared PostgreSQL ledger for replicas (None: SQLite in data_dir). Not in repr: it may hold a password.
    ledger_url: str | None = field(default=None, repr=False)
    # Two-step confirmation.
    confirm_ttl_seconds: float = 600.0
    confirm_mode: str = "token"
    # An unknown send is declared not_sent only when Alibaba shows no record this long after the attempt.
    reconcile_grace_seconds: float = 30.0
    # Sandbox.
    sandbox_receipt_delay: float = 3.0
    # OpenAPI backend.
    region_id: str = "cn-hangzhou"
    endpoint: str | None = None
    read_timeout: float = 3.0
    connect_timeout: float = 5.0
    # A PEM file of CA certificates the openapi backend trusts instead of the system/certifi ones (TLS is always
    # verified; SSL_CERT_FILE is honoured when this is unset).
    ca_bundle: Path | None = None
    # aliyun CLI backend.
    aliyun_bin: str = "aliyun"
    aliyun_profile: str | None = None
    # Policy (configuration only; see the delivery-safety issue).
    allowed_numbers: tuple[str, ...] = ()
    max_recipients: int = 10_000
    daily_limit: int | None = None
    read_only: bool = False
    allow_promotional: bool = False
    # Logging.
    log_level: str = "INFO"
    # Serving over HTTP (`sms-mcp serve --http`); see README "Run it for a team".
    public_url: str | None = None
    auth_issuer: str | None = None
    auth_jwks_url: str | None = None
    api_keys: tuple[str, ...] = ()
    policy_file: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    request_state_keys: tuple[str, ...] = ()
    replica_id: str | None = None
    shutdown_grace_seconds: float = 20.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = env.get("SMS_MCP_DATA_DIR", "").strip()
        allowed = tuple(
            part.strip() for part in env.get("SMS_MCP_ALLOWED_NUMBERS", "").replace(";", ",").split(",")
            if part.strip()
        )
        return cls(
            backend=_choice(env, "SMS_MCP_BACKEND", "auto", BACKENDS),
            data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(env),
            ledger_url=_ledger_url(env),
            confirm_ttl_seconds=_float(env, "SMS_MCP_CONFIRM_TTL_SECONDS", 600.0, minimum=1.0),
            confirm_mode=_choice(env, "SMS_MCP_CONFIRM_MODE", "token", CONFIRM_MODES),
            reconcile_grace_seconds=_float(env, "SMS_MCP_RECONCILE_GRACE_SECONDS", 30.0),
            sandbox_receipt_delay=_float(env, "SMS_MCP_SANDBOX_RECEIPT_DELAY", 3.0),
            region_id=env.get("ALIBABA_CLOUD_REGION_ID", "").strip() or "cn-hangzhou",
            endpoint=env.get("SMS_MCP_ENDPOINT", "").strip() or None,
            read_timeout=_float(env, "SMS_MCP_READ_TIMEOUT", 3.0, minimum=0.1),
            connect_timeout=_float(env, "SMS_MCP_CONNECT_TIMEOUT", 5.0, minimum=0.1),
            ca_bundle=Path(env["SMS_MCP_CA_BUNDLE"].strip()).expanduser() if env.get("SMS_MCP_CA_BUNDLE", "").strip()
            else None,
            aliyun_bin=env.get("SMS_MCP_ALIYUN_BIN", "").strip() or "aliyun",
            aliyun_profile=env.get("SMS_MCP_ALIYUN_PROFILE", "").strip() or None,
            allowed_numbers=allowed,
            max_recipients=_int(env, "SMS_MCP_MAX_RECIPIENTS", 10_000, minimum=1) or 10_000,
            daily_limit=_int(env, "SMS_MCP_DAILY_LIMIT", None, minimum=0),
            read_only=_bool(env, "SMS_MCP_READ_ONLY", False),
            allow_promotional=_bool(env, "SMS_MCP_ALLOW_PROMOTIONAL", False),
            log_level=(env.get("SMS_MCP_LOG_LEVEL", "").strip() or "INFO").upper(),
            public_url=env.get("SMS_MCP_PUBLIC_URL", "").strip() or None,
            auth_issuer=env.get("SMS_MCP_AUTH_ISSUER", "").strip() or None,
            auth_jwks_url=env.get("SMS_MCP_AUTH_JWKS_URL", "").strip() or None,
            api_keys=_list(env, "SMS_MCP_API_KEYS"),
            policy_file=Path(policy).expanduser() if (policy := env.get("SMS_MCP_POLICY_FILE", "").strip()) else None,
            allowed_hosts=_list(env, "SMS_MCP_ALLOWED_HOSTS"),
            allowed_origins=_list(env, "SMS_MCP_ALLOWED_ORIGINS"),
            request_state_keys=_list(env, "SMS_MCP_REQUEST_STATE_KEYS"),
            replica_id=_replica_id(env),
            shutdown_grace_seconds=_float(env, "SMS_MCP_SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0.0),
        )
