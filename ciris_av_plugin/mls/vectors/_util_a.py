"""Helpers shared by the vector checkers of the crypto/key-schedule/framing half."""

from __future__ import annotations

from collections.abc import Callable

from ..crypto import CipherSuite
from ..errors import UnsupportedSuite
from . import Counts


def h(s: str | None) -> bytes:
    """Hex field of a vector file to bytes (``None`` stays empty)."""
    return bytes.fromhex(s) if s else b""


def suite_or_skip(case: dict, counts: Counts) -> CipherSuite | None:
    """The case's cipher suite, or None after counting the case skipped (suite not implemented)."""
    try:
        return CipherSuite(int(case["cipher_suite"]))
    except UnsupportedSuite:
        counts.skipped += 1
        return None


def check_case(counts: Counts, where: str, fn: Callable[[], str | None]) -> None:
    """Run one case: ``fn`` returns None when every check passed, else why it failed."""
    try:
        why = fn()
    except Exception as exc:  # noqa: BLE001 - any crash is a failed case, with its reason
        why = f"{type(exc).__name__}: {exc}"
    if why is None:
        counts.passed += 1
    else:
        counts.fail(where, why)
