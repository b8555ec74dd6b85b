"""psk_secret.json: external PSKs chained into psk_secret (§8.4)."""

from __future__ import annotations

from ..crypto import CipherSuite
from ..key_schedule import psk_secret
from ..proposal_structs import PreSharedKeyID
from ..registries import PSKType
from . import Counts
from ._cases import h, run_suite_cases


def _check(cs: CipherSuite, c: dict) -> str | None:
    psks = [
        (PreSharedKeyID(PSKType.EXTERNAL, h(p["psk_nonce"]), psk_id=h(p["psk_id"])), h(p["psk"]))
        for p in c["psks"]
    ]
    if psk_secret(cs, psks) != h(c["psk_secret"]):
        return f"psk_secret with {len(psks)} PSKs"
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check)
