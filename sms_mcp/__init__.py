"""sms-mcp: an MCP server for Alibaba Cloud SMS (Dysmsapi 2017-05-25) with two-step, confirmed sends."""

__version__ = "0.1.0"
