"""In-memory :class:`DirectoryStore` and :class:`GroupStateStore`: the reference the SQLite store is tested against.

It implements exactly the contract of ``relay/storage.py`` (the SQLite adapter is tested against the same
behaviour), including atomicity: every method runs under one lock, so concurrent fetches of a
one-time KeyPackage hand it out once here too. Nothing survives the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ciris_av_plugin.relay.storage import (
    CommitOutcome,
    CommitRecord,
    JoinRequest,
    KeyPackageEntry,
    PendingWelcome,
    ProposalRecord,
    PutOutcome,
    StreamRecord,
)

__all__ = ["MemoryStore"]


@dataclass
class _Slot:
    """A stored KeyPackage and who it was handed to (one-time only)."""

    entry: KeyPackageEntry
    taken_by: bytes | None = None


def _sweep(table: dict, now: float) -> int:
    """Drop the entries of ``table`` whose ``expires_at`` has come; how many (caller holds the lock)."""
    dead = [k for k, v in table.items() if v.expires_at <= now]
    for k in dead:
        del table[k]
    return len(dead)


class MemoryStore:
    """Both relay stores in dictionaries, one lock around every operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kps: dict[bytes, _Slot] = {}
        # ref -> (not_after, used by an accepted commit)
        self._spent: dict[bytes, tuple[int, bool]] = {}
        self._streams: dict[int, StreamRecord] = {}
        self._commits: dict[int, dict[int, CommitRecord]] = {}
        self._welcomes: dict[tuple[int, bytes], PendingWelcome] = {}
        self._joins: dict[tuple[int, bytes], JoinRequest] = {}
        self._proposals: dict[int, list[ProposalRecord]] = {}

    # --- DirectoryStore ---------------------------------------------------------------------

    def put_key_package(self, entry: KeyPackageEntry, *, max_one_time: int, max_total: int) -> PutOutcome:
        with self._lock:
            if entry.ref in self._spent:
                return PutOutcome.SPENT
            if entry.ref in self._kps:
                return PutOutcome.DUPLICATE
            replaced: bytes | None = None
            if entry.last_resort:
                old = self._last_resort_locked(entry.identity, entry.suite)
                if old is not None:
                    if entry.published_ts <= old.published_ts:
                        return PutOutcome.STALE_LAST_RESORT
                    replaced = old.ref
            elif self._count_one_time_locked(entry.identity) >= max_one_time:
                return PutOutcome.QUOTA
            if replaced is None and len(self._kps) >= max_total:
                return PutOutcome.FULL
            if replaced is not None:
                del self._kps[replaced]
            self._kps[entry.ref] = _Slot(entry)
            return PutOutcome.STORED

    def take_one_time(self, identity: bytes, suite: int, now: float, *, taken_by: bytes) -> KeyPackageEntry | None:
        with self._lock:
            live = [
                s
                for s in self._kps.values()
                if s.entry.identity == identity
                and s.entry.suite == suite
                and not s.entry.last_resort
                and s.taken_by is None
                and s.entry.not_after > now
            ]
            if not live:
                return None
            slot = min(live, key=lambda s: (s.entry.not_after, s.entry.ref))
            slot.taken_by = taken_by
            self._spent[slot.entry.ref] = (slot.entry.not_after, False)
            return slot.entry

    def last_resort(self, identity: bytes, suite: int, now: float) -> KeyPackageEntry | None:
        with self._lock:
            entry = self._last_resort_locked(identity, suite)
            return entry if entry is not None and entry.not_after > now else None

    def get_key_package(self, ref: bytes) -> KeyPackageEntry | None:
        with self._lock:
            slot = self._kps.get(ref)
            return slot.entry if slot else None

    def is_spent(self, ref: bytes) -> bool:
        with self._lock:
            return ref in self._spent

    def is_used(self, ref: bytes) -> bool:
        with self._lock:
            return self._spent.get(ref, (0, False))[1]

    def count_one_time(self, identity: bytes) -> int:
        with self._lock:
            return self._count_one_time_locked(identity)

    def retain_key_packages(self, identity: bytes, keep: Sequence[bytes]) -> int:
        with self._lock:
            wanted = set(keep)
            dead = [ref for ref, s in self._kps.items() if s.entry.identity == identity and ref not in wanted]
            for ref in dead:
                self._spent.setdefault(ref, (self._kps.pop(ref).entry.not_after, False))
            return len(dead)

    def count_total(self) -> int:
        with self._lock:
            return len(self._kps)

    def sweep_expired(self, cutoff: float) -> int:
        with self._lock:
            dead = [ref for ref, s in self._kps.items() if s.entry.not_after < cutoff]
            for ref in dead:
                del self._kps[ref]
            for ref in [r for r, (na, _) in self._spent.items() if na < cutoff]:
                del self._spent[ref]
            return len(dead)

    def _last_resort_locked(self, identity: bytes, suite: int) -> KeyPackageEntry | None:
        for s in self._kps.values():
            if s.entry.last_resort and s.entry.identity == identity and s.entry.suite == suite:
                return s.entry
        return None

    def _count_one_time_locked(self, identity: bytes) -> int:
        return sum(
            1
            for s in self._kps.values()
            if s.entry.identity == identity and not s.entry.last_resort and s.taken_by is None
        )

    # --- GroupStateStore --------------------------------------------------------------------

    def create_stream(self, record: StreamRecord) -> bool:
        with self._lock:
            if record.stream_id in self._streams or any(
                r.group_id == record.group_id for r in self._streams.values()
            ):
                return False
            self._streams[record.stream_id] = record
            self._commits[record.stream_id] = {}
            return True

    def get_stream(self, stream_id: int) -> StreamRecord | None:
        with self._lock:
            return self._streams.get(stream_id)

    def stream_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._streams)

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
        with self._lock:
            record = self._streams.get(stream_id)
            if record is None:
                return CommitOutcome.UNKNOWN_STREAM
            if record.epoch != epoch:
                return CommitOutcome.STALE_EPOCH
            if any(self._spent.get(ref, (0, False))[1] for ref in used_refs):
                return CommitOutcome.KEY_PACKAGE_USED
            # Nothing below can fail: the change is all-or-nothing.
            self._streams[stream_id] = replace(record, epoch=epoch + 1, group_state=group_state)
            self._proposals[stream_id] = [p for p in self._proposals.get(stream_id, []) if p.epoch > epoch]
            self._commits[stream_id][epoch] = commit
            for w in welcomes:
                self._welcomes[(stream_id, w.joiner)] = w
                self._joins.pop((stream_id, w.joiner), None)
            for ref in used_refs:
                slot = self._kps.get(ref)
                if slot is not None and slot.entry.last_resort:
                    continue
                not_after = slot.entry.not_after if slot else self._spent.get(ref, (0, False))[0]
                self._spent[ref] = (not_after, True)
                self._kps.pop(ref, None)
            return CommitOutcome.ACCEPTED

    def commits_since(self, stream_id: int, epoch: int) -> list[CommitRecord]:
        with self._lock:
            log = self._commits.get(stream_id, {})
            return [log[e] for e in sorted(log) if e >= epoch]

    def prune_commits(self, stream_id: int, before_epoch: int) -> int:
        with self._lock:
            log = self._commits.get(stream_id, {})
            old = [e for e in log if e < before_epoch]
            for e in old:
                del log[e]
            return len(old)

    def welcome_for(self, stream_id: int, joiner: bytes, now: float) -> PendingWelcome | None:
        with self._lock:
            w = self._welcomes.get((stream_id, joiner))
            return w if w is not None and w.expires_at > now else None

    def delete_welcome(self, stream_id: int, joiner: bytes) -> bool:
        with self._lock:
            return self._welcomes.pop((stream_id, joiner), None) is not None

    def expired_welcomes(self, now: float) -> list[PendingWelcome]:
        with self._lock:
            return sorted(
                (w for w in self._welcomes.values() if w.expires_at <= now),
                key=lambda w: (w.expires_at, w.stream_id, w.joiner),
            )

    def sweep_welcomes(self, now: float) -> int:
        with self._lock:
            return _sweep(self._welcomes, now)

    def put_join_request(self, request: JoinRequest, *, max_per_stream: int) -> bool:
        with self._lock:
            key = (request.stream_id, request.identity)
            if key not in self._joins:
                live = sum(
                    1
                    for (sid, _), r in self._joins.items()
                    if sid == request.stream_id and r.expires_at > request.requested_at
                )
                if live >= max_per_stream:
                    return False
            self._joins[key] = request
            return True

    def join_request(self, stream_id: int, identity: bytes, now: float) -> JoinRequest | None:
        with self._lock:
            r = self._joins.get((stream_id, identity))
            return r if r is not None and r.expires_at > now else None

    def join_requests(self, stream_id: int, now: float) -> list[JoinRequest]:
        with self._lock:
            return sorted(
                (r for (sid, _), r in self._joins.items() if sid == stream_id and r.expires_at > now),
                key=lambda r: (r.requested_at, r.identity),
            )

    def join_requests_by(self, identity: bytes, now: float) -> list[JoinRequest]:
        with self._lock:
            return sorted(
                (r for (_, ident), r in self._joins.items() if ident == identity and r.expires_at > now),
                key=lambda r: (r.stream_id, r.requested_at),
            )

    def delete_join_request(self, stream_id: int, identity: bytes) -> bool:
        with self._lock:
            return self._joins.pop((stream_id, identity), None) is not None

    def sweep_join_requests(self, now: float) -> int:
        with self._lock:
            return _sweep(self._joins, now)

    def add_proposal(self, proposal: ProposalRecord, *, max_per_epoch: int, group_state: bytes | None = None) -> bool:
        with self._lock:
            record = self._streams.get(proposal.stream_id)
            if record is None or record.epoch != proposal.epoch:
                return False
            kept = self._proposals.setdefault(proposal.stream_id, [])
            if any(p.ref == proposal.ref for p in kept):
                return False
            if sum(1 for p in kept if p.epoch == proposal.epoch) >= max_per_epoch:
                return False
            kept.append(proposal)
            if group_state is not None:
                self._streams[proposal.stream_id] = replace(record, group_state=group_state)
            return True

    def proposals(self, stream_id: int, epoch: int) -> list[ProposalRecord]:
        with self._lock:
            return [p for p in self._proposals.get(stream_id, []) if p.epoch == epoch]
