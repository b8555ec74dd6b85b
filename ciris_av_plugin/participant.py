"""A participant in one stream, over a relay: what ``ciris-av publish`` and ``ciris-av watch`` run.

Thin glue over what exists, so the command line and the integration members share one path:

* :func:`start_client_rns` — this process's single RNS instance with one TCP client interface to a
  node (``transport.config``), its config directory a temporary one removed at exit;
* :func:`load_rns_identity` — a named identity from the on-disk :class:`~.store.identity.IdentityStore`
  (``ciris-av keys create NAME``) as an ``RNS.Identity``;
* :class:`Participant` — a :class:`~.session.Session` driven by a
  :class:`~.transport.session_client.SessionClient`: ``create`` (the publisher creates the group and
  registers the stream; joiners are then admitted by its policy, an allow list or everyone) or
  ``join`` (publish KeyPackages, ask to join, process the Welcome, subscribe), ``leave``, and a
  snapshot of epoch and roster;
* :class:`SyntheticMedia` — media-shaped frames (:mod:`.media.shape`: ~30 fps video with a keyframe
  every 30 frames and deltas, 50 fps audio) paced against the clock, a keyframe on every epoch change
  and on request;
* :class:`ReceiveMeter` — per-interval frames, fps, bitrate, arrival jitter and (same host clock only)
  latency of decrypted frames.

**Capture timestamps are media time** (ARCHITECTURE.md): :class:`SyntheticMedia` gives its media clock
the origin of the publisher's wall clock, so ``arrival - capture`` is a latency only when sender and
receiver read the same clock (one host). Across hosts only the arrival jitter (RFC 3550 §6.4.1,
which needs no common clock) means anything.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .media.events import FrameDecrypted
from .media.shape import AUDIO_TRACK, VIDEO_TRACK, FramePlan, shape_for_rate
from .session import Session
from .session_admission import AdmissionPolicy, AllowList, admit_all
from .session_events import Joined, Removed

JOIN_WAIT_S = 10.0
"""How long a session verb (KeyPackage publication, the join request) may take on a loaded node."""
LEAVE_WAIT_S = 3.0
"""How long ``leave`` waits for the relay to take the self-Remove proposal."""

_IDS = struct.Struct(">BI")


def start_client_rns(host: str, port: int, *, configdir: str | os.PathLike[str] | None = None) -> Any:
    """Start this process's RNS instance with one TCP client interface to ``host:port``.

    Without ``configdir`` a temporary directory is used and removed when the process exits (the
    removal is registered before RNS's own exit handler, so it runs after it)."""
    from .transport.config import NodeConfig, start_reticulum

    if configdir is None:
        configdir = tempfile.mkdtemp(prefix="ciris-av-rns-")
        atexit.register(shutil.rmtree, configdir, True)
    return start_reticulum(configdir, NodeConfig(connect_port=port, host=host))


def load_rns_identity(data_dir: Path | str, name: str) -> Any:
    """The identity ``name`` of the identity store under ``data_dir`` as an ``RNS.Identity``."""
    from .store.identity import IdentityStore
    from .transport.identity import rns_identity_from_private_key

    return rns_identity_from_private_key(IdentityStore(data_dir).load(name).private_key)


def admission_policy(allow: list[bytes] | None) -> AdmissionPolicy:
    """``None``: admit everyone who asks; otherwise only the listed identity hashes."""
    return admit_all if allow is None else AllowList(set(allow))


class Participant:
    """One identity's membership of one stream through one relay."""

    def __init__(
        self,
        identity: Any,
        relay_hash: bytes,
        stream_id: int,
        *,
        publisher: bool = False,
        policy: AdmissionPolicy | None = None,
        on_frame: Callable[[FrameDecrypted], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
        state_store: Any = None,
    ) -> None:
        from .transport.session_client import SessionClient

        self.identity = identity
        self.stream_id = stream_id
        self.session = Session(identity.hash, stream_id, policy=policy, publisher=publisher)
        self._on_event_extra = on_event
        self.joined = threading.Event()
        self.joined_at: float | None = None
        self.join_started_at: float | None = None
        """When :meth:`join` began (before the KeyPackages were published)."""
        self.join_requested_at: float | None = None
        """When the join request was sent (the KeyPackages are in the directory by then)."""
        self.removed_at_epoch: int | None = None
        self.client = SessionClient(
            identity, relay_hash, self.session, state_store=state_store, on_frame=on_frame, on_event=self._on_event
        )

    def _on_event(self, ev: Any) -> None:
        """Runs on the session worker."""
        if isinstance(ev, Joined):
            self.joined_at = time.time()
            self.joined.set()
        elif isinstance(ev, Removed):
            self.removed_at_epoch = ev.epoch
        if self._on_event_extra is not None:
            self._on_event_extra(ev)

    # ---- verbs ------------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Open the control link to the relay (path, link, identification)."""
        self.client.connect(timeout)

    def create(self, group_id: bytes | None = None) -> None:
        """Create the group, register the stream with the relay and open the publisher link."""
        self.client.call(self.session.create, group_id or os.urandom(16), time.time(), timeout=JOIN_WAIT_S)
        self.client.start_publishing()

    def join(self) -> None:
        """Publish KeyPackages and ask to join; :attr:`joined` is set once the Welcome is processed."""
        ident = self.identity
        self.join_started_at = time.time()
        self.client.call(self.session.publish_key_packages, time.time(), ident.get_public_key(), ident.sign,
                         timeout=JOIN_WAIT_S)
        self.join_requested_at = time.time()
        self.client.call(self.session.request_join, timeout=JOIN_WAIT_S)

    def leave(self, timeout: float = LEAVE_WAIT_S) -> bool:
        """Propose our own removal (a member commits it); False if it could not be sent in time."""
        if not self.is_member:
            return False
        try:
            self.client.call(self.session.leave, timeout=timeout)
        except Exception:
            return False
        return True

    def close(self) -> None:
        self.client.close()

    # ---- state ------------------------------------------------------------------------------

    @property
    def is_member(self) -> bool:
        group = self.session.group
        return group is not None and group.active

    def snapshot(self) -> dict[str, Any]:
        """Epoch and roster size now (read from another thread: a consistent-enough status view)."""
        group = self.session.group
        try:
            active = group is not None and group.active
            return {
                "epoch": group.epoch if active and group is not None else None,
                "members": len(group.members) if active and group is not None else 0,
            }
        except Exception:  # the worker replaced the epoch under us: report nothing this time
            return {"epoch": None, "members": 0}


class SyntheticMedia:
    """Media-shaped frames for a publishing session client, paced by :meth:`pump`.

    Payloads start with ``marker`` and (track, sequence), then random bytes to the shape's size.
    Frames that cannot be sealed yet (no sending epoch, link down) are lost, as on a wire."""

    def __init__(
        self,
        client: Any,
        stream_id: int,
        bits_per_s: float,
        *,
        marker: bytes = b"",
        clock: Callable[[], float] = time.time,
        media_origin_s: float | None = None,
    ) -> None:
        """``client``: the publishing :class:`~.transport.session_client.SessionClient`
        (``Participant.client``)."""
        self.client = client
        self.stream_id = stream_id
        self.shape = shape_for_rate(bits_per_s)
        self.marker = marker
        self.clock = clock
        self.t0 = clock()
        self.media_origin_s = self.t0 if media_origin_s is None else media_origin_s
        """Capture timestamps are ``media_origin_s + due`` in µs (default: the wall clock's origin)."""
        self.video_seq = 0
        self.audio_seq = 0
        self.gop = -1
        self.keyframes = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.first_sealer_epoch: int | None = None

    def pump(self) -> int:
        """Send every frame due by now; returns how many left."""
        now = self.clock() - self.t0
        client = self.client
        if self.first_sealer_epoch is None:
            self.first_sealer_epoch = client.sealer.epoch
        sent = 0
        shape = self.shape
        while self.video_seq / shape.video_fps <= now:
            seq = self.video_seq
            key = seq % shape.gop == 0 or client.take_keyframe(VIDEO_TRACK)
            self.gop += key
            self.keyframes += key
            size = shape.keyframe_bytes if key else shape.delta_bytes
            sent += self._send(FramePlan(seq / shape.video_fps, VIDEO_TRACK, 1, seq, self.gop, key, size))
            self.video_seq += 1
        while self.audio_seq / shape.audio_fps <= now:
            seq = self.audio_seq
            sent += self._send(FramePlan(seq / shape.audio_fps, AUDIO_TRACK, 0, seq, 0, False, shape.audio_bytes))
            self.audio_seq += 1
        return sent

    def _send(self, plan: FramePlan) -> int:
        head = self.marker + _IDS.pack(plan.track_id, plan.seq)
        payload = head + os.urandom(max(0, plan.size - len(head)))
        ts_us = int((self.media_origin_s + plan.due_s) * 1e6)
        try:
            packets = self.client.send_frame(plan.header(self.stream_id, ts_us), payload)
        except Exception:  # a sealer between epochs or a link going down: this frame is lost
            return 0
        if packets <= 0:
            return 0
        self.frames_sent += 1
        self.bytes_sent += len(payload)
        return 1


@dataclass
class Interval:
    """What :meth:`ReceiveMeter.take` reports for the interval since the previous call."""

    seconds: float
    frames: int
    total_frames: int
    fps: float
    bits_per_s: float
    jitter_ms: float | None
    """RFC 3550 interarrival jitter of the video track (no common clock needed)."""
    latency_ms: float | None
    """Mean arrival - capture time: meaningful only when sender and receiver share the host clock."""
    last_epoch: int | None


class ReceiveMeter:
    """Counts decrypted frames; thread-safe (frames arrive on RNS threads)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.total_frames = 0
        self.total_bytes = 0
        self.first_frame_at: float | None = None
        self.frames_by_epoch: dict[int, int] = {}
        self._frames = 0
        self._bytes = 0
        self._latency_sum = 0.0
        self._latency_n = 0
        self._jitter: dict[int, float] = {}
        self._last: dict[int, tuple[float, float]] = {}
        self._last_epoch: int | None = None
        self._since = clock()

    def on_frame(self, ev: FrameDecrypted) -> None:
        now = self.clock()
        ts = ev.header.capture_ts_us / 1e6
        track = ev.header.track_id
        with self._lock:
            self.total_frames += 1
            self.total_bytes += len(ev.payload)
            self._frames += 1
            self._bytes += len(ev.payload)
            self.frames_by_epoch[ev.epoch] = self.frames_by_epoch.get(ev.epoch, 0) + 1
            self._last_epoch = ev.epoch
            if self.first_frame_at is None:
                self.first_frame_at = now
            self._latency_sum += now - ts
            self._latency_n += 1
            prev = self._last.get(track)
            if prev is not None:
                d = abs((now - prev[0]) - (ts - prev[1]))
                j = self._jitter.get(track, 0.0)
                self._jitter[track] = j + (d - j) / 16
            self._last[track] = (now, ts)

    def take(self) -> Interval:
        """The interval since the last call (and start a new one)."""
        now = self.clock()
        with self._lock:
            seconds = max(1e-6, now - self._since)
            jitter = self._jitter.get(VIDEO_TRACK, self._jitter.get(AUDIO_TRACK))
            out = Interval(
                seconds=seconds,
                frames=self._frames,
                total_frames=self.total_frames,
                fps=self._frames / seconds,
                bits_per_s=self._bytes * 8 / seconds,
                jitter_ms=None if jitter is None else jitter * 1e3,
                latency_ms=self._latency_sum / self._latency_n * 1e3 if self._latency_n else None,
                last_epoch=self._last_epoch,
            )
            self._since = now
            self._frames = self._bytes = self._latency_n = 0
            self._latency_sum = 0.0
        return out


__all__ = [
    "Interval",
    "Participant",
    "ReceiveMeter",
    "SyntheticMedia",
    "admission_policy",
    "load_rns_identity",
    "start_client_rns",
]
