"""What a member holds per epoch, a pending commit, and the byte layout of a saved Group.

:class:`EpochState` is replaced wholesale on an epoch change, so a failed step never leaves a
half-updated epoch behind. The secret-tree codec and :data:`SECRET_FIELDS` are the parts of
:meth:`Group.to_bytes <ciris_av_plugin.mls.group.Group.to_bytes>` that know the layout of epoch secrets.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

from . import key_schedule as ks
from .codec import DecodeError, Reader, Writer, decode_all
from .crypto import CipherSuite
from .public_state import PublicState
from .secret_tree import HashRatchet, RatchetType, SecretTree
from .treekem import TreeKEMPrivate

__all__ = [
    "STATE_VERSION", "EpochState", "PendingCommit", "SECRET_FIELDS", "strip_secrets", "clone_secret_tree",
    "encode_secret_tree", "decode_secret_tree", "SavedGroup",
]

STATE_VERSION = 1
"""Leading byte of :meth:`Group.to_bytes`; bumped when the layout changes."""


@dataclass
class EpochState:
    """Everything a member holds for one epoch; replaced wholesale on an epoch change."""

    public: PublicState
    private: TreeKEMPrivate
    secrets: ks.EpochSecrets
    secret_tree: SecretTree
    confirmation_tag: bytes
    own_updates: dict[bytes, bytes] = field(default_factory=dict)
    """ProposalRef of each Update we proposed this epoch -> the new leaf's HPKE private key."""


@dataclass
class PendingCommit:
    """An own commit waiting for the delivery service's verdict."""

    commit: bytes
    """MLSMessage (PublicMessage or PrivateMessage) to submit."""
    welcome: bytes | None
    """MLSMessage Welcome for the added members (carries the ratchet tree), or None without Adds."""
    epoch: int
    """The epoch this commit leads to."""
    added: dict[int, bytes] = field(default_factory=dict)
    """New leaf index -> credential identity."""
    removed: dict[int, bytes] = field(default_factory=dict)
    """Removed leaf index -> credential identity."""
    updated: list[int] = field(default_factory=list)
    """Leaves replaced by the Update proposals this commit includes."""
    _next: EpochState | None = field(default=None, repr=False)


def strip_secrets(secrets: ks.EpochSecrets) -> ks.EpochSecrets:
    """Drop the secrets no longer needed once an epoch is installed (§9.2 deletion schedule).

    joiner/welcome/epoch secrets only lead to the others; the encryption secret now lives in the
    secret tree, which deletes as it derives.
    """
    return dataclasses.replace(secrets, joiner_secret=b"", welcome_secret=b"", epoch_secret=b"", encryption_secret=b"")


def clone_secret_tree(st: SecretTree) -> SecretTree:
    """An independent copy, so a failed decryption can be thrown away with its ratchet steps."""
    out = SecretTree.__new__(SecretTree)
    out.suite = st.suite
    out.n_leaves = st.n_leaves
    out._nodes = dict(st._nodes)
    out._ratchets = {
        k: HashRatchet(r.suite, r.secret, r.generation, OrderedDict(r.skipped)) for k, r in st._ratchets.items()
    }
    return out


def encode_secret_tree(w: Writer, st: SecretTree) -> None:
    w.u32(st.n_leaves)
    w.vector(sorted(st._nodes.items()), lambda ww, kv: ww.u32(kv[0]).opaque(kv[1]))

    def ratchet(ww: Writer, item: tuple[tuple[int, RatchetType], HashRatchet]) -> None:
        (leaf, kind), r = item
        ww.u32(leaf).u8(int(kind)).opaque(r.secret).u32(r.generation)
        ww.vector(r.skipped.items(), lambda w3, kv: w3.u32(kv[0]).opaque(kv[1][0]).opaque(kv[1][1]))

    w.vector(st._ratchets.items(), ratchet)


def decode_secret_tree(r: Reader, suite: CipherSuite) -> SecretTree:
    st = SecretTree.__new__(SecretTree)
    st.suite = suite
    st.n_leaves = r.u32()
    st._nodes = dict(r.vector(lambda rr: (rr.u32(), rr.opaque())))
    st._ratchets = {}
    for leaf, kind, secret, generation, skipped in r.vector(
        lambda rr: (rr.u32(), RatchetType(rr.u8()), rr.opaque(), rr.u32(),
                    rr.vector(lambda r3: (r3.u32(), (r3.opaque(), r3.opaque()))))
    ):
        st._ratchets[(leaf, kind)] = HashRatchet(suite, secret, generation, OrderedDict(skipped))
    return st


SECRET_FIELDS = (
    "sender_data_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
    "init_secret",
)


@dataclass
class SavedGroup:
    """The layout of :meth:`Group.to_bytes`: version byte, public state, then the member's secrets."""

    epoch: EpochState
    signature_priv: bytes = field(repr=False)
    active: bool
    resumption_psks: dict[int, bytes] = field(default_factory=dict, repr=False)

    def to_bytes(self) -> bytes:
        e = self.epoch
        w = Writer().u8(STATE_VERSION)
        e.public.encode(w)
        w.boolean(self.active)
        w.u32(e.private.leaf_index).opaque(self.signature_priv).opaque(e.private.encryption_priv)
        w.vector(sorted(e.private.path_keys.items()), lambda ww, kv: ww.u32(kv[0]).opaque(kv[1]))
        for name in SECRET_FIELDS:
            w.opaque(getattr(e.secrets, name))
        w.opaque(e.confirmation_tag)
        w.vector(sorted(e.own_updates.items()), lambda ww, kv: ww.opaque(kv[0]).opaque(kv[1]))
        encode_secret_tree(w, e.secret_tree)
        w.vector(sorted(self.resumption_psks.items()), lambda ww, kv: ww.u64(kv[0]).opaque(kv[1]))
        return w.bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SavedGroup:
        def read(r: Reader) -> SavedGroup:
            version = r.u8()
            if version != STATE_VERSION:
                raise DecodeError(f"group state version {version} is not {STATE_VERSION}")
            public = PublicState.decode(r)
            active = r.boolean()
            leaf_index = r.u32()
            sig_priv = r.opaque()
            enc_priv = r.opaque()
            path_keys = dict(r.vector(lambda rr: (rr.u32(), rr.opaque())))
            values = {name: r.opaque() for name in SECRET_FIELDS}
            secrets = ks.EpochSecrets(
                joiner_secret=b"", welcome_secret=b"", epoch_secret=b"", encryption_secret=b"", **values
            )
            tag = r.opaque()
            own_updates = dict(r.vector(lambda rr: (rr.opaque(), rr.opaque())))
            st = decode_secret_tree(r, public.suite)
            resumption = dict(r.vector(lambda rr: (rr.u64(), rr.opaque())))
            epoch = EpochState(public, TreeKEMPrivate(leaf_index, enc_priv, path_keys), secrets, st, tag, own_updates)
            return cls(epoch, sig_priv, active, resumption)

        return decode_all(data, read)
