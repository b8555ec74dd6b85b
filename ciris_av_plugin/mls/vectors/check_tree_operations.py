"""tree-operations.json: apply one Add/Update/Remove to a tree; the result and hashes must match."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..errors import UnsupportedSuite
from ..messages import Add, Proposal, Remove, Update
from ..tree import RatchetTree
from . import Counts


def apply(tree: RatchetTree, proposal: Proposal, sender: int) -> None:
    body = proposal.body
    if isinstance(body, Add):
        tree.add_leaf(body.key_package.leaf_node)
    elif isinstance(body, Update):
        tree.update_leaf(sender, body.leaf_node)
    elif isinstance(body, Remove):
        tree.remove_leaf(body.removed)
    else:
        raise ValueError(f"tree-operations has no {type(body).__name__} proposals")


def run(cases: list[dict]) -> Counts:
    counts = Counts()
    for i, case in enumerate(cases):
        where = f"tree-operations[{i}]"
        try:
            suite = CipherSuite(int(case["cipher_suite"]))
        except UnsupportedSuite:
            counts.skipped += 1
            continue
        try:
            tree = RatchetTree.from_bytes(suite, bytes.fromhex(case["tree_before"]))
            if tree.tree_hash().hex() != case["tree_hash_before"]:
                counts.fail(where, "tree_hash_before differs")
                continue
            apply(tree, Proposal.from_bytes(bytes.fromhex(case["proposal"])), int(case["proposal_sender"]))
            if tree.to_bytes().hex() != case["tree_after"]:
                counts.fail(where, "tree_after differs")
                continue
            if tree.tree_hash().hex() != case["tree_hash_after"]:
                counts.fail(where, "tree_hash_after differs")
                continue
        except Exception as exc:  # noqa: BLE001
            counts.fail(where, f"{type(exc).__name__}: {exc}")
            continue
        counts.passed += 1
    return counts
