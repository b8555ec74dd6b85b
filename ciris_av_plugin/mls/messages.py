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
from typing import TYPE_CHECKING, TypeVar

from .codec import DecodeError, Reader, Writer, decode_all
from .errors import ProtocolError

if TYPE_CHECKING:
    from .crypto import CipherSuite

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


class WireFormat(IntEnum):
    RESERVED = 0
    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


class CredentialType(IntEnum):
    RESERVED = 0
    BASIC = 1
    X509 = 2


class LeafNodeSource(IntEnum):
    RESERVED = 0
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(IntEnum):
    RESERVED = 0
    LEAF = 1
    PARENT = 2


class ProposalType(IntEnum):
    RESERVED = 0
    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class PSKType(IntEnum):
    RESERVED = 0
    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    RESERVED = 0
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class ProposalOrRefType(IntEnum):
    RESERVED = 0
    PROPOSAL = 1
    REFERENCE = 2


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


@dataclass
class LeafNode(Struct):
    """A member's leaf: keys, credential, capabilities and a signature over :meth:`tbs` (§7.2)."""

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None
    """Present exactly when the source is ``key_package``."""
    parent_hash: bytes = b""
    """Meaningful exactly when the source is ``commit``."""
    extensions: list[Extension] = field(default_factory=list)
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.signature_key)
        self.credential.encode(w)
        self.capabilities.encode(w)
        w.u8(int(self.leaf_node_source))
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            if self.lifetime is None:
                raise ProtocolError("key_package leaf node without lifetime")
            self.lifetime.encode(w)
        elif self.leaf_node_source == LeafNodeSource.COMMIT:
            w.opaque(self.parent_hash)
        encode_extensions(w, self.extensions)

    def encode(self, w: Writer) -> None:
        self._encode_content(w)
        w.opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> LeafNode:
        enc = r.opaque()
        sig_key = r.opaque()
        cred = Credential.decode(r)
        caps = Capabilities.decode(r)
        source = closed(LeafNodeSource, r.u8(), "leaf_node_source")
        lifetime = None
        parent_hash = b""
        if source == LeafNodeSource.KEY_PACKAGE:
            lifetime = Lifetime.decode(r)
        elif source == LeafNodeSource.COMMIT:
            parent_hash = r.opaque()
        elif source != LeafNodeSource.UPDATE:
            raise DecodeError("reserved leaf_node_source")
        exts = decode_extensions(r)
        return cls(enc, sig_key, cred, caps, source, lifetime, parent_hash, exts, r.opaque())

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """LeafNodeTBS: update and commit leaves bind the group and their position (§7.2)."""
        w = Writer()
        self._encode_content(w)
        if self.leaf_node_source in (LeafNodeSource.UPDATE, LeafNodeSource.COMMIT):
            if group_id is None or leaf_index is None:
                raise ProtocolError("update/commit leaf node needs group_id and leaf_index to sign")
            w.opaque(group_id).u32(leaf_index)
        return w.bytes()

    def sign(self, suite: CipherSuite, sig_priv: bytes, group_id: bytes | None = None,
             leaf_index: int | None = None) -> None:
        self.signature = suite.sign_with_label(sig_priv, b"LeafNodeTBS", self.tbs(group_id, leaf_index))

    def verify(self, suite: CipherSuite, group_id: bytes | None = None, leaf_index: int | None = None) -> bool:
        try:
            tbs = self.tbs(group_id, leaf_index)
        except ProtocolError:
            return False
        return suite.verify_with_label(self.signature_key, b"LeafNodeTBS", tbs, self.signature)


# --- ParentNode, Node, HPKECiphertext, UpdatePath (§7.1, §7.6, §12.4.3.3) ----------------------


@dataclass
class ParentNode(Struct):
    """§7.1 interior node: its HPKE key, the parent hash chaining it to its updater, unmerged leaves."""

    encryption_key: bytes
    parent_hash: bytes = b""
    unmerged_leaves: list[int] = field(default_factory=list)

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key).opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, Writer.u32)

    @classmethod
    def decode(cls, r: Reader) -> ParentNode:
        return cls(r.opaque(), r.opaque(), r.vector(Reader.u32))


def encode_node(w: Writer, node: LeafNode | ParentNode) -> None:
    """``struct { NodeType node_type; select (node_type) { ... } } Node``."""
    if isinstance(node, LeafNode):
        w.u8(NodeType.LEAF)
    else:
        w.u8(NodeType.PARENT)
    node.encode(w)


