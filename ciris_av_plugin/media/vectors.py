"""Check the RFC 9605 test vectors: ``python -m ciris_av_plugin.media.vectors PATH``.

PATH is the SFrame ``test-vectors.json`` (the shape published with RFC 9605 Appendix C:
``header``, ``aes_ctr_hmac``, ``sframe`` and, here, ``aes_256_ctr_hmac`` whose suites 6-8 are
not in RFC 9605 and are counted as skipped). The last line printed is exactly
``N passed, M failed, K skipped``; the exit status is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AVError
from .errors import UnknownKeyError
from .sframe import (
    SUITES,
    SFrameKey,
    aead_decrypt,
    aead_encrypt,
    decode_header,
    derive_key_salt,
    encode_header,
    key_label,
    salt_label,
    sframe_decrypt,
    sframe_encrypt,
)


@dataclass
class VectorReport:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def _expect(name: str, got: object, want: object) -> None:
    if got != want:
        raise AssertionError(f"{name}: got {got!r}, want {want!r}")


def check_header(v: dict[str, Any]) -> None:
    encoded = _h(v["encoded"])
    _expect("encode", encode_header(v["kid"], v["ctr"]), encoded)
    hdr = decode_header(encoded)
    _expect("decode", (hdr.kid, hdr.ctr, hdr.length), (v["kid"], v["ctr"], len(encoded)))


def check_aead_ctr_hmac(v: dict[str, Any]) -> None:
    suite = v["cipher_suite"]
    params = SUITES[suite]
    key = _h(v["key"])
    _expect("enc_key", key[: params.nka], _h(v["enc_key"]))
    _expect("auth_key", key[params.nka :], _h(v["auth_key"]))
    ct = aead_encrypt(suite, key, _h(v["nonce"]), _h(v["aad"]), _h(v["pt"]))
    _expect("ct", ct, _h(v["ct"]))
    _expect("pt", aead_decrypt(suite, key, _h(v["nonce"]), _h(v["aad"]), ct), _h(v["pt"]))


def check_sframe(v: dict[str, Any]) -> None:
    suite, kid, ctr = v["cipher_suite"], v["kid"], v["ctr"]
    _expect("sframe_key_label", key_label(kid, suite), _h(v["sframe_key_label"]))
    _expect("sframe_salt_label", salt_label(kid, suite), _h(v["sframe_salt_label"]))
    secret, key, salt = derive_key_salt(suite, _h(v["base_key"]), kid)
    _expect("sframe_secret", secret, _h(v["sframe_secret"]))
    _expect("sframe_key", key, _h(v["sframe_key"]))
    _expect("sframe_salt", salt, _h(v["sframe_salt"]))
    skey = SFrameKey.derive(suite, _h(v["base_key"]), kid)
    _expect("nonce", skey.nonce(ctr), _h(v["nonce"]))
    metadata = _h(v["metadata"])
    _expect("aad", encode_header(kid, ctr) + metadata, _h(v["aad"]))
    ct = sframe_encrypt(skey, ctr, metadata, _h(v["pt"]))
    _expect("ct", ct, _h(v["ct"]))

    def lookup(k: int) -> SFrameKey:
        if k != kid:
            raise UnknownKeyError(f"vector has no key for KID {k}")
        return skey

    opened = sframe_decrypt(lookup, metadata, _h(v["ct"]))
    _expect("decrypt", (opened.kid, opened.ctr, opened.plaintext), (kid, ctr, _h(v["pt"])))


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "header": check_header,
    "aes_ctr_hmac": check_aead_ctr_hmac,
    "aes_256_ctr_hmac": check_aead_ctr_hmac,
    "sframe": check_sframe,
}


def run(path: Path) -> VectorReport:
    """Check every vector in the file; unknown sections and non-RFC 9605 suites are skipped."""
    data = json.loads(Path(path).read_text())
    report = VectorReport()
    for section, vectors in data.items():
        check = _CHECKS.get(section)
        for i, v in enumerate(vectors):
            suite = v.get("cipher_suite")
            if check is None or (suite is not None and suite not in SUITES):
                report.skipped += 1
                continue
            try:
                check(v)
            except (AssertionError, AVError, ValueError, KeyError, TypeError) as exc:
                report.failed += 1
                report.failures.append(f"FAIL {section}[{i}] suite={suite}: {exc}")
            else:
                report.passed += 1
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ciris_av_plugin.media.vectors", description=__doc__)
    parser.add_argument("path", type=Path, help="SFrame test-vectors.json")
    args = parser.parse_args(argv)
    try:
        report = run(args.path)
    except (OSError, ValueError) as exc:  # missing file, not JSON
        sys.stderr.write(f"cannot read {args.path}: {exc}\n")
        return 2
    for line in report.failures:
        sys.stdout.write(line + "\n")
    sys.stdout.write(report.summary() + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
