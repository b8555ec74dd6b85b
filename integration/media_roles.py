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
from typing import Any

import RNS

from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer
from ciris_av_plugin.media.ordering import FrameOrderer
from ciris_av_plugin.transport.loss import LossInjector
from ciris_av_plugin.transport.media_clients import PublisherClient, SubscriberClient
from integration.harness import peak_rss_kb
from integration.media_shape import TEST_SHAPE, VIDEO_TRACK, schedule
from integration.node import Ctx

_IDS = struct.Struct(">BI")


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:32]


def _injector(spec: dict[str, Any] | None, t0: float) -> LossInjector | None:
    """A loss seam from a spec entry; bursts are timed from the stream start ``t0`` (wall clock)."""
    if not spec:
        return None
    return LossInjector(
        rate=spec.get("rate", 0.0),
        burst_s=spec.get("burst_s", 0.0),
        burst_period_s=spec.get("burst_period_s", 0.0),
        burst_offset_s=spec.get("burst_offset_s", 0.0),
        origin=time.monotonic() + (t0 - time.time()),
        seed=spec.get("seed"),
    )


def _sleep_until(t: float) -> None:
    while (d := t - time.time()) > 0:
        time.sleep(min(d, 0.05))


def role_publisher(ctx: Ctx) -> None:
    spec = ctx.spec
    ctx.start_rns()
    keys = spec["keys"]
    sealer = FrameSealer()
    sealer.set_epoch(keys["epoch"], bytes.fromhex(keys["base_key"]), keys["leaf_count"], keys["sender_leaf"])
    stream = spec["stream_id"]
    marker = bytes.fromhex(spec["marker"])
    loss_out = _injector(spec.get("loss_out"), spec["t0"])
    pub = PublisherClient(RNS.Identity(), bytes.fromhex(spec["relay"]), stream, sealer,
                          receive_mode=spec.get("receive_mode", "auto"), recovery=spec.get("recovery", True),
                          loss_out=loss_out)
    pub.connect()
    ctx.ready(mdu=pub.client.mdu)
    t0 = spec["t0"]
    shape = TEST_SHAPE
    plans = schedule(shape, 0, spec["video_frames"])
    log: list[list[Any]] = []
    gop = -1
    forced = 0
    _sleep_until(t0)
    for plan in plans:
        at = t0 + plan.due_s
        if (d := at - time.time()) > 0:
            time.sleep(d)
        fh_plan = plan
        if plan.track_id == VIDEO_TRACK:
            requested = pub.take_keyframe_request(VIDEO_TRACK)
            key = plan.seq % shape.gop == 0 or requested
            forced += requested and plan.seq % shape.gop != 0
            gop += key
            fh_plan = plan.__class__(plan.due_s, plan.track_id, plan.kind, plan.seq, gop, key,
                                     shape.keyframe_bytes if key else shape.delta_bytes)
        head = marker + _IDS.pack(plan.track_id, plan.seq)
        payload = head + os.urandom(max(0, fh_plan.size - len(head)))
        fh = fh_plan.header(stream, int(plan.due_s * 1e6))
        sent_at = time.time()
        packets = pub.send_frame(fh, payload)
        log.append([plan.track_id, plan.seq, fh.keyframe, digest(payload), sent_at, packets])
    time.sleep(0.3)
    ctx.result(
        frames=log,
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


def role_subscriber(ctx: Ctx) -> None:
    spec = ctx.spec
    ctx.start_rns()
    keys = spec["keys"]
    marker = bytes.fromhex(spec["marker"])
    opener = FrameOpener(orderer=FrameOrderer(wait=spec["reorder_wait"])) if "reorder_wait" in spec else FrameOpener()
    opener.install_epoch(keys["epoch"], bytes.fromhex(keys["base_key"]), keys["leaf_count"], time.monotonic())
    frames: list[list[Any]] = []
    lock = threading.Lock()

    def on_frame(ev: FrameDecrypted) -> None:
        h = ev.header
        row = [h.track_id, h.frame_seq, h.keyframe, digest(ev.payload), time.time(), ev.decodable,
               ev.payload.startswith(marker)]
        with lock:
            frames.append(row)

    loss_in = _injector(spec.get("loss_in"), spec.get("t0", time.time()))
    sub = SubscriberClient(RNS.Identity(), bytes.fromhex(spec["relay"]), spec["stream_id"], opener, on_frame,
                           receive_mode=spec.get("receive_mode", "auto"), recovery=spec.get("recovery", True),
                           loss_in=loss_in)
    sub.connect()
    link_id = sub.client.link.link_id.hex()
    ctx.ready(mdu=sub.client.mdu, link_id=link_id)
    _sleep_until(spec["t_end"])
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