def decode_node(r: Reader) -> LeafNode | ParentNode:
    ntype = r.u8()
    if ntype == NodeType.LEAF:
        return LeafNode.decode(r)
    if ntype == NodeType.PARENT:
        return ParentNode.decode(r)
    raise DecodeError(f"unknown node type {ntype}")


@dataclass
class HPKECiphertext(Struct):
    """§7.6 EncryptWithLabel output: the KEM encapsulation and the AEAD ciphertext."""

    kem_output: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.kem_output).opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> HPKECiphertext:
        return cls(r.opaque(), r.opaque())


@dataclass
class UpdatePathNode(Struct):
    """§7.6 one filtered-direct-path node: new public key, one ciphertext per resolution node."""

    encryption_key: bytes
    encrypted_path_secret: list[HPKECiphertext] = field(default_factory=list)

    def encode(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.vector(self.encrypted_path_secret, lambda ww, c: c.encode(ww))

    @classmethod
    def decode(cls, r: Reader) -> UpdatePathNode:
        return cls(r.opaque(), r.vector(HPKECiphertext.decode))


@dataclass
class UpdatePath(Struct):
    """§7.6 what a committer sends to refresh its path: its new leaf and the path nodes."""

    leaf_node: LeafNode
    nodes: list[UpdatePathNode] = field(default_factory=list)

    def encode(self, w: Writer) -> None:
        self.leaf_node.encode(w)
        w.vector(self.nodes, lambda ww, n: n.encode(ww))

    @classmethod
    def decode(cls, r: Reader) -> UpdatePath:
        return cls(LeafNode.decode(r), r.vector(UpdatePathNode.decode))


# --- KeyPackage (§10) -------------------------------------------------------------------------


@dataclass
class KeyPackage(Struct):
    """§10 a client's signed offer to be added: init key for the Welcome, leaf node, extensions."""

    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: list[Extension] = field(default_factory=list)
    signature: bytes = b""
    version: int = ProtocolVersion.MLS10

    def tbs(self) -> bytes:
        w = Writer().u16(int(self.version)).u16(int(self.cipher_suite)).opaque(self.init_key)
        self.leaf_node.encode(w)
        encode_extensions(w, self.extensions)
        return w.bytes()

    def encode(self, w: Writer) -> None:
        w.raw(self.tbs()).opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> KeyPackage:
        version = known(ProtocolVersion, r.u16())
        suite = r.u16()
        init_key = r.opaque()
        leaf = LeafNode.decode(r)
        exts = decode_extensions(r)
        return cls(suite, init_key, leaf, exts, r.opaque(), version)

    def sign(self, suite: CipherSuite, sig_priv: bytes) -> None:
        self.signature = suite.sign_with_label(sig_priv, b"KeyPackageTBS", self.tbs())

    def verify(self, suite: CipherSuite) -> bool:
        """The KeyPackage signature, made with the leaf node's signature key (§10.1)."""
        return suite.verify_with_label(self.leaf_node.signature_key, b"KeyPackageTBS", self.tbs(), self.signature)

    def ref(self, suite: CipherSuite) -> bytes:
        return suite.make_key_package_ref(self.to_bytes())

    @classmethod
    def create(
        cls,
        suite: CipherSuite,
        credential: Credential,
        sig_priv: bytes,
        lifetime: Lifetime,
        capabilities: Capabilities | None = None,
        leaf_extensions: list[Extension] | None = None,
        extensions: list[Extension] | None = None,
    ) -> tuple[KeyPackage, bytes, bytes]:
        """A fresh signed KeyPackage; returns ``(key_package, init_priv, encryption_priv)`` (§10).

        The lifetime is passed in (no clock here); init and leaf encryption keys are distinct
        fresh HPKE key pairs, as §10 requires.
        """
        init_priv, init_pub = suite.generate_hpke_key_pair()
        enc_priv, enc_pub = suite.generate_hpke_key_pair()
        if capabilities is None:
            capabilities = Capabilities(cipher_suites=[suite.id])
        leaf = LeafNode(
            encryption_key=enc_pub,
            signature_key=suite.signature_public_key(sig_priv),
            credential=credential,
            capabilities=capabilities,
            leaf_node_source=LeafNodeSource.KEY_PACKAGE,
            lifetime=lifetime,
            extensions=list(leaf_extensions or []),
        )
        leaf.sign(suite, sig_priv)
        kp = cls(suite.id, init_pub, leaf, list(extensions or []))
        kp.sign(suite, sig_priv)
        return kp, init_priv, enc_priv


# --- Proposals and Commit (§12.1, §12.4) ------------------------------------------------------


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


# --- GroupInfo and Welcome (§12.4.3) ----------------------------------------------------------


@dataclass
class GroupInfo(Struct):
    """§12.4.3 the signed group state a joiner needs: context, extensions, confirmation tag."""

    group_context: GroupContext
    extensions: list[Extension] = field(default_factory=list)
    confirmation_tag: bytes = b""
    signer: int = 0
    signature: bytes = b""

    def tbs(self) -> bytes:
        w = Writer()
        self.group_context.encode(w)
        encode_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag).u32(self.signer)
        return w.bytes()

    def encode(self, w: Writer) -> None:
        w.raw(self.tbs()).opaque(self.signature)

    @classmethod
    def decode(cls, r: Reader) -> GroupInfo:
        gc = GroupContext.decode(r)
        exts = decode_extensions(r)
        tag = r.opaque()
        signer = r.u32()
        return cls(gc, exts, tag, signer, r.opaque())

    def sign(self, suite: CipherSuite, sig_priv: bytes) -> None:
        self.signature = suite.sign_with_label(sig_priv, b"GroupInfoTBS", self.tbs())

    def verify(self, suite: CipherSuite, signer_pub: bytes) -> bool:
        return suite.verify_with_label(signer_pub, b"GroupInfoTBS", self.tbs(), self.signature)


