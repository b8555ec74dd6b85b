"""Micro-benchmark of the pure forwarding engine: CPU per forwarded packet, no RNS, no threads.

What it measures: the engine's own cost on the relay hot path — ``receive_packet`` for every
ingress fragment plus ``next_packets`` draining every subscriber (as the transport's sender
threads do, in batches) — with media-shaped traffic on a simulated clock: video at 30 fps with an
~8 kB keyframe every 30 frames and ~2 kB deltas (every third one discardable), audio of ~100 B at
50 fps, a receiver report from each subscriber every 100 ms and a ``tick`` every 20 ms.

It prints, per (publisher MDU -> subscriber MDU, subscribers N): microseconds of CPU per forwarded
(egress) packet, per ingress fragment, and the share of the ~60 us a bare ``RNS.Packet(...).send()``
costs per forward (ARCHITECTURE.md) that the engine adds. ``--json PATH`` writes the same figures.

Run: ``python bench/relay_engine.py [--seconds 10] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from ciris_av_plugin.media.wire import FLAG_AUDIO, FLAG_DISCARDABLE, FLAG_KEYFRAME, FragmentHeader, split
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.relay.reports import ReceiverReport, TrackReport, encode_receiver_report

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


def run_point(pub_mdu: int, sub_mdu: int, n: int, seconds: float) -> dict[str, float]:
    eng = ForwardingEngine()
    pub = b"publisher"
    subs = [b"sub-%03d" % i for i in range(n)]
    eng.add_publisher(pub, SID, 0.0)
    for s in subs:
        eng.add_subscriber(s, SID, sub_mdu, 0.0)
    schedule = media_schedule(seconds, pub_mdu)
    next_report = 0.0
    next_tick = 0.0
    receive = eng.receive_packet
    drain = eng.next_packets
    hot = 0.0
    total_start = time.process_time()
    highest = {VIDEO: 0, AUDIO: 0}
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
        t0 = time.perf_counter()
        receive(pub, packet, now)
        for s in subs:
            while drain(s, now, SENDER_BATCH):
                pass
        hot += time.perf_counter() - t0
        highest[track] = seq
    total = time.process_time() - total_start
    st = eng.stats()
    out_packets = st["packets_out"]
    drops = sum(st["drops"].values())
    us_per_forward = hot / out_packets * 1e6 if out_packets else float("nan")
    return {
        "pub_mdu": pub_mdu,
        "mdu": sub_mdu,
        "subscribers": n,
        "ingress_fragments": st["fragments_in"],
        "egress_packets": out_packets,
        "engine_us_per_forward": us_per_forward,
        "engine_us_per_ingress_fragment": hot / st["fragments_in"] * 1e6,
        "engine_us_per_fragment_per_subscriber": hot / (st["fragments_in"] * n) * 1e6,
        "all_calls_cpu_us_per_forward": total / out_packets * 1e6 if out_packets else float("nan"),
        "added_vs_rns_send": us_per_forward / RNS_SEND_US,
        "drops": drops,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="simulated media seconds per point")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    runs = []
    print(
        f"{'pub->sub MDU':>14} {'N':>3} {'egress':>8} {'us/fwd':>7} {'us/frag/sub':>11} "
        f"{'us/ingress':>10} {'all us/fwd':>10} {'vs 60us':>7} {'drops':>5}"
    )
    for pub_mdu, sub_mdu, ns in POINTS:
        for n in ns:
            r = run_point(pub_mdu, sub_mdu, n, args.seconds)
            runs.append(r)
            print(
                f"{pub_mdu:>6}->{sub_mdu:<6} {n:>3} {r['egress_packets']:>8} "
                f"{r['engine_us_per_forward']:>7.2f} {r['engine_us_per_fragment_per_subscriber']:>11.2f} "
                f"{r['engine_us_per_ingress_fragment']:>10.2f} {r['all_calls_cpu_us_per_forward']:>10.2f} "
                f"{r['added_vs_rns_send']:>6.1%} {r['drops']:>5}"
            )
    machine = (
        f"{platform.node()} {platform.machine()} {platform.processor() or ''} Python {sys.version.split()[0]}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine.strip(), "seconds": args.seconds, "runs": runs}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
