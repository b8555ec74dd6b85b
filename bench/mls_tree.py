"""Ratchet tree and TreeKEM throughput: tree hash, parent-hash validation, UpdatePath create/process.

Usage: ``python bench/mls_tree.py [--suite 1] [--seconds 0.5] [--json PATH]``. Trees are full
(every parent node populated by real commits), the common case for a settled group and the worst
case for hashing. Prints one line per operation (operations per second) and optionally writes JSON.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mls_primitives import run_bench

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.messages import Credential, GroupContext, Lifetime
from ciris_av_plugin.mls.tree import RatchetTree
from ciris_av_plugin.mls.tree_structs import KeyPackage
from ciris_av_plugin.mls.treekem import TreeKEMPrivate, create_update_path, process_update_path

TREEKEM_SIZES = (8, 32, 128)
HASH_TREE_SIZE = 128
GROUP_ID = b"bench-group"


def full_tree(cs: CipherSuite, n: int) -> tuple[RatchetTree, list[bytes], TreeKEMPrivate]:
    """A tree of ``n`` members whose parents are all set: each even leaf commits once in turn.

    Returns the tree, the members' signature keys and the private state of the last committer
    (which knows every key on its path, so it can process anyone's UpdatePath).
    """
    sig_privs, enc_privs = [], []
    tree = None
    for i in range(n):
        sig_priv, _ = cs.generate_signature_key_pair()
        kp, _, enc_priv = KeyPackage.create(cs, Credential.basic(b"m%d" % i), sig_priv, Lifetime(0, 2**63))
        sig_privs.append(sig_priv)
        enc_privs.append(enc_priv)
        if tree is None:
            tree = RatchetTree(cs, [kp.leaf_node])
        else:
            tree.add_leaf(kp.leaf_node)
    assert tree is not None
    last = TreeKEMPrivate(0, enc_privs[0])
    for i in range(0, n, 2):
        result = create_update_path(tree, i, sig_privs[i], context(cs, tree))
        tree = result.tree
        last = result.private
    return tree, sig_privs, last


def context(cs: CipherSuite, tree: RatchetTree) -> GroupContext:
    return GroupContext(cs.id, GROUP_ID, 1, tree.tree_hash(), b"\x00" * cs.Nh)


def cases(cs: CipherSuite) -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {}
    big, _, _ = full_tree(cs, HASH_TREE_SIZE)
    out[f"tree_hash_{HASH_TREE_SIZE}_leaves"] = big.tree_hash
    out[f"all_tree_hashes_{HASH_TREE_SIZE}_leaves"] = big.all_tree_hashes
    out[f"verify_parent_hashes_{HASH_TREE_SIZE}_leaves"] = big.verify_parent_hashes
    for n in TREEKEM_SIZES:
        tree, sig_privs, receiver = full_tree(cs, n)
        gc = context(cs, tree)
        out[f"treekem_create_path_{n}_leaves"] = (
            lambda tree=tree, sig=sig_privs[0], gc=gc: create_update_path(tree, 0, sig, gc)
        )
        path = create_update_path(tree, 0, sig_privs[0], gc).update_path
        out[f"treekem_process_path_{n}_leaves"] = (
            lambda tree=tree, path=path, gc=gc, receiver=receiver: process_update_path(tree, receiver, 0, path, gc)
        )
    return out


def main(argv: list[str]) -> int:
    return run_bench("mls_tree", cases, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
