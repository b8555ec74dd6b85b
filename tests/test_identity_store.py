"""Identity store: RNS-compatible bytes, 0600/0700 modes, refusal of exposed keys, round trips."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ciris_av_plugin.config import ConfigError
from ciris_av_plugin.store.identity import (
    PRIVATE_KEY_LEN,
    IdentityStore,
    IdentityStoreError,
    StoredIdentity,
    check_identity_name,
    read_config_text,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def store(tmp_path: Path) -> IdentityStore:
    return IdentityStore(tmp_path / "data")


def test_create_writes_64_raw_bytes_with_private_modes(store: IdentityStore) -> None:
    old = os.umask(0)  # the store must not rely on the caller's umask
    try:
        ident = store.create("node")
    finally:
        os.umask(old)
    path = store.path_of("node")
    assert path.read_bytes() == ident.private_key
    assert len(ident.private_key) == PRIVATE_KEY_LEN
    assert _mode(path) == 0o600
    assert _mode(store.directory) == 0o700
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_round_trip_and_listing(store: IdentityStore) -> None:
    a = store.create("alice")
    b = store.create("bob")
    assert store.names() == ["alice", "bob"]
    assert store.load("alice") == a
    assert store.load("bob") == b
    assert a.hash != b.hash and len(a.hash) == 16


def test_load_or_create_is_stable(store: IdentityStore) -> None:
    first = store.load_or_create("node")
    assert store.load_or_create("node") == first


def test_matches_rns_derivation(store: IdentityStore) -> None:
    # The store derives public key and hash without RNS; RNS must agree on both.
    from ciris_av_plugin.transport.identity import rns_identity_from_private_key

    ident = store.create("node")
    rns_identity = rns_identity_from_private_key(ident.private_key)
    assert rns_identity.get_private_key() == ident.private_key
    assert rns_identity.get_public_key() == ident.public_key
    assert rns_identity.hash == ident.hash


def test_rns_written_identity_loads(store: IdentityStore, tmp_path: Path) -> None:
    import RNS

    rns_identity = RNS.Identity()
    imported = store.create("imported", rns_identity.get_private_key())
    assert imported.hash == rns_identity.hash
    assert store.load("imported").private_key == rns_identity.get_private_key()


def test_never_overwrites(store: IdentityStore) -> None:
    first = store.create("node")
    with pytest.raises(IdentityStoreError, match="already exists"):
        store.create("node")
    assert store.load("node") == first


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o610, 0o601])
def test_refuses_key_file_accessible_to_group_or_others(store: IdentityStore, mode: int) -> None:
    store.create("node")
    os.chmod(store.path_of("node"), mode)
    with pytest.raises(IdentityStoreError, match=f"mode {mode:04o}.*refusing"):
        store.load("node")


def test_owner_only_read_is_accepted(store: IdentityStore) -> None:
    ident = store.create("node")
    os.chmod(store.path_of("node"), 0o400)
    assert store.load("node") == ident


def test_refuses_directory_writable_by_others(store: IdentityStore) -> None:
    store.create("node")
    os.chmod(store.directory, 0o777)
    with pytest.raises(IdentityStoreError, match="lets others write"):
        store.load("node")


def test_refuses_symlinked_key(store: IdentityStore, tmp_path: Path) -> None:
    store.create("real")
    os.symlink(store.path_of("real"), store.path_of("link"))
    with pytest.raises(IdentityStoreError, match="cannot open identity"):
        store.load("link")


@pytest.mark.parametrize("size", [0, 63, 65])
def test_refuses_wrong_length(store: IdentityStore, size: int) -> None:
    store.create("node")
    path = store.path_of("node")
    path.write_bytes(b"\x01" * size)
    with pytest.raises(IdentityStoreError, match="expected exactly 64"):
        store.load("node")


def test_missing_identity_is_a_clear_error(store: IdentityStore) -> None:
    store.create("node")
    with pytest.raises(IdentityStoreError, match="no identity named 'ghost'"):
        store.load("ghost")
    assert store.exists("ghost") is False


def test_missing_store(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "nowhere")
    assert store.names() == []
    with pytest.raises(IdentityStoreError, match="no identity store here"):
        store.load("node")


@pytest.mark.parametrize("name", ["", ".hidden", "..", "a/b", "-flag", "x" * 65, "spa ce", "ü"])
def test_bad_names_are_refused(store: IdentityStore, name: str) -> None:
    with pytest.raises(IdentityStoreError, match="is not valid"):
        check_identity_name(name)
    with pytest.raises(IdentityStoreError):
        store.create(name)


def test_bad_imported_key_is_refused_before_writing(store: IdentityStore) -> None:
    with pytest.raises(IdentityStoreError, match="expected 64"):
        store.create("node", b"short")
    assert store.names() == []


def test_repr_hides_private_key(store: IdentityStore) -> None:
    ident = store.create("node")
    assert ident.private_key.hex() not in repr(ident)
    assert repr(ident.private_key) not in repr(ident)
    assert StoredIdentity.from_private_key("x", ident.private_key).hexhash == ident.hexhash


def test_read_config_text(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("realtime_av.enabled = true\n")
    assert read_config_text(path) == "realtime_av.enabled = true\n"
    with pytest.raises(ConfigError, match="configuration file not found"):
        read_config_text(tmp_path / "missing.toml")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_config_text(path)
