"""SQLite adapter for the relay's :class:`DirectoryStore` and :class:`GroupStateStore`.

Why these choices:

* **One writer connection behind a lock.** SQLite allows one writer at a time anyway; funnelling every
  statement of this process through one connection and one :class:`threading.Lock` keeps the
  transport's request threads from tripping over ``SQLITE_BUSY`` and makes each method one critical
  section.
* **``BEGIN IMMEDIATE`` for every write.** It takes the database write lock at the start of the
  transaction, so a read-then-write (take a one-time KeyPackage, check a quota, compare an epoch) cannot
  interleave with another writer, even one in another process opening the same file.
* **WAL with ``synchronous=FULL``.** WAL lets readers run while a write commits; FULL makes SQLite
  fsync the log at every commit, so when a method returns the change survives power loss, and the
  relay answers "accepted" only after that.
* **``PRAGMA user_version`` as the schema version**, with ordered migrations. A file written by a newer
  version of this package is refused rather than misread.

Every method is one transaction: on any error it is rolled back and :class:`StorageError` raised, so a
refusal or a failure leaves what was stored intact.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..relay.storage import (
    CommitOutcome,
    CommitRecord,
    JoinRequest,
    KeyPackageEntry,
    PendingWelcome,
    ProposalRecord,
    PutOutcome,
    StorageError,
    StreamRecord,
)

log = logging.getLogger(__name__)

__all__ = ["SQLiteStore", "SCHEMA_VERSION"]

# How long a statement waits for another process's write lock before failing. Our own threads never
# wait here (they queue on the Python lock); 5 s covers a checkpoint or a slow fsync on an SD card.
BUSY_TIMEOUT_S = 5.0

# Owner-only: the file lists who published KeyPackages and who is joining which stream.
DB_FILE_MODE = 0o600

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the directory and the per-stream public group state.
    """
    CREATE TABLE key_packages (
        ref          BLOB PRIMARY KEY,
        identity     BLOB NOT NULL,
        suite        INTEGER NOT NULL,
        last_resort  INTEGER NOT NULL CHECK (last_resort IN (0, 1)),
        not_after    INTEGER NOT NULL,
        key_package  BLOB NOT NULL,
        envelope     BLOB NOT NULL,
        published_ts INTEGER NOT NULL,
        taken_by     BLOB
    );
    CREATE INDEX key_packages_owner ON key_packages (identity, suite, last_resort, not_after);
    CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (identity, suite) WHERE last_resort = 1;
    CREATE INDEX key_packages_expiry ON key_packages (not_after);
    CREATE TABLE spent_refs (
        ref       BLOB PRIMARY KEY,
        not_after INTEGER NOT NULL,
        used      INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1))
    );
    CREATE INDEX spent_refs_expiry ON spent_refs (not_after);
    CREATE TABLE streams (
        stream_id   BLOB PRIMARY KEY,
        group_id    BLOB NOT NULL UNIQUE,
        creator     BLOB NOT NULL,
        epoch       INTEGER NOT NULL,
        group_state BLOB NOT NULL
    );
    CREATE TABLE commits (
        stream_id   BLOB NOT NULL REFERENCES streams (stream_id),
        epoch       INTEGER NOT NULL,
        committer   BLOB NOT NULL,
        message     BLOB NOT NULL,
        accepted_at REAL NOT NULL,
        PRIMARY KEY (stream_id, epoch)
    );
    CREATE TABLE welcomes (
        stream_id  BLOB NOT NULL REFERENCES streams (stream_id),
        joiner     BLOB NOT NULL,
        epoch      INTEGER NOT NULL,
        message    BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (stream_id, joiner)
    );
    CREATE TABLE join_requests (
        stream_id    BLOB NOT NULL,
        identity     BLOB NOT NULL,
        requested_at REAL NOT NULL,
        expires_at   REAL NOT NULL,
        PRIMARY KEY (stream_id, identity)
    );
    """,
    # 1 -> 2: proposals of the current epoch (a leaver's self-Remove waits here for a committer).
    """
    CREATE TABLE proposals (
        stream_id BLOB NOT NULL REFERENCES streams (stream_id),
        epoch     INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        ref       BLOB NOT NULL,
        sender    BLOB NOT NULL,
        message   BLOB NOT NULL,
        PRIMARY KEY (stream_id, seq),
        UNIQUE (stream_id, ref)
    );
    """,
    # 2 -> 3: find an identity's join requests across streams (every KeyPackage fetch asks).
    """
    CREATE INDEX join_requests_identity ON join_requests (identity, expires_at);
    """,
    # 3 -> 4: the identities a stream's creator names as admitters (16-byte hashes, concatenated).
    """
    ALTER TABLE streams ADD COLUMN admitters BLOB NOT NULL DEFAULT x''
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)

