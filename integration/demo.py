"""``./run demo``: the Layer-2 scenario as separate RNS processes on 127.0.0.1, with a summary.

A relay, a publisher and three subscribers (one at MDU 431, one that joins late and is stopped
for 5 s) exchange ~24 s of end-to-end encrypted media-shaped frames; the relay forwards
ciphertext only. Exits non-zero if any check fails. Until the CLI issue lands this is the main job.
"""

from __future__ import annotations

import argparse
import sys

from integration.scenario import run_scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video-frames", type=int, default=360, help="video frames to publish (30 fps)")
    ap.add_argument("--receive-mode", choices=("auto", "inline", "callback"), default="auto")
    ap.add_argument("--keep", action="store_true", help="keep the processes' working directories")
    args = ap.parse_args(argv)
    print("ciris-av demo: relay + publisher + 3 subscribers, each its own RNS instance on 127.0.0.1 ...",
          flush=True)
    report = run_scenario(video_frames=args.video_frames, receive_mode=args.receive_mode, keep=args.keep)
    res = report.results
    pub = res["publisher"]
    print(f"\npublisher: {len(pub['frames'])} frames sent (MDU {pub['mdu']}), "
          f"{pub['keyframe_requests']} keyframe requests honoured")
    for name in ("sub_big", "sub_small", "sub_late"):
        sub = res[name]
        print(f"{name:>9}: MDU {sub['mdu']:>5}, {len(sub['frames']):>4} frames decrypted, "
              f"receive path {sub['receive_mode']}, events {sub['events']}")
    relay = res["relay"]
    eng = relay["engine"]
    print(f"    relay: {eng['packets_in']} packets in, {eng['packets_out']} out, {eng['resplits']} re-splits, "
          f"drops {eng['drops']}, stalls {eng['stalls']}, resumes {eng['resumes']}, "
          f"queue age p50 {eng['queue_age_ms']['p50']:.1f} ms, receive path {relay['receive_mode']}")
    print(f"           scanned {sum(relay['scan']['bytes'].values())} bytes it handled: "
          f"{relay['scan']['marker_hits']} plaintext marker hits")
    print(f"\nstall of sub_late: {report.timeline.get('stall_begin', 0):.1f} s .. "
          f"{report.timeline.get('stall_end', 0):.1f} s after the first frame\n")
    for check in report.checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}" + (f"  ({check.detail})" if check.detail else ""))
    print(f"\n{'PASS' if report.ok else 'FAIL'}: {sum(c.ok for c in report.checks)}/{len(report.checks)} checks "
          f"in {report.wall_s:.1f} s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
