"""Welcome (§12.4.3): a joiner opens what a committer built; every check refuses a forged part."""

from __future__ import annotations

import dataclasses

import pytest
from support_mls_tree import GROUP_ID, SUITE, context, grow, new_member
from support_vectors import MLS_COUNTS, load_mls

from ciris_av_plugin.mls import key_schedule as ks
from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.framing import MLSMessage
from ciris_av_plugin.mls.messages import Extension, GroupContext
from ciris_av_plugin.mls.proposal_structs import PreSharedKeyID
from ciris_av_plugin.mls.registries import ExtensionType, PSKType, ResumptionPSKUsage
from ciris_av_plugin.mls.tree import RatchetTree
from ciris_av_plugin.mls.treekem import create_update_path
from ciris_av_plugin.mls.welcome import (
    WelcomeError,
    encrypt_group_info,
    encrypt_group_secrets,
    open_welcome,
    psk_secret_for,
)
from ciris_av_plugin.mls.welcome_structs import GroupInfo, GroupSecrets, PathSecret, Welcome

CTH = b"\x11" * 32


def _admit(with_tree: bool = True, psks=(), psk_values=(), signer: int = 0, bad_tag: bool = False):
    group = grow(3)
    joiner = new_member(b"joiner")
    index = group.tree.add_leaf(joiner.key_package.leaf_node)
    result = create_update_path(group.tree, 0, group.members[0].sig_priv, context(group.tree, 1), [index])
    tree = result.tree
    gc = GroupContext(SUITE.id, GROUP_ID, 1, tree.tree_hash(), CTH)
    joiner_secret = ks.joiner_secret(SUITE, b"\x22" * 32, result.commit_secret, gc)
    psk_secret = ks.psk_secret(SUITE, list(zip(psks, psk_values, strict=True))) if psks else None
    secrets = ks.epoch_secrets_from_joiner(SUITE, joiner_secret, psk_secret, gc)
    exts = [Extension(ExtensionType.RATCHET_TREE, tree.to_bytes())] if with_tree else []
    tag = ks.confirmation_tag(SUITE, secrets.confirmation_key, CTH if not bad_tag else b"\x00" * 32)
    gi = GroupInfo(gc, exts, tag, signer)
    gi.sign(SUITE, group.members[0].sig_priv)
    egi = encrypt_group_info(SUITE, joiner_secret, psk_secret, gi)
    node, path_secret = result.path_secret_for_joiner(index)
    gs = GroupSecrets(joiner_secret, PathSecret(path_secret), list(psks))
    welcome = Welcome(SUITE.id, [encrypt_group_secrets(SUITE, joiner.key_package, egi, gs)], egi)
    return group, joiner, index, welcome, secrets, tree


def test_joiner_opens_welcome_and_reaches_the_same_epoch() -> None:
    group, joiner, index, welcome, secrets, tree = _admit()
    joined = open_welcome(SUITE, Welcome.from_bytes(welcome.to_bytes()), joiner.key_package, joiner.init_priv)
    assert joined.epoch_secrets.epoch_secret == secrets.epoch_secret
    assert joined.tree is not None and joined.tree.to_bytes() == tree.to_bytes()
    assert joined.my_leaf == index and joined.private is None
    with_keys = open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv, encryption_priv=joiner.enc_priv)
    assert with_keys.private is not None and with_keys.private.leaf_index == index
    assert set(with_keys.private.path_keys) == {3}  # common ancestor of leaves 0 and 3, the root
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv, encryption_priv=joiner.init_priv)


def test_tree_supplied_out_of_band_is_checked_against_the_tree_hash() -> None:
    group, joiner, _, welcome, _, tree = _admit(with_tree=False)
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv)
    joined = open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv, tree=tree)
    assert joined.tree is tree
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv, tree=group.tree)


def test_welcome_for_someone_else_or_wrong_init_key_is_refused() -> None:
    _, joiner, _, welcome, _, _ = _admit()
    other = new_member(b"other")
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, other.key_package, other.init_priv)
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, other.init_priv)


def test_signature_by_a_different_leaf_is_refused() -> None:
    _, joiner, _, welcome, _, _ = _admit(signer=1)
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv)


