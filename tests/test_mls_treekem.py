"""TreeKEM (§7.4-§7.6): members agree on commit secrets; bad paths are refused without side effects."""

from __future__ import annotations

import dataclasses

import pytest
from support_mls_tree import GROUP_ID, SUITE, context, grow, new_member

from ciris_av_plugin.mls.tree import TreeError
from ciris_av_plugin.mls.tree_structs import HPKECiphertext, UpdatePath
from ciris_av_plugin.mls.treekem import (
    TreeKEMError,
    TreeKEMPrivate,
    create_update_path,
    merge_update_path,
    process_update_path,
)


def test_every_member_commits_in_turn_and_all_agree() -> None:
    group = grow(6)
    for committer in list(group.privates):
        group.commit(committer)  # asserts agreement on commit secret and tree inside
        group.check()


def test_add_and_commit_in_one_step_excludes_the_new_leaf_from_encryption() -> None:
    group = grow(3)
    joiner = new_member(b"joiner")
    index = group.tree.add_leaf(joiner.key_package.leaf_node)
    gc = context(group.tree, 1)
    result = create_update_path(group.tree, 0, group.members[0].sig_priv, gc, excluded_leaves=[index])
    # leaf 3 sits under node 5 together with leaf 2; its ciphertexts at node 3 cover only leaf 2
    enc_counts = [len(n.encrypted_path_secret) for n in result.update_path.nodes]
    assert enc_counts == [1, 1]
    node, secret = result.path_secret_for_joiner(index)
    assert node == 3
    priv = TreeKEMPrivate(index, joiner.enc_priv)
    priv.implant_from(result.tree, node, secret)
    priv.check_against(result.tree)


def test_removed_members_and_truncation_keep_agreement() -> None:
    group = grow(8)
    group.commit(2, removes=[7, 6, 5])
    assert group.tree.n_leaves == 8  # leaf 4 keeps the right half
    group.commit(0, removes=[4])
    assert group.tree.n_leaves == 4
    group.check()


def test_single_member_path_has_no_nodes() -> None:
    group = grow(1)
    gc = context(group.tree)
    result = create_update_path(group.tree, 0, group.members[0].sig_priv, gc, leaf_secret=b"\x01" * 32)
    assert result.update_path.nodes == []
    assert result.commit_secret == SUITE.derive_secret(b"\x01" * 32, b"path")
    assert result.tree.leaf(0).parent_hash == b""


def _path(group, sender=0):
    gc = context(group.tree, 1)
    return gc, create_update_path(group.tree, sender, group.members[sender].sig_priv, gc)


def test_wrong_parent_hash_is_refused_and_tree_unchanged() -> None:
    group = grow(4)
    before = group.tree.to_bytes()
    gc, result = _path(group)
    path = result.update_path
    bad = UpdatePath(path.leaf_node, list(reversed(path.nodes)))
    with pytest.raises(TreeKEMError):
        merge_update_path(group.tree, 0, bad, GROUP_ID)
    assert group.tree.to_bytes() == before


def test_wrong_node_count_and_bad_signature_are_refused() -> None:
    group = grow(4)
    gc, result = _path(group)
    path = result.update_path
    with pytest.raises(TreeKEMError):
        merge_update_path(group.tree, 0, UpdatePath(path.leaf_node, path.nodes[:1]), GROUP_ID)
    with pytest.raises(TreeKEMError):
        merge_update_path(group.tree, 0, path, b"other group")
    with pytest.raises(TreeKEMError):
        merge_update_path(group.tree, 1, path, GROUP_ID)


def test_ciphertext_count_must_match_resolution() -> None:
    group = grow(4)
    gc, result = _path(group)
    path = result.update_path
    nodes = [dataclasses.replace(n, encrypted_path_secret=list(n.encrypted_path_secret)) for n in path.nodes]
    nodes[-1].encrypted_path_secret.append(HPKECiphertext(b"\x00" * 32, b"\x00" * 48))
    with pytest.raises(TreeKEMError):
        process_update_path(group.tree, group.privates[3], 0, UpdatePath(path.leaf_node, nodes), gc)


def test_keyless_merge_checks_ciphertext_counts_when_told_the_new_leaves() -> None:
    group = grow(4)
    gc, result = _path(group)
    path = result.update_path
    nodes = [dataclasses.replace(n, encrypted_path_secret=list(n.encrypted_path_secret)) for n in path.nodes]
    nodes[0].encrypted_path_secret.clear()
    bad = UpdatePath(path.leaf_node, nodes)
    merge_update_path(group.tree, 0, bad, GROUP_ID)  # structure and parent hash alone are fine
    with pytest.raises(TreeKEMError, match="ciphertexts"):
        merge_update_path(group.tree, 0, bad, GROUP_ID, excluded_leaves=())
    merged = merge_update_path(group.tree, 0, path, GROUP_ID, excluded_leaves=())
    assert merged.to_bytes() == result.tree.to_bytes()


def test_wrong_context_does_not_decrypt() -> None:
    group = grow(4)
    gc, result = _path(group)
    other = dataclasses.replace(gc, epoch=gc.epoch + 1)
    with pytest.raises(TreeKEMError):
        process_update_path(group.tree, group.privates[2], 0, result.update_path, other)


def test_member_without_keys_cannot_process() -> None:
    group = grow(4)
    gc, result = _path(group)
    stranger = TreeKEMPrivate(3, SUITE.generate_hpke_key_pair()[0])
    with pytest.raises(TreeKEMError):
        process_update_path(group.tree, stranger, 0, result.update_path, gc)
    with pytest.raises(TreeKEMError):
        process_update_path(group.tree, group.privates[0], 0, result.update_path, gc)


def test_signature_key_must_match_leaf() -> None:
    group = grow(2)
    gc = context(group.tree)
    with pytest.raises(TreeKEMError):
        create_update_path(group.tree, 0, group.members[1].sig_priv, gc)
    with pytest.raises((TreeKEMError, TreeError)):
        create_update_path(group.tree, 5, group.members[0].sig_priv, gc)
