"""tree-math.json: root, left, right, parent and sibling of every node (RFC 9420 Appendix C)."""

from __future__ import annotations

from .. import tree_math as tm
from . import Counts
from ._cases import check_case


def _opt(fn, *args) -> int | None:
    """The vectors write ``null`` where the relation does not exist; we raise TreeMathError there."""
    try:
        return fn(*args)
    except tm.TreeMathError:
        return None


def _check(c: dict) -> str | None:
    n = c["n_leaves"]
    if tm.node_width(n) != c["n_nodes"]:
        return "n_nodes"
    if tm.root(n) != c["root"]:
        return "root"
    for i in range(c["n_nodes"]):
        for name, got in (
            ("left", _opt(tm.left, i)),
            ("right", _opt(tm.right, i)),
            ("parent", _opt(tm.parent, i, n)),
            ("sibling", _opt(tm.sibling, i, n)),
        ):
            if got != c[name][i]:
                return f"{name}[{i}] = {got}, want {c[name][i]}"
    return None


def run(cases: list[dict]) -> Counts:
    counts = Counts()
    for c in cases:
        check_case(counts, f"n_leaves={c['n_leaves']}", lambda c=c: _check(c))
    return counts
