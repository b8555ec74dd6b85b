"""The public half of MLS group processing, shared by :class:`Group` and :class:`PublicGroup`.

A member and the keyless relay must agree on every check that needs no group secret, so both run
the code here and nothing else for them: framing checks (group, epoch, sender, signature over the
exact GroupContext, §6.1-§6.2), individual proposal validity (§12.1), proposal-list validation
(§12.2), application in the §12.3 order, path presence (§12.4) and the public UpdatePath checks
(§12.4.2: leaf validity, fresh keys, ciphertext count per resolution, parent hash via
:func:`treekem.merge_update_path`), and the transcript-hash/GroupContext update (§8.2).

What differs is injected: the member passes its membership key and a path handler that decrypts
(:func:`treekem.process_update_path`); the relay passes neither and merges the path publicly. The
key schedule and the confirmation tag are the member's alone (:mod:`group`).

Nothing here mutates a :class:`PublicState`; staged results are installed by the caller only after
every check passed, so a raised error leaves the group unchanged.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import key_schedule as ks
from .codec import DecodeError, Reader, Writer
from .crypto import CipherSuite
from .errors import MLSError, ProtocolError
from .framing import (
    AuthenticatedContent,
    ContentType,
    PublicMessage,
    SenderType,
    _membership_tag,
    check_sender_content,
)
from .messages import (
    Add,
    Commit,
    ExtensionType,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalType,
    PSKType,
    ReInit,
    Remove,
    RequiredCapabilities,
    ResumptionPSKUsage,
    Update,
    UpdatePath,
    decode_external_senders,
    find_extension,
)
from .tree import (
    DEFAULT_EXTENSION_TYPES,
    RatchetTree,
    TreeError,
    check_required_capabilities,
    validate_key_package,
    validate_leaf_node,
)
from .treekem import TreeKEMError
from .welcome import ratchet_tree_of

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Errors: one type per failure, so callers (the relay's sequencer, the session) can act on each.


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


# --------------------------------------------------------------------------------------------------
# Policy


PATH_REQUIRED_TYPES = frozenset(
    {ProposalType.UPDATE, ProposalType.REMOVE, ProposalType.EXTERNAL_INIT, ProposalType.GROUP_CONTEXT_EXTENSIONS}
)
"""§12.4 / §17.4: proposal types whose commit must carry an UpdatePath."""

MAX_PROPOSALS_PER_EPOCH = 512
"""Proposals cached per epoch (by Group and PublicGroup). A call of up to a few hundred members
sees at most one leave/update per member and a handful of adds between commits; the bound stops a
misbehaving member from growing the relay's memory without limit."""

KEY_PACKAGE_CLOCK_SKEW = 5 * 60
"""Seconds of clock difference tolerated on KeyPackage lifetimes. KeyPackages here are back-dated
an hour (ARCHITECTURE.md), so this only needs to cover a fast verifier clock on the not_after side;
five minutes is Kerberos' default skew and X.509 practice."""


@dataclass(frozen=True)
class Policy:
    """Rules beyond RFC 9420 that the application chooses (§12.2: "an application may extend")."""

    allow_private_handshakes: bool = True
    """False on the relay: it can only follow PublicMessage handshakes."""
    allow_psk: bool = True
    """False on the relay: PSK proposals change the key schedule in a way it cannot see."""
    allow_reinit: bool = True
    """False on the relay: ReInit and ExternalInit are refused by policy (typed) before any other check."""
    allow_external_senders: bool = True
    """Proposals from the external_senders extension's senders (§12.1.8)."""
    immutable_identity: bool = True
    """A member's credential identity never changes across Updates and commits (ARCHITECTURE.md)."""

    @classmethod
    def relay(cls) -> Policy:
        """The relayed-group policy of ARCHITECTURE.md: PublicMessage handshakes, no PSK/ReInit."""
        return cls(allow_private_handshakes=False, allow_psk=False, allow_reinit=False)


def credential_identity(leaf: LeafNode) -> bytes:
    """The application identity of a leaf: the BasicCredential identity (the RNS identity hash).

    X.509 credentials are identified by their leaf certificate.
    """
    cred = leaf.credential
    if cred.identity or not cred.certificates:
        return cred.identity
    return cred.certificates[0]


