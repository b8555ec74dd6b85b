"""The session's own commits, one at a time: the queue of work items and its retry rules.

A member commits for several reasons (admitting a joiner, re-adding a member that failed a commit,
removing a ghost leaf, a rekey, committing a leaver's proposal). Only one of its commits may be in
flight: the next is built on the epoch the previous one produced. :class:`WorkQueue` holds what is
owed, which item is in flight, and whether a backoff pauses it; the :class:`~ciris_av_plugin.session.Session`
decides what each item becomes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from dataclasses import dataclass

__all__ = ["MAX_COMMIT_RETRIES", "RETRY_BACKOFF_S", "Work", "WorkQueue"]

# Times one work item (an admission, a proposal commit...) is retried after losing its epoch to
# another member's commit. Each retry follows the winner first, so it only loses again if yet
# another commit lands in that round trip; three covers a burst of concurrent joins in a call.
MAX_COMMIT_RETRIES = 3

# First wait after a transient refusal, doubled per retry: the relay's per-link budget refills at
# 10 requests/s (transport.control.LINK_REQUESTS_PER_S), so half a second always buys a few.
RETRY_BACKOFF_S = 0.5


@dataclass
class Work:
    """One thing the member owes the group: a commit (``admit``, ``recover``, ``remove``, ``rekey``,
    ``proposals``) or its own ``leave`` proposal, retried like a commit when it lands on a stale epoch."""

    what: str
    identity: bytes | None = None
    key_package: bytes | None = None
    tries: int = 0


class WorkQueue:
    """Owed commits in order, the one in flight (``busy``) and a backoff pause (``paused``)."""

    def __init__(self) -> None:
        self.items: deque[Work] = deque()
        self.busy: Work | None = None
        self.paused = False

    def add(self, work: Work) -> None:
        self.items.append(work)

    def concerns(self, identity: bytes, whats: Container[str] | None = None) -> bool:
        """Whether a queued item (of one of ``whats``, if given) or the one in flight is about ``identity``."""
        queued = any(w.identity == identity and (whats is None or w.what in whats) for w in self.items)
        return queued or (self.busy is not None and self.busy.identity == identity)

    def take(self) -> Work | None:
        """The next item, now in flight; None while one is in flight, paused, or nothing is owed."""
        if self.busy is not None or self.paused or not self.items:
            return None
        self.busy = self.items.popleft()
        return self.busy

    def done(self) -> None:
        """The item in flight is finished (made, refused for good, or moot)."""
        self.busy = None

    def may_retry(self, work: Work) -> bool:
        return work.tries < MAX_COMMIT_RETRIES

    def retry(self, work: Work) -> None:
        """Put ``work`` first again (it lost its epoch; it is rebuilt on the winner's)."""
        work.tries += 1
        self.busy = None
        self.items.appendleft(work)

    def back_off(self, work: Work) -> float:
        """Put ``work`` first again and pause until :meth:`resume`; returns the wait in seconds."""
        delay = RETRY_BACKOFF_S * (1 << work.tries)
        self.retry(work)
        self.paused = True
        return delay

    def resume(self) -> None:
        self.paused = False

    def clear(self) -> None:
        """Forget the owed items (the one in flight, if any, still finishes)."""
        self.items.clear()
