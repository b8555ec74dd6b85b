"""The removal promise at Group level, relay bypassed, with the mutation that must break it.

A removed member's retained state is fed the commits after its removal and then the frames a
remaining member captured. With an honest commit it reports itself removed and opens nothing of
the removal epoch. With a commit that encrypts the new path secret to the removed leaf (the
committer's bug this check exists for; the relay cannot see it, since it cannot decrypt), the
same check derives the new epoch and opens the frames: the check can fail.
"""

from __future__ import annotations

import pytest
from support_mls_group import SUITE, bundle, clock, ident

from ciris_av_plugin.media.events import FrameDecrypted
from ciris_av_plugin.media.frames import FrameOpener, FrameSealer
from ciris_av_plugin.media.mls_keys import MediaKeyBinding
from ciris_av_plugin.media.removal_promise import check_removal_promise
from ciris_av_plugin.mls import Group, treekem
from ciris_av_plugin.mls.group_errors import GroupInactiveError
from ciris_av_plugin.mls.removal_audit import follow_as_removed
from ciris_av_plugin.protocol.media_wire import KIND_VIDEO, ForwardingHeader

MDU = 400
T = 100.0


def _frames(sealer: FrameSealer, first: int, n: int) -> list[bytes]:
    out: list[bytes] = []
    for seq in range(first, first + n):
        fh = ForwardingHeader(stream_id=7, track_id=1, kind=KIND_VIDEO, frame_seq=seq, gop_id=seq,
                              capture_ts_us=seq * 33_000, keyframe=True)
        out += sealer.seal(fh, f"frame {seq}".encode()).packets(MDU)
    return out


def _opened(opener: FrameOpener, packets: list[bytes]) -> list[FrameDecrypted]:
    events = [ev for p in packets for ev in opener.receive_packet(p, T)] + opener.expire(T + 10)
    return [ev for ev in events if isinstance(ev, FrameDecrypted)]


def _four_members() -> tuple[Group, Group, Group, Group]:
    a = Group.create(b"removal", ident(0), SUITE, clock=clock)
    bundles = [bundle(i) for i in (1, 2, 3)]
    pending = a.commit(adds=[b.key_package for b in bundles])
    a.merge_pending()
    b, c, d = (Group.join(pending.welcome, [x], clock=clock) for x in bundles)
    assert [g.leaf_index for g in (a, b, c, d)] == [0, 1, 2, 3]
    return a, b, c, d


def _remove_c(leak_to_removed_leaf: bool, monkeypatch: pytest.MonkeyPatch):
    """A removes C; returns (C's retained state, the commit, packets captured at B, B's opened frames)."""
    a, b, c, _d = _four_members()
    sealer = FrameSealer()
    bind_a = MediaKeyBinding(a, sealer=sealer)
    bind_a.sync(T)
    capture = _frames(sealer, 0, 5)  # epoch 1: C is still a member
    retained = c.to_bytes()
    if leak_to_removed_leaf:
        # The bug: the path secret meant for D's leaf (node 6, the resolution of the copath node 5
        # once C's leaf is blank) is encrypted to C's old leaf key instead. Counts still match, so
        # neither the relay nor B can tell.
        removed_key = c._e.public.tree.leaf(c.leaf_index).encryption_key  # noqa: SLF001
        honest = treekem._public_key_at  # noqa: SLF001

        def leaky(tree, y):
            return removed_key if y == 2 * 3 else honest(tree, y)

        monkeypatch.setattr(treekem, "_public_key_at", leaky)
    pending = a.commit(removes=[ident(2)])
    monkeypatch.undo()
    a.merge_pending()
    b.process(pending.commit)
    assert a.epoch == b.epoch == 2
    bind_a.sync(T)
    capture += _frames(sealer, 5, 10)  # epoch 2: C removed
    opener_b = FrameOpener()
    MediaKeyBinding(b, opener=opener_b).sync(T)
    at_b = _opened(opener_b, capture)
    return retained, pending.commit, capture, at_b


def test_honest_removal_keeps_the_promise(monkeypatch: pytest.MonkeyPatch) -> None:
    retained, commit, capture, at_b = _remove_c(False, monkeypatch)
    assert sum(1 for ev in at_b if ev.epoch == 2) == 10  # the remaining member reads the new epoch

    promise = check_removal_promise(capture, retained, [commit], now=clock())
    assert promise.audit.outcome == "removed"
    assert promise.removal_epoch == 2
    assert promise.opened_by_epoch == {1: 5}  # its retained keys still open what it was sent
    assert promise.captured_at_or_after_removal == 10
    assert promise.opened_at_or_after_removal == 0
    assert promise.kept


def test_a_commit_leaking_the_path_secret_to_the_removed_leaf_breaks_the_same_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retained, commit, capture, at_b = _remove_c(True, monkeypatch)
    assert sum(1 for ev in at_b if ev.epoch == 2) == 10  # B accepted the leaky commit

    promise = check_removal_promise(capture, retained, [commit], now=clock())
    assert promise.audit.outcome == "derived-after-removal"
    assert promise.opened_at_or_after_removal == 10
    assert not promise.kept


def test_the_removed_members_own_group_reports_removal_and_refuses_later_commits() -> None:
    a, b, c, _d = _four_members()
    retained = c.to_bytes()
    first = a.commit(removes=[ident(2)])
    a.merge_pending()
    b.process(first.commit)
    second = b.commit(force_path=True)
    b.merge_pending()
    audit = follow_as_removed(retained, [first.commit, second.commit], now=clock())
    assert (audit.outcome, audit.removal_epoch, [e.epoch for e in audit.epochs]) == ("removed", 2, [1])

    follower = Group.from_bytes(retained)
    assert follower.process(first.commit).self_removed
    assert not follower.active
    with pytest.raises(GroupInactiveError):
        follower.process(second.commit)


def test_commits_before_the_removal_are_followed() -> None:
    a, b, c, d = _four_members()
    retained = c.to_bytes()
    update = a.commit(force_path=True)
    a.merge_pending()
    removal = a.commit(removes=[ident(2)])
    a.merge_pending()
    audit = follow_as_removed(retained, [update.commit, removal.commit], now=clock())
    assert audit.outcome == "removed"
    assert [e.epoch for e in audit.epochs] == [1, 2]
    assert audit.removal_epoch == 3 and not audit.broken
