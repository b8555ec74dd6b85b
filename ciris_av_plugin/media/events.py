"""Events the receiving media layer returns (dataclasses, one field docstring each, as aioquic)."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.media_wire import ForwardingHeader


@dataclass(frozen=True, slots=True)
class FrameDecrypted:
    """A frame authenticated and decrypted, released in frame_seq order per track."""

    header: ForwardingHeader
    """Its forwarding header (authenticated as SFrame AAD)."""
    payload: bytes
    """The plaintext media frame."""
    kid: int
    """SFrame KID it was sealed under."""
    epoch: int
    """MLS epoch whose key opened it."""
    ctr: int
    """SFrame counter."""
    sender_leaf: int
    """MLS leaf index from the KID (not an authenticated sender: RFC 9605 §7.2)."""
    decodable: bool = True
    """False for video after a late start or a lost frame until a keyframe, and for late frames."""


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A packet or frame was refused; ``reason`` is one of the ``frames.DROP_*`` constants."""

    reason: str
    """Why (also the key of the opener's drop counter)."""
    stream_id: int | None = None
    """Stream named by the fragment, when it could be read."""
    track_id: int | None = None
    """Track named by the fragment, when it could be read."""
    frame_seq: int | None = None
    """Frame sequence named by the fragment, when it could be read."""
    kid: int | None = None
    """KID named by the fragment, when it could be read."""
    detail: str = ""
    """Human-readable specifics for logs."""


@dataclass(frozen=True, slots=True)
class FrameHeld:
    """A whole frame whose KID names a future epoch was parked until its key is installed."""

    stream_id: int
    """Stream of the held frame."""
    track_id: int
    """Track of the held frame."""
    frame_seq: int
    """Sequence of the held frame."""
    kid: int
    """The KID whose epoch is not installed yet."""


FrameEvent = FrameDecrypted | FrameDropped | FrameHeld
