"""Parsing what members submit (commits, proposals, Welcomes) just far enough to sequence it.

Cheap checks before the expensive public validation: framing (a PublicMessage from a member;
PrivateMessage handshakes and external senders are refused, ARCHITECTURE "MLS"), the proposal types
relayed groups carry, and the Welcome's recipients. Each refusal is a typed
:class:`~ciris_av_plugin.relay.delivery_errors.DeliveryError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MLSError
from ..mls.framing import ContentType, FramedContent, MLSMessage, PrivateMessage, PublicMessage, SenderType
from ..mls.proposal_structs import Commit, Proposal
from ..mls.registries import ProposalType
from ..mls.welcome_structs import Welcome
from .delivery_errors import (
    DeliveryError,
    ExternalCommit,
    ExternalProposal,
    NotACommit,
    NotAProposal,
    PrivateHandshake,
    ProposalNotAllowed,
    WelcomeMismatch,
)

__all__ = ["ALLOWED_PROPOSAL_TYPES", "CommitHeader", "commit_header", "proposal_header", "welcome_refs"]

# Proposal types a member may send through the relay: its own Update, and Remove (a leaver's
# self-Remove). Adds go in commits so their KeyPackages are checked against the directory; PSK,
# ReInit and ExternalInit are refused in relayed groups (ARCHITECTURE "MLS"); GroupContextExtensions
# would let one member change the group's rules without a commit the admitter made.
ALLOWED_PROPOSAL_TYPES = frozenset({ProposalType.UPDATE, ProposalType.REMOVE})


@dataclass(frozen=True)
class CommitHeader:
    """What sequencing needs of a submitted handshake: its group, epoch and sender leaf."""

    group_id: bytes
    epoch: int
    sender_leaf: int


def member_handshake(
    message: bytes,
    content_type: ContentType,
    body_cls: type,
    what: str,
    wrong: type[DeliveryError],
    external: type[DeliveryError],
) -> FramedContent:
    """Parse a submitted ``what`` (a proposal or a commit), refusing what relayed groups forbid:
    ``wrong`` for anything else, :class:`PrivateHandshake` for a PrivateMessage, ``external`` for a
    sender that is not a member."""
    try:
        msg = MLSMessage.from_bytes(message)
    except MLSError as e:
        raise wrong(f"not an MLSMessage: {e}") from None
    if not isinstance(msg.body, PublicMessage):
        if isinstance(msg.body, PrivateMessage):
            raise PrivateHandshake("handshakes must be PublicMessage in relayed groups")
        raise wrong(f"{type(msg.body).__name__} is not a {what}")
    content = msg.body.content
    if content.content_type != content_type or not isinstance(content.body, body_cls):
        raise wrong(f"PublicMessage does not carry a {what}")
    if content.sender.sender_type != SenderType.MEMBER:
        raise external(f"{what} from a {content.sender.sender_type.name.lower()} sender")
    return content


def proposal_header(message: bytes) -> tuple[CommitHeader, Proposal]:
    """Parse a submitted proposal, refusing what relayed groups forbid."""
    content = member_handshake(
        message, ContentType.PROPOSAL, Proposal, "proposal", NotAProposal, ExternalProposal
    )
    if content.body.proposal_type not in ALLOWED_PROPOSAL_TYPES:
        raise ProposalNotAllowed(f"{content.body.proposal_type!r} proposals are not relayed")
    return CommitHeader(content.group_id, content.epoch, content.sender.index), content.body


def commit_header(message: bytes) -> CommitHeader:
    """Parse enough of a submitted handshake to sequence it, refusing what relayed groups forbid."""
    content = member_handshake(message, ContentType.COMMIT, Commit, "commit", NotACommit, ExternalCommit)
    return CommitHeader(content.group_id, content.epoch, content.sender.index)


def welcome_refs(message: bytes) -> list[bytes]:
    """The KeyPackageRefs a submitted Welcome is addressed to (its ``new_member`` entries)."""
    try:
        msg = MLSMessage.from_bytes(message)
    except MLSError as e:
        raise WelcomeMismatch(f"Welcome does not decode: {e}") from None
    if not isinstance(msg.body, Welcome):
        raise WelcomeMismatch(f"{type(msg.body).__name__} is not a Welcome")
    return [s.new_member for s in msg.body.secrets]
