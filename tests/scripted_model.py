"""A scripted model server on loopback, so real hosts (OpenClaw, Claude Code) run their own agent loop and MCP
client against sms-mcp with no LLM and no network.

It speaks the two wire APIs those hosts use, streaming or not:

* OpenAI-compatible ``POST /v1/chat/completions`` (OpenClaw's ``openai-completions`` provider);
* Anthropic-compatible ``POST /v1/messages`` (+ ``/v1/messages/count_tokens``) (Claude Code).

The script is a JSON list of steps. Step *n* answers a request whose conversation already holds *n* tool
results, so the host's retries, side requests and history replays cannot knock it out of step:

* ``{"tool": "list_signs", "arguments": {...}}`` calls the offered tool whose name is ``list_signs`` or ends in
  ``__list_signs`` (``sms__list_signs`` in OpenClaw, ``mcp__sms__list_signs`` in Claude Code). An argument value
  ``{"from_last_result": "confirm_token"}`` is replaced by that field of the latest tool result (found in its
  text, JSON-escaped or not): how the model "reads" the plan and confirms with its token. When the tool is not
  offered directly but ``tool_call`` is (OpenClaw's default Tool Search), the step goes through
  ``tool_call {"id": <tool>, "args": ...}``, the host's own catalog dispatch.
* ``{"text": "..."}`` ends the turn with that text.

A request that offers no tools (a title or summary side request) gets a short text. Every request and every
answer is appended to ``--log`` as one JSON line, so a test can see exactly what the host sent back (the tool
results the host's MCP client produced) and what was scripted. A scripted tool the host does not offer is
answered with text naming the problem, which makes the test fail visibly instead of hanging.

Run: ``python tests/scripted_model.py --script steps.json --log requests.jsonl``; prints
``scripted model listening on http://127.0.0.1:PORT`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL = "scripted-1"


# ------------------------------------------------------------------------------------------ conversation reading
def tool_results(api: str, body: dict[str, Any]) -> list[str]:
    """The text of every tool result in the request's conversation, oldest first."""
    found: list[str] = []
    for message in body.get("messages") or []:
        if api == "openai" and message.get("role") == "tool":
            found.append(_text(message.get("content")))
        elif api == "anthropic" and message.get("role") == "user" and isinstance(message.get("content"), list):
            for block in message["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    found.append(_text(block.get("content")))
    return found


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part.get("text", part.get("content")) if isinstance(part, dict) else part)
                         for part in content)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def offered_tools(api: str, body: dict[str, Any]) -> list[str]:
    names = []
    for entry in body.get("tools") or []:
        if api == "openai":
            names.append((entry.get("function") or {}).get("name") or entry.get("name") or "")
        else:
            names.append(entry.get("name") or "")
    return [n for n in names if n]


def field_from(text: str, name: str) -> str | None:
    """``"name": "value"`` in a tool result, whether the JSON is plain or escaped inside another string."""
    match = re.search(r'\\*"' + re.escape(name) + r'\\*"\s*:\s*\\*"([^"\\]+)', text)
    return match.group(1) if match else None


def fill(value: Any, last: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {"from_last_result"}:
            found = field_from(last, value["from_last_result"])
            return found if found is not None else f"<no {value['from_last_result']} in the last tool result>"
        return {k: fill(v, last) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, last) for v in value]
    return value


def decide(script: list[dict[str, Any]], api: str, body: dict[str, Any]) -> dict[str, Any]:
    """The next answer: ``{"text": ...}`` or ``{"tool": <offered name>, "arguments": {...}}``."""
    offered = offered_tools(api, body)
    if not offered:
        return {"text": "OK."}
    results = tool_results(api, body)
    if len(results) >= len(script):
        return {"text": "The script is finished."}
    step = script[len(results)]
    if "text" in step:
        return {"text": step["text"]}
    wanted = step["tool"]
    arguments = fill(step.get("arguments", {}), results[-1] if results else "")
    name = next((n for n in offered if n == wanted or n.endswith("__" + wanted)), None)
    if name is not None:
        return {"tool": name, "arguments": arguments}
    if "tool_call" in offered:  # OpenClaw's default Tool Search: catalog tools are called through tool_call
        return {"tool": "tool_call", "arguments": {"id": wanted, "args": arguments}}
    return {"text": f"SCRIPT ERROR: tool {wanted!r} is not offered (offered: {', '.join(offered)[:2000]})"}


