"""Ratchet tree and TreeKEM throughput: tree hash, parent-hash validation, UpdatePath create/process.

Usage: ``python bench/mls_tree.py [--suite 1] [--seconds 0.5] [--json PATH]``. Trees are full
(every parent node populated by real commits), the common case for a settled group and the worst
case for hashing. Prints one line per operation (operations per second) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.messages import Credential, GroupContext, KeyPackage, Lifetime
from ciris_av_plugin.mls.tree import RatchetTree
from ciris_av_plugin.mls.treekem import TreeKEMPrivate, create_update_path, process_update_path

# Same measuring rule as bench/mls_primitives.py: at least this long and this many runs, so timer
# resolution and warm-up do not dominate.
DEFAULT_SECONDS = 0.5
MIN_ITERATIONS = 5
TREEKEM_SIZES = (8, 32, 128)
HASH_TREE_SIZE = 128
GROUP_ID = b"bench-group"


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Operations per second of ``fn`` over about ``seconds`` of wall time."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= MIN_ITERATIONS:
            return n / elapsed


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", type=lambda s: int(s, 0), default=1)
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = ap.parse_args(argv)
    cs = CipherSuite(args.suite)
    results = {}
    for name, fn in cases(cs).items():
        ops = measure(fn, args.seconds)
        results[name] = round(ops, 1)
        print(f"{name:38s} {ops:12.1f} ops/s")
    if args.json:
        report = {
            "benchmark": "mls_tree",
            "suite": cs.id,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "ops_per_second": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
