"""messages.json: every structure decodes and re-encodes to the exact vector bytes (test-vectors.md).

The MLSMessage wrapper and the framing structures (PublicMessage, PrivateMessage) belong to
``mls.framing``; the wrapper header is read here so the three non-framing bodies (Welcome,
GroupInfo, KeyPackage) are checked with this package's own classes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..codec import DecodeError, Reader, Writer, decode_all
from ..proposal_structs import (
    Add,
    Commit,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    ReInit,
    Remove,
    Update,
)
from ..registries import WireFormat
from ..struct import Struct
from ..tree_structs import KeyPackage, decode_ratchet_tree, encode_ratchet_tree
from ..welcome_structs import GroupInfo, GroupSecrets, Welcome
from . import Counts

MLS10 = 1


def _wrapped(body_cls: type[Struct], wire_format: int) -> Callable[[bytes], bytes]:
    """Round trip of ``MLSMessage { version; wire_format; body }`` for one non-framing body."""

    def roundtrip(data: bytes) -> bytes:
        def dec(r: Reader) -> Struct:
            if r.u16() != MLS10 or r.u16() != wire_format:
                raise DecodeError("unexpected MLSMessage header")
            return body_cls.decode(r)

        body = decode_all(data, dec)
        w = Writer().u16(MLS10).u16(wire_format)
        body.encode(w)
        return w.bytes()

    return roundtrip


def _plain(body_cls: type[Struct]) -> Callable[[bytes], bytes]:
    return lambda data: body_cls.from_bytes(data).to_bytes()


def _ratchet_tree(data: bytes) -> bytes:
    return encode_ratchet_tree(decode_ratchet_tree(data))


def _framing(data: bytes) -> bytes:
    """Framing structures are checked through ``mls.framing.MLSMessage`` (MLS core A's module)."""
    framing = importlib.import_module("ciris_av_plugin.mls.framing")
    return framing.MLSMessage.from_bytes(data).to_bytes()


CHECKS: dict[str, Callable[[bytes], bytes]] = {
    "mls_welcome": _wrapped(Welcome, WireFormat.WELCOME),
    "mls_group_info": _wrapped(GroupInfo, WireFormat.GROUP_INFO),
    "mls_key_package": _wrapped(KeyPackage, WireFormat.KEY_PACKAGE),
    "ratchet_tree": _ratchet_tree,
    "group_secrets": _plain(GroupSecrets),
    "add_proposal": _plain(Add),
    "update_proposal": _plain(Update),
    "remove_proposal": _plain(Remove),
    "pre_shared_key_proposal": _plain(PreSharedKey),
    "re_init_proposal": _plain(ReInit),
    "external_init_proposal": _plain(ExternalInit),
    "group_context_extensions_proposal": _plain(GroupContextExtensions),
    "commit": _plain(Commit),
    "public_message_application": _framing,
    "public_message_proposal": _framing,
    "public_message_commit": _framing,
    "private_message": _framing,
}


def run(cases: list[dict]) -> Counts:
    """One case = one vector object; it passes only if every field round-trips byte-exact."""
    counts = Counts()
    for i, case in enumerate(cases):
        bad = []
        for key, check in CHECKS.items():
            if key not in case:
                continue
            data = bytes.fromhex(case[key])
            try:
                if check(data) != data:
                    bad.append(f"{key} re-encodes differently")
            except Exception as exc:  # noqa: BLE001 - any failure of one field fails the case
                bad.append(f"{key}: {type(exc).__name__}: {exc}")
        if bad:
            counts.fail(f"messages[{i}]", "; ".join(bad))
        else:
            counts.passed += 1
    return counts