# ------------------------------------------------------------------------------------------ wire formats
def openai_response(answer: dict[str, Any], stream: bool, n: int) -> tuple[str, list[str] | dict[str, Any]]:
    base = {"id": f"chatcmpl-{n}", "created": int(time.time()), "model": MODEL}
    if "tool" in answer:
        call = {"id": f"call_{n}", "type": "function",
                "function": {"name": answer["tool"], "arguments": json.dumps(answer["arguments"], ensure_ascii=False)}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": answer["text"]}
        finish = "stop"
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    if not stream:
        return "application/json", {**base, "object": "chat.completion", "usage": usage,
                                    "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    chunk = {**base, "object": "chat.completion.chunk"}
    delta: dict[str, Any] = {"role": "assistant"}
    if "tool" in answer:
        delta["tool_calls"] = [{"index": 0, **call}]
    else:
        delta["content"] = answer["text"]
    events = [
        {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        {**chunk, "choices": [], "usage": usage},
    ]
    return "text/event-stream", [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events] + [
        "data: [DONE]\n\n"]


def anthropic_response(answer: dict[str, Any], stream: bool, n: int) -> tuple[str, list[str] | dict[str, Any]]:
    if "tool" in answer:
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{n:06d}", "name": answer["tool"],
                                 "input": answer["arguments"]}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": answer["text"]}
        stop = "end_turn"
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message = {"id": f"msg_{n:06d}", "type": "message", "role": "assistant", "model": MODEL, "content": [block],
               "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not stream:
        return "application/json", message
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"], ensure_ascii=False)}
    else:
        start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    events = [
        ("message_start", {"type": "message_start",
                           "message": {**message, "content": [], "stop_reason": None}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return "text/event-stream", [f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
                                 for name, data in events]


# ------------------------------------------------------------------------------------------ the server
class Handler(BaseHTTPRequestHandler):
    server: ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stdout carries the one "listening" line; requests go to the JSON log

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, "application/json", json.dumps(
                {"object": "list", "data": [{"id": MODEL, "object": "model", "type": "model",
                                             "display_name": MODEL, "created_at": "2026-01-01T00:00:00Z"}]}).encode())
            return
        self._send(404, "application/json", b'{"error": {"type": "not_found", "message": "not found"}}')

    def do_HEAD(self) -> None:
        self._send(200, "text/plain", b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, "application/json", b'{"error": {"message": "bad json"}}')
            return
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/messages/count_tokens"):
            self._send(200, "application/json", b'{"input_tokens": 10}')
            return
        if path.endswith("/chat/completions"):
            api = "openai"
        elif path.endswith("/messages"):
            api = "anthropic"
        else:
            self._send(404, "application/json", b'{"error": {"type": "not_found", "message": "unknown path"}}')
            return
        answer = decide(self.server.script, api, body)
        n = self.server.next_id()
        stream = bool(body.get("stream"))
        build = openai_response if api == "openai" else anthropic_response
        content_type, payload = build(answer, stream, n)
        self.server.record({"n": n, "api": api, "path": path, "stream": stream, "tools": offered_tools(api, body),
                            "tool_results": tool_results(api, body), "answer": answer})
        if isinstance(payload, dict):
            self._send(200, content_type, json.dumps(payload, ensure_ascii=False).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in payload:
            self.wfile.write(event.encode())
            self.wfile.flush()
        self.close_connection = True


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: list[dict[str, Any]], log: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script = script
        self.log = log
        self._lock = threading.Lock()
        self._n = 0

    def next_id(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock, self.log.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    args = parser.parse_args(argv)
    server = ScriptedServer(json.loads(args.script.read_text(encoding="utf-8")), args.log)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"scripted model listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
