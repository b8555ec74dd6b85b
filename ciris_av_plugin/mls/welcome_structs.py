"""GroupInfo and Welcome structures (§12.4.3); their encryption is :mod:`.welcome`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .codec import Reader, Writer
from .crypto import CipherSuite
from .messages import Extension, GroupContext, decode_extensions, encode_extensions
from .proposal_structs import PreSharedKeyID
from .struct import Struct
from .tree_structs import HPKECiphertext

log = logging.getLogger(__name__)


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


__all__ = [
    "GroupInfo",
    "PathSecret",
    "GroupSecrets",
    "EncryptedGroupSecrets",
    "Welcome",
]
