"""deserialization.json: variable-length vector headers decode to the given length (§2.1.2),
and re-encoding the length gives the same header (the encoder is minimal too)."""

from __future__ import annotations

from ..codec import Reader, encode_varint
from . import Counts
from ._cases import check_case, h


def _check(c: dict) -> str | None:
    header = h(c["vlbytes_header"])
    r = Reader(header)
    got = r.varint()
    r.done()
    if got != c["length"]:
        return f"decoded {got}"
    if encode_varint(c["length"]) != header:
        return "re-encoding differs"
    return None


def run(cases: list[dict]) -> Counts:
    counts = Counts()
    for c in cases:
        check_case(counts, c["vlbytes_header"], lambda c=c: _check(c))
    return counts
