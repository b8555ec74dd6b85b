"""Child-process roles of the media scenario: a publisher and subscribers holding static test keys.

The keys come in the spec of the publisher and subscribers only; the relay's spec never has one.
Every plaintext frame starts with the scenario's marker so the relay can prove it never saw it.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import RNS

from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer
from ciris_av_plugin.media.ordering import FrameOrderer
from ciris_av_plugin.transport.loss import LossInjector
from ciris_av_plugin.transport.media_clients import PublisherClient, SubscriberClient
from integration.harness import peak_rss_kb
from integration.media_shape import TEST_SHAPE, VIDEO_TRACK, FramePlan, Shape, schedule
from integration.node import PROGRESS_EVERY_S, Ctx

_IDS = struct.Struct(">BI")


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:32]


def _injector(spec: dict[str, Any] | None) -> LossInjector | None:
    """A loss seam from a spec entry; its bursts are timed from the stream start (set by :func:`_start`)."""
    if not spec:
        return None
    return LossInjector(
        rate=spec.get("rate", 0.0),
        burst_s=spec.get("burst_s", 0.0),
        burst_period_s=spec.get("burst_period_s", 0.0),
        burst_offset_s=spec.get("burst_offset_s", 0.0),
        seed=spec.get("seed"),
    )


def _start(ctx: Ctx, *injectors: LossInjector | None) -> float:
    """Wait for the cluster's start signal; time every loss burst from it. Returns the start (wall clock)."""
    t0 = ctx.wait_go()
    origin = time.monotonic() + (t0 - time.time())
    for injector in injectors:
        if injector is not None:
            injector.origin = origin
    return t0


def endless_plans(shape: Shape, measured_video_frames: int) -> Iterator[tuple[FramePlan, bool]]:
    """The test shape's frames in due order, forever: ``(plan, measured)``; the first
    ``measured_video_frames`` video frames (and the audio over the same time) are measured, the
    rest is tail that keeps the stream alive until the parent stops it."""
    block_s = shape.gop / shape.video_fps
    audio_per_block = round(block_s * shape.audio_fps)
    one = schedule(shape, 0, shape.gop)
    measured_audio = int(measured_video_frames / shape.video_fps * shape.audio_fps)  # as schedule() counts
    block = 0
    while True:
        for plan in one:
            n = shape.gop if plan.track_id == VIDEO_TRACK else audio_per_block
            seq = plan.seq + block * n
            gop_id = plan.gop_id + block if plan.track_id == VIDEO_TRACK else plan.gop_id
            video = plan.track_id == VIDEO_TRACK
            due = seq / (shape.video_fps if video else shape.audio_fps)
            yield replace(plan, due_s=due, seq=seq, gop_id=gop_id), seq < (measured_video_frames if video else
                                                                          measured_audio)
        block += 1


def role_publisher(ctx: Ctx) -> None:
    """Streams from the start signal until the ``stop`` file, sending at least ``video_frames`` video
    frames; frames past that are logged only if the spec says ``log_tail`` (a scenario that checks
    every frame) and otherwise only counted (a scenario that measures a fixed stretch)."""
    spec = ctx.spec
    ctx.start_rns()
    keys = spec["keys"]
    sealer = FrameSealer()
    sealer.set_epoch(keys["epoch"], bytes.fromhex(keys["base_key"]), keys["leaf_count"], keys["sender_leaf"])
    stream = spec["stream_id"]
    marker = bytes.fromhex(spec["marker"])
    loss_out = _injector(spec.get("loss_out"))
    pub = PublisherClient(RNS.Identity(), bytes.fromhex(spec["relay"]), stream, sealer,
                          receive_mode=spec.get("receive_mode", "auto"), recovery=spec.get("recovery", True),
                          loss_out=loss_out)
    pub.connect()
    ctx.ready(mdu=pub.client.mdu)
    _start(ctx, loss_out)
    t0 = time.time()  # this process's media clock: the first frame is due when it saw the start
    shape = TEST_SHAPE
    log_tail = spec.get("log_tail", False)
    log: list[list[Any]] = []
    measured = tail = 0
    gop = -1
    forced = 0
    last_seq: dict[int, int] = {}
    next_progress = 0.0
    for plan, in_measure in endless_plans(shape, spec["video_frames"]):
        if not in_measure and ctx.should_stop():
            break
        at = t0 + plan.due_s
        if (d := at - time.time()) > 0:
            time.sleep(d)
        fh_plan = plan
        if plan.track_id == VIDEO_TRACK:
            requested = pub.take_keyframe_request(VIDEO_TRACK)
            key = plan.seq % shape.gop == 0 or requested
            forced += requested and plan.seq % shape.gop != 0
            gop += key
            fh_plan = replace(plan, gop_id=gop, keyframe=key, size=shape.keyframe_bytes if key else shape.delta_bytes)
        head = marker + _IDS.pack(plan.track_id, plan.seq)
        payload = head + os.urandom(max(0, fh_plan.size - len(head)))
        fh = fh_plan.header(stream, int(plan.due_s * 1e6))
        sent_at = time.time()
        packets = pub.send_frame(fh, payload)
        measured += in_measure
        tail += not in_measure
        if in_measure or log_tail:
            log.append([plan.track_id, plan.seq, fh.keyframe, digest(payload), sent_at, packets])
        if in_measure:
            last_seq[plan.track_id] = plan.seq
        if time.monotonic() >= next_progress:
            next_progress = time.monotonic() + PROGRESS_EVERY_S
            ctx.progress(measured=measured, tail=tail, measured_done=not in_measure, last_measured_seq=last_seq)
    ctx.result(
        frames=log,
        measured_frames=measured,
        last_measured_seq=last_seq,
        tail_frames=tail,
        mdu=pub.client.mdu,
        keyframe_requests=pub.keyframe_requests,
        forced_keyframes=forced,
        packets_failed=pub.packets_failed,
        reconnects=pub.client.reconnects,
        retransmitted=pub.retransmitted,
        nack_drops=pub.nack_drops,
        responder=pub.responder.counters,
        loss=None if loss_out is None else loss_out.stats(),
        maxrss_kb=peak_rss_kb(),
    )
    pub.close()


