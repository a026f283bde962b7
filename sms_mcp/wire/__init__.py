"""Wire layer: one interface, ``Transport.call(action, wire params) -> wire body``, three backends."""

from sms_mcp.wire.base import (
    ACTIONS,
    API_VERSION,
    SEND_ACTIONS,
    GatewayError,
    OutcomeUnknownError,
    Transport,
    WireBody,
    WireParams,
)

__all__ = [
    "ACTIONS",
    "API_VERSION",
    "SEND_ACTIONS",
    "GatewayError",
    "OutcomeUnknownError",
    "Transport",
    "WireBody",
    "WireParams",
]
