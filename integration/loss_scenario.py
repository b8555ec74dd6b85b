"""Loss recovery over real RNS: lossy hops on both sides of a relay, repaired by NACKs (issue 7).

One relay and four streams, each its own publisher process and subscriber processes, every link
at the 431-byte MDU (link MTU discovery off), so a 2 kB delta is 6 fragments and an 8 kB keyframe
21. Loss is injected with the transport's seam (``transport/loss.py``) in both directions of one
hop, media packets only:

* stream ``down``: a clean publisher; subscribers ``down_1`` (1 % random loss), ``down_5`` (5 %)
  and ``down_burst`` (everything lost for 200 ms every 2 s) on the relay -> subscriber hop;
* streams ``up_1``, ``up_5``, ``up_burst``: the same three models on the publisher -> relay hop,
  each with one clean subscriber.

Each child reports what it sent or decrypted; :func:`run_loss_scenario` returns the reports and
the figures the test asserts (completeness, resumption after bursts, memory).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ciris_av_plugin.transport.config import free_port
from integration.harness import EVENT_TIMEOUT_S, Cluster, require, wait_until

VIDEO_TRACK = 1
CHILD_TIMEOUT_S = 300.0
"""Each child's own hard stop: a run takes ~16 s idle and ~1 min on a loaded 2-core machine."""
BURST_S = 0.2
BURST_PERIOD_S = 2.0
BURST_OFFSET_S = 1.0
# The hops' loss models, by name (both directions of the hop, seeded for repeatability).
LOSS_MODELS: dict[str, dict[str, Any]] = {
    "1": {"rate": 0.01},
    "5": {"rate": 0.05},
    "burst": {"burst_s": BURST_S, "burst_period_s": BURST_PERIOD_S, "burst_offset_s": BURST_OFFSET_S},
}


@dataclass
class SubscriberFigures:
    name: str
    sent: int
    decrypted: int
    decodable_video: int
    video_sent: int
    latency_p50_ms: float
    latency_p99_ms: float
    resume_after_burst_s: list[float] = field(default_factory=list)
    """Figure: seconds from each burst's end to the first decodable video frame sent after it."""
    resumed_after_burst: list[bool] = field(default_factory=list)
    """Outcome: per burst, whether a video frame sent after it (before the next) was decodable."""
    nacks_sent: int = 0

    @property
    def complete_fraction(self) -> float:
        return self.decrypted / self.sent if self.sent else 0.0


@dataclass
class LossReport:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, SubscriberFigures] = field(default_factory=dict)
    bursts: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def _with_seed(model: dict[str, Any], seed: int) -> dict[str, Any]:
    return {**model, "seed": seed}


@dataclass
class StreamSpec:
    """One stream of a loss run: its publisher's hop loss and its subscribers' (loss model specs as
    for ``transport.loss.LossInjector``, applied to both directions of that hop; None: clean)."""

    pub_loss: dict[str, Any] | None
    subs: dict[str, dict[str, Any] | None]
    recovery: bool = True


