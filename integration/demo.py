"""``./run demo`` / ``ciris-av demo``: the main job, as separate RNS processes on 127.0.0.1, with a summary.

A relay (the fabric node's delivery service, KeyPackage directory and media forwarding, holding no
group secrets), a publisher that creates the MLS group and streams ~400 kbit/s of media-shaped
frames, two subscribers (``sub1``, ``sub2``) and a late joiner, each its own process with its own
RNS instance. The subscribers and the late joiner join mid-stream through MLS (KeyPackage, commit,
Welcome); then ``sub2`` leaves and the publisher removes the late joiner. Last, ``sub1`` forges
frames under the publisher's KID (the relay must drop them), and the ciphertext ``sub1`` captured
is fed to the removed member's retained state: no frame of its removal epoch or later may open
(the removal promise, ARCHITECTURE.md). This is :func:`integration.join_scenario.run_join_scenario`
with ``full=False``; ``--full`` adds its commit race and relay/publisher restarts.

``--json PATH`` writes the summary; the exit status is non-zero when a check fails. ``--layer2``
runs the earlier Layer-2 scenario instead (static keys, mixed MDUs, a stalled subscriber).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from integration.join_scenario import JoinReport, run_join_scenario
from integration.scenario import run_scenario

ROLES = {
    "pub": "publisher",
    "sub1": "subscriber (stays, captures)",
    "sub2": "subscriber (leaves)",
    "joiner": "late joiner (removed)",
    "joiner2": "joiner after relay restart",
}


def summarise(report: JoinReport) -> dict[str, Any]:
    """The demo's JSON summary from a join-scenario report.

    ``peers[name]``: ``sent`` media frames the member published, ``received`` media-plane packets its
    subscriber link got from the relay, ``decrypted`` frames it opened. ``relay_drops`` is the relay
    engine's drops by reason (the enforcement filter's included), summed over every relay run.
    ``removed_member_decrypted_after_removal`` is ``None`` if the scenario did not get that far.
    """
    res = report.results
    peers: dict[str, dict[str, Any]] = {}
    for name, role in ROLES.items():
        r = res.get(name)
        if r is None:
            continue
        sent = r.get("frames_sent", 0)
        if name == "pub" and "pub_before_restart" in res:
            sent += res["pub_before_restart"].get("frames_sent", 0)
        peers[name] = {"role": role, "sent": sent, "received": r.get("packets_received", 0),
                       "decrypted": r.get("frames", 0), "epoch": r.get("epoch"),
                       "removed_at_epoch": r.get("removed_at_epoch")}
    drops: dict[str, int] = {}
    relay: dict[str, int] = {"packets_in": 0, "packets_out": 0, "frames_in": 0, "frames_out": 0,
                             "links_closed_for_removal": 0}
    for run in (res[k] for k in ("relay_first_run", "relay") if k in res):
        engine = run.get("engine", {})
        # The enforcement filter is the engine's frame_filter: its reasons are already in the engine's drops.
        for reason, n in engine.get("drops", {}).items():
            drops[reason] = drops.get(reason, 0) + int(n)
        for key in ("packets_in", "packets_out", "frames_in", "frames_out"):
            relay[key] += int(engine.get(key, 0))
        relay["links_closed_for_removal"] += int(run.get("closed_for_removal", 0))
    promise = res.get("removal_promise")
    removed = None if promise is None else int(promise["opened_at_or_after_removal"])
    late = float(report.figures.get("join_to_first_frame_s", 0.0))
    receivers = [p for n, p in peers.items() if n != "pub"]
    ok = (report.ok and removed == 0 and late > 0 and bool(receivers)
          and all(p["decrypted"] > 0 for p in receivers))
    return {
        "ok": ok,
        "late_joiner_first_frame_s": late,
        "late_joiner_first_keyframe_s": float(report.figures.get("join_to_first_keyframe_s", 0.0)),
        "removed_member_decrypted_after_removal": removed,
        "removal": None if promise is None else {
            "outcome": promise.get("outcome"),
            "removal_epoch": promise["removal_epoch"],
            "retained_epoch": promise["retained_epoch"],
            "captured_frames_at_or_after_removal": promise["captured_at_or_after_removal"],
            "opened_by_epoch": promise["opened_by_epoch"],
        },
        "peers": peers,
        "relay": relay,
        "relay_drops": drops,
        "checks": [{"name": c.name, "ok": c.ok} for c in report.checks],
        "figures": dict(report.figures),
        "wall_s": report.wall_s,
    }


def print_summary(summary: dict[str, Any], report: JoinReport) -> None:
    print(f"\n{'peer':<8} {'role':<30} {'sent':>6} {'received':>9} {'decrypted':>9} {'epoch':>5}  out at")
    for name, p in summary["peers"].items():
        out = "" if p["removed_at_epoch"] is None else f"epoch {p['removed_at_epoch']}"
        epoch = "-" if p["epoch"] is None else p["epoch"]
        print(f"{name:<8} {p['role']:<30} {p['sent']:>6} {p['received']:>9} {p['decrypted']:>9} {epoch:>5}  {out}")
    r = summary["relay"]
    print(f"{'relay':<8} {'forwards ciphertext only':<30} frames in {r['frames_in']}, out {r['frames_out']}; "
          f"packets in {r['packets_in']}, out {r['packets_out']}; links closed for removal "
          f"{r['links_closed_for_removal']}")
    print("(sent = media frames published, received = media packets from the relay, decrypted = frames opened)\n")
    print(f"late joiner: first frame {summary['late_joiner_first_frame_s'] * 1000:.0f} ms after its join request "
          f"(first keyframe {summary['late_joiner_first_keyframe_s'] * 1000:.0f} ms)")
    rm = summary["removal"]
    if rm is not None:
        print(f"removed member: fed {rm['captured_frames_at_or_after_removal']} captured frames of epoch >= "
              f"{rm['removal_epoch']}, decrypted {summary['removed_member_decrypted_after_removal']} "
              f"(it still opens earlier epochs: {rm['opened_by_epoch']})")
    drops = ", ".join(f"{k} {v}" for k, v in sorted(summary["relay_drops"].items())) or "none"
    print(f"relay drops by reason: {drops}")
    failed = report.failed()
    for c in failed:
        print(f"  [FAIL] {c.name}  ({c.detail[:300]})")
    n = len(report.checks)
    print(f"\n{'PASS' if summary['ok'] else 'FAIL'}: {n - len(failed)}/{n} checks in {report.wall_s:.1f} s")


def run_layer2(args: argparse.Namespace) -> int:
    """The Layer-2 scenario (issue 2) with its own summary: ``python -m integration.demo --layer2``."""
    print("ciris-av demo --layer2: relay + publisher + 3 subscribers, each its own RNS instance on 127.0.0.1 ...",
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
          f"{report.timeline.get('stall_end', 0):.1f} s into the run (stopped until the relay marked it stalled)\n")
    for check in report.checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}" + (f"  ({check.detail})" if check.detail else ""))
    print(f"\n{'PASS' if report.ok else 'FAIL'}: {sum(c.ok for c in report.checks)}/{len(report.checks)} checks "
          f"in {report.wall_s:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"ok": report.ok, "checks": [
            {"name": c.name, "ok": c.ok} for c in report.checks], "wall_s": report.wall_s}, indent=2) + "\n")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ciris-av demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the summary as JSON to PATH")
    ap.add_argument("--full", action="store_true",
                    help="also run the commit race, a relay restart with a second joiner and a publisher restart")
    ap.add_argument("--keep", action="store_true", help="keep the processes' working directories")
    ap.add_argument("--layer2", action="store_true", help="run the Layer-2 static-key scenario instead")
    ap.add_argument("--video-frames", type=int, default=360, help="--layer2: video frames to publish (30 fps)")
    ap.add_argument("--receive-mode", choices=("auto", "inline", "callback"), default="auto", help="--layer2 only")
    args = ap.parse_args(argv)
    if args.layer2:
        return run_layer2(args)

    t0 = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {line}", flush=True)

    print("ciris-av demo: relay, publisher, 2 subscribers and a late joiner, each its own process with its own "
          "RNS instance on 127.0.0.1", flush=True)
    try:
        report = run_join_scenario(full=args.full, keep=args.keep, progress=progress)
    except Exception as exc:  # a child died or timed out: report it, write what is known, fail
        print(f"FAIL: the scenario did not complete: {exc}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "ok": False, "error": str(exc), "late_joiner_first_frame_s": 0.0,
                "removed_member_decrypted_after_removal": None, "peers": {}, "relay_drops": {}}, indent=2) + "\n")
        return 1
    summary = summarise(report)
    print_summary(summary, report)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
        print(f"summary written to {args.json}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
