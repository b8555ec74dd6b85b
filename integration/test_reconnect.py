"""A subscriber whose link the relay closes reconnects by itself and resumes at a keyframe."""

from __future__ import annotations

import os
import time

from ciris_av_plugin.transport.config import free_port
from integration.harness import Cluster
from integration.scenario import STREAM_ID


def test_subscriber_reconnects_after_link_loss_and_resumes_at_a_keyframe() -> None:
    cluster = Cluster()
    keys = {"epoch": 3, "base_key": os.urandom(16).hex(), "leaf_count": 2, "sender_leaf": 1}
    marker = os.urandom(8).hex()
    frames = 210  # 7 s of video
    try:
        port = free_port()
        relay = cluster.spawn("relay", {"role": "relay", "listen_port": port, "engine": "engine", "duration": 40,
                                        "timeout": 50})
        dest = relay.wait_ready(30)["dest"]
        t0 = time.time() + 5.0
        base = {"connect_port": port, "relay": dest, "stream_id": STREAM_ID, "keys": keys, "marker": marker,
                "timeout": 40}
        sub = cluster.spawn("sub", {**base, "role": "subscriber", "t_end": t0 + frames / 30 + 1.5})
        pub = cluster.spawn("pub", {**base, "role": "publisher", "t0": t0, "video_frames": frames})
        first_link = sub.wait_ready(20)["link_id"]
        pub.wait_ready(20)
        while time.time() < t0 + 2.5:
            time.sleep(0.05)
        (relay.workdir / "kick").touch()
        pub_res = pub.wait_result(30)
        sub_res = sub.wait_result(30)
        (relay.workdir / "stop").touch()
        relay_res = relay.wait_result(20)
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
    assert len(after) >= 60, f"the subscriber kept receiving after reconnecting ({len(after)} video frames)"
    assert pub_res["keyframe_requests"] >= 2, "join and re-join each asked the publisher for a keyframe"
