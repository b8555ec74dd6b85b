"""Media layer throughput: SFrame seal/open per suite, and the whole sealer -> packets -> opener path.

Usage: ``python bench/media_frames.py [--seconds 0.5] [--json PATH]``. Prints one line per case
(operations per second and microseconds per operation; for the pipeline also per packet) and
optionally writes the same figures as JSON. Single-threaded, one core; the figures say how much
of a core the media layer costs a subscriber at a given frame rate.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from machine import Recorder
from timing import DEFAULT_SECONDS, measure

from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer
from ciris_av_plugin.media.sframe import SUITES, CipherSuite, SFrameKey, sframe_decrypt
from ciris_av_plugin.protocol.media_wire import KIND_VIDEO, ForwardingHeader

# Frame sizes from the integration media shape: audio ~100 B, video delta ~2 kB, keyframe ~8 kB.
SIZES = (100, 2_000, 8_000)
MDUS = (431, 16_303)


def sframe_cases(seconds: float) -> list[dict[str, Any]]:
    out = []
    for suite in CipherSuite:
        key = SFrameKey.derive(suite, b"\x07" * SUITES[suite].nk, 0x1234)
        for size in SIZES:
            pt = os.urandom(size)
            ctr = iter(range(1 << 62))
            ct = key.seal(1, b"m" * 30, pt)
            seal = measure(lambda key=key, pt=pt, ctr=ctr: key.seal(next(ctr), b"m" * 30, pt), seconds)
            opn = measure(
                lambda key=key, ct=ct: sframe_decrypt(lambda _k, key=key: key, b"m" * 30, ct), seconds
            )
            out.append(
                {"case": "sframe", "suite": suite.name, "size": size, "seal_per_s": seal, "open_per_s": opn}
            )
    return out


def pipeline_cases(seconds: float) -> list[dict[str, Any]]:
    out = []
    for mdu in MDUS:
        for size in SIZES:
            sealer = FrameSealer()
            sealer.set_epoch(1, b"\x01" * 16, 8, 3)
            opener = FrameOpener()
            opener.install_epoch(1, b"\x01" * 16, 8, now=0.0)
            payload = os.urandom(size)
            state = {"seq": 0, "packets": 0}

            def one(sealer=sealer, opener=opener, payload=payload, state=state, mdu=mdu) -> None:
                seq = state["seq"]
                state["seq"] = seq + 1
                fh = ForwardingHeader(1, 1, KIND_VIDEO, seq, 0, seq, keyframe=seq == 0)
                packets = sealer.seal(fh, payload).packets(mdu)
                state["packets"] += len(packets)
                now = seq * 0.001
                events = []
                for p in packets:
                    events += opener.receive_packet(p, now)
                if not any(isinstance(e, FrameDecrypted) for e in events):
                    raise RuntimeError(f"frame {seq} did not decrypt: {events}")

            start_packets = state["packets"]
            t0 = time.perf_counter()
            per_s = measure(one, seconds)
            elapsed = time.perf_counter() - t0
            pkts = state["packets"] - start_packets
            frames = state["seq"]
            out.append(
                {
                    "case": "pipeline",
                    "mdu": mdu,
                    "size": size,
                    "frames_per_s": per_s,
                    "packets_per_frame": pkts / max(frames, 1),
                    "us_per_packet": elapsed / max(pkts, 1) * 1e6,
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    recorder = Recorder("media_frames")
    rows = sframe_cases(args.seconds) + pipeline_cases(args.seconds)
    for r in rows:
        if r["case"] == "sframe":
            print(
                f"sframe {r['suite']:<28} {r['size']:>6} B  seal {r['seal_per_s']:>9.0f}/s "
                f"({1e6 / r['seal_per_s']:6.1f} us)  open {r['open_per_s']:>9.0f}/s ({1e6 / r['open_per_s']:6.1f} us)"
            )
        else:
            print(
                f"seal+packets+open mdu {r['mdu']:>5} {r['size']:>6} B  {r['frames_per_s']:>8.0f} frames/s "
                f"({1e6 / r['frames_per_s']:7.1f} us/frame, {r['packets_per_frame']:.1f} packets, "
                f"{r['us_per_packet']:.1f} us/packet seal+open)"
            )
    if args.json:
        recorder.write(args.json, {"seconds_per_case": args.seconds, "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