def check_unique_identities(tree: RatchetTree) -> None:
    """One leaf per credential identity (§12.2 same-client rule, ARCHITECTURE.md) in a received tree."""
    seen: set[bytes] = set()
    for i, leaf in tree.leaves():
        ident = credential_identity(leaf)
        if ident in seen:
            raise InvalidTreeError(f"leaf {i} repeats another member's identity")
        seen.add(ident)


def check_tree_against_context(tree: RatchetTree, extensions: Sequence) -> None:
    """A received tree fits its GroupContext: every member supports the group's extensions and
    required capabilities (§7.3, §11.1), and holds one leaf per identity."""
    check_unique_identities(tree)
    required = required_capabilities(extensions)
    for i, leaf in tree.leaves():
        try:
            _check_extensions_supported(extensions, leaf, i)
            if required is not None:
                check_required_capabilities(leaf, required)
        except (InvalidProposalError, TreeError) as exc:
            raise InvalidTreeError(str(exc)) from exc


def lifetime_ok(leaf: LeafNode, now: float | None, skew: int = KEY_PACKAGE_CLOCK_SKEW) -> bool:
    """Lifetime check with skew on both sides (§7.3); ``None`` means the caller opted out."""
    if now is None or leaf.lifetime is None:
        return True
    return leaf.lifetime.not_before - skew <= now <= leaf.lifetime.not_after + skew


