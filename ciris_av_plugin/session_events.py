"""What a :class:`~ciris_av_plugin.session.Session` tells the application: membership and epoch news."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Joined", "EpochChanged", "KeyframeNeeded", "Removed", "AdmissionFailed"]


@dataclass(frozen=True)
class Joined:
    """The Welcome was processed: this identity is a member at ``epoch``."""

    epoch: int
    """Epoch joined into."""
    leaf: int
    """Own leaf index."""


@dataclass(frozen=True)
class EpochChanged:
    """The group moved to ``epoch`` (own commit merged, or a member's commit processed)."""

    epoch: int
    """The new epoch."""
    own_commit: bool
    """This member committed it."""
    added: tuple[bytes, ...] = ()
    """Identities added by the commit."""
    removed: tuple[bytes, ...] = ()
    """Identities removed by the commit."""


@dataclass(frozen=True)
class KeyframeNeeded:
    """Send a keyframe on ``track_id`` now (a publisher's epoch change, or a member's request)."""

    track_id: int | None
    """Track (None: every video track)."""
    epoch: int
    """The sending epoch it is for."""


@dataclass(frozen=True)
class Removed:
    """This member was removed by the commit of ``epoch - 1``; its state is inactive."""

    epoch: int
    """Epoch from which it is out."""


@dataclass(frozen=True)
class AdmissionFailed:
    """A commit this member tried could not be made or was refused for good."""

    what: str
    """The work item (``admit``, ``proposals``, ``recover``, ``remove``, ``rekey``)."""
    identity: bytes | None
    """The identity concerned, if any."""
    code: str
    """The refusal code or error class."""
