"""treekem.json: process every UpdatePath as each other member, then create and process a fresh one."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..messages import GroupContext
from ..tree import RatchetTree
from ..tree_structs import UpdatePath
from ..treekem import TreeKEMPrivate, create_update_path, merge_update_path, process_update_path
from . import Counts
from ._cases import run_suite_cases


def _check_case(suite: CipherSuite, case: dict) -> None:
    tree = RatchetTree.from_bytes(suite, bytes.fromhex(case["ratchet_tree"]))
    group_id = bytes.fromhex(case["group_id"])
    gc = GroupContext(
        cipher_suite=suite.id,
        group_id=group_id,
        epoch=int(case["epoch"]),
        tree_hash=tree.tree_hash(),
        confirmed_transcript_hash=bytes.fromhex(case["confirmed_transcript_hash"]),
    )
    privates: dict[int, TreeKEMPrivate] = {}
    sig_privs: dict[int, bytes] = {}
    for lp in case["leaves_private"]:
        index = int(lp["index"])
        priv = TreeKEMPrivate(index, bytes.fromhex(lp["encryption_priv"]))
        for ps in lp["path_secrets"]:
            priv.set_path_secret(suite, int(ps["node"]), bytes.fromhex(ps["path_secret"]))
        priv.check_against(tree)
        privates[index] = priv
        sig_privs[index] = bytes.fromhex(lp["signature_priv"])

    for n, up in enumerate(case["update_paths"]):
        sender = int(up["sender"])
        path = UpdatePath.from_bytes(bytes.fromhex(up["update_path"]))
        merged = merge_update_path(tree, sender, path, group_id, excluded_leaves=())
        if merged.tree_hash().hex() != up["tree_hash_after"]:
            raise AssertionError(f"update_paths[{n}]: tree_hash_after differs")
        for j, priv in privates.items():
            if j == sender:
                continue
            res = process_update_path(tree, priv, sender, path, gc)
            want = up["path_secrets"][j]
            if want is not None and (res.decrypted_path_secret or b"").hex() != want:
                raise AssertionError(f"update_paths[{n}]: leaf {j} decrypted another path secret")
            if res.commit_secret.hex() != up["commit_secret"]:
                raise AssertionError(f"update_paths[{n}]: leaf {j} commit secret differs")

        fresh = create_update_path(tree, sender, sig_privs[sender], gc)
        for j, priv in privates.items():
            if j == sender:
                continue
            res = process_update_path(tree, priv, sender, fresh.update_path, gc)
            if res.commit_secret != fresh.commit_secret:
                raise AssertionError(f"update_paths[{n}]: leaf {j} disagrees on a fresh path's commit secret")
            if res.tree.tree_hash() != fresh.tree.tree_hash():
                raise AssertionError(f"update_paths[{n}]: leaf {j} merged a fresh path into another tree")


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check_case, "treekem[{i}] suite {suite}")
