"""Entry point of every integration/demo/bench child process: ``python -m integration.node SPEC``.

SPEC is a JSON file written by ``harness.Cluster.spawn``; ``role`` picks the function below. Each
role enforces ``timeout`` itself (an ``os._exit`` timer), writes ``ready.json`` when it is up
(relays: their destination hash), ``progress.json`` while it runs if a scenario waits on its
progress, and ``result.json`` when done; media starts only after the cluster's ``go.json``
(:meth:`Ctx.wait_go`) and runs until the parent's ``stop`` file.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import RNS

from ciris_av_plugin.transport.client import RelayClient
from ciris_av_plugin.transport.config import NodeConfig, start_reticulum
from ciris_av_plugin.transport.relay import RelayNode
from integration.harness import EVENT_TIMEOUT_S, GO_TIMEOUT_S, POLL_S, peak_rss_kb, read_json, write_json

log = logging.getLogger("integration.node")

PROGRESS_EVERY_S = 0.1
"""How often a running role rewrites ``progress.json``: the parent's event waits poll it."""


class Ctx:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.workdir = Path(spec["workdir"])
        self.stop_path = self.workdir / "stop"

    def ready(self, **data: Any) -> None:
        write_json(self.workdir / "ready.json", data)

    def result(self, **data: Any) -> None:
        write_json(self.workdir / "result.json", data)

    def progress(self, **data: Any) -> None:
        write_json(self.workdir / "progress.json", data)

    def should_stop(self) -> bool:
        return self.stop_path.exists()

    def wait_go(self, timeout: float = GO_TIMEOUT_S) -> float:
        """Block until the parent releases the cluster (``harness.Cluster.release``); returns its start
        instant. Raises TimeoutError if the release never comes (the parent died or gave up)."""
        path = Path(self.spec["go"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t0 = read_json(path).get("t0")
            if t0 is not None:
                return float(t0)
            if self.should_stop():
                raise TimeoutError("stopped before the start signal")
            time.sleep(POLL_S)
        raise TimeoutError(f"no start signal after {timeout} s")

    def start_rns(self) -> RNS.Reticulum:
        spec = self.spec
        node = NodeConfig(
            listen_port=spec.get("listen_port"),
            connect_port=spec.get("connect_port"),
            link_mtu_discovery=spec.get("link_mtu_discovery", True),
        )
        return start_reticulum(self.workdir / "rns", node)


# ---- relay ------------------------------------------------------------------------------------


class MarkerScanner:
    """Counts every byte the relay handled and whether the plaintext marker was ever among them."""

    def __init__(self, marker: bytes | None) -> None:
        self.marker = marker
        self.bytes = {"in": 0, "out": 0, "ctl": 0}
        self.packets = {"in": 0, "out": 0, "ctl": 0}
        self.hits = 0
        self._lock = threading.Lock()

    def __call__(self, direction: str, data: bytes) -> None:
        hit = self.marker is not None and self.marker in data
        with self._lock:
            self.bytes[direction] += len(data)
            self.packets[direction] += 1
            if hit:
                self.hits += 1


def make_engine(kind: str) -> Any:
    if kind == "passthrough":
        from integration.rawforward import PassthroughForwarder

        return PassthroughForwarder()
    from ciris_av_plugin.relay.engine import ForwardingEngine

    # A factory: RelayNode passes its wake-up hook in as the engine's on_pending.
    return lambda on_pending: ForwardingEngine(on_pending=on_pending)


def role_relay(ctx: Ctx) -> None:
    spec = ctx.spec
    ctx.start_rns()
    marker = bytes.fromhex(spec["marker"]) if spec.get("marker") else None
    scanner = MarkerScanner(marker) if spec.get("scan", True) else None
    relay = RelayNode(
        RNS.Identity(),
        make_engine(spec.get("engine", "engine")),
        receive_mode=spec.get("receive_mode", "auto"),
        send_mode=spec.get("send_mode", "auto"),
        observer=scanner,
    )
    relay.start()
    ctx.ready(dest=relay.destination_hash.hex(), receive_mode=relay.receive_mode, send_mode=relay.send_mode,
              pid=os.getpid())
    cpu0 = time.process_time()
    deadline = time.monotonic() + spec.get("duration", 60)
    # Peak queue depth per subscriber link, sampled: proves queues stay bounded during a stall.
    peaks: dict[str, dict[str, Any]] = {}
    next_sample = next_progress = 0.0
    kicked = 0
    ring_peak = 0  # peak bytes held in retransmission rings (sampled with the queues)
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.05)
        if not kicked and (ctx.workdir / "kick").exists():
            # Close every subscriber link once, as the relay does when a removal takes effect.
            kicked = sum(relay.close_link(link_id) for link_id in relay.links("subscriber"))
        if spec.get("progress") and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + PROGRESS_EVERY_S
            subs_now = relay.engine_stats().get("subscribers", {})
            ctx.progress(engine_events=dict(relay.engine_events), subscribers={
                link_hex: {"stalled": bool(sub["stalled"]), "drops": dict(sub["drops"])}
                for link_hex, sub in subs_now.items()})
        if spec.get("sample_queues") and time.monotonic() >= next_sample:
            next_sample = time.monotonic() + 0.2
            subs = relay.engine_stats().get("subscribers", {})
            for link_hex, sub in subs.items():
                peak = peaks.setdefault(link_hex, {"queued_packets": 0, "queued_bytes": 0, "stalled_samples": 0})
                peak.setdefault("drops", {})
                peak["queued_packets"] = max(peak["queued_packets"], sub["queued_packets"])
                peak["queued_bytes"] = max(peak["queued_bytes"], sub["queued_bytes"])
                peak["stalled_samples"] += bool(sub["stalled"])
                peak["drops"] = dict(sub["drops"])  # latest; the engine forgets a link when it closes
            ring = relay.engine_stats().get("retransmit", {}).get("ring_bytes", 0)
            ring_peak = max(ring_peak, ring)
    stats = relay.engine_stats()
    ctx.result(
        counters=relay.counters(),
        engine=_jsonable(stats),
        engine_events=dict(relay.engine_events),
        queue_peaks=peaks,
        ring_peak_bytes=ring_peak,
        maxrss_kb=peak_rss_kb(),
        kicked=kicked,
        receive_mode=relay.receive_mode,
        send_mode=relay.send_mode,
        scan=None if scanner is None else {"bytes": scanner.bytes, "packets": scanner.packets, "marker_hits": scanner.hits},
        cpu_s=time.process_time() - cpu0,
        argv=sys.argv,
        env_keys=sorted(k for k in os.environ if "KEY" in k.upper()),
    )
    relay.stop()


def _jsonable(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return repr(value)


# ---- plumbing smoke roles ---------------------------------------------------------------------

_RAW = struct.Struct(">BBQI")  # packet type, flags, stream id, sequence


def role_raw_pubsub(ctx: Ctx) -> None:
    """A publisher link and a subscriber link in one process, raw packets through the relay."""
    spec = ctx.spec
    ctx.start_rns()
    relay_hash = bytes.fromhex(spec["relay"])
    got: list[int] = []
    got_lock = threading.Lock()

    def on_packet(data: bytes) -> None:
        _, _, _, seq = _RAW.unpack_from(data, 0)
        with got_lock:
            got.append(seq)

    mode = spec.get("receive_mode", "auto")
    sub = RelayClient(RNS.Identity(), relay_hash, receive_mode=mode, on_packet=on_packet)
    pub = RelayClient(RNS.Identity(), relay_hash, receive_mode=mode)
    sub.connect()
    pub.connect()
    stream = spec.get("stream_id", 7)
    sub.subscribe(stream)
    pub.publish(stream)
    mdu = min(sub.mdu, pub.mdu)
    count = spec.get("count", 200)
    sizes = []
    for seq in range(count):
        size = _RAW.size + (seq * 37) % (mdu - _RAW.size + 1)
        sizes.append(size)
        body = _RAW.pack(0x01, 0, stream, seq)
        pub.send(body + bytes(size - len(body)))
        time.sleep(spec.get("gap", 0.002))
    deadline = time.monotonic() + EVENT_TIMEOUT_S  # the event is "all arrived"; the bound only ends a failure
    while time.monotonic() < deadline:
        with got_lock:
            if len(got) >= count:
                break
        time.sleep(POLL_S)
    stats = sub.request("stats", {})
    ctx.result(
        received=len(got),
        unique=len(set(got)),
        in_order=got == sorted(got),
        sent=count,
        sub_mdu=sub.mdu,
        pub_mdu=pub.mdu,
        max_size=max(sizes),
        receive_mode=sub.receive_mode,
        relay_counters=_jsonable(stats.get("relay")),
    )
    sub.close()
    pub.close()


def role_raw_sink(ctx: Ctx) -> None:
    """Subscribes and then does nothing: the test stops this process so it never reads again."""
    spec = ctx.spec
    ctx.start_rns()
    sub = RelayClient(RNS.Identity(), bytes.fromhex(spec["relay"]), receive_mode=spec.get("receive_mode", "auto"))
    sub.connect()
    sub.subscribe(spec.get("stream_id", 7))
    ctx.ready(link_id=sub.link.link_id.hex())
    deadline = time.monotonic() + spec.get("duration", 30)
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.1)
    ctx.result(received=sub.received_packets)


def role_unidentified(ctx: Ctx) -> None:
    """Opens a link but never identifies: the relay must drop its data and close it in ~2 s."""
    spec = ctx.spec
    ctx.start_rns()
    relay_hash = bytes.fromhex(spec["relay"])
    RNS.Transport.request_path(relay_hash)
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not RNS.Transport.has_path(relay_hash) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    dest = RNS.Destination(RNS.Identity.recall(relay_hash), RNS.Destination.OUT, RNS.Destination.SINGLE, "ciris_av", "relay")
    established = threading.Event()
    closed = threading.Event()
    link = RNS.Link(dest, established_callback=lambda _l: established.set(), closed_callback=lambda _l: closed.set())
    established.wait(EVENT_TIMEOUT_S)
    t0 = time.monotonic()
    sent = 0
    # Keep sending until the relay closes the link (~2 s idle); the bound only ends a relay that never does.
    while not closed.is_set() and time.monotonic() - t0 < EVENT_TIMEOUT_S:
        RNS.Packet(link, _RAW.pack(0x01, 0, 7, sent) + bytes(40), create_receipt=False).send()
        sent += 1
        time.sleep(0.05)
    ctx.result(established=established.is_set(), closed=closed.is_set(), closed_after_s=time.monotonic() - t0, sent=sent)


ROLES = {
    "relay": role_relay,
    "raw_pubsub": role_raw_pubsub,
    "unidentified": role_unidentified,
    "raw_sink": role_raw_sink,
}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=spec.get("loglevel", "WARNING"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    timeout = float(spec.get("timeout", 60))
    killer = threading.Timer(timeout, lambda: os._exit(124))
    killer.daemon = True
    killer.start()
    role = spec["role"]
    if role not in ROLES:
        from integration import media_roles

        ROLES.update(media_roles.ROLES)
    try:
        ROLES[role](Ctx(spec))
    except BaseException:
        log.exception("role %s failed", role)
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
