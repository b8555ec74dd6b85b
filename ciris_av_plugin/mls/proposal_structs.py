"""Proposals and Commit (§12.1, §12.4): the structures, byte-exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .codec import DecodeError, Reader, Writer
from .errors import ProtocolError
from .messages import Extension, decode_extensions, encode_extensions
from .registries import ProposalOrRefType, ProposalType, ProtocolVersion, PSKType, ResumptionPSKUsage
from .struct import Struct, closed, known
from .tree_structs import KeyPackage, LeafNode, UpdatePath

log = logging.getLogger(__name__)


@dataclass
class PreSharedKeyID(Struct):
    """§8.4 names a PSK (external id or resumption group/epoch) plus a fresh nonce."""

    psktype: PSKType
    psk_nonce: bytes
    psk_id: bytes = b""
    """External PSKs only."""
    usage: int = ResumptionPSKUsage.APPLICATION
    psk_group_id: bytes = b""
    psk_epoch: int = 0

    def encode(self, w: Writer) -> None:
        w.u8(int(self.psktype))
        if self.psktype == PSKType.EXTERNAL:
            w.opaque(self.psk_id)
        else:
            w.u8(int(self.usage)).opaque(self.psk_group_id).u64(self.psk_epoch)
        w.opaque(self.psk_nonce)

    @classmethod
    def decode(cls, r: Reader) -> PreSharedKeyID:
        ptype = r.u8()
        if ptype == PSKType.EXTERNAL:
            psk_id = r.opaque()
            return cls(PSKType.EXTERNAL, r.opaque(), psk_id=psk_id)
        if ptype == PSKType.RESUMPTION:
            usage = closed(ResumptionPSKUsage, r.u8(), "resumption PSK usage")
            gid = r.opaque()
            epoch = r.u64()
            return cls(PSKType.RESUMPTION, r.opaque(), usage=usage, psk_group_id=gid, psk_epoch=epoch)
        raise DecodeError(f"unknown psktype {ptype}")


@dataclass
class Add(Struct):
    """§12.1.1 add the KeyPackage's client at the leftmost blank leaf."""

    key_package: KeyPackage
    proposal_type = ProposalType.ADD

    def encode(self, w: Writer) -> None:
        self.key_package.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Add:
        return cls(KeyPackage.decode(r))


@dataclass
class Update(Struct):
    """§12.1.2 replace the sender's leaf (fresh keys); blanks its direct path."""

    leaf_node: LeafNode
    proposal_type = ProposalType.UPDATE

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Update:
        return cls(LeafNode.decode(r))


@dataclass
class Remove(Struct):
    """§12.1.3 remove the member at leaf index ``removed``."""

    removed: int
    proposal_type = ProposalType.REMOVE

    def encode(self, w: Writer) -> None:
        w.u32(self.removed)

    @classmethod
    def decode(cls, r: Reader) -> Remove:
        return cls(r.u32())


@dataclass
class PreSharedKey(Struct):
    """§12.1.4 inject a PSK into the next epoch's key schedule."""

    psk: PreSharedKeyID
    proposal_type = ProposalType.PSK

    def encode(self, w: Writer) -> None:
        self.psk.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> PreSharedKey:
        return cls(PreSharedKeyID.decode(r))


@dataclass
class ReInit(Struct):
    """§12.1.5 end the group and restart it with new parameters."""

    group_id: bytes
    cipher_suite: int
    extensions: list[Extension] = field(default_factory=list)
    version: int = ProtocolVersion.MLS10
    proposal_type = ProposalType.REINIT

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u16(int(self.version)).u16(int(self.cipher_suite))
        encode_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> ReInit:
        gid = r.opaque()
        version = known(ProtocolVersion, r.u16())
        suite = r.u16()
        return cls(gid, suite, decode_extensions(r), version)


@dataclass
class ExternalInit(Struct):
    """§12.1.6 the KEM output that lets an external committer derive init_secret."""

    kem_output: bytes
    proposal_type = ProposalType.EXTERNAL_INIT

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output)

    @classmethod
    def decode(cls, r: Reader) -> ExternalInit:
        return cls(r.opaque())


@dataclass
class GroupContextExtensions(Struct):
    """§12.1.7 replace the GroupContext extensions."""

    extensions: list[Extension] = field(default_factory=list)
    proposal_type = ProposalType.GROUP_CONTEXT_EXTENSIONS

    def encode(self, w: Writer) -> None:
        encode_extensions(w, self.extensions)

    @classmethod
    def decode(cls, r: Reader) -> GroupContextExtensions:
        return cls(decode_extensions(r))


ProposalBody = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions


_PROPOSAL_BODIES: dict[int, type] = {
    ProposalType.ADD: Add,
    ProposalType.UPDATE: Update,
    ProposalType.REMOVE: Remove,
    ProposalType.PSK: PreSharedKey,
    ProposalType.REINIT: ReInit,
    ProposalType.EXTERNAL_INIT: ExternalInit,
    ProposalType.GROUP_CONTEXT_EXTENSIONS: GroupContextExtensions,
}


@dataclass
class Proposal(Struct):
    """``struct { ProposalType proposal_type; select (...) {...} }`` (§12.1).

    A proposal type outside the RFC's list has no length prefix, so its body cannot be skipped:
    decoding it is a :class:`DecodeError` (a peer must not send proposals we did not advertise).
    """

    body: ProposalBody

    @property
    def proposal_type(self) -> ProposalType:
        return self.body.proposal_type

    def encode(self, w: Writer) -> None:
        w.u16(int(self.body.proposal_type))
        self.body.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> Proposal:
        ptype = r.u16()
        body_cls = _PROPOSAL_BODIES.get(ptype)
        if body_cls is None:
            raise DecodeError(f"unsupported proposal type {ptype}")
        return cls(body_cls.decode(r))


@dataclass
class ProposalOrRef(Struct):
    """A proposal inline or by its ProposalRef (§12.4); exactly one of the two is set."""

    proposal: Proposal | None = None
    reference: bytes | None = None

    def encode(self, w: Writer) -> None:
        if self.proposal is not None:
            w.u8(ProposalOrRefType.PROPOSAL)
            self.proposal.encode(w)
        elif self.reference is not None:
            w.u8(ProposalOrRefType.REFERENCE).opaque(self.reference)
        else:
            raise ProtocolError("ProposalOrRef with neither proposal nor reference")

    @classmethod
    def decode(cls, r: Reader) -> ProposalOrRef:
        t = r.u8()
        if t == ProposalOrRefType.PROPOSAL:
            return cls(proposal=Proposal.decode(r))
        if t == ProposalOrRefType.REFERENCE:
            return cls(reference=r.opaque())
        raise DecodeError(f"unknown ProposalOrRefType {t}")


@dataclass
class Commit(Struct):
    """§12.4 the proposals being committed (inline or by reference) and an optional UpdatePath."""

    proposals: list[ProposalOrRef] = field(default_factory=list)
    path: UpdatePath | None = None

    def encode(self, w: Writer) -> None:
        w.vector(self.proposals, lambda ww, p: p.encode(ww))
        w.optional(self.path, lambda ww, p: p.encode(ww))

    @classmethod
    def decode(cls, r: Reader) -> Commit:
        return cls(r.vector(ProposalOrRef.decode), r.optional(UpdatePath.decode))


__all__ = [
    "PreSharedKeyID",
    "Add",
    "Update",
    "Remove",
    "PreSharedKey",
    "ReInit",
    "ExternalInit",
    "GroupContextExtensions",
    "ProposalBody",
    "Proposal",
    "ProposalOrRef",
    "Commit",
]
