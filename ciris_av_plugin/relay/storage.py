"""The storage interfaces the relay core defines; adapters (``store/``) implement them.

The directory and the delivery service are sans-I/O: they decide, and a store remembers. Every
operation that must be atomic to be correct is one method here, so an adapter can make it one
transaction (``BEGIN IMMEDIATE`` in SQLite) and the core never has to reason about interleavings:

* :meth:`DirectoryStore.put_key_package` checks duplicates, spent refs and quotas and inserts, in one
  step, so two racing publishes cannot both squeeze under a quota;
* :meth:`DirectoryStore.take_one_time` hands a one-time KeyPackage to exactly one fetcher, however
  many fetch at once, and remembers its ref as spent for good;
* :meth:`GroupStateStore.accept_commit` advances a stream's epoch only from the epoch the commit was
  checked against (so the first commit of an epoch wins even across threads), stores the Welcomes and
  marks the added one-time KeyPackages used, all or nothing.

A method returns when its change is durable: "accepted" goes to a client only after that. Times
are plain numbers passed in by the caller, so stores never read clocks either. Every stored time is
wall-clock Unix seconds: KeyPackage lifetimes are wall-clock by definition (RFC 9420 §7.2), and a
deadline that must survive a restart cannot be on a monotonic clock, which restarts with the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from ..errors import RelayError
from ..protocol import codes

__all__ = [
    "StorageError",
    "KeyPackageEntry",
    "PutOutcome",
    "DirectoryStore",
    "StreamRecord",
    "CommitRecord",
    "ProposalRecord",
    "PendingWelcome",
    "JoinRequest",
    "CommitOutcome",
    "GroupStateStore",
]


class StorageError(RelayError):
    """The store could not do what was asked (disk full, corrupt file, newer schema).

    Raised by adapters; the transport answers it as an internal error. A failed operation has
    changed nothing (its transaction was rolled back).
    """

    code = codes.ERR_STORAGE


# --- KeyPackage directory -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPackageEntry:
    """One KeyPackage held by the directory, as verified at publish time."""

    ref: bytes
    """KeyPackageRef (RFC 9420 §5.2): the directory's key and what an Add names."""
    identity: bytes
    """Owner: the 16-byte RNS identity hash, equal to the credential identity and the envelope signer."""
    suite: int
    """MLS cipher suite id of the KeyPackage."""
    last_resort: bool
    """From the envelope: reusable, handed out only when no one-time KeyPackage is left."""
    not_after: int
    """End of the KeyPackage lifetime (Unix seconds); after it (plus skew) the entry is swept."""
    key_package: bytes
    """The MLSMessage-framed KeyPackage, exactly as published."""
    envelope: bytes
    """The signed publish envelope, exactly as received, so fetchers can check the binding themselves."""
    published_ts: int
    """The envelope's ``ts``: orders last-resort replacements so an old envelope cannot win again."""


class PutOutcome(Enum):
    """What :meth:`DirectoryStore.put_key_package` did; only ``STORED``/``DUPLICATE`` mean success."""

    STORED = "stored"
    """Inserted (for a last-resort entry: inserted, replacing an older one of the same suite)."""
    DUPLICATE = "duplicate"
    """The same ref is already stored and not yet handed out: nothing changed (a client retry)."""
    SPENT = "spent"
    """A ref once handed out or used as one-time: refused, never accepted twice."""
    STALE_LAST_RESORT = "stale_last_resort"
    """A last-resort entry whose envelope is not newer than the one stored: refused (replay)."""
    QUOTA = "quota"
    """The owner already holds its one-time quota: refused."""
    FULL = "full"
    """The directory holds its global maximum of entries: refused."""