def test_tampered_group_info_does_not_decrypt() -> None:
    _, joiner, _, welcome, _, _ = _admit()
    egi = bytearray(welcome.encrypted_group_info)
    egi[-1] ^= 1
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, dataclasses.replace(welcome, encrypted_group_info=bytes(egi)), joiner.key_package,
                     joiner.init_priv)


def test_psks_need_a_lookup_and_the_right_value() -> None:
    psk_id = PreSharedKeyID(PSKType.EXTERNAL, b"\x33" * 32, psk_id=b"ext")
    _, joiner, _, welcome, secrets, _ = _admit(psks=[psk_id], psk_values=[b"secret psk"])
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv)
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv, psk_lookup=lambda _: b"wrong")
    joined = open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv, psk_lookup=lambda _: b"secret psk")
    assert joined.epoch_secrets.epoch_secret == secrets.epoch_secret


def test_wrong_suite_is_refused() -> None:
    _, joiner, _, welcome, _, _ = _admit()
    with pytest.raises(WelcomeError):
        open_welcome(SUITE, dataclasses.replace(welcome, cipher_suite=3), joiner.key_package, joiner.init_priv)


def test_signed_group_info_with_a_wrong_confirmation_tag_is_refused() -> None:
    _, joiner, _, welcome, _, _ = _admit(bad_tag=True)
    with pytest.raises(WelcomeError, match="confirmation tag"):
        open_welcome(SUITE, welcome, joiner.key_package, joiner.init_priv)


def test_reinit_psk_must_be_alone() -> None:
    reinit = PreSharedKeyID(PSKType.RESUMPTION, b"n" * 32, usage=ResumptionPSKUsage.REINIT, psk_group_id=b"g")
    ext = PreSharedKeyID(PSKType.EXTERNAL, b"m" * 32, psk_id=b"e")
    with pytest.raises(WelcomeError):
        psk_secret_for(SUITE, [reinit, ext], lambda _: b"k")
    assert psk_secret_for(SUITE, [reinit], lambda _: b"k") is not None


# passive-client-welcome.json has no later epochs, so every case is a pure Welcome join: the tree
# from the extension or given out of band, external PSKs, the joiner's keys and the resulting
# epoch_authenticator. It is interop evidence for open_welcome beyond welcome.json.
_PASSIVE = load_mls("passive-client-welcome")


def _hpke_priv(suite: CipherSuite, hex_key: str) -> bytes:
    """The P-521 cases carry some scalars with their leading zero byte stripped (65 of 66 bytes);
    SerializePrivateKey is fixed-width (RFC 9180 §7.1.2), so restore the width."""
    key = bytes.fromhex(hex_key)
    return key.rjust(suite.spec.kem.n_sk, b"\x00")


def test_every_passive_welcome_case_is_played() -> None:
    assert len(_PASSIVE) == MLS_COUNTS["passive-client-welcome"][0] == 56


@pytest.mark.parametrize("case", _PASSIVE, ids=[f"{i}-suite{c['cipher_suite']}" for i, c in enumerate(_PASSIVE)])
def test_passive_client_welcome_join(case: dict) -> None:
    suite = CipherSuite(int(case["cipher_suite"]))  # every suite of the file is implemented: none skipped
    assert not case["epochs"]
    kp = MLSMessage.from_bytes(bytes.fromhex(case["key_package"])).body
    welcome = MLSMessage.from_bytes(bytes.fromhex(case["welcome"])).body
    assert suite.signature_public_key(bytes.fromhex(case["signature_priv"])) == kp.leaf_node.signature_key
    init_priv = _hpke_priv(suite, case["init_priv"])
    assert suite.hpke_public_key(init_priv) == kp.init_key
    psks = {bytes.fromhex(p["psk_id"]): bytes.fromhex(p["psk"]) for p in case["external_psks"]}
    tree = RatchetTree.from_bytes(suite, bytes.fromhex(case["ratchet_tree"])) if case["ratchet_tree"] else None
    joined = open_welcome(
        suite,
        welcome,
        kp,
        init_priv,
        tree=tree,
        psk_lookup=lambda psk_id: psks[psk_id.psk_id],
        encryption_priv=_hpke_priv(suite, case["encryption_priv"]),
    )
    assert joined.epoch_secrets.epoch_authenticator.hex() == case["initial_epoch_authenticator"]
    assert joined.private is not None
