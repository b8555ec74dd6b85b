"""secret-tree.json: sender-data key/nonce and handshake/application ratchet keys per leaf (§9, §6.3.2)."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..secret_tree import RatchetType, SecretTree, sender_data_key_nonce
from . import Counts
from ._cases import h, run_suite_cases


def _check(cs: CipherSuite, c: dict) -> str | None:
    sd = c["sender_data"]
    key, nonce = sender_data_key_nonce(cs, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    if key != h(sd["key"]) or nonce != h(sd["nonce"]):
        return "sender_data"
    tree = SecretTree(cs, h(c["encryption_secret"]), len(c["leaves"]))
    for leaf, entries in enumerate(c["leaves"]):
        for e in entries:
            g = e["generation"]
            for kind, name in ((RatchetType.HANDSHAKE, "handshake"), (RatchetType.APPLICATION, "application")):
                want = (h(e[f"{name}_key"]), h(e[f"{name}_nonce"]))
                if tree.key_nonce(leaf, kind, g) != want:
                    return f"leaf {leaf} generation {g} {name} (peek)"
                if tree.consume(leaf, kind, g) != want:
                    return f"leaf {leaf} generation {g} {name} (consume)"
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check)
