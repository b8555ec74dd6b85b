"""Hook-level integration: a fabric host loads the plugin through its entry point and a stream flows.

Scenarios, each node a separate OS process with its own RNS instance on 127.0.0.1:

* a test host that is *not* ``host.py`` loads the plugin with pluggy from the ``ciris_fabric``
  entry point, calls the hooks as a fabric node would (configure, register, start with a real
  ``RNS.Reticulum`` and identity, status, stopping, stop), and a publisher and a subscriber drive
  a media-shaped stream through the relay dispatcher the plugin registered: every frame arrives
  byte for byte, and the plugin's status hook reports the engine's counters;
* the embedded node (``ciris-av node``, i.e. ``host.py``) does the same from a config file and exits
  0 on SIGTERM after running its stop hooks.

This module is also the child processes' entry point:
``python -m integration.test_hooks_integration ROLE WORKDIR`` with ``WORKDIR/spec.json``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ciris_av_plugin.store.identity import write_json_file
from integration.harness import REPO, Cluster, Node

CHILD_TIMEOUT_S = 60.0
"""Each child kills itself after this (os._exit), so a hung RNS never outlives the test run."""
STREAM_ID = 0xC1A5
VIDEO_TRACK = 1
FRAMES = 60
FPS = 30.0
GOP = 30
KEYFRAME_BYTES = 8000
DELTA_BYTES = 2000


# ---- the parent side (pytest) -----------------------------------------------------------------


def _spawn(cluster: Cluster, name: str, argv: list[str], spec: dict[str, Any]) -> Node:
    workdir = cluster.root / name
    workdir.mkdir(parents=True, exist_ok=True)
    spec = dict(spec, name=name, workdir=str(workdir))
    (workdir / "spec.json").write_text(json.dumps(spec))
    log = open(workdir / "log.txt", "wb")  # noqa: SIM115 - the child owns it
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    log.close()
    node = Node(name, proc, workdir, spec)
    cluster.nodes.append(node)
    return node


def _spawn_role(cluster: Cluster, name: str, role: str, spec: dict[str, Any]) -> Node:
    return _spawn(cluster, name, ["-m", "integration.test_hooks_integration", role, str(cluster.root / name)], spec)


def _drive_stream(cluster: Cluster, port: int, relay_hex: str) -> dict[str, Any]:
    pubsub = _spawn_role(cluster, "pubsub", "pubsub", {"connect_port": port, "relay": relay_hex})
    return pubsub.wait_result(CHILD_TIMEOUT_S)


def _assert_stream_flowed(res: dict[str, Any]) -> None:
    assert res["sent_frames"] == FRAMES
    assert res["complete_frames"] == FRAMES, res
    assert res["corrupt_frames"] == 0, "the relay delivers the publisher's bytes unchanged"
    assert res["first_frame_keyframe"], "a new subscriber starts at a keyframe"


def test_a_fabric_host_loads_the_plugin_by_entry_point_and_drives_a_stream() -> None:
    from ciris_av_plugin.transport.config import free_port

    cluster = Cluster()
    try:
        port = free_port()
        settings = {
            "realtime_av": {"enabled": True, "roles": ["relay"], "max_subscribers_per_stream": 8},
            "net": {"listen_addr": f"127.0.0.1:{port}"},
            "node": {"data_dir": str(cluster.root / "hookhost" / "data"), "identity": "fabric"},
        }
        hookhost = _spawn_role(cluster, "hookhost", "hookhost", {"settings": settings})
        ready = hookhost.wait_ready(30)
        assert ready["dispatchers"] == ["realtime_av.relay"]
        assert ready["welcome_handlers"] == ["realtime_av.mls"]
        (plugin_status,) = ready["status"]
        relay_status = plugin_status["dispatchers"]["realtime_av.relay"]
        assert relay_status["running"] is True

        res = _drive_stream(cluster, port, relay_status["destination"])
        _assert_stream_flowed(res)

        hookhost.signal(signal.SIGTERM)
        final = hookhost.wait_result(20)
        engine = final["status"][0]["dispatchers"]["realtime_av.relay"]["engine"]
        assert engine["frames_in"] >= FRAMES and engine["frames_out"] >= FRAMES
        assert final["stopped"] == ["realtime_av.relay"]
        assert final["status_after_stop"][0]["dispatchers"] == {}
        key_mode = final["identity_file_mode"]
        assert key_mode == "0600", "the node identity was created through the identity store"
    finally:
        cluster.close()


def test_the_embedded_node_runs_from_a_config_file_and_stops_cleanly_on_sigterm() -> None:
    from ciris_av_plugin.transport.config import free_port

    cluster = Cluster()
    try:
        port = free_port()
        workdir = cluster.root / "node"
        workdir.mkdir(parents=True)
        config = workdir / "node.toml"
        config.write_text(
            "realtime_av.enabled = true\n"
            'realtime_av.roles = ["relay"]\n'
            f'net.listen_addr = "127.0.0.1:{port}"\n'
            f'node.data_dir = "{workdir / "data"}"\n'
        )
        ready_file = workdir / "ready.json"
        node = _spawn(
            cluster,
            "node",
            ["-m", "ciris_av_plugin.cli", "-v", "node", "--config", str(config), "--ready-file", str(ready_file)],
            {},
        )
        status = node.wait_ready(30)
        relay = status["plugins"][0]["dispatchers"]["realtime_av.relay"]
        assert status["listen_addr"] == f"127.0.0.1:{port}"

        _assert_stream_flowed(_drive_stream(cluster, port, relay["destination"]))

        node.signal(signal.SIGTERM)
        assert node.proc.wait(20) == 0, node.log_tail()
        log = node.log_tail(20000)
        assert "signal 15: shutting down" in log and "realtime_av.relay stopped" in log
    finally:
        cluster.close()


def test_a_disabled_embedded_node_runs_with_nothing_registered() -> None:
    from ciris_av_plugin.transport.config import free_port

    cluster = Cluster()
    try:
        workdir = cluster.root / "off"
        workdir.mkdir(parents=True)
        ready_file = workdir / "ready.json"
        node = _spawn(
            cluster,
            "off",
            ["-m", "ciris_av_plugin.cli", "node", "--set", "realtime_av.enabled=false",
             "--set", f'net.listen_addr="127.0.0.1:{free_port()}"', "--set", f'node.data_dir="{workdir / "data"}"',
             "--ready-file", str(ready_file)],
            {},
        )
        status = node.wait_ready(30)
        assert status["plugins"] == [{"plugin": "realtime_av", "version": status["plugins"][0]["version"], "dispatchers": {}}]
        node.signal(signal.SIGINT)
        assert node.proc.wait(20) == 0, node.log_tail()
    finally:
        cluster.close()


# ---- the child side ---------------------------------------------------------------------------


def role_hookhost(workdir: Path, spec: dict[str, Any]) -> None:
    """A minimal fabric host, written only against hookspecs.py (it does not use host.py)."""
    import pluggy

    from ciris_av_plugin import hookspecs
    from ciris_av_plugin.context import NodeContext
    from ciris_av_plugin.store.identity import IdentityStore
    from ciris_av_plugin.transport.config import NodeConfig, start_reticulum
    from ciris_av_plugin.transport.identity import rns_identity_from_private_key

    pm = pluggy.PluginManager("ciris_fabric")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints("ciris_fabric")
    config = pm.hook.realtime_av_configure(settings=spec["settings"])
    dispatchers: list[Any] = []
    handlers: list[Any] = []
    pm.hook.register_av_dispatchers(register=dispatchers.append, config=config)
    pm.hook.register_welcome_handlers(register=handlers.append, config=config)

    store = IdentityStore(config.node.data_dir)
    stored = store.load_or_create(config.node.identity)
    reticulum = start_reticulum(workdir / "rns", NodeConfig(listen_port=config.net.listen_addr.port))
    shutdown = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())  # after RNS, which installs its own
    context = NodeContext(
        reticulum=reticulum,
        identity=rns_identity_from_private_key(stored.private_key),
        identity_store=store,
        config=config,
        shutdown=shutdown,
    )
    for dispatcher in dispatchers:
        dispatcher.start(context)
    pm.hook.realtime_av_node_started(context=context)
    write_json_file(
        workdir / "ready.json",
        {
            "dispatchers": [d.name for d in dispatchers],
            "welcome_handlers": [h.name for h in handlers],
            "status": pm.hook.realtime_av_status(),
        },
    )
    shutdown.wait(CHILD_TIMEOUT_S)
    status = pm.hook.realtime_av_status()
    pm.hook.realtime_av_node_stopping()
    stopped = []
    for dispatcher in reversed(dispatchers):
        dispatcher.stop()
        stopped.append(dispatcher.name)
    mode = os.stat(store.path_of(config.node.identity)).st_mode & 0o777
    write_json_file(
        workdir / "result.json",
        {
            "status": status,
            "stopped": stopped,
            "status_after_stop": pm.hook.realtime_av_status(),
            "identity_file_mode": f"{mode:04o}",
        },
    )


def _frame_payload(seq: int) -> bytes:
    """Stand-in ciphertext: deterministic bytes the subscriber can check without keys."""
    size = KEYFRAME_BYTES if seq % GOP == 0 else DELTA_BYTES
    return random.Random(seq).randbytes(size)


def role_pubsub(workdir: Path, spec: dict[str, Any]) -> None:
    """A publisher link and a subscriber link to the relay the plugin registered."""
    import RNS

    from ciris_av_plugin.media.wire import FLAG_KEYFRAME, FragmentHeader, decode_fragment, split
    from ciris_av_plugin.relay.reports import ReceiverReport, TrackReport, encode_receiver_report
    from ciris_av_plugin.transport.client import RelayClient
    from ciris_av_plugin.transport.config import NodeConfig, start_reticulum

    start_reticulum(workdir / "rns", NodeConfig(connect_port=spec["connect_port"]))
    relay_hash = bytes.fromhex(spec["relay"])
    lock = threading.Lock()
    partial: dict[int, bytearray] = {}
    got: dict[int, int] = {}
    complete: list[int] = []
    corrupt: list[int] = []
    first_keyframe: list[bool] = []

    def on_packet(data: bytes) -> None:
        try:
            header, chunk = decode_fragment(data)
        except Exception:
            return
        with lock:
            if not first_keyframe:
                first_keyframe.append(bool(header.flags & FLAG_KEYFRAME))
            buf = partial.setdefault(header.frame_seq, bytearray(header.total_len))
            buf[header.offset : header.offset + len(chunk)] = chunk
            got[header.frame_seq] = got.get(header.frame_seq, 0) + len(chunk)
            if got[header.frame_seq] == header.total_len:
                (complete if bytes(buf) == _frame_payload(header.frame_seq) else corrupt).append(header.frame_seq)

    def on_tick(now: float) -> list[bytes]:
        with lock:
            highest = max(complete) if complete else None
        return [encode_receiver_report(ReceiverReport(STREAM_ID, (TrackReport(VIDEO_TRACK, highest),)))]

    sub = RelayClient(RNS.Identity(), relay_hash, on_packet=on_packet, on_tick=on_tick)
    pub = RelayClient(RNS.Identity(), relay_hash)
    sub.connect()
    pub.connect()
    sub.subscribe(STREAM_ID)
    pub.publish(STREAM_ID)
    start = time.monotonic()
    for seq in range(FRAMES):
        payload = _frame_payload(seq)
        key = seq % GOP == 0
        header = FragmentHeader(
            stream_id=STREAM_ID, track_id=VIDEO_TRACK, frame_seq=seq, gop_id=seq // GOP, offset=0,
            total_len=len(payload), kid=0, flags=FLAG_KEYFRAME if key else 0, priority=64 if key else 128,
        )
        for packet in split(header, payload, pub.mdu):
            pub.send(packet)
        delay = start + (seq + 1) / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with lock:
            if len(complete) + len(corrupt) >= FRAMES:
                break
        time.sleep(0.05)
    with lock:
        result = {
            "sent_frames": FRAMES,
            "complete_frames": len(set(complete)),
            "corrupt_frames": len(corrupt),
            "first_frame_keyframe": bool(first_keyframe and first_keyframe[0]),
        }
    write_json_file(workdir / "result.json", result)
    sub.close()
    pub.close()


CHILD_ROLES = {"hookhost": role_hookhost, "pubsub": role_pubsub}


def _child_main() -> None:
    import logging

    role, workdir = sys.argv[1], Path(sys.argv[2])
    spec = json.loads((workdir / "spec.json").read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    killer = threading.Timer(CHILD_TIMEOUT_S + 10, lambda: os._exit(124))
    killer.daemon = True
    killer.start()
    try:
        CHILD_ROLES[role](workdir, spec)
    except BaseException:
        logging.getLogger("integration.hooks").exception("role %s failed", role)
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # RNS's exit handler detaches stdout; the result file is already written


if __name__ == "__main__":
    _child_main()
