"""tree-validation.json: resolutions, per-node tree hashes, parent hashes and leaf signatures."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..tree import RatchetTree
from . import Counts
from ._cases import run_suite_cases


def _check(suite: CipherSuite, case: dict) -> str | None:
    tree = RatchetTree.from_bytes(suite, bytes.fromhex(case["tree"]))
    if len(tree.nodes) != len(case["resolutions"]):
        return f"tree has {len(tree.nodes)} nodes, vector {len(case['resolutions'])}"
    bad = [x for x, res in enumerate(case["resolutions"]) if tree.resolution(x) != res]
    if bad:
        return f"resolution differs at nodes {bad}"
    hashes = tree.all_tree_hashes()
    bad = [x for x, h in enumerate(case["tree_hashes"]) if hashes[x].hex() != h]
    bad += [x for x, h in enumerate(case["tree_hashes"]) if tree.tree_hash(x).hex() != h]
    if bad:
        return f"tree hash differs at nodes {sorted(set(bad))}"
    tree.verify(bytes.fromhex(case["group_id"]))
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check, "tree-validation[{i}] suite {suite}")
