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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import key_schedule as ks
from .framing import (
    AuthenticatedContent,
    SenderType,
)
from .group_errors import InvalidCommitError, InvalidPathError, MissingPathError, UnsupportedMessageError
from .messages import GroupContext
from .policy import Policy
from .proposal_structs import Commit, PreSharedKeyID
from .proposals import ResolvedProposal, _check_replacement_leaf, apply_proposals, resolve_proposals
from .public_state import PublicState
from .registries import LeafNodeSource
from .tree import (
    RatchetTree,
)
from .tree_structs import KeyPackage, UpdatePath
from .treekem import TreeKEMError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Errors: one type per failure, so callers (the relay's sequencer, the session) can act on each.


# --------------------------------------------------------------------------------------------------
# Policy


# --------------------------------------------------------------------------------------------------
# Public state


# --------------------------------------------------------------------------------------------------
# Framing checks


# --------------------------------------------------------------------------------------------------
# Individual proposals (§12.1)


# --------------------------------------------------------------------------------------------------
# Commit: proposal list, application, path (§12.2-§12.4.2)


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


__all__ = [
    "StagedCommit",
    "PathHandler",
    "public_path_handler",
    "check_path_public",
    "stage_commit",
]
