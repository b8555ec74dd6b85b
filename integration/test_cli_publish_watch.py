"""``ciris-av publish`` and ``ciris-av watch`` against ``ciris-av node``: three OS processes on 127.0.0.1.

The node runs from a config on a free port and writes its relay destination to a --ready-file; the
publisher creates the stream and admits everyone; the watcher joins, prints live per-second lines
and leaves when interrupted. Each step waits for the line that says the previous one happened (no
``--seconds`` windows: a slow start must not end a run before the join); every process must exit 0
on SIGINT/SIGTERM within bounded time; leftovers are killed in ``finally``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from integration.harness import EVENT_TIMEOUT_S, POLL_S, READY_TIMEOUT_S, REPO, Cluster, Node

STREAM_ID = 4242
START_TIMEOUT_S = READY_TIMEOUT_S
"""A CLI process starting RNS and connecting: ~1-2 s idle."""
EXIT_TIMEOUT_S = EVENT_TIMEOUT_S
"""A CLI process finishing after SIGINT/SIGTERM (leave, close links): well under 2 s idle."""


def _ciris_av(cluster: Cluster, name: str, *argv: str) -> Node:
    workdir = cluster.root / name
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "log.txt", "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "ciris_av_plugin.cli", *argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
    )
    log.close()
    node = Node(name, proc, workdir, {})
    cluster.nodes.append(node)
    return node


def _wait_for_line(node: Node, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, node.log_tail(100_000), re.MULTILINE)
        if match:
            return match.group(0)
        if node.proc.poll() is not None:
            raise AssertionError(f"{node.name} exited {node.proc.returncode} before {pattern!r}: {node.log_tail()}")
        time.sleep(POLL_S)
    raise AssertionError(f"{node.name}: no {pattern!r} after {timeout} s: {node.log_tail()}")


def _exit_code(node: Node, timeout: float) -> int:
    try:
        return node.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{node.name} still running after {timeout} s: {node.log_tail()}") from None


def test_publish_and_watch_through_an_embedded_node() -> None:
    from ciris_av_plugin.store.identity import IdentityStore
    from ciris_av_plugin.transport.config import free_port

    cluster = Cluster()
    try:
        port = free_port()
        root = cluster.root
        config = root / "node.toml"
        config.write_text(
            "realtime_av.enabled = true\n"
            'realtime_av.roles = ["relay"]\n'
            f'net.listen_addr = "127.0.0.1:{port}"\n'
            f'node.data_dir = "{root / "node-data"}"\n'
        )
        ids = IdentityStore(root / "people")
        ids.create("alice")
        bob = ids.create("bob")

        node = _ciris_av(cluster, "node", "node", "--config", str(config), "--ready-file", str(root / "node" / "ready.json"))
        relay = node.wait_ready(START_TIMEOUT_S)["plugins"][0]["dispatchers"]["realtime_av.relay"]["destination"]
        common = ["--relay", relay, "--connect", f"127.0.0.1:{port}", "--data-dir", str(root / "people"),
                  "--stream-id", str(STREAM_ID)]

        pub = _ciris_av(cluster, "pub", "publish", *common, "--identity", "alice", "--admit-all",
                        "--bitrate", "200000")
        _wait_for_line(pub, rf"^publishing stream {STREAM_ID} .*admitting everyone$", START_TIMEOUT_S)
        watch = _ciris_av(cluster, "watch", "watch", *common, "--identity", "bob", "--same-host-clock")
        live = r"^t=\s*\d+s frames=[1-9]\d* fps=\d+ bitrate=\d+ kbit/s jitter=[\d.]+ms latency=[\d.]+ms epoch=(\d+) members=(\d+)$"
        _wait_for_line(watch, live, START_TIMEOUT_S + EVENT_TIMEOUT_S)
        _wait_for_line(pub, r"^t=.* epoch=1 members=2$", EVENT_TIMEOUT_S)  # the publisher saw the admission
        watch.signal(signal.SIGINT)
        assert _exit_code(watch, EXIT_TIMEOUT_S) == 0, watch.log_tail()
        out = watch.log_tail(100_000)
        assert f"as <{bob.hexhash}>" in out, "the watcher ran with the identity store's key"
        lines = re.findall(live, out, re.MULTILINE)
        epoch, members = (int(x) for x in lines[-1])
        assert epoch >= 1 and members == 2, out
        summary = re.search(r"^watched (\d+) frames .* at epoch (\d+); joined in", out, re.MULTILINE)
        assert summary and int(summary.group(1)) > 0 and int(summary.group(2)) >= 1, out
        frames = int(summary.group(1))

        pub.signal(signal.SIGINT)
        assert _exit_code(pub, EXIT_TIMEOUT_S) == 0, pub.log_tail()
        pub_out = pub.log_tail(100_000)
        published = re.search(r"^published (\d+) frames", pub_out, re.MULTILINE)
        assert published and int(published.group(1)) > frames, pub_out

        node.signal(signal.SIGTERM)
        assert _exit_code(node, EXIT_TIMEOUT_S) == 0, node.log_tail()
    finally:
        cluster.close()


def test_watch_exits_1_when_it_never_joins(tmp_path: Path) -> None:
    """No node at all: RNS finds no path to the relay, so the watcher fails fast and says so."""
    from ciris_av_plugin.store.identity import IdentityStore
    from ciris_av_plugin.transport.config import free_port

    cluster = Cluster()
    try:
        IdentityStore(tmp_path).create("carol")
        watch = _ciris_av(cluster, "watch", "watch", "--relay", "00" * 16, "--connect", f"127.0.0.1:{free_port()}",
                          "--data-dir", str(tmp_path), "--identity", "carol", "--stream-id", "1", "--seconds", "2")
        assert _exit_code(watch, 30) == 1, watch.log_tail()
    finally:
        cluster.close()
