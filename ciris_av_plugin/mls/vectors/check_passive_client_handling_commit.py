"""passive-client-handling-commit.json: join from a Welcome, then follow every epoch's proposals and commit.

The scenario is :func:`._passive.run_passive`, shared by the three passive-client files.
"""

from __future__ import annotations

from . import Counts
from ._passive import run_passive


def run(cases: list[dict]) -> Counts:
    return run_passive("passive-client-handling-commit", cases)
