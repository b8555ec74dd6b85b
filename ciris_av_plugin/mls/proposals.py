"""Proposals: each one's validity (§12.1), a commit's list resolved and validated (§12.2), and its
application in the §12.3 order, shared by :class:`Group` and :class:`PublicGroup`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .framing import (
    AuthenticatedContent,
    SenderType,
)
from .group_errors import (
    DuplicateMemberError,
    InvalidCommitError,
    InvalidKeyPackageError,
    InvalidPathError,
    InvalidProposalError,
    PolicyRefusedError,
    ProposalLimitError,
    UnknownProposalError,
    UnsupportedMessageError,
)
from .policy import (
    Policy,
    check_extensions_supported,
    check_key_package,
    credential_identity,
    required_capabilities,
)
from .proposal_structs import (
    Add,
    Commit,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from .public_state import CachedProposal, PublicState
from .registries import LeafNodeSource, ProposalType, PSKType, ResumptionPSKUsage
from .tree import (
    RatchetTree,
    TreeError,
    check_required_capabilities,
    validate_leaf_node,
)
from .tree_structs import KeyPackage, LeafNode

log = logging.getLogger(__name__)


PATH_REQUIRED_TYPES = frozenset(
    {ProposalType.UPDATE, ProposalType.REMOVE, ProposalType.EXTERNAL_INIT, ProposalType.GROUP_CONTEXT_EXTENSIONS}
)
"""§12.4 / §17.4: proposal types whose commit must carry an UpdatePath."""


MAX_PROPOSALS_PER_EPOCH = 512
"""Proposals cached per epoch (by Group and PublicGroup). A call of up to a few hundred members
sees at most one leave/update per member and a handful of adds between commits; the bound stops a
misbehaving member from growing the relay's memory without limit."""


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
            check_extensions_supported(body.extensions, leaf, i)
    elif isinstance(body, ReInit):
        raise UnsupportedMessageError("ReInit proposals are not supported")
    else:
        raise InvalidProposalError("ExternalInit outside an external commit (§12.2)")


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


@dataclass
class ResolvedProposal:
    """One entry of a commit's proposal list with who proposed it."""

    proposal: Proposal
    sender_type: SenderType
    sender_index: int
    ref: bytes | None = None
    """The ProposalRef for a proposal by reference; None when inline (the committer's own)."""


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
                check_extensions_supported(extensions, leaf, i)
            except InvalidProposalError as exc:
                raise InvalidCommitError(str(exc)) from exc

    psk_ids = [rp.proposal.body.psk for rp in psks]  # type: ignore[union-attr]
    path_required = not proposals or any(int(rp.proposal.proposal_type) in PATH_REQUIRED_TYPES for rp in proposals)
    return AppliedProposals(tree, extensions, added, removed, updated, psk_ids, path_required)


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


__all__ = [
    "PATH_REQUIRED_TYPES",
    "MAX_PROPOSALS_PER_EPOCH",
    "validate_proposal",
    "ResolvedProposal",
    "AppliedProposals",
    "resolve_proposals",
    "apply_proposals",
    "cache_proposal",
]
