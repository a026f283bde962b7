"""The HTTP skin: ``sms-mcp serve --http`` (Streamable HTTP, both protocol eras), OAuth 2.1 resource server,
health and metrics routes, graceful shutdown. The MCP tools themselves are ``sms_mcp.server``'s, shared with
stdio."""
