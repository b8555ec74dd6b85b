"""Which proposals a committer puts in its commit (§12.2, §12.4): the cached ones that stay valid, then its own."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import MLSError
from .framing import SenderType
from .group_errors import DuplicateMemberError
from .messages import Extension
from .policy import Policy, credential_identity
from .proposal_structs import (
    Add,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    Remove,
    Update,
)
from .proposals import ResolvedProposal, validate_proposal
from .psks import PSKs
from .public_state import CachedProposal, PublicState
from .registries import ProposalType
from .tree_structs import KeyPackage

__all__ = ["select_proposals"]

log = logging.getLogger(__name__)


def select_proposals(
    public: PublicState,
    me: int,
    policy: Policy,
    psk_available: Callable[[PreSharedKeyID, PSKs | None], bool],
    kps: list[KeyPackage],
    remove_leaves: list[int],
    include_pending: bool,
    psks: PSKs | None,
    now: float,
    extensions: list[Extension] | None = None,
) -> tuple[list[ResolvedProposal], list[ProposalOrRef]]:
    """A committer's proposal list: cached proposals that keep it valid (§12.2, §12.4), then its own by value.

    A cached proposal no longer valid, or one that would clash with another (two Removes of one
    leaf, an Update of a removed leaf, a second Add of one identity, a repeated PSK), is left out.
    """
    resolved: list[ResolvedProposal] = []
    pors: list[ProposalOrRef] = []
    cached: list[CachedProposal] = list(public.proposals.values()) if include_pending else []
    removed = set(remove_leaves)
    for c in cached:
        body = c.proposal.body
        if isinstance(body, Remove) and body.removed != me:
            removed.add(body.removed)
    touched: set[int] = set()
    identities = {credential_identity(leaf) for i, leaf in public.tree.leaves() if i not in removed}
    seen_psks: set[bytes] = set()
    have_gce = False
    for c in cached:
        body = c.proposal.body
        take = False
        try:
            validate_proposal(public, c.proposal, c.sender.sender_type, c.sender.index, policy, now)
        except MLSError as exc:
            log.debug("cached %s proposal no longer valid: %s", c.proposal.proposal_type, exc)
            continue
        if isinstance(body, Remove):
            take = body.removed != me and body.removed not in touched
            if take:
                touched.add(body.removed)
        elif isinstance(body, Update):
            take = c.sender.index != me and c.sender.index not in removed and c.sender.index not in touched
            if take:
                touched.add(c.sender.index)
        elif isinstance(body, Add):
            ident = credential_identity(body.key_package.leaf_node)
            take = ident not in identities
            if take:
                identities.add(ident)
        elif isinstance(body, PreSharedKey):
            key = body.psk.to_bytes()
            take = key not in seen_psks and psk_available(body.psk, psks)
            if take:
                seen_psks.add(key)
        elif body.proposal_type == ProposalType.GROUP_CONTEXT_EXTENSIONS:
            take = not have_gce and extensions is None
            have_gce = True
        if take:
            resolved.append(ResolvedProposal(c.proposal, c.sender.sender_type, c.sender.index, c.ref))
            pors.append(ProposalOrRef(reference=c.ref))
        else:
            log.debug("leaving cached %s proposal out of our commit", c.proposal.proposal_type)
    own: list[Proposal] = [Proposal(Remove(leaf)) for leaf in remove_leaves if leaf not in touched]
    if extensions is not None:
        own.insert(0, Proposal(GroupContextExtensions(extensions)))
    for kp in kps:
        ident = credential_identity(kp.leaf_node)
        if ident in identities:
            raise DuplicateMemberError("an Add for an identity already in the group (§12.2)")
        identities.add(ident)
        own.append(Proposal(Add(kp)))
    for p in own:
        resolved.append(ResolvedProposal(p, SenderType.MEMBER, me))
        pors.append(ProposalOrRef(proposal=p))
    return resolved, pors
