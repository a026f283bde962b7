"""Domain core: plans, tokens, ledger, policies, validation, rendering, normalisation. No MCP imports."""
