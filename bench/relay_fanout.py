#!/usr/bin/env python3
"""Relay fan-out benchmark: a naive RNS relay versus the dispatcher, over real RNS links.

For MDU 431 (link MTU discovery off) with N = 1, 2, 4, 8, 16, 32 subscriber links and for the
negotiated TCP MTU with N = 1, 8, 32, 64, a publisher offers a paced 2 Mbit/s of media-shaped
frames (30 fps video, keyframe = 4 x delta every 30 frames, 100 B audio at 50 fps) and:

* **raw**: a relay that forwards each packet from ``Link.set_packet_callback`` to every
  subscriber with ``RNS.Packet(link, data, create_receipt=False).send()``, no plugin code;
* **dispatcher**: ``transport.relay.RelayNode`` with ``relay.engine.ForwardingEngine``
  (identified links, receiver reports, per-subscriber queues and sender threads).

The relay process is pinned to CPU 0 and everything else to CPU 1 (taskset). Subscriber links
are spread over at most 4 processes whose receivers only count packets. Each point measures a
window of ``--seconds`` (>= 5) after a warm-up:

* ``cpu_us_per_forward`` = relay process CPU time in the window / packets it sent in the window;
* ``delivered_fraction`` = packets (identified by track, frame and offset) sent by the publisher in
  the window that reached a subscriber link, over packets x links;
* ``added_latency_ms_p50/p99`` (dispatcher) = relay ingress to egress on the relay's clock, for
  a 1-in-4 sample of frames;
* ``harness_limited`` = the publisher fell behind its pacing or the non-relay core was saturated,
  so the figure says more about the harness than about the relay.

What the comparison includes: the raw relay has no identification, no receiver reports and no
queues. The dispatcher forwards from RNS's inbound worker (no thread per packet), which is why it
is cheaper per forward at small N; at large N most of its extra CPU is the subscribers' 10 Hz
receiver reports (64 links send the relay 640 packets/s, ~9 us per forward at 79 packets/s in;
measure with ``BENCH_NO_REPORTS=1 --engine passthrough``). Debug switches: ``BENCH_SEND_MODE``
(auto/inline/threads), ``BENCH_DEBUG`` (relay counters to stderr), ``BENCH_NO_LATENCY``.

``--json PATH`` writes ``{"machine", "runs": [...]}`` in the issue's schema; a table is printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import Recorder, summary  # noqa: E402

OFFERED_BPS = 2_000_000
MDU_SMALL = 431
POINTS_SMALL = (1, 2, 4, 8, 16, 32)
POINTS_LARGE = (1, 8, 32, 64)
MAX_SUB_PROCS = 4
WARMUP_S = 1.5
TAIL_S = 1.0
STREAM_ID = 42
LATENCY_SAMPLE_EVERY = 4  # frames
# The non-relay core counts as saturated above this share of one CPU.
HARNESS_CPU_LIMIT = 0.85
# The publisher counts as behind when it sent less than this share of its planned packets.
PUBLISHER_MIN_SHARE = 0.97

_FRAG = struct.Struct(">BBQBBIIIIQ")  # protocol/media_wire.py fragment header
DEBUG = bool(os.environ.get("BENCH_DEBUG"))


def packet_id(data: bytes) -> int | None:
    if len(data) < _FRAG.size or data[0] != 0x01:
        return None
    _, _, _, track, _, seq, _, off, _, _ = _FRAG.unpack_from(data, 0)
    return (track << 56) | (seq << 24) | off


# ---- child roles ------------------------------------------------------------------------------


def _start_rns(spec: dict[str, Any]) -> Any:
    from ciris_av_plugin.transport.config import NodeConfig, start_reticulum

    node = NodeConfig(
        listen_port=spec.get("listen_port"),
        connect_port=spec.get("connect_port"),
        link_mtu_discovery=spec["mtu_discovery"],
    )
    return start_reticulum(Path(spec["workdir"]) / "rns", node)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _times(spec: dict[str, Any]) -> dict[str, float]:
    """Wait for the parent's start file (written once every node is connected) and read it."""
    path = Path(spec["start_file"])
    while True:
        if path.exists():
            try:
                times = json.loads(path.read_text())
                spec.update(times)
                return times
            except json.JSONDecodeError:
                pass
        time.sleep(0.02)


