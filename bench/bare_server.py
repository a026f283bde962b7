"""The baseline for start-up and memory: a bare ``MCPServer`` with one tool, served over stdio.

Nothing else is imported, so the figures of ``sms-mcp serve`` divided by this one's are the cost sms-mcp adds on
top of the MCP SDK itself (its own modules, the domain, SQLite, phonenumbers, the sandbox seed).
"""

from mcp.server import MCPServer

server = MCPServer("bench-bare")


@server.tool()
def echo(text: str = "") -> str:
    """Return the text unchanged."""
    return text


if __name__ == "__main__":
    server.run()
