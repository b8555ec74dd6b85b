"""RFC 9420 structures other than framing, with byte-exact encode/decode.

Every structure is a dataclass with ``encode(w)`` / ``to_bytes()`` and ``decode(r)`` / ``from_bytes(b)``.
Decoding goes through the strict :mod:`codec` reader, so malformed input raises
:class:`~ciris_av_plugin.mls.codec.DecodeError` (an ``MLSError``) and nothing else. Values of
extensible registries (versions, suites, extension, proposal and credential types, §17) are kept as
plain ints when unknown, never rejected, so GREASE values (§13.5) survive a round trip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

from .codec import DecodeError, Reader, Writer, decode_all

log = logging.getLogger(__name__)

E = TypeVar("E", bound=IntEnum)
S = TypeVar("S", bound="Struct")


def known(enum: type[E], value: int) -> E | int:
    """The enum member for ``value`` or the bare int if the registry does not (yet) know it."""
    try:
        return enum(value)
    except ValueError:
        return value


def closed(enum: type[E], value: int, what: str) -> E:
    """The enum member for ``value`` of a non-extensible selector; unknown values cannot be parsed."""
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"unknown {what} {value}") from None


class Struct:
    """Mixin giving ``to_bytes``/``from_bytes`` on top of ``encode``/``decode``."""

    def encode(self, w: Writer) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode(cls: type[S], r: Reader) -> S:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.bytes()

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        return decode_all(data, cls.decode)


# --- registries (§17) -------------------------------------------------------------------------


class ProtocolVersion(IntEnum):
    RESERVED = 0
    MLS10 = 1


class ExtensionType(IntEnum):
    APPLICATION_ID = 0x0001
    RATCHET_TREE = 0x0002
    REQUIRED_CAPABILITIES = 0x0003
    EXTERNAL_PUB = 0x0004
    EXTERNAL_SENDERS = 0x0005


# --- Extension (§13) --------------------------------------------------------------------------


@dataclass
class Extension(Struct):
    """``struct { ExtensionType extension_type; opaque extension_data<V>; }``; data left opaque."""

    extension_type: int
    extension_data: bytes

    def encode(self, w: Writer) -> None:
        w.u16(int(self.extension_type)).opaque(self.extension_data)

    @classmethod
    def decode(cls, r: Reader) -> Extension:
        return cls(known(ExtensionType, r.u16()), r.opaque())


def encode_extensions(w: Writer, exts: list[Extension]) -> None:
    w.vector(exts, lambda ww, e: e.encode(ww))


def decode_extensions(r: Reader) -> list[Extension]:
    return r.vector(Extension.decode)


# --- GroupContext (§8.1) ----------------------------------------------------------------------


@dataclass
class GroupContext(Struct):
    """The shared state every key-schedule step and signature binds to (§8.1)."""

    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: list[Extension] = field(default_factory=list)
    version: int = ProtocolVersion.MLS10

    def encode(self, w: Writer) -> None:
        w.u16(int(self.version)).u16(int(self.cipher_suite)).opaque(self.group_id).u64(self.epoch)
        w.opaque(self.tree_hash).opaque(self.confirmed_transcript_hash)
        encode_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> GroupContext:
        version = known(ProtocolVersion, r.u16())
        suite = r.u16()
        group_id = r.opaque()
        epoch = r.u64()
        tree_hash = r.opaque()
        cth = r.opaque()
        exts = decode_extensions(r)
        return cls(suite, group_id, epoch, tree_hash, cth, exts, version)
