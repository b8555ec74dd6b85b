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
from typing import TYPE_CHECKING

from .codec import DecodeError, Reader, Writer, decode_all
from .errors import ProtocolError
from .registries import CredentialType, ExtensionType, ProposalType, ProtocolVersion
from .struct import Struct, known

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


# --- registries (§17) -------------------------------------------------------------------------


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


# --- Credential, Capabilities, Lifetime (§5.3, §7.2) ---------------------------------------


@dataclass
class Credential(Struct):
    """A basic credential's identity, or an X.509 chain kept as opaque certificates (§5.3).

    Any other credential type has no length prefix on the wire, so it cannot be skipped: it is a
    :class:`DecodeError`.
    """

    credential_type: int
    identity: bytes = b""
    certificates: list[bytes] = field(default_factory=list)

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity)

    def encode(self, w: Writer) -> None:
        w.u16(int(self.credential_type))
        if self.credential_type == CredentialType.BASIC:
            w.opaque(self.identity)
        elif self.credential_type == CredentialType.X509:
            w.vector(self.certificates, Writer.opaque)
        else:
            raise ProtocolError(f"cannot encode credential type {self.credential_type}")

    @classmethod
    def decode(cls, r: Reader) -> Credential:
        ctype = r.u16()
        if ctype == CredentialType.BASIC:
            return cls(CredentialType.BASIC, r.opaque())
        if ctype == CredentialType.X509:
            return cls(CredentialType.X509, b"", r.vector(Reader.opaque))
        raise DecodeError(f"unsupported credential type {ctype}")


def _u16_list(r: Reader, enum: type[IntEnum] | None = None) -> list[int]:
    values = r.vector(Reader.u16)
    return [known(enum, v) for v in values] if enum else values


def _enc_u16_list(w: Writer, values: list[int]) -> None:
    w.vector(values, lambda ww, v: ww.u16(int(v)))


@dataclass
class Capabilities(Struct):
    """What a client supports (§7.2); unknown (GREASE) values are kept as ints."""

    versions: list[int] = field(default_factory=lambda: [ProtocolVersion.MLS10])
    cipher_suites: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    proposals: list[int] = field(default_factory=list)
    credentials: list[int] = field(default_factory=lambda: [CredentialType.BASIC])

    def encode(self, w: Writer) -> None:
        for values in (self.versions, self.cipher_suites, self.extensions, self.proposals, self.credentials):
            _enc_u16_list(w, values)

    @classmethod
    def decode(cls, r: Reader) -> Capabilities:
        return cls(
            _u16_list(r, ProtocolVersion),
            _u16_list(r),
            _u16_list(r, ExtensionType),
            _u16_list(r, ProposalType),
            _u16_list(r, CredentialType),
        )


@dataclass
class Lifetime(Struct):
    """Validity window in seconds since the epoch; checked by callers that pass the time in."""

    not_before: int
    not_after: int

    def encode(self, w: Writer) -> None:
        w.u64(self.not_before).u64(self.not_after)

    @classmethod
    def decode(cls, r: Reader) -> Lifetime:
        return cls(r.u64(), r.u64())

    def contains(self, now: int) -> bool:
        return self.not_before <= now <= self.not_after


# --- Parsed extension bodies (§12.1.7, §11.1, §12.1.8.1, §12.4.3.2) ---------------------------


@dataclass
class RequiredCapabilities(Struct):
    """§11.1 required_capabilities extension body: what every member must support."""

    extension_types: list[int] = field(default_factory=list)
    proposal_types: list[int] = field(default_factory=list)
    credential_types: list[int] = field(default_factory=list)

    def encode(self, w: Writer) -> None:
        for values in (self.extension_types, self.proposal_types, self.credential_types):
            _enc_u16_list(w, values)

    @classmethod
    def decode(cls, r: Reader) -> RequiredCapabilities:
        return cls(_u16_list(r, ExtensionType), _u16_list(r, ProposalType), _u16_list(r, CredentialType))


@dataclass
class ExternalSender(Struct):
    """§12.1.8.1 external_senders entry: a non-member allowed to send proposals."""

    signature_key: bytes
    credential: Credential

    def encode(self, w: Writer) -> None:
        w.opaque(self.signature_key)
        self.credential.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> ExternalSender:
        return cls(r.opaque(), Credential.decode(r))


@dataclass
class ExternalPub(Struct):
    """§12.4.3.2 external_pub GroupInfo extension: the key an external joiner encrypts to."""

    external_pub: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.external_pub)

    @classmethod
    def decode(cls, r: Reader) -> ExternalPub:
        return cls(r.opaque())


@dataclass
class ApplicationId(Struct):
    """§5.3.3 application_id LeafNode extension: an application-chosen identifier for the client."""

    application_id: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.application_id)

    @classmethod
    def decode(cls, r: Reader) -> ApplicationId:
        return cls(r.opaque())


def decode_external_senders(data: bytes) -> list[ExternalSender]:
    return decode_all(data, lambda r: r.vector(ExternalSender.decode))


def encode_external_senders(senders: list[ExternalSender]) -> bytes:
    return Writer().vector(senders, lambda ww, s: s.encode(ww)).bytes()


def find_extension(exts: list[Extension], ext_type: int) -> Extension | None:
    for ext in exts:
        if ext.extension_type == ext_type:
            return ext
    return None


# --- LeafNode (§7.2) --------------------------------------------------------------------------


# --- ParentNode, Node, HPKECiphertext, UpdatePath (§7.1, §7.6, §12.4.3.3) ----------------------


# --- KeyPackage (§10) -------------------------------------------------------------------------


# --- Proposals and Commit (§12.1, §12.4) ------------------------------------------------------


# --- GroupInfo and Welcome (§12.4.3) ----------------------------------------------------------


# --- ratchet_tree extension body (§12.4.3.3) ---------------------------------------------------


__all__ = [
    "Extension",
    "encode_extensions",
    "decode_extensions",
    "GroupContext",
    "Credential",
    "Capabilities",
    "Lifetime",
    "RequiredCapabilities",
    "ExternalSender",
    "ExternalPub",
    "ApplicationId",
    "decode_external_senders",
    "encode_external_senders",
    "find_extension",
]
