"""Hook-level integration: a fabric host loads the plugin through its entry point; a stream and a join flow.

Scenarios, each node a separate OS process with its own RNS instance on 127.0.0.1:

* a test host that is *not* ``host.py`` loads the plugin with pluggy from the ``ciris_fabric``
  entry point and calls the hooks as a fabric node would (configure, register, start with a real
  ``RNS.Reticulum`` and identity, status, stopping, stop). Through the keyless relay the plugin
  registered, a publisher creates a group and streams end-to-end encrypted frames, a joiner publishes
  KeyPackages, asks to join, is admitted by the publisher's commit, processes the Welcome and
  decrypts the stream; an identity outside the group is refused media. The members are the transport
  engineer's ``integration/join_node.py`` session clients; their identities come from this
  package's identity store (the same 64-byte files RNS writes).
* the embedded node (``ciris-av node``, i.e. ``host.py``) does the same from a config file and exits
  0 on SIGTERM after running its stop hooks; a disabled one registers nothing.

This module is also the entry point of its own child processes (the test host and the outsider):
``python -m integration.test_hooks_integration ROLE WORKDIR`` with ``WORKDIR/spec.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ciris_av_plugin.store.identity import write_json_file
from integration.harness import EVENT_TIMEOUT_S, REPO, Cluster, Node

CHILD_TIMEOUT_S = 300.0
"""Each child kills itself after this (os._exit), so a hung RNS never outlives the test run; the test
takes ~5 s idle and stops its children itself."""
STREAM_ID = 0xC1A5
MEMBER_ENTRY = ["-m", "integration.join_node"]
JOIN_TIMEOUT_S = EVENT_TIMEOUT_S
"""Join request to decrypted frames takes ~1-2 s on loopback; the margin absorbs a loaded machine."""
FRAMES_AFTER_JOIN = 30
"""About a second of video: enough to show the joiner is decrypting the stream, not one stray frame."""


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


def _join_and_stream(cluster: Cluster, port: int, relay_hex: str) -> dict[str, Any]:
    """A publisher creates the stream, a joiner is admitted mid-stream, an outsider is refused."""
    from ciris_av_plugin.store.identity import IdentityStore
    from integration.join_scenario import Driver

    ids = IdentityStore(cluster.root / "members")
    ids.create("pub")
    joiner = ids.create("joiner")
    base = {"role": "member", "connect_port": port, "relay": relay_hex, "stream_id": STREAM_ID,
            "marker": os.urandom(12).hex(), "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 10,
            "bits_per_s": 200_000}
    procs = {
        "pub": cluster.spawn("p-pub", {**base, "members": [
            {"name": "pub", "identity": str(ids.path_of("pub")), "create": True, "publisher": True,
             "allow": [joiner.hexhash], "group_id": os.urandom(16).hex()}]}, entry=MEMBER_ENTRY),
        "joiner": cluster.spawn("p-joiner", {**base, "members": [
            {"name": "joiner", "identity": str(ids.path_of("joiner"))}]}, entry=MEMBER_ENTRY),
    }
    drv = Driver(dict(procs))
    drv.proc_of = dict(procs)
    for node in procs.values():
        node.wait_ready()
    cluster.release()
    drv.cmd("joiner", "join")
    joined = drv.wait("joiner decrypts", lambda: drv.status("joiner")["frames"] >= FRAMES_AFTER_JOIN, JOIN_TIMEOUT_S)
    outsider = _spawn_role(cluster, "outsider", "outsider", {"connect_port": port, "relay": relay_hex})
    refused = outsider.wait_result(CHILD_TIMEOUT_S)
    for name in procs:
        drv.cmd(name, "stop")
    # Final counts from each member's result, not the ~100 ms status snapshots: both sides keep
    # counting while the snapshots are written, so only final figures can be compared.
    status = {name: node.wait_result(EVENT_TIMEOUT_S)["members"][name] for name, node in procs.items()}
    return {"joined": joined, "status": status, "outsider": refused, "joiner_hash": joiner.hexhash}


def _assert_join_and_stream(res: dict[str, Any]) -> None:
    pub, joiner = res["status"]["pub"], res["status"]["joiner"]
    assert res["joined"], f"the joiner never decrypted {FRAMES_AFTER_JOIN} frames: {joiner}"
    assert joiner["identity"] == res["joiner_hash"], "the member ran with the identity store's key file"
    assert joiner["bad_payloads"] == 0, "every decrypted frame is the publisher's plaintext"
    assert joiner["epoch"] == pub["epoch"] == 1, "the joiner is in the epoch of the publisher's Add"
    assert joiner["first_keyframe_at"] is not None and joiner["joined_at"] is not None
    assert pub["frames_sent"] > joiner["frames"] > 0
    from ciris_av_plugin.transport.control import ERR_NOT_MEMBER

    assert res["outsider"] == {"subscribe": ERR_NOT_MEMBER, "publish": ERR_NOT_MEMBER}, "media is for leaves only"


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
        ready = hookhost.wait_ready()
        assert ready["dispatchers"] == ["realtime_av.relay"]
        assert ready["welcome_handlers"] == ["realtime_av.mls"]
        (plugin_status,) = ready["status"]
        relay_status = plugin_status["dispatchers"]["realtime_av.relay"]
        assert relay_status["running"] is True

        _assert_join_and_stream(_join_and_stream(cluster, port, relay_status["destination"]))

        hookhost.signal(signal.SIGTERM)
        final = hookhost.wait_result(EVENT_TIMEOUT_S)
        relay_final = final["status"][0]["dispatchers"]["realtime_av.relay"]
        assert relay_final["engine"]["frames_in"] >= FRAMES_AFTER_JOIN
        assert relay_final["engine"]["frames_out"] >= FRAMES_AFTER_JOIN
        assert relay_final["delivery"]["streams_registered"] == 1
        assert relay_final["delivery"]["join_requests"] >= 1
        assert relay_final["directory"]["published"] >= 1, "the joiner's KeyPackages went to the directory"
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
        status = node.wait_ready()
        relay = status["plugins"][0]["dispatchers"]["realtime_av.relay"]
        assert status["listen_addr"] == f"127.0.0.1:{port}"

        _assert_join_and_stream(_join_and_stream(cluster, port, relay["destination"]))

        node.signal(signal.SIGTERM)
        assert node.proc.wait(EVENT_TIMEOUT_S) == 0, node.log_tail()
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
        status = node.wait_ready()
        assert status["plugins"] == [{"plugin": "realtime_av", "version": status["plugins"][0]["version"], "dispatchers": {}}]
        node.signal(signal.SIGINT)
        assert node.proc.wait(EVENT_TIMEOUT_S) == 0, node.log_tail()
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


def role_outsider(workdir: Path, spec: dict[str, Any]) -> None:
    """An identified link from an identity outside the group: the relay must refuse it media."""
    import RNS

    from ciris_av_plugin.transport.client import RelayClient
    from ciris_av_plugin.transport.config import NodeConfig, start_reticulum
    from ciris_av_plugin.transport.errors import ControlError

    start_reticulum(workdir / "rns", NodeConfig(connect_port=spec["connect_port"]))
    result: dict[str, str] = {}
    for verb in ("subscribe", "publish"):
        client = RelayClient(RNS.Identity(), bytes.fromhex(spec["relay"]))
        client.connect()
        try:
            getattr(client, verb)(STREAM_ID)
            result[verb] = "accepted"
        except ControlError as exc:
            result[verb] = exc.code
        finally:
            client.close()
    write_json_file(workdir / "result.json", result)


CHILD_ROLES = {"hookhost": role_hookhost, "outsider": role_outsider}


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
