"""Typed errors of the transport layer (all :class:`~ciris_av_plugin.errors.TransportError`)."""

from ..errors import TransportError


class ControlError(TransportError):
    """A control request was refused; ``code`` is the machine-readable reason sent on the wire."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class LinkDown(TransportError):
    """The link to the relay is not (or no longer) established."""


class RelayUnreachable(TransportError):
    """No path to the relay destination, or the link could not be established in time."""


class PacketTooLarge(TransportError):
    """A media packet does not fit the link's MDU; RNS does not fragment link packets."""


class ResourceGuardUnavailable(TransportError):
    """The RNS internals the Resource advertisement guard relies on changed; see the message."""
