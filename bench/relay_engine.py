"""Micro-benchmark of the pure forwarding engine: CPU per forwarded packet, no RNS, no threads.

What it measures: the engine's own cost on the relay hot path — ``receive_packet`` for every
ingress fragment plus ``next_packets`` draining every subscriber (as the transport's sender
threads do, in batches) — with media-shaped traffic on a simulated clock: video at 30 fps with an
~8 kB keyframe every 30 frames and ~2 kB deltas (every third one discardable), audio of ~100 B at
50 fps, a receiver report from each subscriber every 100 ms and a ``tick`` every 20 ms.

It prints, per (publisher MDU -> subscriber MDU, subscribers N): microseconds of process CPU per
forwarded (egress) packet, per ingress fragment per subscriber and per ingress fragment, and the
share of the ~60 us a bare ``RNS.Packet(...).send()`` costs per forward (ARCHITECTURE.md) that the
engine adds. CPU time (not wall time) of the best of ``--repeat`` runs is used, minus the cost of
the same loop driving an engine that does nothing (the "harness" column), so other load on the
machine and the loop itself are not counted. ``--json PATH`` writes the same figures.

Run: ``python bench/relay_engine.py [--seconds 10] [--repeat 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import time

from machine import Recorder, summary

from ciris_av_plugin.protocol.media_wire import (
    FLAG_AUDIO,
    FLAG_DISCARDABLE,
    FLAG_KEYFRAME,
    FragmentHeader,
    split,
)
from ciris_av_plugin.protocol.reports import ReceiverReport, TrackReport, encode_receiver_report
from ciris_av_plugin.relay.engine import ForwardingEngine

# The naive relay's cost per forward at 431 B (ARCHITECTURE.md, measured on this machine class).
RNS_SEND_US = 60.0
SID = 7
VIDEO, AUDIO = 1, 0
SENDER_BATCH = 16  # what transport/relay.py's sender threads take per lock acquisition
POINTS = [
    (431, 431, (1, 2, 4, 8, 16, 32)),
    (16303, 16303, (1, 8, 32, 64)),
    (16303, 431, (1, 8, 32)),
]


def media_schedule(seconds: float, pub_mdu: int) -> list[tuple[float, int, int, bytes]]:
    """(send time, track, frame_seq, packet) of a publisher's media, fragmented for ``pub_mdu``."""
    events: list[tuple[float, int, int, bytes]] = []
    n_video = int(seconds * 30)
    for seq in range(n_video):
        key = seq % 30 == 0
        size = 8000 if key else 2000
        flags = FLAG_KEYFRAME if key else (FLAG_DISCARDABLE if seq % 3 == 2 else 0)
        header = FragmentHeader(SID, VIDEO, seq, seq // 30, 0, size, 0x101, flags)
        for p in split(header, bytes(size), pub_mdu):
            events.append((seq / 30, VIDEO, seq, p))
    for seq in range(int(seconds * 50)):
        header = FragmentHeader(SID, AUDIO, seq, 0, 0, 100, 0x001, FLAG_AUDIO)
        events.append((seq / 50, AUDIO, seq, split(header, bytes(100), pub_mdu)[0]))
    events.sort(key=lambda e: e[0])
    return events


class _NullEngine:
    """Same calls, no work: measures what the benchmark loop itself costs, to subtract it."""

    def receive_packet(self, link_id: bytes, packet: bytes, now: float) -> None:
        return None

    def next_packets(self, link_id: bytes, now: float, max_packets: int = 64) -> list[bytes]:
        return []

    def tick(self, now: float) -> list:
        return []


def _drive(eng, subs: list[bytes], schedule, pub: bytes) -> float:
    """Feed the schedule, drain every subscriber after each ingress packet; return CPU seconds."""
    next_report = 0.0
    next_tick = 0.0
    receive = eng.receive_packet
    drain = eng.next_packets
    highest = {VIDEO: 0, AUDIO: 0}
    start = time.process_time()
    for now, track, seq, packet in schedule:
        if now >= next_report:
            # Subscribers drain instantly here, so everything sent so far has completed.
            tracks = (TrackReport(VIDEO, highest[VIDEO]), TrackReport(AUDIO, highest[AUDIO]))
            report = encode_receiver_report(ReceiverReport(SID, tracks))
            for s in subs:
                receive(s, report, now)
            next_report += 0.1
        if now >= next_tick:
            eng.tick(now)
            next_tick += 0.02
        receive(pub, packet, now)
        for s in subs:
            while drain(s, now, SENDER_BATCH):
                pass
        highest[track] = seq
    return time.process_time() - start


def run_point(pub_mdu: int, sub_mdu: int, n: int, seconds: float, repeat: int) -> dict[str, float]:
    """Best (least disturbed) of ``repeat`` runs of one point, harness cost subtracted."""
    pub = b"publisher"
    subs = [b"sub-%03d" % i for i in range(n)]
    schedule = media_schedule(seconds, pub_mdu)
    best = None
    for _ in range(repeat):
        eng = ForwardingEngine()
        eng.add_publisher(pub, SID, 0.0)
        for s in subs:
            eng.add_subscriber(s, SID, sub_mdu, 0.0)
        cpu = _drive(eng, subs, schedule, pub)
        if best is None or cpu < best[0]:
            best = (cpu, eng.stats())
    harness = min(_drive(_NullEngine(), subs, schedule, pub) for _ in range(repeat))
    cpu, st = best
    engine_cpu = max(cpu - harness, 0.0)
    out_packets = st["packets_out"]
    per_forward = engine_cpu / out_packets * 1e6
    return {
        "pub_mdu": pub_mdu,
        "mdu": sub_mdu,
        "subscribers": n,
        "ingress_fragments": st["fragments_in"],
        "egress_packets": out_packets,
        "engine_cpu_us_per_forward": per_forward,
        "engine_cpu_us_per_fragment_per_subscriber": engine_cpu / (st["fragments_in"] * n) * 1e6,
        "engine_cpu_us_per_ingress_fragment": engine_cpu / st["fragments_in"] * 1e6,
        "harness_cpu_us_per_forward": harness / out_packets * 1e6,
        "added_vs_rns_send": per_forward / RNS_SEND_US,
        "drops": sum(st["drops"].values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="simulated media seconds per point")
    ap.add_argument("--repeat", type=int, default=5, help="runs per point; the least disturbed is kept")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    recorder = Recorder("relay_engine")
    machine = summary()
    print(f"relay engine CPU per forwarded packet ({machine}; {args.seconds:g} s of media per point)")
    print(
        f"{'pub->sub MDU':>14} {'N':>3} {'egress':>8} {'us/fwd':>7} {'us/frag/sub':>11} "
        f"{'us/ingress':>10} {'harness':>7} {'vs 60us':>7} {'drops':>5}"
    )
    runs = []
    for pub_mdu, sub_mdu, ns in POINTS:
        for n in ns:
            r = run_point(pub_mdu, sub_mdu, n, args.seconds, args.repeat)
            runs.append(r)
            print(
                f"{pub_mdu:>6}->{sub_mdu:<6} {n:>3} {r['egress_packets']:>8} "
                f"{r['engine_cpu_us_per_forward']:>7.2f} {r['engine_cpu_us_per_fragment_per_subscriber']:>11.2f} "
                f"{r['engine_cpu_us_per_ingress_fragment']:>10.2f} {r['harness_cpu_us_per_forward']:>7.2f} "
                f"{r['added_vs_rns_send']:>6.1%} {r['drops']:>5}"
            )
    if args.json:
        recorder.write(args.json, {"seconds": args.seconds, "repeat": args.repeat, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
