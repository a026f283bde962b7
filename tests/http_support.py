"""Real parts for the HTTP gateway tests: an authorization server's JWKS on loopback with keys the tests own,
token minting, ``sms-mcp serve --http`` replica processes, a balancer in front of them, and an MCP client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from sms_mcp.emulator.http import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorServer

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_WITHIN = 40.0
SMS_ARGS = {"phone_numbers": ["13800138000"], "sign_name": "速通科技", "template_code": "SMS_900000001",
            "template_param": {"code": "4821"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AuthorizationServer:
    """What the gateway needs of an identity provider: a JWKS document on loopback. The tests hold the private
    key and mint the tokens; ``rogue`` is a key the JWKS does not publish (bad signatures)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="test-key-1", alg="RS256", use="sig")
        self.jwks = {"keys": [jwk]}
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/"
        self.jwks_url = f"http://127.0.0.1:{self.port}/jwks.json"
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                outer.fetches += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> AuthorizationServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def token(self, audience: str, subject: str = "alice", scopes: str = "sms.read sms.send", *,
              client_id: str = "agent-app", issuer: str | None = None, expires_in: float = 600,
              key: Any = None, kid: str = "test-key-1", alg: str = "RS256", **extra: Any) -> str:
        now = int(time.time())
        claims = {"iss": issuer or self.issuer, "sub": subject, "aud": audience, "iat": now,
                  "exp": now + int(expires_in), "scope": scopes, "client_id": client_id, **extra}
        return jwt.encode(claims, key or self.key, algorithm=alg, headers={"kid": kid})

    def unsigned(self, audience: str, **kw: Any) -> str:
        """``alg: none``: claims that would pass, with no signature at all."""
        header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "test-key-1"}).encode())
        payload = json.loads(base64.urlsafe_b64decode(self.token(audience, **kw).split(".")[1] + "=="))
        return f"{header}.{b64url(json.dumps(payload).encode())}."

    def hmac_with_public_key(self, audience: str) -> str:
        """The algorithm-confusion attack: HS256 keyed with the RSA public key the JWKS publishes."""
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "test-key-1"}).encode())
        payload = json.loads(base64.urlsafe_b64decode(self.token(audience).split(".")[1] + "=="))
        signing_input = f"{header}.{b64url(json.dumps(payload).encode())}"
        secret = json.dumps(self.jwks["keys"][0]).encode()
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(signature)}"


def api_key_entry(name: str, key: str, scopes: str = "sms.read+sms.send") -> str:
    return f"{name}:{scopes}:{hashlib.sha256(key.encode()).hexdigest()}"


def gateway_env(tmp: Path, emu: EmulatorServer | None, auth: AuthorizationServer | None = None,
                **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMS_MCP_", "ALIBABA_CLOUD_"))}
    env.update(HOME=str(tmp / "home"), SMS_MCP_DATA_DIR=str(tmp / "data"), SMS_MCP_LOG_LEVEL="INFO",
               SMS_MCP_REQUEST_STATE_KEYS="k" * 40)
    if emu is not None:
        env.update(SMS_MCP_BACKEND="openapi", SMS_MCP_ENDPOINT=emu.url, ALIBABA_CLOUD_ACCESS_KEY_ID=DEMO_ACCESS_KEY_ID,
                   ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEMO_ACCESS_KEY_SECRET)
    else:
        env["SMS_MCP_BACKEND"] = "sandbox"
    if auth is not None:
        env.update(SMS_MCP_AUTH_ISSUER=auth.issuer, SMS_MCP_AUTH_JWKS_URL=auth.jwks_url)
    env.update(extra)
    return env


class Gateway:
    """A real ``python -m sms_mcp serve --http`` process on a loopback port."""

    def __init__(self, tmp: Path, env: dict[str, str], *, port: int | None = None, name: str = "gw",
                 args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/mcp"
        self.stderr_path = tmp / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sms_mcp", "serve", "--http", "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=REPO_ROOT, env=env)

    def wait_ready(self) -> Gateway:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}: {self.stderr()[-2000:]}")
            status, _, _ = http_get(f"{self.base}/readyz")
            if status == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"gateway not ready: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def stop(self, sig: int = signal.SIGTERM, within: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(*gateways: Gateway) -> Iterator[tuple[Gateway, ...]]:
    try:
        for gw in gateways:
            gw.wait_ready()
        yield gateways
    finally:
        for gw in gateways:
            gw.stop()


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return http_request("GET", url, None, headers)


def http_request(method: str, url: str, body: Any, headers: dict[str, str] | None = None,
                 ) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, b""


def modern_call(url: str, tool: str, arguments: dict[str, Any], token: str | None,
                extra_headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One raw 2026-07-28 ``tools/call`` POST (what a per-request client sends)."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": tool}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    headers.update(extra_headers or {})
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                                        "io.modelcontextprotocol/clientCapabilities": {}}}}
    status, response_headers, raw = http_request("POST", url, body, headers)
    with contextlib.suppress(ValueError):
        return status, response_headers, json.loads(raw)
    return status, response_headers, raw


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None, mode: str = "auto", **kw: Any) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **kw) as client:  # type: ignore[arg-type]
            yield client


class Balancer:
    """A loopback HTTP balancer in front of replicas, in a thread, streaming responses through.

    ``policy="round_robin"``: every request to the next replica (no affinity at all).
    ``policy="session_tag"``: a request whose ``Mcp-Session-Id`` starts with ``<replica id>.`` goes to that
    replica, any other request round-robin: what the README's nginx ``map`` does."""

    def __init__(self, backends: dict[str, str], policy: str = "round_robin") -> None:
        self.backends = backends
        self.policy = policy
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log: list[tuple[str, str, int]] = []  # (rpc method header, replica, status)
        self._turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def pick(self, headers: dict[str, str]) -> str:
        session = headers.get("mcp-session-id", "")
        if self.policy == "session_tag" and "." in session and session.split(".", 1)[0] in self.backends:
            return session.split(".", 1)[0]
        names = sorted(self.backends)
        return names[next(self._turn) % len(names)]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        replica = self.pick(headers)
        target = self.backends[replica] + scope["path"]
        forward = {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")}
        async with httpx2.AsyncClient(timeout=120) as http:
            request = http.build_request(scope["method"], target, headers=forward, content=body)
            response = await http.send(request, stream=True)
            try:
                self.log.append((headers.get("mcp-method", "legacy"), replica, response.status_code))
                out_headers = [(k.encode(), v.encode()) for k, v in response.headers.items()
                               if k.lower() not in ("content-length", "transfer-encoding", "connection")]
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": out_headers})
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await response.aclose()

    def __enter__(self) -> Balancer:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                lifespan="on", interface="asgi3")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

        def run() -> None:
            asyncio.run(self._server.serve())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
