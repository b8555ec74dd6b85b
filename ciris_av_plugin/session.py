"""The client side of a call (sans-I/O): create or join a stream's MLS group, admit, commit, leave.

A :class:`Session` is one identity's membership of one stream. Like h11's ``Connection`` it does no
I/O and reads no clock: the caller feeds it the relay's events (:meth:`Session.on_event`) and the
replies to the requests it asked for (:meth:`Session.on_reply` / :meth:`Session.on_refused`), with
``now`` (wall-clock seconds), and executes the :data:`Action` items every call returns, in order:

* :class:`Request` — send a control request to the relay (paths in ``protocol/control.py``) and
  feed the answer back;
* :class:`SaveState` / :class:`DeleteState` — persist ``Group.to_bytes()`` (0600) or forget it;
* :class:`InstallKeys` — the group is at a new epoch: give its media keys to the opener and, when
  ``send`` is set, to the sealer (senders switch the moment the commit is merged or processed);
* :class:`Subscribe` — the joiner is now a leaf and may open its media subscription;
* application events — :class:`Joined`, :class:`EpochChanged`, :class:`KeyframeNeeded`,
  :class:`Removed`, :class:`AdmissionFailed`.

What it does, following ARCHITECTURE.md "The joiner path, end to end":

* **Joiner.** Publishes KeyPackages (one-time and one last-resort) in envelopes signed by its RNS
  identity, asks to join, fetches its Welcome when told it is ready and joins with it; then it
  subscribes and asks for a keyframe at its epoch.
* **Admitting member.** A join request for an identity its :data:`AdmissionPolicy` accepts (default:
  an allow list; :func:`admit_all` to admit anyone) makes it fetch a KeyPackage, check the envelope's
  identity, commit the Add and submit Commit + Welcome as one request. "Accepted" merges the pending
  commit; a lost race discards it, catches up with the accepted commits and retries.
  Proposals it is asked to commit (a leaver's self-Remove; the relay asks the lowest active leaf when
  the admitter is gone: the committer-of-last-resort rule), recovery requests (remove and re-add) and
  expired Welcomes (remove the ghost) are committed the same way, one commit at a time.
* **Every member.** Processes fanned-out commits in epoch order (asking for the log when it missed
  one, reporting ``commit-failed`` when one does not process), leaves by proposing its own Remove.
* **Keyframes.** A publisher asks for a keyframe on every epoch change; a keyframe request carrying an
  epoch is honoured once the publisher is at that epoch or later.
* **Restore.** A state restored from disk may have sealed frames in its epoch before the crash, and
  the counters are not on disk, so :attr:`Session.may_send` stays False until the group reaches a
  later epoch: the session commits an Update (an empty commit with a path) first (SFrame §9.1).

Time: commits are dated with the latest ``now`` the caller passed in (KeyPackage lifetimes are checked
against it); where the MLS API takes no time at all (a proposal), the Group's injected ``clock`` is used.

Errors: a bad relay event is counted and ignored (:attr:`Session.counters`), never raised; a refused
request is reported through :meth:`Session.on_refused`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from .errors import AVError, MLSError
from .mls import CipherSuite, CommitProcessed, Group, KeyPackageBundle, OwnCommitError, Policy
from .mls import ProposalReceived as MLSProposalReceived
from .protocol import codes
from .protocol import control as wire
from .protocol.envelope import EnvelopeError, open_envelope, seal_envelope
from .session_actions import Action, Backoff, DeleteState, InstallKeys, Request, SaveState, Subscribe
from .session_admission import AdmissionPolicy, AllowList, as_bytes, removes_another, welcome_refs
from .session_events import AdmissionFailed, EpochChanged, Joined, KeyframeNeeded, Removed
from .session_work import Work, WorkQueue

log = logging.getLogger(__name__)

__all__ = ["Session", "SessionError"]

# One-time KeyPackages a joiner publishes by default. One is consumed per admission attempt; a
# second covers an admitter that fetched one and then lost its commit race; the last-resort one
# backs both (the directory allows 32 per identity).
DEFAULT_ONE_TIME_KEY_PACKAGES = 2

# Video tracks a joiner asks keyframes for after joining (the integration shape's video track).
DEFAULT_VIDEO_TRACKS: tuple[int, ...] = (1,)

# Requests re-sent after a reconnect when they failed because the link to the relay was down (the
# others are re-derived: commits are rebuilt by their work item, catch-up asks again).
RETRY_ON_RECONNECT = frozenset({wire.PATH_KP_PUBLISH, wire.PATH_JOIN, wire.PATH_WELCOME_ACK, wire.PATH_PROPOSE, wire.PATH_KEYFRAME})
LINK_DOWN = "link-down"
"""Refusal code the I/O layer reports when a request never reached the relay or got no answer."""

# Refusals that say "not now" rather than "no": the relay's per-link request budget, a busy store,
# or a request lost with the link. The work item waits and is tried again.
TRANSIENT_CODES = frozenset({codes.ERR_RATE_LIMITED, codes.ERR_BUSY, LINK_DOWN})

# Keyframe requests remembered until the publisher reaches their epoch; beyond it the oldest are
# dropped (a member asks again; the publisher also keyframes on every epoch change anyway).
MAX_WANTED_KEYFRAMES = 64


class SessionError(AVError):
    """A session verb was used in a state that does not allow it (e.g. leave before joining)."""


# --- the session ------------------------------------------------------------------------------


class Session:
    """One identity's membership of one stream's MLS group."""

    def __init__(
        self,
        identity: bytes,
        stream_id: int,
        *,
        suite: CipherSuite | None = None,
        policy: AdmissionPolicy | None = None,
        publisher: bool = False,
        video_tracks: Iterable[int] = DEFAULT_VIDEO_TRACKS,
        signer: tuple[bytes, Callable[[bytes], bytes]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``signer`` is (RNS public key, RNS ``Identity.sign``): what KeyPackage envelopes are signed
        with when the session publishes on its own (recovery after a failed commit)."""
        self.identity = identity
        self.stream_id = stream_id
        self.suite = suite or CipherSuite(1)
        self.policy: AdmissionPolicy = policy if policy is not None else AllowList()
        self.publisher = publisher
        self.video_tracks = tuple(video_tracks)
        self._clock = clock
        self.group: Group | None = None
        self.bundles: list[KeyPackageBundle] = []
        self.removed = False
        self._restored_epoch: int | None = None
        self._queue = WorkQueue()
        self._catching_up = False
        self._wanted: dict[int, int] = {}
        self._welcome_asked = False
        self._retry: list[Request] = []
        self.signer = signer
        self._now: float | None = None
        """The latest ``now`` the caller gave; commits are dated with it (KeyPackage lifetimes)."""
        self._rejoining = False
        self.counters: Counter[str] = Counter()
        """Outcomes by name (commits won/lost, events ignored...), for tests and metrics."""

    # ---- state -----------------------------------------------------------------------------

    @property
    def epoch(self) -> int | None:
        return None if self.group is None else self.group.epoch

    @property
    def may_send(self) -> bool:
        """Whether the sealer may use the current epoch (never one a restored state may have used)."""
        g = self.group
        if g is None or not g.active:
            return False
        return self._restored_epoch is None or g.epoch > self._restored_epoch

    def _clock_kwargs(self) -> dict[str, Any]:
        return {} if self._clock is None else {"clock": self._clock}

    def _group_kwargs(self) -> dict[str, Any]:
        # The relay refuses PSKs, ReInit and private handshakes in relayed groups; the member holds
        # itself to the same policy (and so keeps no past epochs' resumption PSKs).
        return {"policy": Policy.relay(), **self._clock_kwargs()}

    # ---- creating, restoring ---------------------------------------------------------------

    def create(self, group_id: bytes, now: float, admitters: Iterable[bytes] = ()) -> list[Action]:
        """Create the group (this identity is its first member) and register the stream with it.

        ``admitters`` are identities the relay is to let change the roster besides this one."""
        if self.group is not None:
            raise SessionError("this session already has a group")
        self._now = now
        self.group = Group.create(group_id, self.identity, self.suite, now=now, **self._group_kwargs())
        info = self.group.group_info(ratchet_tree=True)
        body: dict[str, Any] = {"stream_id": self.stream_id, "group_info": info}
        if admitters:
            body["admitters"] = list(admitters)
        return [Request(wire.PATH_REGISTER, body, "register")]

    def restore(self, state: bytes) -> list[Action]:
        """Resume from stored state: catch up with missed commits, then (a sender) commit an Update."""
        if self.group is not None:
            raise SessionError("this session already has a group")
        group = Group.from_bytes(state, **self._group_kwargs())
        if not group.active:
            self.removed = True
            return [DeleteState()]
        self.group = group
        self._restored_epoch = group.epoch
        actions: list[Action] = [InstallKeys(group.epoch, send=False)]
        if self.publisher:
            self._queue.add(Work("rekey"))
        return actions + self._catch_up()

    # ---- joining ---------------------------------------------------------------------------

    def publish_key_packages(
        self,
        now: float,
        identity_pub: bytes,
        sign: Callable[[bytes], bytes],
        one_time: int = DEFAULT_ONE_TIME_KEY_PACKAGES,
        last_resort: bool = True,
    ) -> list[Action]:
        """Make KeyPackages and publish each in an envelope signed by the RNS identity (``sign``).

        The signer is kept: a member that fails to process a commit publishes a fresh KeyPackage for
        its remove-and-re-add."""
        self.signer = (identity_pub, sign)
        out: list[Action] = []
        for i in range(one_time + int(last_resort)):
            bundle = KeyPackageBundle.generate(self.identity, self.suite, now=now, **self._clock_kwargs())
            self.bundles.append(bundle)
            env = seal_envelope(
                bundle.key_package, last_resort=i == one_time, identity_pub=identity_pub, ts=int(now), sign=sign
            )
            out.append(Request(wire.PATH_KP_PUBLISH, {"envelope": env}, "kp-publish"))
        return out

    def request_join(self) -> list[Action]:
        """Ask the relay to join the stream (the admitting member is told)."""
        if self.group is not None:
            raise SessionError("already a member")
        if not self.bundles:
            raise SessionError("publish KeyPackages first")
        self._welcome_asked = False
        # Naming the KeyPackages we hold makes the directory drop any an earlier process of this
        # identity left behind (we could not open a Welcome for those), and lets us rejoin while a
        # stale leaf of ours is still in the tree.
        body = {"stream_id": self.stream_id, "key_packages": [b.ref for b in self.bundles]}
        return [Request(wire.PATH_JOIN, body, "join")]

    def fetch_welcome(self) -> list[Action]:
        """Ask for the Welcome now (e.g. a joiner that missed the WelcomeReady event)."""
        self._welcome_asked = True
        return [Request(wire.PATH_WELCOME, {"stream_id": self.stream_id}, "welcome")]

    def resync(self) -> list[Action]:
        """After a reconnect (events queued at the relay may be lost): a joiner asks for its Welcome,
        a member for the commits since its epoch."""
        retry, self._retry = self._retry, []
        if self.group is None:
            return retry + (self.fetch_welcome() if self.bundles else [])
        if not self.group.active:
            return []
        # Join requests told to us while the link was down are asked for again (the admitter acts).
        body = {"stream_id": self.stream_id}
        pending = [Request(wire.PATH_PROPOSALS, body, "proposals"), Request(wire.PATH_JOIN_REQUESTS, body, "join-requests")]
        return retry + self._catch_up() + pending

    # ---- member verbs ----------------------------------------------------------------------

    def leave(self) -> list[Action]:
        """Propose our own removal; a member commits it (§12.2: we cannot commit it ourselves).

        Queued like a commit: a proposal built on an epoch the stream has left is refused
        (``stale-epoch``), so the session catches up and proposes again on the new epoch.
        """
        self._member()
        self._queue.add(Work("leave"))
        return self._next_work()

    def remove(self, identity: bytes) -> list[Action]:
        """Commit the removal of ``identity``."""
        self._member()
        self._queue.add(Work("remove", identity))
        return self._next_work()

    def admit(self, identity: bytes) -> list[Action]:
        """Admit ``identity`` (which must have asked to join) regardless of the policy."""
        self._member()
        self._queue.add(Work("admit", identity))
        return self._next_work()

    def rekey(self) -> list[Action]:
        """Commit an Update (an empty commit with a fresh path): new epoch, new media keys."""
        self._member()
        self._queue.add(Work("rekey"))
        return self._next_work()

    def request_keyframe(self, track_id: int) -> list[Action]:
        """Ask the publishers for a keyframe at our epoch or later."""
        group = self._member()
        body = {"stream_id": self.stream_id, "track_id": track_id, "epoch": group.epoch}
        return [Request(wire.PATH_KEYFRAME, body, "keyframe")]

    def _member(self) -> Group:
        if self.group is None or not self.group.active:
            raise SessionError("not a member of the group")
        return self.group

    # ---- relay events ----------------------------------------------------------------------

    def on_event(self, kind: str, data: dict[str, Any], now: float) -> list[Action]:
        """One event from the relay's long poll (ignored and counted when malformed or not ours)."""
        self._now = now
        if data.get("stream_id") != self.stream_id:
            self.counters["events_other_stream"] += 1
            return []
        try:
            handler = self._EVENTS.get(kind)
            if handler is None:
                self.counters[f"events_ignored.{kind}"] += 1
                return []
            return handler(self, data, now)
        except (KeyError, TypeError, ValueError) as exc:
            self.counters["events_malformed"] += 1
            log.info("malformed %s event ignored: %s", kind, exc)
            return []

    def _on_join_requested(self, data: dict[str, Any], now: float) -> list[Action]:
        identity = as_bytes(data["identity"])
        if self.group is None or not self.group.active:
            return []
        if not self.policy(identity):
            self.counters["joins_not_admitted"] += 1
            log.info("join request from %s not admitted by policy", identity.hex())
            return []
        if self._queue.concerns(identity, ("admit", "recover")):
            return []
        # An identity that still has a leaf asks again: its earlier process is gone. Its stale leaf
        # goes in the commit that re-adds it (Remove + Add: one leaf per identity, §12.2).
        rejoin = identity in self.group.members.values()
        self._queue.add(Work("recover" if rejoin else "admit", identity))
        return self._next_work()

    def _on_welcome_ready(self, data: dict[str, Any], now: float) -> list[Action]:
        if (self.group is not None and not self._rejoining) or not self.bundles:
            return []
        return self.fetch_welcome()

    def _on_commit_accepted(self, data: dict[str, Any], now: float) -> list[Action]:
        epoch, message = int(data["epoch"]), as_bytes(data["message"])
        return self._apply_commits([(epoch, message)], now)

    def _on_proposal(self, data: dict[str, Any], now: float) -> list[Action]:
        group = self.group
        if group is None or not group.active or int(data["epoch"]) != group.epoch:
            return []
        message = as_bytes(data["message"])
        if removes_another(message):
            # Only admitters remove others, by their own commit; a member's proposal to remove
            # someone else is never cached here, so no commit of ours can carry it (the relay
            # refuses such proposals too).
            self.counters["proposals_refused"] += 1
            log.info("a proposal to remove another member was ignored")
            return []
        try:
            ev = group.process(message, now=now)
        except MLSError as exc:
            self.counters["proposals_refused"] += 1
            log.info("proposal refused: %s", exc)
            return []
        if not isinstance(ev, MLSProposalReceived):
            return []
        if data.get("commit_requested"):
            self._queue.add(Work("proposals"))
            return self._next_work()
        return []

    def _on_recovery(self, data: dict[str, Any], now: float) -> list[Action]:
        if self.group is None or not self.group.active:
            return []
        self._queue.add(Work("recover", as_bytes(data["identity"])))
        return self._next_work()

    def _on_welcome_expired(self, data: dict[str, Any], now: float) -> list[Action]:
        return self._remove_ghost(as_bytes(data["joiner"]))

    def _on_member_unreachable(self, data: dict[str, Any], now: float) -> list[Action]:
        return self._remove_ghost(as_bytes(data["identity"]))

    def _remove_ghost(self, identity: bytes) -> list[Action]:
        """A leaf nobody is behind (unfetched Welcome, or no link for too long): commit its Remove."""
        group = self.group
        if group is None or not group.active or identity not in group.members.values():
            return []
        if self._queue.concerns(identity):
            return []
        self._queue.add(Work("remove", identity))
        return self._next_work()

    def _on_keyframe_wanted(self, data: dict[str, Any], now: float) -> list[Action]:
        track, epoch = int(data["track_id"]), int(data["epoch"])
        group = self.group
        if group is not None and group.active and group.epoch >= epoch:
            return [KeyframeNeeded(track, group.epoch)]
        self._wanted[track] = max(epoch, self._wanted.get(track, 0))
        while len(self._wanted) > MAX_WANTED_KEYFRAMES:
            del self._wanted[next(iter(self._wanted))]
        return []

    _EVENTS: dict[str, Callable[[Session, dict[str, Any], float], list[Action]]] = {
        wire.EVENT_JOIN_REQUESTED: _on_join_requested,
        wire.EVENT_WELCOME_READY: _on_welcome_ready,
        wire.EVENT_COMMIT_ACCEPTED: _on_commit_accepted,
        wire.EVENT_PROPOSAL_RECEIVED: _on_proposal,
        wire.EVENT_RECOVERY_REQUESTED: _on_recovery,
        wire.EVENT_WELCOME_EXPIRED: _on_welcome_expired,
        wire.EVENT_MEMBER_UNREACHABLE: _on_member_unreachable,
        wire.EVENT_KEYFRAME_WANTED: _on_keyframe_wanted,
    }

    # ---- commits from others ---------------------------------------------------------------

    def _apply_commits(self, commits: list[tuple[int, bytes]], now: float) -> list[Action]:
        out: list[Action] = []
        for epoch, message in sorted(commits, key=lambda c: c[0]):
            group = self.group
            if group is None or not group.active:
                break
            if self._rejoining:
                self.counters["commits_skipped_rejoining"] += 1
                break  # our state is behind for good; the Welcome of our re-add replaces it
            if epoch < group.epoch:
                continue  # already followed (a repeat, or our own merged commit)
            if epoch > group.epoch:
                self.counters["commit_gaps"] += 1
                return out + self._catch_up()
            try:
                ev = group.process(message, now=now)
            except OwnCommitError:
                continue
            except MLSError as exc:
                self.counters["commits_failed"] += 1
                log.warning("commit of epoch %d does not process: %s", epoch, exc)
                return out + self._recover_self(epoch, now)
            if not isinstance(ev, CommitProcessed):
                continue
            if ev.discarded_pending:
                self.counters["commits_lost"] += 1
            out += self._entered_epoch(ev, own=False)
            if self.removed:
                return out
        return out + self._next_work()

    def _recover_self(self, epoch: int, now: float) -> list[Action]:
        """DAVE-style recovery: publish a fresh KeyPackage, then report the failed commit; the admitter
        removes and re-adds us, and the Welcome replaces our state."""
        out: list[Action] = []
        if self.signer is not None:
            out += self.publish_key_packages(now, *self.signer, one_time=1, last_resort=False)
        if not self.bundles:
            log.warning("cannot recover: no signer to publish a KeyPackage with")
            return out
        self._rejoining = True
        self._queue.clear()
        body = {"stream_id": self.stream_id, "epoch": epoch}
        return out + [Request(wire.PATH_COMMIT_FAILED, body, "commit-failed")]

    def _catch_up(self) -> list[Action]:
        if self._catching_up or self.group is None:
            return []
        self._catching_up = True
        body = {"stream_id": self.stream_id, "since": self.group.epoch}
        return [Request(wire.PATH_COMMITS, body, "commits")]

    def _entered_epoch(self, ev: CommitProcessed, own: bool) -> list[Action]:
        group = self.group
        assert group is not None
        if ev.self_removed or not group.active:
            self.removed = True
            self._queue.clear()
            self._queue.done()
            log.info("removed from stream %d at epoch %d", self.stream_id, ev.epoch)
            return [DeleteState(), Removed(ev.epoch)]
        out: list[Action] = [
            SaveState(group.to_bytes(), group.epoch),
            InstallKeys(group.epoch, send=self.may_send),
            EpochChanged(group.epoch, own, tuple(ev.added.values()), tuple(ev.removed.values())),
        ]
        if self.publisher and self.may_send:
            out.append(KeyframeNeeded(None, group.epoch))
            for track, epoch in list(self._wanted.items()):
                if epoch <= group.epoch:
                    del self._wanted[track]
        return out

    # ---- own commits -----------------------------------------------------------------------

    def _next_work(self) -> list[Action]:
        group = self.group
        if self._catching_up or group is None or not group.active:
            return []
        work = self._queue.take()
        if work is None:
            return []
        if work.what == "leave":
            return [Request(wire.PATH_PROPOSE, {"stream_id": self.stream_id, "proposal": group.leave()}, "propose", work)]
        if work.what in ("admit", "recover") and work.key_package is None:
            assert work.identity is not None
            body = {"target": work.identity, "suite": self.suite.id}
            return [Request(wire.PATH_KP_FETCH, body, "kp-fetch", work)]
        return self._build_commit(work)

    def _build_commit(self, work: Work) -> list[Action]:
        group = self.group
        assert group is not None
        try:
            if work.what in ("admit", "recover"):
                # A leaf of the identity still in the tree (a restart, a failed commit) goes in the same
                # commit; one removed meanwhile (a ghost removal won the race) is simply not there.
                stale = [work.identity] if work.identity in group.members.values() else []
                pending = group.commit(adds=[work.key_package or b""], removes=stale, now=self._now)
            elif work.what == "remove":
                pending = group.commit(removes=[work.identity or b""], now=self._now)
            elif work.what == "rekey":
                pending = group.commit(force_path=True, now=self._now)
            else:  # proposals
                if not group.pending_proposals:
                    return self._work_done()
                pending = group.commit(now=self._now)
        except MLSError as exc:
            return self._work_failed(work, type(exc).__name__)
        body: dict[str, Any] = {"stream_id": self.stream_id, "commit": pending.commit}
        if pending.welcome is not None:
            body["welcome"] = pending.welcome
        return [Request(wire.PATH_COMMIT, body, "commit", work)]

    def _work_done(self) -> list[Action]:
        self._queue.done()
        return self._next_work()

    def _work_failed(self, work: Work, code: str) -> list[Action]:
        self.counters[f"work_failed.{work.what}"] += 1
        log.info("%s of %s failed: %s", work.what, work.identity.hex() if work.identity else "-", code)
        return [AdmissionFailed(work.what, work.identity, code), *self._work_done()]

    # ---- replies ---------------------------------------------------------------------------

    def on_reply(self, request: Request, reply: dict[str, Any], now: float) -> list[Action]:
        """The relay answered ``request`` with ``reply``."""
        self._now = now
        try:
            return self._on_reply(request, reply, now)
        except (KeyError, TypeError, ValueError) as exc:
            self.counters["replies_malformed"] += 1
            log.info("malformed reply to %s: %s", request.path, exc)
            return self.on_refused(request, "bad-reply", str(exc), now)

    def _on_reply(self, request: Request, reply: dict[str, Any], now: float) -> list[Action]:
        op = request.op
        if op == "register":
            group = self.group
            assert group is not None
            return [SaveState(group.to_bytes(), group.epoch), InstallKeys(group.epoch, send=True),
                    EpochChanged(group.epoch, True), *([KeyframeNeeded(None, group.epoch)] if self.publisher else [])]
        if op == "welcome":
            return self._join_with(as_bytes(reply["welcome"]), now)
        if op == "commits":
            self._catching_up = False
            commits = [(int(e), as_bytes(m)) for e, m in reply["commits"]]
            return self._apply_commits(commits, now)
        if op == wire.PATH_KP_FETCH:
            return self._fetched(request.context, reply)
        out: list[Action] = []
        if op == "proposals":
            for message in reply["proposals"]:
                data = {"epoch": reply["epoch"], "message": message, "commit_requested": False}
                out += self._on_proposal(data, now)
            if reply.get("admitter") is True and self.group is not None and self.group.pending_proposals:
                self._queue.add(Work("proposals"))
                out += self._next_work()
            return out
        if op == wire.PATH_JOIN_REQUESTS:
            if reply.get("admitter") is not True:
                return []
            for identity in reply["identities"]:
                out += self._on_join_requested({"identity": identity}, now)
            return out
        if op == "commit":
            return self._committed(request.context, reply)
        if op == "propose" and isinstance(request.context, Work):
            return self._work_done()
        return []

    def on_refused(self, request: Request, code: str, message: str, now: float) -> list[Action]:
        """The relay refused ``request`` (or it failed on the way) with ``code``."""
        self._now = now
        self.counters[f"refused.{request.op}.{code}"] += 1
        log.info("%s refused: %s %s", request.path, code, message)
        op = request.op
        if code == LINK_DOWN and op in RETRY_ON_RECONNECT:
            self._retry.append(request)
            return []
        if op == "commits":
            self._catching_up = False
            group = self.group
            if code == codes.ERR_SINCE_OUT_OF_RANGE and group is not None and group.active and not self._rejoining:
                # Too far behind to replay the log: be removed and re-added instead.
                return self._recover_self(group.epoch, now)
            return self._next_work()
        if op == "welcome":
            self._welcome_asked = False
            return []
        work: Work | None = request.context if isinstance(request.context, Work) else None
        if work is None:
            return []
        if op == "commit":
            group = self.group
            if group is not None and group.pending is not None:
                group.discard_pending()
                if code == codes.ERR_STALE_EPOCH:
                    self.counters["commits_lost"] += 1  # else counted when the winner discarded it
            if code in TRANSIENT_CODES and self._queue.may_retry(work):
                return self._later(work)
            if code in (codes.ERR_STALE_EPOCH, codes.ERR_FUTURE_EPOCH) and self._queue.may_retry(work):
                # Lost the epoch: follow the winner, then try again on top of it.
                self._queue.retry(work)
                return self._catch_up()
        if op == "propose" and code in (codes.ERR_STALE_EPOCH, codes.ERR_FUTURE_EPOCH) and self._queue.may_retry(work):
            # Proposed on an epoch the stream has left (or not reached): follow it, then propose again.
            self._queue.retry(work)
            return self._catch_up()
        if op in ("propose", wire.PATH_KP_FETCH) and code in TRANSIENT_CODES and self._queue.may_retry(work):
            return self._later(work)
        return self._work_failed(work, code)

    def _later(self, work: Work) -> list[Action]:
        return [Backoff(self._queue.back_off(work))]

    def resume(self) -> list[Action]:
        """The :class:`Backoff` wait is over: carry on with the queued work."""
        self._queue.resume()
        return self._next_work()

    def _fetched(self, work: Work, reply: dict[str, Any]) -> list[Action]:
        kp, envelope = as_bytes(reply["key_package"]), as_bytes(reply["envelope"])
        try:
            env = open_envelope(envelope)
        except EnvelopeError as exc:
            return self._work_failed(work, exc.code)
        # Check the RNS binding ourselves: the KeyPackage is the one the identity signed.
        if env.identity_hash != work.identity or env.key_package != kp:
            return self._work_failed(work, "envelope-mismatch")
        work.key_package = kp
        return self._build_commit(work)

    def _committed(self, work: Work, reply: dict[str, Any]) -> list[Action]:
        group = self.group
        assert group is not None
        if group.pending is None:
            # A winner processed meanwhile discarded ours; the relay says ours won only on a repeat of
            # a commit we already followed, so there is nothing to merge.
            return self._work_done()
        ev = group.merge_pending()
        self.counters["commits_won"] += 1
        return self._entered_epoch(ev, own=True) + self._work_done()

    def _join_with(self, welcome: bytes, now: float) -> list[Action]:
        try:
            group = Group.join(welcome, self.bundles, **self._group_kwargs())
        except MLSError as exc:
            self.counters["welcomes_refused"] += 1
            log.warning("Welcome refused: %s", exc)
            return []
        self.group = group
        self._rejoining = False
        # The KeyPackage this Welcome used is spent; the others may still be in the directory (an
        # admitter fetches one of them for a later re-add), so their private keys stay, in memory only.
        used = welcome_refs(welcome)
        self.bundles = [b for b in self.bundles if b.ref not in used]
        out: list[Action] = [
            SaveState(group.to_bytes(), group.epoch),
            InstallKeys(group.epoch, send=True),
            Joined(group.epoch, group.leaf_index),
            Request(wire.PATH_WELCOME_ACK, {"stream_id": self.stream_id}, "welcome-ack"),
            Subscribe(self.stream_id),
        ]
        for track in self.video_tracks:
            out += self.request_keyframe(track)
        return out + self._next_work()
