"""Roster authority over real RNS: a rogue member cannot evict another member.

Processes (each its own RNS instance on 127.0.0.1, ``join_node.py``): a delivery relay, the publisher
(creates the stream, so it is its admitter), a victim and a rogue subscriber, both admitted. The
rogue first proposes the victim's removal, then commits it by value, both straight to the relay
past its own session. Each must be refused with its stable code, and the victim must stay a member
and keep receiving frames; the publisher's roster keeps three members.
"""

from __future__ import annotations

import os
from typing import Any

from integration.harness import Cluster
from integration.join_scenario import ENTRY, Driver, _identity_file

STREAM_ID = 0x0D5E
READY_TIMEOUT_S = 60.0
# A join takes well under a second on an idle machine; commits and refusals a few ms.
JOIN_TIMEOUT_S = 60.0
REFUSAL_TIMEOUT_S = 30.0
# Frames the victim must still receive after both attacks (the publisher sends ~80 frames/s).
FRAMES_AFTER = 100
FRAMES_TIMEOUT_S = 30.0


def test_a_rogue_member_cannot_evict_another() -> None:
    cluster = Cluster()
    root = cluster.root
    try:
        from ciris_av_plugin.transport.config import free_port

        names = ["pub", "victim", "rogue"]
        ids = {n: _identity_file(root, n) for n in names}
        relay_id, _ = _identity_file(root, "relay")
        port = free_port()
        relay = cluster.spawn("relay", {"role": "delivery_relay", "listen_port": port, "identity": relay_id,
                                        "db": str(root / "relay-db" / "relay.db"), "duration": 150,
                                        "timeout": 170}, entry=ENTRY)
        dest = relay.wait_ready(READY_TIMEOUT_S)["dest"]
        base: dict[str, Any] = {"role": "member", "connect_port": port, "relay": dest, "stream_id": STREAM_ID,
                                "marker": os.urandom(12).hex(), "duration": 150, "timeout": 170,
                                "bits_per_s": 300_000}
        allow = [ids["victim"][1], ids["rogue"][1]]
        procs = {
            "pub": cluster.spawn("p-pub", {**base, "members": [
                {"name": "pub", "identity": ids["pub"][0], "create": True, "publisher": True, "allow": allow,
                 "group_id": os.urandom(16).hex()}]}, entry=ENTRY),
        }
        procs["pub"].wait_ready(READY_TIMEOUT_S)
        for name in ("victim", "rogue"):
            procs[name] = cluster.spawn(f"p-{name}", {**base, "members": [
                {"name": name, "identity": ids[name][0], "join": True}]}, entry=ENTRY)
        drv = Driver({"relay": relay, **procs})
        drv.proc_of = dict(procs)
        for node in procs.values():
            node.wait_ready(READY_TIMEOUT_S)
        cluster.release()  # the readiness barrier: media starts once every process is up

        assert drv.wait("both admitted", lambda: drv.status("pub")["members"] == 3
                        and drv.status("victim")["epoch"] == drv.status("rogue")["epoch"] == 2
                        and drv.status("victim")["frames"] > 0, JOIN_TIMEOUT_S), (
            drv.status("pub"), drv.status("victim"), drv.status("rogue"))

        victim_hex = ids["victim"][1]
        drv.cmd("rogue", "propose_remove", identity=victim_hex)
        assert drv.wait("proposal refused", lambda: "propose_remove" in drv.status("rogue")["rogue"], REFUSAL_TIMEOUT_S)
        drv.cmd("rogue", "commit_remove", identity=victim_hex)
        assert drv.wait("commit refused", lambda: "commit_remove" in drv.status("rogue")["rogue"], REFUSAL_TIMEOUT_S)
        assert drv.status("rogue")["rogue"] == {"propose_remove": "remove-not-own", "commit_remove": "not-admitter"}

        frames_then = drv.status("victim")["frames"]
        assert drv.wait("victim keeps receiving", lambda: drv.status("victim")["frames"] >= frames_then + FRAMES_AFTER,
                        FRAMES_TIMEOUT_S), drv.status("victim")
        victim, pub = drv.status("victim"), drv.status("pub")
        assert victim["epoch"] == 2 and victim["removed_at_epoch"] is None, victim
        assert pub["epoch"] == 2 and pub["members"] == 3, pub
        assert victim["bad_payloads"] == 0
    finally:
        cluster.close()
