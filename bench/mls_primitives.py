"""MLS primitive throughput: HPKE seal/open, sign/verify, ExpandWithLabel, secret-tree keys, framing.

Usage: ``python bench/mls_primitives.py [--suite 1] [--seconds 0.5] [--json PATH]``. Prints one line
per operation (operations per second) and optionally writes the same figures as JSON. Tree hash
and TreeKEM path creation are measured by ``bench/mls_tree.py`` beside the ratchet tree code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from machine import Recorder
from timing import DEFAULT_SECONDS, measure

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.framing import (
    FramedContent,
    Sender,
    protect_private,
    sign_content,
    unprotect_private,
)
from ciris_av_plugin.mls.messages import GroupContext
from ciris_av_plugin.mls.registries import WireFormat
from ciris_av_plugin.mls.secret_tree import RatchetType, SecretTree


def cases(cs: CipherSuite) -> dict[str, Callable[[], object]]:
    hpke_priv, hpke_pub = cs.generate_hpke_key_pair()
    enc, ct = cs.hpke_seal(hpke_pub, b"info", b"", b"\x00" * 32)
    sig_priv, sig_pub = cs.generate_signature_key_pair()
    content = b"\x00" * 256
    sig = cs.sign_with_label(sig_priv, b"FramedContentTBS", content)
    secret = b"\x01" * cs.Nh

    gc = GroupContext(cs.id, b"group", 1, b"\x02" * cs.Nh, b"\x03" * cs.Nh, [])
    ac = sign_content(
        cs, WireFormat.PRIVATE_MESSAGE, FramedContent(b"group", 1, Sender.member(0), b"", b"\x00" * 1024), sig_priv, gc
    )
    sender_tree = SecretTree(cs, secret, 2)

    def protect() -> object:
        return protect_private(cs, ac, sender_tree, secret)

    state = {"gen": 0}

    def ratchet_step() -> object:
        tree = SecretTree(cs, secret, 128) if state["gen"] == 0 else state["tree"]
        state["tree"] = tree
        state["gen"] = (state["gen"] + 1) % 500
        return tree.next_for_sending(0, RatchetType.APPLICATION)

    def protect_unprotect() -> object:
        t_send, t_recv = SecretTree(cs, secret, 2), SecretTree(cs, secret, 2)
        msg = protect_private(cs, ac, t_send, secret)
        return unprotect_private(cs, msg, t_recv, secret, gc, lambda leaf: sig_pub)

    return {
        "hpke_seal": lambda: cs.hpke_seal(hpke_pub, b"info", b"", b"\x00" * 32),
        "hpke_open": lambda: cs.hpke_open(hpke_priv, enc, b"info", b"", ct),
        "derive_key_pair": lambda: cs.derive_key_pair(secret),
        "sign_with_label_256B": lambda: cs.sign_with_label(sig_priv, b"FramedContentTBS", content),
        "verify_with_label_256B": lambda: cs.verify_with_label(sig_pub, b"FramedContentTBS", content, sig),
        "expand_with_label": lambda: cs.expand_with_label(secret, b"label", b"context", cs.Nh),
        "secret_tree_next_key": ratchet_step,
        "private_message_protect_1KiB": protect,
        "private_message_roundtrip_1KiB": protect_unprotect,
    }


def run_bench(name: str, make_cases: Callable[[CipherSuite], dict[str, Callable[[], object]]], argv: list[str]) -> int:
    """Measure every case of ``make_cases(suite)``, print ops/s and optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", type=lambda s: int(s, 0), default=1)
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = ap.parse_args(argv)
    recorder = Recorder(name)
    cs = CipherSuite(args.suite)
    results = {}
    for case, fn in make_cases(cs).items():
        ops = measure(fn, args.seconds)
        results[case] = round(ops, 1)
        print(f"{case:38s} {ops:12.1f} ops/s")
    if args.json:
        recorder.write(args.json, {"suite": cs.id, "seconds_per_case": args.seconds, "ops_per_second": results})
    return 0


def main(argv: list[str]) -> int:
    """The primitives, then the tree figures of ``mls_tree.py`` (tree hash, TreeKEM paths)."""
    from mls_tree import cases as tree_cases  # lazily: mls_tree imports this module

    return run_bench("mls_primitives", lambda cs: {**cases(cs), **tree_cases(cs)}, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
