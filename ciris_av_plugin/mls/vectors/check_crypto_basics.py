"""crypto-basics.json: RefHash, ExpandWithLabel, DeriveSecret, DeriveTreeSecret, Sign/Verify and
Encrypt/DecryptWithLabel for one suite per case (RFC 9420 §5.1, §5.2, §8)."""

from __future__ import annotations

from ..crypto import CipherSuite
from . import Counts
from ._cases import h, run_suite_cases


def _check(cs: CipherSuite, c: dict) -> str | None:
    r = c["ref_hash"]
    if cs.ref_hash(r["label"].encode(), h(r["value"])) != h(r["out"]):
        return "ref_hash"
    e = c["expand_with_label"]
    if cs.expand_with_label(h(e["secret"]), e["label"].encode(), h(e["context"]), e["length"]) != h(e["out"]):
        return "expand_with_label"
    d = c["derive_secret"]
    if cs.derive_secret(h(d["secret"]), d["label"].encode()) != h(d["out"]):
        return "derive_secret"
    t = c["derive_tree_secret"]
    got = cs.derive_tree_secret(h(t["secret"]), t["label"].encode(), t["generation"], t["length"])
    if got != h(t["out"]):
        return "derive_tree_secret"
    s = c["sign_with_label"]
    label, content, pub = s["label"].encode(), h(s["content"]), h(s["pub"])
    if not cs.verify_with_label(pub, label, content, h(s["signature"])):
        return "verify_with_label(vector signature)"
    if cs.signature_public_key(h(s["priv"])) != pub:
        return "signature_public_key"
    if not cs.verify_with_label(pub, label, content, cs.sign_with_label(h(s["priv"]), label, content)):
        return "verify_with_label(own signature)"
    x = c["encrypt_with_label"]
    label, ctx, pt = x["label"].encode(), h(x["context"]), h(x["plaintext"])
    if cs.decrypt_with_label(h(x["priv"]), label, ctx, h(x["kem_output"]), h(x["ciphertext"])) != pt:
        return "decrypt_with_label(vector)"
    kem_output, ct = cs.encrypt_with_label(h(x["pub"]), label, ctx, pt)
    if cs.decrypt_with_label(h(x["priv"]), label, ctx, kem_output, ct) != pt:
        return "decrypt_with_label(own)"
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check)
