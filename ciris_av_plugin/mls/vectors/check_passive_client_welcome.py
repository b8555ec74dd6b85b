"""passive-client-welcome.json: join from a Welcome (tree in it or supplied, external PSKs).

Every passive-client file runs the same scenario (:func:`run_passive`): join, compare the epoch
authenticator, then apply each epoch's proposals and commit and compare again. The welcome file's
cases simply have no epochs.
"""

from __future__ import annotations

from . import Counts
from ._passive import run_passive


def run(cases: list[dict]) -> Counts:
    return run_passive("passive-client-welcome", cases)
