"""RFC 9420 Messaging Layer Security in pure Python over ``cryptography`` (sans-I/O).

The public API: :class:`CipherSuite`, :class:`KeyPackageBundle`, :class:`Group` (a member) and
:class:`PublicGroup` (the relay's keyless view), their events and their typed errors.
"""

from .crypto import CipherSuite
from .errors import MLSError
from .group import Group
from .group_errors import (
    DecryptionError,
    DuplicateMemberError,
    EpochError,
    FutureEpochError,
    GroupError,
    GroupInactiveError,
    InvalidCommitError,
    InvalidGroupInfoError,
    InvalidKeyPackageError,
    InvalidPathError,
    InvalidProposalError,
    InvalidSignatureError,
    InvalidTreeError,
    InvalidWelcomeError,
    MissingPathError,
    MissingPSKError,
    NoMatchingKeyPackageError,
    OwnCommitError,
    PendingCommitError,
    PolicyRefusedError,
    ProposalLimitError,
    StaleEpochError,
    UnknownMemberError,
    UnknownProposalError,
    UnknownSenderError,
    UnsupportedMessageError,
    WrongConfirmationTag,
    WrongGroupError,
    WrongMembershipTag,
)
from .group_events import ApplicationMessage, CommitProcessed, GroupEvent, ProposalReceived
from .group_state import PendingCommit
from .key_package_bundle import KeyPackageBundle
from .policy import Policy
from .public_group import PublicGroup

__all__ = [
    "CipherSuite",
    "KeyPackageBundle",
    "Group",
    "PublicGroup",
    "PendingCommit",
    "Policy",
    "ProposalReceived",
    "CommitProcessed",
    "ApplicationMessage",
    "GroupEvent",
    "MLSError",
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
