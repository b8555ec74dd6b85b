"""A GroupInfo's ratchet tree and signature checked before anything trusts it (§12.4.3.1).
"""

from __future__ import annotations

import logging

from .codec import DecodeError
from .crypto import CipherSuite
from .group_errors import InvalidGroupInfoError, InvalidSignatureError, InvalidTreeError
from .policy import check_tree_against_context
from .tree import (
    RatchetTree,
    TreeError,
)
from .welcome import ratchet_tree_of
from .welcome_structs import GroupInfo

log = logging.getLogger(__name__)


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
    "verified_group_info_tree",
    "verify_group_info_signature",
]
