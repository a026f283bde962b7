"""``sms-mcp emulator``: the Dysmsapi emulator served over HTTP(S), verifying signatures the way Alibaba does.

The same :class:`~sms_mcp.emulator.core.EmulatorCore` as the sandbox backend, behind a Starlette app served by
uvicorn, so any Alibaba client (the official SDKs, the aliyun CLI, sms-mcp's own ``openapi`` backend) can be
pointed at ``http://127.0.0.1:PORT`` and exercised end to end without an account or a real SMS. With ``--tls``
it serves HTTPS with a certificate from a test CA of its own (:func:`ensure_tls_files`), the way the real
endpoint is reached: clients trust that CA's file (``SMS_MCP_CA_BUNDLE``) and verify as they would in production.

Request handling follows the gateway: signature (V3 ``ACS3-HMAC-SHA256`` or V2 HMAC-SHA1, see
:mod:`sms_mcp.emulator.signing`) -> known action -> the core. Gateway failures are HTTP 4xx/5xx with
``{RequestId, HostId, Code, Message, Recommend}``; business errors stay HTTP 200 bodies.

For reliability tests, faults can be injected per run (``--fault``) or live through a loopback-only admin API:

* ``GET /_emulator/faults`` / ``POST /_emulator/faults`` (JSON, one fault or ``{"faults": [...], "replace": bool}``)
  / ``DELETE /_emulator/faults``;
* ``GET /_emulator/messages``: every message the core accepted.

Fault kinds: ``delay_before`` / ``delay_after`` (``seconds`` before or after the core runs), ``error_500``
(``InternalError``), ``error_503`` (``ServiceUnavailable``), ``throttle`` (``Throttling.User`` 400, with
``x-acs-retry-after`` when ``seconds`` > 0), ``malformed`` (the core runs, the body is cut-off JSON),
``drop_before`` (the connection is closed before the core sees the request) and ``drop_after`` (closed after the
core recorded it: the "did it send?" case). Each fault may target one ``action`` and a ``count`` (the next N
matching requests; omitted = until cleared). Faults apply only to requests that passed signature verification,
so a fault aimed at "the next SendSms" is never used up by a badly signed request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sms_mcp.dysmsapi import ACTIONS, GatewayError, mask_access_key_id
from sms_mcp.emulator.signing import IncomingRequest, RequestVerifier

log = logging.getLogger("sms_mcp.emulator")

#: Accepted when no ``--access-key-id/--access-key-secret`` pair is given. Not secret: documented in README.md.
DEMO_ACCESS_KEY_ID = "sms-mcp-demo-id"
DEMO_ACCESS_KEY_SECRET = "sms-mcp-demo-secret"

#: Alibaba's metadata allows only POST for these (reference §1).
POST_ONLY_ACTIONS = frozenset({"QuerySendStatistics", "QuerySmsSignList", "QuerySmsTemplateList"})

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost"})
ADMIN_PREFIX = "/_emulator/"


class Core(Protocol):
    """What the HTTP layer needs from ``EmulatorCore``."""

    def handle(self, action: str, params: Mapping[str, str]) -> dict[str, Any]: ...

    def messages(self) -> list[dict[str, Any]]: ...


# --------------------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------------------

FAULT_KINDS = (
    "delay_before",
    "delay_after",
    "error_500",
    "error_503",
    "throttle",
    "malformed",
    "drop_before",
    "drop_after",
)


@dataclass
class Fault:
    kind: str
    #: Only requests for this action (None: every action).
    action: str | None = None
    #: How many more matching requests this fault applies to (None: until cleared).
    count: int | None = None
    #: Delay for ``delay_*``; ``x-acs-retry-after`` (as ms) for ``throttle``.
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        unknown = set(data) - {"kind", "action", "count", "seconds"}
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        count = data.get("count")
        return cls(
            kind=str(data.get("kind", "")),
            action=data.get("action") or None,
            count=int(count) if count is not None else None,
            seconds=float(data.get("seconds", 0.0)),
        )

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``kind[,action=SendSms][,count=N][,seconds=S]`` (the ``--fault`` flag)."""
        kind, *rest = [part.strip() for part in spec.split(",") if part.strip()] or [""]
        fields: dict[str, Any] = {"kind": kind}
        for part in rest:
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad fault option {part!r}: expected name=value")
            fields[name.strip()] = value.strip()
        return cls.from_dict(fields)


