"""sms-mcp benchmark suite: ``python -m bench.run [--smoke] [--profile] [--out FILE]``."""
