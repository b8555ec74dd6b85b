"""What a keyless observer knows of a group and how it checks framing (§6.1-§6.2): the group,
epoch, sender and the signature over the exact GroupContext, plus the membership tag when known.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field

from .codec import DecodeError, Reader, Writer
from .crypto import CipherSuite
from .errors import ProtocolError
from .framing import (
    AuthenticatedContent,
    ContentType,
    PublicMessage,
    SenderType,
    _membership_tag,
    check_sender_content,
)
from .group_errors import (
    FutureEpochError,
    InvalidSignatureError,
    PolicyRefusedError,
    StaleEpochError,
    UnknownSenderError,
    UnsupportedMessageError,
    WrongGroupError,
    WrongMembershipTag,
)
from .messages import GroupContext, decode_external_senders, find_extension
from .policy import Policy, credential_identity
from .proposal_structs import Add, Proposal
from .registries import ExtensionType
from .tree import (
    RatchetTree,
)

log = logging.getLogger(__name__)


@dataclass
class CachedProposal:
    """A proposal received (or sent) in the current epoch, kept for commits by reference."""

    ref: bytes
    content: AuthenticatedContent

    @property
    def proposal(self) -> Proposal:
        body = self.content.content.body
        assert isinstance(body, Proposal)
        return body

    @property
    def sender(self):
        return self.content.content.sender


@dataclass
class PublicState:
    """What a keyless observer knows of a group: context, tree, interim hash, pending proposals."""

    suite: CipherSuite
    group_context: GroupContext
    tree: RatchetTree
    interim_transcript_hash: bytes
    proposals: dict[bytes, CachedProposal] = field(default_factory=dict)

    @property
    def epoch(self) -> int:
        return self.group_context.epoch

    @property
    def group_id(self) -> bytes:
        return self.group_context.group_id

    def members(self) -> dict[int, bytes]:
        return {i: credential_identity(leaf) for i, leaf in self.tree.leaves()}

    def leaf_of_identity(self, identity: bytes) -> int | None:
        for i, leaf in self.tree.leaves():
            if credential_identity(leaf) == identity:
                return i
        return None

    # ---------------------------------------------------------------- persistence

    def encode(self, w: Writer) -> None:
        w.u16(self.suite.id)
        w.opaque(self.group_context.to_bytes())
        w.opaque(self.tree.to_bytes())
        w.opaque(self.interim_transcript_hash)
        w.vector(self.proposals.values(), lambda ww, p: ww.opaque(p.content.to_bytes()))

    @classmethod
    def decode(cls, r: Reader) -> PublicState:
        suite = CipherSuite(r.u16())
        gc = GroupContext.from_bytes(r.opaque())
        tree = RatchetTree.from_bytes(suite, r.opaque())
        interim = r.opaque()
        state = cls(suite, gc, tree, interim)
        for raw in r.vector(Reader.opaque):
            ac = AuthenticatedContent.from_bytes(raw)
            ref = ac.proposal_ref(suite)
            state.proposals[ref] = CachedProposal(ref, ac)
        return state


def check_epoch(state: PublicState, group_id: bytes, epoch: int) -> None:
    """Group id then epoch, with the typed errors the caller needs (hold future, drop stale)."""
    if group_id != state.group_id:
        raise WrongGroupError("message is for another group")
    if epoch > state.epoch:
        raise FutureEpochError(epoch, state.epoch)
    if epoch < state.epoch:
        raise StaleEpochError(epoch, state.epoch)


def member_signature_key(state: PublicState, leaf_index: int) -> bytes | None:
    """The signature key of a non-blank leaf, else None."""
    if not 0 <= leaf_index < state.tree.n_leaves:
        return None
    leaf = state.tree.leaf(leaf_index)
    return None if leaf is None else leaf.signature_key


def sender_signature_key(state: PublicState, ac: AuthenticatedContent, policy: Policy) -> bytes:
    """The key that must have signed this content (§6.1), by sender type."""
    sender = ac.content.sender
    st = sender.sender_type
    if st == SenderType.MEMBER:
        key = member_signature_key(state, sender.index)
        if key is None:
            raise UnknownSenderError(f"sender leaf {sender.index} is blank or outside the tree")
        return key
    if st == SenderType.EXTERNAL:
        if not policy.allow_external_senders:
            raise PolicyRefusedError("external senders are not accepted")
        ext = find_extension(state.group_context.extensions, ExtensionType.EXTERNAL_SENDERS)
        if ext is None:
            raise UnknownSenderError("no external_senders extension in the group")
        try:
            senders = decode_external_senders(ext.extension_data)
        except DecodeError as exc:
            raise UnknownSenderError("malformed external_senders extension") from exc
        if sender.index >= len(senders):
            raise UnknownSenderError(f"external sender {sender.index} is not listed")
        return senders[sender.index].signature_key
    if st == SenderType.NEW_MEMBER_PROPOSAL:
        body = ac.content.body
        assert isinstance(body, Proposal) and isinstance(body.body, Add)  # check_sender_content ran
        return body.body.key_package.leaf_node.signature_key
    raise UnsupportedMessageError("external commits (new_member_commit) are not supported")


def verify_public_message(
    state: PublicState, msg: PublicMessage, membership_key: bytes | None, policy: Policy
) -> AuthenticatedContent:
    """§6.2 checks of a PublicMessage: group, epoch, sender, membership tag (if keyed), signature."""
    content = msg.content
    check_epoch(state, content.group_id, content.epoch)
    if content.content_type == ContentType.APPLICATION:
        raise UnsupportedMessageError("application data in a PublicMessage (§6)")
    try:
        check_sender_content(content)
    except ProtocolError as exc:
        raise UnknownSenderError(str(exc)) from exc
    ac = msg.authenticated_content()
    sig_pub = sender_signature_key(state, ac, policy)
    if content.sender.sender_type == SenderType.MEMBER:
        if msg.membership_tag is None:
            raise WrongMembershipTag("member PublicMessage without membership tag")
        if membership_key is not None:
            want = _membership_tag(state.suite, membership_key, ac, state.group_context)
            if not hmac.compare_digest(want, msg.membership_tag):
                raise WrongMembershipTag("membership tag does not verify")
    if not ac.verify_signature(state.suite, sig_pub, state.group_context):
        raise InvalidSignatureError("FramedContent signature does not verify")
    return ac


__all__ = [
    "CachedProposal",
    "PublicState",
    "check_epoch",
    "member_signature_key",
    "sender_signature_key",
    "verify_public_message",
]
