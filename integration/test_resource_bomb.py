"""A hostile peer's Resource advertisements cannot balloon the relay or kill its RNS threads.

Real RNS processes on 127.0.0.1 (``integration/bomb_node.py``): a relay that reports its RSS and
every thread that died (``threading.excepthook``), an attacker that identifies like anyone can and
then crafts request Resources whose advertisements lie (a 60 MiB bz2 bomb declaring 100 bytes,
ten at once, honest-sized ones sharing one storage-file name, 2 MiB of parts behind a declared 100
bytes), and a legitimate client whose large request must still work afterwards. Last, a hostile
relay answers a member's request with a response bomb, which the member refuses.

Mutation tried: ``ResourceGuard.attach`` made a no-op (the guard off). The relay then inflates
each bomb (its peak RSS grows by hundreds of MB) and RNS's ``assemble`` threads die with
``FileNotFoundError`` on the shared storage file; both relay tests go red. The member facing a
hostile relay then inflates the 60 MiB response (its request ends in ``ControlError`` for the
oversized body instead of ``LinkDown``): red too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import RNS

from ciris_av_plugin.transport.config import free_port
from integration.harness import Cluster, Node

ENTRY = ["-m", "integration.bomb_node"]
# The relay's peak RSS during the attack may exceed its pre-attack RSS by at most this much.
MAX_GROWTH_KB = 32 * 1024
# Each wait is >= 10x what it takes on an idle machine (set-up ~1 s, each verdict < 0.5 s).
READY_S = 60.0
ATTACK_S = 240.0


def _relay(cluster: Cluster, receive_mode: str) -> tuple[Node, dict[str, Any], int]:
    port = free_port()
    relay = cluster.spawn(
        "relay",
        {"role": "bomb_relay", "listen_port": port, "receive_mode": receive_mode, "duration": 400, "timeout": 420},
        entry=ENTRY,
    )
    return relay, relay.wait_ready(READY_S), port


def _member(cluster: Cluster, name: str, port: int, dest: str) -> dict[str, Any]:
    # Discovery off: the base 431-byte MDU, so the 200 kB request travels as an RNS Resource.
    member = cluster.spawn(
        name,
        {"role": "bomb_member", "connect_port": port, "relay": dest, "link_mtu_discovery": False, "timeout": 120},
        entry=ENTRY,
    )
    return member.wait_result(150)


def _baseline(relay: Node) -> dict[str, Any]:
    (relay.workdir / "baseline").touch()
    path = relay.workdir / "baseline.json"
    deadline = time.monotonic() + READY_S
    while not path.exists():
        if time.monotonic() > deadline or relay.proc.poll() is not None:
            raise TimeoutError(f"relay took no baseline: {relay.log_tail()}")
        time.sleep(0.05)
    import json

    return json.loads(path.read_text())


def _run(receive_mode: str, attacks: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    cluster = Cluster()
    try:
        relay, ready, port = _relay(cluster, receive_mode)
        assert ready["receive_mode"] == receive_mode
        warm = _member(cluster, "warm-up", port, ready["dest"])
        assert warm["echoed"] == warm["sent"], warm
        baseline = _baseline(relay)
        attacker = cluster.spawn(
            "attacker",
            {"role": "bomb_attacker", "connect_port": port, "relay": ready["dest"], "attacks": attacks,
             "verdict_timeout": ATTACK_S / 2, "timeout": ATTACK_S},
            entry=ENTRY,
        )
        attack = attacker.wait_result(ATTACK_S + 30)
        after = _member(cluster, "member", port, ready["dest"])
        (relay.workdir / "stop").touch()
        result = relay.wait_result(60)
        result["baseline"] = baseline
        return attack, after, result
    finally:
        cluster.close()


def _assert_relay_unharmed(result: dict[str, Any], member: dict[str, Any]) -> None:
    assert result["thread_deaths"] == [], result["thread_deaths"]
    baseline = result["baseline"]
    growth = result["hwm_after_kb"] - baseline["rss_kb"]
    assert growth <= MAX_GROWTH_KB, f"relay peak RSS grew {growth} KiB over {baseline['rss_kb']} KiB"
    # The legitimate client's request above the MDU (an uncompressed Resource) still works.
    assert member["mdu"] < member["sent"] and member["echoed"] == member["sent"], member
    assert member["stats_ok"]


@pytest.mark.parametrize("receive_mode", ["inline", "callback"])
def test_resource_bombs_are_refused_and_the_relay_stays_small(receive_mode: str) -> None:
    attacks = [{"kind": "bomb", "links": 1}, {"kind": "bomb", "links": 10}]
    attack, member, result = _run(receive_mode, attacks)
    single, ten = attack["attacks"]
    assert single["advert_bytes"][0] < 200 and single["transfer_size"] < 1024, "a sub-kilobyte bomb"
    for item in (single, ten):
        assert item["finished"], item
        assert item["rejected"] == item["links"] and item["complete"] == 0, item
    counters = result["counters"]
    # RNS's sender registers its Resource only after sending the advertisement, so a reject that
    # beats it is lost and the advertisement is re-sent (and refused) once more.
    assert counters.get("resource_refused_compressed", 0) >= 11, counters
    assert counters.get("resource_accepted") == 2, "only the legitimate client's two requests"
    _assert_relay_unharmed(result, member)


def test_shared_storage_names_and_oversized_parts_are_refused() -> None:
    attacks = [{"kind": "shared-original-hash", "links": 10}, {"kind": "oversized", "links": 2}]
    attack, member, result = _run("inline", attacks)
    shared, oversized = attack["attacks"]
    for item in (shared, oversized):
        assert item["finished"], item
        assert item["rejected"] == item["links"] and item["complete"] == 0, item
    counters = result["counters"]
    assert counters.get("resource_refused_original-hash", 0) >= 10, counters
    assert counters.get("resource_refused_oversized", 0) >= 2, counters
    assert counters.get("resource_accepted") == 2, "only the legitimate client's two requests"
    assert RNS.Resource.REJECTED in shared["statuses"]
    _assert_relay_unharmed(result, member)


def test_a_member_refuses_a_response_bomb_from_a_hostile_relay() -> None:
    cluster = Cluster()
    try:
        port = free_port()
        relay = cluster.spawn("hostile", {"role": "hostile_relay", "listen_port": port, "duration": 200, "timeout": 220},
                              entry=ENTRY)
        ready = relay.wait_ready(READY_S)
        victim = cluster.spawn("victim", {"role": "bomb_victim", "connect_port": port, "relay": ready["dest"],
                                          "request_timeout": 10.0, "timeout": 150}, entry=ENTRY)
        result = victim.wait_result(180)
        (relay.workdir / "stop").touch()
        hostile = relay.wait_result(60)
    finally:
        cluster.close()
    assert hostile["bombs"] and hostile["bombs"][0] < 1024, "the relay sent a sub-kilobyte bomb"
    assert result["outcome"] == "LinkDown", "the request fails instead of being answered with 60 MiB"
    assert result["guard"].get("resource_refused_compressed", 0) >= 1, result["guard"]
    assert result["thread_deaths"] == [], result["thread_deaths"]
    growth = result["hwm_after_kb"] - result["rss_kb"]
    assert growth <= MAX_GROWTH_KB, f"member peak RSS grew {growth} KiB"
