"""Runs a :class:`~ciris_av_plugin.session.Session` over RNS: the control link, media links and state file.

:class:`SessionClient` is the I/O half of the sans-I/O session. One worker thread owns the session:
relay events (from a control :class:`~.client.RelayClient`'s long poll, and keyframe requests from the
publisher link) and the application's verbs are queued to it; it calls the session and executes the
actions it returns, in order:

* ``Request`` — a blocking control request on the control link; the reply (or the refusal's code, or
  ``link-down``) goes back to the session;
* ``SaveState``/``DeleteState`` — through :class:`~ciris_av_plugin.store.member_state.MemberStateStore`
  (mode 0600), *before* the keys of the new epoch are installed;
* ``InstallKeys`` — under the media client's lock (``update_keys``): the opener always, the sealer only
  when the session says it may send (a restored publisher first commits an Update);
* ``Subscribe`` — opens the :class:`~.media_clients.SubscriberClient` (now that the joiner is a leaf);
* everything else is an application event, passed to ``on_event`` and remembered in ``events``.

Publishing: :meth:`SessionClient.send_frame` seals with the current sending epoch; :meth:`take_keyframe`
says whether a keyframe is due on a track (an epoch change, a member's request at our epoch or later,
or the relay's request for a new subscriber).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import RNS

from ..media.events import FrameDecrypted
from ..media.frames import FrameOpener, FrameSealer
from ..media.mls_keys import MediaKeyBinding
from ..protocol.control import EVENT_KEYFRAME_WANTED
from ..protocol.media_wire import ForwardingHeader
from ..session import LINK_DOWN, Session
from ..session_actions import Backoff, DeleteState, InstallKeys, Request, SaveState, Subscribe
from ..session_events import KeyframeNeeded, Removed
from ..store.member_state import MemberStateStore
from .client import RelayClient
from .control import Event
from .errors import ControlError, TransportError
from .media_clients import PublisherClient, SubscriberClient

log = logging.getLogger(__name__)

# Worker wake-up when idle: only to notice close(); events and verbs wake it at once.
WORKER_IDLE_S = 0.5
# Application events kept for inspection (tests, status pages); older ones are dropped.
MAX_KEPT_EVENTS = 1024


class SessionClient:
    """One member (or joiner) of one stream, driven over a relay."""

    def __init__(
        self,
        identity: RNS.Identity,
        relay_hash: bytes,
        session: Session,
        *,
        state_store: MemberStateStore | None = None,
        on_frame: Callable[[FrameDecrypted], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
        on_packet: Callable[[bytes], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.relay_hash = relay_hash
        self.session = session
        if session.signer is None:
            session.signer = (identity.get_public_key(), identity.sign)
        self.state_store = state_store
        self.on_frame = on_frame
        self.on_event = on_event
        self.on_packet = on_packet
        self.wall_clock = wall_clock
        self.control = RelayClient(identity, relay_hash, on_event=self._relay_event, on_reconnect=self._reconnected)
        self.sealer = FrameSealer()
        self.opener = FrameOpener()
        self.publisher: PublisherClient | None = None
        self.subscriber: SubscriberClient | None = None
        self._send_binding: MediaKeyBinding | None = None
        self._recv_binding: MediaKeyBinding | None = None
        self._queue: queue.Queue[tuple[Callable[..., list[Any]], tuple[Any, ...]]] = queue.Queue()
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._run, name="session", daemon=True)
        self._keyframes_due: set[int | None] = set()
        self._kf_lock = threading.Lock()
        self.events: list[Any] = []
        self.requests_failed = 0
        self.idle = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Open the control link (``timeout``: the path and link wait, default the client's own)."""
        if timeout is None:
            self.control.connect()
        else:
            self.control.connect(timeout)
        self._worker.start()

    def close(self) -> None:
        self._closing.set()
        self._close_media()
        self.control.close()

    def submit(self, verb: Callable[..., list[Any]], *args: Any) -> None:
        """Run a session verb (e.g. ``session.leave``) on the worker thread."""
        self.idle.clear()
        self._queue.put((verb, args))

    def call(self, verb: Callable[..., list[Any]], *args: Any, timeout: float = 10.0) -> None:
        """Run a session verb on the worker and wait until it and its requests are done.

        An exception the verb raises on the worker is raised here at once (not after ``timeout``).
        """
        done = threading.Event()
        failed: list[Exception] = []

        def run(*a: Any) -> list[Any]:
            try:
                actions = verb(*a)
            except Exception as exc:
                failed.append(exc)
                done.set()
                raise
            return self._and_then(actions, done)

        self.submit(run, *args)
        if not done.wait(timeout):
            raise TransportError(f"session verb {getattr(verb, '__name__', verb)} did not finish in {timeout} s")
        if failed:
            raise failed[0]

    @staticmethod
    def _and_then(actions: list[Any], done: threading.Event) -> list[Any]:
        return [*actions, _Signal(done)]

    def start_publishing(self) -> None:
        """Open the publisher link (the session must be a member: the relay authorises leaves only)."""
        pub = PublisherClient(self.identity, self.relay_hash, self.session.stream_id, self.sealer,
                              on_event=self._publisher_event)
        pub.connect()
        self.publisher = pub
        self.submit(lambda: [InstallKeys(self.session.epoch or 0, send=self.session.may_send)])

    # ---- the worker ------------------------------------------------------------------------

    def _relay_event(self, event: Event) -> None:
        self.idle.clear()
        self._queue.put((self.session.on_event, (event.kind, event.data, self.wall_clock())))

    def _reconnected(self, _client: RelayClient) -> None:
        # Events queued at a relay that restarted are gone: ask for what may have been missed.
        self.submit(self.session.resync)

    def _publisher_event(self, event: Event) -> None:
        if event.kind == EVENT_KEYFRAME_WANTED:
            self._relay_event(event)

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                verb, args = self._queue.get(timeout=WORKER_IDLE_S)
            except queue.Empty:
                self.idle.set()
                continue
            try:
                self._execute(verb(*args))
            except Exception:
                log.exception("session step failed")
            if self._queue.empty():
                self.idle.set()

    def _execute(self, actions: list[Any]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Request):
                pending = self._request(action) + pending
            elif isinstance(action, SaveState):
                if self.state_store is not None:
                    self.state_store.save(action.state)
            elif isinstance(action, DeleteState):
                if self.state_store is not None:
                    self.state_store.delete()
            elif isinstance(action, InstallKeys):
                self._install(action)
            elif isinstance(action, Subscribe):
                self._subscribe(action.stream_id)
            elif isinstance(action, Backoff):
                timer = threading.Timer(action.seconds, self.submit, (self.session.resume,))
                timer.daemon = True
                timer.start()
            elif isinstance(action, _Signal):
                action.done.set()
            else:
                if isinstance(action, Removed):
                    self._close_media()  # the relay closed them already; do not let them reconnect
                if isinstance(action, KeyframeNeeded):
                    with self._kf_lock:
                        self._keyframes_due.add(action.track_id)
                self.events.append(action)
                del self.events[:-MAX_KEPT_EVENTS]
                if self.on_event is not None:
                    try:
                        self.on_event(action)
                    except Exception:
                        log.exception("on_event failed")

    def _close_media(self) -> None:
        for client in (self.publisher, self.subscriber):
            if client is not None:
                client.close()

    def _request(self, req: Request) -> list[Any]:
        now = self.wall_clock
        try:
            reply = self.control.request(req.path, req.body)
        except ControlError as exc:
            return self.session.on_refused(req, exc.code, exc.message, now())
        except TransportError as exc:
            self.requests_failed += 1
            return self.session.on_refused(req, LINK_DOWN, str(exc), now())
        return self.session.on_reply(req, reply, now())

    def _install(self, action: InstallKeys) -> None:
        group = self.session.group
        if group is None or not group.active:
            return
        mono = time.monotonic()
        if self._recv_binding is None:
            self._recv_binding = MediaKeyBinding(group, opener=self.opener)
        self._recv_binding.group = group
        if self.subscriber is not None:
            self.subscriber.update_keys(lambda: self._recv_binding.sync(mono))
        else:
            self._recv_binding.sync(mono)
        if action.send:
            if self._send_binding is None:
                self._send_binding = MediaKeyBinding(group, sealer=self.sealer)
            self._send_binding.group = group
            if self.publisher is not None:
                self.publisher.update_keys(lambda: self._send_binding.sync(mono))
            else:
                self._send_binding.sync(mono)

    def _subscribe(self, stream_id: int) -> None:
        if self.subscriber is not None:
            return
        sub = SubscriberClient(self.identity, self.relay_hash, stream_id, self.opener, self._frame)
        if self.on_packet is not None:
            inner = sub.client.on_packet
            assert inner is not None
            tap = self.on_packet

            def on_packet(data: bytes) -> None:
                tap(data)
                inner(data)

            sub.client.on_packet = on_packet
        sub.connect()
        self.subscriber = sub

    def subscribe(self) -> None:
        """Open the media subscription now (a member that created or restored its group)."""
        self.submit(lambda: [Subscribe(self.session.stream_id)])

    def _frame(self, ev: FrameDecrypted) -> None:
        if self.on_frame is not None:
            self.on_frame(ev)

    # ---- publishing ------------------------------------------------------------------------

    def take_keyframe(self, track_id: int) -> bool:
        """Whether the next frame of video ``track_id`` must be a keyframe (then it is no longer due)."""
        with self._kf_lock:
            due = track_id in self._keyframes_due or None in self._keyframes_due
            self._keyframes_due.discard(track_id)
            self._keyframes_due.discard(None)
        relay_asked = self.publisher is not None and self.publisher.take_keyframe_request(track_id)
        return due or relay_asked

    def send_frame(self, fh: ForwardingHeader, payload: bytes) -> int:
        """Seal and send one frame; 0 when not publishing or not allowed to send yet."""
        if self.publisher is None or self.sealer.epoch is None:
            return 0
        return self.publisher.send_frame(fh, payload)


class _Signal:
    """Worker-internal: set ``done`` once the actions before it ran."""

    def __init__(self, done: threading.Event) -> None:
        self.done = done
