"""Message framing (RFC 9420 §6): FramedContent, its signature, PublicMessage, PrivateMessage, MLSMessage.

The protect/unprotect functions turn an :class:`AuthenticatedContent` into a PublicMessage
(signature + membership tag, §6.2) or a PrivateMessage (signature inside, content AEAD under the
sender's ratchet key, sender data AEAD under a key sampled from the ciphertext, §6.3) and back.

What stays with the caller (the group state machine): choosing the signature key for a sender
(§6.1 — passed in as bytes or as a lookup by leaf index), the confirmation tag of a commit (it needs
the *next* epoch's confirmation_key, §8.2), and checking that the message's epoch is the group's.
Unprotecting never changes state on failure: a PrivateMessage's ratchet key is only consumed after
the content decrypted, parsed and its signature verified.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from .codec import DecodeError, Reader, Writer, decode_all
from .crypto import CipherSuite
from .errors import CryptoError, ProtocolError
from .messages import GroupContext
from .proposal_structs import Add, Commit, Proposal
from .registries import ProposalType, ProtocolVersion, WireFormat
from .secret_tree import RatchetType, SecretTree, sender_data_key_nonce
from .struct import Struct
from .tree_structs import KeyPackage
from .welcome_structs import GroupInfo, Welcome

log = logging.getLogger(__name__)

__all__ = [
    "ContentType",
    "SenderType",
    "Sender",
    "FramedContent",
    "FramedContentAuthData",
    "AuthenticatedContent",
    "PublicMessage",
    "PrivateMessage",
    "SenderData",
    "MLSMessage",
    "check_sender_content",
    "sign_content",
    "protect_public",
    "unprotect_public",
    "protect_private",
    "unprotect_private",
    "REUSE_GUARD_LEN",
    "MAX_PADDING",
]

# §6.3.2: SenderData.reuse_guard is opaque[4].
REUSE_GUARD_LEN = 4
# Padding a sender may add to a PrivateMessage. The RFC leaves the amount to the application; 4 KiB
# hides the size class of any handshake message we send while keeping the cost of a message bounded.
MAX_PADDING = 4096
FRAMED_CONTENT_TBS_LABEL = b"FramedContentTBS"


class ContentType(IntEnum):
    RESERVED = 0
    APPLICATION = 1
    PROPOSAL = 2
    COMMIT = 3


class SenderType(IntEnum):
    RESERVED = 0
    MEMBER = 1
    EXTERNAL = 2
    NEW_MEMBER_PROPOSAL = 3
    NEW_MEMBER_COMMIT = 4


def _closed(enum: type[IntEnum], value: int, what: str) -> IntEnum:
    """Decode a closed selector: reserved (0) and unknown values make the structure unparsable."""
    if value == 0:
        raise DecodeError(f"reserved {what} 0")
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"unknown {what} {value}") from None


# --- Sender, FramedContent (§6) ----------------------------------------------------------------


@dataclass
class Sender(Struct):
    """Who sent a message: ``index`` is the leaf_index (member) or sender_index (external)."""

    sender_type: SenderType
    index: int = 0

    def encode(self, w: Writer) -> None:
        w.u8(int(self.sender_type))
        if self.sender_type in (SenderType.MEMBER, SenderType.EXTERNAL):
            w.u32(self.index)

    @classmethod
    def decode(cls, r: Reader) -> Sender:
        st = _closed(SenderType, r.u8(), "sender type")
        if st in (SenderType.MEMBER, SenderType.EXTERNAL):
            return cls(st, r.u32())
        return cls(st)

    @classmethod
    def member(cls, leaf_index: int) -> Sender:
        return cls(SenderType.MEMBER, leaf_index)


ContentBody = bytes | Proposal | Commit
"""application_data (bytes), a Proposal or a Commit; the content type follows from the type."""


def _content_type_of(body: ContentBody) -> ContentType:
    if isinstance(body, bytes | bytearray):
        return ContentType.APPLICATION
    if isinstance(body, Proposal):
        return ContentType.PROPOSAL
    if isinstance(body, Commit):
        return ContentType.COMMIT
    raise ProtocolError(f"not a content body: {type(body).__name__}")


def _encode_body(w: Writer, body: ContentBody) -> None:
    if isinstance(body, bytes | bytearray):
        w.opaque(bytes(body))
    else:
        body.encode(w)


def _decode_body(r: Reader, content_type: ContentType) -> ContentBody:
    if content_type == ContentType.APPLICATION:
        return r.opaque()
    if content_type == ContentType.PROPOSAL:
        return Proposal.decode(r)
    return Commit.decode(r)


@dataclass
class FramedContent(Struct):
    """§6 FramedContent: group, epoch, sender, authenticated_data and the body."""

    group_id: bytes
    epoch: int
    sender: Sender
    authenticated_data: bytes
    body: ContentBody

    @property
    def content_type(self) -> ContentType:
        return _content_type_of(self.body)

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch)
        self.sender.encode(w)
        w.opaque(self.authenticated_data).u8(int(self.content_type))
        _encode_body(w, self.body)

    @classmethod
    def decode(cls, r: Reader) -> FramedContent:
        group_id = r.opaque()
        epoch = r.u64()
        sender = Sender.decode(r)
        aad = r.opaque()
        ct = _closed(ContentType, r.u8(), "content type")
        return cls(group_id, epoch, sender, aad, _decode_body(r, ct))


@dataclass
class FramedContentAuthData:
    """§6.1: the signature, plus the confirmation tag when the content is a commit."""

    signature: bytes
    confirmation_tag: bytes | None = None

    def encode(self, w: Writer, content_type: ContentType) -> None:
        w.opaque(self.signature)
        if content_type == ContentType.COMMIT:
            if self.confirmation_tag is None:
                raise ProtocolError("a commit's auth data needs a confirmation tag")
            w.opaque(self.confirmation_tag)

    @classmethod
    def decode(cls, r: Reader, content_type: ContentType) -> FramedContentAuthData:
        sig = r.opaque()
        tag = r.opaque() if content_type == ContentType.COMMIT else None
        return cls(sig, tag)


# §12.1.8: the only proposal types an external sender may send.
EXTERNAL_SENDER_PROPOSAL_TYPES = frozenset(
    {
        ProposalType.ADD,
        ProposalType.REMOVE,
        ProposalType.PSK,
        ProposalType.REINIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)


def check_sender_content(content: FramedContent) -> None:
    """§6.1 and §12.1.8: which content each sender type may carry; ProtocolError otherwise.

    external: a proposal of an externally-sendable type; new_member_proposal: an Add;
    new_member_commit: a commit. Members may send anything (application data only privately).
    """
    st = content.sender.sender_type
    body = content.body
    if st == SenderType.EXTERNAL:
        if not isinstance(body, Proposal) or body.proposal_type not in EXTERNAL_SENDER_PROPOSAL_TYPES:
            raise ProtocolError("an external sender may only send add/remove/psk/reinit/gce proposals")
    elif st == SenderType.NEW_MEMBER_PROPOSAL:
        if not isinstance(body, Proposal) or not isinstance(body.body, Add):
            raise ProtocolError("a new_member_proposal sender may only send an Add proposal")
    elif st == SenderType.NEW_MEMBER_COMMIT:
        if not isinstance(body, Commit):
            raise ProtocolError("a new_member_commit sender may only send a commit")


def framed_content_tbs(wire_format: int, content: FramedContent, group_context: GroupContext | None) -> bytes:
    """§6.1 FramedContentTBS: members and new-member commits also sign the GroupContext."""
    w = Writer().u16(ProtocolVersion.MLS10).u16(int(wire_format))
    content.encode(w)
    if content.sender.sender_type in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
        if group_context is None:
            raise ProtocolError("member and new_member_commit senders sign the GroupContext")
        group_context.encode(w)
    return w.bytes()


@dataclass
class AuthenticatedContent(Struct):
    """§6 AuthenticatedContent: what is hashed into transcripts and proposal refs."""

    wire_format: WireFormat
    content: FramedContent
    auth: FramedContentAuthData

    def encode(self, w: Writer) -> None:
        w.u16(int(self.wire_format))
        self.content.encode(w)
        self.auth.encode(w, self.content.content_type)

    @classmethod
    def decode(cls, r: Reader) -> AuthenticatedContent:
        wf = _closed(WireFormat, r.u16(), "wire format")
        if wf not in (WireFormat.PUBLIC_MESSAGE, WireFormat.PRIVATE_MESSAGE):
            raise DecodeError(f"wire format {wf} does not carry FramedContent")
        content = FramedContent.decode(r)
        return cls(wf, content, FramedContentAuthData.decode(r, content.content_type))

    def tbs(self, group_context: GroupContext | None) -> bytes:
        return framed_content_tbs(self.wire_format, self.content, group_context)

    def verify_signature(self, suite: CipherSuite, sig_pub: bytes, group_context: GroupContext | None) -> bool:
        return suite.verify_with_label(
            sig_pub, FRAMED_CONTENT_TBS_LABEL, self.tbs(group_context), self.auth.signature
        )

    def confirmed_transcript_input(self) -> bytes:
        """§8.2 ConfirmedTranscriptHashInput { wire_format; content (a commit); signature<V> }."""
        if self.content.content_type != ContentType.COMMIT:
            raise ProtocolError("only commits enter the confirmed transcript hash")
        w = Writer().u16(int(self.wire_format))
        self.content.encode(w)
        return w.opaque(self.auth.signature).bytes()

    def proposal_ref(self, suite: CipherSuite) -> bytes:
        """§5.2 ProposalRef: RefHash over the encoded AuthenticatedContent of a proposal."""
        return suite.make_proposal_ref(self.to_bytes())


def sign_content(
    suite: CipherSuite,
    wire_format: WireFormat,
    content: FramedContent,
    sig_priv: bytes,
    group_context: GroupContext | None,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    """SignWithLabel(., "FramedContentTBS", FramedContentTBS) (§6.1).

    For a commit, the confirmation tag is computed *after* the signature (it covers the confirmed
    transcript hash, which covers the signature, §8.2): pass it here if known or set it later.
    """
    if content.content_type == ContentType.APPLICATION and wire_format != WireFormat.PRIVATE_MESSAGE:
        raise ProtocolError("application data must be sent as a PrivateMessage (§6)")
    check_sender_content(content)
    sig = suite.sign_with_label(sig_priv, FRAMED_CONTENT_TBS_LABEL, framed_content_tbs(wire_format, content, group_context))
    return AuthenticatedContent(wire_format, content, FramedContentAuthData(sig, confirmation_tag))


# --- PublicMessage (§6.2) ----------------------------------------------------------------------


@dataclass
class PublicMessage(Struct):
    content: FramedContent
    auth: FramedContentAuthData
    membership_tag: bytes | None = None
    """Present exactly when the sender is a member."""

    def encode(self, w: Writer) -> None:
        self.content.encode(w)
        self.auth.encode(w, self.content.content_type)
        if self.content.sender.sender_type == SenderType.MEMBER:
            if self.membership_tag is None:
                raise ProtocolError("a member's PublicMessage needs a membership tag")
            w.opaque(self.membership_tag)

    @classmethod
    def decode(cls, r: Reader) -> PublicMessage:
        content = FramedContent.decode(r)
        auth = FramedContentAuthData.decode(r, content.content_type)
        tag = r.opaque() if content.sender.sender_type == SenderType.MEMBER else None
        return cls(content, auth, tag)

    def authenticated_content(self) -> AuthenticatedContent:
        return AuthenticatedContent(WireFormat.PUBLIC_MESSAGE, self.content, self.auth)


def _membership_tag(
    suite: CipherSuite, membership_key: bytes, ac: AuthenticatedContent, group_context: GroupContext
) -> bytes:
    """§6.2: MAC(membership_key, AuthenticatedContentTBM { FramedContentTBS; FramedContentAuthData })."""
    w = Writer().raw(ac.tbs(group_context))
    ac.auth.encode(w, ac.content.content_type)
    return suite.mac(membership_key, w.bytes())


def protect_public(
    suite: CipherSuite, ac: AuthenticatedContent, membership_key: bytes | None, group_context: GroupContext
) -> PublicMessage:
    """Wrap a signed AuthenticatedContent as a PublicMessage, adding the membership tag for members."""
    if ac.wire_format != WireFormat.PUBLIC_MESSAGE:
        raise ProtocolError("content was signed for another wire format")
    if ac.content.content_type == ContentType.APPLICATION:
        raise ProtocolError("application data must be sent as a PrivateMessage (§6)")
    tag = None
    if ac.content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None:
            raise ProtocolError("a member's PublicMessage needs the membership key")
        tag = _membership_tag(suite, membership_key, ac, group_context)
    return PublicMessage(ac.content, ac.auth, tag)


def unprotect_public(
    suite: CipherSuite,
    msg: PublicMessage,
    membership_key: bytes | None,
    group_context: GroupContext,
    sig_pub: bytes,
) -> AuthenticatedContent:
    """Check the membership tag (members; skipped if ``membership_key`` is None, as a keyless relay
    must) and the signature; return the AuthenticatedContent. Raises CryptoError/ProtocolError."""
    content = msg.content
    if content.content_type == ContentType.APPLICATION:
        raise ProtocolError("application data in a PublicMessage (§6)")
    if content.group_id != group_context.group_id or content.epoch != group_context.epoch:
        raise ProtocolError("PublicMessage is for another group or epoch")
    check_sender_content(content)
    ac = msg.authenticated_content()
    if content.sender.sender_type == SenderType.MEMBER and membership_key is not None:
        if msg.membership_tag is None or not _ct_eq(
            _membership_tag(suite, membership_key, ac, group_context), msg.membership_tag
        ):
            raise CryptoError("membership tag does not verify")
    if not ac.verify_signature(suite, sig_pub, group_context):
        raise CryptoError("FramedContent signature does not verify")
    return ac


def _ct_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- PrivateMessage (§6.3) ---------------------------------------------------------------------


@dataclass
class PrivateMessage(Struct):
    group_id: bytes
    epoch: int
    content_type: ContentType
    authenticated_data: bytes
    encrypted_sender_data: bytes
    ciphertext: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.group_id).u64(self.epoch).u8(int(self.content_type))
        w.opaque(self.authenticated_data).opaque(self.encrypted_sender_data).opaque(self.ciphertext)

    @classmethod
    def decode(cls, r: Reader) -> PrivateMessage:
        gid = r.opaque()
        epoch = r.u64()
        ct = _closed(ContentType, r.u8(), "content type")
        return cls(gid, epoch, ct, r.opaque(), r.opaque(), r.opaque())

    def _sender_data_aad(self) -> bytes:
        """§6.3.2 SenderDataAAD."""
        return Writer().opaque(self.group_id).u64(self.epoch).u8(int(self.content_type)).bytes()

    def _content_aad(self) -> bytes:
        """§6.3.1 PrivateContentAAD."""
        w = Writer().opaque(self.group_id).u64(self.epoch).u8(int(self.content_type))
        return w.opaque(self.authenticated_data).bytes()


@dataclass
class SenderData(Struct):
    """§6.3.2 SenderData { uint32 leaf_index; uint32 generation; opaque reuse_guard[4]; }."""

    leaf_index: int
    generation: int
    reuse_guard: bytes = field(default=bytes(REUSE_GUARD_LEN))

    def encode(self, w: Writer) -> None:
        if len(self.reuse_guard) != REUSE_GUARD_LEN:
            raise ProtocolError("reuse guard must be 4 bytes")
        w.u32(self.leaf_index).u32(self.generation).raw(self.reuse_guard)

    @classmethod
    def decode(cls, r: Reader) -> SenderData:
        return cls(r.u32(), r.u32(), r.fixed(REUSE_GUARD_LEN))


def _ratchet_for(content_type: ContentType) -> RatchetType:
    return RatchetType.APPLICATION if content_type == ContentType.APPLICATION else RatchetType.HANDSHAKE


def _guard_nonce(nonce: bytes, reuse_guard: bytes) -> bytes:
    """§6.3.1: XOR the reuse guard into the first four bytes of the key-schedule nonce."""
    head = bytes(a ^ b for a, b in zip(nonce[:REUSE_GUARD_LEN], reuse_guard, strict=True))
    return head + nonce[REUSE_GUARD_LEN:]


def protect_private(
    suite: CipherSuite,
    ac: AuthenticatedContent,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    padding: int = 0,
    reuse_guard: bytes | None = None,
) -> PrivateMessage:
    """Encrypt a signed AuthenticatedContent (§6.3); consumes the sender's next ratchet generation.

    ``reuse_guard`` defaults to 4 fresh random bytes (§6.3.1); tests may fix it.
    """
    content = ac.content
    if ac.wire_format != WireFormat.PRIVATE_MESSAGE:
        raise ProtocolError("content was signed for another wire format")
    if content.sender.sender_type != SenderType.MEMBER:
        raise ProtocolError("only members send PrivateMessages (§6.3.2)")
    if not 0 <= padding <= MAX_PADDING:
        raise ProtocolError(f"padding {padding} outside 0..{MAX_PADDING}")
    guard = os.urandom(REUSE_GUARD_LEN) if reuse_guard is None else reuse_guard
    if len(guard) != REUSE_GUARD_LEN:
        raise ProtocolError("reuse guard must be 4 bytes")
    ct_type = content.content_type
    w = Writer()
    _encode_body(w, content.body)
    ac.auth.encode(w, ct_type)
    plaintext = w.bytes() + bytes(padding)

    msg = PrivateMessage(content.group_id, content.epoch, ct_type, content.authenticated_data, b"", b"")
    leaf = content.sender.index
    generation, key, nonce = secret_tree.next_for_sending(leaf, _ratchet_for(ct_type))
    msg.ciphertext = suite.aead_encrypt(key, _guard_nonce(nonce, guard), msg._content_aad(), plaintext)
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, msg.ciphertext)
    sender_data = SenderData(leaf, generation, guard).to_bytes()
    msg.encrypted_sender_data = suite.aead_encrypt(sd_key, sd_nonce, msg._sender_data_aad(), sender_data)
    return msg


def decrypt_sender_data(suite: CipherSuite, msg: PrivateMessage, sender_data_secret: bytes) -> SenderData:
    """§6.3.2: open encrypted_sender_data (key and nonce sampled from the content ciphertext)."""
    sd_key, sd_nonce = sender_data_key_nonce(suite, sender_data_secret, msg.ciphertext)
    plain = suite.aead_decrypt(sd_key, sd_nonce, msg._sender_data_aad(), msg.encrypted_sender_data)
    return SenderData.from_bytes(plain)


def _decode_private_content(data: bytes, content_type: ContentType) -> tuple[ContentBody, FramedContentAuthData]:
    """§6.3.1 PrivateMessageContent: body, auth, then padding that must be all zeros."""
    r = Reader(data)
    body = _decode_body(r, content_type)
    auth = FramedContentAuthData.decode(r, content_type)
    padding = r.fixed(r.remaining)
    if padding.count(0) != len(padding):
        raise DecodeError("non-zero byte in PrivateMessageContent padding")
    return body, auth


def unprotect_private(
    suite: CipherSuite,
    msg: PrivateMessage,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    group_context: GroupContext,
    signature_key: Callable[[int], bytes | None],
) -> AuthenticatedContent:
    """Decrypt and verify a PrivateMessage (§6.3); consume the ratchet key only when all checks pass.

    ``signature_key(leaf_index)`` returns the sender leaf's signature key, or None for a blank or
    absent leaf (§6.3.2: the leaf must be non-blank).
    """
    if msg.group_id != group_context.group_id or msg.epoch != group_context.epoch:
        raise ProtocolError("PrivateMessage is for another group or epoch")
    sd = decrypt_sender_data(suite, msg, sender_data_secret)
    sig_pub = signature_key(sd.leaf_index)
    if sig_pub is None:
        raise ProtocolError(f"sender leaf {sd.leaf_index} is blank or outside the tree")
    kind = _ratchet_for(msg.content_type)
    key, nonce = secret_tree.key_nonce(sd.leaf_index, kind, sd.generation)
    plain = suite.aead_decrypt(key, _guard_nonce(nonce, sd.reuse_guard), msg._content_aad(), msg.ciphertext)
    body, auth = _decode_private_content(plain, msg.content_type)
    content = FramedContent(
        msg.group_id, msg.epoch, Sender.member(sd.leaf_index), msg.authenticated_data, body
    )
    ac = AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, content, auth)
    if not ac.verify_signature(suite, sig_pub, group_context):
        raise CryptoError("FramedContent signature does not verify")
    secret_tree.consume(sd.leaf_index, kind, sd.generation)
    return ac


# --- MLSMessage (§6) ---------------------------------------------------------------------------

MLSBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

_BODIES: dict[WireFormat, type] = {
    WireFormat.PUBLIC_MESSAGE: PublicMessage,
    WireFormat.PRIVATE_MESSAGE: PrivateMessage,
    WireFormat.WELCOME: Welcome,
    WireFormat.GROUP_INFO: GroupInfo,
    WireFormat.KEY_PACKAGE: KeyPackage,
}


@dataclass
class MLSMessage(Struct):
    """§6 MLSMessage { version = mls10; wire_format; body } — the unit every peer sends."""

    body: MLSBody
    version: int = ProtocolVersion.MLS10

    @property
    def wire_format(self) -> WireFormat:
        for wf, cls in _BODIES.items():
            if isinstance(self.body, cls):
                return wf
        raise ProtocolError(f"not an MLSMessage body: {type(self.body).__name__}")

    def encode(self, w: Writer) -> None:
        w.u16(int(self.version)).u16(int(self.wire_format))
        self.body.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> MLSMessage:
        version = r.u16()
        if version != ProtocolVersion.MLS10:
            raise DecodeError(f"unsupported protocol version {version}")
        wf = _closed(WireFormat, r.u16(), "wire format")
        return cls(_BODIES[wf].decode(r), version)

    @classmethod
    def from_bytes(cls, data: bytes) -> MLSMessage:
        return decode_all(data, cls.decode)
