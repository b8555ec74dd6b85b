"""The public ratchet tree (RFC 9420 §4, §7): node array, resolution, tree and parent hashes.

The tree is an array of optional nodes in the Appendix C layout (leaf ``i`` at node ``2i``), always
a full binary tree whose leaf count is a power of two (§7.7). It holds public state only; private
keys live with the TreeKEM state of a member (:mod:`treekem`). Operations that change the tree
(:meth:`RatchetTree.add_leaf`, :meth:`update_leaf`, :meth:`remove_leaf`) work on ``self``; callers
that must stay unchanged on error (h11's rule) validate first or work on :meth:`copy`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import tree_math as tm
from .codec import Writer
from .crypto import CipherSuite
from .errors import ProtocolError
from .messages import RequiredCapabilities
from .registries import ExtensionType, LeafNodeSource, ProposalType, ProtocolVersion
from .tree_structs import (
    KeyPackage,
    LeafNode,
    ParentNode,
    decode_ratchet_tree,
    encode_node,
    encode_ratchet_tree,
)

log = logging.getLogger(__name__)

Node = LeafNode | ParentNode

# LeafIndex is a uint32 (§7.8), but no group here comes near that: a million members is far beyond
# a video call, and the cap keeps add_leaf's doubling and any decoded tree's padding bounded. (A
# decoded ratchet_tree is smaller still: codec.MAX_VECTOR_ITEMS caps its node count.)
MAX_TREE_LEAVES = 1 << 20


class TreeError(ProtocolError):
    """A ratchet tree that breaks a structural or cryptographic invariant of §7."""


@dataclass
class RatchetTree:
    """Public ratchet tree: ``nodes[x]`` is node ``x`` or ``None`` when blank."""

    suite: CipherSuite
    nodes: list[Node | None] = field(default_factory=lambda: [None])

    # ------------------------------------------------------------------ construction / codec

    @classmethod
    def from_nodes(cls, suite: CipherSuite, nodes: list[Node | None]) -> RatchetTree:
        """Build from the (possibly trimmed) ratchet_tree node list, checking the §12.4.3.3 rules."""
        if not nodes:
            raise TreeError("empty ratchet tree")
        if nodes[-1] is None:
            raise TreeError("ratchet tree ends in a blank node (§12.4.3.3)")
        if len(nodes) > tm.node_width(MAX_TREE_LEAVES):
            raise TreeError(f"ratchet tree of {len(nodes)} nodes exceeds the limit")
        for x, node in enumerate(nodes):
            if node is None:
                continue
            if tm.is_leaf(x) != isinstance(node, LeafNode):
                raise TreeError(f"node {x} has the wrong node type for its position")
        n_leaves = tm.leaf_width_for((len(nodes) + 1) // 2)
        padded = list(nodes) + [None] * (tm.node_width(n_leaves) - len(nodes))
        tree = cls(suite, padded)
        tree._check_unmerged_leaves()
        return tree

    @classmethod
    def from_bytes(cls, suite: CipherSuite, data: bytes) -> RatchetTree:
        """Decode the ratchet_tree extension body (``optional<Node> ratchet_tree<V>``)."""
        return cls.from_nodes(suite, decode_ratchet_tree(data))

    def to_bytes(self) -> bytes:
        """Encode without the trailing blank nodes (§12.4.3.3: the sender MUST NOT include them)."""
        return encode_ratchet_tree(self.trimmed_nodes())

    def trimmed_nodes(self) -> list[Node | None]:
        end = len(self.nodes)
        while end > 0 and self.nodes[end - 1] is None:
            end -= 1
        return self.nodes[:end]

    def copy(self) -> RatchetTree:
        """An independent tree: parent nodes are copied (tree operations mutate their unmerged
        lists and parent hashes); leaf nodes are shared, because tree operations replace leaves
        and never change one in place."""
        return RatchetTree(
            self.suite,
            [
                ParentNode(n.encryption_key, n.parent_hash, list(n.unmerged_leaves))
                if isinstance(n, ParentNode)
                else n
                for n in self.nodes
            ],
        )

    def _check_unmerged_leaves(self) -> None:
        """Each unmerged leaf must be a non-blank leaf below the parent that lists it (§7.1, §7.8)."""
        for x, node in enumerate(self.nodes):
            if not isinstance(node, ParentNode):
                continue
            for leaf in node.unmerged_leaves:
                if leaf >= self.n_leaves or not self.in_subtree(2 * leaf, x):
                    raise TreeError(f"unmerged leaf {leaf} is not below node {x}")
                if self.nodes[2 * leaf] is None:
                    raise TreeError(f"unmerged leaf {leaf} of node {x} is blank")
                for anc in tm.direct_path(2 * leaf, self.n_leaves):
                    if anc == x:
                        break
                    other = self.nodes[anc]
                    if isinstance(other, ParentNode) and leaf not in other.unmerged_leaves:
                        raise TreeError(f"unmerged leaf {leaf} of node {x} missing below it at {anc}")

    # ------------------------------------------------------------------ shape

    @property
    def n_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    @property
    def root(self) -> int:
        return tm.root(self.n_leaves)

    def leaf(self, index: int) -> LeafNode | None:
        if not 0 <= index < self.n_leaves:
            raise TreeError(f"leaf {index} outside a tree of {self.n_leaves} leaves")
        node = self.nodes[2 * index]
        assert node is None or isinstance(node, LeafNode)
        return node

    def leaves(self) -> Iterable[tuple[int, LeafNode]]:
        """The non-blank leaves as ``(leaf_index, LeafNode)``."""
        for i in range(self.n_leaves):
            node = self.nodes[2 * i]
            if isinstance(node, LeafNode):
                yield i, node

    def _check_node(self, x: int) -> None:
        if not 0 <= x < len(self.nodes):
            raise TreeError(f"node {x} outside a tree of {len(self.nodes)} nodes")

    def node(self, x: int) -> Node | None:
        """Node ``x`` or ``None`` if blank; :class:`TreeError` outside the tree (never IndexError)."""
        self._check_node(x)
        return self.nodes[x]

    def parent_node(self, x: int) -> ParentNode | None:
        node = self.node(x)
        if node is not None and not isinstance(node, ParentNode):
            raise TreeError(f"node {x} is a leaf")
        return node

    @staticmethod
    def in_subtree(x: int, top: int) -> bool:
        """Whether node ``x`` lies in the subtree rooted at ``top``."""
        half = (1 << tm.level(top)) - 1
        return top - half <= x <= top + half

    def direct_path(self, leaf: int) -> list[int]:
        return tm.direct_path(2 * leaf, self.n_leaves)

    def copath(self, leaf: int) -> list[int]:
        return tm.copath(2 * leaf, self.n_leaves)

    # ------------------------------------------------------------------ resolution (§4.1.1, §4.1.2)

    def resolution(self, x: int) -> list[int]:
        """Node indices covering the subtree of ``x`` with the fewest non-blank nodes (§4.1.1)."""
        self._check_node(x)
        return self._resolution(x)

    def _resolution(self, x: int) -> list[int]:
        node = self.nodes[x]
        if isinstance(node, LeafNode):
            return [x]
        if isinstance(node, ParentNode):
            return [x] + [2 * leaf for leaf in node.unmerged_leaves]
        if tm.is_leaf(x):
            return []
        return self._resolution(tm.left(x)) + self._resolution(tm.right(x))

    def filtered_direct_path(self, leaf: int) -> list[int]:
        """Direct path minus nodes whose copath child has an empty resolution (§4.1.2)."""
        return [anc for anc, _ in self.filtered_direct_path_with_copath(leaf)]

    def filtered_direct_path_with_copath(self, leaf: int) -> list[tuple[int, int]]:
        """``(node, copath child)`` pairs of the filtered direct path, leaf to root."""
        return [
            (anc, sib)
            for anc, sib in zip(self.direct_path(leaf), self.copath(leaf), strict=True)
            if self.resolution(sib)
        ]

    # ------------------------------------------------------------------ evolution (§7.7, §12.1)

    def _extend(self) -> None:
        """Double the width: the old tree becomes the left subtree of a new blank root (§7.7)."""
        if self.n_leaves >= MAX_TREE_LEAVES:
            raise TreeError("tree is at its maximum size")
        self.nodes.extend([None] * len(self.nodes) + [None])

    def _truncate(self) -> None:
        """Drop the right half while it holds no non-blank leaf (§7.7, §12.1.3)."""
        while self.n_leaves > 1:
            half = self.n_leaves // 2
            if any(self.nodes[2 * i] is not None for i in range(half, self.n_leaves)):
                return
            self.nodes = self.nodes[: tm.node_width(half)]

    def blank_path(self, leaf: int) -> None:
        """Blank every node on the leaf's direct path (not the leaf itself)."""
        for x in self.direct_path(leaf):
            self.nodes[x] = None

    def add_leaf(self, leaf_node: LeafNode) -> int:
        """Insert into the leftmost blank leaf, extending if full; mark it unmerged above (§12.1.1)."""
        index = next((i for i in range(self.n_leaves) if self.nodes[2 * i] is None), None)
        if index is None:
            index = self.n_leaves
            self._extend()
        self.nodes[2 * index] = leaf_node
        for x in self.direct_path(index):
            node = self.nodes[x]
            if isinstance(node, ParentNode):
                node.unmerged_leaves.append(index)
        return index

    def update_leaf(self, index: int, leaf_node: LeafNode) -> None:
        """Replace a member's leaf and blank its direct path (§12.1.2)."""
        if self.leaf(index) is None:
            raise TreeError(f"update of blank leaf {index}")
        self.nodes[2 * index] = leaf_node
        self.blank_path(index)

    def remove_leaf(self, index: int) -> None:
        """Blank the leaf and its direct path, then truncate the right subtree (§12.1.3)."""
        if self.leaf(index) is None:
            raise TreeError(f"remove of blank leaf {index}")
        self.nodes[2 * index] = None
        self.blank_path(index)
        self._truncate()

    # ------------------------------------------------------------------ tree hash (§7.8)

    def _hash_input(self, x: int, left_hash: bytes, right_hash: bytes, exclude: frozenset[int]) -> bytes:
        w = Writer()
        node = self.nodes[x]
        if tm.is_leaf(x):
            leaf = x // 2
            w.u8(1).u32(leaf)
            w.optional(None if leaf in exclude else node, lambda ww, n: n.encode(ww))
        else:
            if isinstance(node, ParentNode) and exclude and any(u in exclude for u in node.unmerged_leaves):
                node = ParentNode(
                    node.encryption_key,
                    node.parent_hash,
                    [u for u in node.unmerged_leaves if u not in exclude],
                )
            w.u8(2)
            w.optional(node, lambda ww, n: n.encode(ww))
            w.opaque(left_hash).opaque(right_hash)
        return w.bytes()

    def tree_hash(self, x: int | None = None, exclude: frozenset[int] = frozenset()) -> bytes:
        """TreeHashInput hash of the subtree at ``x`` (the root by default), §7.8.

        ``exclude`` blanks those leaves and drops them from unmerged lists: the "original sibling
        tree hash" of §7.9.
        """
        if x is None:
            x = self.root
        self._check_node(x)
        return self._tree_hash(x, exclude)

    def _tree_hash(self, x: int, exclude: frozenset[int]) -> bytes:
        if tm.is_leaf(x):
            return self.suite.hash(self._hash_input(x, b"", b"", exclude))
        left = self._tree_hash(tm.left(x), exclude)
        right = self._tree_hash(tm.right(x), exclude)
        return self.suite.hash(self._hash_input(x, left, right, exclude))

    def all_tree_hashes(self) -> list[bytes]:
        """Tree hash of every node in one bottom-up pass (index = node index)."""
        out: list[bytes] = [b""] * len(self.nodes)
        for lvl in range(tm.level(self.root) + 1):
            step = 1 << (lvl + 1)
            for x in range((1 << lvl) - 1, len(self.nodes), step):
                if lvl == 0:
                    out[x] = self.suite.hash(self._hash_input(x, b"", b"", frozenset()))
                else:
                    out[x] = self.suite.hash(
                        self._hash_input(x, out[tm.left(x)], out[tm.right(x)], frozenset())
                    )
        return out

    # ------------------------------------------------------------------ parent hash (§7.9)

    def parent_hash_of(self, p: int, sibling: int, sibling_hash: bytes | None = None) -> bytes:
        """Parent hash of parent ``p`` with copath child ``sibling`` (ParentHashInput, §7.9)."""
        node = self.node(p)
        if not isinstance(node, ParentNode):
            raise TreeError(f"parent hash of blank node {p}")
        if sibling_hash is None:
            sibling_hash = self.tree_hash(sibling, frozenset(node.unmerged_leaves))
        data = Writer().opaque(node.encryption_key).opaque(node.parent_hash).opaque(sibling_hash).bytes()
        return self.suite.hash(data)

    def set_path_parent_hashes(self, leaf: int) -> bytes:
        """Fill parent_hash along the leaf's filtered direct path, root first; return the leaf's value.

        Used after new keys were placed on the path (§7.5 step 3): the root gets an empty parent
        hash, each lower node the parent hash of the next node up, and the returned value belongs
        in the committer's LeafNode.
        """
        pairs = self.filtered_direct_path_with_copath(leaf)
        above = b""
        for p, sib in reversed(pairs):
            node = self.nodes[p]
            if not isinstance(node, ParentNode):
                raise TreeError(f"filtered direct path node {p} is blank")
            node.parent_hash = above
            above = self.parent_hash_of(p, sib)
        return above

    def _parent_hash_valid(self, p: int, hashes: list[bytes]) -> bool:
        """Whether some descendant D chains to ``p`` by parent hash (§7.9.2, the "top down" check)."""
        node = self.nodes[p]
        assert isinstance(node, ParentNode)
        unmerged = set(node.unmerged_leaves)
        for c, s in ((tm.left(p), tm.right(p)), (tm.right(p), tm.left(p))):
            sib_hash = hashes[s] if not unmerged else None
            ph = self.parent_hash_of(p, s, sib_hash)
            res = self.resolution(c)
            under_c = {2 * u for u in unmerged if self.in_subtree(2 * u, c)}
            for d in res:
                dnode = self.nodes[d]
                if dnode is None:
                    continue
                if isinstance(dnode, LeafNode) and dnode.leaf_node_source != LeafNodeSource.COMMIT:
                    continue
                if dnode.parent_hash == ph and set(res) - {d} == under_c:
                    return True
        return False

    def verify_parent_hashes(self) -> None:
        """Every non-blank parent must be parent-hash valid (§7.9.2), else :class:`TreeError`."""
        hashes = self.all_tree_hashes()
        for x in range(1, len(self.nodes), 2):
            if self.nodes[x] is not None and not self._parent_hash_valid(x, hashes):
                raise TreeError(f"parent node {x} is not parent-hash valid")

    # ------------------------------------------------------------------ leaf checks (§7.3, no clock)

    def verify_leaves(self, group_id: bytes, now: int | None = None) -> None:
        """§7.3 for every leaf as a joiner sees them (§12.4.3.1); raises :class:`TreeError`.

        Signatures with their source-dependent context, listed extensions, credential types that
        every member supports, and keys unique across the tree (parent keys included). Lifetimes
        are checked only when ``now`` (seconds) is passed in; the RFC makes that check optional
        for received trees because a leaf may expire between commit and join.
        """
        in_use = {int(leaf.credential.credential_type) for _, leaf in self.leaves()}
        enc_keys: set[bytes] = set()
        sig_keys: set[bytes] = set()
        for i, leaf in self.leaves():
            if not leaf.verify(self.suite, group_id, i):
                raise TreeError(f"leaf {i} signature does not verify")
            check_leaf_capabilities(leaf, i)
            if not in_use <= {int(c) for c in leaf.capabilities.credentials}:
                raise TreeError(f"leaf {i} does not support every credential type in use")
            if now is not None and leaf.lifetime is not None and not leaf.lifetime.contains(now):
                raise TreeError(f"leaf {i} lifetime does not cover the current time")
            if leaf.encryption_key in enc_keys or leaf.signature_key in sig_keys:
                raise TreeError(f"leaf {i} repeats another member's key")
            enc_keys.add(leaf.encryption_key)
            sig_keys.add(leaf.signature_key)
        for x in range(1, len(self.nodes), 2):
            node = self.nodes[x]
            if isinstance(node, ParentNode):
                if node.encryption_key in enc_keys:
                    raise TreeError(f"parent {x} repeats an encryption key")
                enc_keys.add(node.encryption_key)

    def check_leaf_fits(self, leaf: LeafNode, replacing: int | None = None) -> None:
        """Group-wide part of §7.3 for a leaf about to enter at ``replacing`` (None for an Add).

        Its credential type must be supported by every member and it must support every
        credential type in use; its signature and encryption keys must be new to the tree (the
        leaf it replaces excepted for the signature key, which an Update may keep).
        """
        ctype = int(leaf.credential.credential_type)
        own = {int(c) for c in leaf.capabilities.credentials}
        for i, other in self.leaves():
            if i == replacing:
                if other.encryption_key == leaf.encryption_key:
                    raise TreeError("an Update must change the encryption key (§7.3)")
                continue
            if ctype not in {int(c) for c in other.capabilities.credentials}:
                raise TreeError(f"member {i} does not support credential type {ctype}")
            if int(other.credential.credential_type) not in own:
                raise TreeError(f"leaf does not support member {i}'s credential type")
            if other.signature_key == leaf.signature_key or other.encryption_key == leaf.encryption_key:
                raise TreeError(f"leaf repeats member {i}'s key")
        for x in range(1, len(self.nodes), 2):
            node = self.nodes[x]
            if isinstance(node, ParentNode) and node.encryption_key == leaf.encryption_key:
                raise TreeError(f"leaf repeats parent {x}'s encryption key")

    def verify(self, group_id: bytes, now: int | None = None) -> None:
        """What a joiner checks on a received tree (§12.4.3.1): leaves and parent hashes.

        The unmerged-leaves rules of that list were already enforced when the tree was built.
        """
        self.verify_leaves(group_id, now)
        self.verify_parent_hashes()


