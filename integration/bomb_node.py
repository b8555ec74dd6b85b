"""Children of ``test_resource_bomb.py``: a relay that reports its memory and thread deaths, an
attacker that crafts Resource advertisements as a hostile peer would, and a legitimate client.

``python -m integration.bomb_node SPEC``; the roles run under ``integration.node.main`` (timeout
timer, ready/result files). The attacker patches *its own* RNS only: it is the hostile side.
"""

from __future__ import annotations

import bz2
import gc
import os
import threading
import time
import traceback
from typing import Any

import RNS
from RNS.vendor import umsgpack

from ciris_av_plugin.transport import control
from ciris_av_plugin.transport.client import RelayClient
from ciris_av_plugin.transport.relay import RelayNode
from integration import node
from integration.harness import peak_rss_kb, write_json
from integration.node import Ctx

PATH_ECHO = "echo"

# The bomb's inflated size: RNS inflates up to 64 MiB (Resource.AUTO_COMPRESS_MAX_SIZE).
BOMB_BYTES = 60 * 1024 * 1024


def _vm_kb(field: str) -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field.encode() + b":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``5`` in clear_refs), so the peak is the attack's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def role_bomb_relay(ctx: Ctx) -> None:
    """A relay with one extra request (``echo``: the size of the blob it got), watching its threads."""
    spec = ctx.spec
    deaths = _watch_thread_deaths()
    ctx.start_rns()
    relay = RelayNode(RNS.Identity(), node.make_engine("passthrough"), receive_mode=spec.get("receive_mode", "auto"))

    def echo(state: Any, body: dict[str, Any], _identity: Any) -> dict[str, Any]:
        blob = body.get("blob", b"")
        return {"size": len(blob) if isinstance(blob, bytes) else -1}

    relay.add_request_handler(PATH_ECHO, echo)
    relay.start()
    ctx.ready(dest=relay.destination_hash.hex(), receive_mode=relay.receive_mode, pid=os.getpid())
    baseline: dict[str, Any] | None = None
    deadline = time.monotonic() + spec.get("duration", 60)
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.02)
        if baseline is None and (ctx.workdir / "baseline").exists():
            gc.collect()
            baseline = {"rss_kb": _vm_kb("VmRSS"), "hwm_reset": _reset_peak_rss(), "hwm_kb": _vm_kb("VmHWM")}
            write_json(ctx.workdir / "baseline.json", baseline)
    ctx.result(
        counters=relay.counters(),
        thread_deaths=deaths,
        baseline=baseline,
        hwm_after_kb=peak_rss_kb(),
        rss_after_kb=_vm_kb("VmRSS"),
        receive_mode=relay.receive_mode,
    )
    relay.stop()


def _connect(relay_hash: bytes) -> RelayClient:
    client = RelayClient(RNS.Identity(), relay_hash)
    client.connect()
    return client


def role_bomb_member(ctx: Ctx) -> None:
    """A legitimate client: a request above the link MDU (an uncompressed Resource) and a small one."""
    spec = ctx.spec
    ctx.start_rns()
    client = _connect(bytes.fromhex(spec["relay"]))
    blob = os.urandom(spec.get("blob", 200_000))
    started = time.monotonic()
    reply = client.request(PATH_ECHO, {"blob": blob}, timeout=spec.get("request_timeout", 60.0))
    stats = client.request(control.PATH_STATS, {})
    ctx.result(mdu=client.mdu, sent=len(blob), echoed=reply.get("size"), seconds=time.monotonic() - started,
               stats_ok="relay" in stats, guard=client.resource_guard.counters())
    client.close()


# ---- the attacker ------------------------------------------------------------------------------


