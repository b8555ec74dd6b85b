"""The MLS key schedule (RFC 9420 §8): epoch secrets, PSK secret, exporter, transcript hashes.

Pure functions over a :class:`~.crypto.CipherSuite` plus :class:`EpochSecrets`, the bundle of
everything one epoch derives. The group state machine keeps one ``EpochSecrets`` per epoch and
drops the previous one when it moves on (§9.2: old secrets are deleted); nothing here keeps state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codec import Writer
from .crypto import CipherSuite
from .errors import CryptoError
from .messages import GroupContext
from .proposal_structs import PreSharedKeyID

__all__ = [
    "EpochSecrets",
    "MAX_PSKS",
    "psk_secret",
    "joiner_secret",
    "member_secret",
    "welcome_secret",
    "welcome_key_nonce",
    "derive_epoch_secrets",
    "epoch_secrets_from_joiner",
    "exporter",
    "confirmation_tag",
    "confirmed_transcript_hash",
    "interim_transcript_hash",
    "external_init_sender",
    "external_init_receiver",
]

# PSKLabel carries index and count as uint16 (§8.4), so no commit can inject more PSKs than this.
MAX_PSKS = 0xFFFF
# §8.3: the HPKE exporter context of an external init (the full label, no prefix added).
EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


@dataclass(frozen=True)
class EpochSecrets:
    """Secrets of one epoch (§8, Table 4), plus the joiner/welcome secrets that led to it."""

    joiner_secret: bytes
    welcome_secret: bytes
    epoch_secret: bytes
    sender_data_secret: bytes
    encryption_secret: bytes
    exporter_secret: bytes
    epoch_authenticator: bytes
    external_secret: bytes
    confirmation_key: bytes
    membership_key: bytes
    resumption_psk: bytes
    init_secret: bytes
    """``init_secret_[n]``, the input of the next epoch's key schedule."""

    def exporter(self, suite: CipherSuite, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter (§8.5) for this epoch."""
        return exporter(suite, self.exporter_secret, label, context, length)

    def external_key_pair(self, suite: CipherSuite) -> tuple[bytes, bytes]:
        """external_priv, external_pub = KEM.DeriveKeyPair(external_secret) (§8)."""
        return suite.derive_key_pair(self.external_secret)


def _zero(suite: CipherSuite) -> bytes:
    return bytes(suite.Nh)


def _gc_bytes(group_context: GroupContext | bytes) -> bytes:
    return group_context if isinstance(group_context, bytes) else group_context.to_bytes()


def psk_secret(suite: CipherSuite, psks: Sequence[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """§8.4: chain each (PreSharedKeyID, psk) through Extract/ExpandWithLabel; all-zero if none.

    The order is the order of the Commit's PreSharedKey proposals (or GroupSecrets.psks), and it
    matters: each PSKLabel carries its index and the total count.
    """
    count = len(psks)
    if count > MAX_PSKS:
        raise CryptoError(f"{count} PSKs exceed the PSKLabel limit {MAX_PSKS}")
    secret = _zero(suite)
    for index, (psk_id, psk) in enumerate(psks):
        w = Writer()
        psk_id.encode(w)
        psk_label = w.u16(index).u16(count).bytes()
        extracted = suite.kdf_extract(_zero(suite), psk)
        psk_input = suite.expand_with_label(extracted, b"derived psk", psk_label, suite.Nh)
        secret = suite.kdf_extract(psk_input, secret)
    return secret


def joiner_secret(
    suite: CipherSuite, init_secret: bytes, commit_secret: bytes, group_context: GroupContext | bytes
) -> bytes:
    """joiner_secret = ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GC_[n], Nh).

    ``group_context`` is the *new* epoch's GroupContext (§8 diagram).
    """
    prk = suite.kdf_extract(init_secret, commit_secret or _zero(suite))
    return suite.expand_with_label(prk, b"joiner", _gc_bytes(group_context), suite.Nh)


def member_secret(suite: CipherSuite, joiner: bytes, psk: bytes | None) -> bytes:
    """The intermediate Extract(joiner_secret, psk_secret or 0) from which welcome and epoch derive."""
    return suite.kdf_extract(joiner, psk or _zero(suite))


def welcome_secret(suite: CipherSuite, joiner: bytes, psk: bytes | None) -> bytes:
    return suite.derive_secret(member_secret(suite, joiner, psk), b"welcome")


def welcome_key_nonce(suite: CipherSuite, welcome: bytes) -> tuple[bytes, bytes]:
    """§12.4.3.1: welcome_key/nonce = ExpandWithLabel(welcome_secret, "key"/"nonce", "", Nk/Nn)."""
    return (
        suite.expand_with_label(welcome, b"key", b"", suite.Nk),
        suite.expand_with_label(welcome, b"nonce", b"", suite.Nn),
    )


def epoch_secrets_from_joiner(
    suite: CipherSuite, joiner: bytes, psk: bytes | None, group_context: GroupContext | bytes
) -> EpochSecrets:
    """Everything from joiner_secret down: the path a new member takes after a Welcome."""
    member = member_secret(suite, joiner, psk)
    epoch = suite.expand_with_label(member, b"epoch", _gc_bytes(group_context), suite.Nh)

    def d(label: bytes) -> bytes:
        return suite.derive_secret(epoch, label)

    return EpochSecrets(
        joiner_secret=joiner,
        welcome_secret=suite.derive_secret(member, b"welcome"),
        epoch_secret=epoch,
        sender_data_secret=d(b"sender data"),
        encryption_secret=d(b"encryption"),
        exporter_secret=d(b"exporter"),
        epoch_authenticator=d(b"authentication"),
        external_secret=d(b"external"),
        confirmation_key=d(b"confirm"),
        membership_key=d(b"membership"),
        resumption_psk=d(b"resumption"),
        init_secret=d(b"init"),
    )


def derive_epoch_secrets(
    suite: CipherSuite,
    init_secret: bytes,
    commit_secret: bytes | None,
    psk: bytes | None,
    group_context: GroupContext | bytes,
) -> EpochSecrets:
    """The full §8 schedule for a member: previous init_secret + commit_secret + psk_secret + GC_[n].

    A commit without a path has commit_secret 0 (§12.4); no PSKs means psk_secret 0 (§8.4).
    """
    joiner = joiner_secret(suite, init_secret, commit_secret or _zero(suite), group_context)
    return epoch_secrets_from_joiner(suite, joiner, psk, group_context)


def exporter(suite: CipherSuite, exporter_secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """§8.5 MLS-Exporter(Label, Context, Length)."""
    inner = suite.derive_secret(exporter_secret, label)
    return suite.expand_with_label(inner, b"exported", suite.hash(context), length)


def confirmation_tag(suite: CipherSuite, confirmation_key: bytes, confirmed_transcript_hash: bytes) -> bytes:
    """§6.1: confirmation_tag = MAC(confirmation_key, GroupContext.confirmed_transcript_hash)."""
    return suite.mac(confirmation_key, confirmed_transcript_hash)


def confirmed_transcript_hash(suite: CipherSuite, interim_before: bytes, confirmed_input: bytes) -> bytes:
    """§8.2: Hash(interim_transcript_hash_[n-1] || ConfirmedTranscriptHashInput_[n]).

    ``confirmed_input`` is the encoded ConfirmedTranscriptHashInput (wire_format, content,
    signature); :func:`ciris_av_plugin.mls.framing.AuthenticatedContent.confirmed_transcript_input`
    builds it.
    """
    return suite.hash(interim_before + confirmed_input)


def interim_transcript_hash(suite: CipherSuite, confirmed: bytes, tag: bytes) -> bytes:
    """§8.2: Hash(confirmed_transcript_hash_[n] || InterimTranscriptHashInput { MAC confirmation_tag })."""
    return suite.hash(confirmed + Writer().opaque(tag).bytes())




def external_init_sender(suite: CipherSuite, external_pub: bytes) -> tuple[bytes, bytes]:
    """§8.3 joiner side: (kem_output for the ExternalInit proposal, init_secret for the new epoch)."""
    return suite.hpke_export_sender(external_pub, b"", EXTERNAL_INIT_LABEL, suite.Nh)


def external_init_receiver(suite: CipherSuite, external_priv: bytes, kem_output: bytes) -> bytes:
    """§8.3 member side: the init_secret a joiner sent in an ExternalInit proposal."""
    return suite.hpke_export_receiver(external_priv, kem_output, b"", EXTERNAL_INIT_LABEL, suite.Nh)