DEFAULT_EXTENSION_TYPES = frozenset(int(e) for e in ExtensionType)
"""§7.2: the five RFC extension types are "default" and are never listed in capabilities."""


def check_leaf_capabilities(leaf: LeafNode, where: object) -> None:
    """§7.2: non-default extensions and the credential type must appear in the leaf's capabilities."""
    listed = {int(e) for e in leaf.capabilities.extensions}
    for ext in leaf.extensions:
        t = int(ext.extension_type)
        if t not in DEFAULT_EXTENSION_TYPES and t not in listed:
            raise TreeError(f"leaf {where} uses extension {t} it does not list")
    if int(leaf.credential.credential_type) not in {int(c) for c in leaf.capabilities.credentials}:
        raise TreeError(f"leaf {where} credential type is not in its capabilities")


DEFAULT_PROPOSAL_TYPES = frozenset(int(p) for p in ProposalType if p != ProposalType.RESERVED)
"""§7.2: the seven RFC proposal types are "default" and are never listed in capabilities."""


def validate_leaf_node(
    suite: CipherSuite,
    leaf: LeafNode,
    source: LeafNodeSource,
    *,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
    now: int | None = None,
    required: RequiredCapabilities | None = None,
) -> None:
    """The per-leaf checks of §7.3; raises :class:`TreeError`.

    ``source`` is what the context demands (key_package in a KeyPackage, update in an Update,
    commit in an UpdatePath). ``now`` (seconds, passed in: no clock here) enables the lifetime
    check; callers allow their own clock skew by moving ``now``. Group-wide checks (credential
    types in use, key uniqueness) are :meth:`RatchetTree.check_leaf_fits`.
    """
    if leaf.leaf_node_source != source:
        raise TreeError(f"leaf_node_source is {leaf.leaf_node_source!r}, expected {source!r}")
    check_leaf_capabilities(leaf, leaf_index if leaf_index is not None else "new")
    if not leaf.verify(suite, group_id, leaf_index):
        raise TreeError("leaf node signature does not verify")
    if now is not None and leaf.lifetime is not None and not leaf.lifetime.contains(now):
        raise TreeError("leaf node lifetime does not cover the current time")
    if required is not None:
        check_required_capabilities(leaf, required)


