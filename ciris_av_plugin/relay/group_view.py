"""The delivery service's seams to the keyless group: the view it sequences and the checkers it calls.

The service sees a stream's group only through :class:`GroupView`, :class:`CommitChecker` and
:class:`ProposalChecker`; the defaults (:func:`public_group_commit`, :func:`public_group_proposal`)
are the keyless :class:`~ciris_av_plugin.mls.PublicGroup`, so sequencing can also be tested with a
stand-in view. A commit is staged once: every public check and its effect come from one validation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..mls.commit_rules import StagedCommit
from ..mls.group_errors import UnsupportedMessageError
from ..mls.policy import credential_identity
from ..mls.public_group import PublicGroup
from ..mls.public_state import PublicState

__all__ = [
    "GroupView",
    "CommitEffect",
    "CommitChecker",
    "ProposalChecker",
    "public_group_commit",
    "public_group_proposal",
    "GroupLoader",
    "GroupInfoLoader",
]


@runtime_checkable
class GroupView(Protocol):
    """The public group state of one stream, as ``mls.PublicGroup`` will provide it."""

    @property
    def epoch(self) -> int: ...

    @property
    def members(self) -> Mapping[int, bytes]:
        """Leaf index -> credential identity (RNS identity hash) of every non-blank leaf."""
        ...

    def to_bytes(self) -> bytes: ...

    def ratchet_tree(self) -> bytes:
        """The public ratchet tree (``ratchet_tree`` extension body), served to joiners on request."""
        ...


@dataclass(frozen=True)
class CommitEffect:
    """What a publicly valid commit does, as the checker found it."""

    added: tuple[tuple[bytes, bytes], ...]
    """(KeyPackageRef, credential identity) of each Add, in commit order."""
    removed: tuple[bytes, ...]
    """Identities whose leaves the commit removes."""
    group_after: GroupView
    """The public group state after the commit (epoch + 1); the input view is left untouched."""
    by_value: tuple[int, ...] = ()
    """ProposalType of each proposal the commit carries by value (the committer's own, not one the
    relay holds); only admitters may commit those."""


class CommitChecker(Protocol):
    def __call__(self, group: GroupView, commit: bytes, now: float) -> CommitEffect:
        """Check ``commit`` against ``group`` with every public check; raise ``MLSError`` if invalid.

        ``now`` (wall-clock seconds) is for the lifetime checks of added KeyPackages.
        """
        ...


class ProposalChecker(Protocol):
    def __call__(self, group: GroupView, proposal: bytes, now: float) -> GroupView:
        """Check ``proposal``; return the group with it cached for this epoch (input untouched)."""
        ...


def public_group_commit(group: PublicGroup, commit: bytes, now: float) -> CommitEffect:
    """:class:`CommitChecker` on the keyless :class:`PublicGroup`: stage, never apply in place.

    One staging does every public check and yields both what the relay must verify (the Adds'
    KeyPackageRefs) and the next state, so heavy validation runs once per submission.
    """
    staged = group.validate(commit, now=now)
    if not isinstance(staged, StagedCommit):
        raise UnsupportedMessageError("not a commit")
    added = tuple(
        (kp.ref(group.suite), credential_identity(kp.leaf_node)) for _, kp in sorted(staged.added.items())
    )
    after = PublicGroup(
        PublicState(group.suite, staged.group_context, staged.tree, staged.interim_transcript_hash), group.policy
    )
    by_value = tuple(int(rp.proposal.proposal_type) for rp in staged.proposals if rp.ref is None)
    return CommitEffect(added, tuple(staged.removed.values()), after, by_value)


def public_group_proposal(group: PublicGroup, proposal: bytes, now: float) -> PublicGroup:
    """:class:`ProposalChecker` on :class:`PublicGroup`: a copy that has validated and cached it."""
    after = PublicGroup.from_bytes(group.to_bytes())
    after.process(proposal, now=now)
    return after


GroupLoader = Callable[[bytes], GroupView]
"""Rebuild a :class:`GroupView` from :meth:`GroupView.to_bytes` (``PublicGroup.from_bytes``)."""

GroupInfoLoader = Callable[[bytes], GroupView]
"""Build a :class:`GroupView` from an MLSMessage GroupInfo with its ratchet tree
(``PublicGroup.from_group_info``)."""
