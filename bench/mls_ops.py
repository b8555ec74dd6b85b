"""Group operations of the MLS state machine: commit, process, join, relay follow; message sizes.

Usage: ``python bench/mls_ops.py [--suite 1] [--sizes 2,8,32,128] [--seconds 0.5] [--json PATH]``.

For each group size n the group is built with one batched Add commit carrying a path, then one
more path commit by another member, so the tree has populated parent nodes and unmerged leaves
like a group in use. Timed, each as the mean of repeated runs on a fresh copy of the state
(restored from ``to_bytes()`` outside the timing):

- ``commit_add_ms``: a member builds a commit adding one KeyPackage (with its Welcome);
- ``process_add_ms``: another member processes that commit;
- ``join_ms``: the joiner processes the Welcome (tree in it; all §12.4.3.1 checks);
- ``commit_remove_ms``: a member builds a commit removing one member (path required);
- ``process_remove_ms``: another member processes it (the "rekey" of a group of n);
- ``public_follow_ms``: the relay's PublicGroup follows the Remove commit;
- sizes in bytes of the Add commit, its Welcome and the Remove commit.

Upstream figures (OpenMLS, Rust, from its published benchmarks): join ~0.7 ms, rekey of 128 ~9.7 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from machine import Recorder

from ciris_av_plugin.mls import CipherSuite, Group, KeyPackageBundle, PublicGroup

DEFAULT_SIZES = (2, 8, 32, 128)
DEFAULT_SECONDS = 0.5
MIN_ITERATIONS = 3
NOW = 1_800_000_000
UPSTREAM = {"openmls_join_ms": 0.7, "openmls_rekey_128_ms": 9.7}


def clock() -> float:
    return NOW


def ident(n: int) -> bytes:
    return n.to_bytes(16, "big")


def timed(op: Callable[[], object], seconds: float, setup: Callable[[], object] | None = None) -> float:
    """Mean milliseconds of ``op`` (``setup`` runs before each call, untimed)."""
    total, n = 0.0, 0
    while total < seconds or n < MIN_ITERATIONS:
        if setup is not None:
            setup()
        start = time.perf_counter()
        op()
        total += time.perf_counter() - start
        n += 1
    return 1000 * total / n


def build(suite: CipherSuite, n: int) -> tuple[Group, Group, PublicGroup]:
    """A group of ``n`` members: (committer, another member, the relay's PublicGroup)."""
    a = Group.create(b"bench-ops", ident(0), suite, clock=clock)
    public = PublicGroup.from_group_info(a.group_info(), clock=clock)
    if n == 1:
        return a, a, public
    bundles = [KeyPackageBundle.generate(ident(i), suite, clock=clock) for i in range(1, n)]
    pending = a.commit(adds=[b.key_package for b in bundles], force_path=True)
    public.process(pending.commit)
    a.merge_pending()
    b = Group.join(pending.welcome, [bundles[-1]], clock=clock)
    pending = b.commit(force_path=True)
    public.process(pending.commit)
    a.process(pending.commit)
    b.merge_pending()
    return a, b, public


def run_size(suite: CipherSuite, n: int, seconds: float) -> dict[str, float | int]:
    a, b, public = build(suite, n)
    a_bytes, b_bytes, p_bytes = a.to_bytes(), b.to_bytes(), public.to_bytes()
    joiner = KeyPackageBundle.generate(ident(10_000), suite, clock=clock)
    state: dict[str, object] = {}

    def fresh_a() -> None:
        state["a"] = Group.from_bytes(a_bytes, clock=clock)

    def fresh_b() -> None:
        state["b"] = Group.from_bytes(b_bytes, clock=clock)

    def fresh_public() -> None:
        state["p"] = PublicGroup.from_bytes(p_bytes, clock=clock)

    out: dict[str, float | int] = {"members": n}
    out["commit_add_ms"] = timed(lambda: state["a"].commit(adds=[joiner.key_package]), seconds, fresh_a)
    add = Group.from_bytes(a_bytes, clock=clock).commit(adds=[joiner.key_package])
    out["process_add_ms"] = timed(lambda: state["b"].process(add.commit), seconds, fresh_b)
    out["join_ms"] = timed(lambda: Group.join(add.welcome, [joiner], clock=clock), seconds)
    victim = ident(1) if n > 2 else ident(n - 1)
    if n > 1:
        out["commit_remove_ms"] = timed(lambda: state["a"].commit(removes=[victim]), seconds, fresh_a)
        remove = Group.from_bytes(a_bytes, clock=clock).commit(removes=[victim])
        if victim != b.identity:
            out["process_remove_ms"] = timed(lambda: state["b"].process(remove.commit), seconds, fresh_b)
        out["public_follow_ms"] = timed(lambda: state["p"].process(remove.commit), seconds, fresh_public)
        out["commit_remove_bytes"] = len(remove.commit)
    out["commit_add_bytes"] = len(add.commit)
    out["welcome_bytes"] = len(add.welcome or b"")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=int, default=1)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    recorder = Recorder("mls_ops")
    suite = CipherSuite(args.suite)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = []
    cols = ("commit_add_ms", "process_add_ms", "join_ms", "commit_remove_ms", "process_remove_ms",
            "public_follow_ms", "commit_add_bytes", "welcome_bytes", "commit_remove_bytes")
    print(f"suite {suite.id}  " + "  ".join(f"{c:>19}" for c in cols))
    for n in sizes:
        r = run_size(suite, n, args.seconds)
        results.append(r)
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'-':>19}" if v is None else f"{v:>19.2f}" if c.endswith("_ms") else f"{v:>19d}")
        print(f"n={n:<6} " + "  ".join(cells))
    print(f"upstream (OpenMLS): join ~{UPSTREAM['openmls_join_ms']} ms, rekey of 128 ~{UPSTREAM['openmls_rekey_128_ms']} ms")
    if args.json is not None:
        recorder.write(args.json, {"suite": suite.id, "seconds_per_case": args.seconds, "upstream": UPSTREAM,
                                   "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
