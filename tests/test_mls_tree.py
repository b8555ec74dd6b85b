"""Ratchet tree operations (§4, §7.7-§7.9, §12.1): shape, resolution, hashes, validation."""

from __future__ import annotations

import dataclasses

import pytest
from support_mls_tree import GROUP_ID, SUITE, grow, new_member

from ciris_av_plugin.errors import MLSError
from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.messages import Capabilities, Credential, Lifetime, RequiredCapabilities
from ciris_av_plugin.mls.tree import RatchetTree, TreeError, validate_key_package
from ciris_av_plugin.mls.tree_structs import KeyPackage, ParentNode, decode_ratchet_tree, encode_ratchet_tree


def _leaf():
    return new_member(b"x").key_package.leaf_node


def test_add_fills_leftmost_blank_and_extends_when_full() -> None:
    tree = RatchetTree(SUITE, [_leaf()])
    assert [tree.add_leaf(_leaf()) for _ in range(4)] == [1, 2, 3, 4]
    assert tree.n_leaves == 8 and len(tree.nodes) == 15
    tree.remove_leaf(1)
    assert tree.add_leaf(_leaf()) == 1, "a blank leaf in the middle is reused before extending"


def test_remove_truncates_right_subtree_until_rightmost_leaf_fits() -> None:
    tree = RatchetTree(SUITE, [_leaf()])
    for _ in range(4):
        tree.add_leaf(_leaf())
    tree.remove_leaf(4)
    assert tree.n_leaves == 4, "2^d > 3 with d = 2"
    tree.remove_leaf(3)
    tree.remove_leaf(2)
    assert tree.n_leaves == 2
    tree.remove_leaf(1)
    assert tree.n_leaves == 1


def test_remove_or_update_of_blank_leaf_is_refused() -> None:
    tree = RatchetTree(SUITE, [_leaf(), None, _leaf()])
    tree.remove_leaf(0)
    with pytest.raises(TreeError):
        tree.remove_leaf(0)
    with pytest.raises(TreeError):
        tree.update_leaf(0, _leaf())
    with pytest.raises(TreeError):
        tree.remove_leaf(99)


def test_add_marks_new_leaf_unmerged_in_non_blank_ancestors() -> None:
    group = grow(3)  # leaves 0,1,2; leaf 0's path set when adding 2
    tree = group.tree
    index = tree.add_leaf(_leaf())
    assert index == 3
    for x in tree.direct_path(index):
        node = tree.nodes[x]
        if isinstance(node, ParentNode):
            assert index in node.unmerged_leaves
    assert tree.nodes[5] is None and tree.resolution(5) == [4, 6]
    root = tree.nodes[3]
    assert isinstance(root, ParentNode) and root.unmerged_leaves == [3]
    assert tree.resolution(3) == [3, 6]


def test_resolution_and_filtered_direct_path_skip_blank_subtrees() -> None:
    tree = RatchetTree(SUITE, [_leaf()])
    for _ in range(2):
        tree.add_leaf(_leaf())
    # leaves 0,1,2 of 4: the copath of leaf 2 at the root level is node 1 (non-blank resolution),
    # at node 5 it is leaf 3 (blank) -> node 5 is filtered out.
    assert tree.resolution(5) == [4]
    assert tree.resolution(3) == [0, 2, 4]
    assert tree.direct_path(2) == [5, 3]
    assert tree.filtered_direct_path(2) == [3]


def test_encoding_trims_trailing_blanks_and_round_trips() -> None:
    group = grow(5)
    data = group.tree.to_bytes()
    nodes = decode_ratchet_tree(data)
    assert nodes[-1] is not None and len(nodes) == 9
    again = RatchetTree.from_bytes(SUITE, data)
    assert again.n_leaves == 8 and again.to_bytes() == data
    assert again.tree_hash() == group.tree.tree_hash()


