"""Test-wide isolation: every test (unit and integration) runs with HOME in a fresh temporary folder,
so nothing reads or writes the user's ``~/.ciris-av`` (the node's default data directory) or other
dotfiles, and child processes inherit the same private HOME."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