def run_streams(
    streams: dict[str, StreamSpec], *, video_frames: int, keep: bool = False
) -> tuple[dict[str, dict[str, Any]], float]:
    """One relay, and per stream a publisher and its subscribers as processes, all at MDU 431.

    Every child is started and ready before the start signal; publishers then send ``video_frames``
    measured video frames (and the audio of that time) followed by unmeasured tail frames until every
    subscriber has settled: it decrypted a frame past the measured ones on every track and its loss
    detector no longer tries to repair a measured frame. So what a subscriber ends up with depends on
    loss and repair, not on how fast the machine ran the processes.

    Returns every child's result (publishers as ``pub_<stream>``, subscribers by name, ``relay``)
    and the wall-clock stream start ``t0`` the loss bursts are timed from. Also used by
    ``bench/loss_recovery.py --rns``.
    """
    results: dict[str, dict[str, Any]] = {}
    cluster = Cluster(keep=keep)
    marker = os.urandom(12).hex()
    try:
        port = free_port()
        relay = cluster.spawn(
            "relay",
            {"role": "relay", "listen_port": port, "engine": "engine", "scan": False, "sample_queues": True,
             "link_mtu_discovery": False, "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 20},
        )
        dest = relay.wait_ready()["dest"]
        common = {"connect_port": port, "relay": dest, "marker": marker, "link_mtu_discovery": False,
                  "timeout": CHILD_TIMEOUT_S}
        pubs = {}
        subs = {}
        pub_of = {}
        for i, (name, st) in enumerate(streams.items()):
            keys = {"epoch": 1, "base_key": os.urandom(16).hex(), "leaf_count": 4, "sender_leaf": 0}
            base = {**common, "stream_id": 0x1055_0000 + i, "keys": keys, "recovery": st.recovery}
            for j, (sub_name, model) in enumerate(st.subs.items()):
                loss = {} if model is None else {"loss_in": _with_seed(model, 100 + 10 * i + j),
                                                 "loss_out": _with_seed(model, 200 + 10 * i + j)}
                subs[sub_name] = cluster.spawn(sub_name, {**base, "role": "subscriber", **loss})
                pub_of[sub_name] = name
            model = st.pub_loss
            loss = {} if model is None else {"loss_out": _with_seed(model, 300 + i),
                                             "loss_in": _with_seed(model, 400 + i)}
            pubs[name] = cluster.spawn(f"pub_{name}", {**base, "role": "publisher", "video_frames": video_frames,
                                                       **loss})
        for node in [*pubs.values(), *subs.values()]:
            node.wait_ready()
        t0 = cluster.release()
        watch = [relay, *pubs.values(), *subs.values()]
        for name, node in pubs.items():
            require(f"pub_{name} to send its measured frames", lambda n=node: n.progress()["measured_done"],
                    timeout=video_frames / 30.0 + EVENT_TIMEOUT_S, watch=watch)
        last = {name: node.progress()["last_measured_seq"] for name, node in pubs.items()}
        for sub_name, node in subs.items():
            wait_until(f"{sub_name} to settle", lambda n=node, s=sub_name: _settled(n.progress(), last[pub_of[s]]),
                       watch=watch)
        for node in [*pubs.values(), *subs.values()]:
            node.stop()
        for name, node in pubs.items():
            results[f"pub_{name}"] = node.wait_result(EVENT_TIMEOUT_S)
        for sub_name, node in subs.items():
            results[sub_name] = node.wait_result(EVENT_TIMEOUT_S)
        relay.stop()
        results["relay"] = relay.wait_result(EVENT_TIMEOUT_S)
    finally:
        cluster.close()
    return results, t0


def _settled(progress: dict[str, Any], last_measured: dict[str, int]) -> bool:
    """A subscriber is done with the measured frames: on every track it decrypted a later frame, and
    its loss detector repairs none of them any more (each is complete or given up)."""
    seen, pending = progress["last_seq"], progress["pending"]
    return all(seen.get(t, -1) > last and pending.get(t, last + 1) > last for t, last in last_measured.items())


def run_loss_scenario(*, video_frames: int = 240, keep: bool = False) -> LossReport:
    report = LossReport()
    started = time.monotonic()
    streams = {"down": StreamSpec(None, {f"down_{m}": LOSS_MODELS[m] for m in LOSS_MODELS})}
    for m in LOSS_MODELS:
        streams[f"up_{m}"] = StreamSpec(LOSS_MODELS[m], {f"up_{m}_sub": None})
    report.results, t0 = run_streams(streams, video_frames=video_frames, keep=keep)
    duration_s = video_frames / 30.0
    report.bursts = [t0 + BURST_OFFSET_S + k * BURST_PERIOD_S
                     for k in range(int((duration_s - BURST_OFFSET_S) / BURST_PERIOD_S) + 1)]
    for stream, st in streams.items():
        for sub_name in st.subs:
            report.figures[sub_name] = _figures(sub_name, report.results[f"pub_{stream}"], report.results[sub_name],
                                                report.bursts if "burst" in sub_name else [])
    report.wall_s = time.monotonic() - started
    return report


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _figures(name: str, pub: dict[str, Any], sub: dict[str, Any], bursts: list[float]) -> SubscriberFigures:
    sent = {(r[0], r[1]): r for r in pub["frames"]}
    got = {}
    for r in sub["frames"]:
        key = (r[0], r[1])
        if key in sent and sent[key][3] == r[3]:
            got.setdefault(key, r)
    delays = [(r[4] - sent[k][4]) * 1000 for k, r in got.items()]
    video = [r for k, r in sorted(got.items()) if k[0] == VIDEO_TRACK]
    resume = []
    resumed = []
    for k, start in enumerate(bursts):
        end = start + BURST_S
        after = [r[4] for r in video if r[5] and sent[(r[0], r[1])][4] >= end]
        resume.append(min(after) - end if after else float("inf"))
        # An outcome, not a time: some video frame sent between this burst and the next is decodable.
        until = bursts[k + 1] if k + 1 < len(bursts) else float("inf")
        resumed.append(any(r[5] and end <= sent[(r[0], r[1])][4] < until for r in video))
    return SubscriberFigures(
        name=name,
        sent=len(sent),
        decrypted=len(got),
        decodable_video=sum(1 for r in video if r[5]),
        video_sent=sum(1 for k in sent if k[0] == VIDEO_TRACK),
        latency_p50_ms=_pct(delays, 0.5),
        latency_p99_ms=_pct(delays, 0.99),
        resume_after_burst_s=resume,
        resumed_after_burst=resumed,
        nacks_sent=sub.get("nacks_sent", 0),
    )


def main() -> None:  # pragma: no cover - manual run: python -m integration.loss_scenario
    rep = run_loss_scenario()
    for f in rep.figures.values():
        print(f"{f.name:14s} complete {f.complete_fraction:7.2%}  decodable video {f.decodable_video}/{f.video_sent}"
              f"  latency p50 {f.latency_p50_ms:6.1f} ms p99 {f.latency_p99_ms:6.1f} ms  nacks {f.nacks_sent}"
              f"  resume {[round(x, 3) for x in f.resume_after_burst_s]}")
    relay = rep.results["relay"]
    print("relay retransmit", relay["engine"]["retransmit"])
    print("relay keyframe requests", relay["engine"]["keyframe_requests"], "ring peak", relay["ring_peak_bytes"])
    for k, v in rep.results.items():
        if k.startswith("pub_"):
            print(k, "retransmitted", v["retransmitted"], "kf requests", v["keyframe_requests"], "loss", v["loss"])
    print(f"wall {rep.wall_s:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    main()
