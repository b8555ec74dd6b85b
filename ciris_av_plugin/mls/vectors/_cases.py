"""The case loop every vector checker shares: hex fields, skipping unimplemented suites, and
counting a case passed, failed (with why) or skipped."""

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
    """Run one case: ``fn`` returns None when every check passed, else why it failed; any exception
    fails the case with its type and message (one failing case must not hide the others)."""
    try:
        why = fn()
    except Exception as exc:  # noqa: BLE001 - any crash is a failed case, with its reason
        why = f"{type(exc).__name__}: {exc}"
    if why is None:
        counts.passed += 1
    else:
        counts.fail(where, why)


def run_suite_cases(
    cases: list[dict],
    check: Callable[[CipherSuite, dict], str | None],
    where: str = "case {i} suite {suite}",
) -> Counts:
    """Run ``check(suite, case)`` on every case of an implemented suite; others count as skipped.
    ``where`` names a failed case; ``{i}`` is its index, ``{suite}`` its cipher_suite field."""
    counts = Counts()
    for i, case in enumerate(cases):
        suite = suite_or_skip(case, counts)
        if suite is not None:
            label = where.format(i=i, suite=case["cipher_suite"])
            check_case(counts, label, lambda suite=suite, case=case: check(suite, case))
    return counts
