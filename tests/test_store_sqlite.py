"""The SQLite adapter: schema, durability across reopen, exactly-once take under threads.

The contract tests run against both :class:`SQLiteStore` and the in-memory store, so the fake the
unit tests use behaves like the real thing.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_memory_store import MemoryStore

from ciris_av_plugin.relay.storage import (
    CommitOutcome,
    CommitRecord,
    DirectoryStore,
    GroupStateStore,
    JoinRequest,
    KeyPackageEntry,
    PendingWelcome,
    ProposalRecord,
    PutOutcome,
    StorageError,
    StreamRecord,
)
from ciris_av_plugin.store import SCHEMA_VERSION, SQLiteStore

ALICE = b"A" * 16
BOB = b"B" * 16
MEMBER = b"M" * 16
SUITE = 1
T0 = 1_800_000_000


def kp(n: int, identity: bytes = ALICE, *, last_resort: bool = False, not_after: int = T0 + 3600,
       suite: int = SUITE, ts: int = T0) -> KeyPackageEntry:
    return KeyPackageEntry(
        ref=n.to_bytes(4, "big") * 8,
        identity=identity,
        suite=suite,
        last_resort=last_resort,
        not_after=not_after,
        key_package=b"kp-%d" % n,
        envelope=b"env-%d" % n,
        published_ts=ts,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SQLiteStore]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = SQLiteStore(tmp_path / "relay.db")
        yield s
        s.close()


def put(store: DirectoryStore, entry: KeyPackageEntry, max_one_time: int = 8, max_total: int = 1000) -> PutOutcome:
    return store.put_key_package(entry, max_one_time=max_one_time, max_total=max_total)


# --- contract: directory ------------------------------------------------------------------------


def test_both_stores_satisfy_the_protocols(store: MemoryStore | SQLiteStore) -> None:
    assert isinstance(store, DirectoryStore)
    assert isinstance(store, GroupStateStore)


def test_put_get_and_duplicate(store: DirectoryStore) -> None:
    assert put(store, kp(1)) is PutOutcome.STORED
    assert store.get_key_package(kp(1).ref) == kp(1)
    assert put(store, kp(1)) is PutOutcome.DUPLICATE
    assert store.count_one_time(ALICE) == 1
    assert store.count_total() == 1


def test_take_one_time_hands_out_soonest_expiring_then_nothing(store: DirectoryStore) -> None:
    put(store, kp(1, not_after=T0 + 900))
    put(store, kp(2, not_after=T0 + 600))
    put(store, kp(3, suite=2))
    first = store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER)
    second = store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER)
    assert (first, second) == (kp(2, not_after=T0 + 600), kp(1, not_after=T0 + 900))
    assert store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER) is None
    assert store.is_spent(first.ref) and not store.is_used(first.ref)
    # taken entries stay so the Add naming them stays admissible, but no longer count towards quota
    assert store.get_key_package(first.ref) == first
    assert store.count_one_time(ALICE) == 1  # only the suite-2 one


def test_expired_one_time_is_not_handed_out(store: DirectoryStore) -> None:
    put(store, kp(1, not_after=T0))
    assert store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER) is None
    assert store.take_one_time(ALICE, SUITE, T0 - 1, taken_by=MEMBER) == kp(1, not_after=T0)


def test_spent_one_time_ref_is_never_stored_again(store: DirectoryStore) -> None:
    put(store, kp(1))
    store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER)
    assert put(store, kp(1)) is PutOutcome.SPENT  # still stored (taken), but a replay now
    assert put(store, kp(1, last_resort=True, ts=T0 + 1)) is PutOutcome.SPENT  # not even as last resort
    store.sweep_expired(T0)  # not yet expired: nothing goes
    assert store.get_key_package(kp(1).ref) is not None


def test_quota_counts_only_live_one_time_entries(store: DirectoryStore) -> None:
    for n in range(3):
        assert put(store, kp(n), max_one_time=3) is PutOutcome.STORED
    assert put(store, kp(3), max_one_time=3) is PutOutcome.QUOTA
    assert put(store, kp(3, BOB), max_one_time=3) is PutOutcome.STORED  # per identity
    assert put(store, kp(4, last_resort=True), max_one_time=3) is PutOutcome.STORED  # last resort apart
    store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER)
    assert put(store, kp(5), max_one_time=3) is PutOutcome.STORED


def test_global_cap(store: DirectoryStore) -> None:
    assert put(store, kp(1), max_total=2) is PutOutcome.STORED
    assert put(store, kp(2, BOB), max_total=2) is PutOutcome.STORED
    assert put(store, kp(3, BOB), max_total=2) is PutOutcome.FULL
    assert store.count_total() == 2


def test_last_resort_one_per_identity_and_suite_newer_replaces(store: DirectoryStore) -> None:
    assert put(store, kp(1, last_resort=True, ts=T0)) is PutOutcome.STORED
    assert store.last_resort(ALICE, SUITE, T0) == kp(1, last_resort=True, ts=T0)
    assert put(store, kp(2, last_resort=True, ts=T0)) is PutOutcome.STALE_LAST_RESORT
    assert put(store, kp(2, last_resort=True, ts=T0 - 5)) is PutOutcome.STALE_LAST_RESORT
    assert put(store, kp(2, last_resort=True, ts=T0 + 5)) is PutOutcome.STORED
    assert store.last_resort(ALICE, SUITE, T0) == kp(2, last_resort=True, ts=T0 + 5)
    assert store.get_key_package(kp(1).ref) is None
    # replacing at the global cap is allowed: the count does not grow
    assert put(store, kp(3, last_resort=True, ts=T0 + 9), max_total=1) is PutOutcome.STORED
    assert store.count_total() == 1
    # last resort is never handed out by take_one_time and never consumed by reads
    assert store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER) is None
    assert store.last_resort(ALICE, SUITE, T0) is not None
    assert store.last_resort(ALICE, SUITE, T0 + 3600) is None  # expired


def test_sweep_forgets_expired_entries_and_spent_refs(store: DirectoryStore) -> None:
    put(store, kp(1, not_after=T0 + 10))
    put(store, kp(2, not_after=T0 + 100))
    store.take_one_time(ALICE, SUITE, T0, taken_by=MEMBER)
    assert store.sweep_expired(T0 + 50) == 1
    assert store.get_key_package(kp(1).ref) is None and not store.is_spent(kp(1).ref)
    assert store.get_key_package(kp(2).ref) is not None


# --- contract: group state --------------------------------------------------------------------------

S1 = 2**64 - 2  # stream ids are u64: the top of the range must survive SQLite's signed integers
G1 = b"group-1"


def commit(epoch: int, who: bytes = MEMBER, msg: bytes = b"commit") -> CommitRecord:
    return CommitRecord(S1, epoch, who, msg + b"%d" % epoch, float(T0 + epoch))


def test_stream_create_once(store: GroupStateStore) -> None:
    rec = StreamRecord(S1, G1, ALICE, 0, b"state0")
    assert store.create_stream(rec)
    assert not store.create_stream(StreamRecord(S1, b"other", BOB, 5, b"evil"))
    assert not store.create_stream(StreamRecord(7, G1, BOB, 5, b"evil"))  # one stream per group
    assert store.get_stream(S1) == rec
    assert store.stream_ids() == [S1]
    assert store.get_stream(1) is None


def test_accept_commit_first_wins_and_is_all_or_nothing(store: MemoryStore | SQLiteStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"state0"))
    put(store, kp(1, BOB))
    taken = store.take_one_time(BOB, SUITE, T0, taken_by=ALICE)
    welcome = PendingWelcome(S1, BOB, 1, b"welcome", T0 + 60)
    store.put_join_request(JoinRequest(S1, BOB, T0, T0 + 60), max_per_stream=4)
    out = store.accept_commit(S1, epoch=0, group_state=b"state1", commit=commit(0), welcomes=[welcome],
                              used_refs=[taken.ref])
    assert out is CommitOutcome.ACCEPTED
    assert store.get_stream(S1) == StreamRecord(S1, G1, ALICE, 1, b"state1")
    assert store.welcome_for(S1, BOB, T0) == welcome
    assert store.join_request(S1, BOB, T0) is None  # satisfied
    assert store.is_used(taken.ref) and store.get_key_package(taken.ref) is None
    # the loser of the epoch changes nothing
    out = store.accept_commit(S1, epoch=0, group_state=b"loser", commit=commit(0, BOB, b"other"),
                              welcomes=[PendingWelcome(S1, b"C" * 16, 1, b"w2", T0 + 60)], used_refs=[])
    assert out is CommitOutcome.STALE_EPOCH
    assert store.get_stream(S1).group_state == b"state1"
    assert store.welcome_for(S1, b"C" * 16, T0) is None
    # a used one-time ref cannot be added again, and the refusal changes nothing
    out = store.accept_commit(S1, epoch=1, group_state=b"state2", commit=commit(1), welcomes=[],
                              used_refs=[taken.ref])
    assert out is CommitOutcome.KEY_PACKAGE_USED
    assert store.get_stream(S1).epoch == 1
    assert [c.epoch for c in store.commits_since(S1, 0)] == [0]
    assert store.accept_commit(12345, epoch=0, group_state=b"", commit=commit(0), welcomes=[],
                               used_refs=[]) is CommitOutcome.UNKNOWN_STREAM


def test_last_resort_used_by_commit_stays_available(store: MemoryStore | SQLiteStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s"))
    put(store, kp(9, BOB, last_resort=True))
    ref = kp(9).ref
    for epoch in range(2):
        assert store.accept_commit(S1, epoch=epoch, group_state=b"s", commit=commit(epoch), welcomes=[],
                                   used_refs=[ref]) is CommitOutcome.ACCEPTED
    assert store.last_resort(BOB, SUITE, T0) is not None and not store.is_used(ref)


def test_commit_log_and_prune(store: GroupStateStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s"))
    for e in range(4):
        store.accept_commit(S1, epoch=e, group_state=b"s%d" % e, commit=commit(e), welcomes=[], used_refs=[])
    assert [c.epoch for c in store.commits_since(S1, 2)] == [2, 3]
    assert store.commits_since(S1, 0)[1] == commit(1)
    assert store.prune_commits(S1, 2) == 2
    assert [c.epoch for c in store.commits_since(S1, 0)] == [2, 3]


def test_welcomes_expire_and_are_swept(store: GroupStateStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s"))
    w_bob = PendingWelcome(S1, BOB, 1, b"wb", T0 + 10)
    w_c = PendingWelcome(S1, b"C" * 16, 1, b"wc", T0 + 100)
    store.accept_commit(S1, epoch=0, group_state=b"s", commit=commit(0), welcomes=[w_bob, w_c], used_refs=[])
    assert store.welcome_for(S1, BOB, T0 + 10) is None  # expired at its deadline
    assert store.expired_welcomes(T0 + 10) == [w_bob]
    assert store.sweep_welcomes(T0 + 10) == 1
    assert store.welcome_for(S1, b"C" * 16, T0 + 10) == w_c
    assert store.delete_welcome(S1, b"C" * 16) and not store.delete_welcome(S1, b"C" * 16)


def test_join_requests_bounded_per_stream_refresh_always_allowed(store: GroupStateStore) -> None:
    assert store.put_join_request(JoinRequest(S1, ALICE, T0, T0 + 30), max_per_stream=2)
    assert store.put_join_request(JoinRequest(S1, BOB, T0 + 1, T0 + 30), max_per_stream=2)
    assert not store.put_join_request(JoinRequest(S1, b"C" * 16, T0 + 2, T0 + 30), max_per_stream=2)
    assert store.put_join_request(JoinRequest(S1, ALICE, T0 + 3, T0 + 60), max_per_stream=2)
    assert [r.identity for r in store.join_requests(S1, T0 + 4)] == [BOB, ALICE]
    # lapsed requests do not hold a slot
    assert store.put_join_request(JoinRequest(S1, b"C" * 16, T0 + 31, T0 + 90), max_per_stream=2)
    assert store.join_request(S1, BOB, T0 + 31) is None
    assert store.sweep_join_requests(T0 + 31) == 1
    assert [r.stream_id for r in store.join_requests_by(b"C" * 16, T0 + 31)] == [S1]
    store.put_join_request(JoinRequest(5, b"C" * 16, T0 + 31, T0 + 90), max_per_stream=2)
    assert [r.stream_id for r in store.join_requests_by(b"C" * 16, T0 + 32)] == [5, S1]
    assert store.join_requests_by(b"C" * 16, T0 + 90) == []
    assert store.delete_join_request(S1, ALICE) and not store.delete_join_request(S1, ALICE)


def test_proposals_live_for_their_epoch_only(store: GroupStateStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s"))
    p1 = ProposalRecord(S1, 0, b"ref-1", BOB, b"remove bob")
    p2 = ProposalRecord(S1, 0, b"ref-2", ALICE, b"update alice")
    assert store.add_proposal(p1, max_per_epoch=2)
    assert not store.add_proposal(p1, max_per_epoch=2)  # same ref once
    assert store.add_proposal(p2, max_per_epoch=2)
    assert not store.add_proposal(ProposalRecord(S1, 0, b"ref-3", BOB, b"x"), max_per_epoch=2)  # bounded
    assert not store.add_proposal(ProposalRecord(S1, 1, b"ref-4", BOB, b"x"), max_per_epoch=2)  # future epoch
    assert not store.add_proposal(ProposalRecord(99, 0, b"ref-5", BOB, b"x"), max_per_epoch=2)  # no stream
    assert store.proposals(S1, 0) == [p1, p2]
    # a losing commit leaves them; the winning commit of the epoch ends them
    store.accept_commit(S1, epoch=1, group_state=b"s", commit=commit(1), welcomes=[], used_refs=[])
    assert store.proposals(S1, 0) == [p1, p2]
    store.accept_commit(S1, epoch=0, group_state=b"s1", commit=commit(0), welcomes=[], used_refs=[])
    assert store.proposals(S1, 0) == []
    p3 = ProposalRecord(S1, 1, b"ref-1", BOB, b"remove bob again")  # refs may recur in a later epoch
    assert store.add_proposal(p3, max_per_epoch=2)
    assert store.proposals(S1, 1) == [p3]


# --- SQLite specifics ---------------------------------------------------------------------------


def test_schema_version_wal_and_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "relay.db"
    with SQLiteStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION >= 1
        s.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s"))
        wal = Path(f"{path}-wal")
        assert wal.exists() and stat.S_IMODE(os.stat(wal).st_mode) == 0o600  # SQLite copies the db's mode
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"key_packages", "spent_refs", "streams", "commits", "welcomes", "join_requests", "proposals"} <= tables
    raw.close()


def test_writer_runs_with_synchronous_full(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "r.db") as s:
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    SQLiteStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(StorageError):
        SQLiteStore(path)


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """Files written by schema 1 (no proposals table) open, keep their data and gain the new table."""
    from ciris_av_plugin.store import sqlite as adapter

    path = tmp_path / "r.db"
    raw = sqlite3.connect(path)
    raw.executescript(adapter._MIGRATIONS[0])
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO streams VALUES (?, ?, ?, ?, ?)", (S1.to_bytes(8, "big"), G1, ALICE, 3, b"state"))
    raw.commit()
    raw.close()
    with SQLiteStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 4
        assert s.get_stream(S1) == StreamRecord(S1, G1, ALICE, 3, b"state")
        assert s.add_proposal(ProposalRecord(S1, 3, b"r", BOB, b"m"), max_per_epoch=4)


def test_everything_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    s = SQLiteStore(path)
    put(s, kp(1, BOB))
    put(s, kp(2, BOB))
    put(s, kp(3, BOB, last_resort=True))
    taken = s.take_one_time(BOB, SUITE, T0, taken_by=ALICE)
    s.create_stream(StreamRecord(S1, G1, ALICE, 0, b"state0"))
    s.put_join_request(JoinRequest(S1, BOB, T0, T0 + 60), max_per_stream=4)
    s.accept_commit(S1, epoch=0, group_state=b"state1", commit=commit(0),
                    welcomes=[PendingWelcome(S1, BOB, 1, b"w", T0 + 60)], used_refs=[taken.ref])
    s.put_join_request(JoinRequest(S1, b"C" * 16, T0, T0 + 60), max_per_stream=4)
    s.close()

    with SQLiteStore(path) as again:
        assert again.get_stream(S1) == StreamRecord(S1, G1, ALICE, 1, b"state1")
        assert again.commits_since(S1, 0) == [commit(0)]
        assert again.welcome_for(S1, BOB, T0) == PendingWelcome(S1, BOB, 1, b"w", T0 + 60)
        assert [r.identity for r in again.join_requests(S1, T0)] == [b"C" * 16]
        assert again.is_used(taken.ref)
        assert taken == kp(1, BOB)  # same expiry: lowest ref first
        assert put(again, kp(1, BOB)) is PutOutcome.SPENT  # used by the commit, gone, never back
        assert again.last_resort(BOB, SUITE, T0) == kp(3, BOB, last_resort=True)
        left = again.take_one_time(BOB, SUITE, T0, taken_by=ALICE)
        assert left is not None and left.ref != taken.ref
        assert again.take_one_time(BOB, SUITE, T0, taken_by=ALICE) is None


def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    """A constraint failure half-way through a method rolls the whole method back."""
    with SQLiteStore(tmp_path / "r.db") as s:
        s.create_stream(StreamRecord(S1, G1, ALICE, 0, b"state0"))
        s.accept_commit(S1, epoch=0, group_state=b"state1", commit=commit(0), welcomes=[], used_refs=[])
        # force epoch back so the commit-log insert collides with the existing (S1, 0) row
        s._db.execute("UPDATE streams SET epoch = 0")
        with pytest.raises(StorageError):
            s.accept_commit(S1, epoch=0, group_state=b"bad", commit=commit(0), welcomes=[
                PendingWelcome(S1, BOB, 1, b"w", T0 + 60)], used_refs=[])
        assert s.get_stream(S1).group_state == b"state1"
        assert s.welcome_for(S1, BOB, T0) is None
        # and the store is still usable
        assert put(s, kp(1)) is PutOutcome.STORED


# --- exactly once under concurrency ---------------------------------------------------------------

N_THREADS = 16
N_KEY_PACKAGES = 40


def _race_takes(stores: list[SQLiteStore | MemoryStore]) -> list[bytes]:
    got: list[bytes] = []
    got_lock = threading.Lock()
    barrier = threading.Barrier(N_THREADS)
    errors: list[BaseException] = []

    def fetcher(i: int) -> None:
        store = stores[i % len(stores)]
        try:
            barrier.wait()
            while (e := store.take_one_time(BOB, SUITE, T0, taken_by=MEMBER)) is not None:
                with got_lock:
                    got.append(e.ref)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=fetcher, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    return got


def test_exactly_once_take_under_threads_one_connection(store: MemoryStore | SQLiteStore) -> None:
    for n in range(N_KEY_PACKAGES):
        assert put(store, kp(n, BOB), max_one_time=N_KEY_PACKAGES) is PutOutcome.STORED
    got = _race_takes([store])
    assert len(got) == N_KEY_PACKAGES
    assert len(set(got)) == N_KEY_PACKAGES


def test_exactly_once_take_across_two_connections_to_one_file(tmp_path: Path) -> None:
    """Two stores on one file (two processes, say) still hand each one-time KeyPackage out once:
    BEGIN IMMEDIATE, not only the Python lock, is what guarantees it."""
    path = tmp_path / "r.db"
    a, b = SQLiteStore(path), SQLiteStore(path)
    try:
        for n in range(N_KEY_PACKAGES):
            put(a, kp(n, BOB), max_one_time=N_KEY_PACKAGES)
        got = _race_takes([a, b])
        assert sorted(got) == sorted(kp(n).ref for n in range(N_KEY_PACKAGES))
    finally:
        a.close()
        b.close()


def test_racing_commits_for_one_epoch_exactly_one_wins(store: MemoryStore | SQLiteStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s0"))
    barrier = threading.Barrier(N_THREADS)
    outcomes: list[CommitOutcome] = []

    def committer(i: int) -> None:
        barrier.wait()
        outcomes.append(store.accept_commit(S1, epoch=0, group_state=b"s-%d" % i,
                                            commit=commit(0, msg=b"c-%d-" % i), welcomes=[], used_refs=[]))

    threads = [threading.Thread(target=committer, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(CommitOutcome.ACCEPTED) == 1
    assert outcomes.count(CommitOutcome.STALE_EPOCH) == N_THREADS - 1
    rec = store.get_stream(S1)
    (c,) = store.commits_since(S1, 0)
    assert rec.epoch == 1
    # the stored state and the logged commit come from the same winner
    assert c.message.split(b"-")[1] == rec.group_state.split(b"-")[1]


# Epochs the writer commits before it is killed, and the bound on waiting for each: a commit takes
# milliseconds, so 30 s only runs out when the writer is stuck.
KILLED_WRITER_EPOCHS = 6
KILLED_WRITER_WAIT_S = 30.0
_WRITER = r"""
import sys
from ciris_av_plugin.store import SQLiteStore
from ciris_av_plugin.relay.storage import CommitRecord, PendingWelcome, StreamRecord
s = SQLiteStore(sys.argv[1])
s.create_stream(StreamRecord(1, b"g", b"A" * 16, 0, b"state-0"))
e = 0
while True:
    s.accept_commit(1, epoch=e, group_state=b"state-%d" % (e + 1), commit=CommitRecord(1, e, b"A" * 16, b"c-%d" % e, 0.0),
                    welcomes=[PendingWelcome(1, b"J%015d" % e, e + 1, b"w-%d" % e, 1e12)], used_refs=[])
    e += 1
    print(e, flush=True)
