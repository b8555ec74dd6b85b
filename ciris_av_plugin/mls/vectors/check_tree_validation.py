"""tree-validation.json: resolutions, per-node tree hashes, parent hashes and leaf signatures."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..errors import UnsupportedSuite
from ..tree import RatchetTree
from . import Counts


def run(cases: list[dict]) -> Counts:
    counts = Counts()
    for i, case in enumerate(cases):
        where = f"tree-validation[{i}] suite {case['cipher_suite']}"
        try:
            suite = CipherSuite(int(case["cipher_suite"]))
        except UnsupportedSuite:
            counts.skipped += 1
            continue
        try:
            tree = RatchetTree.from_bytes(suite, bytes.fromhex(case["tree"]))
            if len(tree.nodes) != len(case["resolutions"]):
                counts.fail(where, f"tree has {len(tree.nodes)} nodes, vector {len(case['resolutions'])}")
                continue
            bad = [x for x, res in enumerate(case["resolutions"]) if tree.resolution(x) != res]
            if bad:
                counts.fail(where, f"resolution differs at nodes {bad}")
                continue
            hashes = tree.all_tree_hashes()
            bad = [x for x, h in enumerate(case["tree_hashes"]) if hashes[x].hex() != h]
            bad += [x for x, h in enumerate(case["tree_hashes"]) if tree.tree_hash(x).hex() != h]
            if bad:
                counts.fail(where, f"tree hash differs at nodes {sorted(set(bad))}")
                continue
            tree.verify(bytes.fromhex(case["group_id"]))
        except Exception as exc:  # noqa: BLE001 - one failing case must not hide the others
            counts.fail(where, f"{type(exc).__name__}: {exc}")
            continue
        counts.passed += 1
    return counts
