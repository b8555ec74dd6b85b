"""RNS plumbing over real links: identification, requests, raw packets, both receive paths, MDUs.

Each node is a separate process with its own RNS instance (integration/node.py). The forwarder is
a passthrough, so these tests are about transport/, not forwarding policy.
"""

from __future__ import annotations

import pytest

from ciris_av_plugin.transport.config import free_port
from integration.harness import EVENT_TIMEOUT_S, Cluster

CHILD_TIMEOUT_S = 120.0
"""Each child's own bound: these runs take 1-4 s idle; a child still running after 2 minutes is hung."""


def _relay(cluster: Cluster, port: int, receive_mode: str = "auto", send_mode: str = "auto"):
    relay = cluster.spawn(
        "relay",
        {"role": "relay", "listen_port": port, "engine": "passthrough", "receive_mode": receive_mode,
         "send_mode": send_mode, "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 10},
    )
    return relay, relay.wait_ready()


@pytest.mark.parametrize(("mode", "send_mode"), [("inline", "inline"), ("callback", "threads")])
def test_raw_packets_flow_through_relay_on_both_receive_paths(mode: str, send_mode: str) -> None:
    """Both receive paths (inbound-worker hook, packet callback) and both relay send paths."""
    cluster = Cluster()
    try:
        port = free_port()
        relay, ready = _relay(cluster, port, mode, send_mode)
        assert ready["receive_mode"] == mode
        client = cluster.spawn(
            "pubsub",
            {"role": "raw_pubsub", "connect_port": port, "relay": ready["dest"], "receive_mode": mode,
             "count": 300, "gap": 0.003, "timeout": CHILD_TIMEOUT_S},
        )
        res = client.wait_result(CHILD_TIMEOUT_S + 10)
        assert res["receive_mode"] == mode
        assert res["sub_mdu"] > 10_000, "TCP links negotiate a large MTU when discovery is on"
        assert res["max_size"] > 431, "packets larger than the base MDU were exercised"
        assert res["unique"] == res["sent"], res
        if mode == "inline":
            # The inline path runs in RNS's single inbound worker: order is preserved end to end.
            assert res["in_order"], res
        counters = res["relay_counters"]
        assert counters["rx_packets"] >= res["sent"]
        assert counters["tx_packets"] >= res["sent"]
        assert counters["senders_inline"] == (1 if send_mode == "inline" else 0)
    finally:
        cluster.close()


def test_discovery_off_gives_base_mdu_and_unidentified_links_are_dropped_and_closed() -> None:
    cluster = Cluster()
    try:
        port = free_port()
        relay, ready = _relay(cluster, port)
        small = cluster.spawn(
            "small",
            {"role": "raw_pubsub", "connect_port": port, "relay": ready["dest"], "link_mtu_discovery": False,
             "count": 50, "timeout": CHILD_TIMEOUT_S},
        )
        rogue = cluster.spawn(
            "rogue", {"role": "unidentified", "connect_port": port, "relay": ready["dest"], "timeout": CHILD_TIMEOUT_S}
        )
        res = small.wait_result(CHILD_TIMEOUT_S + 10)
        assert res["sub_mdu"] == 431 and res["pub_mdu"] == 431
        assert res["unique"] == res["sent"]
        rogue_res = rogue.wait_result(CHILD_TIMEOUT_S + 10)
        assert rogue_res["established"]
        # How soon (IDENTIFY_DEADLINE_S, ~2 s) is the relay's unit tests' business: here, that it does.
        assert rogue_res["closed"], "the relay closes links that never identify"
        relay.stop()
        relay_res = relay.wait_result(EVENT_TIMEOUT_S)
        assert relay_res["counters"]["rx_unidentified_dropped"] >= 1
        assert relay_res["counters"]["links_unidentified_closed"] >= 1
    finally:
        cluster.close()


@pytest.mark.parametrize("send_mode", ["inline", "threads"])
def test_a_subscriber_that_never_reads_does_not_hold_up_the_others(send_mode: str) -> None:
    """No relay send may block on one subscriber: a stopped process's socket fills, the rest flows.

    The passthrough forwarder has no stall detection, so the relay keeps offering the stopped
    subscriber ~4 MB/s until its TCP socket is full: the inline sender must see the congestion
    and defer; the threaded sender blocks only that link's thread.
    """
    import signal

    cluster = Cluster()
    try:
        port = free_port()
        relay, ready = _relay(cluster, port, "inline", send_mode)
        sink = cluster.spawn("sink", {"role": "raw_sink", "connect_port": port, "relay": ready["dest"],
                                      "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 10})
        sink.wait_ready()
        sink.signal(signal.SIGSTOP)
        pubsub = cluster.spawn(
            "pubsub",
            {"role": "raw_pubsub", "connect_port": port, "relay": ready["dest"], "count": 1200, "gap": 0.002,
             "timeout": CHILD_TIMEOUT_S},
        )
        res = pubsub.wait_result(CHILD_TIMEOUT_S + 10)
        assert res["unique"] == res["sent"], res
        counters = res["relay_counters"]
        if send_mode == "inline":
            assert counters["tx_deferred_congested"] > 0, counters
    finally:
        cluster.close()
