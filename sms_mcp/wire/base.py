"""The wire layer's types and its one interface, ``Transport.call(action, params) -> body``: defined in the neutral
:mod:`sms_mcp.dysmsapi` (which the domain and the emulator import too) and re-exported here for the backends."""

from sms_mcp.dysmsapi import (
    ACTIONS,
    AGENT_USER_AGENT,
    API_VERSION,
    FORM_BODY_PARAMS,
    SEND_ACTIONS,
    GatewayError,
    OutcomeUnknownError,
    Transport,
    WireBody,
    WireParams,
)

__all__ = [
    "ACTIONS",
    "AGENT_USER_AGENT",
    "API_VERSION",
    "FORM_BODY_PARAMS",
    "SEND_ACTIONS",
    "GatewayError",
    "OutcomeUnknownError",
    "Transport",
    "WireBody",
    "WireParams",
]
