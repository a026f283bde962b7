"""Settings, read and validated once, at start, from the environment (pydantic-settings).

Every variable is documented in README.md and .env.example (a test checks both against :meth:`Settings.variables`).
Policy settings live here and nowhere else: no tool argument can change them.

A bad value never surfaces later as a traceback: :meth:`Settings.from_env` (and direct construction) raises
:class:`ConfigError`, whose ``lines`` hold one line per bad value, naming the variable, the value (a bounded echo;
never a secret) and what is allowed. ``sms-mcp serve`` refuses to start with it and ``sms-mcp doctor`` exits
non-zero.

Adding a setting is one line in :class:`Settings`; the field name gives the variable (``SMS_MCP_`` + the name in
capitals), ``description`` is the "allowed" text of the error line, and the bounds are pydantic's::

    ca_bundle: Path | None = Field(None, description="a readable PEM file of CA certificates")
    http_port: int = Field(8000, ge=1, le=65535, description="a TCP port, 1 to 65535")
    ledger_url: str | None = Field(None, description="postgresql://user:password@host/db", json_schema_extra=SECRET)

Floats are finite by construction (``allow_inf_nan=False`` in the model config); give every number a lower and an
upper bound. A value that holds a password (a URL with credentials, a token) gets ``json_schema_extra=SECRET``: its
error line then says how long it is, never what it is (URLs have their user-info masked in any case). Checks that
need more than a bound go into a ``field_validator`` raising ``ValueError(reason)``. Then add the variable to
README.md's configuration table and to .env.example.
"""

from __future__ import annotations

import contextvars
import difflib
import ipaddress
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

BACKENDS = ("auto", "sandbox", "openapi", "cli")
CONFIRM_MODES = ("token", "elicit", "auto")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Marks a field whose value must never be echoed (see the module docstring).
SECRET: dict[str, Any] = {"secret": True}
#: Marks a field holding phone numbers: its echo is masked like every logged number (138****8000).
PHONES: dict[str, Any] = {"phones": True}

#: The reconcile grace must exceed the longest time a send can still be in flight after it was claimed: the connect
#: timeout plus the read timeout, plus this margin. The margin covers what the client's timeouts cannot see: a
#: request Alibaba's gateway accepted just before we gave up can still be queued and written there after our read
#: timeout fired, and its record then takes a moment to become visible to QuerySendDetails. Below it, "no record"
#: could be concluded while the request is still on its way, and a re-prepared plan would send a second copy.
RECONCILE_MARGIN_SECONDS = 5.0

#: Longest echo of a bad value in an error line.
ECHO_LIMIT = 80

PREFIX = "SMS_MCP_"

_ENV: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("sms_mcp_settings_env", default=None)


class ConfigError(ValueError):
    """One or more settings have values sms-mcp cannot use. ``lines``: one per bad value, each naming the
    variable, the value and what is allowed. ``str()`` joins them."""

    def __init__(self, lines: str | list[str]) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


def echo(value: Any, limit: int = ECHO_LIMIT) -> str:
    """A bounded, printable echo of a value: ``repr`` of at most ``limit`` characters, with the full length."""
    text = value if isinstance(value, str) else str(value)
    text = re.sub(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text)  # user:password@ in URLs
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def mask_numbers(text: str) -> str:
    """Every run of 7 or more digits masked as phone numbers are in logs: 13800138000 -> 138****8000."""
    return re.sub(r"\d{7,}", lambda m: m.group(0)[:3] + "*" * (len(m.group(0)) - 7) + m.group(0)[-4:], text)


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


