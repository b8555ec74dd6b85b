"""Tree math beyond the vectors: direct paths, copaths, common ancestors, bad indices."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciris_av_plugin.mls import tree_math as tm


def test_eight_leaf_tree_figure_32() -> None:
    assert tm.root(8) == 7
    assert tm.direct_path(0, 8) == [1, 3, 7]
    assert tm.copath(0, 8) == [2, 5, 11]
    assert tm.direct_path(7, 8) == []
    assert tm.copath(7, 8) == []
    assert tm.direct_path(14, 8) == [13, 11, 7]


def test_errors_not_crashes() -> None:
    with pytest.raises(tm.TreeMathError):
        tm.parent(7, 8)  # root
    with pytest.raises(tm.TreeMathError):
        tm.left(4)  # leaf
    with pytest.raises(tm.TreeMathError):
        tm.parent(15, 8)  # outside
    with pytest.raises(tm.TreeMathError):
        tm.direct_path(-1, 8)
    with pytest.raises(tm.TreeMathError):
        tm.root(0)
    with pytest.raises(tm.TreeMathError):
        tm.node_to_leaf(3)


def _semantic_common_ancestor(x: int, y: int, n: int) -> int:
    dx = {x} | set(tm.direct_path(x, n))
    dy = {y} | set(tm.direct_path(y, n))
    return min(dx & dy, key=tm.level)


@given(st.integers(min_value=0, max_value=6), st.data())
def test_common_ancestor_matches_semantic_definition(log_n: int, data: st.DataObject) -> None:
    n = 1 << log_n
    width = tm.node_width(n)
    x = data.draw(st.integers(min_value=0, max_value=width - 1))
    y = data.draw(st.integers(min_value=0, max_value=width - 1))
    assert tm.common_ancestor(x, y) == _semantic_common_ancestor(x, y, n)


@given(st.integers(min_value=0, max_value=8), st.data())
def test_copath_siblings_of_path(log_n: int, data: st.DataObject) -> None:
    n = 1 << log_n
    leaf = data.draw(st.integers(min_value=0, max_value=n - 1))
    x = tm.leaf_to_node(leaf)
    path = tm.direct_path(x, n)
    cop = tm.copath(x, n)
    assert len(path) == len(cop) == log_n
    for node, sib in zip(([x] + path)[:-1], cop, strict=True):
        assert tm.parent(node, n) == tm.parent(sib, n)


def test_leaf_width_for() -> None:
    assert [tm.leaf_width_for(k) for k in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 4, 8, 16]
