"""The real Alibaba Cloud backend: Dysmsapi through Alibaba's own generic OpenAPI client.

Signing (V3 ``ACS3-HMAC-SHA256``, or V2 on request) and credentials come from Alibaba's libraries
(``alibabacloud-tea-openapi``'s generic call, ``alibabacloud-credentials``' default chain); nothing here computes
a signature. This module adds what the SDK leaves to the caller:

* the endpoint, from the *documented* region table (reference §4; the SDK's own map disagrees with the docs);
* the network path: one verified TLS context and one bounded pool of keep-alive connections per process
  (:class:`ConnectionPool`). The SDK's async path builds a new TLS context (loading certifi's bundle, ~50 ms of
  CPU) and a new aiohttp session, i.e. a new TCP + TLS handshake, on *every* call; here Alibaba's own request
  building, signing and response handling run unchanged and only the HTTP exchange goes through the pool;
* timeouts, and retries only for reads (SendSms/SendBatchSms are not idempotent: never retried);
* error translation into the wire layer's two failure kinds, with credential problems (AccessKey / request
  signing) spelled out so they are never confused with SMS *sign name* errors.

The Alibaba packages are imported lazily, in :meth:`OpenApiTransport.start`, so ``serve`` with the sandbox never
pays for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import ssl
import time
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from sms_mcp import __version__
from sms_mcp.config import ConfigError, Settings
from sms_mcp.dysmsapi import explain
from sms_mcp.wire.base import (
    AGENT_USER_AGENT,
    API_VERSION,
    FORM_BODY_PARAMS,
    SEND_ACTIONS,
    GatewayError,
    OutcomeUnknownError,
    WireBody,
    WireParams,
)
from sms_mcp.wire.credentials import find_credentials, mask_access_key_id

log = logging.getLogger("sms_mcp.wire")

DEFAULT_HOST = "dysmsapi.aliyuncs.com"

#: Non-mainland regions with their own documented host (https://help.aliyun.com/document_detail/68360.html).
#: Every ``cn-*`` region (mainland, the finance clouds, and cn-hongkong) uses DEFAULT_HOST.
REGION_HOSTS: dict[str, str] = {
    "ap-southeast-1": "dysmsapi.ap-southeast-1.aliyuncs.com",
    "ap-southeast-5": "dysmsapi.ap-southeast-5.aliyuncs.com",
    "eu-central-1": "dysmsapi.eu-central-1.aliyuncs.com",
}

#: Gateway codes that are about the AccessKey or the API request signature, never about the SMS sign name.
CREDENTIAL_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidAccessKeyId.NotFound",
        "InvalidAccessKeyId.Inactive",
        "InvalidTimeStamp.Expired",
        "InvalidTimeStamp.Format",
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.Malformed",
        "InvalidSecurityToken.MismatchWithAccessKey",
        "Forbidden.RAM",
        "InvalidCredentials",
        "SignatureNonceUsed",
    }
)

CREDENTIAL_PREFIX = "Credential problem (Alibaba Cloud AccessKey / API request signing, not the SMS sign name): "

#: Read retries: attempts in all, and the most time spent sleeping between them.
READ_ATTEMPTS = 3
READ_BACKOFF_BASE = 0.2
READ_BACKOFF_BUDGET = 1.5

#: Keep-alive connections per endpoint. At least the domain's SEND_CONCURRENCY (8), so a chunked send never waits
#: for a connection; bounded, so a burst cannot open an unbounded number of sockets.
POOL_SIZE = 16
#: Idle connections are closed after this many seconds: shorter than common server idle timeouts (uvicorn's is
#: 5 s), so a request is almost never written onto a connection the server is closing at that moment.
KEEPALIVE_SECONDS = 4.0


# --------------------------------------------------------------------------------------------------------------
# Endpoint
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    host: str  # host[:port], never a scheme: the SDK would put a scheme into the Host header and sign it
    protocol: str  # "HTTPS" | "HTTP"

    @property
    def url(self) -> str:
        return f"{self.protocol.lower()}://{self.host}"


def parse_endpoint(value: str) -> Endpoint:
    """``https://host``, ``http://host:port`` or a bare ``host[:port]`` (HTTPS) -> :class:`Endpoint`."""
    raw = value.strip()
    scheme, sep, rest = raw.partition("://")
    if sep:
        protocol = scheme.upper()
        if protocol not in ("HTTP", "HTTPS"):
            raise ConfigError(f"SMS_MCP_ENDPOINT={value!r}: the scheme must be http or https")
    else:
        protocol, rest = "HTTPS", raw
    host = rest.split("/", 1)[0].strip()
    if not host or any(c in host for c in " ?#@"):
        raise ConfigError(f"SMS_MCP_ENDPOINT={value!r}: expected https://host, http://host:port or host")
    return Endpoint(host, protocol)


