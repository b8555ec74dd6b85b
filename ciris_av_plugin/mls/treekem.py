"""TreeKEM (RFC 9420 §7.4-§7.6): create and process UpdatePaths.

Both directions are pure functions: they take a :class:`RatchetTree`, a member's private state and
the provisional :class:`GroupContext` (whose ``tree_hash`` they fill in, §7.6: the context is the
one *after* the path is merged) and return new objects, leaving the inputs untouched. A failure
raises an :class:`~ciris_av_plugin.errors.MLSError` and changes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field

from . import tree_math as tm
from .crypto import CipherSuite
from .errors import CryptoError, ProtocolError
from .messages import GroupContext
from .registries import LeafNodeSource
from .tree import RatchetTree, TreeError, validate_leaf_node
from .tree_structs import HPKECiphertext, LeafNode, ParentNode, UpdatePath, UpdatePathNode

log = logging.getLogger(__name__)

UPDATE_PATH_LABEL = b"UpdatePathNode"
"""EncryptWithLabel label for path secrets (§7.6)."""


class TreeKEMError(ProtocolError):
    """An UpdatePath that cannot be merged, decrypted or does not match the derived keys."""


def derive_node_key_pair(suite: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    """node_secret = DeriveSecret(path_secret, "node"); (priv, pub) = DeriveKeyPair (§7.4)."""
    return suite.derive_key_pair(suite.derive_secret(path_secret, b"node"))


def next_path_secret(suite: CipherSuite, path_secret: bytes) -> bytes:
    """path_secret[n] = DeriveSecret(path_secret[n-1], "path") (§7.4)."""
    return suite.derive_secret(path_secret, b"path")


@dataclass
class TreeKEMPrivate:
    """A member's private keys: its leaf's HPKE key and those of parents it knows (§7.4 invariant)."""

    leaf_index: int
    encryption_priv: bytes
    path_keys: dict[int, bytes] = field(default_factory=dict)
    """Node index -> HPKE private key for parent nodes on the member's direct path."""

    def key_for(self, x: int) -> bytes | None:
        if x == 2 * self.leaf_index:
            return self.encryption_priv
        return self.path_keys.get(x)

    def set_path_secret(self, suite: CipherSuite, x: int, path_secret: bytes) -> bytes:
        """Store the private key derived from ``path_secret`` at node ``x``; return its public key."""
        priv, pub = derive_node_key_pair(suite, path_secret)
        self.path_keys[x] = priv
        return pub

    def prune(self, tree: RatchetTree) -> None:
        """Forget keys of nodes that are now blank or outside the tree (after Remove/truncation, §7.7).

        Call after every proposal that blanks nodes; a key kept for a blank node would be stale
        the moment another commit refills that node.
        """
        for x in list(self.path_keys):
            if x >= len(tree.nodes) or tree.nodes[x] is None:
                del self.path_keys[x]

    def check_against(self, tree: RatchetTree) -> None:
        """Every private key must match a non-blank node's public key (treekem vector, §7.4)."""
        leaf = tree.leaf(self.leaf_index)
        if leaf is None or tree.suite.hpke_public_key(self.encryption_priv) != leaf.encryption_key:
            raise TreeKEMError(f"leaf {self.leaf_index} private key does not match the tree")
        for x, priv in self.path_keys.items():
            node = tree.nodes[x] if 0 <= x < len(tree.nodes) else None
            if not isinstance(node, ParentNode) or tree.suite.hpke_public_key(priv) != node.encryption_key:
                raise TreeKEMError(f"node {x} private key does not match the tree")

    def implant_from(self, tree: RatchetTree, x: int, path_secret: bytes) -> None:
        """A joiner's path_secret from a Welcome is for node ``x``; derive keys up to the root (§12.4.3.1).

        Above ``x`` the committer's filtered direct path is exactly the non-blank ancestors, so the
        next secret is derived once per non-blank ancestor; each public key is checked.
        """
        suite = tree.suite
        nodes = [x] + tm.direct_path(x, tree.n_leaves)
        secret = path_secret
        first = True
        for y in nodes:
            node = tree.nodes[y]
            if node is None:
                if first:
                    raise TreeKEMError(f"path secret for blank node {y}")
                continue
            if not first:
                secret = next_path_secret(suite, secret)
            first = False
            if not isinstance(node, ParentNode) or self.set_path_secret(suite, y, secret) != node.encryption_key:
                raise TreeKEMError(f"path secret does not give node {y}'s public key")


