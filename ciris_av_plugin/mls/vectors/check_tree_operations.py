"""tree-operations.json: apply one Add/Update/Remove to a tree; the result and hashes must match."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..proposal_structs import Add, Proposal, Remove, Update
from ..tree import RatchetTree
from . import Counts
from ._cases import run_suite_cases


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


def _check(suite: CipherSuite, case: dict) -> str | None:
    tree = RatchetTree.from_bytes(suite, bytes.fromhex(case["tree_before"]))
    if tree.tree_hash().hex() != case["tree_hash_before"]:
        return "tree_hash_before differs"
    apply(tree, Proposal.from_bytes(bytes.fromhex(case["proposal"])), int(case["proposal_sender"]))
    if tree.to_bytes().hex() != case["tree_after"]:
        return "tree_after differs"
    if tree.tree_hash().hex() != case["tree_hash_after"]:
        return "tree_hash_after differs"
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check, "tree-operations[{i}]")
