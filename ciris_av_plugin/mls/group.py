"""The MLS group state machine of one member (RFC 9420 §11-§12), sans-I/O.

A :class:`Group` takes bytes in and returns bytes and events out, in the style of h11's
``Connection``: :meth:`Group.commit` builds a commit (and Welcome) without changing the epoch,
:meth:`Group.merge_pending` applies it once the delivery service accepted it, :meth:`Group.process`
handles a foreign proposal, commit or application message and returns an event. Every public check
is :mod:`commit_rules`, the same code the relay's :class:`~.public_group.PublicGroup` runs; this
module adds what needs secrets: membership tags, PrivateMessages, path decryption, the key schedule
and the confirmation tag.

A raised :class:`~ciris_av_plugin.errors.MLSError` leaves the state as it was. Secrets of a past
epoch are dropped when the next one is installed (§9.2); only recent resumption PSKs are kept
(:mod:`.psks`), and none under a policy that refuses PSKs (the relayed groups' :meth:`Policy.relay`).

Beside it: :mod:`.group_events` (what :meth:`Group.process` returns), :mod:`.group_state` (an epoch's
state, a pending commit, the saved layout), :mod:`.group_join` (opening a Welcome),
:mod:`.commit_selection` (which proposals a commit carries), :mod:`.key_package_bundle`.

Persistence: :meth:`Group.to_bytes` holds private keys and the current epoch's secrets. The store
layer must write it with mode 0600 and overwrite (not append to) the previous copy.

Time: KeyPackage lifetimes are checked against ``now`` passed to a call, else the injected
``clock`` (wall-clock seconds). :data:`~.clock.DEFAULT_CLOCK` is the only place this package's MLS
code touches a clock; tests and hosts inject their own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence

from . import key_schedule as ks
from .clock import DEFAULT_CLOCK
from .codec import Writer
from .commit_rules import check_path_public, public_path_handler, stage_commit
from .commit_selection import select_proposals
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
from .group_errors import (
    DecryptionError,
    GroupInactiveError,
    InvalidCommitError,
    InvalidPathError,
    OwnCommitError,
    PendingCommitError,
    PolicyRefusedError,
    UnknownMemberError,
    UnsupportedMessageError,
    WrongConfirmationTag,
)
from .group_events import ApplicationMessage, CommitProcessed, GroupEvent, ProposalReceived
from .group_join import open_welcome
from .group_state import (
    EpochState,
    PendingCommit,
    SavedGroup,
    clone_secret_tree,
    strip_secrets,
)
from .key_package_bundle import KeyPackageBundle, parse_key_package
from .messages import Capabilities, Extension, GroupContext
from .policy import Policy, check_key_package, check_tree_against_context, credential_identity
from .proposal_structs import Add, Commit, PreSharedKeyID, Proposal, Remove, Update
from .proposals import apply_proposals, cache_proposal, resolve_proposals
from .psks import PSKs, ResumptionPSKs
from .public_state import PublicState, check_epoch, member_signature_key, verify_public_message
from .registries import ExtensionType, LeafNodeSource, ProposalType, WireFormat
from .secret_tree import SecretTree
from .tree import RatchetTree, TreeError
from .tree_structs import KeyPackage
from .treekem import TreeKEMError, TreeKEMPrivate, create_update_path, process_update_path
from .welcome import (
    encrypt_group_info,
    encrypt_group_secrets,
)
from .welcome_structs import GroupInfo, GroupSecrets, PathSecret, Welcome

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Group


class Group:
    """One member's view of an MLS group. Build with :meth:`create`, :meth:`join` or :meth:`from_bytes`."""

    def __init__(
        self,
        epoch: EpochState,
        signature_priv: bytes,
        *,
        resumption_psks: dict[int, bytes] | None = None,
        active: bool = True,
        policy: Policy | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> None:
        self._e = epoch
        self._sig_priv = signature_priv
        self._active = active
        self._pending: PendingCommit | None = None
        self.policy = policy or Policy()
        self.clock = clock
        self._psks = ResumptionPSKs(
            epoch.public.suite, epoch.public.group_context.group_id, keep=self.policy.allow_psk, kept=resumption_psks
        )
        if active:
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
        epoch = EpochState(public, private, strip_secrets(secrets), SecretTree(suite, secrets.encryption_secret, 1), tag)
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
        epoch, signature_priv = open_welcome(welcome, bundles, ratchet_tree, psks)
        return cls(epoch, signature_priv, policy=policy, clock=clock)

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

    def _group_info(self, e: EpochState, ratchet_tree: bool = True, external_pub: bool = False) -> GroupInfo:
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

    def _protect(self, ac: AuthenticatedContent, e: EpochState) -> bytes:
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
        return self._propose(Proposal(Add(parse_key_package(key_package))), private, authenticated_data)

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

        kps = [parse_key_package(b) for b in adds]
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

        resolved, pors = select_proposals(
            e.public, me, self.policy, self._psks.available,
            kps, remove_leaves, include_pending, psks, t, None if extensions is None else list(extensions),
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
        psk_secret = self._psks.secret(applied.psk_ids, psks)
        secrets = ks.derive_epoch_secrets(suite, e.secrets.init_secret, commit_secret, psk_secret, new_gc)
        tag = ks.confirmation_tag(suite, secrets.confirmation_key, cth)
        ac.auth.confirmation_tag = tag
        interim = ks.interim_transcript_hash(suite, cth, tag)
        nxt = EpochState(
            PublicState(suite, new_gc, new_tree, interim),
            new_private,
            strip_secrets(secrets),
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

    def _welcome(
        self,
        nxt: EpochState,
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

    def _install(self, nxt: EpochState) -> None:
        self._e = nxt
        self._remember_resumption()

    def _remember_resumption(self) -> None:
        self._psks.remember(self.epoch, self._e.secrets.resumption_psk)

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
            secret_tree = clone_secret_tree(e.secret_tree)
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
            self._e = EpochState(
                PublicState(suite, staged.group_context, staged.tree, staged.interim_transcript_hash),
                TreeKEMPrivate(me, b""),
                ks.EpochSecrets(*([b""] * len(dataclasses.fields(ks.EpochSecrets)))),
                SecretTree(suite, bytes(suite.Nh), 1),
                ac.auth.confirmation_tag or b"",
            )
            self._psks.clear()
            self._active = False
            event.self_removed = True
            return event
        private = got.get("private")
        if private is None:
            private = TreeKEMPrivate(me, base.encryption_priv, dict(base.path_keys))
            private.prune(staged.tree)
        commit_secret = got.get("commit_secret")
        psk_secret = self._psks.secret(staged.psk_ids, psks)
        secrets = ks.derive_epoch_secrets(
            suite, e.secrets.init_secret, commit_secret, psk_secret, staged.group_context  # type: ignore[arg-type]
        )
        tag = ks.confirmation_tag(suite, secrets.confirmation_key, staged.group_context.confirmed_transcript_hash)
        if tag != ac.auth.confirmation_tag:
            raise WrongConfirmationTag("commit confirmation tag does not match the key schedule")
        self._install(
            EpochState(
                PublicState(suite, staged.group_context, staged.tree, staged.interim_transcript_hash),
                private,  # type: ignore[arg-type]
                strip_secrets(secrets),
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
        return SavedGroup(self._e, self._sig_priv, self._active, dict(self._psks.items())).to_bytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, policy: Policy | None = None, clock: Callable[[], float] = DEFAULT_CLOCK
    ) -> Group:
        saved = SavedGroup.from_bytes(data)
        return cls(
            saved.epoch, saved.signature_priv, resumption_psks=saved.resumption_psks, active=saved.active,
            policy=policy, clock=clock,
        )


__all__ = ["Group"]
