"""The relay's MLS delivery service, per stream (sans-I/O).

Stream registration bound to the GroupInfo signer (trusted on first use); join requests (bounded
per stream, rate-limited per identity, persisted so they survive a restart and gate KeyPackage
fetches); the Welcome mailbox (fetchable only by its joiner, until it expires; expiry tells the
admitting member to remove the ghost leaf); proposals of the current epoch (a leaver's self-Remove,
kept, fanned out and stored with the group state until the epoch's commit); ``commit_failed``
recovery (remove and re-add); the public tree on request; and commit sequencing: the first commit
of the current epoch that passes the checks wins, atomically with its Welcome, its KeyPackages
marked used and the epoch's proposals dropped. A retried accepted commit is confirmed again.

The group itself is the keyless :class:`~ciris_av_plugin.mls.PublicGroup`, reached through small
seams (:class:`GroupView`, :class:`CommitChecker`, :class:`ProposalChecker`) that default to it, so
sequencing can also be tested with a stand-in view. A commit is staged once: every public check
(signature over the GroupContext, §12.2 proposal rules, UpdatePath, parent and tree hashes) and its
effect (Adds with their KeyPackageRefs, Removes, the next state) come from one validation.

The service's own checks come first and are cheap: framing (a PublicMessage commit from a member —
PrivateMessage handshakes and external commits are refused, ARCHITECTURE "MLS"), group id, epoch
(stale and future get their own errors), sender leaf = submitting identity; after the checker: roster
authority (proposals by value — Adds, Removes — only from the stream's admitters: its creator and the
identities it named; anyone else commits only proposals the relay holds, by reference), each Add for an
identity with a live join request and its KeyPackage admissible in the directory, at most one leaf per
identity, and the Welcome's ``new_member`` refs exactly the Adds. A member may propose only its own
removal. Members the relay has not heard from for ``member_link_timeout`` are reported to the admitter
(:meth:`DeliveryService.check_links`), like joiners whose Welcome expired.

Its parts live next to it: refusals in ``delivery_errors.py``, events in ``delivery_events.py``,
the group seams in ``group_view.py``, handshake parsing in ``handshake.py``, the join-request limits
in ``join_queue.py``.

Single-threaded, like every sans-I/O core here: it holds no lock. The transport's
:class:`~ciris_av_plugin.transport.delivery_handlers.DeliveryPlane` owns the one lock of the delivery
core (this service, the KeyPackage directory and their store) and holds it for every call.

Methods return :class:`Notify` items (recipient identity + event dataclass); the transport puts them
on the recipients' long-poll event queues, which own sequence numbers and acknowledgements. Every
refusal is a :class:`DeliveryError` with a stable ``code`` and leaves stored state unchanged. Times
are wall-clock seconds passed in (persisted deadlines must survive a restart).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import MLSError, RelayError
from ..mls.framing import MLSMessage
from ..mls.group_errors import PolicyRefusedError
from ..mls.proposal_structs import Remove
from ..mls.public_group import PublicGroup
from ..mls.welcome_structs import GroupInfo
from ..protocol.envelope import IDENTITY_HASH_LEN
from .delivery_errors import (
    AlreadyMember,
    BadAdmitters,
    BadGroupInfo,
    DuplicateIdentity,
    FutureCommit,
    InvalidCommit,
    JoinQueueFull,
    NoJoinRequest,
    NotAMember,
    NotAnAdmitter,
    NoWelcome,
    ProposalNotAllowed,
    RateLimited,
    RemoveNotOwn,
    SenderMismatch,
    SinceOutOfRange,
    StaleCommit,
    StreamExists,
    SubmissionTooLarge,
    TooManyProposals,
    UnknownStream,
    WelcomeMismatch,
)
from .delivery_events import (
    CommitAccepted,
    JoinRequested,
    MemberUnreachable,
    Notify,
    ProposalReceived,
    RecoveryRequested,
    WelcomeExpired,
    WelcomeReady,
)
from .directory import KeyPackageDirectory, NotAdmissible
from .group_view import (
    CommitChecker,
    CommitEffect,
    GroupInfoLoader,
    GroupLoader,
    GroupView,
    ProposalChecker,
    public_group_commit,
    public_group_proposal,
)
from .handshake import commit_header, proposal_header, welcome_refs
from .join_queue import JOIN_REQUEST_TTL_S, MAX_PENDING_JOINS_PER_STREAM, JoinRateLimiter
from .storage import (
    CommitOutcome,
    CommitRecord,
    GroupStateStore,
    JoinRequest,
    PendingWelcome,
    ProposalRecord,
    StreamRecord,
)

log = logging.getLogger(__name__)

__all__ = [
    "WELCOME_TTL_S",
    "MAX_PROPOSALS_PER_EPOCH",
    "MAX_SUBMISSION_SIZE",
    "MAX_PROPOSAL_SIZE",
    "MAX_ADMITTERS",
    "MEMBER_LINK_TIMEOUT_S",
    "COMMIT_LOG_KEEP",
    "Accepted",
    "DeliveryService",
]

# How long a Welcome waits for its joiner. The joiner is told at once (WelcomeReady on its long poll);
# five minutes covers a joiner reconnecting over a slow multi-hop RNS path. After it the joiner's leaf
# is a ghost and the admitting member is told to remove it.
WELCOME_TTL_S = 300.0

# Proposals kept per epoch. Members propose only their own Remove (leaving) or Update; 32 lets every
# member of a 16-member call do both within one epoch, and caps what a member can make us store.
MAX_PROPOSALS_PER_EPOCH = 32

# Largest commit + Welcome (or GroupInfo) accepted in one submission. A Welcome carrying the ratchet
# tree of a 128-member suite-1 group runs to ~100 kB, and X-Wing leaves are ~5x larger than X25519
# ones; 256 KiB matches the transport's request ceiling (control.MAX_REQUEST_SIZE), so nothing the
# transport lets through is refused here for size, and nothing larger is parsed.
MAX_SUBMISSION_SIZE = 256 * 1024

# Largest proposal. Members send only Update and Remove: an Update carries one leaf node (~0.5 KB at
# suite 1, ~3 KB with X-Wing keys and a few extensions); 16 KiB leaves ample room.
MAX_PROPOSAL_SIZE = 16 * 1024

# Identities a registrant may name as admitters besides itself. Admitting is a moderator's job: a
# handful per call; 16 bounds what a register-stream makes us store and check on every commit.
MAX_ADMITTERS = 16

# How long a member may go without any link to the relay (nothing heard on any of its links) before
# the admitter is told to remove it. Subscribers report every ~100 ms and control links long-poll
# every ~3 s, so 30 s is ten missed polls: a member that silent is gone (``kill -9``, power loss),
# and the publisher should stop counting it. Configurable (``realtime_av.member_link_timeout_secs``).
MEMBER_LINK_TIMEOUT_S = 30.0

# Accepted commits kept per stream for members catching up after a missed event. A member further
# behind than this re-joins (remove and re-add) instead of replaying history.
COMMIT_LOG_KEEP = 64


@dataclass(frozen=True)
class Accepted:
    """A commit was accepted (durably stored) and is being fanned out."""

    stream_id: int
    """Stream of the commit."""
    epoch: int
    """The stream's epoch now (the commit's epoch + 1)."""
    notifications: tuple[Notify, ...]
    """Events for members and joiners (none for a repeat)."""
    repeat: bool = False
    """The very same commit was accepted before (a retry after a lost reply): nothing changed, and
    the committer must merge its pending commit, not discard it."""


class DeliveryService:
    """Per-stream sequencing over a :class:`GroupStateStore` and the KeyPackage directory."""

    def __init__(
        self,
        store: GroupStateStore,
        *,
        directory: KeyPackageDirectory | None = None,
        load_group: GroupLoader = PublicGroup.from_bytes,
        group_from_info: GroupInfoLoader = PublicGroup.from_group_info,
        check_commit: CommitChecker = public_group_commit,
        check_proposal: ProposalChecker = public_group_proposal,
        max_pending_joins: int = MAX_PENDING_JOINS_PER_STREAM,
        member_link_timeout: float = MEMBER_LINK_TIMEOUT_S,
    ) -> None:
        self._store = store
        # The PublicGroup seams are parameters so tests can drive sequencing with a stand-in view.
        self._load_group = load_group
        self._group_from_info = group_from_info
        self._check_commit = check_commit
        self._check_proposal = check_proposal
        self.directory = directory
        """Set after construction when the directory needs :meth:`may_fetch` (they refer to each other)."""
        self._max_pending_joins = max_pending_joins
        self.member_link_timeout = member_link_timeout
        """Seconds without a link before a member is reported to the admitter (:meth:`check_links`)."""
        # (stream, identity) -> when the relay last heard from it / last told the admitter it is
        # gone, on the clock :meth:`check_links` is given. Only :meth:`check_links` touches them.
        self._last_heard: dict[tuple[int, bytes], float] = {}
        self._ghost_told: dict[tuple[int, bytes], float] = {}
        self._groups: dict[int, GroupView] = {}
        self._join_limiter = JoinRateLimiter()
        self.counters: Counter[str] = Counter()
        """Outcomes by name, for metrics."""

    # --- streams ---------------------------------------------------------------------------------

    def register_stream(
        self, stream_id: int, creator: bytes, group_info: bytes, admitters: Sequence[bytes] = ()
    ) -> GroupView:
        """Register ``stream_id`` with its creator's GroupInfo (trusted on first use).

        The GroupInfo's signer leaf must be ``creator`` (the registering link's identity): the relay
        cannot check the confirmation tag, so this first state is bound to whoever signed it.
        ``admitters`` are the identities the creator trusts, like itself, to change the roster.
        """
        if len(admitters) > MAX_ADMITTERS or any(
            not isinstance(a, bytes) or len(a) != IDENTITY_HASH_LEN for a in admitters
        ):
            raise BadAdmitters(f"admitters must be at most {MAX_ADMITTERS} identity hashes of {IDENTITY_HASH_LEN} bytes")
        named = tuple(dict.fromkeys(a for a in admitters if a != creator))
        if len(group_info) > MAX_SUBMISSION_SIZE:
            raise SubmissionTooLarge(f"GroupInfo of {len(group_info)} B exceeds {MAX_SUBMISSION_SIZE} B")
        try:
            msg = MLSMessage.from_bytes(group_info)
        except MLSError as e:
            raise BadGroupInfo(f"GroupInfo does not decode: {e}") from None
        if not isinstance(msg.body, GroupInfo):
            raise BadGroupInfo(f"{type(msg.body).__name__} is not a GroupInfo")
        try:
            group = self._group_from_info(group_info)
        except MLSError as e:
            raise BadGroupInfo(f"GroupInfo is not valid: {e}") from None
        if group.members.get(msg.body.signer) != creator:
            raise BadGroupInfo("GroupInfo signer is not the registering identity")
        record = StreamRecord(stream_id, msg.body.group_context.group_id, creator, group.epoch, group.to_bytes(), named)
        if not self._store.create_stream(record):
            raise StreamExists(f"stream {stream_id} or its group is already registered")
        self._groups[stream_id] = group
        self.counters["streams_registered"] += 1
        log.info("stream %d registered by %s at epoch %d", stream_id, creator.hex(), group.epoch)
        return group

    def group(self, stream_id: int) -> GroupView:
        """The stream's current public group state."""
        return self._view(self._record(stream_id))

    def _record(self, stream_id: int) -> StreamRecord:
        """The stream's stored record; :class:`UnknownStream` if it is not registered."""
        record = self._store.get_stream(stream_id)
        if record is None:
            raise UnknownStream(f"stream {stream_id} is not registered")
        return record

    def _member_view(self, stream_id: int, identity: bytes, refusal: str) -> tuple[StreamRecord, GroupView]:
        """The stream's record and group; :class:`NotAMember` (``refusal``) unless ``identity`` has a leaf."""
        record = self._record(stream_id)
        group = self._view(record)
        if identity not in group.members.values():
            raise NotAMember(refusal)
        return record, group

    def _view(self, record: StreamRecord) -> GroupView:
        cached = self._groups.get(record.stream_id)
        if cached is None or cached.epoch != record.epoch:
            cached = self._load_group(record.group_state)
            self._groups[record.stream_id] = cached
        return cached

    def stream_ids(self) -> list[int]:
        """Every registered stream, restored ones included."""
        return self._store.stream_ids()

    def is_member(self, stream_id: int, identity: bytes) -> bool:
        """Whether ``identity`` has a leaf in the stream's current tree (publish/subscribe authorisation)."""
        try:
            return identity in self.group(stream_id).members.values()
        except UnknownStream:
            return False

    def is_admitter(self, stream_id: int, identity: bytes) -> bool:
        """Whether ``identity`` may change the stream's roster: its creator, or one it named."""
        record = self._store.get_stream(stream_id)
        return record is not None and (identity == record.creator or identity in record.admitters)

    def roster_admitter(self, stream_id: int, excluding: bytes | None = None) -> bytes | None:
        """Who is told about join requests, ghosts and recoveries: the first of the creator and the
        admitters it named that is a member (and not ``excluding``); None when none is."""
        record = self._store.get_stream(stream_id)
        if record is None:
            return None
        members = set(self._view(record).members.values())
        for candidate in (record.creator, *record.admitters):
            if candidate in members and candidate != excluding:
                return candidate
        return None

    def admitter(self, stream_id: int) -> bytes | None:
        """Who is asked to commit pending proposals: the roster admitter while there is one, else the
        active member with the lowest leaf index (the committer-of-last-resort rule; proposals go
        by reference, which any member may commit)."""
        found = self.roster_admitter(stream_id)
        if found is not None:
            return found
        record = self._store.get_stream(stream_id)
        if record is None:
            return None
        members = self._view(record).members
        return members[min(members)] if members else None

    # --- join requests -------------------------------------------------------------------------------

    def request_join(
        self, stream_id: int, identity: bytes, now: float, key_packages: Sequence[bytes] | None = None
    ) -> list[Notify]:
        """Record ``identity``'s request to join and tell the admitting member.

        ``key_packages`` are the KeyPackageRefs whose private keys the joiner holds (a fresh process
        has only its own): the directory drops the identity's other unconsumed KeyPackages, so the
        admitter is handed one the joiner can open. Naming them also makes a rejoin: an identity
        whose leaf is still in the tree (its earlier process died) is re-added, and the admitter's
        commit removes the stale leaf in the same commit (Remove + Add, one leaf per identity).
        """
        group = self.group(stream_id)
        if identity in group.members.values() and key_packages is None:
            raise AlreadyMember("identity already has a leaf in this stream (name the KeyPackages held to rejoin)")
        self._take_join_token(identity, now)
        req = JoinRequest(stream_id, identity, now, now + JOIN_REQUEST_TTL_S)
        if not self._store.put_join_request(req, max_per_stream=self._max_pending_joins):
            self.counters[f"refused.{JoinQueueFull.code}"] += 1
            raise JoinQueueFull(f"stream {stream_id} has {self._max_pending_joins} pending join requests")
        self.counters["join_requests"] += 1
        if key_packages is not None and self.directory is not None:
            dropped = self.directory.retain(identity, key_packages)
            if dropped:
                log.info("stream %d: %s rejoins; %d of its older KeyPackages dropped", stream_id, identity.hex(), dropped)
        admitter = self.roster_admitter(stream_id, excluding=identity)
        return [Notify(admitter, JoinRequested(stream_id, identity))] if admitter else []

    def report_commit_failed(self, stream_id: int, reporter: bytes, epoch: int, now: float) -> list[Notify]:
        """A member could not process the accepted commit of ``epoch``: ask for its remove and re-add.

        Its stale leaf stays in the tree until the admitter's commit replaces it, so it is still a
        member here; a join request is recorded for it (through the same rate limit and bound as any
        other), which is what lets the admitter fetch the fresh KeyPackage it publishes.
        """
        record, _ = self._member_view(stream_id, reporter, "only members report failed commits")
        if not 0 <= epoch < record.epoch:
            raise FutureCommit(f"no commit of epoch {epoch} has been accepted (stream is at {record.epoch})")
        self._take_join_token(reporter, now)
        req = JoinRequest(stream_id, reporter, now, now + JOIN_REQUEST_TTL_S)
        if not self._store.put_join_request(req, max_per_stream=self._max_pending_joins):
            raise JoinQueueFull(f"stream {stream_id} has {self._max_pending_joins} pending join requests")
        self.counters["commit_failed_reports"] += 1
        log.info("stream %d: %s failed to process the commit of epoch %d", stream_id, reporter.hex(), epoch)
        # An admitter that is itself out of step is recovered by another admitter, if there is one.
        admitter = self.roster_admitter(stream_id, excluding=reporter)
        return [Notify(admitter, RecoveryRequested(stream_id, reporter, epoch))] if admitter else []

    def withdraw_join(self, stream_id: int, identity: bytes) -> bool:
        """The joiner gives up; its KeyPackages can no longer be fetched for this stream."""
        return self._store.delete_join_request(stream_id, identity)

    def join_requests(self, stream_id: int, requester: bytes, now: float) -> list[bytes]:
        """Identities waiting to join (members only: the roster of would-be joiners is not public)."""
        if not self.is_member(stream_id, requester):
            raise NotAMember("only members may list join requests")
        return [r.identity for r in self._store.join_requests(stream_id, now)]

    def may_fetch(self, requester: bytes, target: bytes, now: float) -> bool:
        """The directory's fetch rule: ``requester`` is a member of a stream ``target`` asked to join."""
        return any(self.is_member(r.stream_id, requester) for r in self._store.join_requests_by(target, now))

    def _take_join_token(self, identity: bytes, now: float) -> None:
        try:
            self._join_limiter.take(identity, now)
        except RateLimited:
            self.counters[f"refused.{RateLimited.code}"] += 1
            raise

    # --- commits -----------------------------------------------------------------------------------

    def submit_commit(
        self, stream_id: int, submitter: bytes, commit: bytes, welcome: bytes | None, now: float
    ) -> Accepted:
        """Sequence one commit (and the Welcome for its Adds) as one atomic submission.

        Returns once the commit, the new group state and the Welcome are durably stored; raises a
        :class:`DeliveryError` (or the directory's :class:`NotAdmissible`) otherwise, changing nothing.
        """
        try:
            return self._submit(stream_id, submitter, commit, welcome, now)
        except RelayError as e:
            self.counters[f"refused.{e.code}"] += 1
            log.info("commit for stream %d from %s refused (%s): %s", stream_id, submitter.hex(), e.code, e)
            raise

    def _submit(self, stream_id: int, submitter: bytes, commit: bytes, welcome: bytes | None, now: float) -> Accepted:
        size = len(commit) + len(welcome or b"")
        if size > MAX_SUBMISSION_SIZE:
            raise SubmissionTooLarge(f"commit and Welcome of {size} B exceed {MAX_SUBMISSION_SIZE} B")
        record, group = self._member_view(stream_id, submitter, "only members may commit")
        header = commit_header(commit)
        if header.group_id != record.group_id:
            raise InvalidCommit("commit is for another group")
        if header.epoch < record.epoch:
            winner = self._store.commits_since(stream_id, header.epoch)
            if winner and winner[0].epoch == header.epoch and winner[0].message == commit:
                if winner[0].committer != submitter:
                    raise SenderMismatch("a commit is confirmed only to the member that submitted it")
                self.counters["commit_repeats"] += 1
                return Accepted(stream_id, header.epoch + 1, (), repeat=True)
            raise StaleCommit(f"epoch {header.epoch} was already committed (stream is at {record.epoch})")
        if header.epoch > record.epoch:
            raise FutureCommit(f"epoch {header.epoch} is ahead of the stream ({record.epoch})")
        if group.members.get(header.sender_leaf) != submitter:
            raise SenderMismatch("commit sender leaf is not the submitting identity")
        try:
            effect = self._check_commit(group, commit, now)
        except PolicyRefusedError as e:
            raise ProposalNotAllowed(str(e)) from None
        except MLSError as e:
            raise InvalidCommit(str(e)) from None
        if effect.group_after.epoch != record.epoch + 1:
            raise InvalidCommit("commit did not advance the epoch by one")
        if effect.by_value and not self.is_admitter(stream_id, submitter):
            # Roster authority: only admitters add or remove by value. Anyone else commits only
            # what the relay already holds (a leaver's self-Remove, an Update) by reference.
            raise NotAnAdmitter("only the stream's admitters may commit proposals by value (Adds, Removes)")
        self._check_adds(record, group, effect, now)
        refs = [ref for ref, _ in effect.added]
        if effect.added:
            if welcome is None:
                raise WelcomeMismatch("commit adds members but no Welcome was submitted")
            new_members = welcome_refs(welcome)
            if len(new_members) != len(refs) or set(new_members) != set(refs):
                raise WelcomeMismatch("Welcome new_member refs are not exactly the commit's Adds")
        elif welcome is not None:
            raise WelcomeMismatch("Welcome submitted for a commit without Adds")

        welcomes = [
            PendingWelcome(stream_id, identity, record.epoch + 1, welcome or b"", now + WELCOME_TTL_S)
            for _, identity in effect.added
        ]
        outcome = self._store.accept_commit(
            stream_id,
            epoch=record.epoch,
            group_state=effect.group_after.to_bytes(),
            commit=CommitRecord(stream_id, record.epoch, submitter, commit, now),
            welcomes=welcomes,
            used_refs=refs,
        )
        if outcome is CommitOutcome.STALE_EPOCH:
            raise StaleCommit("another commit for this epoch was accepted first")
        if outcome is CommitOutcome.KEY_PACKAGE_USED:
            raise NotAdmissible("a one-time KeyPackage of this commit was already added")
        if outcome is CommitOutcome.UNKNOWN_STREAM:
            raise UnknownStream(f"stream {stream_id} is not registered")
        self._groups[stream_id] = effect.group_after
        readded = {identity for _, identity in effect.added}
        for gone in set(effect.removed) - readded:
            # A removed joiner's unfetched Welcome would only lead it into an epoch it is not in.
            self._store.delete_welcome(stream_id, gone)
        if record.epoch + 1 > COMMIT_LOG_KEEP:
            self._store.prune_commits(stream_id, record.epoch + 1 - COMMIT_LOG_KEEP)
        self.counters["commits_accepted"] += 1
        # Every member of the old epoch but the committer (it merges its own pending commit) gets
        # the commit, removed members included: it is how they learn they are out.
        recipients = sorted(set(group.members.values()) - {submitter})
        notes = [Notify(m, CommitAccepted(stream_id, record.epoch, commit)) for m in recipients]
        notes += [Notify(identity, WelcomeReady(stream_id, record.epoch + 1)) for _, identity in effect.added]
        log.info("stream %d: commit by %s accepted, epoch %d", stream_id, submitter.hex(), record.epoch + 1)
        return Accepted(stream_id, record.epoch + 1, tuple(notes))

    def _check_adds(self, record: StreamRecord, group: GroupView, effect: CommitEffect, now: float) -> None:
        staying = set(group.members.values()) - set(effect.removed)
        seen: set[bytes] = set()
        for ref, identity in effect.added:
            if identity in staying or identity in seen:
                raise DuplicateIdentity("an identity may hold one leaf; a rejoin is Remove + Add")
            seen.add(identity)
            if self._store.join_request(record.stream_id, identity, now) is None:
                raise NoJoinRequest("an Add needs a live join request of that identity on this stream")
            if self.directory is not None:
                self.directory.check_admissible(ref, identity, now)

    # --- proposals ---------------------------------------------------------------------------------

    def submit_proposal(self, stream_id: int, submitter: bytes, proposal: bytes, now: float) -> list[Notify]:
        """Keep a member's proposal of the current epoch and pass it to the other members."""
        return self._submit_proposal(stream_id, submitter, proposal, now)

    def _submit_proposal(self, stream_id: int, submitter: bytes, proposal: bytes, now: float) -> list[Notify]:
        if len(proposal) > MAX_PROPOSAL_SIZE:
            raise SubmissionTooLarge(f"proposal of {len(proposal)} B exceeds {MAX_PROPOSAL_SIZE} B")
        record, group = self._member_view(stream_id, submitter, "only members may propose")
        header, body = proposal_header(proposal)
        if header.group_id != record.group_id:
            raise InvalidCommit("proposal is for another group")
        if header.epoch < record.epoch:
            raise StaleCommit(f"epoch {header.epoch} is over (stream is at {record.epoch})")
        if header.epoch > record.epoch:
            raise FutureCommit(f"epoch {header.epoch} is ahead of the stream ({record.epoch})")
        if group.members.get(header.sender_leaf) != submitter:
            raise SenderMismatch("proposal sender leaf is not the submitting identity")
        if isinstance(body.body, Remove) and body.body.removed != header.sender_leaf:
            raise RemoveNotOwn("a member may propose only its own removal")
        try:
            cached = self._check_proposal(group, proposal, now)
        except MLSError as e:
            raise InvalidCommit(f"proposal is not valid: {e}") from None
        # The relay only needs a dedupe key; members compute the real ProposalRef themselves.
        key = hashlib.sha256(proposal).digest()
        if any(p.ref == key for p in self._store.proposals(stream_id, record.epoch)):
            return []  # a retry after a lost reply: already kept and fanned out
        kept = ProposalRecord(stream_id, record.epoch, key, submitter, proposal)
        # The group state with the proposal cached is stored with it: a commit naming it by
        # reference must still validate after a restart.
        if not self._store.add_proposal(kept, max_per_epoch=MAX_PROPOSALS_PER_EPOCH, group_state=cached.to_bytes()):
            if self._store.get_stream(stream_id).epoch != record.epoch:  # a commit ended the epoch meanwhile
                raise StaleCommit("the epoch ended while the proposal was submitted")
            raise TooManyProposals(f"the epoch holds {MAX_PROPOSALS_PER_EPOCH} proposals already")
        self._groups[stream_id] = cached
        self.counters["proposals"] += 1
        admitter = self.admitter(stream_id)
        if admitter == submitter:  # the admitter proposed (its own Update): the next member commits
            others = [group.members[i] for i in sorted(group.members) if group.members[i] != submitter]
            admitter = others[0] if others else None
        return [
            Notify(m, ProposalReceived(stream_id, record.epoch, proposal, commit_requested=m == admitter))
            for m in sorted(set(group.members.values()) - {submitter})
        ]

    def proposals(self, stream_id: int, requester: bytes) -> list[bytes]:
        """Proposals of the current epoch (for a committer, or a member that missed the events)."""
        record, _ = self._member_view(stream_id, requester, "only members may read proposals")
        return [p.message for p in self._store.proposals(stream_id, record.epoch)]

    def commits_since(self, stream_id: int, requester: bytes, epoch: int) -> list[CommitRecord]:
        """Accepted commits from ``epoch`` on, for a member catching up after missed events."""
        record, _ = self._member_view(stream_id, requester, "only members may read the commit log")
        if not 0 <= epoch <= record.epoch:
            raise SinceOutOfRange(f"since {epoch} is outside the stream's epochs 0..{record.epoch}")
        commits = self._store.commits_since(stream_id, epoch)
        if epoch < record.epoch and (not commits or commits[0].epoch != epoch):
            raise SinceOutOfRange(f"the commit of epoch {epoch} is no longer kept; rejoin instead")
        return commits

    def ratchet_tree(self, stream_id: int, requester: bytes, now: float) -> bytes:
        """The stream's current public tree, for a member or a joiner whose Welcome is waiting.

        A joiner checks it against the tree hash in its GroupInfo, so serving it needs no trust; it is
        still not public, because the tree lists every member's credential.
        """
        group = self.group(stream_id)
        if requester not in group.members.values() and self._store.welcome_for(stream_id, requester, now) is None:
            raise NotAMember("only members and joiners with a pending Welcome may read the tree")
        return group.ratchet_tree()

    # --- Welcomes ------------------------------------------------------------------------------------

    def fetch_welcome(self, stream_id: int, joiner: bytes, now: float) -> bytes:
        """The Welcome waiting for ``joiner`` (the identity of the asking link: nobody else's)."""
        w = self._store.welcome_for(stream_id, joiner, now)
        if w is None:
            raise NoWelcome("no Welcome waits for this identity in this stream")
        self.counters["welcomes_fetched"] += 1
        return w.message

    def ack_welcome(self, stream_id: int, joiner: bytes) -> bool:
        """The joiner processed its Welcome: drop it."""
        return self._store.delete_welcome(stream_id, joiner)

    # --- time ----------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Notify]:
        """Expire join requests and Welcomes; tell admitters about ghost leaves. Call every few seconds."""
        notes: list[Notify] = []
        for w in self._store.expired_welcomes(now):
            admitter = self.roster_admitter(w.stream_id)
            if admitter is not None and admitter != w.joiner:
                notes.append(Notify(admitter, WelcomeExpired(w.stream_id, w.joiner, w.epoch)))
        swept = self._store.sweep_welcomes(now)
        self._store.sweep_join_requests(now)
        if swept:
            self.counters["welcomes_expired"] += swept
        if self.directory is not None:
            self.directory.sweep(now)
        return notes

    def check_links(self, now: float, silence: Mapping[bytes, float]) -> list[Notify]:
        """Tell admitters about members the relay has not heard from for :attr:`member_link_timeout`.

        ``silence`` maps each identity with a link to the seconds since anything arrived on any of
        its links; an identity absent from it has no link. ``now`` is the caller's monotonic clock
        (this is about liveness, not persisted deadlines). A member first seen without a link gets
        the full time from then (a relay that just restarted waits for its members to reconnect).
        The admitter is told again after another timeout if the member is still in the tree.
        """
        notes: list[Notify] = []
        seen: set[tuple[int, bytes]] = set()
        for stream_id in self._store.stream_ids():
            try:
                members = set(self.group(stream_id).members.values())
            except UnknownStream:
                continue
            admitter = self.roster_admitter(stream_id)
            for member in members:
                key = (stream_id, member)
                seen.add(key)
                silent = silence.get(member)
                if silent is not None:
                    self._last_heard[key] = max(self._last_heard.get(key, now - silent), now - silent)
                last = self._last_heard.setdefault(key, now)
                if admitter is None or member == admitter or now - last < self.member_link_timeout:
                    continue
                told = self._ghost_told.get(key)
                if told is not None and now - told < self.member_link_timeout:
                    continue
                self._ghost_told[key] = now
                self.counters["members_unreachable"] += 1
                log.info("stream %d: no link from member %s for %.1f s", stream_id, member.hex(), now - last)
                notes.append(Notify(admitter, MemberUnreachable(stream_id, member, now - last)))
        for table in (self._last_heard, self._ghost_told):
            for key in [k for k in table if k not in seen]:
                del table[key]
        return notes

    def members_of(self, stream_id: int) -> Sequence[bytes]:
        """Identities with a leaf in the stream, in leaf order."""
        members = self.group(stream_id).members
        return [members[i] for i in sorted(members)]