def test_decoding_refuses_trailing_blank_and_misplaced_node_types() -> None:
    group = grow(2)
    nodes = group.tree.trimmed_nodes()
    with pytest.raises(TreeError):
        RatchetTree.from_bytes(SUITE, encode_ratchet_tree(nodes + [None, None]))
    with pytest.raises(TreeError):
        RatchetTree.from_bytes(SUITE, encode_ratchet_tree([nodes[1], nodes[0], nodes[2]]))
    with pytest.raises(MLSError):
        RatchetTree.from_bytes(SUITE, b"")


def test_unmerged_leaf_must_be_below_its_parent() -> None:
    group = grow(4)
    nodes = group.tree.trimmed_nodes()
    root = nodes[3]
    assert isinstance(root, ParentNode)
    root.unmerged_leaves.append(7)
    with pytest.raises(TreeError):
        RatchetTree.from_nodes(SUITE, nodes)


def test_grown_tree_is_parent_hash_valid_and_tamper_is_caught() -> None:
    group = grow(6)
    group.check()
    tampered = group.tree.copy()
    node = tampered.nodes[3]
    assert isinstance(node, ParentNode)
    node.encryption_key = SUITE.generate_hpke_key_pair()[1]
    with pytest.raises(TreeError):
        tampered.verify_parent_hashes()


def test_leaf_signature_checked_with_group_id() -> None:
    group = grow(3)
    group.tree.verify_leaves(GROUP_ID)
    with pytest.raises(TreeError):
        group.tree.verify_leaves(b"another group")


def test_duplicate_keys_are_refused() -> None:
    m = new_member(b"dup")
    tree = RatchetTree(SUITE, [m.key_package.leaf_node])
    tree.add_leaf(m.key_package.leaf_node)
    with pytest.raises(TreeError):
        tree.verify_leaves(GROUP_ID)


def test_tree_hash_per_node_matches_recursive_definition() -> None:
    group = grow(7)
    hashes = group.tree.all_tree_hashes()
    assert [group.tree.tree_hash(x) for x in range(len(group.tree.nodes))] == hashes
    assert hashes[group.tree.root] == group.tree.tree_hash()


def test_update_replaces_leaf_and_blanks_its_path() -> None:
    group = grow(4)
    tree = group.tree
    new_leaf = _leaf()
    tree.update_leaf(1, new_leaf)
    assert tree.leaf(1) is new_leaf
    assert all(tree.nodes[x] is None for x in tree.direct_path(1))


def test_key_package_validation_rules() -> None:
    member = new_member(b"kp")
    validate_key_package(SUITE, member.key_package, now=1_700_000_000)
    with pytest.raises(TreeError):
        validate_key_package(CipherSuite(3), member.key_package)
    sig_priv, _ = SUITE.generate_signature_key_pair()
    expired, _, _ = KeyPackage.create(SUITE, Credential.basic(b"old"), sig_priv, Lifetime(10, 20))
    validate_key_package(SUITE, expired)  # no clock given: lifetime not checked
    with pytest.raises(TreeError):
        validate_key_package(SUITE, expired, now=21)
    with pytest.raises(TreeError):
        validate_key_package(SUITE, member.key_package, required=RequiredCapabilities([0x0A0A], [], []))
    validate_key_package(SUITE, member.key_package, required=RequiredCapabilities([2], [1], [1]))


def test_leaf_must_fit_the_group() -> None:
    group = grow(3)
    group.tree.check_leaf_fits(_leaf())
    with pytest.raises(TreeError):
        group.tree.check_leaf_fits(group.tree.leaf(1))  # repeats member 1's keys
    with pytest.raises(TreeError):
        group.tree.check_leaf_fits(group.tree.leaf(1), replacing=1)  # Update must change the HPKE key
    no_basic = dataclasses.replace(_leaf(), capabilities=Capabilities(credentials=[2]))
    with pytest.raises(TreeError):
        group.tree.check_leaf_fits(no_basic)


def test_node_indices_outside_the_tree_raise_tree_error() -> None:
    tree = grow(2).tree
    for call in (lambda: tree.resolution(3), lambda: tree.resolution(-1), lambda: tree.tree_hash(9),
                 lambda: tree.node(5), lambda: tree.parent_node(0), lambda: tree.leaf(-1)):
        with pytest.raises(MLSError):
            call()
