"""Builders for Group/PublicGroup tests: suite 1, a fixed clock, and members by number."""

from __future__ import annotations

from ciris_av_plugin.mls import CipherSuite, KeyPackageBundle

SUITE = CipherSuite(1)
NOW = 1_800_000_000
"""The fixed time every test group and KeyPackage lives at."""


def clock() -> float:
    return NOW


def ident(n: int) -> bytes:
    """The 16-byte identity of member ``n``."""
    return n.to_bytes(16, "big")


def bundle(n: int, suite: CipherSuite = SUITE) -> KeyPackageBundle:
    """A fresh KeyPackage (with its private keys) for member ``n``."""
    return KeyPackageBundle.generate(ident(n), suite, clock=clock)
