"""Leaves and what carries them (§7.1, §7.2, §7.6, §10, §12.4.3.3): LeafNode, KeyPackage, ParentNode, UpdatePath, the ratchet_tree extension body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .codec import DecodeError, Reader, Writer, decode_all
from .crypto import CipherSuite
from .errors import ProtocolError
from .messages import Capabilities, Credential, Extension, Lifetime, decode_extensions, encode_extensions
from .registries import LeafNodeSource, NodeType, ProtocolVersion
from .struct import Struct, closed, known

log = logging.getLogger(__name__)


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


def encode_ratchet_tree(nodes: list[LeafNode | ParentNode | None]) -> bytes:
    """``optional<Node> ratchet_tree<V>`` exactly as given (trimming is the tree's job)."""
    return Writer().vector(nodes, lambda ww, n: ww.optional(n, encode_node)).bytes()


def decode_ratchet_tree(data: bytes) -> list[LeafNode | ParentNode | None]:
    return decode_all(data, lambda r: r.vector(lambda rr: rr.optional(decode_node)))


__all__ = [
    "LeafNode",
    "ParentNode",
    "encode_node",
    "decode_node",
    "HPKECiphertext",
    "UpdatePathNode",
    "UpdatePath",
    "KeyPackage",
    "encode_ratchet_tree",
    "decode_ratchet_tree",
]