def check_required_capabilities(leaf: LeafNode, required: RequiredCapabilities) -> None:
    """§11.1: every required extension, proposal and credential type is listed (defaults implied)."""
    caps = leaf.capabilities
    for t in required.extension_types:
        if int(t) not in DEFAULT_EXTENSION_TYPES and int(t) not in {int(e) for e in caps.extensions}:
            raise TreeError(f"leaf lacks required extension type {t}")
    for t in required.proposal_types:
        if int(t) not in DEFAULT_PROPOSAL_TYPES and int(t) not in {int(p) for p in caps.proposals}:
            raise TreeError(f"leaf lacks required proposal type {t}")
    for t in required.credential_types:
        if int(t) not in {int(c) for c in caps.credentials}:
            raise TreeError(f"leaf lacks required credential type {t}")


def validate_key_package(
    suite: CipherSuite,
    kp: KeyPackage,
    *,
    now: int | None = None,
    required: RequiredCapabilities | None = None,
) -> None:
    """§10.1: version and suite match, leaf valid as a key_package leaf, signature, init_key fresh."""
    if kp.version != ProtocolVersion.MLS10 or kp.cipher_suite != suite.id:
        raise TreeError("KeyPackage version or cipher suite does not match the group")
    validate_leaf_node(suite, kp.leaf_node, LeafNodeSource.KEY_PACKAGE, now=now, required=required)
    if not kp.verify(suite):
        raise TreeError("KeyPackage signature does not verify")
    if kp.init_key == kp.leaf_node.encryption_key:
        raise TreeError("KeyPackage init_key equals its leaf encryption_key (§10.1)")


def node_bytes(node: Node) -> bytes:
    """The Node encoding (with its node_type), as used in the ratchet_tree extension."""
    w = Writer()
    encode_node(w, node)
    return w.bytes()


__all__ = [
    "RatchetTree",
    "TreeError",
    "Node",
    "MAX_TREE_LEAVES",
    "node_bytes",
    "validate_leaf_node",
    "validate_key_package",
    "check_leaf_capabilities",
    "check_required_capabilities",
]