def endpoint_for(settings: Settings) -> Endpoint:
    """``settings.endpoint`` if set, else the documented host for ``settings.region_id``."""
    if settings.endpoint:
        return parse_endpoint(settings.endpoint)
    region = (settings.region_id or "cn-hangzhou").strip().lower()
    if region.startswith("cn-"):
        return Endpoint(DEFAULT_HOST, "HTTPS")
    if region in REGION_HOSTS:
        return Endpoint(REGION_HOSTS[region], "HTTPS")
    log.warning(
        "ALIBABA_CLOUD_REGION_ID=%s has no documented Dysmsapi endpoint; using %s (set SMS_MCP_ENDPOINT to override)",
        region,
        DEFAULT_HOST,
    )
    return Endpoint(DEFAULT_HOST, "HTTPS")


# --------------------------------------------------------------------------------------------------------------
# Error explanation
# --------------------------------------------------------------------------------------------------------------



def explain_gateway_error(err: GatewayError) -> tuple[str, str]:
    """``(meaning, next step)`` for a gateway error, from the one catalogue (:mod:`sms_mcp.dysmsapi`)."""
    return explain(err.code, err.message, err.status, quote=False)


# --------------------------------------------------------------------------------------------------------------
# Exception translation
# --------------------------------------------------------------------------------------------------------------

_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def _scrub(text: str) -> str:
    """Drop query strings from URLs in SDK/aiohttp messages: they carry phone numbers and message variables."""
    return _URL_QUERY.sub(r"\1?…", text)[:500]


def _credential_error(status: int, code: str, message: str, **extra: Any) -> GatewayError:
    return GatewayError(status, code, CREDENTIAL_PREFIX + message, **extra)


