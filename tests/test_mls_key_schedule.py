"""Key schedule: the member and joiner paths agree; zero defaults; exporter binds label and context."""

from __future__ import annotations

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.key_schedule import (
    derive_epoch_secrets,
    epoch_secrets_from_joiner,
    exporter,
    joiner_secret,
    psk_secret,
    welcome_key_nonce,
    welcome_secret,
)
from ciris_av_plugin.mls.messages import GroupContext
from ciris_av_plugin.mls.proposal_structs import PreSharedKeyID
from ciris_av_plugin.mls.registries import PSKType

CS = CipherSuite(1)
GC = GroupContext(1, b"g", 1, b"\x01" * 32, b"\x02" * 32, [])


def test_member_and_joiner_paths_agree() -> None:
    init, commit, psk = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    member = derive_epoch_secrets(CS, init, commit, psk, GC)
    joiner = joiner_secret(CS, init, commit, GC)
    assert epoch_secrets_from_joiner(CS, joiner, psk, GC) == member
    assert welcome_secret(CS, joiner, psk) == member.welcome_secret


def test_missing_commit_and_psk_secret_mean_zero() -> None:
    init = b"\x0a" * 32
    assert derive_epoch_secrets(CS, init, None, None, GC) == derive_epoch_secrets(
        CS, init, bytes(32), bytes(32), GC
    )
    assert psk_secret(CS, []) == bytes(32)


def test_psk_order_matters() -> None:
    a = (PreSharedKeyID(PSKType.EXTERNAL, b"n1", psk_id=b"a"), b"k1")
    b = (PreSharedKeyID(PSKType.EXTERNAL, b"n2", psk_id=b"b"), b"k2")
    assert psk_secret(CS, [a, b]) != psk_secret(CS, [b, a])


def test_exporter_binds_label_and_context() -> None:
    s = b"\x0d" * 32
    base = exporter(CS, s, b"SFrame 1.0 Base Key", b"", 16)
    assert len(base) == 16
    assert base != exporter(CS, s, b"other", b"", 16)
    assert base != exporter(CS, s, b"SFrame 1.0 Base Key", b"x", 16)


def test_welcome_key_nonce_lengths() -> None:
    key, nonce = welcome_key_nonce(CS, b"\x0e" * 32)
    assert (len(key), len(nonce)) == (CS.Nk, CS.Nn)


def test_external_init_members_recover_joiner_init_secret() -> None:
    from ciris_av_plugin.mls.key_schedule import external_init_receiver, external_init_sender

    secrets = derive_epoch_secrets(CS, b"\x0a" * 32, b"\x0b" * 32, None, GC)
    priv, pub = secrets.external_key_pair(CS)
    kem_output, init_secret = external_init_sender(CS, pub)
    assert len(init_secret) == CS.Nh
    assert external_init_receiver(CS, priv, kem_output) == init_secret
