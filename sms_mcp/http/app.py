"""``sms-mcp serve --http``: the MCP tools of ``sms_mcp.server`` over Streamable HTTP, for a team.

One endpoint (``/mcp``) serves both protocol eras the SDK speaks: 2026-07-28 per-request calls, which need no
affinity between replicas (every replica has the same server name and the shared request-state keys, so an
elicitation round may land on any replica), and the 2025-11-25 session era, whose ``Mcp-Session-Id`` lives in
one replica's memory (see :class:`ReplicaTaggedSessions` for the balancer side).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.server import MCPServer
from mcp.server.auth.routes import create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import RequestStateSecurity
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sms_mcp import __version__
from sms_mcp.config import ConfigError, Settings
from sms_mcp.core.principal_policy import PrincipalPolicy
from sms_mcp.core.service import SmsService
from sms_mcp.http.auth import SCOPES, ApiKeyEntry, ApiKeyVerifier, GatewayTokenVerifier, JwtVerifier
from sms_mcp.http.observability import Drain, GatewayMiddleware, InstrumentedTransport, Metrics, principal_from_token
from sms_mcp.wire.base import Transport

log = logging.getLogger("sms_mcp.http")

MCP_PATH = "/mcp"
LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
PRM_PATH = "/.well-known/oauth-protected-resource"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ReplicaTaggedSessions:
    """Session-era affinity an open-source balancer can follow: every ``Mcp-Session-Id`` this replica hands out
    starts with ``<replica id>.``, so nginx can route on that prefix (a ``map`` on ``$http_mcp_session_id``).

    Plain hashing of the header is not enough on its own: ``initialize`` carries no session id, so it lands
    wherever the balancer sends an empty key, and the id that replica creates then hashes to any replica. The
    SDK sees its own id: the prefix is removed from requests and added to responses here."""

    def __init__(self, app: Any, replica_id: str) -> None:
        self.app = app
        self.prefix = f"{replica_id}.".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        prefix = self.prefix
        headers = [(k, v[len(prefix):] if k == b"mcp-session-id" and v.startswith(prefix) else v)
                   for k, v in scope["headers"]]

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    (k, prefix + v if k.lower() == b"mcp-session-id" else v) for k, v in message.get("headers", [])]}
            await send(message)

        await self.app({**scope, "headers": headers}, receive, tagged)


@dataclass
class Gateway:
    settings: Settings
    host: str
    port: int
    public_url: str
    server: MCPServer
    app: Any
    metrics: Metrics
    drain: Drain
    transport: InstrumentedTransport
    auth: str
    service: SmsService | None = field(default=None)


def _auth(settings: Settings, public_url: str) -> tuple[GatewayTokenVerifier | None, AuthSettings | None, str]:
    if bool(settings.auth_issuer) != bool(settings.auth_jwks_url):
        raise ConfigError("SMS_MCP_AUTH_ISSUER and SMS_MCP_AUTH_JWKS_URL go together: set both (OAuth) or neither")
    keys = [ApiKeyEntry.parse(e) for e in settings.api_keys]
    jwt_verifier = None
    if settings.auth_issuer and settings.auth_jwks_url:
        for name, url in (("SMS_MCP_AUTH_ISSUER", settings.auth_issuer), ("SMS_MCP_AUTH_JWKS_URL",
                                                                          settings.auth_jwks_url)):
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.netloc:
                raise ConfigError(f"{name}={url[:100]!r}: expected an http(s) URL")
            if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
                raise ConfigError(f"{name}={url[:100]!r}: must be https (plain http only on loopback)")
        jwt_verifier = JwtVerifier(settings.auth_issuer, settings.auth_jwks_url, audience=public_url)
    if not keys and jwt_verifier is None:
        return None, None, "none"
    verifier = GatewayTokenVerifier(ApiKeyVerifier(keys, public_url) if keys else None, jwt_verifier)
    # API keys only: there is no authorization server; the metadata names this server's origin.
    issuer = settings.auth_issuer or "{0.scheme}://{0.netloc}".format(urlsplit(public_url))
    auth = AuthSettings(issuer_url=AnyHttpUrl(issuer), resource_server_url=AnyHttpUrl(public_url),
                        required_scopes=None, validate_token_resource=True)
    kinds = [k for k, on in (("oauth", jwt_verifier is not None), ("api-keys", bool(keys))) if on]
    return verifier, auth, "+".join(kinds)


def build_gateway(settings: Settings, host: str = "127.0.0.1", port: int = 8000,
                  transport: Transport | None = None) -> Gateway:
    """Everything ``serve --http`` serves, without serving it (tests drive the ASGI app directly too)."""
    from sms_mcp.server import build_server
    from sms_mcp.wire.factory import make_transport, resolve_backend

    loopback = is_loopback(host)
    if settings.public_url:
        public_url = settings.public_url.rstrip("/")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path != MCP_PATH:
            raise ConfigError(f"SMS_MCP_PUBLIC_URL={public_url[:100]!r}: expected the public URL of the MCP "
                              f"endpoint, http(s)://host[:port]{MCP_PATH}")
    elif loopback:
        public_url = f"http://{_url_host(host)}:{port}{MCP_PATH}"
    else:
        raise ConfigError(f"--host {host} is not loopback: set SMS_MCP_PUBLIC_URL to the URL clients use "
                          f"(https://sms.example.com{MCP_PATH}); tokens must name it as their audience")
    verifier, auth, auth_kind = _auth(settings, public_url)
    if auth is None and not loopback:
        raise ConfigError(f"refusing to listen on {host} without authentication: configure OAuth "
                          "(SMS_MCP_AUTH_ISSUER and SMS_MCP_AUTH_JWKS_URL) or SMS_MCP_API_KEYS, or bind 127.0.0.1")
    for key in settings.request_state_keys:
        if len(key.encode()) < 32:
            raise ConfigError("SMS_MCP_REQUEST_STATE_KEYS: every key must be at least 32 bytes "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    principal_policy = PrincipalPolicy.load(settings, settings.policy_file) if settings.policy_file else None

    metrics = Metrics()
    drain = Drain(settings.shutdown_grace_seconds)
    if transport is None:
        name, why = resolve_backend(settings)
        log.info("backend: %s (%s)", name, why)
        transport = make_transport(settings, name)
    instrumented = InstrumentedTransport(transport, metrics)
    options: dict[str, Any] = {}
    if verifier is not None:
        options.update(token_verifier=verifier, auth=auth)
    if settings.request_state_keys:
        # The same keys and the same server name ("sms-mcp") on every replica: an elicitation round that
        # lands on another replica unseals there.
        options["request_state_security"] = RequestStateSecurity(keys=list(settings.request_state_keys))
    holder: dict[str, SmsService | None] = {"service": None}

    def on_service(service: SmsService | None) -> None:
        holder["service"] = service

    server = build_server(settings, instrumented, manage_transport=True, on_service=on_service,  # type: ignore[arg-type]
                          principal_of=lambda _ctx: principal_from_token(), principal_policy=principal_policy,
                          **options)
    server.middleware.append(GatewayMiddleware(metrics, drain))

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "alive", "version": __version__})

    @server.custom_route("/readyz", methods=["GET"])
    async def readyz(_request: Request) -> Response:
        problems: list[str] = []
        if drain.draining:
            problems.append("shutting down")
        if not instrumented.started:
            problems.append("backend not started")
        service = holder["service"]
        if service is None:
            problems.append("service not running")
        else:
            try:
                with anyio.fail_after(5):
                    await service.ledger.health()
            except Exception as err:
                problems.append(f"ledger unreachable: {type(err).__name__}")
        body = {"status": "ready" if not problems else "not ready", "problems": problems,
                "backend": instrumented.name, "in_flight_sends": drain.in_flight}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @server.custom_route("/metrics", methods=["GET"])
    async def metrics_route(_request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    public = urlsplit(public_url)
    public_origin = f"{public.scheme}://{public.netloc}"
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys([*LOOPBACK_HOSTS, public.netloc, *settings.allowed_hosts])),
        allowed_origins=list(dict.fromkeys([*LOOPBACK_ORIGINS, public_origin, *settings.allowed_origins])),
    )
    app: Starlette = server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=security,
                                                host=host)
    if auth is not None:
        # RFC 9728 metadata at the path-suffixed location (what the 401 points to) and at the bare well-known
        # path, listing both scopes (the SDK's own route would list only required_scopes, which are none here).
        metadata_routes = create_protected_resource_routes(AnyHttpUrl(public_url), [auth.issuer_url],
                                                           scopes_supported=list(SCOPES), resource_name="sms-mcp")
        for route in metadata_routes:  # the first is at PRM_PATH + the resource's path
            for path in (route.path, PRM_PATH):
                app.router.routes.insert(0, Route(path, endpoint=route.endpoint, methods=["GET", "OPTIONS"]))
    asgi: Any = ReplicaTaggedSessions(app, settings.replica_id) if settings.replica_id else app
    return Gateway(settings, host, port, public_url, server, asgi, metrics, drain, instrumented, auth_kind)


def _ledger_opens(settings: Settings) -> bool:
    """Open the ledger once before serving, so a broken or locked one is refused in one line (the lifespan
    opens it again for serving)."""
    from sms_mcp.core.ports import LedgerUnavailable
    from sms_mcp.ledger import open_ledger

    async def probe() -> None:
        ledger = await open_ledger(settings)
        try:
            await ledger.health()
        finally:
            await ledger.aclose()

    try:
        anyio.run(probe)
    except LedgerUnavailable as err:
        log.error("sms-mcp cannot serve: %s", err)
        return False
    return True


def serve_http(settings: Settings, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT: then readiness fails, new tool calls are refused, in-flight sends get
    ``SMS_MCP_SHUTDOWN_GRACE_SECONDS`` to finish, and the process exits (status 143 on SIGTERM)."""
    import uvicorn

    gateway = build_gateway(settings, host, port)
    if not _ledger_opens(settings):
        return 1
    config = uvicorn.Config(gateway.app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 2,
                            lifespan="on", server_header=False)

    class DrainingServer(uvicorn.Server):
        loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.loop is not None:
                self.loop.call_soon_threadsafe(gateway.drain.begin)
            super().handle_exit(sig, frame)

    log.info("sms-mcp %s serving MCP over Streamable HTTP at %s (bound %s:%d, auth: %s, replica: %s)",
             __version__, gateway.public_url, host, port, gateway.auth, settings.replica_id or "-")
    if not settings.request_state_keys:
        log.warning("SMS_MCP_REQUEST_STATE_KEYS is not set: elicitation rounds only work on this one replica "
                    "and not across a restart")
    DrainingServer(config).run()
    return 0
