"""The MLS -> SFrame binding: every epoch's exporter key reaches sealer and opener; removal holds.

The removal promise (ARCHITECTURE.md) is proved by capturing ciphertext at a remaining member and
feeding it to the removed member's retained state, counted by KID epoch.
"""

from __future__ import annotations

from support_mls_group import SUITE, clock, ident

from ciris_av_plugin.media.events import FrameDecrypted
from ciris_av_plugin.media.frames import FrameOpener, FrameSealer
from ciris_av_plugin.media.kid import kid_epoch_low
from ciris_av_plugin.media.mls_keys import SFRAME_EXPORTER_LABEL, GroupKeySource, MediaKeyBinding, epoch_keys
from ciris_av_plugin.mls import Group, KeyPackageBundle
from ciris_av_plugin.protocol.media_wire import KIND_VIDEO, ForwardingHeader

MDU = 400


def frame(seq: int) -> ForwardingHeader:
    return ForwardingHeader(stream_id=7, track_id=1, kind=KIND_VIDEO, frame_seq=seq, gop_id=seq,
                            capture_ts_us=seq * 33_000, keyframe=True)


def deliver(opener: FrameOpener, packets: list[bytes], now: float) -> list:
    events = []
    for p in packets:
        events.extend(opener.receive_packet(p, now))
    return events


def test_epoch_keys_are_the_sframe_exporter() -> None:
    g = Group.create(b"media", ident(0), SUITE, clock=clock)
    keys = epoch_keys(g)
    assert keys.base_key == g.export_secret(SFRAME_EXPORTER_LABEL, b"", 16)
    assert (keys.epoch, keys.leaf_count, keys.own_leaf) == (0, 1, 0)
    assert epoch_keys(g, send=False).own_leaf is None


def test_frames_follow_epochs_and_a_removed_member_cannot_decrypt() -> None:
    a = Group.create(b"media", ident(0), SUITE, clock=clock)
    bundles = [KeyPackageBundle.generate(ident(i), SUITE, clock=clock) for i in (1, 2)]
    pending = a.commit(adds=[b.key_package for b in bundles])
    a.merge_pending()
    b, c = (Group.join(pending.welcome, [x], clock=clock) for x in bundles)
    t = 100.0
    sealer = FrameSealer()
    bind_a = MediaKeyBinding(a, sealer=sealer)
    bind_b = MediaKeyBinding(b, opener=FrameOpener())
    bind_c = MediaKeyBinding(c, opener=FrameOpener())
    for bind in (bind_a, bind_b, bind_c):
        bind.sync(t)
        assert bind.sync(t) == []  # idempotent within an epoch
    assert sealer.epoch == 1

    first = sealer.seal(frame(1), b"frame at epoch 1").packets(MDU)
    for bind in (bind_b, bind_c):
        got = [e for e in deliver(bind.opener, first, t) if isinstance(e, FrameDecrypted)]
        assert [e.payload for e in got] == [b"frame at epoch 1"] and got[0].sender_leaf == a.leaf_index

    removal = a.commit(removes=[ident(2)])
    a.merge_pending()
    bind_a.sync(t)
    assert sealer.epoch == 2  # the sender switches at once
    b.process(removal.commit)
    bind_b.sync(t)
    assert c.process(removal.commit).self_removed
    assert bind_c.sync(t) == [] and GroupKeySource(c).current_keys() is None

    captured = [sealer.seal(frame(n), b"frame %d at epoch 2" % n).packets(MDU) for n in range(2, 6)]
    decrypted_by_epoch: dict[int, int] = {}
    for packets in captured:
        for e in deliver(bind_b.opener, packets, t):
            assert isinstance(e, FrameDecrypted) and e.epoch == 2
        for e in deliver(bind_c.opener, packets, t):
            if isinstance(e, FrameDecrypted):
                decrypted_by_epoch[kid_epoch_low(e.kid)] = decrypted_by_epoch.get(kid_epoch_low(e.kid), 0) + 1
    for e in bind_c.opener.expire(t + 10):
        assert not isinstance(e, FrameDecrypted)
    assert decrypted_by_epoch == {}  # nothing at or after the removal epoch
    # the removed member's retained state did hold epoch 1 and still only knows epoch 1
    assert bind_c.installed_epoch == 1
