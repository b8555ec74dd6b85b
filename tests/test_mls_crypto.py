"""Cipher suite primitives: round trips, determinism, failure modes raise CryptoError only."""

from __future__ import annotations

import pytest

from ciris_av_plugin.errors import MLSError
from ciris_av_plugin.mls.crypto import SUITES, CipherSuite
from ciris_av_plugin.mls.errors import CryptoError, UnsupportedSuite


@pytest.fixture(params=sorted(SUITES))
def cs(request: pytest.FixtureRequest) -> CipherSuite:
    return CipherSuite(request.param)


def test_suite_1_parameters() -> None:
    cs = CipherSuite(1)
    assert (cs.id, cs.Nh, cs.Nk, cs.Nn) == (1, 32, 16, 12)


def test_unsupported_suite() -> None:
    for sid in (0, 8, 0x4D, 0xFFFF):
        with pytest.raises(UnsupportedSuite):
            CipherSuite(sid)
    assert issubclass(UnsupportedSuite, MLSError) and issubclass(CryptoError, MLSError)


def test_sign_verify_roundtrip(cs: CipherSuite) -> None:
    priv, pub = cs.generate_signature_key_pair()
    assert cs.signature_public_key(priv) == pub
    sig = cs.sign_with_label(priv, b"LeafNodeTBS", b"content")
    assert cs.verify_with_label(pub, b"LeafNodeTBS", b"content", sig)
    assert not cs.verify_with_label(pub, b"KeyPackageTBS", b"content", sig)  # label is bound
    assert not cs.verify_with_label(pub, b"LeafNodeTBS", b"content!", sig)
    assert not cs.verify_with_label(pub, b"LeafNodeTBS", b"content", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not cs.verify_with_label(pub[:-1], b"LeafNodeTBS", b"content", sig)  # bad key: False, no raise
    assert not cs.verify_with_label(pub, b"LeafNodeTBS", b"content", b"short")


def test_hpke_roundtrip(cs: CipherSuite) -> None:
    priv, pub = cs.generate_hpke_key_pair()
    assert cs.hpke_public_key(priv) == pub
    enc, ct = cs.hpke_seal(pub, b"info", b"aad", b"secret")
    assert cs.hpke_open(priv, enc, b"info", b"aad", ct) == b"secret"
    for bad in ((b"other", b"aad"), (b"info", b"other")):
        with pytest.raises(CryptoError):
            cs.hpke_open(priv, enc, bad[0], bad[1], ct)
    with pytest.raises(CryptoError):
        cs.hpke_open(priv, enc[:-1], b"info", b"aad", ct)
    with pytest.raises(CryptoError):
        cs.hpke_open(cs.generate_hpke_key_pair()[0], enc, b"info", b"aad", ct)


def test_encrypt_with_label_roundtrip(cs: CipherSuite) -> None:
    priv, pub = cs.generate_hpke_key_pair()
    kem_output, ct = cs.encrypt_with_label(pub, b"UpdatePathNode", b"ctx", b"path secret")
    assert cs.decrypt_with_label(priv, b"UpdatePathNode", b"ctx", kem_output, ct) == b"path secret"
    with pytest.raises(CryptoError):
        cs.decrypt_with_label(priv, b"Welcome", b"ctx", kem_output, ct)


def test_derive_key_pair_deterministic(cs: CipherSuite) -> None:
    a = cs.derive_key_pair(b"\x01" * 32)
    assert a == cs.derive_key_pair(b"\x01" * 32)
    assert a != cs.derive_key_pair(b"\x02" * 32)
    assert cs.hpke_public_key(a[0]) == a[1]


def test_derive_key_pair_rfc9180_a1() -> None:
    """RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256)): ikmR -> skRm, pkRm."""
    sk, pk = CipherSuite(1).derive_key_pair(
        bytes.fromhex("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037")
    )
    assert sk.hex() == "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8"
    assert pk.hex() == "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"


def test_aead_errors_are_crypto_errors(cs: CipherSuite) -> None:
    key, nonce = bytes(cs.Nk), bytes(cs.Nn)
    ct = cs.aead_encrypt(key, nonce, b"aad", b"pt")
    assert cs.aead_decrypt(key, nonce, b"aad", ct) == b"pt"
    with pytest.raises(CryptoError):
        cs.aead_decrypt(key, nonce, b"aaX", ct)
    with pytest.raises(CryptoError):
        cs.aead_decrypt(key[:-1], nonce, b"aad", ct)
    with pytest.raises(CryptoError):
        cs.aead_decrypt(key, nonce[:-1], b"aad", ct)
    with pytest.raises(CryptoError):
        cs.aead_decrypt(key, nonce, b"aad", b"")


def test_bad_key_lengths_raise_crypto_error(cs: CipherSuite) -> None:
    with pytest.raises(CryptoError):
        cs.hpke_public_key(b"\x00" * 5)
    with pytest.raises(CryptoError):
        cs.signature_public_key(b"\x00" * 5)
    with pytest.raises(CryptoError):
        cs.encrypt_with_label(b"\x00" * 5, b"l", b"", b"pt")
    with pytest.raises(CryptoError):
        cs.expand_with_label(b"k", b"l", b"", 1 << 16)


def test_refs_use_their_labels() -> None:
    cs = CipherSuite(1)
    assert cs.make_key_package_ref(b"x") == cs.ref_hash(b"MLS 1.0 KeyPackage Reference", b"x")
    assert cs.make_proposal_ref(b"x") == cs.ref_hash(b"MLS 1.0 Proposal Reference", b"x")
    assert cs.make_key_package_ref(b"x") != cs.make_proposal_ref(b"x")


def test_nist_invalid_points_and_scalars() -> None:
    cs = CipherSuite(2)
    priv, pub = cs.generate_hpke_key_pair()
    assert len(priv) == 32 and len(pub) == 65 and pub[0] == 4
    bad_point = b"\x04" + b"\x01" * 64
    with pytest.raises(CryptoError):
        cs.hpke_seal(bad_point, b"", b"", b"pt")
    enc, ct = cs.hpke_seal(pub, b"", b"", b"pt")
    with pytest.raises(CryptoError):
        cs.hpke_open(priv, bad_point, b"", b"", ct)
    with pytest.raises(CryptoError):
        cs.hpke_public_key(bytes(32))  # scalar 0
    with pytest.raises(CryptoError):
        cs.hpke_public_key(b"\xff" * 32)  # scalar above the group order
    sig_priv, sig_pub = cs.generate_signature_key_pair()
    assert not cs.verify_with_label(bad_point, b"l", b"c", cs.sign_with_label(sig_priv, b"l", b"c"))


def test_derive_key_pair_p521_uses_bitmask() -> None:
    cs = CipherSuite(5)
    for i in range(8):
        priv, pub = cs.derive_key_pair(bytes([i]) * 66)
        assert len(priv) == 66 and priv[0] <= 1 and len(pub) == 133


@pytest.mark.parametrize("suite_id", [sid for sid, spec in sorted(SUITES.items()) if spec.kem.hpke_kem is not None])
def test_soft_hpke_interoperates_with_cryptography(suite_id: int) -> None:
    """Our RFC 9180 code and cryptography's Rust HPKE (the path MLS takes: empty AAD) open each
    other's ciphertexts."""
    cs = CipherSuite(suite_id)
    priv, pub = cs.generate_hpke_key_pair()
    enc, ct = cs.soft_hpke.seal(pub, b"info", b"", b"soft")
    assert cs._hpke_suite.decrypt(enc + ct, cs.spec.kem.private_key(priv), b"info") == b"soft"  # noqa: SLF001
    assert cs.hpke_open(priv, enc, b"info", b"", ct) == b"soft"
    enc, ct = cs.hpke_seal(pub, b"info", b"", b"rust")
    assert cs.soft_hpke.open(priv, enc, b"info", b"", ct) == b"rust"
    # a non-empty AAD is bound either way (SoftHPKE carries it)
    enc, ct = cs.hpke_seal(pub, b"info", b"aad", b"with aad")
    assert cs.soft_hpke.open(priv, enc, b"info", b"aad", ct) == b"with aad"
    with pytest.raises(CryptoError):
        cs.hpke_open(priv, enc, b"info", b"", ct)


def test_hpke_export_rfc9180_a7() -> None:
    """RFC 9180 A.7.1 (DHKEM(X25519), HKDF-SHA256, export-only AEAD 0xFFFF), receiver side."""
    from ciris_av_plugin.mls.hpke_soft import AES_128_GCM, AeadSpec, SoftHPKE
    from ciris_av_plugin.mls.kem import DHKEMX25519

    export_only = AeadSpec(AES_128_GCM.cls, 16, 12, None, 0xFFFF)
    soft = SoftHPKE(DHKEMX25519(), "sha256", export_only)
    sk_r = bytes.fromhex("33d196c830a12f9ac65d6e565a590d80f04ee9b19c83c87f2c170d972a812848")
    enc = bytes.fromhex("e5e8f9bfff6c2f29791fc351d2c25ce1299aa5eaca78a757c0b4fb4bcd830918")
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    for ctx, want in (
        ("", "7a36221bd56d50fb51ee65edfd98d06a23c4dc87085aa5866cb7087244bd2a36"),
        ("00", "d5535b87099c6c3ce80dc112a2671c6ec8e811a2f284f948cec6dd1708ee33f0"),
        ("54657374436f6e74657874", "ffaabc85a776136ca0c378e5d084c9140ab552b78f039d2e8775f26efff4c70e"),
    ):
        assert soft.export_receiver(sk_r, enc, info, bytes.fromhex(ctx), 32).hex() == want


def test_external_init_export_roundtrip(cs: CipherSuite) -> None:
    """§8.3: the joiner's exported init_secret equals what members derive from kem_output."""
    priv, pub = cs.derive_key_pair(b"\x07" * cs.Nh)
    label = b"MLS 1.0 external init secret"
    kem_output, secret = cs.hpke_export_sender(pub, b"", label, cs.Nh)
    assert cs.hpke_export_receiver(priv, kem_output, b"", label, cs.Nh) == secret
    with pytest.raises(CryptoError):
        cs.hpke_export_receiver(priv, kem_output[:-1], b"", label, cs.Nh)
