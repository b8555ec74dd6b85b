"""Rejoin and ghost removal with the real CLI: ``ciris-av node``, ``publish`` and ``watch`` processes.

* One identity runs ``ciris-av watch --stay`` three times in a row (stop, start again). Each process
  has only its own KeyPackages' private keys and leaves its leaf behind; each must still join (the
  directory hands out a KeyPackage the new process named; the publisher removes the stale leaf in
  the commit that re-adds it), so the roster is back to 2 members every time, never 3.
* ``kill -9`` of a joined watcher: no leave, its links just go quiet. The relay notices after the
  configured ``realtime_av.member_link_timeout_secs`` and the publisher removes it (members 2 → 1).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from integration.harness import Cluster, Node
from integration.test_cli_publish_watch import _ciris_av, _exit_code, _wait_for_line

START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
WATCH_S = 6.0
# A join takes ~1 s on an idle machine (KeyPackages, join request, commit, Welcome).
JOINED_TIMEOUT_S = 30.0
LINK_TIMEOUT_S = 5  # the smallest the config allows; the default is 30
REMOVED_TIMEOUT_S = 10 * LINK_TIMEOUT_S + 30.0
STATUS = re.compile(r"^t=\s*\d+s .*epoch=(\d+) members=(\d+)$", re.MULTILINE)


def _node(cluster: Cluster, link_timeout: int | None = None) -> tuple[Node, list[str], str, dict]:
    from ciris_av_plugin.store.identity import IdentityStore
    from ciris_av_plugin.transport.config import free_port

    root = cluster.root
    port = free_port()
    config = root / "node.toml"
    extra = "" if link_timeout is None else f"realtime_av.member_link_timeout_secs = {link_timeout}\n"
    config.write_text(
        "realtime_av.enabled = true\n"
        'realtime_av.roles = ["relay"]\n'
        f'net.listen_addr = "127.0.0.1:{port}"\n'
        f'node.data_dir = "{root / "node-data"}"\n' + extra
    )
    ids = IdentityStore(root / "people")
    ids.create("alice")
    bob = ids.create("bob")
    node = _ciris_av(cluster, "node", "node", "--config", str(config), "--ready-file", str(root / "node" / "ready.json"))
    status = node.wait_ready(START_TIMEOUT_S)["plugins"][0]["dispatchers"]["realtime_av.relay"]
    relay = status["destination"]
    common = ["--relay", relay, "--connect", f"127.0.0.1:{port}", "--data-dir", str(root / "people"),
              "--stream-id", "77"]
    return node, common, bob.hexhash, status


def _publisher(cluster: Cluster, common: list[str]) -> Node:
    pub = _ciris_av(cluster, "pub", "publish", *common, "--identity", "alice", "--admit-all",
                    "--seconds", "600", "--bitrate", "150000")
    _wait_for_line(pub, r"^publishing stream 77 .*admitting everyone$", START_TIMEOUT_S)
    return pub


def _members_now(pub: Node) -> int:
    found = STATUS.findall(pub.log_tail(100_000))
    return int(found[-1][1]) if found else 0


def _wait_members(pub: Node, n: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _members_now(pub) == n:
            return time.monotonic() - start
        assert pub.proc.poll() is None, pub.log_tail()
        time.sleep(0.1)
    raise AssertionError(f"publisher never showed members={n} in {timeout} s: {pub.log_tail()}")


def test_watch_stop_watch_again_three_times_with_one_identity(tmp_path: Path) -> None:
    cluster = Cluster()
    try:
        node, common, bob, _ = _node(cluster)
        pub = _publisher(cluster, common)
        for run in range(3):
            watch = _ciris_av(cluster, f"watch{run}", "watch", *common, "--identity", "bob", "--stay",
                              "--seconds", str(WATCH_S))
            assert _exit_code(watch, WATCH_S + JOINED_TIMEOUT_S + EXIT_TIMEOUT_S) == 0, watch.log_tail()
            out = watch.log_tail(100_000)
            assert f"as <{bob}>" in out
            summary = re.search(r"^watched (\d+) frames .* at epoch (\d+); joined in", out, re.MULTILINE)
            assert summary and int(summary.group(1)) > 0, f"run {run} never joined or saw no frames: {out}"
            # the watcher's own view of the roster: the publisher and itself, no stale leaf of its own
            assert {m for _, m in STATUS.findall(out)} == {"2"}, out
            assert int(summary.group(2)) >= run + 1
            _wait_members(pub, 2, JOINED_TIMEOUT_S)
        pub_out = pub.log_tail(100_000)
        assert {m for _, m in STATUS.findall(pub_out)} <= {"1", "2"}, f"a stale leaf was counted: {pub_out}"
        assert _members_now(pub) == 2
        pub.signal(signal.SIGINT)
        assert _exit_code(pub, EXIT_TIMEOUT_S) == 0, pub.log_tail()
        node.signal(signal.SIGTERM)
        assert _exit_code(node, EXIT_TIMEOUT_S) == 0, node.log_tail()
    finally:
        cluster.close()


def test_a_killed_watcher_leaves_the_roster_within_the_configured_time() -> None:
    cluster = Cluster()
    try:
        node, common, _, status = _node(cluster, link_timeout=LINK_TIMEOUT_S)
        assert status["member_link_timeout_s"] == LINK_TIMEOUT_S  # the config key reached the relay
        pub = _publisher(cluster, common)
        watch = _ciris_av(cluster, "watch", "watch", *common, "--identity", "bob", "--seconds", "600")
        _wait_for_line(watch, r"^t=\s*\d+s frames=[1-9]\d* .*members=2$", JOINED_TIMEOUT_S)
        _wait_members(pub, 2, JOINED_TIMEOUT_S)
        watch.signal(signal.SIGKILL)
        took = _wait_members(pub, 1, REMOVED_TIMEOUT_S)
        # the relay waits the configured time of silence first (status lines come once a second)
        assert took >= LINK_TIMEOUT_S - 1.5, f"removed after {took:.1f} s, before the {LINK_TIMEOUT_S} s timeout"
        assert re.search(r"epoch=2 members=1$", pub.log_tail(100_000), re.MULTILINE), pub.log_tail()
        pub.signal(signal.SIGINT)
        assert _exit_code(pub, EXIT_TIMEOUT_S) == 0, pub.log_tail()
    finally:
        cluster.close()
