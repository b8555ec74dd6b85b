"""Typed errors of group processing: one type per failure, so callers (the relay's sequencer,
the session) can act on each. Raising one leaves the group state unchanged.
"""

from __future__ import annotations

import logging

from .errors import MLSError

log = logging.getLogger(__name__)


class GroupError(MLSError):
    """Root of the group-state-machine errors; the state is unchanged when one is raised."""


class WrongGroupError(GroupError):
    """The message names another group id."""


class EpochError(GroupError):
    """The message is not for the group's current epoch."""

    def __init__(self, message_epoch: int, group_epoch: int) -> None:
        super().__init__(f"message for epoch {message_epoch}, group is at epoch {group_epoch}")
        self.message_epoch = message_epoch
        self.group_epoch = group_epoch


class FutureEpochError(EpochError):
    """A message for a later epoch: the caller may hold it until the commit that leads there."""


class StaleEpochError(EpochError):
    """A message for an earlier epoch: its keys are deleted (§9.2); drop it."""


class UnknownSenderError(GroupError):
    """The sender is a blank or out-of-range leaf, or an external sender the group does not list."""


class InvalidSignatureError(GroupError):
    """A FramedContent, GroupInfo or LeafNode signature does not verify."""


class DecryptionError(GroupError):
    """A PrivateMessage that does not decrypt or authenticate with this epoch's keys (§6.3)."""


class WrongMembershipTag(GroupError):
    """A member's PublicMessage carries a membership tag that does not verify (§6.2)."""


class WrongConfirmationTag(GroupError):
    """A commit's or GroupInfo's confirmation tag differs from the key schedule's (§6.1, §8)."""


class InvalidProposalError(GroupError):
    """A proposal that is invalid on its own (§12.1)."""


class InvalidKeyPackageError(InvalidProposalError):
    """A KeyPackage failing §10.1: suite, version, signature, lifetime, capabilities, keys."""


class ProposalLimitError(InvalidProposalError):
    """This epoch already holds :data:`MAX_PROPOSALS_PER_EPOCH` proposals; commit them first."""


class InvalidCommitError(GroupError):
    """A commit whose proposal list (§12.2) or shape (§12.4) is invalid."""


class UnknownProposalError(InvalidCommitError):
    """A commit references a proposal this epoch never saw (§12.4)."""


class DuplicateMemberError(InvalidCommitError):
    """§12.2 same-client rule: one leaf per credential identity."""


class MissingPathError(InvalidCommitError):
    """The commit needs an UpdatePath (§12.4) and has none."""


class InvalidPathError(InvalidCommitError):
    """An UpdatePath that fails §12.4.2: leaf, keys, parent hash, ciphertext count, decryption."""


class MissingPSKError(GroupError):
    """A PSK the commit or Welcome uses is not available (§8.4, §12.4.2)."""


class InvalidTreeError(GroupError):
    """A ratchet tree that fails §7 checks or does not match the GroupInfo tree hash."""


class InvalidGroupInfoError(GroupError):
    """A GroupInfo that is malformed or whose signer is not a member of its tree."""


class InvalidWelcomeError(GroupError):
    """A Welcome that does not decrypt or does not match what it claims (§12.4.3.1)."""


class NoMatchingKeyPackageError(InvalidWelcomeError):
    """None of the supplied KeyPackageBundles is addressed by the Welcome."""


class PolicyRefusedError(GroupError):
    """Publicly valid input this deployment refuses (relay policy: private handshakes, PSKs...)."""


class UnsupportedMessageError(GroupError):
    """A message kind this implementation does not process (external commits, ReInit, wire formats)."""


class PendingCommitError(GroupError):
    """An own commit is pending (or none is, for merge/discard)."""


class OwnCommitError(GroupError):
    """The echo of our own commit: apply it with ``merge_pending()`` instead (§12.4)."""


class GroupInactiveError(GroupError):
    """This member was removed; the state can no longer send or receive."""


class UnknownMemberError(GroupError):
    """A removal names an identity with no leaf in the group."""


__all__ = [
    "GroupError",
    "WrongGroupError",
    "EpochError",
    "FutureEpochError",
    "StaleEpochError",
    "UnknownSenderError",
    "InvalidSignatureError",
    "DecryptionError",
    "WrongMembershipTag",
    "WrongConfirmationTag",
    "InvalidProposalError",
    "InvalidKeyPackageError",
    "ProposalLimitError",
    "InvalidCommitError",
    "UnknownProposalError",
    "DuplicateMemberError",
    "MissingPathError",
    "InvalidPathError",
    "MissingPSKError",
    "InvalidTreeError",
    "InvalidGroupInfoError",
    "InvalidWelcomeError",
    "NoMatchingKeyPackageError",
    "PolicyRefusedError",
    "UnsupportedMessageError",
    "PendingCommitError",
    "OwnCommitError",
    "GroupInactiveError",
    "UnknownMemberError",
]