"""


def test_a_killed_writer_leaves_every_commit_whole(tmp_path: Path) -> None:
    """SIGKILL a process in the middle of committing epochs: on reopen the epoch, the state, the
    commit log and the Welcomes agree exactly (each accept_commit is one transaction)."""
    import queue
    import signal
    import subprocess
    import sys

    path = tmp_path / "relay.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        # Kill once several epochs are committed (the writer prints each), while it commits the next.
        while int(lines.get(timeout=KILLED_WRITER_WAIT_S)) < KILLED_WRITER_EPOCHS:
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with SQLiteStore(path) as s:
        rec = s.get_stream(1)
        assert rec.epoch >= KILLED_WRITER_EPOCHS, "the writer should have committed several epochs before the kill"
        assert rec.group_state == b"state-%d" % rec.epoch
        log = s.commits_since(1, 0)
        assert [c.epoch for c in log] == list(range(rec.epoch))
        assert all(c.message == b"c-%d" % c.epoch for c in log)
        for e in range(rec.epoch):
            assert s.welcome_for(1, b"J%015d" % e, 0) is not None
        assert s.welcome_for(1, b"J%015d" % rec.epoch, 0) is None
        # and the store carries on from there
        assert s.accept_commit(1, epoch=rec.epoch, group_state=b"next", commit=commit(rec.epoch),
                               welcomes=[], used_refs=[]) is CommitOutcome.ACCEPTED


def test_add_proposal_stores_the_group_state_with_it(store: GroupStateStore) -> None:
    store.create_stream(StreamRecord(S1, G1, ALICE, 0, b"s0"))
    assert store.add_proposal(ProposalRecord(S1, 0, b"r1", BOB, b"m"), max_per_epoch=4, group_state=b"s0+p1")
    assert store.get_stream(S1) == StreamRecord(S1, G1, ALICE, 0, b"s0+p1")
    # a refused proposal leaves the state alone
    assert not store.add_proposal(ProposalRecord(S1, 0, b"r1", BOB, b"m"), max_per_epoch=4, group_state=b"evil")
    assert store.get_stream(S1).group_state == b"s0+p1"