def _pending_seqs(detector: Any) -> dict[int, int]:
    """Oldest frame sequence the loss detector still tries to repair, per track (none: all settled).

    Reads the detector's table: the scenario's end condition is "every measured frame decrypted or
    given up", which is the detector's own state, not a time."""
    out: dict[int, int] = {}
    if detector is None:
        return out
    for (_stream, track), dtrack in list(detector._tracks.items()):
        if dtrack.frames:
            out[track] = min(dtrack.frames)
    return out


def role_subscriber(ctx: Ctx) -> None:
    """Receives from the moment it is ready until the ``stop`` file, reporting progress the parent waits on."""
    spec = ctx.spec
    ctx.start_rns()
    keys = spec["keys"]
    marker = bytes.fromhex(spec["marker"])
    opener = FrameOpener(orderer=FrameOrderer(wait=spec["reorder_wait"])) if "reorder_wait" in spec else FrameOpener()
    opener.install_epoch(keys["epoch"], bytes.fromhex(keys["base_key"]), keys["leaf_count"], time.monotonic())
    frames: list[list[Any]] = []
    lock = threading.Lock()
    video_after_keyframe = 0
    last_seq: dict[int, int] = {}

    def on_frame(ev: FrameDecrypted) -> None:
        nonlocal video_after_keyframe
        h = ev.header
        row = [h.track_id, h.frame_seq, h.keyframe, digest(ev.payload), time.time(), ev.decodable,
               ev.payload.startswith(marker)]
        with lock:
            frames.append(row)
            last_seq[h.track_id] = max(last_seq.get(h.track_id, -1), h.frame_seq)
            if h.track_id == VIDEO_TRACK and ev.decodable:
                video_after_keyframe += 1

    loss_in = _injector(spec.get("loss_in"))
    sub = SubscriberClient(RNS.Identity(), bytes.fromhex(spec["relay"]), spec["stream_id"], opener, on_frame,
                           receive_mode=spec.get("receive_mode", "auto"), recovery=spec.get("recovery", True),
                           loss_in=loss_in)
    sub.connect()
    link_id = sub.client.link.link_id.hex()
    ctx.ready(mdu=sub.client.mdu, link_id=link_id)
    if loss_in is not None:
        _start(ctx, loss_in)
    while not ctx.should_stop():
        with lock:
            n, decodable, seqs = len(frames), video_after_keyframe, dict(last_seq)
        ctx.progress(frames=n, decodable_video=decodable, last_seq=seqs, events=[e.kind for e in sub.events],
                     reconnects=sub.client.reconnects, connected=sub.client.connected,
                     pending=_pending_seqs(sub.detector))
        time.sleep(PROGRESS_EVERY_S)
    with lock:
        rows = list(frames)
    ctx.result(
        frames=rows,
        mdu=sub.client.mdu,
        link_ids=[link_id] + ([sub.client.link.link_id.hex()] if sub.client.connected else []),
        drops=sub.drops,
        events=[e.kind for e in sub.events],
        reconnects=sub.client.reconnects,
        receive_mode=sub.client.receive_mode,
        nacks_sent=sub.nacks_sent,
        detector=None if sub.detector is None else dict(sub.detector.counters),
        detector_tracked=None if sub.detector is None else sub.detector.tracked_frames,
        loss=None if loss_in is None else loss_in.stats(),
        maxrss_kb=peak_rss_kb(),
    )
    sub.close()


ROLES = {"publisher": role_publisher, "subscriber": role_subscriber}
