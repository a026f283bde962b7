"""Choosing a backend from the settings. Heavy backends are imported only when chosen."""

from __future__ import annotations

import logging

from sms_mcp.config import ConfigError, Settings
from sms_mcp.wire.base import Transport

log = logging.getLogger("sms_mcp.wire")


def resolve_backend(settings: Settings) -> tuple[str, str]:
    """Return ``(backend name, why)``. ``auto`` picks openapi when credentials are found, else sandbox.

    Credential variables that hold placeholders (``${ALIBABA_CLOUD_ACCESS_KEY_ID}`` passed through unexpanded by
    a host, ``LTAI…``) count as absent, and ``why`` names them.
    """
    if settings.backend != "auto":
        return settings.backend, f"SMS_MCP_BACKEND={settings.backend}"
    from sms_mcp.wire.credentials import find_credentials, placeholder_variables

    ignored = [name for name, kind in placeholder_variables().items() if kind not in ("empty", "whitespace only")]
    because = f" (ignored as placeholders: {', '.join(ignored)})" if ignored else ""
    found = find_credentials()
    if found is None:
        return "sandbox", (f"auto: no Alibaba Cloud credentials found{because}; "
                           "using the embedded sandbox (no real SMS)")
    return "openapi", f"auto: credentials found ({found}){because}"


def make_transport(settings: Settings, backend: str | None = None) -> Transport:
    """Build the named (or resolved) backend. When credential variables were ignored as placeholders the
    transport carries a ``notice`` saying so, which every tool result shows beside the backend's name."""
    from sms_mcp.wire.credentials import placeholder_notice

    notice = placeholder_notice()  # before building: the openapi backend removes the placeholders it ignores
    transport = _build(settings, backend or resolve_backend(settings)[0])
    if notice is not None:
        transport.notice = notice  # type: ignore[attr-defined]
    return transport


def _build(settings: Settings, name: str) -> Transport:
    if name == "sandbox":
        from sms_mcp.wire.sandbox import SandboxTransport

        return SandboxTransport.from_settings(settings)
    if name == "openapi":
        from sms_mcp.wire.openapi import OpenApiTransport

        return OpenApiTransport.from_settings(settings)
    if name == "cli":
        from sms_mcp.wire.aliyun_cli import AliyunCliTransport

        return AliyunCliTransport.from_settings(settings)
    raise ConfigError(f"unknown backend {name!r}")