@runtime_checkable
class DirectoryStore(Protocol):
    """KeyPackage entries by ref and owner, plus the refs that may never come back."""

    def put_key_package(self, entry: KeyPackageEntry, *, max_one_time: int, max_total: int) -> PutOutcome:
        """Store ``entry`` unless a rule refuses it; check and insert atomically.

        Refused if its ref is spent (once handed out as one-time, a ref cannot come back, not even
        re-marked as last resort). One-time: refused if the owner already has ``max_one_time`` live
        one-time entries. Last resort: one per (owner, suite); a newer ``published_ts`` replaces the
        stored one, an older or equal one is refused. ``max_total`` caps all live entries.
        """
        ...

    def take_one_time(self, identity: bytes, suite: int, now: float, *, taken_by: bytes) -> KeyPackageEntry | None:
        """Hand out one live one-time KeyPackage of ``identity`` for ``suite``, or ``None``.

        Exactly once: the returned entry is marked taken and its ref spent in the same transaction,
        so a concurrent call never returns the same entry. Entries with ``not_after <= now`` are
        not handed out. The entry stays stored (taken) so the Add that uses it stays admissible.
        """
        ...

    def last_resort(self, identity: bytes, suite: int, now: float) -> KeyPackageEntry | None:
        """The live last-resort KeyPackage of ``identity`` for ``suite``, if any (not consumed)."""
        ...

    def get_key_package(self, ref: bytes) -> KeyPackageEntry | None:
        """The stored entry for ``ref`` (available or taken; not yet used by a commit), if any."""
        ...

    def is_spent(self, ref: bytes) -> bool:
        """Whether ``ref`` is a one-time ref already handed out or used."""
        ...

    def is_used(self, ref: bytes) -> bool:
        """Whether ``ref`` is a one-time ref already added by an accepted commit."""
        ...

    def count_one_time(self, identity: bytes) -> int:
        """Live (not yet taken) one-time entries of ``identity``, all suites."""
        ...

    def retain_key_packages(self, identity: bytes, keep: Sequence[bytes]) -> int:
        """Delete every stored entry of ``identity`` (one-time, taken or not, and last resort) whose
        ref is not in ``keep``, marking the refs spent so their envelopes cannot be published again;
        return how many. Entries already used by an accepted commit are gone anyway."""
        ...

    def count_total(self) -> int:
        """All stored entries (every owner, every state): what ``max_total`` bounds."""
        ...

    def sweep_expired(self, cutoff: float) -> int:
        """Delete entries and spent refs whose ``not_after`` is before ``cutoff``; return how many entries.

        Spent refs are forgotten only at the same cutoff, when a replay of them would fail the
        lifetime check anyway.
        """
        ...


# --- per-stream group state (delivery service) ----------------------------------------------------


@dataclass(frozen=True)
class StreamRecord:
    """A registered stream's public state as the delivery service last persisted it."""

    stream_id: int
    """The stream id (u64, as in the forwarding header)."""
    group_id: bytes
    """The MLS group id of the stream's group (unique: one group per stream)."""
    creator: bytes
    """RNS identity hash of the registering GroupInfo signer (trusted on first use)."""
    epoch: int
    """Current epoch of the public group state."""
    group_state: bytes
    """Serialised public group state (opaque to the store: the PublicGroup owns its format)."""
    admitters: tuple[bytes, ...] = ()
    """Identities the creator named at registration that may, like it, change the roster (commit
    Adds and Removes by value)."""


@dataclass(frozen=True)
class CommitRecord:
    """One accepted commit, kept so lagging members can catch up in order."""

    stream_id: int
    """Stream the commit belongs to."""
    epoch: int
    """Epoch the commit was made in (it moves the stream to ``epoch + 1``)."""
    committer: bytes
    """RNS identity hash of the submitting link."""
    message: bytes
    """The MLSMessage (PublicMessage commit) exactly as fanned out."""
    accepted_at: float
    """Wall-clock time of acceptance, for retention."""


@dataclass(frozen=True)
class PendingWelcome:
    """A Welcome waiting for its joiner to fetch it."""

    stream_id: int
    """Stream the joiner was added to."""
    joiner: bytes
    """RNS identity hash of the joiner: the only identity it is handed to."""
    epoch: int
    """Epoch the Welcome admits into (the commit's epoch + 1)."""
    message: bytes
    """The Welcome MLSMessage."""
    expires_at: float
    """Wall-clock time after which it is dropped unfetched (and the joiner's leaf becomes a ghost)."""


@dataclass(frozen=True)
class JoinRequest:
    """An identity's standing request to join a stream; it is what lets members fetch its KeyPackages."""

    stream_id: int
    """Stream asked for."""
    identity: bytes
    """RNS identity hash of the requester."""
    requested_at: float
    """Wall-clock time of the (latest) request."""
    expires_at: float
    """Wall-clock time after which the request lapses."""


@dataclass(frozen=True)
class ProposalRecord:
    """A PublicMessage proposal of the current epoch (a leaver's self-Remove, say), kept for the committer."""

    stream_id: int
    """Stream it was sent in."""
    epoch: int
    """Epoch it was made in: it dies with that epoch."""
    ref: bytes
    """ProposalRef (§5.2), how a commit names it; unique per stream."""
    sender: bytes
    """RNS identity hash of the submitting member."""
    message: bytes
    """The proposal MLSMessage, as fanned out."""


