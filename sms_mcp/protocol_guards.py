"""Guards on raw MCP requests: they run before the SDK validates or pre-parses a ``tools/call``.

The MCP skin (``server.py``) installs :class:`RefuseUnknownArguments` as server middleware. It holds three promises
the SDK alone does not:

* an argument a tool does not declare is refused, not silently dropped (``read_only: false`` cannot look as if it
  had an effect);
* a value that is not what the caller typed cannot change a call's meaning: the SDK "pre-parses" string
  arguments as JSON, so the *text* ``"null"`` given as ``confirm_token`` or ``out_id`` would arrive as ``None``
  and a confirmation would silently prepare a new plan. Such a text is refused;
* whatever comes back echoes the caller's input bounded (:data:`ECHO_LIMIT` characters, with a count), so a
  1 MB key or 20,000 unknown arguments cannot come back whole.

A malformed request (a ``name`` that is an object or a list, ``arguments`` that are not an object) is left to the
SDK's own parameter validation, which answers with a JSON-RPC ``invalid params`` error and no traceback. A line the
SDK cannot read as a JSON-RPC message at all (``params`` a list or a string) it drops without an answer, and the
client waits forever: :func:`answer_for_unreadable_request` gives the stdio loop the error to send instead.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mcp.types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    TextContent,
    jsonrpc_message_adapter,
)

#: Most characters of caller input echoed in one message.
ECHO_LIMIT = 300
#: Most characters of one tool error text (the domain's own messages are far shorter).
RESULT_TEXT_LIMIT = 4000


def bounded(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` as text, cut to ``limit`` characters with the full length said when cut."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters in all)"


def bounded_names(names: Iterable[object], limit: int = ECHO_LIMIT, each: int = 40) -> str:
    """A comma-separated list of names, each cut to ``each`` characters, the whole to about ``limit``, with
    "… and N more (M in all)" when cut."""
    items = [bounded(n, each) for n in names]
    shown: list[str] = []
    used = 0
    for item in items:
        if shown and used + len(item) + 2 > limit:
            break
        shown.append(item)
        used += len(item) + 2
    text = ", ".join(shown)
    if len(shown) < len(items):
        text += f" … and {len(items) - len(shown):,} more ({len(items):,} in all)"
    return text


def _accepts(annotation: Any, kind: type) -> bool:
    """The annotation accepts values of ``kind`` (through Annotated, Optional and unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts(typing.get_args(annotation)[0], kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, kind) for arg in typing.get_args(annotation))
    return annotation is kind


def nullable_text_arguments(fn: Callable[..., Any]) -> frozenset[str]:
    """Parameters declared ``str | None``: the ones where the text ``"null"`` would silently become None."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return frozenset(name for name in inspect.signature(fn).parameters
                     if name in hints and _accepts(hints[name], str) and _accepts(hints[name], type(None)))


def answer_for_unreadable_request(line: str) -> JSONRPCError | None:
    """The JSON-RPC error for a line that names a request (a JSON object with an ``id`` and a ``method``) but is not
    a valid JSON-RPC message; None for a readable message (the SDK answers it) and for a line with no request id to
    answer (garbage or a notification: JSON-RPC sends nothing back for those)."""
    try:
        jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None
    except ValueError:
        pass
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    request_id, method = data.get("id"), data.get("method")
    if isinstance(request_id, bool) or not isinstance(request_id, (str, int)) or not isinstance(method, str):
        return None
    if "params" in data and not isinstance(data["params"], dict):
        error = ErrorData(code=INVALID_PARAMS, message=f"Invalid params for {bounded(method, 60)}: params must be an "
                          "object")
    else:
        error = ErrorData(code=INVALID_REQUEST, message="Invalid request: not a JSON-RPC 2.0 request object")
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


def _is_json_null(value: str) -> bool:
    try:
        return json.loads(value) is None
    except (ValueError, RecursionError):
        return False


def _refusal(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def bound_result(result: Any) -> Any:
    """An error result whose text is longer than :data:`RESULT_TEXT_LIMIT` is cut (with the count)."""
    if isinstance(result, CallToolResult) and result.is_error:
        content = [TextContent(type="text", text=bounded(c.text, RESULT_TEXT_LIMIT))
                   if isinstance(c, TextContent) and len(c.text) > RESULT_TEXT_LIMIT else c for c in result.content]
        return result.model_copy(update={"content": content})
    return result


class RefuseUnknownArguments:
    """Arguments a tool does not declare are refused, not silently dropped: nothing the model adds (say,
    ``read_only: false``) can look as if it had an effect. Also refuses the text ``"null"`` where the SDK would
    turn it into None, and bounds every echo (see the module docstring)."""

    def __init__(self, allowed: Mapping[str, frozenset[str]],
                 nullable_text: Mapping[str, frozenset[str]] | None = None) -> None:
        self.allowed = dict(allowed)
        self.nullable_text = dict(nullable_text or {})

    @classmethod
    def for_tools(cls, tools: Iterable[Callable[..., Any]], hidden: Iterable[str] = ("ctx", "human")
                  ) -> RefuseUnknownArguments:
        """The guard for these tool functions (their public parameters are their arguments)."""
        hidden = frozenset(hidden)
        tools = list(tools)
        return cls({fn.__name__: frozenset(n for n in inspect.signature(fn).parameters if n not in hidden)
                    for fn in tools},
                   {fn.__name__: nullable_text_arguments(fn) - hidden for fn in tools})

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        params = ctx.params if isinstance(ctx.params, Mapping) else None
        if ctx.method != "tools/call" or params is None:
            return await call_next(ctx)
        name, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, Mapping):
            return await call_next(ctx)  # malformed: the SDK's params validation answers invalid params
        if name not in self.allowed:
            # The SDK's own answer (an error result), with the name echoed bounded instead of whole.
            return _refusal(f"Unknown tool: {bounded(name, 100)}. Tools: {', '.join(sorted(self.allowed))}.")
        refused = self._refuse(name, arguments)
        if refused is not None:
            return refused
        return bound_result(await call_next(ctx))

    def _refuse(self, name: str, arguments: Mapping[str, Any]) -> CallToolResult | None:
        unknown = sorted((str(k) for k in arguments if k not in self.allowed[name]), key=lambda k: (len(k), k))
        if unknown:
            return _refusal(
                f"[sms_mcp.UNKNOWN_ARGUMENT] {name} has no argument(s) {bounded_names(unknown)}; nothing was done. "
                f"Next step: use only {', '.join(sorted(self.allowed[name]))}. Policies (allow-list, read-only, "
                "limits) are server configuration and cannot be passed.")
        literal_null = sorted(k for k in self.nullable_text.get(name, ()) if isinstance(arguments.get(k), str)
                              and _is_json_null(arguments[k]))
        if literal_null:
            return _refusal(
                f"[sms_mcp.LITERAL_NULL] {name}: {', '.join(literal_null)} is the text \"null\", which is not a value "
                "(the server would read it as absent and change what the call means); nothing was done. Next step: "
                "leave the argument out to mean \"none\" (on a first send_sms call: omit confirm_token), or pass "
                "the real value.")
        return None