@dataclass
class PathResult:
    """Outcome of creating or processing an UpdatePath; the new tree is already merged."""

    tree: RatchetTree
    private: TreeKEMPrivate
    commit_secret: bytes
    group_context: GroupContext
    """The provisional context with the merged tree's hash, as used for the encryption."""
    update_path: UpdatePath
    path_secrets: dict[int, bytes] = field(default_factory=dict)
    """Node index -> path secret for the nodes this member learnt (all of them for the committer)."""
    decrypted_path_secret: bytes | None = None
    """For a receiver: the path secret it decrypted (at the lowest common ancestor)."""

    def path_secret_for_joiner(self, leaf: int) -> tuple[int, bytes] | None:
        """(node, path secret) for a new member: the lowest path node above its leaf (§12.4.3.1)."""
        for x in tm.direct_path(2 * leaf, self.tree.n_leaves):
            if x in self.path_secrets:
                return x, self.path_secrets[x]
        return None


def _context_bytes(template: GroupContext, tree: RatchetTree) -> tuple[GroupContext, bytes]:
    gc = dataclasses.replace(template, tree_hash=tree.tree_hash())
    return gc, gc.to_bytes()


def _resolution_excluding(tree: RatchetTree, x: int, excluded: Collection[int]) -> list[int]:
    """Resolution of ``x`` minus the leaves added in this same commit (§7.6, §12.4.2)."""
    skip = {2 * leaf for leaf in excluded}
    return [y for y in tree.resolution(x) if y not in skip]


def _public_key_at(tree: RatchetTree, y: int) -> bytes:
    node = tree.nodes[y]
    if node is None:
        raise TreeError(f"resolution node {y} is blank")
    return node.encryption_key


def create_update_path(
    tree: RatchetTree,
    leaf_index: int,
    sig_priv: bytes,
    group_context: GroupContext,
    excluded_leaves: Collection[int] = (),
    leaf_secret: bytes | None = None,
    leaf_template: LeafNode | None = None,
) -> PathResult:
    """Build a committer's UpdatePath and the tree after it (§7.4, §7.5, §7.6, §7.9).

    ``leaf_template`` may change credential, capabilities or extensions of the new leaf (§7.5);
    by default the current leaf is reused with fresh keys. ``excluded_leaves`` are the leaves added
    by this commit's Add proposals: they receive the path secret via the Welcome instead.
    """
    suite = tree.suite
    old_leaf = tree.leaf(leaf_index)
    if old_leaf is None:
        raise TreeKEMError(f"leaf {leaf_index} is blank")
    base = leaf_template if leaf_template is not None else old_leaf
    if suite.signature_public_key(sig_priv) != base.signature_key:
        raise TreeKEMError("signature key does not match the leaf's signature_key")
    if leaf_secret is None:
        leaf_secret = os.urandom(suite.Nh)

    new = tree.copy()
    new.blank_path(leaf_index)
    pairs = new.filtered_direct_path_with_copath(leaf_index)

    leaf_priv, leaf_pub = derive_node_key_pair(suite, leaf_secret)
    private = TreeKEMPrivate(leaf_index, leaf_priv)
    secrets: dict[int, bytes] = {}
    ordered: list[bytes] = []
    secret = leaf_secret
    for p, _ in pairs:
        secret = next_path_secret(suite, secret)
        ordered.append(secret)
        secrets[p] = secret
        pub = private.set_path_secret(suite, p, secret)
        new.nodes[p] = ParentNode(pub, b"", [])
    commit_secret = next_path_secret(suite, secret)

    parent_hash = new.set_path_parent_hashes(leaf_index)
    leaf = LeafNode(
        encryption_key=leaf_pub,
        signature_key=base.signature_key,
        credential=copy.deepcopy(base.credential),
        capabilities=copy.deepcopy(base.capabilities),
        leaf_node_source=LeafNodeSource.COMMIT,
        lifetime=None,
        parent_hash=parent_hash,
        extensions=copy.deepcopy(base.extensions),
    )
    leaf.sign(suite, sig_priv, group_context.group_id, leaf_index)
    new.nodes[2 * leaf_index] = leaf

    gc, ctx = _context_bytes(group_context, new)
    path_nodes = []
    for (p, sib), secret in zip(pairs, ordered, strict=True):
        cts = []
        for y in _resolution_excluding(new, sib, excluded_leaves):
            kem_output, ct = suite.encrypt_with_label(_public_key_at(new, y), UPDATE_PATH_LABEL, ctx, secret)
            cts.append(HPKECiphertext(kem_output, ct))
        node = new.nodes[p]
        assert isinstance(node, ParentNode)
        path_nodes.append(UpdatePathNode(node.encryption_key, cts))
    path = UpdatePath(leaf, path_nodes)
    return PathResult(new, private, commit_secret, gc, path, secrets)