class CommitOutcome(Enum):
    """What :meth:`GroupStateStore.accept_commit` did; only ``ACCEPTED`` changed anything."""

    ACCEPTED = "accepted"
    UNKNOWN_STREAM = "unknown_stream"
    STALE_EPOCH = "stale_epoch"
    """The stream is no longer at the epoch the commit was checked against: another commit won."""
    KEY_PACKAGE_USED = "key_package_used"
    """One of the added one-time KeyPackages was already used by an accepted commit."""


@runtime_checkable
class GroupStateStore(Protocol):
    """Per-stream public group state, its commit log, pending Welcomes and join requests."""

    def create_stream(self, record: StreamRecord) -> bool:
        """Register a new stream; ``False`` (and no change) if its stream id or group id already exists."""
        ...

    def get_stream(self, stream_id: int) -> StreamRecord | None:
        """The stream's current record, if registered."""
        ...

    def stream_ids(self) -> list[int]:
        """Every registered stream (for restoring the delivery service after a restart)."""
        ...

    def accept_commit(
        self,
        stream_id: int,
        *,
        epoch: int,
        group_state: bytes,
        commit: CommitRecord,
        welcomes: Sequence[PendingWelcome],
        used_refs: Sequence[bytes],
    ) -> CommitOutcome:
        """Atomically move ``stream_id`` from ``epoch`` to ``epoch + 1``.

        In one transaction: check the stored epoch is ``epoch``; store ``group_state``; append
        ``commit``; store ``welcomes`` (replacing an older pending Welcome of the same joiner);
        mark ``used_refs`` used (one-time ones can then never be added again; their entries leave
        the directory; last-resort refs are left alone); drop the joiners' join requests; drop the
        proposals of ``epoch`` (committed or not, they do not outlive their epoch, §12.4).
        """
        ...

    def commits_since(self, stream_id: int, epoch: int) -> list[CommitRecord]:
        """Accepted commits made in ``epoch`` or later, oldest first."""
        ...

    def prune_commits(self, stream_id: int, before_epoch: int) -> int:
        """Forget commits made before ``before_epoch``; return how many."""
        ...

    def welcome_for(self, stream_id: int, joiner: bytes, now: float) -> PendingWelcome | None:
        """The unexpired pending Welcome of ``joiner`` in ``stream_id``, if any."""
        ...

    def delete_welcome(self, stream_id: int, joiner: bytes) -> bool:
        """Drop a Welcome (fetched and acknowledged, or superseded); whether one existed."""
        ...

    def expired_welcomes(self, now: float) -> list[PendingWelcome]:
        """Welcomes whose ``expires_at`` has passed (their joiners are ghost candidates)."""
        ...

    def sweep_welcomes(self, now: float) -> int:
        """Delete expired Welcomes; return how many."""
        ...

    def put_join_request(self, request: JoinRequest, *, max_per_stream: int) -> bool:
        """Record (or refresh) a join request; ``False`` if the stream already holds
        ``max_per_stream`` other live requests. Refreshing an existing one always succeeds."""
        ...

    def join_request(self, stream_id: int, identity: bytes, now: float) -> JoinRequest | None:
        """The live join request of ``identity`` for ``stream_id``, if any."""
        ...

    def join_requests(self, stream_id: int, now: float) -> list[JoinRequest]:
        """Live join requests of a stream, oldest first."""
        ...

    def join_requests_by(self, identity: bytes, now: float) -> list[JoinRequest]:
        """Live join requests of one identity, every stream (the KeyPackage fetch rule's lookup)."""
        ...

    def delete_join_request(self, stream_id: int, identity: bytes) -> bool:
        """Withdraw a join request; whether one existed."""
        ...

    def sweep_join_requests(self, now: float) -> int:
        """Delete lapsed join requests; return how many."""
        ...

    def add_proposal(self, proposal: ProposalRecord, *, max_per_epoch: int, group_state: bytes | None = None) -> bool:
        """Keep a proposal of the stream's current epoch; ``False`` (no change) if the stream is not at
        ``proposal.epoch``, the ref is already kept, or ``max_per_epoch`` are kept already.

        ``group_state``, if given, replaces the stream's state in the same transaction (the public
        group with the proposal cached, so a commit naming it by reference validates after a restart).
        """
        ...

    def proposals(self, stream_id: int, epoch: int) -> list[ProposalRecord]:
        """Kept proposals of ``epoch``, in arrival order."""
        ...
