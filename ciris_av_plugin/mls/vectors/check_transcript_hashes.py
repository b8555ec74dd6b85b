"""transcript-hashes.json: confirmation tag and confirmed/interim transcript hashes (§8.2, §6.1)."""

from __future__ import annotations

from ..codec import decode_all
from ..crypto import CipherSuite
from ..framing import AuthenticatedContent
from ..key_schedule import confirmation_tag, confirmed_transcript_hash, interim_transcript_hash
from . import Counts
from ._cases import h, run_suite_cases


def _check(cs: CipherSuite, c: dict) -> str | None:
    raw = h(c["authenticated_content"])
    ac = decode_all(raw, AuthenticatedContent.decode)
    if ac.to_bytes() != raw:
        return "AuthenticatedContent does not round-trip"
    confirmed = confirmed_transcript_hash(cs, h(c["interim_transcript_hash_before"]), ac.confirmed_transcript_input())
    if confirmed != h(c["confirmed_transcript_hash_after"]):
        return "confirmed_transcript_hash_after"
    if ac.auth.confirmation_tag != confirmation_tag(cs, h(c["confirmation_key"]), confirmed):
        return "confirmation_tag"
    if interim_transcript_hash(cs, confirmed, ac.auth.confirmation_tag) != h(c["interim_transcript_hash_after"]):
        return "interim_transcript_hash_after"
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check)
