"""The member state file: 0600, replaced atomically, a readable file refused, a Group round trip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ciris_av_plugin.mls import CipherSuite, Group
from ciris_av_plugin.store.member_state import MemberStateError, MemberStateStore


def test_state_is_written_0600_and_replaced_whole(tmp_path: Path) -> None:
    store = MemberStateStore(tmp_path / "m" / "group.state")
    assert store.load() is None
    group = Group.create(b"g", b"i" * 16, CipherSuite(1))
    store.save(group.to_bytes())
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) & 0o077 == 0
    restored = Group.from_bytes(store.load() or b"")
    assert restored.epoch_authenticator == group.epoch_authenticator
    store.save(b"newer")
    assert store.load() == b"newer"
    assert [p.name for p in store.path.parent.iterdir()] == ["group.state"]  # no temporary left behind
    store.delete()
    assert store.load() is None


def test_a_state_file_others_can_read_is_refused(tmp_path: Path) -> None:
    store = MemberStateStore(tmp_path / "group.state")
    store.save(b"secret")
    os.chmod(store.path, 0o644)
    with pytest.raises(MemberStateError):
        store.load()