class FaultSet:
    """The active faults. Thread-safe: tests change it from their own thread while the server runs."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults)

    def add(self, fault: Fault | str, **kwargs: Any) -> Fault:
        if isinstance(fault, str):
            fault = Fault(fault, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def replace(self, faults: Iterable[Fault]) -> None:
        with self._lock:
            self._faults = list(faults)

    def clear(self) -> None:
        self.replace(())

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take(self, action: str) -> dict[str, Fault]:
        """The faults that apply to this request (first of each kind), consuming one use of each."""
        chosen: dict[str, Fault] = {}
        with self._lock:
            for fault in self._faults:
                if fault.action not in (None, action) or fault.kind in chosen:
                    continue
                chosen[fault.kind] = Fault(fault.kind, fault.action, 1, fault.seconds)
                if fault.count is not None:
                    fault.count -= 1
            self._faults = [f for f in self._faults if f.count is None or f.count > 0]
        return chosen


# --------------------------------------------------------------------------------------------------------------
# The ASGI app
# --------------------------------------------------------------------------------------------------------------


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _recommend(code: str, request_id: str) -> str:
    return f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi&requestId={request_id}"


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class EmulatorApp:
    """ASGI app: the Dysmsapi RPC endpoint at ``/`` plus the admin API under ``/_emulator/``."""

    def __init__(
        self,
        core: Core,
        keys: Mapping[str, str] | None = None,
        faults: FaultSet | Iterable[Fault] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.keys = dict(keys) if keys else {DEMO_ACCESS_KEY_ID: DEMO_ACCESS_KEY_SECRET}
        self.faults = faults if isinstance(faults, FaultSet) else FaultSet(faults or ())
        self.verifier = RequestVerifier(self.keys, clock=clock)
        #: Set by whoever runs the app with uvicorn; lets ``drop_*`` faults close the client's connection.
        self.server: Any = None
        self._admin = self._build_admin()

    # -- ASGI entry -------------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"].startswith(ADMIN_PREFIX):
            await self._admin(scope, receive, send)
            return
        await self._api(scope, receive, send)

    @staticmethod
    async def _lifespan(receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- Dysmsapi ---------------------------------------------------------------------------------------------

    async def _api(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        from starlette.requests import Request

        request = Request(scope, receive)
        body = await request.body()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = next((v for k, v in headers if k.lower() == "host"), "")
        request_id = new_request_id()
        try:
            raw_query = scope.get("query_string", b"").decode("utf-8")
        except UnicodeDecodeError:
            raw_query = scope.get("query_string", b"").decode("latin-1")
        incoming = IncomingRequest(scope["method"], raw_query, headers, body, scope["path"])

        try:
            if scope["path"] != "/":
                raise GatewayError(
                    404, "InvalidApi.NotFound", "Specified api is not found, please check your url and method."
                )
            try:
                verified = self.verifier.verify(incoming)
            except UnicodeDecodeError:
                raise GatewayError(400, "InvalidParameter.Format", "The request is not valid UTF-8.") from None
            action = verified.action
            if action not in ACTIONS:
                raise GatewayError(
                    404, "InvalidApi.NotFound", "Specified api is not found, please check your url and method."
                )
            if scope["method"] != "POST" and action in POST_ONLY_ACTIONS:
                raise GatewayError(400, "UnsupportedHTTPMethod", f"{action} only supports POST.")
        except GatewayError as err:
            log.info("emulator %s -> HTTP %s %s", scope["method"], err.status, err.code)
            await self._send_error(send, err, request_id, host)
            return

        faults = self.faults.take(action)
        if "delay_before" in faults:
            await asyncio.sleep(faults["delay_before"].seconds)
        if "drop_before" in faults:
            log.info("emulator %s: fault drop_before", action)
            await self._drop(scope, send)
            return
        for kind, status, code, message in (
            (
                "error_500",
                500,
                "InternalError",
                "The request processing has failed due to some unknown error, exception or failure.",
            ),
            (
                "error_503",
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            ),
            ("throttle", 400, "Throttling.User", "Request was denied due to user flow control."),
        ):
            if kind in faults:
                log.info("emulator %s: fault %s", action, kind)
                extra = {}
                if kind == "throttle" and faults[kind].seconds > 0:
                    extra["x-acs-retry-after"] = str(int(faults[kind].seconds * 1000))
                await self._send_error(send, GatewayError(status, code, message), request_id, host, extra)
                return

        try:
            result = await asyncio.to_thread(self.core.handle, action, verified.params)
        except GatewayError as err:
            log.info("emulator %s -> HTTP %s %s", action, err.status, err.code)
            await self._send_error(send, err, request_id, host)
            return
        log.info("emulator %s -> %s", action, result.get("Code"))

        if "delay_after" in faults:
            await asyncio.sleep(faults["delay_after"].seconds)
        if "drop_after" in faults:
            log.info("emulator %s: fault drop_after", action)
            await self._drop(scope, send)
            return
        payload = _json_bytes(result)
        if "malformed" in faults:
            log.info("emulator %s: fault malformed", action)
            payload = payload[: max(1, len(payload) // 2)]
        await self._send(send, 200, payload)

    async def _send_error(
        self,
        send: Callable[..., Any],
        err: GatewayError,
        request_id: str,
        host: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        body = err.to_body()
        body["RequestId"] = body["RequestId"] or request_id
        body["HostId"] = body["HostId"] or host or "dysmsapi.aliyuncs.com"
        body["Recommend"] = body["Recommend"] or _recommend(err.code, body["RequestId"])
        await self._send(send, err.status, _json_bytes(body), extra_headers)

    @staticmethod
    async def _send(
        send: Callable[..., Any], status: int, payload: bytes, extra_headers: Mapping[str, str] | None = None
    ) -> None:
        headers = [
            (b"content-type", JSON_CONTENT_TYPE.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _drop(self, scope: dict[str, Any], send: Callable[..., Any]) -> None:
        """Close the client's connection without an answer (or, outside uvicorn, cut the answer short)."""
        client = tuple(scope.get("client") or ())
        state = getattr(self.server, "server_state", None)
        for connection in list(getattr(state, "connections", ())):
            transport = getattr(connection, "transport", None)
            if transport is not None and tuple(getattr(connection, "client", None) or ()) == client:
                transport.abort()
                # Let uvicorn see the connection go (it then ignores this request's missing response).
                for _ in range(3):
                    await asyncio.sleep(0)
                return
        # Fallback for other ASGI servers: promise a body, never finish it; the server closes the connection.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", JSON_CONTENT_TYPE.encode()), (b"content-length", b"1000")],
            }
        )
        raise ConnectionAbortedError("fault: connection dropped")

    # -- admin ------------------------------------------------------------------------------------------------

    def _build_admin(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        def loopback(request: Request) -> bool:
            return bool(request.client) and request.client.host in LOOPBACK_HOSTS

        def forbidden() -> JSONResponse:
            return JSONResponse({"error": "the emulator admin API only answers loopback clients"}, status_code=403)

        async def faults(request: Request) -> JSONResponse:
            if not loopback(request):
                return forbidden()
            if request.method == "DELETE":
                self.faults.clear()
            elif request.method == "POST":
                try:
                    data = json.loads(await request.body() or b"{}")
                    if isinstance(data, dict) and "faults" in data:
                        new = [Fault.from_dict(item) for item in data["faults"]]
                        if data.get("replace", True):
                            self.faults.replace(new)
                        else:
                            for fault in new:
                                self.faults.add(fault)
                    elif isinstance(data, dict):
                        self.faults.add(Fault.from_dict(data))
                    else:
                        raise ValueError("expected a JSON object")
                except (ValueError, TypeError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"faults": self.faults.snapshot()})

        async def messages(request: Request) -> JSONResponse:
            if not loopback(request):
                return forbidden()
            found = await asyncio.to_thread(self.core.messages)
            return JSONResponse({"messages": found})

        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        return Starlette(
            routes=[
                Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
                Route("/_emulator/messages", messages, methods=["GET"]),
                Route("/_emulator/health", health, methods=["GET"]),
            ]
        )


