"""Per-KID replay window."""

import pytest

from ciris_av_plugin.media.errors import ReplayError
from ciris_av_plugin.media.replay import REPLAY_WINDOW, ReplayWindow


def accept(w, kid, ctr):
    w.check(kid, ctr)
    w.commit(kid, ctr)


def test_duplicate_refused_after_commit_not_after_check():
    w = ReplayWindow()
    w.check(1, 5)
    w.check(1, 5)  # check alone records nothing
    w.commit(1, 5)
    with pytest.raises(ReplayError):
        w.check(1, 5)
    with pytest.raises(ReplayError):
        w.commit(1, 5)
    accept(w, 2, 5)  # another KID has its own window


def test_out_of_order_inside_window_accepted_once():
    w = ReplayWindow(window=64)
    for ctr in (10, 8, 12, 9, 11, 0):
        accept(w, 7, ctr)
    for ctr in (10, 8, 12, 9, 11, 0):
        with pytest.raises(ReplayError):
            w.check(7, ctr)
    accept(w, 7, 1)


def test_too_old_refused_and_window_slides():
    w = ReplayWindow(window=64)
    accept(w, 1, 100)
    accept(w, 1, 37)  # 100 - 37 = 63: the oldest slot still inside
    with pytest.raises(ReplayError):
        w.check(1, 36)
    accept(w, 1, 200)  # slide by 100: everything before 137 is now too old
    assert w.top(1) == 200
    with pytest.raises(ReplayError):
        w.check(1, 100)
    accept(w, 1, 150)
    with pytest.raises(ReplayError):
        w.check(1, 150)
    accept(w, 1, 199)


def test_large_jump_clears_bitmap():
    w = ReplayWindow()
    accept(w, 1, 0)
    accept(w, 1, 10 * REPLAY_WINDOW)
    accept(w, 1, 10 * REPLAY_WINDOW - 1)
    with pytest.raises(ReplayError):
        w.check(1, 10 * REPLAY_WINDOW)


def test_bounded_kids_fail_closed_and_forget_frees():
    w = ReplayWindow(max_kids=4)
    for kid in range(4):
        accept(w, kid, 0)
    with pytest.raises(ReplayError):
        w.check(99, 0)
    accept(w, 3, 1)  # known KIDs still work
    assert len(w) == 4
    w.forget([0])
    accept(w, 99, 0)
    assert len(w) == 4


def test_forget_epoch_low_only_that_epoch():
    w = ReplayWindow()
    kids = [(ctx << 16) | (leaf << 8) | epoch for ctx in (0, 1) for leaf in (0, 3) for epoch in (4, 5)]
    for kid in kids:
        accept(w, kid, 0)
    assert w.forget_epoch_low(4) == 4
    assert all((kid in w) == (kid & 0xFF == 5) for kid in kids)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=200), st.sampled_from([1, 8, 64]))
def test_matches_a_set_based_model(counters, window):
    """Against the obvious model: accept a counter never seen and not window-or-more below the top."""
    w = ReplayWindow(window=window)
    seen: set[int] = set()
    top = None
    for ctr in counters:
        expect = ctr not in seen and (top is None or ctr > top - window)
        try:
            w.check(0, ctr)
            w.commit(0, ctr)
            got = True
        except ReplayError:
            got = False
        assert got == expect, (ctr, top, window)
        if expect:
            seen.add(ctr)
            top = ctr if top is None else max(top, ctr)
