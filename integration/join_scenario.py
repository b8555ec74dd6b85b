"""The joiner path over real RNS (issue 5): join mid-stream, leave, removal, a commit race, relay restart.

Processes (each its own RNS instance and config directory on 127.0.0.1, see ``join_node.py``): a
delivery relay over a SQLite file; the publisher (creates the group, admits identities on its allow
list, streams ~400 kbit/s of media-shaped frames); ``sub1`` (the remaining subscriber, capturing every
media packet it receives); ``sub2`` (leaves); ``joiner`` (joins mid-stream, later removed); ``joiner2``
(joins after the relay restarted). Last, the publisher process stops and a new one restores its
state file. :func:`run_join_scenario` returns every child's report and named
checks; ``integration/test_join.py`` asserts them. With ``full=False`` it stops after the removal
(and a forged-KID probe of the relay), skipping the commit race and both restarts: that is the
part ``python -m integration.demo`` runs and summarises; ``progress`` receives a line per step and check.

The removal promise is checked from ciphertext: the packets ``sub1`` captured are fed to a fresh
opener holding the removed member's retained state (its last epoch before removal); no frame of an
epoch at or after its removal may open.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import RNS

from ciris_av_plugin.media.removal_promise import check_removal_promise
from ciris_av_plugin.mls import Group
from ciris_av_plugin.store.sqlite import SQLiteStore
from ciris_av_plugin.transport.config import free_port
from integration.harness import EVENT_TIMEOUT_S, Cluster, Node, read_json, wait_until
from integration.scenario import ScenarioReport

STREAM_ID = 0x5E55
ENTRY = ["-m", "integration.join_node"]
CHILD_TIMEOUT_S = 300.0
"""Each child's own hard stop: the full scenario takes ~20 s idle and ~1-2 min on a loaded 2-core
machine; the parent stops every child when it is done."""
RESTART_TIMEOUT_S = 120.0
"""Bound on a restarted relay or publisher being back in the stream: ~3-10 s idle (RNS reconnects,
re-identification, re-subscription), so > 10x."""


@dataclass
class JoinReport(ScenarioReport):
    """The Layer-2 scenario's report plus the measured join figures (seconds)."""

    figures: dict[str, float] = field(default_factory=dict)
    progress: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    """Called with one line per step and per check as the scenario runs (the demo prints them)."""

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        super().check(name, ok, detail)
        if self.progress is not None:
            short = detail if len(detail) <= 90 else detail[:87] + "..."
            self.progress(f"[{'ok' if ok else 'FAIL'}] {name}" + (f"  ({short})" if short else ""))

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)