def merge_update_path(
    tree: RatchetTree,
    sender: int,
    path: UpdatePath,
    group_id: bytes,
    excluded_leaves: Collection[int] | None = None,
) -> RatchetTree:
    """Apply a received UpdatePath's public part and check what needs no private key (§7.5, §7.9.2).

    Checks the new leaf (§7.3, source commit, signed for ``group_id`` and ``sender``), the node
    count against the filtered direct path and the leaf's parent hash. With ``excluded_leaves``
    (the leaves added by the same commit; pass ``()`` if none) it also checks that every node
    carries one ciphertext per resolution node (§7.6), which is all a keyless relay can verify of
    the encryption. Returns a new tree; ``tree`` is unchanged.
    """
    suite = tree.suite
    if tree.leaf(sender) is None:
        raise TreeKEMError(f"UpdatePath from blank leaf {sender}")
    leaf = path.leaf_node
    try:
        validate_leaf_node(suite, leaf, LeafNodeSource.COMMIT, group_id=group_id, leaf_index=sender)
    except TreeError as exc:
        raise TreeKEMError(f"UpdatePath leaf node: {exc}") from exc
    new = tree.copy()
    new.blank_path(sender)
    pairs = new.filtered_direct_path_with_copath(sender)
    if len(pairs) != len(path.nodes):
        raise TreeKEMError(f"UpdatePath has {len(path.nodes)} nodes, filtered direct path {len(pairs)}")
    if excluded_leaves is not None:
        for (_, sib), upn in zip(pairs, path.nodes, strict=True):
            want = len(_resolution_excluding(new, sib, excluded_leaves))
            if len(upn.encrypted_path_secret) != want:
                raise TreeKEMError(
                    f"{len(upn.encrypted_path_secret)} ciphertexts for a resolution of {want} nodes (§7.6)"
                )
    for (p, _), upn in zip(pairs, path.nodes, strict=True):
        new.nodes[p] = ParentNode(upn.encryption_key, b"", [])
    expected = new.set_path_parent_hashes(sender)
    if leaf.parent_hash != expected:
        raise TreeKEMError("UpdatePath leaf parent_hash does not match the path (§7.9.2)")
    try:
        new.check_leaf_fits(leaf, replacing=sender)
    except TreeError as exc:
        raise TreeKEMError(f"UpdatePath leaf node: {exc}") from exc
    new.nodes[2 * sender] = leaf
    return new


def process_update_path(
    tree: RatchetTree,
    private: TreeKEMPrivate,
    sender: int,
    path: UpdatePath,
    group_context: GroupContext,
    excluded_leaves: Collection[int] = (),
) -> PathResult:
    """Merge a received UpdatePath and decrypt the path secret meant for this member (§7.5).

    ``excluded_leaves`` are the leaves added by the same commit; they are not in the resolutions the
    sender encrypted to. Returns the new tree and private state and the commit secret.
    """
    suite = tree.suite
    me = private.leaf_index
    if me == sender:
        raise TreeKEMError("a member does not process its own UpdatePath")
    new = merge_update_path(tree, sender, path, group_context.group_id, excluded_leaves)
    pairs = new.filtered_direct_path_with_copath(sender)
    gc, ctx = _context_bytes(group_context, new)

    k = next((i for i, (_, sib) in enumerate(pairs) if new.in_subtree(2 * me, sib)), None)
    if k is None:
        raise TreeKEMError(f"leaf {me} is not below the sender's filtered direct path")
    sib = pairs[k][1]
    resolution = _resolution_excluding(new, sib, excluded_leaves)
    cts = path.nodes[k].encrypted_path_secret
    if len(cts) != len(resolution):
        raise TreeKEMError(f"{len(cts)} ciphertexts for a resolution of {len(resolution)} nodes (§7.6)")
    new_private = TreeKEMPrivate(me, private.encryption_priv, dict(private.path_keys))
    new_private.prune(tree)
    pos = next((i for i, y in enumerate(resolution) if new_private.key_for(y) is not None), None)
    if pos is None:
        raise TreeKEMError(f"leaf {me} holds no key in the resolution of node {sib}")
    priv_key = new_private.key_for(resolution[pos])
    assert priv_key is not None
    try:
        secret = suite.decrypt_with_label(priv_key, UPDATE_PATH_LABEL, ctx, cts[pos].kem_output, cts[pos].ciphertext)
    except CryptoError as exc:
        raise TreeKEMError("cannot decrypt the path secret") from exc
    decrypted = secret

    for x in tm.direct_path(2 * sender, new.n_leaves):
        new_private.path_keys.pop(x, None)
    learnt: dict[int, bytes] = {}
    for i in range(k, len(pairs)):
        if i > k:
            secret = next_path_secret(suite, secret)
        p = pairs[i][0]
        learnt[p] = secret
        if new_private.set_path_secret(suite, p, secret) != path.nodes[i].encryption_key:
            raise TreeKEMError(f"derived public key for node {p} differs from the UpdatePath (§7.5)")
    commit_secret = next_path_secret(suite, secret)
    new_private.prune(new)
    return PathResult(new, new_private, commit_secret, gc, path, learnt, decrypted)


__all__ = [
    "TreeKEMError",
    "TreeKEMPrivate",
    "PathResult",
    "create_update_path",
    "merge_update_path",
    "process_update_path",
    "derive_node_key_pair",
    "next_path_secret",
]
