"""A raw JSON-RPC client for MCP servers over stdio: spawn, handshake, requests, memory.

Deliberately not ``mcp.Client``: the measurements must not include the client SDK's own start-up or task
machinery, only the server process and the pipe. Lines are read with a deadline, so a server that hangs fails
the benchmark instead of stalling it.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = "2025-11-25"


class ServerFailed(RuntimeError):
    """The server died, answered with an error, or did not answer in time."""


class StdioServer:
    """One server process. ``start()`` spawns it and returns the seconds until ``tools/list`` was answered."""

    def __init__(self, argv: list[str], env: dict[str, str], *, timeout: float = 30.0) -> None:
        self.argv = argv
        self.env = env
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.tools: list[dict[str, Any]] = []
        self._buf = b""
        self._next_id = 0
        self._selector: selectors.BaseSelector | None = None
        # stderr goes to a file: a full pipe would block a chatty server, and its tail explains a failure.
        self._stderr = tempfile.TemporaryFile()

    # -- protocol ---------------------------------------------------------------------------------------------
    def start(self) -> float:
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=self.env)
        assert self.proc.stdout is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout.fileno(), selectors.EVENT_READ)
        # All three messages at once, as a host does; the server answers in order.
        self._send({"jsonrpc": "2.0", "id": self._id(), "method": "initialize", "params": {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "sms-mcp-bench", "version": "1"}}})
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        list_id = self._id()
        self._send({"jsonrpc": "2.0", "id": list_id, "method": "tools/list", "params": {}})
        answer = self._wait_for(list_id)
        elapsed = time.perf_counter() - started
        self.tools = answer["result"]["tools"]
        return elapsed

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its ``result``."""
        request_id = self._id()
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return self._wait_for(request_id)["result"]

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.request("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise ServerFailed(f"{name} failed: {json.dumps(result)[:500]}")
        return result

    # -- memory -----------------------------------------------------------------------------------------------
    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the server process, from /proc (Linux)."""
        assert self.proc is not None
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values

    # -- lifecycle --------------------------------------------------------------------------------------------
    def close(self) -> int | None:
        """Close stdin (the polite shutdown every host uses), wait, and kill only if it will not go."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        try:
            if proc.stdin:
                proc.stdin.close()
            return proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            return proc.wait(timeout=10)
        finally:
            if proc.stdout:
                proc.stdout.close()
            self._stderr.close()

    def __enter__(self) -> StdioServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message, ensure_ascii=False) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ServerFailed(f"server exited early: {self._stderr_tail()}") from None

    def _wait_for(self, request_id: int) -> dict[str, Any]:
        """Read lines until the response to ``request_id`` (notifications and other ids are skipped)."""
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self._readline(deadline))
            if message.get("id") != request_id:
                continue
            if "error" in message:
                raise ServerFailed(f"request {request_id} failed: {message['error']}")
            return message

    def _readline(self, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None and self._selector is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise ServerFailed(f"no answer within {self.timeout:g}s: {self._stderr_tail()}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise ServerFailed(f"server closed stdout: {self._stderr_tail()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def stderr_text(self) -> str:
        """Everything the server wrote to stderr so far (its logs; ``-X importtime`` output)."""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return "(stderr unavailable)"

    def _stderr_tail(self) -> str:
        return self.stderr_text()[-1500:]
