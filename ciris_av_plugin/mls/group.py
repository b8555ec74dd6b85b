"""The MLS group state machine of one member (RFC 9420 §11-§12), sans-I/O.

A :class:`Group` takes bytes in and returns bytes and events out, in the style of h11's
``Connection``: :meth:`Group.commit` builds a commit (and Welcome) without changing the epoch,
:meth:`Group.merge_pending` applies it once the delivery service accepted it, :meth:`Group.process`
handles a foreign proposal, commit or application message and returns an event. Every public check
is :mod:`commit_rules`, the same code the relay's :class:`~.public_group.PublicGroup` runs; this
module adds what needs secrets: membership tags, PrivateMessages, path decryption, the key schedule
and the confirmation tag.

A raised :class:`~ciris_av_plugin.errors.MLSError` leaves the state as it was. Secrets of a past
epoch are dropped when the next one is installed (§9.2); only the resumption PSKs of the last
:data:`RESUMPTION_PSK_EPOCHS` epochs are kept, because §8.6 lets later commits reference them, and
none under a policy that refuses PSKs (the relayed groups' :meth:`Policy.relay`).

Persistence: :meth:`Group.to_bytes` holds private keys and the current epoch's secrets. The store
layer must write it with mode 0600 and overwrite (not append to) the previous copy.

Time: KeyPackage lifetimes are checked against ``now`` passed to a call, else the injected
``clock`` (wall-clock seconds). :data:`DEFAULT_CLOCK` is the only place this package's MLS code
touches a clock; tests and hosts inject their own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import MLSError
from . import key_schedule as ks
from . import tree_math as tm
from .codec import DecodeError, Reader, Writer, decode_all
from .commit_rules import (
    CachedProposal,
    DecryptionError,
    DuplicateMemberError,
    GroupInactiveError,
    InvalidCommitError,
    InvalidKeyPackageError,
    InvalidPathError,
    InvalidWelcomeError,
    MissingPSKError,
    NoMatchingKeyPackageError,
    OwnCommitError,
    PendingCommitError,
    Policy,
    PolicyRefusedError,
    PublicState,
    ResolvedProposal,
    UnknownMemberError,
    UnsupportedMessageError,
    WrongConfirmationTag,
    apply_proposals,
    cache_proposal,
    check_epoch,
    check_key_package,
    check_path_public,
    check_tree_against_context,
    credential_identity,
    member_signature_key,
    public_path_handler,
    resolve_proposals,
    stage_commit,
    validate_proposal,
    verified_group_info_tree,
    verify_group_info_signature,
    verify_public_message,
)
from .crypto import CipherSuite
from .errors import CryptoError, ProtocolError, SecretTreeError
from .framing import (
    AuthenticatedContent,
    ContentType,
    FramedContent,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderType,
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
)
from .messages import (
    Add,
    Capabilities,
    Commit,
    Credential,
    Extension,
    ExtensionType,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    GroupSecrets,
    KeyPackage,
    LeafNodeSource,
    Lifetime,
    PathSecret,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    ProposalType,
    PSKType,
    Remove,
    ResumptionPSKUsage,
    Update,
    Welcome,
    WireFormat,
)
from .secret_tree import HashRatchet, RatchetType, SecretTree
from .tree import RatchetTree, TreeError
from .treekem import TreeKEMError, TreeKEMPrivate, create_update_path, process_update_path
from .welcome import (
    WelcomeError,
    decrypt_group_info,
    decrypt_group_secrets,
    encrypt_group_info,
    encrypt_group_secrets,
)

log = logging.getLogger(__name__)

DEFAULT_CLOCK: Callable[[], float] = time.time
"""Wall-clock seconds for KeyPackage lifetimes; the injectable default (see module docstring)."""

KEY_PACKAGE_LIFETIME = 90 * 24 * 3600
"""Validity of a generated KeyPackage. OpenMLS uses about 3 months; directory sweeps reclaim them."""

KEY_PACKAGE_BACKDATE = 3600
"""KeyPackages start an hour in the past so a peer with a slow clock accepts them (ARCHITECTURE.md)."""

RESUMPTION_PSK_EPOCHS = 8
"""Past epochs whose resumption PSK is kept for resumption PSK proposals (§8.6). OpenMLS keeps a
configurable store (default a handful); eight covers a commit racing a few epochs of churn."""

STATE_VERSION = 1
"""Leading byte of :meth:`Group.to_bytes`; bumped when the layout changes."""

PSKs = Mapping[bytes, bytes]
"""External PSKs supplied by the caller: psk_id -> psk value (§8.4)."""


# --------------------------------------------------------------------------------------------------
# Events (returned by Group.process)


@dataclass
class ProposalReceived:
    """A valid proposal was cached for a later commit of this epoch."""

    ref: bytes
    """Its ProposalRef (§5.2), which a commit may name."""
    sender: int | None
    """Leaf index of a member sender; None for an external sender."""
    proposal_type: int
    """The ProposalType (add, remove, ...)."""
    removed: bytes | None = None
    """For a Remove: the credential identity it would remove (a leave when it equals the sender's)."""


@dataclass
class CommitProcessed:
    """A foreign commit was applied: the group is at a new epoch."""

    epoch: int
    """The new epoch."""
    committer: int
    """Leaf index of the member who committed."""
    added: dict[int, bytes] = field(default_factory=dict)
    """New leaf index -> credential identity."""
    removed: dict[int, bytes] = field(default_factory=dict)
    """Removed leaf index -> credential identity."""
    updated: list[int] = field(default_factory=list)
    """Leaves replaced by Update proposals."""
    self_removed: bool = False
    """This member was removed; the group is now inactive."""
    discarded_pending: bool = False
    """Our own pending commit for the same epoch lost and was discarded."""


@dataclass
class ApplicationMessage:
    """Application data from a member (always a PrivateMessage, §6)."""

    sender: int
    """Sender's leaf index."""
    data: bytes
    """The plaintext."""
    authenticated_data: bytes = b""
    """The sender's unencrypted but authenticated data."""


GroupEvent = ProposalReceived | CommitProcessed | ApplicationMessage


# --------------------------------------------------------------------------------------------------
# KeyPackageBundle


@dataclass
class KeyPackageBundle:
    """A KeyPackage with the private keys that go with it (§10): what a joiner keeps until its Welcome."""

    key_package: bytes
    """The MLSMessage-framed KeyPackage, as published to the directory."""
    init_priv: bytes
    encryption_priv: bytes
    signature_priv: bytes

    @classmethod
    def generate(
        cls,
        identity: bytes,
        suite: CipherSuite,
        *,
        signature_priv: bytes | None = None,
        now: float | None = None,
        lifetime: int = KEY_PACKAGE_LIFETIME,
        capabilities: Capabilities | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> KeyPackageBundle:
        """A fresh KeyPackage for a BasicCredential ``identity``, back-dated by an hour.

        ``signature_priv`` reuses a member's signature key (a rejoin); by default a new one is made.
        """
        if signature_priv is None:
            signature_priv, _ = suite.generate_signature_key_pair()
        t = int(clock() if now is None else now)
        kp, init_priv, enc_priv = KeyPackage.create(
            suite,
            Credential.basic(identity),
            signature_priv,
            Lifetime(max(0, t - KEY_PACKAGE_BACKDATE), t + lifetime),
            capabilities=capabilities,
        )
        return cls(MLSMessage(kp).to_bytes(), init_priv, enc_priv, signature_priv)

    @property
    def package(self) -> KeyPackage:
        body = MLSMessage.from_bytes(self.key_package).body
        assert isinstance(body, KeyPackage)
        return body

    @property
    def suite(self) -> CipherSuite:
        return CipherSuite(self.package.cipher_suite)

    @property
    def ref(self) -> bytes:
        """The KeyPackageRef a Welcome addresses (§5.2)."""
        return self.package.ref(self.suite)

    @property
    def identity(self) -> bytes:
        return credential_identity(self.package.leaf_node)

    def to_bytes(self) -> bytes:
        """Private keys included: store like :meth:`Group.to_bytes` (mode 0600)."""
        w = Writer().opaque(self.key_package).opaque(self.init_priv)
        return w.opaque(self.encryption_priv).opaque(self.signature_priv).bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyPackageBundle:
        return decode_all(data, lambda r: cls(r.opaque(), r.opaque(), r.opaque(), r.opaque()))


# --------------------------------------------------------------------------------------------------
# PendingCommit


@dataclass
class _Epoch:
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
    _next: _Epoch | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------------
# helpers


def _strip(secrets: ks.EpochSecrets) -> ks.EpochSecrets:
    """Drop the secrets no longer needed once an epoch is installed (§9.2 deletion schedule).

    joiner/welcome/epoch secrets only lead to the others; the encryption secret now lives in the
    secret tree, which deletes as it derives.
    """
    return dataclasses.replace(secrets, joiner_secret=b"", welcome_secret=b"", epoch_secret=b"", encryption_secret=b"")


def _clone_secret_tree(st: SecretTree) -> SecretTree:
    """An independent copy, so a failed decryption can be thrown away with its ratchet steps."""
    out = SecretTree.__new__(SecretTree)
    out.suite = st.suite
    out.n_leaves = st.n_leaves
    out._nodes = dict(st._nodes)
    out._ratchets = {
        k: HashRatchet(r.suite, r.secret, r.generation, OrderedDict(r.skipped)) for k, r in st._ratchets.items()
    }
    return out


def _encode_secret_tree(w: Writer, st: SecretTree) -> None:
    w.u32(st.n_leaves)
    w.vector(sorted(st._nodes.items()), lambda ww, kv: ww.u32(kv[0]).opaque(kv[1]))

    def ratchet(ww: Writer, item: tuple[tuple[int, RatchetType], HashRatchet]) -> None:
        (leaf, kind), r = item
        ww.u32(leaf).u8(int(kind)).opaque(r.secret).u32(r.generation)
        ww.vector(r.skipped.items(), lambda w3, kv: w3.u32(kv[0]).opaque(kv[1][0]).opaque(kv[1][1]))

    w.vector(st._ratchets.items(), ratchet)


def _decode_secret_tree(r: Reader, suite: CipherSuite) -> SecretTree:
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


_SECRET_FIELDS = (
    "sender_data_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
    "init_secret",
)


def _parse_key_package(data: bytes) -> KeyPackage:
    """A KeyPackage from MLSMessage bytes (or bare KeyPackage bytes), InvalidKeyPackageError if neither."""
    try:
        body = MLSMessage.from_bytes(data).body
    except DecodeError:
        try:
            return KeyPackage.from_bytes(data)
        except DecodeError as exc:
            raise InvalidKeyPackageError("not a KeyPackage") from exc
    if not isinstance(body, KeyPackage):
        raise InvalidKeyPackageError("MLSMessage does not carry a KeyPackage")
    return body


# --------------------------------------------------------------------------------------------------
# Group


class Group:
    """One member's view of an MLS group. Build with :meth:`create`, :meth:`join` or :meth:`from_bytes`."""

    def __init__(
        self,
        epoch: _Epoch,
        signature_priv: bytes,
        *,
        resumption_psks: dict[int, bytes] | None = None,
        active: bool = True,
        policy: Policy | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> None:
        self._e = epoch
        self._sig_priv = signature_priv
        self._resumption: dict[int, bytes] = dict(resumption_psks or {})
        self._active = active
        self._pending: PendingCommit | None = None
        self.policy = policy or Policy()
        self.clock = clock
        if active or not self.policy.allow_psk:
            self._remember_resumption()

    # ---------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        group_id: bytes,
        identity: bytes,
        suite: CipherSuite,
        *,
        extensions: Sequence[Extension] = (),
        signature_priv: bytes | None = None,
        capabilities: Capabilities | None = None,
        now: float | None = None,
        policy: Policy | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> Group:
        """A one-member group at epoch 0 (§11)."""
        bundle = KeyPackageBundle.generate(
            identity, suite, signature_priv=signature_priv, now=now, capabilities=capabilities, clock=clock
        )
        leaf = bundle.package.leaf_node
        tree = RatchetTree(suite, [leaf])
        gc = GroupContext(suite.id, bytes(group_id), 0, tree.tree_hash(), b"", list(extensions))
        check_tree_against_context(tree, gc.extensions)  # our own leaf must support them (§11.1)
        # §11: the epoch secret is fresh randomness. Deriving it from a random joiner_secret gives
        # exactly that and reuses the one key-schedule function.
        secrets = ks.epoch_secrets_from_joiner(suite, os.urandom(suite.Nh), None, gc)
        tag = ks.confirmation_tag(suite, secrets.confirmation_key, b"")
        interim = ks.interim_transcript_hash(suite, b"", tag)
        public = PublicState(suite, gc, tree, interim)
        private = TreeKEMPrivate(0, bundle.encryption_priv)
        epoch = _Epoch(public, private, _strip(secrets), SecretTree(suite, secrets.encryption_secret, 1), tag)
        return cls(epoch, bundle.signature_priv, policy=policy, clock=clock)

    @classmethod
    def join(
        cls,
        welcome: bytes,
        bundles: Iterable[KeyPackageBundle],
        ratchet_tree: bytes | None = None,
        psks: PSKs | None = None,
        *,
        now: float | None = None,
        policy: Policy | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> Group:
        """Join from a Welcome (§12.4.3.1), the bundle picked by KeyPackageRef.

        The tree is the GroupInfo's ratchet_tree extension, else ``ratchet_tree`` (the extension
        body, e.g. served by the relay); it is checked against the signed tree hash, then for leaf
        signatures and parent hashes, before the GroupInfo signature is checked with the signer
        leaf of that verified tree.
        """
        del now  # the tree's KeyPackage lifetimes may have expired legitimately (§7.3)
        try:
            msg = MLSMessage.from_bytes(welcome).body
        except DecodeError as exc:
            raise InvalidWelcomeError("not an MLSMessage") from exc
        if not isinstance(msg, Welcome):
            raise InvalidWelcomeError("MLSMessage does not carry a Welcome")
        entries = {e.new_member: e for e in msg.secrets}
        bundle = entry = kp = suite = None
        for b in bundles:
            cand = b.package
            try:
                cand_suite = CipherSuite(cand.cipher_suite)
            except MLSError:
                continue
            ref = cand.ref(cand_suite)
            if ref in entries:
                bundle, entry, kp, suite = b, entries[ref], cand, cand_suite
                break
        if bundle is None or entry is None or kp is None or suite is None:
            raise NoMatchingKeyPackageError("the Welcome addresses none of these KeyPackages")
        if msg.cipher_suite != suite.id:
            raise InvalidWelcomeError("Welcome and KeyPackage cipher suites differ")
        try:
            secrets = decrypt_group_secrets(suite, entry, bundle.init_priv, msg.encrypted_group_info)
        except (WelcomeError, DecodeError) as exc:
            raise InvalidWelcomeError(str(exc)) from exc
        psk_secret = _welcome_psk_secret(suite, secrets.psks, psks)
        try:
            info = decrypt_group_info(suite, secrets.joiner_secret, psk_secret, msg.encrypted_group_info)
        except (WelcomeError, DecodeError) as exc:
            raise InvalidWelcomeError(str(exc)) from exc
        gc = info.group_context
        if gc.cipher_suite != suite.id:
            raise InvalidWelcomeError("GroupInfo cipher suite differs from the KeyPackage's")
        tree = verified_group_info_tree(suite, info, ratchet_tree)
        verify_group_info_signature(suite, info, tree)
        me = next((i for i, leaf in tree.leaves() if leaf == kp.leaf_node), None)
        if me is None:
            raise InvalidWelcomeError("no leaf of the tree is our KeyPackage's leaf")
        epoch_secrets = ks.epoch_secrets_from_joiner(suite, secrets.joiner_secret, psk_secret, gc)
        tag = ks.confirmation_tag(suite, epoch_secrets.confirmation_key, gc.confirmed_transcript_hash)
        if tag != info.confirmation_tag:
            raise WrongConfirmationTag("GroupInfo confirmation tag does not match the key schedule")
        private = TreeKEMPrivate(me, bundle.encryption_priv)
        if secrets.path_secret is not None:
            x = tm.common_ancestor(2 * me, 2 * info.signer)
            try:
                private.implant_from(tree, x, secrets.path_secret.path_secret)
            except (TreeKEMError, TreeError) as exc:
                raise InvalidWelcomeError(f"path secret: {exc}") from exc
        interim = ks.interim_transcript_hash(suite, gc.confirmed_transcript_hash, info.confirmation_tag)
        public = PublicState(suite, gc, tree, interim)
        epoch = _Epoch(
            public,
            private,
            _strip(epoch_secrets),
            SecretTree(suite, epoch_secrets.encryption_secret, tree.n_leaves),
            info.confirmation_tag,
        )
        log.debug("joined group %s at epoch %d as leaf %d", gc.group_id.hex()[:16], gc.epoch, me)
        return cls(epoch, bundle.signature_priv, policy=policy, clock=clock)

    # ---------------------------------------------------------------- read-only views

    @property
    def suite(self) -> CipherSuite:
        return self._e.public.suite

    @property
    def group_id(self) -> bytes:
        return self._e.public.group_id

    @property
    def epoch(self) -> int:
        return self._e.public.epoch

    @property
    def epoch_authenticator(self) -> bytes:
        return self._e.secrets.epoch_authenticator

    @property
    def leaf_index(self) -> int:
        return self._e.private.leaf_index

    @property
    def identity(self) -> bytes:
        tree = self._e.public.tree
        leaf = tree.leaf(self.leaf_index) if self.leaf_index < tree.n_leaves else None
        return b"" if leaf is None else credential_identity(leaf)

    @property
    def members(self) -> dict[int, bytes]:
        """Leaf index -> credential identity of every current member."""
        return self._e.public.members()

    @property
    def leaf_count(self) -> int:
        """Width of the tree in leaves (a power of two): the media layer's KID sender bits."""
        return self._e.public.tree.n_leaves

    @property
    def group_context(self) -> GroupContext:
        return dataclasses.replace(self._e.public.group_context)

    @property
    def tree(self) -> RatchetTree:
        return self._e.public.tree.copy()

    @property
    def active(self) -> bool:
        """False once this member was removed."""
        return self._active

    @property
    def pending(self) -> PendingCommit | None:
        return self._pending

    @property
    def pending_proposals(self) -> list[bytes]:
        """ProposalRefs cached in this epoch."""
        return list(self._e.public.proposals)

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter of the current epoch (§8.5)."""
        self._check_active()
        return self._e.secrets.exporter(self.suite, label, context, length)

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def _check_active(self) -> None:
        if not self._active:
            raise GroupInactiveError("this member was removed from the group")

    # ---------------------------------------------------------------- GroupInfo

    def group_info(self, ratchet_tree: bool = True, external_pub: bool = False) -> bytes:
        """A signed MLSMessage GroupInfo of the current epoch (§12.4.3), for the relay or joiners."""
        self._check_active()
        return MLSMessage(self._group_info(self._e, ratchet_tree, external_pub)).to_bytes()

    def _group_info(self, e: _Epoch, ratchet_tree: bool = True, external_pub: bool = False) -> GroupInfo:
        exts: list[Extension] = []
        if ratchet_tree:
            exts.append(Extension(ExtensionType.RATCHET_TREE, e.public.tree.to_bytes()))
        if external_pub:
            _, pub = e.secrets.external_key_pair(self.suite)
            exts.append(Extension(ExtensionType.EXTERNAL_PUB, Writer().opaque(pub).bytes()))
        info = GroupInfo(e.public.group_context, exts, e.confirmation_tag, e.private.leaf_index)
        info.sign(self.suite, self._sig_priv)
        return info

    # ---------------------------------------------------------------- sending

    def _frame(self, body: Proposal | Commit | bytes, authenticated_data: bytes) -> FramedContent:
        return FramedContent(self.group_id, self.epoch, Sender.member(self.leaf_index), authenticated_data, body)

    def _protect(self, ac: AuthenticatedContent, e: _Epoch) -> bytes:
        if ac.wire_format == WireFormat.PUBLIC_MESSAGE:
            msg = protect_public(self.suite, ac, e.secrets.membership_key, e.public.group_context)
            return MLSMessage(msg).to_bytes()
        pm = protect_private(self.suite, ac, e.secret_tree, e.secrets.sender_data_secret)
        return MLSMessage(pm).to_bytes()

    def _propose(self, proposal: Proposal, private: bool, authenticated_data: bytes) -> bytes:
        self._check_active()
        e = self._e
        wf = WireFormat.PRIVATE_MESSAGE if private else WireFormat.PUBLIC_MESSAGE
        cached = cache_proposal(
            e.public,
            sign_content(self.suite, wf, self._frame(proposal, authenticated_data), self._sig_priv,
                         e.public.group_context),
            self.policy,
            self._now(None),
        )
        out = self._protect(cached.content, e)
        e.public.proposals[cached.ref] = cached
        return out

    def propose_update(self, *, private: bool = False, authenticated_data: bytes = b"") -> bytes:
        """An Update proposal with a fresh leaf encryption key (§12.1.2), for another member to commit.

        Its private key is kept for this epoch, so a commit that includes it can be followed.
        """
        self._check_active()
        e = self._e
        old = e.public.tree.leaf(self.leaf_index)
        assert old is not None
        enc_priv, enc_pub = self.suite.generate_hpke_key_pair()
        leaf = dataclasses.replace(
            old, encryption_key=enc_pub, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None, parent_hash=b""
        )
        leaf.sign(self.suite, self._sig_priv, self.group_id, self.leaf_index)
        proposal = Proposal(Update(leaf))
        out = self._propose(proposal, private, authenticated_data)
        ref = next(r for r, c in reversed(e.public.proposals.items()) if c.proposal is proposal)
        e.own_updates[ref] = enc_priv
        return out

    def leave(self, *, private: bool = False, authenticated_data: bytes = b"") -> bytes:
        """A proposal removing ourselves (a member cannot commit its own removal, §12.2)."""
        return self._propose(Proposal(Remove(self.leaf_index)), private, authenticated_data)

    def propose_remove(self, identity: bytes, *, private: bool = False, authenticated_data: bytes = b"") -> bytes:
        leaf = self._e.public.leaf_of_identity(identity)
        if leaf is None:
            raise UnknownMemberError("no member has this identity")
        return self._propose(Proposal(Remove(leaf)), private, authenticated_data)

    def propose_add(self, key_package: bytes, *, private: bool = False, authenticated_data: bytes = b"") -> bytes:
        return self._propose(Proposal(Add(_parse_key_package(key_package))), private, authenticated_data)

    def encrypt(self, data: bytes, authenticated_data: bytes = b"") -> bytes:
        """Application data as a PrivateMessage of the current epoch (§6.3)."""
        self._check_active()
        wf = WireFormat.PRIVATE_MESSAGE
        ac = sign_content(self.suite, wf, self._frame(bytes(data), authenticated_data), self._sig_priv,
                          self._e.public.group_context)
        return self._protect(ac, self._e)

    def commit(
        self,
        adds: Sequence[bytes] = (),
        removes: Sequence[bytes] = (),
        force_path: bool = False,
        *,
        extensions: Sequence[Extension] | None = None,
        include_pending: bool = True,
        private: bool = False,
        authenticated_data: bytes = b"",
        psks: PSKs | None = None,
        now: float | None = None,
    ) -> PendingCommit:
        """Build a commit (§12.4.1) and its Welcome; the group stays in this epoch until merged.

        ``adds`` are MLSMessage-framed KeyPackages, ``removes`` credential identities (resolved to
        leaves now: leaf indices are reused). Proposals cached this epoch are included by reference
        when they form a valid list with these (a Remove wins over an Update of the same leaf,
        §12.2). An UpdatePath is added when required, when ``force_path`` is set, or for an empty
        commit. ``extensions`` replaces the GroupContext extensions (a GroupContextExtensions
        proposal, §12.1.7; it needs a path). Sent as a PublicMessage unless ``private``.
        """
        self._check_active()
        if self._pending is not None:
            raise PendingCommitError("a commit is already pending; merge or discard it first")
        e = self._e
        suite = self.suite
        me = self.leaf_index
        t = self._now(now)

        kps = [_parse_key_package(b) for b in adds]
        for kp in kps:
            check_key_package(suite, kp, e.public.group_context.extensions, t)
        remove_leaves: list[int] = []
        for identity in removes:
            leaf = e.public.leaf_of_identity(identity)
            if leaf is None:
                raise UnknownMemberError("no member has this identity")
            if leaf == me:
                raise InvalidCommitError("a member cannot commit its own removal; use leave() (§12.2)")
            if leaf not in remove_leaves:
                remove_leaves.append(leaf)

        resolved, pors = self._select_proposals(
            e, kps, remove_leaves, include_pending, psks, t, None if extensions is None else list(extensions)
        )
        applied = apply_proposals(e.public, me, resolved, self.policy, t)
        gc = e.public.group_context
        provisional = dataclasses.replace(gc, epoch=gc.epoch + 1, extensions=list(applied.extensions))
        added_leaves = list(applied.added)
        use_path = applied.path_required or force_path
        path_result = None
        if use_path:
            try:
                path_result = create_update_path(applied.tree, me, self._sig_priv, provisional, added_leaves)
            except (TreeKEMError, TreeError) as exc:
                raise InvalidPathError(str(exc)) from exc
            check_path_public(e.public, applied.tree, me, path_result.update_path, added_leaves,
                              applied.extensions, self.policy)
            new_tree = path_result.tree
            new_private = path_result.private
            commit_secret = path_result.commit_secret
            tree_hash = path_result.group_context.tree_hash
        else:
            new_tree = applied.tree
            new_private = TreeKEMPrivate(me, e.private.encryption_priv, dict(e.private.path_keys))
            new_private.prune(new_tree)
            commit_secret = None
            tree_hash = new_tree.tree_hash()

        wf = WireFormat.PRIVATE_MESSAGE if private else WireFormat.PUBLIC_MESSAGE
        commit = Commit(pors, path_result.update_path if path_result else None)
        ac = sign_content(suite, wf, self._frame(commit, authenticated_data), self._sig_priv, gc)
        cth = ks.confirmed_transcript_hash(suite, e.public.interim_transcript_hash, ac.confirmed_transcript_input())
        new_gc = dataclasses.replace(provisional, tree_hash=tree_hash, confirmed_transcript_hash=cth)
        psk_secret = self._psk_secret(applied.psk_ids, psks)
        secrets = ks.derive_epoch_secrets(suite, e.secrets.init_secret, commit_secret, psk_secret, new_gc)
        tag = ks.confirmation_tag(suite, secrets.confirmation_key, cth)
        ac.auth.confirmation_tag = tag
        interim = ks.interim_transcript_hash(suite, cth, tag)
        nxt = _Epoch(
            PublicState(suite, new_gc, new_tree, interim),
            new_private,
            _strip(secrets),
            SecretTree(suite, secrets.encryption_secret, new_tree.n_leaves),
            tag,
        )
        welcome = None
        if applied.added:
            welcome = self._welcome(nxt, applied.added, secrets, psk_secret, applied.psk_ids, path_result)
        commit_bytes = self._protect(ac, e)
        self._pending = PendingCommit(
            commit_bytes,
            welcome,
            new_gc.epoch,
            {i: credential_identity(kp.leaf_node) for i, kp in applied.added.items()},
            dict(applied.removed),
            list(applied.updated),
            nxt,
        )
        return self._pending

    def _select_proposals(
        self,
        e: _Epoch,
        kps: list[KeyPackage],
        remove_leaves: list[int],
        include_pending: bool,
        psks: PSKs | None,
        now: float,
        extensions: list[Extension] | None = None,
    ) -> tuple[list[ResolvedProposal], list[ProposalOrRef]]:
        """Cached proposals that keep the list valid (§12.2, §12.4), then our own by value."""
        me = self.leaf_index
        resolved: list[ResolvedProposal] = []
        pors: list[ProposalOrRef] = []
        cached: list[CachedProposal] = list(e.public.proposals.values()) if include_pending else []
        removed = set(remove_leaves)
        for c in cached:
            body = c.proposal.body
            if isinstance(body, Remove) and body.removed != me:
                removed.add(body.removed)
        touched: set[int] = set()
        identities = {credential_identity(leaf) for i, leaf in e.public.tree.leaves() if i not in removed}
        seen_psks: set[bytes] = set()
        have_gce = False
        for c in cached:
            body = c.proposal.body
            take = False
            try:
                validate_proposal(e.public, c.proposal, c.sender.sender_type, c.sender.index, self.policy, now)
            except MLSError as exc:
                log.debug("cached %s proposal no longer valid: %s", c.proposal.proposal_type, exc)
                continue
            if isinstance(body, Remove):
                take = body.removed != me and body.removed not in touched
                if take:
                    touched.add(body.removed)
            elif isinstance(body, Update):
                take = c.sender.index != me and c.sender.index not in removed and c.sender.index not in touched
                if take:
                    touched.add(c.sender.index)
            elif isinstance(body, Add):
                ident = credential_identity(body.key_package.leaf_node)
                take = ident not in identities
                if take:
                    identities.add(ident)
            elif isinstance(body, PreSharedKey):
                key = body.psk.to_bytes()
                take = key not in seen_psks and self._psk_available(body.psk, psks)
                if take:
                    seen_psks.add(key)
            elif body.proposal_type == ProposalType.GROUP_CONTEXT_EXTENSIONS:
                take = not have_gce and extensions is None
                have_gce = True
            if take:
                resolved.append(ResolvedProposal(c.proposal, c.sender.sender_type, c.sender.index, c.ref))
                pors.append(ProposalOrRef(reference=c.ref))
            else:
                log.debug("leaving cached %s proposal out of our commit", c.proposal.proposal_type)
        own: list[Proposal] = [Proposal(Remove(leaf)) for leaf in remove_leaves if leaf not in touched]
        if extensions is not None:
            own.insert(0, Proposal(GroupContextExtensions(extensions)))
        for kp in kps:
            ident = credential_identity(kp.leaf_node)
            if ident in identities:
                raise DuplicateMemberError("an Add for an identity already in the group (§12.2)")
            identities.add(ident)
            own.append(Proposal(Add(kp)))
        for p in own:
            resolved.append(ResolvedProposal(p, SenderType.MEMBER, me))
            pors.append(ProposalOrRef(proposal=p))
        return resolved, pors

    def _welcome(
        self,
        nxt: _Epoch,
        added: dict[int, KeyPackage],
        secrets: ks.EpochSecrets,
        psk_secret: bytes | None,
        psk_ids: list[PreSharedKeyID],
        path_result,
    ) -> bytes:
        """One Welcome for every new member, with the ratchet tree (§12.4.3.1)."""
        suite = self.suite
        info = self._group_info(nxt, ratchet_tree=True)
        egi = encrypt_group_info(suite, secrets.joiner_secret, psk_secret, info)
        entries = []
        for leaf, kp in added.items():
            ps = path_result.path_secret_for_joiner(leaf) if path_result is not None else None
            gs = GroupSecrets(secrets.joiner_secret, PathSecret(ps[1]) if ps else None, list(psk_ids))
            entries.append(encrypt_group_secrets(suite, kp, egi, gs))
        return MLSMessage(Welcome(suite.id, entries, egi)).to_bytes()

    def merge_pending(self) -> CommitProcessed:
        """Apply our own commit once the delivery service accepted it (§12.4.1)."""
        pending = self._pending
        if pending is None or pending._next is None:
            raise PendingCommitError("no pending commit to merge")
        self._install(pending._next)
        self._pending = None
        return CommitProcessed(
            self.epoch, self.leaf_index, dict(pending.added), dict(pending.removed), list(pending.updated)
        )

    def discard_pending(self) -> None:
        """Forget our pending commit: another commit won the epoch."""
        if self._pending is None:
            raise PendingCommitError("no pending commit to discard")
        self._pending = None

    def _install(self, nxt: _Epoch) -> None:
        self._e = nxt
        self._remember_resumption()

    def _remember_resumption(self) -> None:
        if not self.policy.allow_psk:
            # No commit in this group may reference a resumption PSK, so past epochs' ones would
            # only be secrets kept for nothing (§9.2 deletion schedule): keep none.
            self._resumption.clear()
            return
        self._resumption[self.epoch] = self._e.secrets.resumption_psk
        for old in sorted(self._resumption)[:-RESUMPTION_PSK_EPOCHS]:
            del self._resumption[old]

    # ---------------------------------------------------------------- PSKs (§8.4, §8.6)

    def _psk_available(self, psk: PreSharedKeyID, psks: PSKs | None) -> bool:
        try:
            self._psk_value(psk, psks)
        except MissingPSKError:
            return False
        return True

    def _psk_value(self, psk: PreSharedKeyID, psks: PSKs | None) -> bytes:
        if psk.psktype == PSKType.EXTERNAL:
            if psks is None or psk.psk_id not in psks:
                raise MissingPSKError(f"external PSK {psk.psk_id.hex()[:16]} not supplied")
            return psks[psk.psk_id]
        if psk.usage != ResumptionPSKUsage.APPLICATION:
            raise UnsupportedMessageError("reinit/branch resumption PSKs are not supported")
        if psk.psk_group_id != self.group_id or psk.psk_epoch not in self._resumption:
            raise MissingPSKError(f"resumption PSK of epoch {psk.psk_epoch} is not kept")
        return self._resumption[psk.psk_epoch]

    def _psk_secret(self, psk_ids: Sequence[PreSharedKeyID], psks: PSKs | None) -> bytes | None:
        if not psk_ids:
            return None
        return ks.psk_secret(self.suite, [(p, self._psk_value(p, psks)) for p in psk_ids])

    # ---------------------------------------------------------------- receiving

    def process(self, message: bytes, psks: PSKs | None = None, *, now: float | None = None) -> GroupEvent:
        """Handle a foreign handshake or application message; returns the event it caused.

        A message of a later epoch raises :class:`FutureEpochError` (hold it), of an earlier one
        :class:`StaleEpochError`. A commit for the epoch of our pending commit, once valid,
        discards the pending one (the delivery service chose it).
        """
        self._check_active()
        e = self._e
        msg = MLSMessage.from_bytes(message).body
        secret_tree = e.secret_tree
        if isinstance(msg, PublicMessage):
            ac = verify_public_message(e.public, msg, e.secrets.membership_key, self.policy)
        elif isinstance(msg, PrivateMessage):
            check_epoch(e.public, msg.group_id, msg.epoch)
            if msg.content_type != ContentType.APPLICATION and not self.policy.allow_private_handshakes:
                raise PolicyRefusedError("PrivateMessage handshakes are refused in this group")
            secret_tree = _clone_secret_tree(e.secret_tree)
            try:
                ac = unprotect_private(
                    self.suite, msg, secret_tree, e.secrets.sender_data_secret, e.public.group_context,
                    lambda i: member_signature_key(e.public, i),
                )
            except (CryptoError, SecretTreeError, ProtocolError) as exc:
                raise DecryptionError(f"PrivateMessage: {exc}") from exc
        else:
            raise UnsupportedMessageError(f"{type(msg).__name__} is not processed by Group.process")

        content = ac.content
        body = content.body
        if isinstance(body, bytes):
            e.secret_tree = secret_tree
            return ApplicationMessage(content.sender.index, body, content.authenticated_data)
        if isinstance(body, Proposal):
            cached = cache_proposal(e.public, ac, self.policy, self._now(now))
            e.secret_tree = secret_tree
            e.public.proposals[cached.ref] = cached
            removed = None
            if isinstance(body.body, Remove):
                removed = e.public.members().get(body.body.removed)
            sender = content.sender.index if content.sender.sender_type == SenderType.MEMBER else None
            return ProposalReceived(cached.ref, sender, int(body.proposal_type), removed)
        if content.sender.sender_type == SenderType.MEMBER and content.sender.index == self.leaf_index:
            raise OwnCommitError("our own commit: apply it with merge_pending()")
        event = self._process_commit(ac, psks, self._now(now))
        if self._pending is not None:
            self._pending = None
            event.discarded_pending = True
        return event

    def _process_commit(self, ac: AuthenticatedContent, psks: PSKs | None, now: float) -> CommitProcessed:
        e = self._e
        suite = self.suite
        me = self.leaf_index
        got: dict[str, object] = {}
        commit = ac.content.body
        assert isinstance(commit, Commit)
        if ac.content.sender.sender_type != SenderType.MEMBER:
            raise UnsupportedMessageError("external commits are not supported")
        resolved = resolve_proposals(e.public, commit, SenderType.MEMBER, ac.content.sender.index)
        own_update = next(
            (rp.ref for rp in resolved if rp.sender_index == me and rp.proposal.proposal_type == ProposalType.UPDATE),
            None,
        )
        base = e.private
        if own_update is not None:
            # §12.1.2: the committed Update replaced our leaf; its key is the one we proposed
            if own_update not in e.own_updates:
                raise InvalidCommitError("a commit applies an Update for our leaf that we did not propose")
            base = TreeKEMPrivate(me, e.own_updates[own_update], dict(e.private.path_keys))

        def handler(tree: RatchetTree, committer: int, path, provisional: GroupContext, added: Sequence[int]):
            if me >= tree.n_leaves or tree.leaf(me) is None or me in added:
                # we were removed (our leaf may already hold a newcomer): follow publicly
                return public_path_handler(tree, committer, path, provisional, added)
            try:
                res = process_update_path(tree, base, committer, path, provisional, added)
            except (TreeKEMError, TreeError, CryptoError) as exc:
                raise InvalidPathError(str(exc)) from exc
            got["private"] = res.private
            got["commit_secret"] = res.commit_secret
            return res.tree, res.group_context.tree_hash

        staged = stage_commit(e.public, ac, self.policy, now, handler, resolved)
        event = CommitProcessed(
            staged.group_context.epoch,
            staged.committer,
            {i: credential_identity(kp.leaf_node) for i, kp in staged.added.items()},
            dict(staged.removed),
            list(staged.updated),
        )
        if me in staged.removed:
            # §12.4.2: a member removed by a valid commit stops here; it cannot derive the new epoch.
            self._e = _Epoch(
                PublicState(suite, staged.group_context, staged.tree, staged.interim_transcript_hash),
                TreeKEMPrivate(me, b""),
                ks.EpochSecrets(*([b""] * len(dataclasses.fields(ks.EpochSecrets)))),
                SecretTree(suite, bytes(suite.Nh), 1),
                ac.auth.confirmation_tag or b"",
            )
            self._resumption.clear()
            self._active = False
            event.self_removed = True
            return event
        private = got.get("private")
        if private is None:
            private = TreeKEMPrivate(me, base.encryption_priv, dict(base.path_keys))
            private.prune(staged.tree)
        commit_secret = got.get("commit_secret")
        psk_secret = self._psk_secret(staged.psk_ids, psks)
        secrets = ks.derive_epoch_secrets(
            suite, e.secrets.init_secret, commit_secret, psk_secret, staged.group_context  # type: ignore[arg-type]
        )
        tag = ks.confirmation_tag(suite, secrets.confirmation_key, staged.group_context.confirmed_transcript_hash)
        if tag != ac.auth.confirmation_tag:
            raise WrongConfirmationTag("commit confirmation tag does not match the key schedule")
        self._install(
            _Epoch(
                PublicState(suite, staged.group_context, staged.tree, staged.interim_transcript_hash),
                private,  # type: ignore[arg-type]
                _strip(secrets),
                SecretTree(suite, secrets.encryption_secret, staged.tree.n_leaves),
                tag,
            )
        )
        return event

    # ---------------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        """The whole member state, private keys and current epoch secrets included.

        Write it with mode 0600 and replace the previous copy: older copies hold older epochs'
        secrets, which §9.2 wants deleted. A pending commit is not saved (discard it on restart).
        """
        e = self._e
        w = Writer().u8(STATE_VERSION)
        e.public.encode(w)
        w.boolean(self._active)
        w.u32(e.private.leaf_index).opaque(self._sig_priv).opaque(e.private.encryption_priv)
        w.vector(sorted(e.private.path_keys.items()), lambda ww, kv: ww.u32(kv[0]).opaque(kv[1]))
        for name in _SECRET_FIELDS:
            w.opaque(getattr(e.secrets, name))
        w.opaque(e.confirmation_tag)
        w.vector(sorted(e.own_updates.items()), lambda ww, kv: ww.opaque(kv[0]).opaque(kv[1]))
        _encode_secret_tree(w, e.secret_tree)
        w.vector(sorted(self._resumption.items()), lambda ww, kv: ww.u64(kv[0]).opaque(kv[1]))
        return w.bytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, policy: Policy | None = None, clock: Callable[[], float] = DEFAULT_CLOCK
    ) -> Group:
        def read(r: Reader) -> Group:
            version = r.u8()
            if version != STATE_VERSION:
                raise DecodeError(f"group state version {version} is not {STATE_VERSION}")
            public = PublicState.decode(r)
            active = r.boolean()
            leaf_index = r.u32()
            sig_priv = r.opaque()
            enc_priv = r.opaque()
            path_keys = dict(r.vector(lambda rr: (rr.u32(), rr.opaque())))
            values = {name: r.opaque() for name in _SECRET_FIELDS}
            secrets = ks.EpochSecrets(
                joiner_secret=b"", welcome_secret=b"", epoch_secret=b"", encryption_secret=b"", **values
            )
            tag = r.opaque()
            own_updates = dict(r.vector(lambda rr: (rr.opaque(), rr.opaque())))
            st = _decode_secret_tree(r, public.suite)
            resumption = dict(r.vector(lambda rr: (rr.u64(), rr.opaque())))
            epoch = _Epoch(public, TreeKEMPrivate(leaf_index, enc_priv, path_keys), secrets, st, tag, own_updates)
            return cls(epoch, sig_priv, resumption_psks=resumption, active=active, policy=policy, clock=clock)

        return decode_all(data, read)


# --------------------------------------------------------------------------------------------------
# Welcome helpers


def _welcome_psk_secret(suite: CipherSuite, ids: Sequence[PreSharedKeyID], psks: PSKs | None) -> bytes | None:
    """psk_secret of a Welcome's GroupSecrets: only external PSKs can be known to a joiner here."""
    if not ids:
        return None
    values = []
    for p in ids:
        if p.psktype != PSKType.EXTERNAL:
            if p.usage == ResumptionPSKUsage.APPLICATION:
                raise MissingPSKError("a joiner holds no resumption PSK of the group it joins")
            raise UnsupportedMessageError("reinit/branch resumption PSKs in a Welcome are not supported")
        if psks is None or p.psk_id not in psks:
            raise MissingPSKError(f"external PSK {p.psk_id.hex()[:16]} not supplied")
        values.append((p, psks[p.psk_id]))
    return ks.psk_secret(suite, values)


__all__ = [
    "Group",
    "PendingCommit",
    "KeyPackageBundle",
    "ProposalReceived",
    "CommitProcessed",
    "ApplicationMessage",
    "GroupEvent",
    "DEFAULT_CLOCK",
    "MLSError",
    "PolicyRefusedError",
]