def _memoize_bz2() -> None:
    """Compress the identical bomb once, however many Resources carry it (attacker-side speed only)."""
    original = bz2.compress
    cache: dict[int, tuple[bytes, bytes]] = {}

    def compress(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        key = len(data)
        hit = cache.get(key)
        if hit is None or hit[0] != data[:4096] + data[-4096:]:
            hit = (data[:4096] + data[-4096:], original(data, *args, **kwargs))
            cache[key] = hit
        return hit[1]

    bz2.compress = compress  # type: ignore[assignment]


def _packed_request(path: str, body: bytes) -> bytes:
    """What ``Link.request`` packs: [requested_at, path hash, body]."""
    return umsgpack.packb([time.time(), RNS.Identity.truncated_hash(path.encode()), body])


def _crafted(link: RNS.Link, payload: bytes, *, compress: bool, declared: int | None, original_hash: bytes | None,
             done: threading.Event, statuses: list[int]) -> RNS.Resource:
    """A real request Resource whose advertisement lies where an attacker's would."""

    def concluded(resource: RNS.Resource) -> None:
        statuses.append(resource.status)
        done.set()

    resource = RNS.Resource(payload, link, advertise=False, auto_compress=compress, callback=concluded,
                            request_id=RNS.Identity.truncated_hash(payload), is_response=False, timeout=5)
    if declared is not None:
        resource.total_size = declared  # d: the only size RNS checks against max_request_size
    if original_hash is not None:
        resource.original_hash = original_hash  # o: names the receiver's storage file
    return resource


def role_bomb_attacker(ctx: Ctx) -> None:
    """Runs ``spec["attacks"]`` in order; each opens its links, advertises at once, waits for every verdict."""
    spec = ctx.spec
    ctx.start_rns()
    # One segment whatever the size, as a hand-built advertisement would be (RNS would split > 1 MiB).
    RNS.Resource.MAX_EFFICIENT_SIZE = 256 * 1024 * 1024
    _memoize_bz2()
    relay_hash = bytes.fromhex(spec["relay"])
    wait = spec.get("verdict_timeout", 120.0)
    report: list[dict[str, Any]] = []
    for attack in spec["attacks"]:
        kind, n = attack["kind"], attack.get("links", 1)
        clients = [_connect(relay_hash) for _ in range(n)]
        shared_o = os.urandom(32)
        if kind == "bomb":
            # ~150 bytes on the wire, 60 MiB once inflated; declares 100 bytes.
            payload = _packed_request(PATH_ECHO, control.pack_body({"blob": bytes(BOMB_BYTES)}))
            make = {"compress": True, "declared": 100, "original_hash": shared_o if n > 1 else None}
        elif kind == "shared-original-hash":
            # Honest sizes, one storage file name for all: RNS's assemble threads race on it.
            payload = b""
            make = {"compress": False, "declared": None, "original_hash": shared_o}
        elif kind == "oversized":
            # 2 MiB of parts (RNS allows 3 MiB) behind a declared size of 100 bytes.
            payload = _packed_request(PATH_ECHO, control.pack_body({"blob": os.urandom(2 * 1024 * 1024)}))
            make = {"compress": False, "declared": 100, "original_hash": None}
        else:
            raise ValueError(kind)
        events, statuses, resources = [], [], []
        started = time.monotonic()
        for client in clients:
            body = payload or _packed_request(PATH_ECHO, control.pack_body({"blob": os.urandom(100_000)}))
            done = threading.Event()
            events.append(done)
            resources.append(_crafted(client.link, body, done=done, statuses=statuses, **make))
        for resource in resources:
            resource.advertise()
        finished = all(done.wait(max(0.0, started + wait - time.monotonic())) for done in events)
        report.append({
            "kind": kind,
            "links": n,
            "finished": finished,
            "statuses": sorted(statuses),
            "rejected": statuses.count(RNS.Resource.REJECTED),
            "complete": statuses.count(RNS.Resource.COMPLETE),
            "advert_bytes": [len(RNS.ResourceAdvertisement(r, request_id=r.request_id).pack()) for r in resources[:1]],
            "transfer_size": resources[0].size,
            "seconds": time.monotonic() - started,
        })
        for client in clients:
            client.close()
    ctx.result(attacks=report)


# ---- a hostile relay and its victim ------------------------------------------------------------


def _watch_thread_deaths() -> list[str]:
    deaths: list[str] = []
    previous_hook = threading.excepthook

    def on_thread_death(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        deaths.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")
        previous_hook(args)

    threading.excepthook = on_thread_death
    return deaths


def role_hostile_relay(ctx: Ctx) -> None:
    """Answers ``identify-confirm`` like a relay, and ``stats`` with a 60 MiB bz2 bomb declaring 100 bytes."""
    from ciris_av_plugin.protocol.control import APP_NAME, RELAY_ASPECT

    spec = ctx.spec
    ctx.start_rns()
    RNS.Resource.MAX_EFFICIENT_SIZE = 256 * 1024 * 1024  # one segment, as a hand-built advertisement
    dest = RNS.Destination(RNS.Identity(), RNS.Destination.IN, RNS.Destination.SINGLE, APP_NAME, RELAY_ASPECT)
    links: dict[bytes, RNS.Link] = {}
    dest.set_link_established_callback(lambda link: links.__setitem__(link.link_id, link))
    bombs: list[int] = []

    def confirm(path: str, data: Any, request_id: bytes, link_id: bytes, identity: Any, at: float) -> bytes:
        return control.pack_body({"identity": identity.hash if identity else b"", "mdu": 431})

    def events(path: str, data: Any, request_id: bytes, link_id: bytes, identity: Any, at: float) -> bytes:
        time.sleep(control.EVENTS_POLL_HOLD)
        return control.pack_body({"events": []})

    def bomb(path: str, data: Any, request_id: bytes, link_id: bytes, identity: Any, at: float) -> None:
        payload = umsgpack.packb([request_id, control.pack_body({"blob": bytes(BOMB_BYTES)})])
        resource = RNS.Resource(payload, links[link_id], advertise=False, auto_compress=True, request_id=request_id,
                                is_response=True, timeout=5)
        resource.total_size = 100  # d: the only size the member's RNS checks (max_response_size)
        resource.advertise()
        bombs.append(resource.size)
        return None  # RNS sends nothing itself

    for path, fn in ((control.PATH_IDENTIFY_CONFIRM, confirm), (control.PATH_EVENTS, events),
                     (control.PATH_STATS, bomb)):
        dest.register_request_handler(path, response_generator=fn, allow=RNS.Destination.ALLOW_ALL)
    dest.announce()
    ctx.ready(dest=dest.hash.hex())
    deadline = time.monotonic() + spec.get("duration", 60)
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.05)
    ctx.result(bombs=bombs)


def role_bomb_victim(ctx: Ctx) -> None:
    """A member asking a hostile relay for ``stats``: it must refuse the bomb and stay small."""
    from ciris_av_plugin.transport.errors import TransportError

    spec = ctx.spec
    deaths = _watch_thread_deaths()
    ctx.start_rns()
    client = _connect(bytes.fromhex(spec["relay"]))
    gc.collect()
    rss_kb, reset = _vm_kb("VmRSS"), _reset_peak_rss()
    outcome = "answered"
    try:
        client.request(control.PATH_STATS, {}, timeout=spec.get("request_timeout", 10.0))
    except TransportError as exc:
        outcome = type(exc).__name__
    ctx.result(outcome=outcome, guard=client.resource_guard.counters(), thread_deaths=deaths, rss_kb=rss_kb,
               hwm_reset=reset, hwm_after_kb=peak_rss_kb())
    client.close()


ROLES = {
    "bomb_relay": role_bomb_relay,
    "bomb_member": role_bomb_member,
    "bomb_attacker": role_bomb_attacker,
    "hostile_relay": role_hostile_relay,
    "bomb_victim": role_bomb_victim,
}


def _guarded(role: Any) -> Any:
    def run(ctx: Ctx) -> None:
        try:
            role(ctx)
        except BaseException:
            (ctx.workdir / "error.txt").write_text(traceback.format_exc())
            raise

    return run


if __name__ == "__main__":
    node.ROLES.update({name: _guarded(fn) for name, fn in ROLES.items()})
    node.main()
