"""Array-based tree arithmetic (RFC 9420 Appendix C, §4.1, §7.1).

Nodes are numbered left to right; leaf ``i`` is node ``2*i`` and parents are odd. MLS trees are
always full, so ``n_leaves`` is a power of two (§7.7 grows and truncates the tree by doubling and
halving). Functions take node indices and the tree's leaf count and raise :class:`TreeMathError` on
an index the tree does not contain, instead of looping or returning nonsense.
"""

from __future__ import annotations

from .errors import MLSError

__all__ = [
    "TreeMathError",
    "log2",
    "level",
    "node_width",
    "root",
    "left",
    "right",
    "parent",
    "sibling",
    "direct_path",
    "copath",
    "common_ancestor",
    "is_leaf",
    "leaf_to_node",
    "node_to_leaf",
    "leaf_width_for",
]

# LeafIndex and NodeIndex are uint32 on the wire (§7.8), so a tree never has more leaves than this.
MAX_LEAVES = 1 << 31


class TreeMathError(MLSError):
    """A node index outside the tree, or a question with no answer (the root's parent, a leaf's child)."""


def log2(x: int) -> int:
    """Exponent of the largest power of two not above ``x`` (0 for 0)."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """Leaves are level 0; a parent is one above its higher child: the count of trailing 1 bits."""
    k = 0
    while (x >> k) & 1:
        k += 1
    return k


def is_leaf(x: int) -> bool:
    return x & 1 == 0


def leaf_to_node(leaf: int) -> int:
    return 2 * leaf


def node_to_leaf(x: int) -> int:
    if x & 1:
        raise TreeMathError(f"node {x} is not a leaf")
    return x >> 1


def node_width(n: int) -> int:
    """Number of nodes in a tree of ``n`` leaves."""
    return 0 if n == 0 else 2 * (n - 1) + 1


def leaf_width_for(n_leaves_needed: int) -> int:
    """Smallest full-tree leaf count (a power of two) holding ``n_leaves_needed`` leaves."""
    n = 1
    while n < n_leaves_needed:
        n <<= 1
    return n


def _check(x: int, n: int) -> None:
    if not 0 < n <= MAX_LEAVES:
        raise TreeMathError(f"leaf count {n} out of range")
    if not 0 <= x < node_width(n):
        raise TreeMathError(f"node {x} outside a tree of {n} leaves")


def root(n: int) -> int:
    """Index of the root of a tree with ``n`` leaves."""
    if not 0 < n <= MAX_LEAVES:
        raise TreeMathError(f"leaf count {n} out of range")
    return (1 << log2(node_width(n))) - 1


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise TreeMathError(f"leaf node {x} has no children")
    return x ^ (0x01 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise TreeMathError(f"leaf node {x} has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: int, n: int) -> int:
    _check(x, n)
    if x == root(n):
        raise TreeMathError("the root has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n: int) -> int:
    p = parent(x, n)
    return right(p) if x < p else left(p)


def direct_path(x: int, n: int) -> list[int]:
    """Ancestors of ``x`` from its parent up to and including the root (§4.1)."""
    _check(x, n)
    r = root(n)
    out: list[int] = []
    while x != r:
        x = parent(x, n)
        out.append(x)
    return out


def copath(x: int, n: int) -> list[int]:
    """Siblings of ``x`` and of each ancestor below the root, leaf to root (§4.1)."""
    _check(x, n)
    path = [x] + direct_path(x, n)
    path.pop()
    return [sibling(y, n) for y in path]


def common_ancestor(x: int, y: int) -> int:
    """The lowest node whose subtree holds both ``x`` and ``y`` (Appendix C, direct form)."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    xn, yn, k = x, y, 0
    while xn != yn:
        xn, yn = xn >> 1, yn >> 1
        k += 1
    return (xn << k) + (1 << (k - 1)) - 1
