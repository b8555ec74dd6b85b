"""A subscriber whose link the relay closes reconnects by itself and resumes at a keyframe."""

from __future__ import annotations

import os

from ciris_av_plugin.transport.config import free_port
from integration.harness import EVENT_TIMEOUT_S, Cluster, require
from integration.scenario import CHILD_TIMEOUT_S, STREAM_ID

FRAMES_BEFORE_KICK = 45
"""Decodable video frames before the relay closes the link: the subscriber is well into the stream."""
FRAMES_AFTER_RECONNECT = 60
"""Decodable video frames after it reconnected: two groups of pictures, so it is streaming again."""


def test_subscriber_reconnects_after_link_loss_and_resumes_at_a_keyframe() -> None:
    cluster = Cluster()
    keys = {"epoch": 3, "base_key": os.urandom(16).hex(), "leaf_count": 2, "sender_leaf": 1}
    marker = os.urandom(8).hex()
    try:
        port = free_port()
        relay = cluster.spawn("relay", {"role": "relay", "listen_port": port, "engine": "engine",
                                        "duration": CHILD_TIMEOUT_S, "timeout": CHILD_TIMEOUT_S + 20})
        dest = relay.wait_ready()["dest"]
        base = {"connect_port": port, "relay": dest, "stream_id": STREAM_ID, "keys": keys, "marker": marker,
                "timeout": CHILD_TIMEOUT_S}
        sub = cluster.spawn("sub", {**base, "role": "subscriber"})
        pub = cluster.spawn("pub", {**base, "role": "publisher", "video_frames": 30, "log_tail": True})
        first_link = sub.wait_ready()["link_id"]
        pub.wait_ready()
        cluster.release()
        watch = [relay, sub, pub]
        require("frames before the kick", lambda: sub.progress()["decodable_video"] >= FRAMES_BEFORE_KICK, watch=watch)
        (relay.workdir / "kick").touch()
        require("a reconnect", lambda: sub.progress()["reconnects"] >= 1, watch=watch)
        after_kick = sub.progress()["decodable_video"]
        require("frames after reconnecting",
                lambda: sub.progress()["decodable_video"] >= after_kick + FRAMES_AFTER_RECONNECT, watch=watch)
        pub.stop()
        pub_res = pub.wait_result(EVENT_TIMEOUT_S)
        sub.stop()
        sub_res = sub.wait_result(EVENT_TIMEOUT_S)
        relay.stop()
        relay_res = relay.wait_result(EVENT_TIMEOUT_S)
    finally:
        cluster.close()
    assert relay_res["kicked"] == 1
    assert sub_res["reconnects"] >= 1
    assert sub_res["link_ids"][0] == first_link and first_link not in sub_res["link_ids"][1:], sub_res["link_ids"]
    video = [r for r in sub_res["frames"] if r[0] == 1]
    sent = {(r[0], r[1]): r[3] for r in pub_res["frames"]}
    assert all(sent[(r[0], r[1])] == r[3] for r in sub_res["frames"])
    gaps = [(a, b) for a, b in zip(video, video[1:], strict=False) if b[1] != a[1] + 1]
    assert gaps, "closing the link must have cost some frames"
    assert all(b[2] for _, b in gaps), f"every resumption starts at a keyframe: {[(a[1], b[1]) for a, b in gaps]}"
    after = [r for r in video if r[1] > gaps[-1][0][1]]
    assert len(after) >= FRAMES_AFTER_RECONNECT, f"the subscriber kept receiving after reconnecting ({len(after)})"
    assert all(r[5] for r in after), "every frame after the resumption keyframe is decodable"
    assert pub_res["keyframe_requests"] >= 2, "join and re-join each asked the publisher for a keyframe"
