"""The Dysmsapi emulator: an in-process implementation of the service over SQLite (see :mod:`.core`).

``sms-mcp emulator`` serves it over HTTP (:mod:`.http`); the sandbox backend calls it directly.
"""

from sms_mcp.emulator.core import EmulatorCore

__all__ = ["EmulatorCore"]