def required_capabilities(extensions: Sequence) -> RequiredCapabilities | None:
    ext = find_extension(list(extensions), ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return RequiredCapabilities.from_bytes(ext.extension_data)
    except DecodeError as exc:
        raise InvalidProposalError("malformed required_capabilities extension") from exc


def check_key_package(
    suite: CipherSuite, kp: KeyPackage, extensions: Sequence, now: float | None
) -> None:
    """§10.1 with the group's required capabilities and a skewed lifetime; InvalidKeyPackageError."""
    if kp.cipher_suite != suite.id:
        raise InvalidKeyPackageError(f"KeyPackage for suite {kp.cipher_suite}, group uses {suite.id}")
    if suite.id not in {int(c) for c in kp.leaf_node.capabilities.cipher_suites}:
        raise InvalidKeyPackageError("KeyPackage leaf does not list the group's cipher suite")
    try:
        validate_key_package(suite, kp, required=required_capabilities(extensions))
    except (TreeError, InvalidProposalError) as exc:
        raise InvalidKeyPackageError(str(exc)) from exc
    if not lifetime_ok(kp.leaf_node, now):
        raise InvalidKeyPackageError("KeyPackage lifetime does not cover the current time")


# --------------------------------------------------------------------------------------------------
# Public state


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


# --------------------------------------------------------------------------------------------------
# Framing checks


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


# --------------------------------------------------------------------------------------------------
# Individual proposals (§12.1)


def validate_proposal(
    state: PublicState,
    proposal: Proposal,
    sender_type: SenderType,
    sender_index: int,
    policy: Policy,
    now: float | None,
    extensions: Sequence | None = None,
    tree: RatchetTree | None = None,
) -> None:
    """§12.1 validity of one proposal against the current (or given) tree and extensions."""
    suite = state.suite
    tree = state.tree if tree is None else tree
    exts = state.group_context.extensions if extensions is None else extensions
    body = proposal.body
    if isinstance(body, Add):
        check_key_package(suite, body.key_package, exts, now)
    elif isinstance(body, Update):
        if sender_type != SenderType.MEMBER:
            raise InvalidProposalError("an Update must come from a member (§12.1.2)")
        old = tree.leaf(sender_index) if sender_index < tree.n_leaves else None
        if old is None:
            raise InvalidProposalError("Update from a blank leaf")
        _check_replacement_leaf(state, tree, old, body.leaf_node, LeafNodeSource.UPDATE, sender_index, exts, policy)
    elif isinstance(body, Remove):
        if body.removed >= tree.n_leaves or tree.leaf(body.removed) is None:
            raise InvalidProposalError(f"Remove of blank or absent leaf {body.removed} (§12.1.3)")
    elif isinstance(body, PreSharedKey):
        if not policy.allow_psk:
            raise PolicyRefusedError("PSK proposals are refused in this group")
        psk = body.psk
        if len(psk.psk_nonce) != suite.Nh:
            raise InvalidProposalError("psk_nonce is not KDF.Nh bytes (§12.1.4)")
        if psk.psktype == PSKType.RESUMPTION and psk.usage != ResumptionPSKUsage.APPLICATION:
            raise InvalidProposalError("resumption PSK with reinit/branch usage outside a reinit (§12.1.4)")
    elif isinstance(body, GroupContextExtensions):
        for i, leaf in tree.leaves():
            _check_extensions_supported(body.extensions, leaf, i)
    elif isinstance(body, ReInit):
        raise UnsupportedMessageError("ReInit proposals are not supported")
    else:
        raise InvalidProposalError("ExternalInit outside an external commit (§12.2)")


def _check_extensions_supported(extensions: Sequence, leaf: LeafNode, where: int) -> None:
    listed = {int(e) for e in leaf.capabilities.extensions}
    for ext in extensions:
        t = int(ext.extension_type)
        if t not in DEFAULT_EXTENSION_TYPES and t not in listed:
            raise InvalidProposalError(f"member {where} does not support group extension {t} (§12.1.7)")


def _check_replacement_leaf(
    state: PublicState,
    tree: RatchetTree,
    old: LeafNode,
    new: LeafNode,
    source: LeafNodeSource,
    index: int,
    extensions: Sequence,
    policy: Policy,
) -> None:
    """A leaf replacing ``old`` at ``index`` (Update proposal or UpdatePath), §7.3."""
    error = InvalidProposalError if source == LeafNodeSource.UPDATE else InvalidPathError
    try:
        validate_leaf_node(
            state.suite, new, source, group_id=state.group_id, leaf_index=index,
            required=required_capabilities(extensions),
        )
        tree.check_leaf_fits(new, replacing=index)
    except TreeError as exc:
        raise error(str(exc)) from exc
    if policy.immutable_identity and credential_identity(new) != credential_identity(old):
        raise error(f"leaf {index} changes its credential identity")


# --------------------------------------------------------------------------------------------------
# Commit: proposal list, application, path (§12.2-§12.4.2)


@dataclass
class ResolvedProposal:
    """One entry of a commit's proposal list with who proposed it."""

    proposal: Proposal
    sender_type: SenderType
    sender_index: int
    ref: bytes | None = None
    """The ProposalRef for a proposal by reference; None when inline (the committer's own)."""


@dataclass
class StagedCommit:
    """A commit that passed every public check, not yet installed."""

    committer: int
    proposals: list[ResolvedProposal]
    tree: RatchetTree
    """The tree after proposals and path."""
    group_context: GroupContext
    """The new epoch's GroupContext (tree hash and confirmed transcript hash filled in)."""
    interim_transcript_hash: bytes
    added: dict[int, KeyPackage] = field(default_factory=dict)
    removed: dict[int, bytes] = field(default_factory=dict)
    """Removed leaf -> its credential identity."""
    updated: list[int] = field(default_factory=list)
    psk_ids: list[PreSharedKeyID] = field(default_factory=list)
    path: UpdatePath | None = None


@dataclass
class AppliedProposals:
    """The tree and extensions after §12.3 application, before any UpdatePath."""

    tree: RatchetTree
    extensions: list
    added: dict[int, KeyPackage]
    removed: dict[int, bytes]
    updated: list[int]
    psk_ids: list[PreSharedKeyID]
    path_required: bool


def resolve_proposals(
    state: PublicState, commit: Commit, committer_type: SenderType, committer: int
) -> list[ResolvedProposal]:
    """Look up proposals by reference in this epoch's cache (§12.4); inline ones are the committer's."""
    out: list[ResolvedProposal] = []
    for por in commit.proposals:
        if por.proposal is not None:
            out.append(ResolvedProposal(por.proposal, committer_type, committer))
            continue
        assert por.reference is not None
        cached = state.proposals.get(por.reference)
        if cached is None:
            raise UnknownProposalError(f"unknown proposal reference {por.reference.hex()[:16]}")
        out.append(
            ResolvedProposal(cached.proposal, cached.sender.sender_type, cached.sender.index, por.reference)
        )
    return out


def apply_proposals(
    state: PublicState,
    committer: int,
    proposals: Sequence[ResolvedProposal],
    policy: Policy,
    now: float | None,
) -> AppliedProposals:
    """§12.2 list validation and §12.3 application on a copy of the tree."""
    by_type: dict[int, list[ResolvedProposal]] = {}
    for rp in proposals:
        by_type.setdefault(int(rp.proposal.proposal_type), []).append(rp)
    gces = by_type.get(ProposalType.GROUP_CONTEXT_EXTENSIONS, [])
    updates = by_type.get(ProposalType.UPDATE, [])
    removes = by_type.get(ProposalType.REMOVE, [])
    adds = by_type.get(ProposalType.ADD, [])
    psks = by_type.get(ProposalType.PSK, [])
    if by_type.get(ProposalType.REINIT):
        raise UnsupportedMessageError("ReInit commits are not supported")
    if by_type.get(ProposalType.EXTERNAL_INIT):
        raise InvalidCommitError("ExternalInit in a member's commit (§12.2)")
    if len(gces) > 1:
        raise InvalidCommitError("more than one GroupContextExtensions proposal (§12.2)")

    extensions = list(state.group_context.extensions)
    if gces:
        body = gces[0].proposal.body
        assert isinstance(body, GroupContextExtensions)
        validate_proposal(state, gces[0].proposal, gces[0].sender_type, gces[0].sender_index, policy, now)
        extensions = list(body.extensions)

    touched: set[int] = set()
    for rp in updates:
        if rp.ref is None or rp.sender_index == committer:
            raise InvalidCommitError("the committer's own Update in its commit (§12.2)")
        if rp.sender_index in touched:
            raise InvalidCommitError(f"two Updates/Removes for leaf {rp.sender_index} (§12.2)")
        touched.add(rp.sender_index)
    for rp in removes:
        body = rp.proposal.body
        assert isinstance(body, Remove)
        if body.removed == committer:
            raise InvalidCommitError("a commit removing its committer (§12.2)")
        if body.removed in touched:
            raise InvalidCommitError(f"two Updates/Removes for leaf {body.removed} (§12.2)")
        touched.add(body.removed)
    seen_psks: set[bytes] = set()
    for rp in psks:
        validate_proposal(state, rp.proposal, rp.sender_type, rp.sender_index, policy, now)
        body = rp.proposal.body
        assert isinstance(body, PreSharedKey)
        key = body.psk.to_bytes()
        if key in seen_psks:
            raise InvalidCommitError("the same PreSharedKeyID twice (§12.2)")
        seen_psks.add(key)

    tree = state.tree.copy()
    updated: list[int] = []
    for rp in updates:
        validate_proposal(state, rp.proposal, rp.sender_type, rp.sender_index, policy, now, extensions, tree)
        body = rp.proposal.body
        assert isinstance(body, Update)
        tree.update_leaf(rp.sender_index, body.leaf_node)
        updated.append(rp.sender_index)
    removed: dict[int, bytes] = {}
    for rp in removes:
        validate_proposal(state, rp.proposal, rp.sender_type, rp.sender_index, policy, now, extensions, tree)
        body = rp.proposal.body
        assert isinstance(body, Remove)
        leaf = tree.leaf(body.removed)
        assert leaf is not None
        removed[body.removed] = credential_identity(leaf)
        tree.remove_leaf(body.removed)
    identities = {credential_identity(leaf) for _, leaf in tree.leaves()}
    added: dict[int, KeyPackage] = {}
    for rp in adds:
        body = rp.proposal.body
        assert isinstance(body, Add)
        kp = body.key_package
        validate_proposal(state, rp.proposal, rp.sender_type, rp.sender_index, policy, now, extensions, tree)
        ident = credential_identity(kp.leaf_node)
        if ident in identities:
            raise DuplicateMemberError("an Add for a client already in the group (§12.2)")
        identities.add(ident)
        try:
            tree.check_leaf_fits(kp.leaf_node)
        except TreeError as exc:
            raise InvalidKeyPackageError(str(exc)) from exc
        added[tree.add_leaf(kp.leaf_node)] = kp

    required = required_capabilities(extensions)
    for i, leaf in tree.leaves():
        if required is not None:
            try:
                check_required_capabilities(leaf, required)
            except TreeError as exc:
                raise InvalidCommitError(f"member {i}: {exc} (§12.1.7)") from exc
        if gces or i in added:
            # new members, and everyone under new extensions, must support the group's extensions
            try:
                _check_extensions_supported(extensions, leaf, i)
            except InvalidProposalError as exc:
                raise InvalidCommitError(str(exc)) from exc

    psk_ids = [rp.proposal.body.psk for rp in psks]  # type: ignore[union-attr]
    path_required = not proposals or any(int(rp.proposal.proposal_type) in PATH_REQUIRED_TYPES for rp in proposals)
    return AppliedProposals(tree, extensions, added, removed, updated, psk_ids, path_required)


PathHandler = Callable[[RatchetTree, int, UpdatePath, GroupContext, Sequence[int]], tuple[RatchetTree, bytes]]
"""(tree after proposals, committer, path, provisional context, added leaves) -> (new tree, its tree hash)."""


def public_path_handler(
    tree: RatchetTree, committer: int, path: UpdatePath, provisional: GroupContext, added: Sequence[int]
) -> tuple[RatchetTree, bytes]:
    """Merge an UpdatePath without keys (the relay's, and a removed member's, handler)."""
    try:
        new = _merge(tree, committer, path, provisional.group_id)
    except TreeKEMError as exc:
        raise InvalidPathError(str(exc)) from exc
    return new, new.tree_hash()


def _merge(tree: RatchetTree, committer: int, path: UpdatePath, group_id: bytes) -> RatchetTree:
    from .treekem import merge_update_path

    return merge_update_path(tree, committer, path, group_id)


def check_path_public(
    state: PublicState,
    tree: RatchetTree,
    committer: int,
    path: UpdatePath,
    added: Sequence[int],
    extensions: Sequence,
    policy: Policy,
) -> None:
    """§12.4.2 UpdatePath checks that need no secret, before merging.

    The leaf is valid as a commit leaf and keeps its identity; its encryption key and every path
    key are new to the tree; each path node carries one ciphertext per node of the copath child's
    resolution, leaves added by this commit excluded (§7.6). The parent hash is checked on merge.
    """
    old = tree.leaf(committer) if committer < tree.n_leaves else None
    if old is None:
        raise InvalidPathError(f"UpdatePath from blank leaf {committer}")
    _check_replacement_leaf(state, tree, old, path.leaf_node, LeafNodeSource.COMMIT, committer, extensions, policy)
    pairs = tree.filtered_direct_path_with_copath(committer)
    # The path's own nodes are blanked by the merge, so only the rest of the tree counts.
    on_path = set(tree.direct_path(committer))
    in_tree = {
        n.encryption_key for x, n in enumerate(tree.nodes) if n is not None and x not in on_path
    }
    keys = [path.leaf_node.encryption_key] + [n.encryption_key for n in path.nodes]
    if len(set(keys)) != len(keys) or any(k in in_tree for k in keys[1:]):
        raise InvalidPathError("an UpdatePath public key repeats a key of the tree (§12.4.2)")
    if len(pairs) != len(path.nodes):
        raise InvalidPathError(f"UpdatePath has {len(path.nodes)} nodes, filtered direct path {len(pairs)}")
    skip = {2 * leaf for leaf in added}
    for (p, sib), node in zip(pairs, path.nodes, strict=True):
        want = sum(1 for y in tree.resolution(sib) if y not in skip)
        if len(node.encrypted_path_secret) != want:
            raise InvalidPathError(
                f"path node {p}: {len(node.encrypted_path_secret)} ciphertexts for a resolution of {want} (§7.6)"
            )


def stage_commit(
    state: PublicState,
    ac: AuthenticatedContent,
    policy: Policy,
    now: float | None,
    path_handler: PathHandler = public_path_handler,
    proposals: Sequence[ResolvedProposal] | None = None,
) -> StagedCommit:
    """Every public step of §12.4.2 for a verified commit; the state is not touched.

    ``proposals`` may be given by a committer that already resolved its own list.
    """
    content = ac.content
    commit = content.body
    assert isinstance(commit, Commit)
    sender = content.sender
    if sender.sender_type != SenderType.MEMBER:
        raise UnsupportedMessageError("external commits are not supported")
    if ac.auth.confirmation_tag is None:
        raise InvalidCommitError("commit without confirmation tag")
    committer = sender.index
    if proposals is None:
        proposals = resolve_proposals(state, commit, sender.sender_type, committer)
    applied = apply_proposals(state, committer, proposals, policy, now)
    if applied.path_required and commit.path is None:
        raise MissingPathError("this commit must carry an UpdatePath (§12.4)")

    gc = state.group_context
    provisional = dataclasses.replace(gc, epoch=gc.epoch + 1, extensions=list(applied.extensions))
    tree = applied.tree
    if commit.path is not None:
        check_path_public(state, tree, committer, commit.path, list(applied.added), applied.extensions, policy)
        tree, tree_hash = path_handler(tree, committer, commit.path, provisional, list(applied.added))
    else:
        tree_hash = tree.tree_hash()
    cth = ks.confirmed_transcript_hash(state.suite, state.interim_transcript_hash, ac.confirmed_transcript_input())
    new_gc = dataclasses.replace(provisional, tree_hash=tree_hash, confirmed_transcript_hash=cth)
    interim = ks.interim_transcript_hash(state.suite, cth, ac.auth.confirmation_tag)
    return StagedCommit(
        committer,
        list(proposals),
        tree,
        new_gc,
        interim,
        applied.added,
        applied.removed,
        applied.updated,
        applied.psk_ids,
        commit.path,
    )


def cache_proposal(
    state: PublicState, ac: AuthenticatedContent, policy: Policy, now: float | None
) -> CachedProposal:
    """Validate a received proposal (§12.1) and return its cache entry (the caller stores it)."""
    proposal = ac.content.body
    assert isinstance(proposal, Proposal)
    if len(state.proposals) >= MAX_PROPOSALS_PER_EPOCH:
        raise ProposalLimitError(f"{MAX_PROPOSALS_PER_EPOCH} proposals are already pending this epoch")
    validate_proposal(state, proposal, ac.content.sender.sender_type, ac.content.sender.index, policy, now)
    ref = ac.proposal_ref(state.suite)
    return CachedProposal(ref, ac)


def verified_group_info_tree(suite: CipherSuite, info: GroupInfo, supplied: bytes | None) -> RatchetTree:
    """The ratchet tree from the extension (or supplied), matching the tree hash and valid (§12.4.3.1)."""
    try:
        tree = ratchet_tree_of(suite, info)
        if tree is None:
            if supplied is None:
                raise InvalidTreeError("GroupInfo has no ratchet_tree extension and none was supplied")
            tree = RatchetTree.from_bytes(suite, supplied)
    except (DecodeError, TreeError) as exc:
        raise InvalidTreeError(f"malformed ratchet tree: {exc}") from exc
    if tree.tree_hash() != info.group_context.tree_hash:
        raise InvalidTreeError("ratchet tree does not match the GroupInfo tree hash")
    try:
        tree.verify(info.group_context.group_id)
    except TreeError as exc:
        raise InvalidTreeError(str(exc)) from exc
    check_tree_against_context(tree, info.group_context.extensions)
    return tree


def verify_group_info_signature(suite: CipherSuite, info: GroupInfo, tree: RatchetTree) -> None:
    """§12.4.3.1: the signer is a non-blank leaf of the verified tree and its key signed the GroupInfo."""
    if info.signer >= tree.n_leaves or tree.leaf(info.signer) is None:
        raise InvalidGroupInfoError(f"GroupInfo signer {info.signer} is not a member")
    leaf = tree.leaf(info.signer)
    assert leaf is not None
    if not info.verify(suite, leaf.signature_key):
        raise InvalidSignatureError("GroupInfo signature does not verify with the signer's leaf key")


__all__ = [
    "GroupError",
    "WrongGroupError",
    "EpochError",
    "FutureEpochError",
    "StaleEpochError",
    "UnknownSenderError",
    "InvalidSignatureError",
    "WrongMembershipTag",
    "DecryptionError",
    "WrongConfirmationTag",
    "InvalidProposalError",
    "InvalidKeyPackageError",
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
    "Policy",
    "CachedProposal",
    "PublicState",
    "ResolvedProposal",
    "StagedCommit",
    "AppliedProposals",
    "check_epoch",
    "verify_public_message",
    "validate_proposal",
    "resolve_proposals",
    "apply_proposals",
    "check_path_public",
    "stage_commit",
    "cache_proposal",
    "credential_identity",
    "check_unique_identities",
    "check_tree_against_context",
    "verified_group_info_tree",
    "verify_group_info_signature",
    "check_key_package",
    "lifetime_ok",
    "public_path_handler",
    "required_capabilities",
    "sender_signature_key",
    "member_signature_key",
    "PATH_REQUIRED_TYPES",
    "KEY_PACKAGE_CLOCK_SKEW",
    "MAX_PROPOSALS_PER_EPOCH",
    "PathHandler",
]