def build_app(
    core: Core,
    keys: Mapping[str, str] | None = None,
    faults: FaultSet | Iterable[Fault] | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> EmulatorApp:
    """The ASGI app for ``core``. ``keys`` maps AccessKey id -> secret (default: the demo pair)."""
    return EmulatorApp(core, keys, faults, clock=clock)


# --------------------------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------------------------


#: File names of the emulator's test CA and server certificate, inside its data directory (``--tls``).
TLS_DIR_NAME = "tls"
CA_CERT_NAME = "emulator-ca.pem"
CA_KEY_NAME = "emulator-ca-key.pem"
SERVER_PEM_NAME = "emulator-server.pem"


@dataclass(frozen=True)
class TlsFiles:
    """A test CA (trusted by clients through ``SMS_MCP_CA_BUNDLE``) and a server certificate it issued."""

    ca_file: Path
    server_pem: Path  # private key + certificate chain, for uvicorn's ssl_certfile


def _hosts_for(host: str) -> list[str]:
    names = ["127.0.0.1", "localhost", "::1"]
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    return names


def ensure_tls_files(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """The emulator's test CA in ``directory`` (created once, then reused, so a client configured with its CA file
    keeps working across restarts) and a fresh server certificate for ``host`` from it.

    The CA exists only on this machine and signs only the emulator's own certificate; its key is written
    owner-readable only. Uses trustme (cryptography underneath): nothing here is hand-rolled X.509.
    """
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca_file, ca_key = directory / CA_CERT_NAME, directory / CA_KEY_NAME
    if ca_file.is_file() and ca_key.is_file():
        ca = trustme.CA.from_pem(ca_file.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="sms-mcp emulator test CA")
        _write_private(ca_key, ca.private_key_pem.bytes())
        ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert(*_hosts_for(host), common_name="sms-mcp emulator")
    server_pem = directory / SERVER_PEM_NAME
    _write_private(server_pem, leaf.private_key_and_cert_chain_pem.bytes())
    return TlsFiles(ca_file, server_pem)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only (a private key), replacing any previous file atomically."""
    import os

    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _bind(host: str, port: int) -> socket.socket:
    """Bind and listen before announcing the port, so nobody can connect too early."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _uvicorn_server(app: EmulatorApp, tls: TlsFiles | None = None) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        # No uvicorn logging config: its access log goes to stdout, which must carry only the "listening" line.
        log_config=None,
        access_log=False,
        lifespan="off",
        http="h11",
        loop="asyncio",
        timeout_graceful_shutdown=2,
        ssl_certfile=str(tls.server_pem) if tls else None,
    )
    server = uvicorn.Server(config)
    app.server = server
    return server


class EmulatorServer:
    """The HTTP emulator in a background thread, for tests and benchmarks.

    ::

        with EmulatorServer() as emu:
            emu.endpoint      # "127.0.0.1:PORT" (for the SDK's Config.endpoint)
            emu.url           # "http://127.0.0.1:PORT" (for SMS_MCP_ENDPOINT)
            emu.faults.add("drop_after", action="SendSms", count=1)
            emu.core.messages()

    With ``tls=True`` it serves HTTPS with a certificate from a test CA (``emu.ca_file``, in ``tls_dir`` or a
    temporary directory removed on stop); ``emu.url`` is then ``https://127.0.0.1:PORT``.
    """

    def __init__(
        self,
        core: Core | None = None,
        *,
        keys: Mapping[str, str] | None = None,
        faults: Iterable[Fault] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        receipt_delay: float = 0.0,
        clock: Callable[[], float] = time.time,
        tls: bool = False,
        tls_dir: Path | None = None,
    ) -> None:
        self._owns_core = core is None
        if core is None:
            from sms_mcp.emulator.core import EmulatorCore

            core = EmulatorCore(None, receipt_delay=receipt_delay)
        self.core: Any = core
        self.app = build_app(core, keys, FaultSet(faults), clock=clock)
        self.faults = self.app.faults
        self.keys = self.app.keys
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.endpoint = ""
        self.port = 0
        self._tls = tls
        self._tls_dir = tls_dir
        self._tls_tmp: Any = None
        self.tls: TlsFiles | None = None
        self.ca_file: Path | None = None

    def start(self) -> EmulatorServer:
        if self._tls:
            directory = self._tls_dir
            if directory is None:
                import tempfile

                self._tls_tmp = tempfile.TemporaryDirectory(prefix="sms-mcp-emulator-tls-")
                directory = Path(self._tls_tmp.name)
            self.tls = ensure_tls_files(directory, self._host)
            self.ca_file = self.tls.ca_file
        self._sock = _bind(self._host, self._port)
        self.url = _url(self._sock, tls=self.tls is not None)
        self.endpoint = self.url.split("://", 1)[1]
        self.port = self._sock.getsockname()[1]
        self._server = _uvicorn_server(self.app, self.tls)
        started = threading.Event()

        def run() -> None:
            async def serve() -> None:
                task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
                while not self._server.started and not task.done():
                    await asyncio.sleep(0.005)
                started.set()
                await task

            try:
                asyncio.run(serve())
            except BaseException as exc:  # surfaced by start()/stop()
                self._error = exc
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name="sms-mcp-emulator", daemon=True)
        self._thread.start()
        if not started.wait(10) or not self._server.started:
            self.stop()
            raise RuntimeError(f"emulator did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self._owns_core and hasattr(self.core, "close"):
            self.core.close()
            self._owns_core = False
        if self._tls_tmp is not None:
            self._tls_tmp.cleanup()
            self._tls_tmp = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-mcp emulator",
        description="Serve the Dysmsapi emulator over HTTP or HTTPS (signature-verifying; no real SMS is ever sent).",
        epilog=f"Without --access-key-id the demo pair {DEMO_ACCESS_KEY_ID} / {DEMO_ACCESS_KEY_SECRET} is accepted. "
        "Admin API (loopback clients only): GET/POST/DELETE /_emulator/faults, GET /_emulator/messages.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep state in DIR/emulator.sqlite3 (default: in memory, lost on exit)",
    )
    parser.add_argument(
        "--access-key-id",
        action="append",
        default=[],
        metavar="ID",
        help="accepted AccessKey id (repeat together with --access-key-secret for several pairs)",
    )
    parser.add_argument(
        "--access-key-secret",
        action="append",
        default=[],
        metavar="SECRET",
        help="secret for the --access-key-id at the same position",
    )
    parser.add_argument(
        "--receipt-delay",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds until a delivery receipt appears (default 3)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault: KIND[,action=NAME][,count=N][,seconds=S]; KIND is one of " + ", ".join(FAULT_KINDS),
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a certificate from a test CA created on first use and kept as "
        f"DATA_DIR/{TLS_DIR_NAME}/{CA_CERT_NAME} (a temporary directory without --data-dir); point clients at it "
        "with SMS_MCP_CA_BUNDLE. Signatures are verified exactly as over HTTP",
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"with --tls: keep the test CA ({CA_CERT_NAME}) and the server certificate in DIR instead "
        f"(default DATA_DIR/{TLS_DIR_NAME})",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="stderr log level (default INFO)",
    )
    return parser


