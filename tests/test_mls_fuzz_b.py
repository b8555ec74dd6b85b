"""Fuzzing every decoder of messages/tree/treekem/welcome: only MLSError, and decode∘encode is exact.

Inputs are random bytes and mutations (flip, truncate, insert, delete, splice) of valid encodings
taken from the mlswg messages vectors, so the fuzzer reaches deep fields rather than failing on
the first length byte.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_mls_tree import GROUP_ID, SUITE, context, grow, new_member
from support_vectors import load_mls

from ciris_av_plugin.errors import MLSError
from ciris_av_plugin.mls.messages import (
    Capabilities,
    Credential,
    ExternalSender,
    GroupContext,
    Lifetime,
    RequiredCapabilities,
    decode_external_senders,
    encode_external_senders,
)
from ciris_av_plugin.mls.proposal_structs import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from ciris_av_plugin.mls.struct import Struct
from ciris_av_plugin.mls.tree import RatchetTree
from ciris_av_plugin.mls.tree_structs import (
    KeyPackage,
    LeafNode,
    ParentNode,
    UpdatePath,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from ciris_av_plugin.mls.treekem import create_update_path, merge_update_path, process_update_path
from ciris_av_plugin.mls.welcome import open_welcome
from ciris_av_plugin.mls.welcome_structs import GroupInfo, GroupSecrets, Welcome

SEED_CASES = 4
FUZZ = settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

_CASES = load_mls("messages")[:SEED_CASES]


def _seeds(key: str, strip_header: bool = False) -> list[bytes]:
    out = [bytes.fromhex(c[key]) for c in _CASES]
    return [b[4:] for b in out] if strip_header else out


DECODERS: dict[str, tuple[Callable[[bytes], object], Callable[[object], bytes], list[bytes]]] = {}


def _struct(name: str, cls: type[Struct], key: str, strip: bool = False) -> None:
    DECODERS[name] = (cls.from_bytes, lambda v: v.to_bytes(), _seeds(key, strip))


_struct("Welcome", Welcome, "mls_welcome", True)
_struct("GroupInfo", GroupInfo, "mls_group_info", True)
_struct("KeyPackage", KeyPackage, "mls_key_package", True)
_struct("GroupSecrets", GroupSecrets, "group_secrets")
_struct("Add", Add, "add_proposal")
_struct("Update", Update, "update_proposal")
_struct("Remove", Remove, "remove_proposal")
_struct("PreSharedKey", PreSharedKey, "pre_shared_key_proposal")
_struct("ReInit", ReInit, "re_init_proposal")
_struct("ExternalInit", ExternalInit, "external_init_proposal")
_struct("GroupContextExtensions", GroupContextExtensions, "group_context_extensions_proposal")
_struct("Commit", Commit, "commit")
DECODERS["ratchet_tree"] = (decode_ratchet_tree, encode_ratchet_tree, _seeds("ratchet_tree"))
DECODERS["RatchetTree"] = (
    lambda b: RatchetTree.from_bytes(SUITE, b),
    lambda t: t.to_bytes(),
    _seeds("ratchet_tree"),
)
_FROM_VECTORS = frozenset(DECODERS)  # the decoders seeded from the vector file, SEED_CASES seeds each
# Structures nested inside the seeds above, reached through their own entry points as well.
_GI = GroupInfo.from_bytes(_seeds("mls_group_info", True)[0])
_KP = KeyPackage.from_bytes(_seeds("mls_key_package", True)[0])
_EXTRA: dict[str, tuple[type[Struct], bytes]] = {
    "GroupContext": (GroupContext, _GI.group_context.to_bytes()),
    "LeafNode": (LeafNode, _KP.leaf_node.to_bytes()),
    "Credential": (Credential, _KP.leaf_node.credential.to_bytes()),
    "Capabilities": (Capabilities, _KP.leaf_node.capabilities.to_bytes()),
    "Proposal": (Proposal, b"\x00\x03" + _seeds("remove_proposal")[0]),
    "UpdatePath": (UpdatePath, UpdatePath(_KP.leaf_node, []).to_bytes()),
    "ParentNode": (ParentNode, ParentNode(b"k" * 32, b"p", [1, 2]).to_bytes()),
    "Lifetime": (Lifetime, Lifetime(1, 2).to_bytes()),
    "RequiredCapabilities": (RequiredCapabilities, RequiredCapabilities([1], [2], [1]).to_bytes()),
}
for _name, (_cls, _seed) in _EXTRA.items():
    DECODERS[_name] = (_cls.from_bytes, lambda v: v.to_bytes(), [_seed])
DECODERS["external_senders"] = (
    decode_external_senders,
    encode_external_senders,
    [encode_external_senders([ExternalSender(b"s" * 32, Credential.basic(b"ds"))])],
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF]))
    return bytes(data)


def _check(name: str, data: bytes) -> None:
    decode, encode, _ = DECODERS[name]
    try:
        value = decode(data)
    except MLSError:
        return
    assert encode(value) == data, f"{name}: decoded input does not re-encode byte-exact"


def test_seeds_round_trip() -> None:
    # SEED_CASES seeds from the vectors for each vector key; one built seed for each nested structure
    assert {name: len(seeds) for name, (_, _, seeds) in DECODERS.items()} == {
        name: SEED_CASES if name in _FROM_VECTORS else 1 for name in DECODERS
    }
    assert len(_FROM_VECTORS) == 14 and len(_TREE_SEEDS) == 6
    for name, (decode, encode, seeds) in DECODERS.items():
        for seed in seeds:
            assert encode(decode(seed)) == seed, name


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    _check(name, data.draw(st.binary(max_size=300)))


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=st.data())
def test_mutated_valid(name: str, data: st.DataObject) -> None:
    _check(name, data.draw(mutated(DECODERS[name][2])))


_TREE_SEEDS = [bytes.fromhex(c["tree"]) for c in load_mls("tree-validation")
               if int(c["cipher_suite"]) == 1][:6]


@FUZZ
@given(data=mutated(_TREE_SEEDS))
def test_mutated_trees_validate_or_raise_mls_error(data: bytes) -> None:
    try:
        tree = RatchetTree.from_bytes(SUITE, data)
        for x in range(len(tree.nodes)):
            tree.resolution(x)
        tree.all_tree_hashes()
        tree.verify(GROUP_ID)
    except MLSError:
        pass


_GROUP = grow(5)
_GC = context(_GROUP.tree, 1)
_PATH = create_update_path(_GROUP.tree, 0, _GROUP.members[0].sig_priv, _GC).update_path.to_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated([_PATH]))
def test_mutated_update_paths_are_refused_cleanly(data: bytes) -> None:
    before = _GROUP.tree.to_bytes()
    try:
        path = UpdatePath.from_bytes(data)
        merge_update_path(_GROUP.tree, 0, path, GROUP_ID)
        process_update_path(_GROUP.tree, _GROUP.privates[3], 0, path, _GC)
    except MLSError:
        pass
    assert _GROUP.tree.to_bytes() == before


_POOL = [new_member(b"p%d" % i).key_package.leaf_node for i in range(8)]


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "remove", "update"]), st.integers(0, 40)), max_size=40))
def test_tree_operations_keep_the_shape_invariants(ops: list[tuple[str, int]]) -> None:
    """Against a model (the set of occupied leaves): leftmost-blank adds, minimal truncation."""
    tree = RatchetTree(SUITE, [_POOL[0]])
    occupied = {0}
    for op, k in ops:
        if op == "add":
            want = min(i for i in range(len(occupied) + 1) if i not in occupied)
            assert tree.add_leaf(_POOL[k % len(_POOL)]) == want
            occupied.add(want)
        elif occupied:
            target = sorted(occupied)[k % len(occupied)]
            if op == "remove" and len(occupied) > 1:
                tree.remove_leaf(target)
                occupied.discard(target)
            elif op == "update":
                tree.update_leaf(target, _POOL[k % len(_POOL)])
        n = tree.n_leaves
        assert n & (n - 1) == 0 and len(tree.nodes) == 2 * n - 1
        assert {i for i, _ in tree.leaves()} == occupied
        assert n == 1 or max(occupied) >= n // 2, "truncation left an empty right half"
        again = RatchetTree.from_bytes(SUITE, tree.to_bytes())
        assert again.to_bytes() == tree.to_bytes() and again.tree_hash() == tree.tree_hash()
        assert tree.all_tree_hashes()[tree.root] == tree.tree_hash()


def _welcome_seed() -> tuple[bytes, object, bytes]:
    case = next(c for c in load_mls("welcome") if int(c["cipher_suite"]) == 1)
    kp = KeyPackage.from_bytes(bytes.fromhex(case["key_package"])[4:])
    return bytes.fromhex(case["welcome"])[4:], kp, bytes.fromhex(case["init_priv"])


_WELCOME, _WELCOME_KP, _WELCOME_INIT = _welcome_seed()


@settings(max_examples=200, deadline=None)
@given(data=mutated([_WELCOME]))
def test_mutated_welcomes_are_refused_cleanly(data: bytes) -> None:
    try:
        welcome = Welcome.from_bytes(data)
        open_welcome(SUITE, welcome, _WELCOME_KP, _WELCOME_INIT, verify_tree=True)
    except MLSError:
        pass
