"""What the delivery service tells members and joiners: events, and :class:`Notify` to address them.

The transport puts each :class:`Notify` on the recipient's long-poll queue as
``{"kind": event.KIND, "data": <the event's fields>}``. ``KIND`` is the event's stable wire name
(``protocol/control.py``), not its class name, so renaming a class does not change the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..protocol import control

__all__ = [
    "JoinRequested",
    "WelcomeReady",
    "CommitAccepted",
    "ProposalReceived",
    "RecoveryRequested",
    "WelcomeExpired",
    "MemberUnreachable",
    "DeliveryEvent",
    "Notify",
]


@dataclass(frozen=True)
class JoinRequested:
    """To the admitting member: an identity asks to join; fetch its KeyPackage and commit an Add."""

    KIND: ClassVar[str] = control.EVENT_JOIN_REQUESTED

    stream_id: int
    """Stream asked for."""
    identity: bytes
    """RNS identity hash of the joiner."""


@dataclass(frozen=True)
class WelcomeReady:
    """To a joiner: its Welcome is waiting (fetch it with ``fetch_welcome``)."""

    KIND: ClassVar[str] = control.EVENT_WELCOME_READY

    stream_id: int
    """Stream it was added to."""
    epoch: int
    """Epoch the Welcome admits into."""


@dataclass(frozen=True)
class CommitAccepted:
    """To members: the accepted commit of ``epoch``, to process in order."""

    KIND: ClassVar[str] = control.EVENT_COMMIT_ACCEPTED

    stream_id: int
    """Stream of the commit."""
    epoch: int
    """Epoch the commit was made in."""
    message: bytes
    """The commit MLSMessage."""


@dataclass(frozen=True)
class ProposalReceived:
    """To members: a proposal of the current epoch, for the next committer to include."""

    KIND: ClassVar[str] = control.EVENT_PROPOSAL_RECEIVED

    stream_id: int
    """Stream of the proposal."""
    epoch: int
    """Epoch it belongs to."""
    message: bytes
    """The proposal MLSMessage."""
    commit_requested: bool = False
    """Set on the admitting member's copy: it is the one to commit the pending proposals
    (the committer-of-last-resort rule picks it when the creator is gone)."""


@dataclass(frozen=True)
class RecoveryRequested:
    """To the admitting member: a member could not process an accepted commit; remove it and re-add it
    with a fresh KeyPackage in one commit (DAVE's recovery). Its KeyPackages are now fetchable."""

    KIND: ClassVar[str] = control.EVENT_RECOVERY_REQUESTED

    stream_id: int
    """Stream of the failed member."""
    identity: bytes
    """The member to remove and re-add."""
    epoch: int
    """Epoch of the commit it failed to process."""


@dataclass(frozen=True)
class WelcomeExpired:
    """To the admitting member: a joiner never fetched its Welcome; its leaf is a ghost to remove."""

    KIND: ClassVar[str] = control.EVENT_WELCOME_EXPIRED

    stream_id: int
    """Stream of the ghost leaf."""
    joiner: bytes
    """Identity whose leaf should be removed."""
    epoch: int
    """Epoch the Welcome was for."""


@dataclass(frozen=True)
class MemberUnreachable:
    """To the admitting member: ``identity`` has had no link to the relay for longer than the
    configured time; its leaf is a ghost to remove (a process killed without leaving)."""

    KIND: ClassVar[str] = control.EVENT_MEMBER_UNREACHABLE

    stream_id: int
    """Stream of the ghost leaf."""
    identity: bytes
    """Identity whose leaf should be removed."""
    silent_s: float
    """Seconds since the relay last heard from it."""


DeliveryEvent = (
    JoinRequested | WelcomeReady | CommitAccepted | ProposalReceived | RecoveryRequested | WelcomeExpired
    | MemberUnreachable
)


@dataclass(frozen=True)
class Notify:
    """Deliver ``event`` to every link of ``recipient`` (through its long-poll events queue)."""

    recipient: bytes
    """RNS identity hash."""
    event: DeliveryEvent
    """What to tell it."""