class _MappingEnvSource(EnvSettingsSource):
    """The environment source over a given mapping (``Settings.from_env(env)``) instead of ``os.environ``.
    Values are stripped; an empty value means "not set" (the default applies), as a blank line in .env does."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded: dict[str, str | None] = {}
        for key, value in self._mapping.items():
            if not isinstance(value, str) or not value.strip():
                continue
            loaded[key if self.case_sensitive else key.lower()] = value.strip()
        return loaded


def _finite(default: float, low: float, high: float, unit: str = "seconds") -> Any:
    return Field(default, ge=low, le=high, description=f"a number of {unit} from {low:g} to {high:g}")


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)


def _check_host(host: str) -> None:
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("an IPv6 address must be closed with ]")
        ipaddress.IPv6Address(host[1:-1])
        return
    if re.fullmatch(r"[\d.]+", host):
        ipaddress.IPv4Address(host)
        return
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{echo(host)} is not a host name")


def check_endpoint(value: str) -> str:
    """``https://host``, ``http://host:port`` or a bare ``host[:port]``; a path other than ``/`` is refused (it
    would be dropped silently)."""
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    if not sep:
        rest = value
    hostport, _, path = rest.partition("/")
    if path or any(c in rest for c in "?#@ "):
        raise ValueError("only scheme, host and port are allowed (no path, query, user or spaces)")
    if not hostport:
        raise ValueError("the host is missing")
    host, port = hostport, ""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError("an IPv6 address must be closed with ]")
        host, rest_port = hostport[: close + 1], hostport[close + 1 :]
        if rest_port and not rest_port.startswith(":"):
            raise ValueError("expected :port after the IPv6 address")
        port = rest_port[1:]
        if rest_port and not port:
            raise ValueError("the port is empty")
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
        if ":" in host:
            raise ValueError("an IPv6 address must be written in brackets, e.g. http://[::1]:8080")
        if not port:
            raise ValueError("the port is empty")
    try:
        _check_host(host)
    except ValueError as err:
        raise ValueError(str(err) if "host" in str(err) or "IPv6" in str(err) else f"{echo(host)}: {err}") from None
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"port {echo(port)} is not a number from 1 to 65535")
    return value


class Settings(BaseSettings):
    """Every setting of sms-mcp (see the module docstring for how to add one)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, case_sensitive=False, frozen=True, extra="forbid", populate_by_name=True,
        allow_inf_nan=False, env_ignore_empty=True, str_strip_whitespace=True,
        # Python's re for the fields' patterns: pydantic's default Rust engine compiles Unicode classes (\w, \S)
        # into large automata when the model is built, about 20 ms of every start-up.
        regex_engine="python-re",
    )

    # Backend selection and storage.
    backend: Literal["auto", "sandbox", "openapi", "cli"] = Field(
        "auto", description="one of " + ", ".join(BACKENDS))
    data_dir: Path = Field(description="a directory path (created if missing); ~ and ~user are expanded")
    # A shared PostgreSQL ledger for gateway replicas (None: SQLite in data_dir). Never echoed or in repr.
    ledger_url: str | None = Field(None, max_length=4000, repr=False, json_schema_extra=SECRET,
                                   description="a postgresql://user:password@host:port/database URL, or unset for "
                                   "the SQLite ledger in the data directory")
    # Two-step confirmation.
    confirm_ttl_seconds: float = _finite(600.0, 1, 86_400)
    confirm_mode: Literal["token", "elicit", "auto"] = Field("token", description="one of "
                                                             + ", ".join(CONFIRM_MODES))
    # An unknown send is declared not_sent only when Alibaba shows no record this long after the attempt.
    reconcile_grace_seconds: float = Field(
        30.0, ge=0, le=86_400, description="a number of seconds from SMS_MCP_CONNECT_TIMEOUT + SMS_MCP_READ_TIMEOUT + "
        f"{RECONCILE_MARGIN_SECONDS:g} to 86400")
    # Sandbox.
    sandbox_receipt_delay: float = _finite(3.0, 0, 3600)
    # OpenAPI backend.
    region_id: str = Field(
        "cn-hangzhou", validation_alias=AliasChoices("region_id", "ALIBABA_CLOUD_REGION_ID"),
        pattern=r"^[a-z]{2,4}(-[a-z0-9]+){1,4}$", max_length=64,
        description="an Alibaba Cloud region id such as cn-hangzhou or ap-southeast-1")
    endpoint: str | None = Field(
        None, max_length=300, description="https://host, http://host:port or host[:port]")
    read_timeout: float = _finite(3.0, 0.1, 300)
    connect_timeout: float = _finite(5.0, 0.1, 120)
    # A PEM file of CA certificates the openapi backend trusts instead of the system/certifi ones (TLS is always
    # verified; SSL_CERT_FILE is honoured when this is unset). Its content is checked when the backend starts.
    ca_bundle: Path | None = Field(None, description="the path of a PEM file of CA certificates")
    # aliyun CLI backend.
    aliyun_bin: str = Field("aliyun", min_length=1, max_length=4096,
                            description="the aliyun program's name on PATH or its path")
    aliyun_profile: str | None = Field(None, pattern=r"^[\w.@-]{1,128}$",
                                       description="a profile name: letters, digits, _ . @ -, at most 128")
    # Policy (configuration only; see the delivery-safety issue).
    allowed_numbers: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated full numbers (+8613800138000, 13800138000) or patterns ending in * "
        "with + and a country code (+86138*); normalised to +E.164", json_schema_extra=PHONES)
    max_recipients: int = Field(10_000, ge=1, le=100_000, description="a whole number from 1 to 100000")
    daily_limit: int | None = Field(None, ge=0, le=100_000_000,
                                    description="empty (no limit) or a whole number from 0 to 100000000")
    read_only: bool = Field(False, description="true or false")
    allow_promotional: bool = Field(False, description="true or false")
    # Logging.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="one of " + ", ".join(LOG_LEVELS))
    # Serving over HTTP (`sms-mcp serve --http`); see README "Run it for a team".
    public_url: str | None = Field(None, max_length=2000, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
                                   description="the http(s) URL clients use for the MCP endpoint, e.g. "
                                   "https://sms.example.com/mcp")
    auth_issuer: str | None = Field(None, max_length=2000, description="the authorization server's issuer URL")
    auth_jwks_url: str | None = Field(None, max_length=2000, pattern=r"^https?://\S+$",
                                      description="the http(s) URL of the authorization server's JWKS")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated name:scope+scope:sha256hex entries (sms-mcp api-key NAME prints one)",
        json_schema_extra=SECRET)
    policy_file: Path | None = Field(None, description="the path of a JSON per-principal policy file")
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated Host values (host or host:port) accepted on /mcp")
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated Origins (scheme://host[:port]) accepted on /mcp")
    request_state_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated keys of at least 32 bytes each, the same on every replica",
        json_schema_extra=SECRET)
    replica_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,32}$",
                                   description="1-32 letters, digits, '-' or '_'")
    shutdown_grace_seconds: float = _finite(20.0, 0, 600)

    _variables: ClassVar[dict[str, str]] = {}

    # -- construction ------------------------------------------------------------------------------------------

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ConfigError(_error_lines(type(self), err, values)) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every setting from ``env`` (default ``os.environ``); raises :class:`ConfigError` listing every bad value."""
        token = _ENV.set(os.environ if env is None else env)
        try:
            return cls()
        finally:
            _ENV.reset(token)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Direct construction (``Settings(endpoint=...)``, tests and tools) sees only its arguments and the
        # defaults; ``from_env`` adds the environment it was given. No .env file is read: the host passes env.
        env = _ENV.get()
        return (init_settings,) if env is None else (init_settings, _MappingEnvSource(settings_cls, env))

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name -> the environment variable that sets it."""
        if not cls._variables:
            for name, info in cls.model_fields.items():
                cls._variables[name] = _variable(name, info)
        return dict(cls._variables)

    # -- validation --------------------------------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_env(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("data_dir") in (None, ""):
            env = _ENV.get()
            data = {**data, "data_dir": default_data_dir(os.environ if env is None else env)}
        return data

    # Case-insensitive choices; a value that is not one of them is left as typed, so its error line echoes it so.
    @field_validator("backend", "confirm_mode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        folded = value.strip().lower() if isinstance(value, str) else value
        return folded if folded in BACKENDS + CONFIRM_MODES else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        folded = value.strip().upper() if isinstance(value, str) else value
        return folded if folded in LOG_LEVELS else value

    @field_validator("api_keys", "allowed_hosts", "allowed_origins", "request_state_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("data_dir", "ca_bundle", "policy_file", mode="before")
    @classmethod
    def _expand_path(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            text = str(value)
            if "\0" in text:
                raise ValueError("a path cannot contain a NUL character")
            try:
                # Absolute: a host starts the server from any working directory.
                return Path(text).expanduser().absolute()
            except RuntimeError:  # ~nosuchuser
                raise ValueError(f"cannot expand {text.split('/', 1)[0]!r}: no such user or no home directory") \
                    from None
        return value

    @field_validator("aliyun_bin")
    @classmethod
    def _no_control(cls, value: str) -> str:
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise ValueError("control characters are not allowed")
        return value

    @field_validator("ledger_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            scheme = value.split(":", 1)[0][:20] if ":" in value else "none"
            raise ValueError(f"the scheme ({scheme}) is not postgresql://")
        return value or None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_endpoint(value) if value else None

    @field_validator("allowed_numbers", mode="before")
    @classmethod
    def _allow_list(cls, value: Any) -> Any:
        from sms_mcp.core.phones import normalise_allow_list

        if isinstance(value, str):
            value = [part for part in re.split(r"[,;]", value) if part.strip()]
        if isinstance(value, (list, tuple)):
            # No entries, no libphonenumber import: it is loaded lazily, and start-up is measured (bench row 1).
            return normalise_allow_list([str(v) for v in value]) if value else ()
        return value

    @model_validator(mode="after")
    def _grace_covers_an_attempt(self) -> Settings:
        minimum = self.min_reconcile_grace_seconds
        if self.reconcile_grace_seconds < minimum:
            raise ValueError(
                f"{PREFIX}RECONCILE_GRACE_SECONDS={self.reconcile_grace_seconds:g}: below {minimum:g} = "
                f"{PREFIX}CONNECT_TIMEOUT ({self.connect_timeout:g}) + {PREFIX}READ_TIMEOUT ({self.read_timeout:g}) "
                f"+ a {RECONCILE_MARGIN_SECONDS:g} s margin: a send can still reach Alibaba that long after it "
                "started, so \"no record\" earlier could re-send a delivered message; allowed: "
                f"{minimum:g} to 86400 (or lower the timeouts)")
        return self

    @property
    def min_reconcile_grace_seconds(self) -> float:
        return self.connect_timeout + self.read_timeout + RECONCILE_MARGIN_SECONDS


def _variable(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        for choice in alias.choices:
            if isinstance(choice, str) and choice.isupper():
                return choice
    return PREFIX + name.upper()


def _error_lines(cls: type[Settings], err: ValidationError, given: Mapping[str, Any]) -> list[str]:
    """One line per bad value: the variable, a bounded echo of the value (never a secret's), what is allowed."""
    variables = cls.variables()
    lines: list[str] = []
    for error in err.errors(include_url=False):
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if field not in cls.model_fields:
            lookup = {v.lower(): k for k, v in variables.items()}
            field = lookup.get(field.lower(), field)
        if field not in cls.model_fields:
            if not loc:  # a check across fields: its message names the variables itself
                lines.append(message)
            else:
                lines.append(f"{echo(field, 40)}: not a setting of sms-mcp")
            continue
        info = cls.model_fields[field]
        value = error.get("input")
        secret = isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
        if error.get("type") == "missing":
            lines.append(f"{variables[field]} is required; allowed: {info.description or 'see README.md'}")
            continue
        shown = f"<hidden, {len(str(value))} characters>" if secret else echo(value)
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("phones"):
            shown, message = mask_numbers(shown), mask_numbers(message)
        if len(loc) > 1 and isinstance(loc[1], int) and not secret:
            shown = f"{shown} (item {loc[1] + 1})"
        allowed = info.description or "see README.md"
        if isinstance(value, str) and re.search(r"\$\{|^\$[A-Za-z_]\w*$", value.strip()):
            message += " (it looks like an unexpanded ${…} reference: the host did not substitute it)"
        lines.append(f"{variables[field]}={shown}: {message}; allowed: {allowed}")
    return lines or [str(err).splitlines()[0]]


#: ``SMS_MCP_*`` variables read by other programs (the HTTP emulator, the tests' host tooling), not by the server.
NOT_SETTINGS = frozenset({"SMS_MCP_EMULATOR_ACCESS_KEY_SECRET", "SMS_MCP_HOST_TOOLS", "SMS_MCP_NODE24",
                          "SMS_MCP_OPENCLAW", "SMS_MCP_CLAUDE", "SMS_MCP_SERVER_ENV"})


def unknown_variables(env: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """``SMS_MCP_*`` variables that set nothing: ``(typos, others)``, one line each.

    A typo of a real setting (``SMS_MCP_ALLOWED_NUMBER``, ``SMS_MCP_READONLY``) is an error: the operator believes a
    policy is in force that is not. Any other unknown name is only worth a warning (a newer or older version's)."""
    env = os.environ if env is None else env
    known = set(Settings.variables().values()) | NOT_SETTINGS
    typos: list[str] = []
    others: list[str] = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known - NOT_SETTINGS), n=1, cutoff=0.85)
        if close:
            typos.append(f"{echo(name, 60)} is not a setting of sms-mcp; allowed: the variables in README.md "
                         f"(did you mean {close[0]}? as written it would be ignored)")
        else:
            others.append(f"{echo(name, 60)} is not a setting of sms-mcp; it is ignored")
    return typos, others


def check_data_dir(path: Path) -> str | None:
    """None if sms-mcp can keep its files in ``path`` (created if missing), else one line saying why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            return f"{PREFIX}DATA_DIR={echo(str(path))}: not a directory; allowed: a writable directory"
        probe = path / f".sms-mcp-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return f"{PREFIX}DATA_DIR={echo(str(path))}: cannot write there ({reason}); allowed: a writable directory"
    return None