def translate_exception(exc: BaseException) -> GatewayError | OutcomeUnknownError:
    """Map an exception from the tea-openapi client to the wire layer's error types."""
    from alibabacloud_credentials.exceptions import CredentialException
    from darabonba.exceptions import ResponseException
    from Tea.exceptions import UnretryableException

    if isinstance(exc, ResponseException):
        # ClientException / ServerException / ThrottlingException: the gateway answered HTTP >= 400 (or the SDK
        # itself refused before sending: status None, e.g. code InvalidCredentials when there is no credential).
        data = exc.data if isinstance(exc.data, dict) else {}
        body = {k: v for k, v in data.items() if k != "statusCode"}
        status = int(exc.status_code or 0)
        code = str(exc.code or body.get("Code") or "Unknown")
        message = str(body.get("Message") or body.get("message") or exc.message or "")
        # SignatureDoesNotMatch carries the server's string-to-sign, i.e. every parameter (phone numbers, message
        # variables): useless to an agent and unfit for logs. The raw body keeps it for debugging.
        message = message.split(" server string to sign is:")[0].split("server string to sign is:")[0].rstrip()
        extra = {
            "request_id": str(body.get("RequestId") or ""),
            "host_id": str(body.get("HostId") or ""),
            "recommend": str(body.get("Recommend") or ""),
            "body": body,
        }
        if code in CREDENTIAL_CODES:
            return _credential_error(status, code, message, **extra)
        return GatewayError(status, code, message, **extra)

    inner: BaseException = exc
    if isinstance(exc, UnretryableException) and exc.inner_exception is not None:
        inner = exc.inner_exception
    if isinstance(inner, ResponseException):
        return translate_exception(inner)
    if isinstance(inner, (GatewayError, OutcomeUnknownError)):
        return inner  # already classified by ConnectionPool.send
    cert_error = getattr(inner, "certificate_error", inner)
    if isinstance(cert_error, ssl.SSLCertVerificationError):
        return tls_verification_error(cert_error, "the system's CAs and certifi's")
    if isinstance(inner, CredentialException):
        # Raised while resolving credentials, before any request left this machine.
        return _credential_error(
            0,
            "InvalidCredentials",
            "no Alibaba Cloud credentials could be loaded, so nothing was sent ("
            + _scrub(str(inner.message if hasattr(inner, "message") else inner))
            + "). Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure a profile "
            "(`aliyun configure`).",
        )
    text = str(getattr(inner, "message", None) or inner)
    # darabonba turns a JSON decode failure into RuntimeError('Failed to parse the value as json format, Value:
    # "<the whole body>"'); the body may hold phone numbers, so it is left out of the detail.
    if isinstance(inner, ValueError) or text.startswith("Failed to parse the value as json"):
        return OutcomeUnknownError("malformed_response", "the response body is not valid JSON")
    detail = _scrub(text or type(inner).__name__)
    lowered = detail.lower()
    if "cannot connect to host" in lowered:
        return OutcomeUnknownError(
            "connect_failed", f"could not connect ({detail}); the request most likely never reached Alibaba Cloud"
        )
    if "timeout" in lowered or isinstance(inner, (asyncio.TimeoutError, TimeoutError)):
        return OutcomeUnknownError("timeout", f"no answer in time ({detail})")
    return OutcomeUnknownError("connection_lost", f"{type(inner).__name__}: {detail}")


def tls_verification_error(err: ssl.SSLCertVerificationError, trusted: str) -> GatewayError:
    """A certificate that did not verify: the handshake failed before any request byte was sent."""
    reason = _scrub(str(getattr(err, "verify_message", "") or err))
    return GatewayError(
        0,
        "TlsVerificationFailed",
        f"the endpoint's TLS certificate did not verify ({reason}); nothing was sent. Trusted CAs: {trusted}.",
    )


# --------------------------------------------------------------------------------------------------------------
# Connections: one TLS context, one keep-alive pool; Alibaba's request building and signing
# --------------------------------------------------------------------------------------------------------------


def trusted_cas(ca_bundle: Path | None, env: Mapping[str, str] | None = None) -> str:
    """Which CAs the openapi backend trusts, in words (for errors and ``sms-mcp doctor``)."""
    env = os.environ if env is None else env
    if ca_bundle is not None:
        return f"only those in SMS_MCP_CA_BUNDLE={ca_bundle}"
    configured = [f"{name}={env[name]}" for name in ("SSL_CERT_FILE", "SSL_CERT_DIR") if env.get(name)]
    if configured:
        return "OpenSSL's default verify paths (" + ", ".join(configured) + ")"
    return "the system's and certifi's"


def tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The process's one client TLS context for this trust configuration (built once: loading a CA bundle costs
    tens of milliseconds of CPU). Always verifying: CERT_REQUIRED and host name checking, TLS >= 1.2.

    * ``SMS_MCP_CA_BUNDLE`` set: only the CAs in that PEM file (e.g. the emulator's test CA, or a corporate CA).
    * else ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` set: OpenSSL's default verify paths, which those variables
      replace (the file, the directory, or both).
    * else: the system's default verify paths plus certifi's bundle, the set the official SDK trusts.
    """
    return _tls_context(
        str(ca_bundle) if ca_bundle is not None else None,
        os.environ.get("SSL_CERT_FILE") or None,
        os.environ.get("SSL_CERT_DIR") or None,
    )


@functools.lru_cache(maxsize=8)
def _tls_context(ca_bundle: str | None, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    if ca_bundle is not None:
        try:
            context = ssl.create_default_context(cafile=ca_bundle)
        except FileNotFoundError:
            raise ConfigError(f"SMS_MCP_CA_BUNDLE={ca_bundle}: no such file") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"SMS_MCP_CA_BUNDLE={ca_bundle}: not a readable PEM file of CA certificates ({exc})"
            ) from None
    else:
        context = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
        if cert_file is None and cert_dir is None:
            import certifi

            context.load_verify_locations(certifi.where())
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:  # never, but never silently
        raise ConfigError("the TLS context would not verify the endpoint's certificate")
    return context


def _proxy_for(endpoint: Endpoint) -> str | None:
    """The HTTP(S)_PROXY for this endpoint from the environment, unless NO_PROXY excludes its host. Read once."""
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    host = urllib.parse.urlsplit(endpoint.url).hostname or endpoint.host
    if urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxies.get(endpoint.protocol.lower()) or None


class ConnectionPool:
    """One aiohttp session per event loop over a bounded keep-alive pool, with the process's TLS context.

    It replaces only ``darabonba``'s ``async_do_action`` (the HTTP exchange) for this transport's client: the
    request that arrives here was built, timestamped, nonced and signed by ``alibabacloud-tea-openapi`` with
    credentials from ``alibabacloud-credentials``, and is sent byte for byte as the SDK's sync path composes it.
    It never retries: aiohttp re-sends only idempotent methods on a dropped keep-alive connection, and every
    Dysmsapi call is a POST. A failure is classified here, where the aiohttp and TLS types are known.
    """

    def __init__(self, endpoint: Endpoint, ca_bundle: Path | None) -> None:
        self.endpoint = endpoint
        self.ca_bundle = ca_bundle
        self.ssl_context: ssl.SSLContext | None = tls_context(ca_bundle) if endpoint.protocol == "HTTPS" else None
        self.proxy = _proxy_for(endpoint)
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: New TCP (and TLS) connections opened so far: the handshakes paid (tests and the benchmark read it).
        self.connections_opened = 0
        self._trace: Any = None
        #: Connections being opened ahead of the calls (warm), each a future resolved once it is idle or failed.
        self._warming: list[asyncio.Future[None]] = []

    def _ensure_session(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is loop and not self._session.closed:
            return self._session
        import aiohttp

        trace = aiohttp.TraceConfig()

        async def opened(_session: Any, context: Any, _params: Any) -> None:
            self.connections_opened += 1
            context.opened = True  # (read by warm: a new connection, not one taken from the pool)

        trace.on_connection_create_end.append(opened)
        self._trace = trace
        connector = aiohttp.TCPConnector(
            ssl=self.ssl_context if self.ssl_context is not None else False,
            limit=POOL_SIZE,
            limit_per_host=POOL_SIZE,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        # A session left behind on another (finished) loop holds no usable sockets; it is simply dropped.
        self._session = aiohttp.ClientSession(connector=connector, trace_configs=[trace])
        self._loop = loop
        return self._session

    async def send(self, request: Any, runtime_option: Mapping[str, Any] | None = None) -> Any:
        """``DaraCore.async_do_action``'s contract: a signed ``DaraRequest`` in, a ``DaraResponse`` out."""
        import aiohttp
        from darabonba.core import DaraCore
        from darabonba.response import DaraResponse
        from yarl import URL

        runtime_option = runtime_option or {}
        session = self._ensure_session()
        if self._warming:
            # A connection is being opened for the calls (warm): wait for it rather than open another beside it;
            # it was started earlier, so it is ready sooner than a new one. Whatever its fate, the request below
            # then takes an idle connection or opens its own, as always. No request has been written yet.
            ready = self._warming.pop(0)
            if not ready.done():
                await asyncio.wait([ready])  # (not awaited directly: cancelling this call must not cancel it)
        url = URL(DaraCore.compose_url(request), encoded=True)  # as signed; not re-quoted
        body = request.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        timeout = aiohttp.ClientTimeout(
            sock_connect=int(runtime_option.get("connectTimeout") or 5000) / 1000,
            sock_read=int(runtime_option.get("readTimeout") or 10000) / 1000,
        )
        try:
            async with session.request(
                request.method, url, data=body or b"", headers=request.headers, proxy=self.proxy, timeout=timeout
            ) as response:
                result = DaraResponse()
                result.body = await response.read()
                result.headers = {k.lower(): v for k, v in response.headers.items()}
                result.status_code = response.status
                result.status_message = response.reason
                return result
        except aiohttp.ClientConnectorCertificateError as exc:
            raise tls_verification_error(exc.certificate_error, trusted_cas(self.ca_bundle)) from None
        except aiohttp.ClientConnectorError as exc:
            raise OutcomeUnknownError(
                "connect_failed",
                f"could not connect to {self.endpoint.url} ({_scrub(str(exc.os_error) or type(exc).__name__)}); the "
                "request most likely never reached Alibaba Cloud",
            ) from None
        except aiohttp.ConnectionTimeoutError as exc:
            # No connection (TCP or TLS handshake) within the connect timeout: no request byte was written.
            raise OutcomeUnknownError(
                "connect_failed", f"no connection to {self.endpoint.url} in time ({_scrub(str(exc))})"
            ) from None
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise OutcomeUnknownError(
                "timeout", f"no answer in time ({_scrub(str(exc)) or type(exc).__name__})"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            # Dropped mid-request (ServerDisconnectedError, a reset, a cut-off body): it may have been processed.
            raise OutcomeUnknownError("connection_lost", f"{type(exc).__name__}: {_scrub(str(exc))}") from None

    async def warm(self, connections: int, connect_timeout: float) -> int:
        """Open up to ``connections`` keep-alive connections to the endpoint (TCP + TLS handshake) and leave them
        idle in the pool, *without sending any request*: the handshakes then overlap whatever the caller does
        before its calls, which find them ready. Connections already idle in the pool count towards the number.
        Returns how many new connections were opened. Raises what a connect raises (the caller decides).

        Through a proxy nothing is opened: the tunnel would cost a CONNECT request to the proxy.
        """
        import aiohttp
        from aiohttp.tracing import Trace
        from yarl import URL

        if connections <= 0 or self.proxy is not None:
            return 0
        session = self._ensure_session()
        connector = session.connector
        # The key the pool files connections under is the request's: built the way ClientSession builds its
        # requests (verification from the connector's TLS context), it is the key every call looks up.
        request = aiohttp.ClientRequest(
            "POST", URL(self.endpoint.url), loop=asyncio.get_running_loop(), session=session, ssl=True
        )
        timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, connect=connect_timeout)
        held: list[Any] = []  # connections that were already idle: kept out of reach until every connect returned
        loop = asyncio.get_running_loop()
        # One future per connection being opened, resolved when it is idle in the pool (or failed): a call that
        # starts meanwhile waits for one (see send) instead of paying a handshake of its own beside it.
        ready: list[asyncio.Future[None]] = [loop.create_future() for _ in range(connections)]
        self._warming.extend(ready)

        async def one(done: asyncio.Future[None]) -> bool:
            reused = False
            try:
                context = self._trace.trace_config_ctx()
                connection = await connector.connect(request, [Trace(session, self._trace, context)], timeout)
                if getattr(context, "opened", False):
                    connection.release()  # new and idle: ready for the next call at once
                    return True
                held.append(connection)  # already idle in the pool: released last, or it would be taken again
                reused = True
                return False
            finally:
                if not reused:  # (a reused one is resolved once released, below)
                    _resolve(done)

        try:
            results = await asyncio.gather(*(one(done) for done in ready), return_exceptions=True)
        finally:
            for connection in held:
                connection.release()
            for done in ready:
                _resolve(done)
                with contextlib.suppress(ValueError):
                    self._warming.remove(done)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and len(errors) == len(results):
            raise errors[0]
        return sum(1 for r in results if r is True)

    async def aclose(self) -> None:
        warming, self._warming = self._warming, []
        for ready in warming:
            _resolve(ready)
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        if session is None or session.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            await session.close()
        # On another loop the session cannot be awaited; its loop is gone and took the sockets with it.


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def pooled_client_class(pool: ConnectionPool) -> type | None:
    """A subclass of tea-openapi's ``Client`` whose async request methods send through ``pool``.

    ``do_request_async`` (V3) and ``do_rpcrequest_async`` (V2) are Alibaba's own functions, re-bound to a module
    namespace in which ``DaraCore`` is a subclass whose ``async_do_action`` is ``pool.send``; every other line of
    them (request building, signing, credential look-up, error mapping) is the SDK's. Nothing global changes: the
    official ``Client`` and any other instance keep the SDK's own path. None if this SDK version is shaped
    differently (the caller then falls back to the stock client, unpooled but correct).
    """
    from alibabacloud_tea_openapi import client as tea_client
    from darabonba.core import DaraCore

    pooled_core = type("PooledDaraCore", (DaraCore,), {"async_do_action": staticmethod(pool.send)})
    namespace = dict(vars(tea_client))
    namespace["DaraCore"] = pooled_core
    methods: dict[str, Any] = {}
    for name in ("do_request_async", "do_rpcrequest_async"):
        original = getattr(tea_client.Client, name, None)
        code = getattr(original, "__code__", None)
        if code is None or not {"DaraCore", "async_do_action"} <= set(code.co_names):
            return None
        rebound = types.FunctionType(code, namespace, original.__name__, original.__defaults__, original.__closure__)
        rebound.__kwdefaults__ = original.__kwdefaults__
        rebound.__qualname__ = original.__qualname__
        rebound.__doc__ = original.__doc__
        methods[name] = rebound
    return type("PooledOpenApiClient", (tea_client.Client,), methods)


# --------------------------------------------------------------------------------------------------------------
# The transport
# --------------------------------------------------------------------------------------------------------------


class OpenApiTransport:
    """Dysmsapi over HTTPS with Alibaba's generic client (``call_api_async``) and default credential chain, sent
    through the process's :class:`ConnectionPool` (verified TLS, keep-alive connections reused across calls).

    ``credential`` may be any ``alibabacloud_credentials`` client/provider wrapper (tests pass a static one);
    by default the default chain is used. ``signature_algorithm="v2"`` selects the legacy RPC signature.
    """

    name = "openapi"

    def __init__(
        self,
        settings: Settings,
        *,
        credential: Any = None,
        signature_algorithm: str | None = None,
        read_attempts: int = READ_ATTEMPTS,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint_for(settings)
        self._credential = credential
        self._signature_algorithm = signature_algorithm
        self._read_attempts = max(1, read_attempts)
        self._sleep = sleep
        self._client: Any = None
        self.pool: ConnectionPool | None = None
        self._credential_client: Any = None
        self._start_lock = asyncio.Lock()
        self.last_response_headers: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenApiTransport:
        return cls(settings)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._client is None:
                self._client = self._build_client()

    def _build_client(self) -> Any:
        from sms_mcp.wire.credentials import build_credential_client, prepare_environment, quiet_sdk_loggers

        prepare_environment()  # before the first Alibaba import: it reads the environment at import time
        from alibabacloud_tea_openapi.client import Client
        from alibabacloud_tea_openapi.models import Config

        quiet_sdk_loggers()
        self.pool = ConnectionPool(self.endpoint, getattr(self.settings, "ca_bundle", None))
        client_class = pooled_client_class(self.pool)
        if client_class is None:
            log.warning(
                "openapi backend: this alibabacloud-tea-openapi version is not the shape sms-mcp pools connections "
                "for; using its own per-call connections (correct, but a new TLS handshake per call)"
            )
            client_class = Client
        credential = self._credential
        if credential is None:
            if find_credentials() is None:
                log.warning(
                    "openapi backend: no Alibaba Cloud credentials found (env, OIDC, ~/.aliyun/config.json, "
                    "~/.alibabacloud/credentials.ini); calls will fail until credentials are configured"
                )
            credential = build_credential_client()
        self._credential_client = credential
        config = Config(
            credential=credential,
            endpoint=self.endpoint.host,
            protocol=self.endpoint.protocol,
            region_id=self.settings.region_id,
            read_timeout=int(self.settings.read_timeout * 1000),
            connect_timeout=int(self.settings.connect_timeout * 1000),
            # The SDK appends this to its own "AlibabaCloud (...) Python/... TeaDSL/2" agent string.
            user_agent=f"{AGENT_USER_AGENT} sms-mcp/{__version__}",
            signature_algorithm=self._signature_algorithm,
            # retry_options stays unset: the SDK then never retries (reference §7.4). Sends must never be
            # retried; read retries are done below, where they can be bounded and jittered.
        )
        log.info("openapi backend: endpoint %s", self.endpoint.url)
        return client_class(config)

    async def warm(self, connections: int) -> None:
        """Open up to ``connections`` keep-alive TLS connections to the endpoint in advance, sending no request
        (see :meth:`ConnectionPool.warm`). Optional: the dispatcher overlaps it with a confirmation's checks."""
        if self._client is None:
            await self.start()
        pool = self.pool
        if pool is None or connections <= 0:
            return
        opened = await pool.warm(connections, self.settings.connect_timeout)
        log.debug("openapi backend: %d connection(s) opened ahead of the calls", opened)

    async def aclose(self) -> None:
        self._client = None
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.aclose()

    # -- calls ----------------------------------------------------------------------------------------------------

    async def call(self, action: str, params: WireParams) -> WireBody:
        body, _ = await self._call_with_retries(action, params)
        return body

    async def _call_with_retries(self, action: str, params: WireParams) -> tuple[WireBody, dict[str, str]]:
        if action in SEND_ACTIONS or self._read_attempts <= 1:
            # A send goes out exactly once: no retry machinery around it at all.
            return await self._call_once(action, params)
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_retryable_read_error),
            stop=stop_after_attempt(self._read_attempts) | _sleep_budget_spent,
            # Equal jitter on an exponential base: 0.1-0.2 s, then 0.2-0.4 s.
            wait=wait_exponential(multiplier=READ_BACKOFF_BASE / 2) + _wait_random_half_exponential,
            sleep=self._sleep,
            before_sleep=lambda state: log.info(
                "openapi %s: %s; retrying in %.2fs (attempt %d/%d)", action, state.outcome.exception(),
                state.upcoming_sleep, state.attempt_number + 1, self._read_attempts,
            ),
            reraise=True,
        ):
            with attempt:
                return await self._call_once(action, params)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True re-raises the last error

    async def _call_once(self, action: str, params: WireParams) -> tuple[WireBody, dict[str, str]]:
        if self._client is None:
            await self.start()
        from alibabacloud_tea_openapi.models import OpenApiRequest, Params
        from darabonba.runtime import RuntimeOptions

        form_names = FORM_BODY_PARAMS.get(action, frozenset())
        query = {k: str(v) for k, v in params.items() if k not in form_names and v is not None}
        form = {k: str(v) for k, v in params.items() if k in form_names and v is not None}
        request = OpenApiRequest(query=query, body=form or None)
        api = Params(
            action=action,
            version=API_VERSION,
            protocol=self.endpoint.protocol,
            method="POST",
            auth_type="AK",
            style="RPC",
            pathname="/",
            req_body_type="formData",
            body_type="json",
        )
        runtime = RuntimeOptions(
            read_timeout=int(self.settings.read_timeout * 1000),
            connect_timeout=int(self.settings.connect_timeout * 1000),
        )
        try:
            response = await self._client.call_api_async(api, request, runtime)
        except Exception as exc:
            raise translate_exception(exc) from None
        body = response.get("body") if isinstance(response, dict) else None
        if not isinstance(body, dict):
            raise OutcomeUnknownError("malformed_response", f"expected a JSON object, got {type(body).__name__}")
        headers = response.get("headers") or {}
        self.last_response_headers = {str(k).lower(): str(v) for k, v in dict(headers).items()}
        return body, self.last_response_headers

    # -- doctor ---------------------------------------------------------------------------------------------------

    async def diagnose(self) -> dict[str, Any]:
        """For ``sms-mcp doctor``: where credentials come from, the endpoint, one harmless read, the clock skew."""
        report: dict[str, Any] = {
            "backend": self.name,
            "endpoint": self.endpoint.url,
            "region_id": self.settings.region_id,
            "credentials": find_credentials() if self._credential is None else "explicit",
            "reachable": False,
            "warnings": [],
        }
        if self.endpoint.protocol == "HTTPS":
            report["tls"] = {"verify": True, "trusted": trusted_cas(getattr(self.settings, "ca_bundle", None))}
        try:
            await self.start()
            model = await self._credential_client.get_credential_async()
            report["credential_provider"] = getattr(model, "provider_name", None) or getattr(model, "type", None)
            report["access_key_id"] = mask_access_key_id(getattr(model, "access_key_id", "") or "")
        except Exception as exc:
            err = translate_exception(exc)
            report["error"] = {"code": getattr(err, "code", err.__class__.__name__), "message": str(err)}
            report["warnings"].append("credentials could not be loaded")
            return report

        started = time.time()
        try:
            body, headers = await self._call_once("QuerySmsSignList", {"PageIndex": "1", "PageSize": "1"})
        except GatewayError as err:
            meaning, step = explain_gateway_error(err)
            report["reachable"] = err.status > 0  # an HTTP answer, even an error, proves the endpoint answers
            report["error"] = {
                "code": err.code,
                "status": err.status,
                "message": err.message,
                "meaning": meaning,
                "next_step": step,
                "request_id": err.request_id,
            }
            return report
        except OutcomeUnknownError as err:
            report["error"] = {"code": err.reason, "message": str(err)}
            return report
        finished = time.time()
        report["reachable"] = True
        report["request_id"] = body.get("RequestId", "")
        report["code"] = body.get("Code", "")
        skew = _clock_skew(headers.get("date"), (started + finished) / 2)
        report["clock_skew_seconds"] = skew
        if skew is not None and abs(skew) > 60:
            report["warnings"].append(
                f"this machine's clock is {skew:+.0f} s off the server's; Alibaba rejects requests more than 15 "
                "minutes off (InvalidTimeStamp.Expired)"
            )
        return report


def is_retryable_read_error(err: BaseException) -> bool:
    """Whether a failed *read* is worth asking again (never consulted for a send)."""
    if isinstance(err, GatewayError):
        return err.retryable and err.status != 0
    if isinstance(err, OutcomeUnknownError):
        return err.reason != "malformed_response"  # the server answered; it would most likely answer the same
    return False


def _sleep_budget_spent(state: Any) -> bool:
    """tenacity stop: the next sleep would take the total sleeping between attempts past READ_BACKOFF_BUDGET."""
    return state.idle_for + (state.upcoming_sleep or 0.0) > READ_BACKOFF_BUDGET


def _wait_random_half_exponential(state: Any) -> float:
    import random

    return random.uniform(0, READ_BACKOFF_BASE / 2 * 2 ** (state.attempt_number - 1))


def _clock_skew(date_header: str | None, local_time: float) -> float | None:
    """Local clock minus the server's ``Date`` header (1 s resolution), or None without a usable header."""
    if not date_header:
        return None
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return round(local_time - server_time, 1)
