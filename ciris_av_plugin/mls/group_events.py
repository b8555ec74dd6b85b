"""What :meth:`Group.process <ciris_av_plugin.mls.group.Group.process>` returns: one small dataclass per outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ProposalReceived", "CommitProcessed", "ApplicationMessage", "GroupEvent"]


@dataclass
class ProposalReceived:
    """A valid proposal was cached for a later commit of this epoch."""

    ref: bytes
    """Its ProposalRef (§5.2), which a commit may name."""
    sender: int | None
    """Leaf index of a member sender; None for an external sender."""
    proposal_type: int
    """The ProposalType (add, remove, ...)."""
    removed: bytes | None = None
    """For a Remove: the credential identity it would remove (a leave when it equals the sender's)."""


@dataclass
class CommitProcessed:
    """A foreign commit was applied: the group is at a new epoch."""

    epoch: int
    """The new epoch."""
    committer: int
    """Leaf index of the member who committed."""
    added: dict[int, bytes] = field(default_factory=dict)
    """New leaf index -> credential identity."""
    removed: dict[int, bytes] = field(default_factory=dict)
    """Removed leaf index -> credential identity."""
    updated: list[int] = field(default_factory=list)
    """Leaves replaced by Update proposals."""
    self_removed: bool = False
    """This member was removed; the group is now inactive."""
    discarded_pending: bool = False
    """Our own pending commit for the same epoch lost and was discarded."""


@dataclass
class ApplicationMessage:
    """Application data from a member (always a PrivateMessage, §6)."""

    sender: int
    """Sender's leaf index."""
    data: bytes
    """The plaintext."""
    authenticated_data: bytes = b""
    """The sender's unencrypted but authenticated data."""


GroupEvent = ProposalReceived | CommitProcessed | ApplicationMessage
