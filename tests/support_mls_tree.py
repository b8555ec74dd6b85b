"""Builders for tree/TreeKEM/Welcome tests: real members with keys, grown by real commits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.messages import Credential, GroupContext, Lifetime
from ciris_av_plugin.mls.tree import RatchetTree
from ciris_av_plugin.mls.tree_structs import KeyPackage
from ciris_av_plugin.mls.treekem import TreeKEMPrivate, create_update_path, process_update_path

SUITE = CipherSuite(1)
GROUP_ID = b"test-group"
FOREVER = Lifetime(0, 2**64 - 1)


@dataclass
class Member:
    key_package: KeyPackage
    sig_priv: bytes
    init_priv: bytes
    enc_priv: bytes


def new_member(name: bytes) -> Member:
    sig_priv, _ = SUITE.generate_signature_key_pair()
    kp, init_priv, enc_priv = KeyPackage.create(SUITE, Credential.basic(name), sig_priv, FOREVER)
    return Member(kp, sig_priv, init_priv, enc_priv)


def context(tree: RatchetTree, epoch: int = 0) -> GroupContext:
    return GroupContext(SUITE.id, GROUP_ID, epoch, tree.tree_hash(), b"\x00" * 32)


@dataclass
class Group:
    """Public tree plus every member's private TreeKEM state, kept in step by commits."""

    tree: RatchetTree
    members: dict[int, Member] = field(default_factory=dict)
    privates: dict[int, TreeKEMPrivate] = field(default_factory=dict)
    epoch: int = 0

    def commit(self, committer: int, adds: list[Member] = (), removes: list[int] = ()) -> bytes:
        """Apply removes and adds, then an UpdatePath from ``committer``; everyone processes it."""
        for r in removes:
            self.tree.remove_leaf(r)
            self.members.pop(r)
            self.privates.pop(r)
        new_leaves = []
        for m in adds:
            index = self.tree.add_leaf(m.key_package.leaf_node)
            self.members[index] = m
            new_leaves.append(index)
        for priv in self.privates.values():
            priv.prune(self.tree)
        gc = context(self.tree, self.epoch + 1)
        result = create_update_path(
            self.tree, committer, self.members[committer].sig_priv, gc, excluded_leaves=new_leaves
        )
        for j, priv in list(self.privates.items()):
            if j == committer:
                continue
            got = process_update_path(self.tree, priv, committer, result.update_path, gc, new_leaves)
            assert got.commit_secret == result.commit_secret
            assert got.tree.to_bytes() == result.tree.to_bytes()
            self.privates[j] = got.private
        self.privates[committer] = result.private
        self.tree = result.tree
        for index in new_leaves:
            priv = TreeKEMPrivate(index, self.members[index].enc_priv)
            joiner = result.path_secret_for_joiner(index)
            if joiner is not None:
                priv.implant_from(self.tree, *joiner)
            self.privates[index] = priv
        self.epoch += 1
        return result.commit_secret

    def check(self) -> None:
        self.tree.verify(GROUP_ID)
        for priv in self.privates.values():
            priv.check_against(self.tree)


def grow(n: int) -> Group:
    """A group of ``n`` members, each added one at a time by leaf 0 with a path (like get_tree(n))."""
    first = new_member(b"m0")
    tree = RatchetTree(SUITE, [first.key_package.leaf_node])
    group = Group(tree, {0: first}, {0: TreeKEMPrivate(0, first.enc_priv)})
    for i in range(1, n):
        group.commit(0, adds=[new_member(b"m%d" % i)])
    return group
