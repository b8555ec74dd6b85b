"""Typed errors of the relay layer (all under :class:`RelayError`).

The forwarding engine never raises on bad *packets* (those are counted drops); these are for bad
*requests* from the transport (a refused publish, a full stream) and for the receiver-report codec.
A raised error leaves the engine's state unchanged.
"""

from __future__ import annotations

from ..errors import RelayError
from ..protocol.errors import ReportError

__all__ = [
    "RelayError",
    "ReportError",
    "PublishNotAuthorizedError",
    "SubscriberLimitError",
    "InvalidMDUError",
    "ConfigError",
    "InvalidStreamError",
]


class PublishNotAuthorizedError(RelayError):
    """The ``authorize_publish`` hook refused this link as a publisher of the stream."""


class SubscriberLimitError(RelayError):
    """The stream already has ``EngineConfig.max_subscribers_per_stream`` subscribers."""


class InvalidMDUError(RelayError):
    """A subscriber's link MDU leaves no room for a fragment header and one byte of payload."""


class ConfigError(RelayError):
    """An ``EngineConfig`` limit is out of range (non-positive, or inconsistent with another)."""


class InvalidStreamError(RelayError):
    """A stream id that is not a u64, so no fragment could ever name it."""
