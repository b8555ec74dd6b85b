"""RFC 9605 SFrame: official vectors, header codec, round trips on suites 1-5, tamper detection."""

import os
import subprocess
import sys

import pytest
from support_vectors import SFRAME_COUNTS, sframe_path

from ciris_av_plugin.errors import MediaError
from ciris_av_plugin.media.errors import DecryptError, SFrameError, SFrameHeaderError, UnknownKeyError
from ciris_av_plugin.media.sframe import (
    MEDIA_SUITE,
    SUITES,
    CipherSuite,
    SFrameKey,
    decode_header,
    encode_header,
    parse_ciphertext,
    sframe_decrypt,
    sframe_encrypt,
)
from ciris_av_plugin.media.vectors import run


def test_vector_file_gives_the_pinned_counts():
    report = run(sframe_path())
    assert (report.passed, report.failed, report.skipped) == SFRAME_COUNTS


def test_vector_runner_cli_passes_the_vector_file():
    proc = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.media.vectors", str(sframe_path())],
        capture_output=True,
        text=True,
    )
    passed, failed, skipped = SFRAME_COUNTS
    assert proc.stdout.strip().splitlines()[-1] == f"{passed} passed, {failed} failed, {skipped} skipped", proc.stdout
    assert proc.returncode == 0


def test_vector_runner_reports_a_corrupted_vector(tmp_path):
    import json

    data = json.loads(sframe_path().read_text())
    data["sframe"][0]["ct"] = data["sframe"][0]["ct"][:-2] + "00"
    data["header"][5]["encoded"] = "ff"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    report = run(bad)
    passed, _, skipped = SFRAME_COUNTS
    assert (report.passed, report.failed, report.skipped) == (passed - 2, 2, skipped)
    proc = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.media.vectors", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert proc.stdout.strip().splitlines()[-1].endswith(f"2 failed, {report.skipped} skipped")


@pytest.mark.parametrize(
    "kid,ctr",
    [(0, 0), (7, 7), (8, 0), (0, 8), (255, 256), (256, 255), ((1 << 64) - 1, (1 << 64) - 1), (1 << 56, 1)],
)
def test_header_round_trip_and_minimal(kid, ctr):
    enc = encode_header(kid, ctr)
    hdr = decode_header(enc + b"trailing")
    assert (hdr.kid, hdr.ctr, hdr.length) == (kid, ctr, len(enc))
    # Minimal: one byte shorter cannot hold the larger of the two values in extended form.
    assert len(enc) == 1 + (0 if kid < 8 else (kid.bit_length() + 7) // 8) + (
        0 if ctr < 8 else (ctr.bit_length() + 7) // 8
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80",  # KID length 1, no byte
        b"\x88\x10",  # KID present, CTR byte missing
        b"\xf0" + b"\x01" * 7,  # 8-byte KID, 7 bytes
        b"\x80\x05",  # KID 5 in extended form: not minimal
        b"\x90\x00\x09",  # KID 9 in 2 bytes: not minimal
        b"\x08\x03",  # CTR 3 extended
        b"\x09\x00\xff",  # CTR 255 in 2 bytes
    ],
)
def test_header_decode_rejects_truncated_and_non_minimal(raw):
    with pytest.raises(SFrameHeaderError):
        decode_header(raw)


@pytest.mark.parametrize("kid,ctr", [(-1, 0), (0, -1), (1 << 64, 0), (0, 1 << 64)])
def test_header_encode_rejects_out_of_range(kid, ctr):
    with pytest.raises(SFrameHeaderError):
        encode_header(kid, ctr)


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_round_trip_every_suite(suite):
    params = SUITES[suite]
    base_key = bytes(range(params.nk))
    kid = 0x1234
    key = SFrameKey.derive(suite, base_key, kid)
    meta = b"forwarding header"
    for ctr, pt in ((0, b""), (1, b"x"), (300, os.urandom(5000))):
        ct = sframe_encrypt(key, ctr, meta, pt)
        assert len(ct) == len(encode_header(kid, ctr)) + len(pt) + params.nt
        opened = sframe_decrypt(lambda k: key, meta, ct)
        assert (opened.kid, opened.ctr, opened.plaintext) == (kid, ctr, pt)


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_tampering_anywhere_fails_authentication(suite):
    params = SUITES[suite]
    key = SFrameKey.derive(suite, b"\x11" * params.nk, 9)
    meta = b"meta"
    ct = sframe_encrypt(key, 42, meta, b"payload bytes")
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(SFrameError):
            # A flipped header bit changes KID or CTR (or the encoding): either the lookup
            # fails, the header is refused, or authentication fails. Never plaintext.
            sframe_decrypt(lambda k: key if k == 9 else _unknown(k), meta, bytes(bad))
    with pytest.raises(DecryptError):
        sframe_decrypt(lambda k: key, b"metb", ct)
    with pytest.raises(DecryptError):
        sframe_decrypt(lambda k: key, meta, ct[:-1])
    other = SFrameKey.derive(suite, b"\x12" * params.nk, 9)
    with pytest.raises(DecryptError):
        sframe_decrypt(lambda k: other, meta, ct)


def _unknown(kid):
    raise UnknownKeyError(kid)


def test_keys_differ_per_kid_and_suite():
    base = b"\x01" * 16
    a = SFrameKey.derive(MEDIA_SUITE, base, 1)
    b = SFrameKey.derive(MEDIA_SUITE, base, 2)
    c = SFrameKey.derive(CipherSuite.AES_128_CTR_HMAC_SHA256_80, b"\x01" * 48, 1)
    assert a.key != b.key and a.salt != b.salt and a.salt != c.salt
    with pytest.raises(MediaError):
        SFrameKey.derive(9, base, 1)


def test_nonce_is_salt_xor_counter():
    key = SFrameKey.derive(MEDIA_SUITE, b"\x00" * 16, 0)
    assert key.nonce(0) == key.salt
    assert int.from_bytes(key.nonce(5), "big") == int.from_bytes(key.salt, "big") ^ 5


def test_parse_ciphertext_splits_header():
    key = SFrameKey.derive(MEDIA_SUITE, b"\x00" * 16, 300)
    ct = key.seal(9, b"", b"abc")
    hdr, body = parse_ciphertext(ct)
    assert ct[: hdr.length] == encode_header(300, 9)
    assert bytes(body) == ct[hdr.length :]


def test_vector_runner_missing_file_is_a_clean_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.media.vectors", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_decode_header_at_an_offset():
    enc = encode_header(0x10301, 77)
    hdr = decode_header(b"forwarding" + enc + b"ct", 10)
    assert (hdr.kid, hdr.ctr, hdr.length) == (0x10301, 77, len(enc))
    with pytest.raises(SFrameHeaderError):
        decode_header(b"forwarding", 10)
    with pytest.raises(SFrameHeaderError):
        decode_header(memoryview(b"xx" + enc[:-1]), 2)
