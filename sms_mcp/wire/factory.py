"""Choosing a backend from the settings. Heavy backends are imported only when chosen."""

from __future__ import annotations

import logging

from sms_mcp.config import ConfigError, Settings
from sms_mcp.wire.base import Transport

log = logging.getLogger("sms_mcp.wire")


def resolve_backend(settings: Settings) -> tuple[str, str]:
    """Return ``(backend name, why)``. ``auto`` picks openapi when credentials are found, else sandbox."""
    if settings.backend != "auto":
        return settings.backend, f"SMS_MCP_BACKEND={settings.backend}"
    try:
        from sms_mcp.wire.credentials import find_credentials
    except ImportError:  # the OpenAPI extra is not installed
        return "sandbox", "auto: Alibaba Cloud SDK not installed; using the embedded sandbox"
    found = find_credentials()
    if found is None:
        return "sandbox", "auto: no Alibaba Cloud credentials found; using the embedded sandbox (no real SMS)"
    return "openapi", f"auto: credentials found ({found})"


def make_transport(settings: Settings, backend: str | None = None) -> Transport:
    name = backend or resolve_backend(settings)[0]
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