# RNS identity hashes (the packed ``streams.admitters`` column is a run of them).
_IDENTITY_LEN = 16

_KP_COLUMNS = "ref, identity, suite, last_resort, not_after, key_package, envelope, published_ts"


def _sid(stream_id: int) -> bytes:
    """A u64 stream id as 8 big-endian bytes: SQLite integers are signed, and blobs sort like the number."""
    if not 0 <= stream_id < 1 << 64:
        raise ValueError(f"stream id {stream_id} is not a u64")
    return stream_id.to_bytes(8, "big")


def _uid(blob: bytes) -> int:
    return int.from_bytes(blob, "big")


def _kp(row: tuple) -> KeyPackageEntry:
    return KeyPackageEntry(
        ref=bytes(row[0]),
        identity=bytes(row[1]),
        suite=row[2],
        last_resort=bool(row[3]),
        not_after=row[4],
        key_package=bytes(row[5]),
        envelope=bytes(row[6]),
        published_ts=row[7],
    )


class SQLiteStore:
    """Both relay stores in one SQLite file (``":memory:"`` for a throwaway database)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        if self._path != ":memory:":
            p = Path(self._path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists():
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY, DB_FILE_MODE))
        try:
            self._db = sqlite3.connect(
                self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if self._path != ":memory:" and mode.lower() != "wal":
                raise StorageError(f"{self._path}: could not switch to WAL (journal_mode={mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as e:
            raise StorageError(f"{self._path}: {e}") from e

    # --- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the store is unusable afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The ``user_version`` of the open file."""
        with self._read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed durably on success, rolled back on error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StorageError(f"{self._path}: cannot begin: {e}") from e
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:  # the failure may already have ended the transaction
                    log.debug("rollback after failure also failed", exc_info=True)
                if isinstance(e, sqlite3.Error):
                    raise StorageError(f"{self._path}: {e}") from e
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as e:
                raise StorageError(f"{self._path}: {e}") from e

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self._path}: schema version {version} is newer than this code ({SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._write() as db:
                for statement in _MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")
            log.info("%s: schema migrated to version %d", self._path, target)

    # --- DirectoryStore ---------------------------------------------------------------------

    def put_key_package(self, entry: KeyPackageEntry, *, max_one_time: int, max_total: int) -> PutOutcome:
        with self._write() as db:
            if db.execute("SELECT 1 FROM spent_refs WHERE ref = ?", (entry.ref,)).fetchone():
                return PutOutcome.SPENT
            if db.execute("SELECT 1 FROM key_packages WHERE ref = ?", (entry.ref,)).fetchone():
                return PutOutcome.DUPLICATE
            replaced: bytes | None = None
            if entry.last_resort:
                old = db.execute(
                    "SELECT ref, published_ts FROM key_packages WHERE identity = ? AND suite = ? AND last_resort = 1",
                    (entry.identity, entry.suite),
                ).fetchone()
                if old is not None:
                    if entry.published_ts <= old[1]:
                        return PutOutcome.STALE_LAST_RESORT
                    replaced = bytes(old[0])
            else:
                (n,) = db.execute(
                    "SELECT count(*) FROM key_packages WHERE identity = ? AND last_resort = 0 AND taken_by IS NULL",
                    (entry.identity,),
                ).fetchone()
                if n >= max_one_time:
                    return PutOutcome.QUOTA
            if replaced is None:
                (total,) = db.execute("SELECT count(*) FROM key_packages").fetchone()
                if total >= max_total:
                    return PutOutcome.FULL
            else:
                db.execute("DELETE FROM key_packages WHERE ref = ?", (replaced,))
            db.execute(
                f"INSERT INTO key_packages ({_KP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.ref,
                    entry.identity,
                    entry.suite,
                    int(entry.last_resort),
                    entry.not_after,
                    entry.key_package,
                    entry.envelope,
                    entry.published_ts,
                ),
            )
            return PutOutcome.STORED

    def take_one_time(self, identity: bytes, suite: int, now: float, *, taken_by: bytes) -> KeyPackageEntry | None:
        with self._write() as db:
            row = db.execute(
                f"SELECT {_KP_COLUMNS} FROM key_packages"
                " WHERE identity = ? AND suite = ? AND last_resort = 0 AND taken_by IS NULL AND not_after > ?"
                " ORDER BY not_after, ref LIMIT 1",
                (identity, suite, now),
            ).fetchone()
            if row is None:
                return None
            entry = _kp(row)
            cur = db.execute(
                "UPDATE key_packages SET taken_by = ? WHERE ref = ? AND taken_by IS NULL", (taken_by, entry.ref)
            )
            if cur.rowcount != 1:  # impossible under BEGIN IMMEDIATE; refuse rather than hand out twice
                raise StorageError(f"{self._path}: one-time KeyPackage changed under a write lock")
            db.execute(
                "INSERT OR IGNORE INTO spent_refs (ref, not_after, used) VALUES (?, ?, 0)",
                (entry.ref, entry.not_after),
            )
            return entry

    def last_resort(self, identity: bytes, suite: int, now: float) -> KeyPackageEntry | None:
        with self._read() as db:
            row = db.execute(
                f"SELECT {_KP_COLUMNS} FROM key_packages"
                " WHERE identity = ? AND suite = ? AND last_resort = 1 AND not_after > ?",
                (identity, suite, now),
            ).fetchone()
            return _kp(row) if row else None

    def get_key_package(self, ref: bytes) -> KeyPackageEntry | None:
        with self._read() as db:
            row = db.execute(f"SELECT {_KP_COLUMNS} FROM key_packages WHERE ref = ?", (ref,)).fetchone()
            return _kp(row) if row else None

    def is_spent(self, ref: bytes) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM spent_refs WHERE ref = ?", (ref,)).fetchone() is not None

    def is_used(self, ref: bytes) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM spent_refs WHERE ref = ? AND used = 1", (ref,)).fetchone() is not None

    def count_one_time(self, identity: bytes) -> int:
        with self._read() as db:
            return db.execute(
                "SELECT count(*) FROM key_packages WHERE identity = ? AND last_resort = 0 AND taken_by IS NULL",
                (identity,),
            ).fetchone()[0]

    def retain_key_packages(self, identity: bytes, keep: Sequence[bytes]) -> int:
        wanted = set(keep)
        with self._write() as db:
            rows = db.execute("SELECT ref, not_after FROM key_packages WHERE identity = ?", (identity,)).fetchall()
            dead = [(bytes(ref), not_after) for ref, not_after in rows if bytes(ref) not in wanted]
            for ref, not_after in dead:
                db.execute("DELETE FROM key_packages WHERE ref = ?", (ref,))
                db.execute("INSERT OR IGNORE INTO spent_refs (ref, not_after, used) VALUES (?, ?, 0)", (ref, not_after))
            return len(dead)

    def count_total(self) -> int:
        with self._read() as db:
            return db.execute("SELECT count(*) FROM key_packages").fetchone()[0]

    def sweep_expired(self, cutoff: float) -> int:
        with self._write() as db:
            n = db.execute("DELETE FROM key_packages WHERE not_after < ?", (cutoff,)).rowcount
            db.execute("DELETE FROM spent_refs WHERE not_after < ?", (cutoff,))
            return n

    # --- GroupStateStore --------------------------------------------------------------------

    def create_stream(self, record: StreamRecord) -> bool:
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO streams (stream_id, group_id, creator, epoch, group_state, admitters)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (_sid(record.stream_id), record.group_id, record.creator, record.epoch, record.group_state,
                 b"".join(record.admitters)),
            )
            return cur.rowcount == 1

    def get_stream(self, stream_id: int) -> StreamRecord | None:
        with self._read() as db:
            row = db.execute(
                "SELECT stream_id, group_id, creator, epoch, group_state, admitters FROM streams WHERE stream_id = ?",
                (_sid(stream_id),),
            ).fetchone()
            if row is None:
                return None
            packed = bytes(row[5])
            admitters = tuple(packed[i:i + _IDENTITY_LEN] for i in range(0, len(packed), _IDENTITY_LEN))
            return StreamRecord(_uid(row[0]), bytes(row[1]), bytes(row[2]), row[3], bytes(row[4]), admitters)

    def stream_ids(self) -> list[int]:
        with self._read() as db:
            return [_uid(r[0]) for r in db.execute("SELECT stream_id FROM streams ORDER BY stream_id")]

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
        with self._write() as db:
            row = db.execute("SELECT epoch FROM streams WHERE stream_id = ?", (_sid(stream_id),)).fetchone()
            if row is None:
                return CommitOutcome.UNKNOWN_STREAM
            if row[0] != epoch:
                return CommitOutcome.STALE_EPOCH
            for ref in used_refs:
                if db.execute("SELECT 1 FROM spent_refs WHERE ref = ? AND used = 1", (ref,)).fetchone():
                    return CommitOutcome.KEY_PACKAGE_USED
            db.execute(
                "UPDATE streams SET epoch = ?, group_state = ? WHERE stream_id = ?",
                (epoch + 1, group_state, _sid(stream_id)),
            )
            db.execute("DELETE FROM proposals WHERE stream_id = ? AND epoch <= ?", (_sid(stream_id), epoch))
            db.execute(
                "INSERT INTO commits (stream_id, epoch, committer, message, accepted_at) VALUES (?, ?, ?, ?, ?)",
                (_sid(stream_id), epoch, commit.committer, commit.message, commit.accepted_at),
            )
            for w in welcomes:
                db.execute(
                    "INSERT OR REPLACE INTO welcomes (stream_id, joiner, epoch, message, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (_sid(stream_id), w.joiner, w.epoch, w.message, w.expires_at),
                )
                db.execute("DELETE FROM join_requests WHERE stream_id = ? AND identity = ?", (_sid(stream_id), w.joiner))
            for ref in used_refs:
                kp = db.execute("SELECT last_resort, not_after FROM key_packages WHERE ref = ?", (ref,)).fetchone()
                if kp is not None and kp[0]:
                    continue
                if kp is not None:
                    db.execute(
                        "INSERT INTO spent_refs (ref, not_after, used) VALUES (?, ?, 1)"
                        " ON CONFLICT (ref) DO UPDATE SET used = 1",
                        (ref, kp[1]),
                    )
                    db.execute("DELETE FROM key_packages WHERE ref = ?", (ref,))
                else:
                    db.execute(
                        "INSERT INTO spent_refs (ref, not_after, used) VALUES (?, 0, 1)"
                        " ON CONFLICT (ref) DO UPDATE SET used = 1",
                        (ref,),
                    )
            return CommitOutcome.ACCEPTED

    def commits_since(self, stream_id: int, epoch: int) -> list[CommitRecord]:
        with self._read() as db:
            return [
                CommitRecord(_uid(r[0]), r[1], bytes(r[2]), bytes(r[3]), r[4])
                for r in db.execute(
                    "SELECT stream_id, epoch, committer, message, accepted_at FROM commits"
                    " WHERE stream_id = ? AND epoch >= ? ORDER BY epoch",
                    (_sid(stream_id), epoch),
                )
            ]

    def prune_commits(self, stream_id: int, before_epoch: int) -> int:
        with self._write() as db:
            return db.execute(
                "DELETE FROM commits WHERE stream_id = ? AND epoch < ?", (_sid(stream_id), before_epoch)
            ).rowcount

    def welcome_for(self, stream_id: int, joiner: bytes, now: float) -> PendingWelcome | None:
        with self._read() as db:
            row = db.execute(
                "SELECT stream_id, joiner, epoch, message, expires_at FROM welcomes"
                " WHERE stream_id = ? AND joiner = ? AND expires_at > ?",
                (_sid(stream_id), joiner, now),
            ).fetchone()
            return PendingWelcome(_uid(row[0]), bytes(row[1]), row[2], bytes(row[3]), row[4]) if row else None

    def delete_welcome(self, stream_id: int, joiner: bytes) -> bool:
        with self._write() as db:
            return (
                db.execute("DELETE FROM welcomes WHERE stream_id = ? AND joiner = ?", (_sid(stream_id), joiner)).rowcount
                == 1
            )

    def expired_welcomes(self, now: float) -> list[PendingWelcome]:
        with self._read() as db:
            return [
                PendingWelcome(_uid(r[0]), bytes(r[1]), r[2], bytes(r[3]), r[4])
                for r in db.execute(
                    "SELECT stream_id, joiner, epoch, message, expires_at FROM welcomes"
                    " WHERE expires_at <= ? ORDER BY expires_at, stream_id, joiner",
                    (now,),
                )
            ]

    def sweep_welcomes(self, now: float) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM welcomes WHERE expires_at <= ?", (now,)).rowcount

    def put_join_request(self, request: JoinRequest, *, max_per_stream: int) -> bool:
        with self._write() as db:
            exists = db.execute(
                "SELECT 1 FROM join_requests WHERE stream_id = ? AND identity = ?",
                (_sid(request.stream_id), request.identity),
            ).fetchone()
            if not exists:
                (live,) = db.execute(
                    "SELECT count(*) FROM join_requests WHERE stream_id = ? AND expires_at > ?",
                    (_sid(request.stream_id), request.requested_at),
                ).fetchone()
                if live >= max_per_stream:
                    return False
            db.execute(
                "INSERT OR REPLACE INTO join_requests (stream_id, identity, requested_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (_sid(request.stream_id), request.identity, request.requested_at, request.expires_at),
            )
            return True

    def join_request(self, stream_id: int, identity: bytes, now: float) -> JoinRequest | None:
        with self._read() as db:
            row = db.execute(
                "SELECT stream_id, identity, requested_at, expires_at FROM join_requests"
                " WHERE stream_id = ? AND identity = ? AND expires_at > ?",
                (_sid(stream_id), identity, now),
            ).fetchone()
            return JoinRequest(_uid(row[0]), bytes(row[1]), row[2], row[3]) if row else None

    def join_requests(self, stream_id: int, now: float) -> list[JoinRequest]:
        with self._read() as db:
            return [
                JoinRequest(_uid(r[0]), bytes(r[1]), r[2], r[3])
                for r in db.execute(
                    "SELECT stream_id, identity, requested_at, expires_at FROM join_requests"
                    " WHERE stream_id = ? AND expires_at > ? ORDER BY requested_at, identity",
                    (_sid(stream_id), now),
                )
            ]

    def join_requests_by(self, identity: bytes, now: float) -> list[JoinRequest]:
        with self._read() as db:
            return [
                JoinRequest(_uid(r[0]), bytes(r[1]), r[2], r[3])
                for r in db.execute(
                    "SELECT stream_id, identity, requested_at, expires_at FROM join_requests"
                    " WHERE identity = ? AND expires_at > ? ORDER BY stream_id, requested_at",
                    (identity, now),
                )
            ]

    def delete_join_request(self, stream_id: int, identity: bytes) -> bool:
        with self._write() as db:
            return (
                db.execute(
                    "DELETE FROM join_requests WHERE stream_id = ? AND identity = ?", (_sid(stream_id), identity)
                ).rowcount
                == 1
            )

    def sweep_join_requests(self, now: float) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM join_requests WHERE expires_at <= ?", (now,)).rowcount

    def add_proposal(self, proposal: ProposalRecord, *, max_per_epoch: int, group_state: bytes | None = None) -> bool:
        sid = _sid(proposal.stream_id)
        with self._write() as db:
            row = db.execute("SELECT epoch FROM streams WHERE stream_id = ?", (sid,)).fetchone()
            if row is None or row[0] != proposal.epoch:
                return False
            if db.execute("SELECT 1 FROM proposals WHERE stream_id = ? AND ref = ?", (sid, proposal.ref)).fetchone():
                return False
            (n,) = db.execute(
                "SELECT count(*) FROM proposals WHERE stream_id = ? AND epoch = ?", (sid, proposal.epoch)
            ).fetchone()
            if n >= max_per_epoch:
                return False
            (top,) = db.execute("SELECT coalesce(max(seq), 0) FROM proposals WHERE stream_id = ?", (sid,)).fetchone()
            db.execute(
                "INSERT INTO proposals (stream_id, epoch, seq, ref, sender, message) VALUES (?, ?, ?, ?, ?, ?)",
                (sid, proposal.epoch, top + 1, proposal.ref, proposal.sender, proposal.message),
            )
            if group_state is not None:
                db.execute("UPDATE streams SET group_state = ? WHERE stream_id = ?", (group_state, sid))
            return True

    def proposals(self, stream_id: int, epoch: int) -> list[ProposalRecord]:
        with self._read() as db:
            return [
                ProposalRecord(_uid(r[0]), r[1], bytes(r[2]), bytes(r[3]), bytes(r[4]))
                for r in db.execute(
                    "SELECT stream_id, epoch, ref, sender, message FROM proposals"
                    " WHERE stream_id = ? AND epoch = ? ORDER BY seq",
                    (_sid(stream_id), epoch),
                )
            ]
