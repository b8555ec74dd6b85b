"""Who a member admits, and what it reads from the relay before acting on it.

The :data:`AdmissionPolicy` decides which join requests this member turns into an Add; the readers
below look into relay events and MLS messages the member did not make (a proposal that removes
someone else is never cached, so no commit of ours can carry it), without trusting their types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import MLSError
from .mls.framing import MLSMessage, PublicMessage
from .mls.proposal_structs import Proposal, Remove
from .mls.welcome_structs import Welcome

__all__ = ["AdmissionPolicy", "AllowList", "admit_all", "removes_another", "welcome_refs", "as_bytes"]

AdmissionPolicy = Callable[[bytes], bool]
"""``policy(identity_hash) -> bool``: does this member admit the identity asking to join?"""


@dataclass
class AllowList:
    """The default admission policy: identities on the list are admitted, nobody else."""

    identities: set[bytes] = field(default_factory=set)

    def __call__(self, identity: bytes) -> bool:
        return identity in self.identities


def admit_all(identity: bytes) -> bool:
    """Admit every identity that asks (open calls)."""
    return True


def removes_another(message: bytes) -> bool:
    """Whether ``message`` is a PublicMessage Remove proposal for a leaf other than its sender's."""
    try:
        body = MLSMessage.from_bytes(message).body
    except MLSError:
        return False  # Group.process refuses it with the real reason
    if not isinstance(body, PublicMessage) or not isinstance(body.content.body, Proposal):
        return False
    removal = body.content.body.body
    return isinstance(removal, Remove) and removal.removed != body.content.sender.index


def welcome_refs(welcome: bytes) -> set[bytes]:
    """The KeyPackageRefs a Welcome is addressed to (empty for anything but a Welcome)."""
    body = MLSMessage.from_bytes(welcome).body
    return {s.new_member for s in body.secrets} if isinstance(body, Welcome) else set()


def as_bytes(value: Any) -> bytes:
    """A bytes field of a relay event or reply; anything else is a ``TypeError`` (counted as malformed)."""
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return bytes(value)