class Driver:
    """Writes command files to member processes and reads their status files."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes
        self.proc_of: dict[str, Node] = {}
        self._n = 0

    def cmd(self, member: str, do: str, **kw: Any) -> None:
        self._n += 1
        node = self.proc_of[member]
        path = node.workdir / f"cmd-{self._n:04d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"member": member, "do": do, **kw}))
        os.replace(tmp, path)

    def converged(self, *members: str) -> bool:
        """Wait until ``members`` report one and the same epoch (every commit so far processed)."""
        def same() -> bool:
            epochs = {self.status(m)["epoch"] for m in members}
            return len(epochs) == 1 and None not in epochs

        return self.wait(f"{', '.join(members)} on one epoch", same)

    def status(self, member: str) -> dict[str, Any]:
        path = self.proc_of[member].workdir / "status.json"
        try:
            return json.loads(path.read_text()).get(member, {})
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait(self, what: str, pred: Any, timeout: float = EVENT_TIMEOUT_S) -> bool:
        """Wait for a state the members report; False after ``timeout`` (the check that follows fails)."""
        return wait_until(what, pred, timeout, watch=list(self.nodes.values()))


def _identity_file(root: Path, name: str) -> tuple[str, str]:
    ident = RNS.Identity()
    path = root / "ids" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ident.to_file(str(path))
    return str(path), ident.hash.hex()


def read_capture(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    out, pos = [], 0
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + n > len(data):
            break
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def removal_promise(capture: list[bytes], retained: bytes, relay_db: str) -> dict[str, Any]:
    """Replay the relay's commit log against the removed member's retained state, then feed it the
    ciphertext a remaining member captured; count what opens by KID epoch."""
    group_epoch = Group.from_bytes(retained).epoch
    with SQLiteStore(relay_db) as store:
        commits = [c.message for c in store.commits_since(STREAM_ID, group_epoch)]
    return check_removal_promise(capture, retained, commits, now=time.time()).to_dict()


def run_join_scenario(
    *, keep: bool = False, bits_per_s: float = 400_000, full: bool = True,
    progress: Callable[[str], None] | None = None,
) -> JoinReport:
    """Run the scenario; ``full=False`` ends after the removal and the forged-KID probe (no race, no
    restarts, no ``joiner2``); ``progress`` gets a line per step and check as they happen."""
    report = JoinReport(progress=progress)
    started = time.monotonic()
    cluster = Cluster(keep=keep)
    root = cluster.root
    marker = os.urandom(12).hex()
    names = ["pub", "sub1", "sub2", "joiner", "joiner2"]
    ids = {n: _identity_file(root, n) for n in names}
    relay_id, _ = _identity_file(root, "relay")
    allow = [ids[n][1] for n in names if n != "pub"]
    port = free_port()
    db = str(root / "relay-db" / "relay.db")
    relay_spec = {"role": "delivery_relay", "listen_port": port, "identity": relay_id, "db": db,
                  "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 20}
    try:
        relay = cluster.spawn("relay", relay_spec, entry=ENTRY)
        dest = relay.wait_ready()["dest"]
        report.say(f"relay up on 127.0.0.1:{port}, destination {dest} (no group secrets)")
        base = {"role": "member", "connect_port": port, "relay": dest, "stream_id": STREAM_ID, "marker": marker,
                "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 20,
                "bits_per_s": bits_per_s}

        def member(name: str, **kw: Any) -> dict[str, Any]:
            return {"name": name, "identity": ids[name][0], **kw}

        procs = {
            "pub": cluster.spawn("p-pub", {**base, "members": [
                member("pub", create=True, publisher=True, allow=allow, group_id=os.urandom(16).hex())]}, entry=ENTRY),
            "sub1": cluster.spawn("p-sub1", {**base, "members": [member("sub1", capture=True)]}, entry=ENTRY),
            "sub2": cluster.spawn("p-sub2", {**base, "members": [member("sub2")]}, entry=ENTRY),
            "joiner": cluster.spawn("p-joiner", {**base, "members": [member("joiner")]}, entry=ENTRY),
        }
        if full:
            procs["joiner2"] = cluster.spawn("p-joiner2", {**base, "members": [member("joiner2")]}, entry=ENTRY)
        nodes = {"relay": relay, **procs}
        drv = Driver(nodes)
        drv.proc_of = dict(procs)
        for node in procs.values():
            node.wait_ready()
        cluster.release()  # every member connected (the publisher created the group): media may start
        report.say(f"publisher created the group (epoch {drv.status('pub').get('epoch')}) and streams "
                   f"~{bits_per_s / 1000:.0f} kbit/s; processes up: {', '.join(procs)}")

        # 1. relay + publisher + two subscribers streaming (they join once the stream is registered)
        report.say("sub1 and sub2 publish KeyPackages and ask to join")
        drv.cmd("sub1", "join")
        drv.cmd("sub2", "join")
        ok = drv.wait("subscribers joined", lambda: drv.status("sub1")["frames"] > 30
                      and drv.status("sub2")["frames"] > 30)
        report.check("two subscribers joined and decrypt the stream", ok,
                     f"sub1 {drv.status('sub1').get('frames')} sub2 {drv.status('sub2').get('frames')} frames")

        # 2. a joiner joins mid-stream
        report.say("late joiner asks to join mid-stream")
        drv.cmd("joiner", "join")
        ok = drv.wait("joiner decrypts", lambda: drv.status("joiner")["frames"] > 30
                      and drv.status("joiner")["first_keyframe_at"])
        j = drv.status("joiner")
        report.check("a joiner joins mid-stream and decrypts frames", ok and j.get("bad_payloads") == 0,
                     f"{j.get('frames')} frames, epoch {j.get('epoch')}")
        if j.get("first_frame_at") and j.get("join_requested_at"):
            report.figures["join_to_first_frame_s"] = j["first_frame_at"] - j["join_requested_at"]
        if j.get("first_keyframe_at") and j.get("join_requested_at"):
            report.figures["join_to_first_keyframe_s"] = j["first_keyframe_at"] - j["join_requested_at"]
        report.check("join latency recorded", "join_to_first_frame_s" in report.figures,
                     json.dumps(report.figures))

        # 3. a member leaves, another is removed. Proposals name an epoch: each step starts once every
        # member processed the last commit (a loaded member can lag, and its proposal would be stale).
        drv.converged("pub", "sub1", "sub2", "joiner")
        report.say("sub2 leaves (proposes its own Remove)")
        e0 = drv.status("pub")["epoch"]
        drv.cmd("sub2", "leave")
        ok = drv.wait("sub2 out", lambda: drv.status("sub2")["removed_at_epoch"] is not None
                      and drv.status("pub")["epoch"] == e0 + 1)
        report.check("a leaver's self-Remove is committed and it learns it is out", ok,
                     f"pub epoch {drv.status('pub').get('epoch')}, sub2 {drv.status('sub2').get('removed_at_epoch')}")
        drv.converged("pub", "sub1", "joiner")
        report.say("publisher removes the late joiner")
        drv.cmd("pub", "remove", identity=ids["joiner"][1])
        ok = drv.wait("joiner removed", lambda: drv.status("joiner")["removed_at_epoch"] is not None)
        removal_epoch = drv.status("joiner").get("removed_at_epoch")
        report.check("the removed member learns it is out", ok, f"removed at epoch {removal_epoch}")
        # let frames of the new epoch reach sub1's capture
        drv.wait("frames after removal",
                 lambda: drv.status("sub1")["frames_by_epoch"].get(str(removal_epoch), 0) > 60)
        report.say(f"sub1 keeps decrypting at epoch {removal_epoch}: "
                   f"{drv.status('sub1').get('frames_by_epoch', {}).get(str(removal_epoch), 0)} frames (captured)")

        # 4. two members race commits for one epoch
        if full:
            _race(report, drv)

        # 4b. a member forges frames under the publisher's KID on a link of its own: the relay drops them
        report.say("sub1 forges 20 frames under the publisher's KID on a link of its own")
        drv.cmd("sub1", "forge", as_leaf=0, frames=20)

        def forged_drops() -> int:
            st = read_json(relay.workdir / "status.json")
            return st.get("filter_drops", {}).get("kid_sender_not_link_leaf", 0)

        ok = drv.wait("forged frames dropped", lambda: forged_drops() >= 20)
        report.check("frames under another member's KID are dropped by the relay", ok, f"{forged_drops()} dropped")

        if full:
            first_run = _restarts(report, drv, cluster, relay, relay_spec, dest, procs, nodes, base, member, allow)
            relay_last = nodes["relay"]

        # wind down
        report.say("stopping members and relay")
        for name in procs:
            drv.cmd(name, "stop")
        for name, node in procs.items():
            report.results[name] = node.wait_result(EVENT_TIMEOUT_S)["members"][name]
        if full:
            relay_last.stop()
            report.results["relay"] = relay_last.wait_result(EVENT_TIMEOUT_S)
        else:
            relay.stop()
            first_run = report.results["relay"] = relay.wait_result(EVENT_TIMEOUT_S)

        # the removal promise, from ciphertext
        report.say("feeding sub1's captured ciphertext to the removed joiner's retained state")
        joiner_dir = procs["joiner"].workdir / "joiner"
        capture = read_capture(procs["sub1"].workdir / "sub1" / "capture.bin")
        promise = removal_promise(capture, (joiner_dir / "retained.state").read_bytes(), db)
        report.results["removal_promise"] = promise
        report.check("fed the relay's commits, the removed member's retained state reports itself removed",
                     promise["outcome"] == "removed" and promise["removal_epoch"] == int(removal_epoch),
                     f"{promise['outcome']} at epoch {promise['removal_epoch']} {promise['detail']}")
        report.check("the removed member's retained state opens no frame of its removal epoch or later",
                     promise["kept"] and sum(promise["opened_by_epoch"].values()) > 0,
                     json.dumps(promise))
        sub1 = report.results["sub1"]
        report.check("the remaining subscriber decrypted frames at and after the removal epoch",
                     sum(n for e, n in sub1["frames_by_epoch"].items() if int(e) >= int(removal_epoch)) > 0,
                     json.dumps(sub1["frames_by_epoch"]))
        closed = first_run["closed_for_removal"]
        report.check("the relay closed the leaver's and the removed member's links", closed >= 2
                     and report.results["joiner"]["subscriber_link_up"] is False,
                     f"closed {closed}, joiner link up {report.results['joiner']['subscriber_link_up']}")
        report.results["filter_drops"] = first_run["filter_drops"]
        report.check("no subscriber saw a foreign plaintext", all(
            report.results[n]["bad_payloads"] == 0 for n in procs), "")
    finally:
        report.wall_s = time.monotonic() - started
        cluster.close()
    return report


def _race(report: JoinReport, drv: Driver) -> None:
    """Two members race commits for one epoch: exactly one wins, the loser recovers."""
    report.say("pub and sub1 race rekey commits for one epoch")
    drv.converged("pub", "sub1")
    before = {n: drv.status(n) for n in ("pub", "sub1")}
    e1 = before["pub"]["epoch"]
    # Both build a commit on epoch e1, then hold it until the gate opens: a race by construction,
    # however late either process picks up its command.
    gate = drv.nodes["relay"].workdir.parent / "race-gate"
    drv.cmd("pub", "rekey", gate=str(gate))
    drv.cmd("sub1", "rekey", gate=str(gate))
    built = drv.wait("both commits built", lambda: drv.status("pub")["rekey_built_at_epoch"] == e1
                     == drv.status("sub1")["rekey_built_at_epoch"])
    gate.touch()
    # Settled once both are at e1 + 2 and have recorded its authenticator (the status snapshot
    # can show the new epoch a moment before the epoch event that records it).
    ok = built and drv.wait("race settled", lambda: all(
        drv.status(n)["epoch"] == e1 + 2 and str(e1 + 2) in drv.status(n)["auth"] for n in ("pub", "sub1")))
    after = {n: drv.status(n) for n in ("pub", "sub1")}

    def delta(n: str, key: str) -> int:
        return after[n]["counters"].get(key, 0) - before[n]["counters"].get(key, 0)

    lost = {n: delta(n, "commits_lost") for n in after}
    won = {n: delta(n, "commits_won") for n in after}
    same = after["pub"]["auth"].get(str(e1 + 2)) == after["sub1"]["auth"].get(str(e1 + 2)) is not None
    report.check("two members race for one epoch: exactly one wins, the loser recovers",
                 ok and sorted(lost.values()) == [0, 1] and won == {"pub": 1, "sub1": 1} and same,
                 f"lost {lost} won {won} epochs {after['pub']['epoch']}/{after['sub1']['epoch']} same auth {same}")


def _restarts(
    report: JoinReport, drv: Driver, cluster: Cluster, relay: Node, relay_spec: dict[str, Any], dest: str,
    procs: dict[str, Node], nodes: dict[str, Node], base: dict[str, Any], member: Callable[..., dict[str, Any]],
    allow: list[str],
) -> dict[str, Any]:
    """Restart the relay (a second joiner joins after it), then the publisher; returns the first relay's result.

    Replaces ``nodes["relay"]`` and ``procs["pub"]`` with the new processes."""
    # 5. restart the relay mid-stream; a second joiner joins after it
    report.say("restarting the relay mid-stream")
    frames_before_restart = drv.status("sub1")["frames"]
    relay.stop()
    first_run = relay.wait_result(EVENT_TIMEOUT_S)
    report.results["relay_first_run"] = first_run
    restart_at = time.time()
    relay2 = cluster.spawn("relay2", relay_spec, entry=ENTRY)
    nodes["relay"] = relay2
    report.check("the restarted relay has the same destination", relay2.wait_ready()["dest"] == dest)
    ok = drv.wait("stream resumes", lambda: drv.status("sub1")["frames"] > frames_before_restart + 60,
                  RESTART_TIMEOUT_S)
    report.figures["relay_restart_to_frames_s"] = time.time() - restart_at
    detail = f"sub1 frames {frames_before_restart} -> {drv.status('sub1').get('frames')}"
    if not ok:
        # Rare under load and not reproduced on demand: keep what each side saw for the next reader.
        detail += "".join(f"\n--- {name} log tail ---\n{node.log_tail(1500)}"
                          for name, node in (("relay2", relay2), ("pub", procs["pub"]), ("sub1", procs["sub1"])))
    report.check("the stream resumes through the restarted relay", ok, detail)
    drv.wait("joiner2 reconnected", lambda: drv.status("joiner2")["control_up"], RESTART_TIMEOUT_S)
    report.say("joiner2 asks to join through the restarted relay")
    drv.cmd("joiner2", "join")
    ok = drv.wait("joiner2 decrypts", lambda: drv.status("joiner2")["frames"] > 30)
    j2 = drv.status("joiner2")
    report.check("a second joiner joins after the restart (directory and group state survived)", ok,
                 f"{j2.get('frames')} frames at epoch {j2.get('epoch')}")
    if j2.get("first_frame_at") and j2.get("join_requested_at"):
        report.figures["join2_to_first_frame_s"] = j2["first_frame_at"] - j2["join_requested_at"]

    # 6. the publisher process restarts from its state file: it commits an Update before it sends
    report.say("restarting the publisher process from its state file")
    drv.cmd("pub", "stop")
    old_pub = procs["pub"].wait_result(EVENT_TIMEOUT_S)["members"]["pub"]
    report.results["pub_before_restart"] = old_pub
    epoch_at_stop = old_pub["epoch"]
    frames_then = drv.status("sub1")["frames"]
    procs["pub"] = cluster.spawn("p-pub2", {**base, "members": [member(
        "pub", publisher=True, restore=True, allow=allow, state_dir=str(procs["pub"].workdir / "pub"))]},
        entry=ENTRY)
    nodes["pub"] = drv.proc_of["pub"] = procs["pub"]
    procs["pub"].wait_ready()
    ok = drv.wait("restored publisher streams", lambda: drv.status("sub1")["frames"] > frames_then + 60,
                  RESTART_TIMEOUT_S)
    p2 = drv.status("pub")
    report.check("a restored publisher sends only in an epoch after the one it stopped in (no counter reuse)",
                 ok and p2.get("first_sealer_epoch") is not None and p2["first_sealer_epoch"] > epoch_at_stop,
                 f"stopped at epoch {epoch_at_stop}, first sealing epoch {p2.get('first_sealer_epoch')}, "
                 f"sub1 frames {frames_then} -> {drv.status('sub1').get('frames')}")
    return first_run


def main() -> None:
    """``python -m integration.join_scenario [--keep]``: run the scenario and print its checks."""
    import sys

    report = run_join_scenario(keep="--keep" in sys.argv)
    for c in report.checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}" + (f"  ({c.detail[:200]})" if c.detail else ""))
    print("figures:", json.dumps({k: round(v, 4) for k, v in report.figures.items()}))
    print(f"wall {report.wall_s:.1f} s, {'all checks passed' if report.ok else f'{len(report.failed())} failed'}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