@dataclass
class PathSecret(Struct):
    """§12.4.3.1 the path secret of the lowest node shared by committer and joiner."""

    path_secret: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.path_secret)

    @classmethod
    def decode(cls, r: Reader) -> PathSecret:
        return cls(r.opaque())


@dataclass
class GroupSecrets(Struct):
    """§12.4.3.1 what is HPKE-sealed to each joiner: joiner_secret, path secret, PSK ids."""

    joiner_secret: bytes
    path_secret: PathSecret | None = None
    psks: list[PreSharedKeyID] = field(default_factory=list)

    def encode(self, w: Writer) -> None:
        w.opaque(self.joiner_secret)
        w.optional(self.path_secret, lambda ww, p: p.encode(ww))
        w.vector(self.psks, lambda ww, p: p.encode(ww))

    @classmethod
    def decode(cls, r: Reader) -> GroupSecrets:
        return cls(r.opaque(), r.optional(PathSecret.decode), r.vector(PreSharedKeyID.decode))


@dataclass
class EncryptedGroupSecrets(Struct):
    """§12.4.3.1 one joiner's sealed GroupSecrets, addressed by KeyPackageRef."""

    new_member: bytes
    """KeyPackageRef of the joiner this entry is for."""
    encrypted_group_secrets: HPKECiphertext

    def encode(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> EncryptedGroupSecrets:
        return cls(r.opaque(), HPKECiphertext.decode(r))


@dataclass
class Welcome(Struct):
    """§12.4.3.1 admits new members: per-joiner GroupSecrets plus the shared encrypted GroupInfo."""

    cipher_suite: int
    secrets: list[EncryptedGroupSecrets] = field(default_factory=list)
    encrypted_group_info: bytes = b""

    def encode(self, w: Writer) -> None:
        w.u16(int(self.cipher_suite))
        w.vector(self.secrets, lambda ww, s: s.encode(ww))
        w.opaque(self.encrypted_group_info)

    @classmethod
    def decode(cls, r: Reader) -> Welcome:
        return cls(r.u16(), r.vector(EncryptedGroupSecrets.decode), r.opaque())


# --- ratchet_tree extension body (§12.4.3.3) ---------------------------------------------------


def encode_ratchet_tree(nodes: list[LeafNode | ParentNode | None]) -> bytes:
    """``optional<Node> ratchet_tree<V>`` exactly as given (trimming is the tree's job)."""
    return Writer().vector(nodes, lambda ww, n: ww.optional(n, encode_node)).bytes()


def decode_ratchet_tree(data: bytes) -> list[LeafNode | ParentNode | None]:
    return decode_all(data, lambda r: r.vector(lambda rr: rr.optional(decode_node)))
