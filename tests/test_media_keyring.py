"""Epoch key ring (grace, wipe, KID resolution across S changes) and the future-frame hold."""

import pytest

from ciris_av_plugin.media.errors import ExpiredKeyError, KeyRingError, UnknownKeyError
from ciris_av_plugin.media.keyring import (
    FUTURE_HOLD_S,
    RECEIVE_GRACE_S,
    EpochKeyRing,
    EpochKeys,
    FutureFrameHold,
    StaticKeySource,
)
from ciris_av_plugin.media.kid import encode_kid
from ciris_av_plugin.media.sframe import MEDIA_SUITE, SFrameKey


def bk(epoch: int) -> bytes:
    return bytes([epoch % 251 + 1]) * 16


def test_resolve_derives_the_same_key_as_sframe():
    ring = EpochKeyRing()
    ring.install(3, bk(3), 4, now=0.0)
    kid = encode_kid(2, 3, 3, 4)
    r = ring.resolve(kid, now=0.0)
    assert (r.epoch, r.leaf_count, r.parts.context, r.parts.sender_leaf) == (3, 4, 2, 3)
    want = SFrameKey.derive(MEDIA_SUITE, bk(3), kid)
    assert (r.key.key, r.key.salt) == (want.key, want.salt)
    assert ring.resolve(kid, 0.1).key is r.key  # cached
    assert ring.keys_derived == 1


def test_previous_epoch_kept_for_grace_then_wiped():
    ring = EpochKeyRing()
    ring.install(5, bk(5), 2, now=10.0)
    old_kid = encode_kid(1, 1, 5, 2)
    old_key = ring.resolve(old_kid, 10.0).key
    assert ring.install(6, bk(6), 2, now=20.0) == []
    assert ring.held_epochs == [5, 6]
    assert ring.resolve(old_kid, 20.0 + RECEIVE_GRACE_S - 0.01).key is old_key
    # Past the grace the old KID fails even before expire() is called ...
    with pytest.raises(ExpiredKeyError):
        ring.resolve(old_kid, 20.0 + RECEIVE_GRACE_S)
    # ... and expire() wipes it: the stored base key is zeroed and the cache emptied.
    held = ring._epochs[0]
    assert ring.expire(20.0 + RECEIVE_GRACE_S) == [5]
    assert bytes(held.base_key) == bytes(16) and not held.keys
    assert ring.held_epochs == [6]
    with pytest.raises(ExpiredKeyError):
        ring.resolve(old_kid, 30.0)


def test_future_kid_is_unknown_past_kid_is_expired():
    ring = EpochKeyRing()
    with pytest.raises(UnknownKeyError):
        ring.resolve(encode_kid(0, 0, 9, 1), 0.0)  # nothing installed: maybe our Welcome is late
    ring.install(9, bk(9), 1, 0.0)
    for ahead in (1, 2, 127):
        with pytest.raises(UnknownKeyError):
            ring.resolve(encode_kid(0, 0, 9 + ahead, 1), 0.0)
    for behind in (1, 5, 128):
        with pytest.raises(ExpiredKeyError):
            ring.resolve(encode_kid(0, 0, 9 + 256 - behind, 1), 0.0)


def test_kid_decoded_with_its_own_epochs_leaf_count():
    ring = EpochKeyRing()
    ring.install(7, bk(7), 4, 0.0)  # S = 2
    ring.install(8, bk(8), 16, 0.1)  # tree grew: S = 4
    r7 = ring.resolve(encode_kid(3, 3, 7, 4), 0.2)
    r8 = ring.resolve(encode_kid(3, 13, 8, 16), 0.2)
    assert (r7.epoch, r7.parts.context, r7.parts.sender_leaf) == (7, 3, 3)
    assert (r8.epoch, r8.parts.context, r8.parts.sender_leaf) == (8, 3, 13)


def test_install_rules():
    ring = EpochKeyRing()
    ring.install(4, bk(4), 2, 0.0)
    ring.install(4, bk(4), 2, 0.1)  # idempotent
    with pytest.raises(KeyRingError):
        ring.install(4, bk(5), 2, 0.2)
    with pytest.raises(KeyRingError):
        ring.install(3, bk(3), 2, 0.2)
    with pytest.raises(KeyRingError):
        ring.install(5, bk(5), 3, 0.2)
    with pytest.raises(KeyRingError):
        ring.install(5, b"short", 2, 0.2)
    assert ring.held_epochs == [4] and ring.current_epoch == 4


def test_same_low_byte_epoch_replaces_old_and_held_epochs_are_bounded():
    ring = EpochKeyRing(max_epochs=3)
    ring.install(1, bk(1), 1, 0.0)
    ring.install(257, bk(257), 1, 0.1)  # same low byte: RFC 9605 §5.2 says remove epoch 1
    assert ring.held_epochs == [257]
    for i, e in enumerate(range(258, 263)):
        ring.install(e, bk(e), 1, 0.2 + i * 0.01)
    assert ring.held_epochs == [260, 261, 262]


def test_static_key_source():
    src = StaticKeySource()
    assert src.current_keys() is None
    k = EpochKeys(epoch=1, base_key=bk(1), leaf_count=2, own_leaf=1)
    src.set(k)
    assert src.current_keys() == k


def test_hold_release_by_epoch_and_expiry():
    hold: FutureFrameHold[str] = FutureFrameHold()
    hold.hold(encode_kid(0, 0, 6, 1), "a6", 100, now=1.0)
    hold.hold(encode_kid(0, 0, 7, 1), "b7", 100, now=1.1)
    hold.hold(encode_kid(1, 0, 6, 1), "c6", 100, now=1.2)
    assert [f.item for f in hold.release(6, now=1.3)] == ["a6", "c6"]
    assert len(hold) == 1 and hold.held_bytes == 100
    assert hold.expire(1.1 + FUTURE_HOLD_S - 0.001) == []
    assert hold.next_expiry() == 1.1 + FUTURE_HOLD_S
    assert [f.item for f in hold.expire(hold.next_expiry())] == ["b7"]
    assert hold.held_bytes == 0
    assert hold.counters == {"held": 3, "released": 2, "expired": 1, "overflow": 0}


def test_hold_does_not_release_frames_past_their_hold_time():
    hold: FutureFrameHold[str] = FutureFrameHold()
    hold.hold(encode_kid(0, 0, 6, 1), "old", 10, now=0.0)
    assert hold.release(6, now=FUTURE_HOLD_S + 0.1) == []


def test_hold_bounded_by_count_and_bytes_oldest_first():
    hold: FutureFrameHold[int] = FutureFrameHold(max_frames=3, max_bytes=1000)
    dropped = []
    for i in range(10):
        dropped += hold.hold(encode_kid(0, 0, 1, 1), i, 300, now=i * 0.01)
        assert len(hold) <= 3 and hold.held_bytes <= 1000
    assert [f.item for f in dropped] == list(range(7))
    big = hold.hold(encode_kid(0, 0, 1, 1), 99, 1001, now=0.2)
    assert [f.item for f in big] == [99]
    assert hold.counters["overflow"] == 8
