"""The keyless view of a group that the relay keeps (ARCHITECTURE.md, "The delivery service").

A :class:`PublicGroup` starts from a signed GroupInfo (trusted on first use: the relay cannot check
its confirmation tag) and follows PublicMessage proposals and commits with every check that needs
no group secret — the same :mod:`commit_rules` code a :class:`~.group.Group` runs: the signature
over the exact GroupContext (so it tracks the confirmed and interim transcript hashes, using the
commit's public confirmation tag), §12.2 list rules, leaf and KeyPackage validity, the UpdatePath
leaf signature, parent hashes, the tree hash and the path-secret count per resolution. It cannot
check membership or confirmation tags, nor whether path secrets decrypt.

With :meth:`Policy.relay` (the default) it refuses, each with :class:`PolicyRefusedError`, what a
relayed group does not allow: PrivateMessage handshakes, external commits and ExternalInit, PSK
and ReInit proposals. A permissive policy lets it follow groups that use PSKs (the vector test).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .clock import DEFAULT_CLOCK
from .codec import DecodeError, Reader, Writer, decode_all
from .commit_rules import StagedCommit, stage_commit
from .crypto import CipherSuite
from .errors import MLSError
from .framing import AuthenticatedContent, MLSMessage, PrivateMessage, PublicMessage, SenderType
from .group_errors import InvalidGroupInfoError, PolicyRefusedError, UnsupportedMessageError
from .group_events import CommitProcessed, ProposalReceived
from .group_info import verified_group_info_tree, verify_group_info_signature
from .key_schedule import interim_transcript_hash
from .messages import GroupContext
from .policy import Policy, credential_identity
from .proposal_structs import Commit, Proposal, Remove
from .proposals import cache_proposal
from .public_state import PublicState, check_epoch, verify_public_message
from .registries import ProposalType
from .tree import RatchetTree
from .welcome_structs import GroupInfo, Welcome

log = logging.getLogger(__name__)

PUBLIC_STATE_VERSION = 1
"""Leading byte of :meth:`PublicGroup.to_bytes`."""

RELAY_REFUSED_PROPOSALS = frozenset({ProposalType.PSK, ProposalType.REINIT, ProposalType.EXTERNAL_INIT})
"""Proposal types a relayed group refuses: their effect on the key schedule is invisible to the relay."""

_POLICY_FLAGS = (
    "allow_private_handshakes",
    "allow_psk",
    "allow_reinit",
    "allow_external_senders",
    "immutable_identity",
)


class PublicGroup:
    """Epoch, roster, tree and transcript hashes of a group, without any of its secrets."""

    def __init__(
        self, state: PublicState, policy: Policy | None = None, *, clock: Callable[[], float] = DEFAULT_CLOCK
    ) -> None:
        self._s = state
        self.policy = Policy.relay() if policy is None else policy
        self.clock = clock
        """Wall-clock seconds for KeyPackage lifetimes when a call passes no ``now``."""

    @classmethod
    def from_group_info(
        cls,
        group_info: bytes,
        ratchet_tree: bytes | None = None,
        *,
        policy: Policy | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> PublicGroup:
        """Build from an MLSMessage GroupInfo and, if it has no ratchet_tree extension, the tree.

        The tree must match the signed tree hash and pass §7.9.2/§7.3 checks; the GroupInfo must be
        signed by its ``signer`` leaf in that tree.
        """
        try:
            info = MLSMessage.from_bytes(group_info).body
        except DecodeError as exc:
            raise InvalidGroupInfoError(f"not an MLSMessage: {exc}") from exc
        if not isinstance(info, GroupInfo):
            raise InvalidGroupInfoError("MLSMessage does not carry a GroupInfo")
        try:
            suite = CipherSuite(info.group_context.cipher_suite)
        except MLSError as exc:
            raise InvalidGroupInfoError(str(exc)) from exc
        tree = verified_group_info_tree(suite, info, ratchet_tree)
        verify_group_info_signature(suite, info, tree)
        gc = info.group_context
        interim = interim_transcript_hash(suite, gc.confirmed_transcript_hash, info.confirmation_tag)
        return cls(PublicState(suite, gc, tree, interim), policy, clock=clock)

    # ---------------------------------------------------------------- views

    @property
    def suite(self) -> CipherSuite:
        return self._s.suite

    @property
    def group_id(self) -> bytes:
        return self._s.group_id

    @property
    def epoch(self) -> int:
        return self._s.epoch

    @property
    def members(self) -> dict[int, bytes]:
        """Leaf index -> credential identity."""
        return self._s.members()

    @property
    def leaf_count(self) -> int:
        return self._s.tree.n_leaves

    @property
    def group_context(self) -> GroupContext:
        return GroupContext.from_bytes(self._s.group_context.to_bytes())

    @property
    def tree(self) -> RatchetTree:
        return self._s.tree.copy()

    def ratchet_tree(self) -> bytes:
        """The ratchet_tree extension body, to serve joiners whose Welcome lacks it."""
        return self._s.tree.to_bytes()

    def leaf_of(self, identity: bytes) -> int | None:
        return self._s.leaf_of_identity(identity)

    # ---------------------------------------------------------------- processing

    def _refuse(self, ac: AuthenticatedContent) -> None:
        """Relay policy on a verified content (ARCHITECTURE.md): no PSK, ReInit, ExternalInit."""
        body = ac.content.body
        proposals: list[Proposal] = []
        if isinstance(body, Proposal):
            proposals = [body]
        elif isinstance(body, Commit):
            proposals = [p.proposal for p in body.proposals if p.proposal is not None]
        for p in proposals:
            t = p.proposal_type
            if t == ProposalType.PSK and not self.policy.allow_psk:
                raise PolicyRefusedError("PSK proposals are refused in a relayed group")
            if t in (ProposalType.REINIT, ProposalType.EXTERNAL_INIT) and not self.policy.allow_reinit:
                raise PolicyRefusedError(f"{t.name} proposals are refused in a relayed group")

    def validate(self, message: bytes, *, now: float | None = None) -> StagedCommit | ProposalReceived:
        """Every public check of a handshake without applying it (the relay's sequencing test)."""
        ac = self._verify(message)
        now = self.clock() if now is None else now
        body = ac.content.body
        if isinstance(body, Commit):
            return stage_commit(self._s, ac, self.policy, now)
        cached = cache_proposal(self._s, ac, self.policy, now)
        return self._proposal_event(cached.ref, ac)

    def _verify(self, message: bytes) -> AuthenticatedContent:
        msg = MLSMessage.from_bytes(message).body
        if isinstance(msg, PrivateMessage):
            check_epoch(self._s, msg.group_id, msg.epoch)
            if not self.policy.allow_private_handshakes:
                raise PolicyRefusedError("PrivateMessage handshakes are refused in a relayed group")
            raise UnsupportedMessageError("a PublicGroup cannot read a PrivateMessage")
        if not isinstance(msg, PublicMessage):
            raise UnsupportedMessageError(f"{type(msg).__name__} is not a handshake message")
        if msg.content.sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            check_epoch(self._s, msg.content.group_id, msg.content.epoch)
            raise PolicyRefusedError("external commits are refused in a relayed group")
        ac = verify_public_message(self._s, msg, None, self.policy)
        self._refuse(ac)
        return ac

    def _proposal_event(self, ref: bytes, ac: AuthenticatedContent) -> ProposalReceived:
        body = ac.content.body
        assert isinstance(body, Proposal)
        removed = None
        if isinstance(body.body, Remove):
            removed = self._s.members().get(body.body.removed)
        sender = ac.content.sender.index if ac.content.sender.sender_type == SenderType.MEMBER else None
        return ProposalReceived(ref, sender, int(body.proposal_type), removed)

    def process(self, message: bytes, *, now: float | None = None) -> ProposalReceived | CommitProcessed:
        """Follow a PublicMessage proposal or commit; raises a typed error and changes nothing if invalid."""
        ac = self._verify(message)
        now = self.clock() if now is None else now
        body = ac.content.body
        if isinstance(body, Proposal):
            cached = cache_proposal(self._s, ac, self.policy, now)
            self._s.proposals[cached.ref] = cached
            return self._proposal_event(cached.ref, ac)
        staged = stage_commit(self._s, ac, self.policy, now)
        self._s = PublicState(self.suite, staged.group_context, staged.tree, staged.interim_transcript_hash)
        return CommitProcessed(
            staged.group_context.epoch,
            staged.committer,
            {i: credential_identity(kp.leaf_node) for i, kp in staged.added.items()},
            dict(staged.removed),
            list(staged.updated),
        )

    def welcome_matches(self, staged: StagedCommit, welcome: bytes) -> bool:
        """Whether a Welcome's ``new_member`` refs are exactly the staged commit's Adds (sequencing)."""
        try:
            msg = MLSMessage.from_bytes(welcome).body
        except DecodeError:
            return False
        if not isinstance(msg, Welcome) or msg.cipher_suite != self.suite.id:
            return False
        want = sorted(kp.ref(self.suite) for kp in staged.added.values())
        return sorted(e.new_member for e in msg.secrets) == want

    # ---------------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        """Public state only (no secrets): tree, context, interim hash, this epoch's proposals, policy."""
        w = Writer().u8(PUBLIC_STATE_VERSION)
        for name in _POLICY_FLAGS:
            w.boolean(getattr(self.policy, name))
        self._s.encode(w)
        return w.bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, clock: Callable[[], float] = DEFAULT_CLOCK) -> PublicGroup:
        def read(r: Reader) -> PublicGroup:
            version = r.u8()
            if version != PUBLIC_STATE_VERSION:
                raise DecodeError(f"public group state version {version} is not {PUBLIC_STATE_VERSION}")
            policy = Policy(**{name: r.boolean() for name in _POLICY_FLAGS})
            return cls(PublicState.decode(r), policy, clock=clock)

        return decode_all(data, read)


__all__ = ["PublicGroup", "RELAY_REFUSED_PROPOSALS"]
