"""The Layer-2 scenario over real RNS: one relay, one publisher, three subscribers, six processes.

* ``sub_big`` negotiates the 16 KiB link MTU, ``sub_small`` runs with link MTU discovery off (MDU
  431), so the relay re-splits every large fragment for it;
* ``sub_late`` joins once the stream is under way, then its process is stopped (SIGSTOP) until the
  relay has marked it stalled and dropped for it, and continued (SIGCONT).

The publisher sends at least ``video_frames`` video frames at 30 fps (8 kB keyframe every 30, 2 kB
deltas) and 100-byte audio at 50 fps, every plaintext starting with a random marker, from the
start signal the parent gives once every process is ready until the parent stops it. Every step
waits on an event a child reports (see ``harness.py``), so a slow machine makes the run longer, not
different. Publisher and subscribers get a static test key; the relay gets none.
:func:`run_scenario` returns every child's report plus a list of named checks; the integration
test asserts them and ``python -m integration.demo --layer2`` prints them. Delivery latency is a
time target and lives in ``bench/`` (``relay_fanout.py``), not here.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from ciris_av_plugin.transport.config import free_port
from integration.harness import EVENT_TIMEOUT_S, Cluster, require, wait_until

STREAM_ID = 0x0C1A5AF0
STALL_DROPS = 160
"""Packets the relay must have dropped for the stopped subscriber before it is continued: ~2 s of the
stream (80 packets/s at the negotiated MDU), so the stall spans whole groups of pictures. A stall
as short as the relay's 0.3 s stall timeout can leave a frame of the old group in flight past the
flush, which is not what this scenario is about."""
CHILD_TIMEOUT_S = 300.0
"""Each child's own hard stop (``os._exit``): the scenario takes ~20 s idle and ~60 s on a loaded
2-core machine; a child still running after 5 minutes is hung."""
# Per-subscriber queue bounds the relay must respect (EngineConfig defaults).
MAX_QUEUED_PACKETS = 4096
MAX_QUEUED_BYTES = 512 * 1024


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class ScenarioReport:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    timeline: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def run_scenario(
    *, video_frames: int = 360, late_after_frames: int = 45, stall_after_frames: int = 30,
    stall_drops: int = STALL_DROPS, resume_frames: int = 30, receive_mode: str = "auto", keep: bool = False,
) -> ScenarioReport:
    """Run the scenario; every step waits on an event a child reported, none on the clock.

    Set-up, then the start signal once everyone is ready; ``sub_late`` starts after ``sub_big``
    decrypted ``late_after_frames`` frames; it is stopped after it decrypted ``stall_after_frames``
    decodable video frames, continued once the relay marked it stalled and dropped ``stall_drops``
    packets for it (a stall spanning whole groups of pictures, as a frozen client's would), and the
    stream ends once it decrypted ``resume_frames`` more and heard of its stall. The publisher sends
    at least ``video_frames`` video frames; healthy subscribers must then have every frame it sent.
    """
    report = ScenarioReport()
    started = time.monotonic()
    cluster = Cluster(keep=keep)
    marker = os.urandom(12).hex()
    keys = {"epoch": 1, "base_key": os.urandom(16).hex(), "leaf_count": 4, "sender_leaf": 0}
    # Children bound themselves: far past a loaded run (~60 s), short of a CI job's budget.
    timeout = CHILD_TIMEOUT_S
    try:
        port = free_port()
        relay = cluster.spawn(
            "relay",
            {"role": "relay", "listen_port": port, "engine": "engine", "marker": marker, "scan": True,
             "sample_queues": True, "progress": True, "receive_mode": receive_mode, "duration": timeout,
             "timeout": timeout + 20},
        )
        dest = relay.wait_ready()["dest"]
        base = {"connect_port": port, "relay": dest, "stream_id": STREAM_ID, "keys": keys, "marker": marker,
                "receive_mode": receive_mode, "timeout": timeout}
        subs = {
            "sub_big": cluster.spawn("sub_big", {**base, "role": "subscriber"}),
            "sub_small": cluster.spawn("sub_small", {**base, "role": "subscriber", "link_mtu_discovery": False}),
        }
        pub = cluster.spawn("publisher", {**base, "role": "publisher", "video_frames": video_frames,
                                          "log_tail": True})
        for node in (*subs.values(), pub):
            node.wait_ready()
        cluster.release()
        watch = [relay, pub, *subs.values()]
        require(f"sub_big decrypting {late_after_frames} frames",
                lambda: subs["sub_big"].progress()["frames"] >= late_after_frames, watch=watch)
        late = subs["sub_late"] = cluster.spawn("sub_late", {**base, "role": "subscriber"})
        watch.append(late)
        late_link = late.wait_ready()["link_id"]
        require(f"sub_late decoding {stall_after_frames} video frames",
                lambda: late.progress()["decodable_video"] >= stall_after_frames, watch=watch)
        late.signal(signal.SIGSTOP)
        report.timeline["stall_begin"] = time.monotonic() - started

        def stalled_and_dropping() -> bool:
            sub = relay.progress()["subscribers"][late_link]
            return sub["stalled"] and sum(sub["drops"].values()) >= stall_drops

        ok = wait_until(f"the relay to mark sub_late stalled and drop {stall_drops} packets for it",
                        stalled_and_dropping, watch=watch)
        late.signal(signal.SIGCONT)
        report.timeline["stall_end"] = time.monotonic() - started
        report.check("relay marked the stopped subscriber stalled while it was stopped", ok)
        before = late.progress().get("decodable_video", 0)
        wait_until("sub_late to resume and hear of its stall", lambda: late.progress()["decodable_video"]
                   >= before + resume_frames and "SubscriberStalled" in late.progress()["events"], watch=watch)
        require("the publisher's measured frames", lambda: pub.progress()["measured_done"], watch=watch)
        pub.stop()
        report.results["publisher"] = pub.wait_result(EVENT_TIMEOUT_S)
        sent = len(report.results["publisher"]["frames"])
        for name in ("sub_big", "sub_small"):
            # Healthy subscribers get every frame; a missing one is the failure the checks report.
            wait_until(f"{name} to have every frame", lambda n=name: subs[n].progress()["frames"] >= sent,
                       watch=watch)
        for name, node in subs.items():
            node.stop()
            report.results[name] = node.wait_result(EVENT_TIMEOUT_S)
        relay.stop()
        report.results["relay"] = relay.wait_result(EVENT_TIMEOUT_S)
        report.results["relay"]["spec_has_key"] = keys["base_key"] in (relay.workdir / "spec.json").read_text()
    finally:
        cluster.close()
    report.wall_s = time.monotonic() - started
    _evaluate(report, marker, video_frames)
    return report


def _by_track(frames: list[list[Any]]) -> dict[int, list[list[Any]]]:
    out: dict[int, list[list[Any]]] = {}
    for row in frames:
        out.setdefault(row[0], []).append(row)
    return out


def _evaluate(report: ScenarioReport, marker: str, video_frames: int) -> None:
    res = report.results
    pub = res["publisher"]
    sent = {(r[0], r[1]): r for r in pub["frames"]}
    report.check(f"publisher sent >= {video_frames} video frames", sum(1 for k in sent if k[0] == 1) >= video_frames,
                 f"{len(sent)} frames in all")
    report.check("mixed MDUs: 431 and negotiated",
                 res["sub_small"]["mdu"] == 431 and res["sub_big"]["mdu"] > 10_000,
                 f"small {res['sub_small']['mdu']}, big {res['sub_big']['mdu']}, publisher {pub['mdu']}")
    for name in ("sub_big", "sub_small", "sub_late"):
        frames = res[name]["frames"]
        bad_digest = [r[:2] for r in frames if (r[0], r[1]) not in sent or sent[(r[0], r[1])][3] != r[3]]
        report.check(f"{name}: every decrypted frame is byte-identical to what was sent", not bad_digest and frames,
                     f"{len(frames)} frames, {len(bad_digest)} mismatched")
        out_of_order = [t for t, rows in _by_track(frames).items()
                        if any(b[1] <= a[1] for a, b in zip(rows, rows[1:], strict=False))]
        report.check(f"{name}: frames arrive in order on every track", not out_of_order, f"tracks {out_of_order}")
        report.check(f"{name}: plaintext carries the marker", all(r[6] for r in frames))
    for name in ("sub_big", "sub_small"):
        got = {(r[0], r[1]) for r in res[name]["frames"]}
        missing = sorted(set(sent) - got)
        report.check(f"{name}: received every frame", not missing, f"missing {len(missing)}: {missing[:5]}")
    late = _by_track(res["sub_late"]["frames"]).get(1, [])
    report.check("sub_late: first video frame is a keyframe", bool(late) and late[0][2],
                 f"first video seq {late[0][1] if late else None}")
    gaps = [(a, b) for a, b in zip(late, late[1:], strict=False) if b[1] != a[1] + 1]
    biggest = max(gaps, key=lambda ab: ab[1][1] - ab[0][1]) if gaps else None
    report.check("sub_late: lost frames while stopped, then resumed at a keyframe",
                 biggest is not None and biggest[1][2] and all(b[2] for _, b in gaps),
                 f"gaps {[(a[1], b[1], b[2]) for a, b in gaps]}")
    report.check("sub_late: every video frame it decrypted was decodable", all(r[5] for r in late))
    relay = res["relay"]
    events = relay["engine_events"]
    report.check("relay marked the stopped subscriber stalled and resumed it",
                 events.get("SubscriberStalled", 0) >= 1 and events.get("SubscriberResumed", 0) >= 1, str(events))
    report.check("stalled subscriber was told (events long poll)",
                 "SubscriberStalled" in res["sub_late"]["events"], str(res["sub_late"]["events"]))
    late_links = set(res["sub_late"]["link_ids"])
    peaks = relay["queue_peaks"]
    late_drops: dict[str, int] = {}
    for lk in late_links & set(peaks):
        for reason, n in peaks[lk].get("drops", {}).items():
            late_drops[reason] = late_drops.get(reason, 0) + n
    others = sum(sum(p.get("drops", {}).values()) for lk, p in peaks.items() if lk not in late_links)
    report.check("relay counted drops for the stalled subscriber only", sum(late_drops.values()) > 0 and others == 0,
                 f"stalled subscriber {late_drops}; others {others}")
    worst_q = max((p["queued_packets"] for p in peaks.values()), default=0)
    worst_b = max((p["queued_bytes"] for p in peaks.values()), default=0)
    report.check("every subscriber queue stayed bounded",
                 worst_q <= MAX_QUEUED_PACKETS and worst_b <= MAX_QUEUED_BYTES,
                 f"peak {worst_q} packets / {worst_b} bytes")
    report.check("publisher was asked for keyframes (late join, resume)", pub["keyframe_requests"] >= 1,
                 f"{pub['keyframe_requests']} requests, {pub['forced_keyframes']} forced keyframes")
    scan = relay["scan"]
    plaintext_bytes = sum(len(marker) // 2 for _ in sent)
    report.check("relay never saw the plaintext marker", scan["marker_hits"] == 0 and scan["bytes"]["in"] > 0,
                 f"scanned {scan['bytes']} bytes in {scan['packets']} packets; {plaintext_bytes} marker bytes sent")
    report.check("relay process was never given the key", not relay["spec_has_key"] and not relay["env_keys"])
