"""Secret tree: out-of-order window, deletion after use, forward limit, no state change on peek."""

from __future__ import annotations

import pytest

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.errors import SecretTreeError
from ciris_av_plugin.mls.secret_tree import (
    MAX_FORWARD_DISTANCE,
    OUT_OF_ORDER_TOLERANCE,
    RatchetType,
    SecretTree,
)

CS = CipherSuite(1)
APP = RatchetType.APPLICATION
HS = RatchetType.HANDSHAKE


def _tree(n: int = 4) -> SecretTree:
    return SecretTree(CS, b"\x11" * 32, n)


def test_sender_and_receiver_agree() -> None:
    sender, receiver = _tree(), _tree()
    for expected_gen in range(3):
        gen, key, nonce = sender.next_for_sending(2, APP)
        assert gen == expected_gen
        assert receiver.key_nonce(2, APP, gen) == (key, nonce)
        assert receiver.consume(2, APP, gen) == (key, nonce)


def test_used_key_is_deleted() -> None:
    t = _tree()
    t.consume(1, APP, 0)
    with pytest.raises(SecretTreeError):
        t.key_nonce(1, APP, 0)
    with pytest.raises(SecretTreeError):
        t.consume(1, APP, 0)


def test_out_of_order_within_window() -> None:
    ref = _tree()
    expected = {g: ref.key_nonce(0, APP, g) for g in range(6)}
    t = _tree()
    assert t.consume(0, APP, 5) == expected[5]
    for g in (3, 0, 4, 1, 2):
        assert t.consume(0, APP, g) == expected[g]
    assert not t.ratchet(0, APP).skipped


def test_skipped_keys_bounded() -> None:
    t = _tree()
    far = OUT_OF_ORDER_TOLERANCE + 10
    t.consume(0, APP, far)
    r = t.ratchet(0, APP)
    assert len(r.skipped) == OUT_OF_ORDER_TOLERANCE
    with pytest.raises(SecretTreeError):
        t.consume(0, APP, 0)  # oldest were dropped
    t.consume(0, APP, far - 1)


def test_forward_limit() -> None:
    t = _tree()
    with pytest.raises(SecretTreeError):
        t.key_nonce(0, APP, MAX_FORWARD_DISTANCE + 1)
    with pytest.raises(SecretTreeError):
        t.consume(0, APP, MAX_FORWARD_DISTANCE + 1)
    assert t.ratchet(0, APP).generation == 0  # no state change on refusal


def test_peek_does_not_change_state() -> None:
    t = _tree()
    t.key_nonce(3, HS, 7)
    r = t.ratchet(3, HS)
    assert r.generation == 0 and not r.skipped


def test_ratchets_are_independent() -> None:
    t = _tree()
    assert t.key_nonce(0, APP, 0) != t.key_nonce(0, HS, 0)
    assert t.key_nonce(0, APP, 0) != t.key_nonce(1, APP, 0)


def test_leaf_out_of_range() -> None:
    t = _tree(3)  # rounds up to 4 leaves
    t.key_nonce(3, APP, 0)
    with pytest.raises(SecretTreeError):
        t.key_nonce(4, APP, 0)
    with pytest.raises(SecretTreeError):
        t.key_nonce(-1, APP, 0)
    with pytest.raises(SecretTreeError):
        SecretTree(CS, b"\x00" * 32, 0)


def test_tree_secrets_deleted_along_the_path() -> None:
    t = _tree(4)
    t.ratchet(3, APP)
    # root (3) and node 5 consumed; node 1 (left subtree) and node 4 (leaf 2) kept, leaf 3 gone
    assert sorted(t._nodes) == [1, 4]
