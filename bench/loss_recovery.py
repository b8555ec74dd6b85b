"""Loss recovery benchmark: what NACK + retransmission buys at 0-5 % packet loss (issue 7).

A deterministic discrete-event simulation of publisher -> relay -> subscriber that runs the
package's real sans-I/O code end to end: ``FrameSealer`` and a per-track ``RetransmitRing`` with
``NackResponder`` at the publisher, the relay's ``ForwardingEngine`` (its ring, NACK answering,
upstream ``NackUpstream``, keyframe requests), and at the subscriber ``FrameOpener`` (reassembly,
SFrame, in-order release) with a ``LossDetector`` and ~100 ms receiver reports, as
``transport/media_clients.py`` wires them. Only RNS is replaced: each hop is a link with a fixed
one-way delay (``--delay-ms``, default 20 ms: a regional internet path) and independent random
loss at the given rate on every packet in both directions of both hops (media, NACKs, reports),
at the 431-byte MDU (RNS over UDP/radio). No bandwidth limit or jitter is modelled.

Traffic: ``integration.media_shape.TEST_SHAPE`` (30 fps video, 8 kB keyframe every 30 frames,
2 kB deltas; 100 B audio at 50 fps); a keyframe request from the relay makes the next video frame
a keyframe. For loss 0, 0.5, 1, 2 and 5 % it runs with recovery on and off (off: no rings, no
NACKs; losses are left to keyframe requests) and reports:

* frames / keyframes completed: share of frames sent that the subscriber decrypted;
* retransmissions per lost packet: repair packets sent (publisher + relay) / media packets lost;
* added latency p50 / p99: time from send to in-order release minus the two hops' delay;
* keyframe requests per minute that reached the publisher.

``--rns`` runs the same grid over real RNS instead (``integration.loss_scenario.run_streams``: one
relay process, and per loss level a recovery-on and a recovery-off stream, each its own publisher
and subscriber process, MDU 431, the loss seam of ``transport/loss.py`` on both directions of both
hops). Loopback has no delay, so added latency there is over the run's fastest frame, and a lost
packet counts every packet the seams dropped on the media direction.

Run: ``python bench/loss_recovery.py [--seconds 60] [--delay-ms 20] [--seed 1] [--rns] [--json PATH]``;
``--json`` writes (through ``bench/machine.py``) ``{"benchmark", "machine", "rns", "seconds", "mdu", "runs": [{"loss_percent", "recovery", "frames_completed_fraction",
"keyframes_completed_fraction", "added_latency_ms_p99", "retransmissions_per_lost_packet",
"keyframe_requests_per_min"}]}``.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import Recorder  # noqa: E402
from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer  # noqa: E402
from ciris_av_plugin.media.nack import LossDetector  # noqa: E402
from ciris_av_plugin.media.retransmit import RING_MAX_AGE_S, NackResponder, RetransmitRing  # noqa: E402
from ciris_av_plugin.protocol.media_wire import PT_FRAGMENT, PT_NACK  # noqa: E402
from ciris_av_plugin.protocol.nack import NackError, decode_nack  # noqa: E402
from ciris_av_plugin.protocol.reports import ReceiverReport, TrackReport, encode_receiver_report  # noqa: E402
from ciris_av_plugin.relay.engine import ForwardingEngine  # noqa: E402
from ciris_av_plugin.relay.engine_config import EngineConfig  # noqa: E402
from ciris_av_plugin.relay.events import KeyframeRequested, NackUpstream  # noqa: E402
from integration.media_shape import TEST_SHAPE, VIDEO_TRACK, schedule  # noqa: E402

LOSS_PERCENTS = (0.0, 0.5, 1.0, 2.0, 5.0)
MDU = 431
STREAM = 0xB0
PUB, SUB = b"pub-link", b"sub-link"
RELAY_TICK_S = 0.02  # transport/relay.py TICK_INTERVAL_S
CLIENT_TICK_S = 0.1  # transport/client.py TICK_INTERVAL_S (reports, expiry, NACK poll)


class Sim:
    """A clock and an event heap."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._ids), fn))

    def run(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            t, _, fn = heapq.heappop(self._heap)
            self.now = t
            fn()


@dataclass
class Link:
    """One direction of a hop: fixed delay, random loss."""

    sim: Sim
    delay: float
    loss: float
    rng: random.Random
    deliver: Callable[[bytes], None]
    lost_media: int = 0
    sent: int = 0

    def send(self, packet: bytes) -> None:
        self.sent += 1
        if self.loss and self.rng.random() < self.loss:
            if packet[0] == PT_FRAGMENT:
                self.lost_media += 1
            return
        self.sim.at(self.sim.now + self.delay, lambda: self.deliver(packet))


@dataclass
class RunResult:
    loss_percent: float
    recovery: bool
    frames_completed_fraction: float
    keyframes_completed_fraction: float
    added_latency_ms_p50: float
    added_latency_ms_p99: float
    retransmissions_per_lost_packet: float
    keyframe_requests_per_min: float
    extra: dict[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        """Exactly the fields the issue's JSON schema names."""
        return {
            "loss_percent": self.loss_percent,
            "recovery": self.recovery,
            "frames_completed_fraction": self.frames_completed_fraction,
            "keyframes_completed_fraction": self.keyframes_completed_fraction,
            "added_latency_ms_p99": self.added_latency_ms_p99,
            "retransmissions_per_lost_packet": self.retransmissions_per_lost_packet,
            "keyframe_requests_per_min": self.keyframe_requests_per_min,
        }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(loss_percent: float, recovery: bool, seconds: float, delay_ms: float, seed: int) -> RunResult:
    sim = Sim()
    rng = random.Random(f"{seed}-{loss_percent}-{recovery}")
    loss = loss_percent / 100.0
    delay = delay_ms / 1000.0
    key = os.urandom(16)

    # -- publisher --------------------------------------------------------------------------
    sealer = FrameSealer()
    sealer.set_epoch(1, key, 4, 0)
    rings: dict[int, RetransmitRing] = {}
    responder = NackResponder()
    sent: dict[tuple[int, int], tuple[float, bool]] = {}
    pub_state = {"kf_wanted": False, "kf_requests": 0, "gop": -1, "retransmitted": 0}

    # -- relay ------------------------------------------------------------------------------
    engine = ForwardingEngine(EngineConfig(retransmit=recovery))
    engine.add_publisher(PUB, STREAM, 0.0)
    engine.add_subscriber(SUB, STREAM, MDU, 0.0)

    # -- subscriber -------------------------------------------------------------------------
    opener = FrameOpener()
    opener.install_epoch(1, key, 4, 0.0)
    detector = LossDetector(deadline=max(0.1, opener.orderer.wait)) if recovery else None
    released: dict[tuple[int, int], float] = {}
    lost_reported: dict[int, int] = {}

    def on_frames(events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, FrameDecrypted):
                released.setdefault((ev.header.track_id, ev.header.frame_seq), sim.now)

    # -- links ------------------------------------------------------------------------------
    def relay_in(link_id: bytes) -> Callable[[bytes], None]:
        def deliver(packet: bytes) -> None:
            engine.receive_packet(link_id, packet, sim.now)
            drain_relay()

        return deliver

    def sub_in(packet: bytes) -> None:
        on_frames(opener.receive_packet(packet, sim.now))
        if detector is not None:
            detector.observe_packet(packet, sim.now)
            for out in detector.poll(sim.now):
                up_sub.send(out.packet)

    def pub_in(packet: bytes) -> None:
        if packet[0] != PT_NACK or not recovery:
            return
        try:
            nack = decode_nack(packet)
        except NackError:
            return
        if not responder.admit(PUB, sim.now):
            return
        for r in responder.answer(PUB, nack, rings.get, sim.now, MDU, lambda _f: RING_MAX_AGE_S):
            pub_state["retransmitted"] += 1
            up_pub.send(r.packet)

    up_pub = Link(sim, delay, loss, rng, relay_in(PUB))
    down_pub = Link(sim, delay, loss, rng, pub_in)
    down_sub = Link(sim, delay, loss, rng, sub_in)
    up_sub = Link(sim, delay, loss, rng, relay_in(SUB))

    def drain_relay() -> None:
        while batch := engine.next_packets(SUB, sim.now, 64):
            for p in batch:
                down_sub.send(p)

    def relay_tick() -> None:
        for ev in engine.tick(sim.now):
            if isinstance(ev, NackUpstream):
                down_pub.send(ev.packet)
            elif isinstance(ev, KeyframeRequested):
                # Long-poll events are reliable (RNS requests): no loss, one hop of delay.
                sim.at(sim.now + delay, lambda: pub_state.update(kf_wanted=True, kf_requests=pub_state["kf_requests"] + 1))
        drain_relay()
        sim.at(sim.now + RELAY_TICK_S, relay_tick)

    base_wait = opener.orderer.wait

    def client_tick() -> None:
        on_frames(opener.expire(sim.now))
        if detector is not None:
            for out in detector.poll(sim.now):
                up_sub.send(out.packet)
            # As SubscriberClient._on_tick: hold gaps open for the measured repair time.
            opener.orderer.wait = max(base_wait, detector.repair_wait())
            detector.deadline = max(0.1, opener.orderer.wait)
        entries = []
        for (sid, tid), st in sorted(opener.tracks().items()):
            if sid == STREAM:
                lost = max(0, st.frames_lost - lost_reported.get(tid, 0))
                lost_reported[tid] = max(st.frames_lost, lost_reported.get(tid, 0))
                entries.append(TrackReport(tid, st.highest_seq, lost))
        up_sub.send(encode_receiver_report(ReceiverReport(STREAM, tuple(entries))))
        sim.at(sim.now + CLIENT_TICK_S, client_tick)

    def send_frame(plan: Any) -> None:
        if plan.track_id == VIDEO_TRACK:
            kf = plan.seq % TEST_SHAPE.gop == 0 or pub_state["kf_wanted"]
            pub_state["kf_wanted"] = False
            pub_state["gop"] += kf
            plan = plan.__class__(plan.due_s, plan.track_id, plan.kind, plan.seq, pub_state["gop"], kf,
                                  TEST_SHAPE.keyframe_bytes if kf else TEST_SHAPE.delta_bytes)
        fh = plan.header(STREAM, int(sim.now * 1e6))
        sealed = sealer.seal(fh, bytes(plan.size))
        sent[(plan.track_id, plan.seq)] = (sim.now, plan.keyframe)
        packets = sealed.packets(MDU)
        if recovery:
            ring = rings.setdefault(plan.track_id, RetransmitRing())
            for p in packets:
                ring.add(plan.seq, p, sim.now)
        for p in packets:
            up_pub.send(p)

    for plan in schedule(TEST_SHAPE, seconds):
        sim.at(plan.due_s, lambda plan=plan: send_frame(plan))
    sim.at(0.0, relay_tick)
    sim.at(0.0, client_tick)
    sim.run(seconds + 2.0)

    # -- figures ----------------------------------------------------------------------------
    got = [k for k in sent if k in released]
    keyframes = [k for k, (_, kf) in sent.items() if kf]
    lost_media = up_pub.lost_media + down_sub.lost_media
    stats = engine.stats()
    repairs = pub_state["retransmitted"] + stats["retransmit"]["packets_retransmitted"]
    added = [max(0.0, (released[k] - sent[k][0] - 2 * delay) * 1000) for k in got]
    return RunResult(
        loss_percent=loss_percent,
        recovery=recovery,
        frames_completed_fraction=len(got) / len(sent),
        keyframes_completed_fraction=sum(1 for k in keyframes if k in released) / len(keyframes),
        added_latency_ms_p50=_pct(added, 0.5),
        added_latency_ms_p99=_pct(added, 0.99),
        retransmissions_per_lost_packet=repairs / lost_media if lost_media else 0.0,
        keyframe_requests_per_min=pub_state["kf_requests"] / (seconds / 60.0),
        extra={"lost_media_packets": lost_media, "repairs": repairs, "frames_sent": len(sent),
               "nacks": None if detector is None else detector.counters["nack_packets"],
               "relay_upstream": stats["retransmit"]["upstream"]},
    )


def run_rns(loss_percent: float, seconds: float) -> list[RunResult]:
    """Recovery on and off at one loss level over real RNS processes (see the module docstring)."""
    from integration.loss_scenario import StreamSpec, run_streams

    model = {"rate": loss_percent / 100.0} if loss_percent else None
    streams = {
        "on": StreamSpec(model, {"sub_on": model}, recovery=True),
        "off": StreamSpec(model, {"sub_off": model}, recovery=False),
    }
    results, _ = run_streams(streams, video_frames=int(seconds * 30))
    relay_repairs = results["relay"]["engine"]["retransmit"]["packets_retransmitted"]
    out = []
    for name, recovery in (("on", True), ("off", False)):
        pub, sub = results[f"pub_{name}"], results[f"sub_{name}"]
        sent = {(r[0], r[1]): r for r in pub["frames"]}
        got = {}
        for r in sub["frames"]:
            if (r[0], r[1]) in sent and sent[(r[0], r[1])][3] == r[3]:
                got.setdefault((r[0], r[1]), r)
        latency = [(r[4] - sent[k][4]) * 1000 for k, r in got.items()]
        floor = min(latency) if latency else 0.0
        added = [x - floor for x in latency]
        keyframes = [k for k, r in sent.items() if r[2]]
        lost = (pub["loss"] or {}).get("dropped", 0) + (sub["loss"] or {}).get("dropped", 0)
        repairs = pub["retransmitted"] + (relay_repairs if recovery else 0)
        out.append(RunResult(
            loss_percent=loss_percent,
            recovery=recovery,
            frames_completed_fraction=len(got) / len(sent) if sent else 0.0,
            keyframes_completed_fraction=sum(1 for k in keyframes if k in got) / len(keyframes) if keyframes else 0.0,
            added_latency_ms_p50=_pct(added, 0.5),
            added_latency_ms_p99=_pct(added, 0.99),
            retransmissions_per_lost_packet=repairs / lost if lost else 0.0,
            keyframe_requests_per_min=pub["keyframe_requests"] / (seconds / 60.0),
            extra={"lost": lost, "repairs": repairs, "nacks_sent": sub.get("nacks_sent")},
        ))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="media seconds simulated per run")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay of each hop")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    ap.add_argument("--rns", action="store_true", help="real RNS processes on 127.0.0.1 instead of the simulation")
    args = ap.parse_args(argv)
    recorder = Recorder("loss_recovery")
    if args.rns:
        print(f"loss recovery over real RNS (loopback): {args.seconds:g} s of media per level, 431-byte MDU, "
              f"loss on every packet of both hops in both directions")
    else:
        print(f"loss recovery, simulated: {args.seconds:g} s of media per run, 2 hops of {args.delay_ms:g} ms, "
              f"431-byte MDU, loss on every packet of both hops in both directions")
    print(f"{'loss':>5} {'recovery':>8} {'frames':>8} {'keyframes':>9} {'rtx/lost':>8} "
          f"{'+lat p50':>8} {'+lat p99':>8} {'kf req/min':>10}")
    runs = []
    for loss in LOSS_PERCENTS:
        level = (run_rns(loss, args.seconds) if args.rns
                 else [run(loss, recovery, args.seconds, args.delay_ms, args.seed) for recovery in (True, False)])
        for r in level:
            runs.append(r)
            recovery = r.recovery
            print(f"{loss:>4.1f}% {'on' if recovery else 'off':>8} {r.frames_completed_fraction:>8.2%} "
                  f"{r.keyframes_completed_fraction:>9.2%} {r.retransmissions_per_lost_packet:>8.2f} "
                  f"{r.added_latency_ms_p50:>6.1f}ms {r.added_latency_ms_p99:>6.1f}ms "
                  f"{r.keyframe_requests_per_min:>10.1f}")
    if args.json:
        settings = {"rns": args.rns, "seconds": args.seconds, "mdu": MDU}
        if not args.rns:
            settings.update(delay_ms=args.delay_ms, seed=args.seed)
        recorder.write(args.json, {**settings, "runs": [r.schema() for r in runs]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
