"""transcript-hashes.json: confirmation tag and confirmed/interim transcript hashes (§8.2, §6.1)."""

from __future__ import annotations

from ..codec import decode_all
from ..crypto import CipherSuite
from ..framing import AuthenticatedContent
from ..key_schedule import confirmation_tag, confirmed_transcript_hash, interim_transcript_hash
from . import Counts
from ._util_a import check_case, h, suite_or_skip


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
    counts = Counts()
    for i, c in enumerate(cases):
        cs = suite_or_skip(c, counts)
        if cs is not None:
            check_case(counts, f"case {i} suite {cs.id}", lambda cs=cs, c=c: _check(cs, c))
    return counts