def _parse_keys(parser: argparse.ArgumentParser, ids: Sequence[str], secrets: Sequence[str]) -> dict[str, str]:
    if len(ids) != len(secrets):
        parser.error("--access-key-id and --access-key-secret must be given in pairs")
    if any(not i or not s for i, s in zip(ids, secrets, strict=True)):
        parser.error("AccessKey ids and secrets must not be empty")
    return dict(zip(ids, secrets, strict=True)) or {DEMO_ACCESS_KEY_ID: DEMO_ACCESS_KEY_SECRET}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sms-mcp emulator ARGS``. Prints ``emulator listening on URL`` once bound; exit 0 on TERM/INT."""
    parser = _parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        keys = _parse_keys(parser, args.access_key_id, args.access_key_secret)
        try:
            faults = [Fault.parse(spec) for spec in args.fault]
        except ValueError as exc:
            parser.error(f"--fault: {exc}")
        if args.receipt_delay < 0:
            parser.error("--receipt-delay must be >= 0")
        if args.tls_dir is not None and not args.tls:
            parser.error("--tls-dir needs --tls")
    except SystemExit as exc:
        return int(exc.code or 0)

    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from sms_mcp.emulator.core import EmulatorCore

    db_path: Path | None = None
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        db_path = args.data_dir / "emulator.sqlite3"
    core = EmulatorCore(db_path, receipt_delay=args.receipt_delay)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(core.close)
        tls: TlsFiles | None = None
        if args.tls:
            if args.tls_dir is not None:
                tls_dir = args.tls_dir
            elif args.data_dir is not None:
                tls_dir = args.data_dir / TLS_DIR_NAME
            else:
                import tempfile

                tls_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="sms-mcp-emulator-tls-")))
            try:
                tls = ensure_tls_files(tls_dir, args.host)
            except (OSError, ValueError) as exc:
                print(f"sms-mcp emulator: cannot prepare the TLS certificate in {tls_dir}: {exc}", file=sys.stderr)
                return 1
        try:
            sock = _bind(args.host, args.port)
        except OSError as exc:
            print(f"sms-mcp emulator: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        app = build_app(core, keys, faults)
        return asyncio.run(_serve(app, sock, tls))
    return 1  # pragma: no cover - the with block always returns


async def _serve(app: EmulatorApp, sock: socket.socket, tls: TlsFiles | None = None) -> int:
    server = _uvicorn_server(app, tls)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    # uvicorn installs its own handlers while serving and afterwards re-raises the signals it caught with the
    # handlers it found. Installing ours first means that re-raise is harmless and TERM/INT end in exit code 0.
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)

    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.005)
    if task.done():
        await task
        return 1
    print(f"emulator listening on {_url(sock, tls=tls is not None)}", flush=True)
    if tls is not None:
        log.info("HTTPS with the test CA %s (clients: SMS_MCP_CA_BUNDLE=%s)", tls.ca_file, tls.ca_file)
    log.info("accepted AccessKey ids: %s", ", ".join(sorted(mask_access_key_id(k) for k in app.keys)))
    await task
    return 0


if __name__ == "__main__":
    sys.exit(main())
