"""KID layout (ARCHITECTURE.md, RFC 9605 §5.2)."""

import pytest

from ciris_av_plugin.errors import MediaError
from ciris_av_plugin.media.errors import KidError
from ciris_av_plugin.media.kid import EPOCH_BITS, decode_kid, encode_kid, kid_epoch_low, sender_bits


def test_rfc9605_figure_examples_with_our_e():
    # RFC 9605 Figure 7 uses E=4; recompute its examples with the same formula and E=8.
    # Epoch 14, index 3, 64 members: KID = 3 << 8 | 14.
    assert encode_kid(0, 3, 14, 64) == (3 << 8) | 14
    # Epoch 16, index 2, contexts 2 and 3: context sits above S + E = 6 + 8 bits.
    assert encode_kid(2, 2, 16, 64) == (2 << 14) | (2 << 8) | 16
    assert encode_kid(3, 2, 16, 64) == (3 << 14) | (2 << 8) | 16


@pytest.mark.parametrize("leaf_count", [1, 2, 4, 8, 256, 1 << 20])
def test_round_trip_every_leaf_and_epoch_low(leaf_count):
    leaves = range(leaf_count) if leaf_count <= 256 else (0, 1, leaf_count // 2, leaf_count - 1)
    for leaf in leaves:
        for epoch in (0, 1, 255, 256, 257, 10**9 + 7):
            for context in (0, 1, 255):
                kid = encode_kid(context, leaf, epoch, leaf_count)
                parts = decode_kid(kid, leaf_count)
                assert (parts.context, parts.sender_leaf, parts.epoch_low) == (context, leaf, epoch % 256)
                assert kid_epoch_low(kid) == epoch % (1 << EPOCH_BITS)


def test_one_leaf_tree_has_no_sender_bits():
    assert sender_bits(1) == 0
    assert encode_kid(5, 0, 3, 1) == (5 << 8) | 3


def test_s_change_between_epochs_changes_the_reading():
    # The tree grows from 4 to 8 leaves at epoch 8. A KID of epoch 7 (S=2) read with epoch 8's
    # S=3 gives a different sender and context; read with its own epoch's leaf count it is right.
    kid7 = encode_kid(1, 3, 7, 4)
    assert decode_kid(kid7, 4).sender_leaf == 3 and decode_kid(kid7, 4).context == 1
    wrong = decode_kid(kid7, 8)
    assert (wrong.context, wrong.sender_leaf) != (1, 3)
    kid8 = encode_kid(1, 3, 8, 8)
    assert kid8 != kid7
    assert decode_kid(kid8, 8).sender_leaf == 3


@pytest.mark.parametrize("leaf_count", [0, -1, 3, 6, 100, 1 << 33])
def test_bad_leaf_counts_are_typed(leaf_count):
    with pytest.raises(KidError):
        encode_kid(0, 0, 0, leaf_count)
    with pytest.raises(KidError):
        decode_kid(0, leaf_count)


def test_bad_fields_are_typed_media_errors():
    with pytest.raises(KidError):
        encode_kid(0, 4, 0, 4)  # sender_leaf == leaf_count
    with pytest.raises(KidError):
        encode_kid(0, -1, 0, 4)
    with pytest.raises(KidError):
        encode_kid(0, 0, -1, 4)
    with pytest.raises(KidError):
        encode_kid(1 << 54, 0, 0, 4)  # 64 - 2 - 8 = 54 bits of context
    assert encode_kid((1 << 54) - 1, 3, 255, 4) == (1 << 64) - 1
    with pytest.raises(MediaError):
        decode_kid(1 << 64, 4)
    with pytest.raises(MediaError):
        decode_kid(-1, 4)


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.integers(0, 32), st.data())
def test_round_trip_property(s, data):
    leaf_count = 1 << s
    leaf = data.draw(st.integers(0, leaf_count - 1))
    epoch = data.draw(st.integers(0, 2**64))
    context = data.draw(st.integers(0, (1 << (64 - s - EPOCH_BITS)) - 1))
    kid = encode_kid(context, leaf, epoch, leaf_count)
    assert 0 <= kid < 2**64
    parts = decode_kid(kid, leaf_count)
    assert (parts.context, parts.sender_leaf, parts.epoch_low) == (context, leaf, epoch % 256)