def _window_cpu(spec: dict[str, Any]) -> dict[str, float]:
    """CPU this process spends inside the measured window, sampled by a helper thread."""
    out: dict[str, float] = {}

    def run() -> None:
        _sleep_until(spec["t_start"])
        c0 = time.process_time()
        _sleep_until(spec["t_end"])
        out["cpu_s"] = time.process_time() - c0

    threading.Thread(target=run, daemon=True).start()
    return out


def _sleep_until(t: float) -> None:
    while True:
        d = t - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))


def role_relay(spec: dict[str, Any]) -> None:
    import RNS

    workdir = Path(spec["workdir"])
    if os.environ.get("BENCH_SWITCH"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH"]))
    _start_rns(spec)
    identity = RNS.Identity()
    latencies: list[float] = []
    in_window = [False]
    if spec["kind"] == "raw":
        subs: list[Any] = []
        sent = itertools.count()

        def on_packet(data: bytes, packet: Any) -> None:
            if data == b"SUB":
                subs.append(packet.link)
                return
            for link in list(subs):
                RNS.Packet(link, data, create_receipt=False).send()
                next(sent)

        def on_link(link: Any) -> None:
            link.set_packet_callback(on_packet)

        dest = RNS.Destination(identity, RNS.Destination.IN, RNS.Destination.SINGLE, "ciris_av", "relay")
        dest.set_link_established_callback(on_link)
        dest.announce()

        def tx_count() -> int:
            return next(sent)

        dest_hash = dest.hash
    else:
        from ciris_av_plugin.transport.relay import RelayNode
        from integration.node import make_engine

        ingress: dict[int, float] = {}
        slow_by_thread: dict[str, int] = {}
        clock = time.monotonic

        def observer(direction: str, data: bytes) -> None:
            if not in_window[0] or len(data) < _FRAG.size or data[0] != 0x01:
                return
            _, _, _, track, _, seq, _, off, _, _ = _FRAG.unpack_from(data, 0)
            if seq % LATENCY_SAMPLE_EVERY:
                return
            key = (track << 56) | (seq << 24) | off
            if direction == "in":
                ingress[key] = clock()
            elif direction == "out":
                t_in = ingress.get(key)
                if t_in is not None:
                    latencies.append(clock() - t_in)
                    if DEBUG and latencies[-1] > 0.005:
                        slow_by_thread[threading.current_thread().name] = (
                            slow_by_thread.get(threading.current_thread().name, 0) + 1)

        relay = RelayNode(identity, make_engine(spec.get("engine", "engine")), clock=clock,
                          observer=None if os.environ.get("BENCH_NO_LATENCY") else observer,
                          send_mode=os.environ.get("BENCH_SEND_MODE", "auto"),
                          **({"sender_min_interval": float(os.environ["BENCH_SENDER_INTERVAL"])}
                             if os.environ.get("BENCH_SENDER_INTERVAL") else {}))
        relay.start()
        dest_hash = relay.destination_hash

        def tx_count() -> int:
            return relay.counters().get("tx_packets", 0)

    _write(workdir / "ready.json", {"dest": dest_hash.hex()})
    # Re-announce while clients connect: one announce can be missed by a client whose interface
    # came up a moment later, and answering many path requests at once is rate-limited by RNS.
    while not Path(spec["start_file"]).exists():
        (dest if spec["kind"] == "raw" else relay).announce()
        time.sleep(1.0)
    _times(spec)
    _sleep_until(spec["t_start"])
    cpu0, tx0, w0 = time.process_time(), tx_count(), time.time()
    in_window[0] = True
    _sleep_until(spec["t_end"])
    in_window[0] = False
    cpu1, tx1, w1 = time.process_time(), tx_count(), time.time()
    lat = sorted(latencies)
    result: dict[str, Any] = {"cpu_s": cpu1 - cpu0, "forwards": tx1 - tx0, "wall_s": w1 - w0}
    if lat:
        result["lat_p50_ms"] = lat[len(lat) // 2] * 1000
        result["lat_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        result["lat_samples"] = len(lat)
    if spec["kind"] != "raw":
        result["counters"] = relay.counters()
        if DEBUG:
            result["slow_by_thread"] = slow_by_thread
    _write(workdir / "result.json", result)
    _sleep_until(spec["t_end"] + TAIL_S + 3)


def role_publisher(spec: dict[str, Any]) -> None:
    import RNS

    from ciris_av_plugin.media.kid import encode_kid
    from ciris_av_plugin.media.sframe import SFrameKey
    from ciris_av_plugin.protocol.media_wire import FragmentHeader, fragment_flags, split
    from integration.media_shape import schedule, shape_for_rate

    workdir = Path(spec["workdir"])
    _start_rns(spec)
    relay_hash = bytes.fromhex(spec["relay"])
    identity = RNS.Identity()
    if spec["kind"] == "raw":
        link = _raw_link(relay_hash)

        def send(data: bytes) -> bool:
            return RNS.Packet(link, data, create_receipt=False).send() is not False

        mdu = link.mdu
    else:
        from ciris_av_plugin.transport.client import RelayClient

        client = RelayClient(identity, relay_hash)
        client.connect()
        client.publish(STREAM_ID)
        send = client.send
        mdu = client.mdu

    _write(workdir / "connected.json", {"mdu": mdu})
    _times(spec)
    window_cpu = _window_cpu(spec)
    shape = shape_for_rate(OFFERED_BPS)
    t_begin = spec["t_start"] - WARMUP_S
    duration = spec["t_end"] + TAIL_S - t_begin
    base_key = bytes(range(16))
    keys = {t: SFrameKey.derive(1, base_key, encode_kid(t, 0, 1, 1)) for t in (0, 1)}
    ctrs = dict.fromkeys(keys, 0)
    # Build every packet first so pacing is not disturbed by encryption.
    packets: list[tuple[float, bytes]] = []
    for plan in schedule(shape, duration):
        fh = plan.header(STREAM_ID, int(plan.due_s * 1e6))
        meta = fh.encode()
        key = keys[plan.track_id]
        obj = meta + key.seal(ctrs[plan.track_id], meta, os.urandom(plan.size))
        ctrs[plan.track_id] += 1
        frag = FragmentHeader(STREAM_ID, plan.track_id, plan.seq, plan.gop_id, 0, len(obj), key.kid,
                              fragment_flags(fh), fh.priority)
        for p in split(frag, obj, mdu):
            packets.append((plan.due_s, p))
    # Pace by bytes at the offered rate (a token bucket with no burst): media leaves the sender as
    # a smooth 2 Mbit/s, as a congestion-controlled sender would emit it.
    paced: list[tuple[float, bytes]] = []
    t_next = 0.0
    for due, p in packets:
        t_next = max(t_next, due)
        paced.append((t_next, p))
        t_next += len(p) * 8 / OFFERED_BPS
    _write(workdir / "ready.json", {"packets": len(paced), "mdu": mdu})
    window_ids: list[int] = []
    planned_in_window = 0
    sent_in_window = 0
    late_max = 0.0
    _sleep_until(t_begin)
    for offset, data in paced:
        at = t_begin + offset
        now = time.time()
        if at > now:
            time.sleep(at - now)
        else:
            late_max = max(late_max, now - at)
        in_window = spec["t_start"] <= at < spec["t_end"]
        planned_in_window += in_window
        if send(data) and in_window:
            sent_in_window += 1
            pid = packet_id(data)
            if pid is not None:
                window_ids.append(pid)
    _write(
        workdir / "result.json",
        {
            "ids": window_ids,
            "planned": planned_in_window,
            "sent": sent_in_window,
            "late_max_s": late_max,
            "cpu_s": window_cpu.get("cpu_s", 0.0),
            "offered_pps": planned_in_window / (spec["t_end"] - spec["t_start"]),
            "mdu": mdu,
        },
    )
    time.sleep(1)


def _raw_link(relay_hash: bytes) -> Any:
    import RNS

    deadline = time.monotonic() + 30
    asked = 0.0
    while not RNS.Transport.has_path(relay_hash):
        if time.monotonic() > deadline:
            raise RuntimeError("no path to relay")
        if time.monotonic() - asked > 3:
            RNS.Transport.request_path(relay_hash)
            asked = time.monotonic()
        time.sleep(0.02)
    dest = RNS.Destination(RNS.Identity.recall(relay_hash), RNS.Destination.OUT, RNS.Destination.SINGLE,
                           "ciris_av", "relay")
    up = threading.Event()
    link = RNS.Link(dest, established_callback=lambda _l: up.set())
    if not up.wait(15):
        raise RuntimeError("link not established")
    return link


def role_subscribers(spec: dict[str, Any]) -> None:
    import RNS

    from ciris_av_plugin.transport.hook import attach_receiver, resolve_mode

    workdir = Path(spec["workdir"])
    _start_rns(spec)
    relay_hash = bytes.fromhex(spec["relay"])
    n = spec["links"]
    received: list[set[int]] = [set() for _ in range(n)]
    mode = resolve_mode("auto")
    clients: list[Any] = []
    for i in range(n):
        got = received[i]

        def on_packet(data: bytes, got: set[int] = got) -> None:
            pid = packet_id(data)
            if pid is not None:
                got.add(pid)

        if spec["kind"] == "raw":
            link = _raw_link(relay_hash)
            attach_receiver(link, on_packet, mode)
            RNS.Packet(link, b"SUB", create_receipt=False).send()
            clients.append(link)
        else:
            from ciris_av_plugin.protocol.reports import ReceiverReport, encode_receiver_report
            from ciris_av_plugin.transport.client import RelayClient

            def on_tick(now: float) -> list[bytes]:
                # A liveness-only report: these receivers count packets, they do not reassemble.
                return [encode_receiver_report(ReceiverReport(STREAM_ID, ()))]

            client = RelayClient(RNS.Identity(), relay_hash, on_packet=on_packet,
                                 on_tick=None if os.environ.get("BENCH_NO_REPORTS") else on_tick)
            client.connect()
            client.subscribe(STREAM_ID)
            clients.append(client)
    _write(workdir / "ready.json", {"links": n})
    _times(spec)
    window_cpu = _window_cpu(spec)
    _sleep_until(spec["t_end"] + TAIL_S + 0.5)
    _write(
        workdir / "result.json",
        {"received": [sorted(s) for s in received], "cpu_s": window_cpu.get("cpu_s", 0.0)},
    )


ROLES = {"relay": role_relay, "publisher": role_publisher, "subscribers": role_subscribers}


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    killer = threading.Timer(float(spec.get("timeout", 120)), lambda: os._exit(124))
    killer.daemon = True
    killer.start()
    try:
        ROLES[spec["role"]](spec)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


# ---- the run ----------------------------------------------------------------------------------


def run_point(kind: str, small: bool, n: int, seconds: float, engine: str = "engine") -> dict[str, Any]:
    from ciris_av_plugin.transport.config import free_port
    from integration.harness import Cluster

    entry = [str(Path(__file__).resolve()), "--child"]
    cluster = Cluster()
    try:
        port = free_port()
        common: dict[str, Any] = {"mtu_discovery": not small, "kind": kind, "timeout": seconds + 240,
                                  "engine": engine}
        start_file = cluster.root / "start.json"
        common["start_file"] = str(start_file)
        relay = cluster.spawn("relay", {**common, "role": "relay", "listen_port": port}, cpus="0", entry=entry)
        dest = relay.wait_ready(60)["dest"]
        procs = min(MAX_SUB_PROCS, n)
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        subs = [
            cluster.spawn(f"subs{i}", {**common, "role": "subscribers", "connect_port": port,
                                        "relay": dest, "links": k}, cpus="1", entry=entry)
            for i, k in enumerate(per)
        ]
        pub = cluster.spawn("pub", {**common, "role": "publisher", "connect_port": port, "relay": dest},
                            cpus="1", entry=entry)
        for s in subs:
            s.wait_ready(120)
        _wait_file(pub.workdir / "connected.json", 60, pub)
        # Everyone is connected: the publisher needs ~1 s to pre-build its packets, then warms up.
        t_start = time.time() + 2.0 + WARMUP_S
        t_end = t_start + seconds
        _write(start_file, {"t_start": t_start, "t_end": t_end})
        budget = t_end - time.time() + TAIL_S + 20
        pub_res = pub.wait_result(budget)
        sub_res = [s.wait_result(budget) for s in subs]
        relay_res = relay.wait_result(budget)
    finally:
        cluster.close()
    if os.environ.get("BENCH_DEBUG"):
        print(json.dumps({k: v for k, v in relay_res.items() if k != "lat"}), file=sys.stderr)
    window = set(pub_res["ids"])
    delivered = sum(len(window.intersection(got)) for r in sub_res for got in r["received"])
    fraction = delivered / (len(window) * n) if window else 0.0
    harness_cpu = (pub_res["cpu_s"] + sum(r["cpu_s"] for r in sub_res)) / seconds
    behind = pub_res["sent"] < PUBLISHER_MIN_SHARE * pub_res["planned"] or pub_res["late_max_s"] > 0.25
    out = {
        "mdu": pub_res["mdu"],
        "offered_pps": round(pub_res["offered_pps"], 1),
        "cpu_us_per_forward": relay_res["cpu_s"] / relay_res["forwards"] * 1e6 if relay_res["forwards"] else None,
        "delivered_fraction": round(fraction, 5),
        "relay_cpu_share": relay_res["cpu_s"] / relay_res["wall_s"],
        "harness_limited": bool(behind or harness_cpu > HARNESS_CPU_LIMIT),
        "harness_cpu_share": round(harness_cpu, 3),
    }
    if "lat_p50_ms" in relay_res:
        out["added_latency_ms_p50"] = round(relay_res["lat_p50_ms"], 3)
        out["added_latency_ms_p99"] = round(relay_res["lat_p99_ms"], 3)
    return out


def _wait_file(path: Path, timeout: float, node: Any) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if node.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{node.name} did not connect: {node.log_tail()}")
        time.sleep(0.05)


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write results as JSON")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured window per point (>= 5 for the record)")
    ap.add_argument("--small", default=",".join(map(str, POINTS_SMALL)), help="N values at MDU 431 ('' for none)")
    ap.add_argument("--large", default=",".join(map(str, POINTS_LARGE)), help="N values at the negotiated MTU")
    ap.add_argument("--engine", default="engine", help="dispatcher engine: engine, or passthrough (plumbing only)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per point; the table shows medians (CPU, latency) and minima (delivery)")
    ap.add_argument("--kinds", default="raw,dispatcher", help="relays to run (for debugging one side)")
    args = ap.parse_args()
    recorder = Recorder("relay_fanout")
    print(f"# relay fan-out, {summary()}")
    kinds = set(args.kinds.split(","))
    empty = {"cpu_us_per_forward": None, "delivered_fraction": 0.0, "harness_limited": False,
             "relay_cpu_share": 0.0, "mdu": 0, "offered_pps": 0.0}
    points = [(True, int(n)) for n in args.small.split(",") if n] + [(False, int(n)) for n in args.large.split(",") if n]
    runs = []
    header = (f"{'MDU':>6} {'N':>3} {'pps':>6} | {'raw µs/fwd':>10} {'raw dlv':>8} | {'disp µs/fwd':>11} "
              f"{'disp dlv':>8} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5} {'relay core':>10} {'harness':>7}")
    print(header)
    print("-" * len(header))
    for small, n in points:
        raws, disps = [], []
        for _ in range(args.repeat):
            # Alternate the two relays so slow drifts in machine load hit both alike.
            raws.append(run_point("raw", small, n, args.seconds) if "raw" in kinds else dict(empty))
            disps.append(run_point("dispatcher", small, n, args.seconds, args.engine)
                         if "dispatcher" in kinds else dict(empty, **{k: raws[-1][k] for k in ("mdu", "offered_pps")}))
        raw, disp = _median_point(raws), _median_point(disps)
        ratio = (raw["cpu_us_per_forward"] / disp["cpu_us_per_forward"]
                 if raw["cpu_us_per_forward"] and disp["cpu_us_per_forward"] else None)
        run = {
            "mdu": disp["mdu"],
            "subscribers": n,
            "offered_pps": disp["offered_pps"],
            "raw": {"cpu_us_per_forward": _r(raw["cpu_us_per_forward"]), "delivered_fraction": raw["delivered_fraction"]},
            "dispatcher": {
                "cpu_us_per_forward": _r(disp["cpu_us_per_forward"]),
                "delivered_fraction": disp["delivered_fraction"],
                "added_latency_ms_p50": disp.get("added_latency_ms_p50"),
                "added_latency_ms_p99": disp.get("added_latency_ms_p99"),
            },
            "ratio": _r(ratio, 3),
            "harness_limited": raw["harness_limited"] or disp["harness_limited"],
        }
        runs.append(run)
        print(f"{run['mdu']:>6} {n:>3} {run['offered_pps']:>6.0f} | {_f(raw['cpu_us_per_forward']):>10} "
              f"{raw['delivered_fraction']:>8.4f} | {_f(disp['cpu_us_per_forward']):>11} "
              f"{disp['delivered_fraction']:>8.4f} {_f(disp.get('added_latency_ms_p50')):>7} "
              f"{_f(disp.get('added_latency_ms_p99')):>7} | {_f(ratio, 2):>5} "
              f"{disp['relay_cpu_share']:>10.2f} {'LIMITED' if run['harness_limited'] else 'ok':>7}",
              flush=True)
    if args.json:
        recorder.write(args.json, {"seconds": args.seconds, "repeat": args.repeat, "engine": args.engine,
                                   "offered_bps": OFFERED_BPS, "runs": runs})
        print(f"wrote {args.json}")
    return 0


def _median_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Median CPU and latency, worst delivery, any harness limit over repeated runs of one point."""
    if len(points) == 1:
        return points[0]

    def med(key: str) -> Any:
        vals = sorted(p[key] for p in points if p.get(key) is not None)
        return vals[len(vals) // 2] if vals else None

    out = dict(points[0])
    for key in ("cpu_us_per_forward", "relay_cpu_share", "added_latency_ms_p50", "added_latency_ms_p99",
                "offered_pps"):
        if key in out:
            out[key] = med(key)
    out["delivered_fraction"] = min(p["delivered_fraction"] for p in points)
    out["harness_limited"] = any(p["harness_limited"] for p in points)
    out["cpu_us_per_forward_runs"] = [p["cpu_us_per_forward"] for p in points]
    return out


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def _f(v: float | None, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


if __name__ == "__main__":
    sys.exit(main())
