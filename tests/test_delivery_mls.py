"""The joiner path through the relay with real MLS on every side.

Clients are ``mls.Group``; the relay is the real directory, delivery service (over the keyless
``PublicGroup``) and SQLite store. What is proved: a KeyPackage made by the MLS client passes the
directory inside an RNS-signed envelope; the GroupInfo registers the stream only for its signer; the
Welcome the committer built is routed to the joiner, who joins the same epoch with the same secrets;
a Welcome for another KeyPackage, a forged commit and a leaver's self-Remove are handled; all of it
survives a relay restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import RNS
from hypothesis import given, settings
from hypothesis import strategies as st

from ciris_av_plugin.errors import RelayError
from ciris_av_plugin.mls import Group, KeyPackageBundle
from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.protocol.envelope import open_envelope, seal_envelope
from ciris_av_plugin.relay.delivery import DeliveryService
from ciris_av_plugin.relay.delivery_errors import (
    BadGroupInfo,
    InvalidCommit,
    NotAMember,
    StaleCommit,
    WelcomeMismatch,
)
from ciris_av_plugin.relay.delivery_events import Notify, WelcomeReady
from ciris_av_plugin.relay.directory import KeyPackageDirectory
from ciris_av_plugin.store import SQLiteStore

# Real time: the MLS clients check KeyPackage lifetimes against their own clock where the API
# takes no ``now`` (Group.join), so the relay is given the same time.
NOW = int(time.time())
SUITE = CipherSuite(1)
STREAM = 42
GROUP_ID = b"stream-42-group"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[DeliveryService, KeyPackageDirectory, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "relay.db")
    ds = DeliveryService(store)  # the real keyless PublicGroup behind every seam
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
    ds.directory = directory
    yield ds, directory, store
    store.close()


def publish(directory: KeyPackageDirectory, who: RNS.Identity, bundle, last_resort: bool = False) -> None:
    env = seal_envelope(bundle.key_package, last_resort=last_resort, identity_pub=who.get_public_key(), ts=NOW,
                        sign=who.sign)
    directory.publish(env, NOW, publisher=who.hash)


def test_a_joiner_joins_through_the_relay_with_real_mls_messages(relay) -> None:
    ds, directory, _ = relay
    publisher, joiner = RNS.Identity(), RNS.Identity()

    # the publisher creates the group and registers the stream (TOFU, bound to the GroupInfo signer)
    group = Group.create(GROUP_ID, publisher.hash, SUITE, now=NOW)
    with pytest.raises(BadGroupInfo):  # someone else cannot register the publisher's group
        ds.register_stream(STREAM, joiner.hash, group.group_info(ratchet_tree=True))
    ds.register_stream(STREAM, publisher.hash, group.group_info(ratchet_tree=True))

    # the joiner publishes KeyPackages made by the MLS client, then asks to join
    bundles = [KeyPackageBundle.generate(joiner.hash, SUITE, now=NOW) for _ in range(2)]
    for b in bundles:
        publish(directory, joiner, b)
    assert ds.request_join(STREAM, joiner.hash, NOW)[0].recipient == publisher.hash

    # the admitting member fetches one, checks the RNS binding itself, commits the Add
    fetched = directory.fetch(publisher.hash, joiner.hash, 1, NOW)
    assert open_envelope(fetched.envelope).identity_hash == joiner.hash
    assert fetched.ref in {b.ref for b in bundles}
    pending = group.commit(adds=[fetched.key_package], now=NOW)
    accepted = ds.submit_commit(STREAM, publisher.hash, pending.commit, pending.welcome, NOW)
    group.merge_pending()
    assert Notify(joiner.hash, WelcomeReady(STREAM, 1)) in accepted.notifications

    # the joiner fetches its Welcome from the relay and joins the same epoch with the same secrets;
    # the relay's public tree is the one the Welcome's GroupInfo vouches for, so it can be used too
    welcome = ds.fetch_welcome(STREAM, joiner.hash, NOW + 1)
    tree = ds.ratchet_tree(STREAM, joiner.hash, NOW + 1)
    with pytest.raises(NotAMember):
        ds.ratchet_tree(STREAM, RNS.Identity().hash, NOW + 1)
    assert Group.join(welcome, bundles, ratchet_tree=tree).epoch_authenticator == group.epoch_authenticator
    joined = Group.join(welcome, bundles)
    assert joined.epoch == group.epoch == accepted.epoch == 1
    assert joined.epoch_authenticator == group.epoch_authenticator
    label = b"SFrame 1.0 Base Key"
    assert joined.export_secret(label, b"", 16) == group.export_secret(label, b"", 16)
    assert not directory.is_admissible(fetched.ref, joiner.hash, NOW + 1)  # one-time: used


def test_a_welcome_for_another_key_package_is_refused(relay) -> None:
    ds, directory, store = relay
    publisher, joiner = RNS.Identity(), RNS.Identity()
    group = Group.create(GROUP_ID, publisher.hash, SUITE, now=NOW)
    ds.register_stream(STREAM, publisher.hash, group.group_info(ratchet_tree=True))
    bundle = KeyPackageBundle.generate(joiner.hash, SUITE, now=NOW)
    publish(directory, joiner, bundle)
    ds.request_join(STREAM, joiner.hash, NOW)
    fetched = directory.fetch(publisher.hash, joiner.hash, 1, NOW)
    pending = group.commit(adds=[fetched.key_package], now=NOW)
    # a Welcome from a different commit (to a different KeyPackage) cannot ride along
    other = Group.create(GROUP_ID, publisher.hash, SUITE, now=NOW)
    stray = other.commit(adds=[KeyPackageBundle.generate(joiner.hash, SUITE, now=NOW).key_package], now=NOW)
    with pytest.raises(WelcomeMismatch):
        ds.submit_commit(STREAM, publisher.hash, pending.commit, stray.welcome, NOW)
    assert ds.group(STREAM).epoch == 0
    assert directory.is_admissible(fetched.ref, joiner.hash, NOW)
    ds.submit_commit(STREAM, publisher.hash, pending.commit, pending.welcome, NOW)
    assert ds.group(STREAM).epoch == 1


def _stream_with_member(ds: DeliveryService, directory: KeyPackageDirectory, now: float = NOW):
    """A registered stream with its publisher and one joined member, all real MLS."""
    publisher, member = RNS.Identity(), RNS.Identity()
    group = Group.create(GROUP_ID, publisher.hash, SUITE, now=now)
    ds.register_stream(STREAM, publisher.hash, group.group_info(ratchet_tree=True))
    bundle = KeyPackageBundle.generate(member.hash, SUITE, now=now)
    publish(directory, member, bundle)
    ds.request_join(STREAM, member.hash, now)
    fetched = directory.fetch(publisher.hash, member.hash, 1, now)
    pending = group.commit(adds=[fetched.key_package], now=now)
    ds.submit_commit(STREAM, publisher.hash, pending.commit, pending.welcome, now)
    group.merge_pending()
    joined = Group.join(ds.fetch_welcome(STREAM, member.hash, now), [bundle])
    return publisher, group, member, joined


def test_forged_and_stale_commits_are_refused_by_the_public_group(relay) -> None:
    ds, directory, _ = relay
    publisher, group, member, joined = _stream_with_member(ds, directory)
    pending = group.commit(force_path=True, now=NOW)
    # The message ends signature<V> (65 B), confirmation_tag<V> (33 B), membership_tag<V> (33 B).
    # The relay can check only the first: the tags need group secrets (ARCHITECTURE "publicly valid").
    for pos in (-100, len(pending.commit) // 2):  # in the signature; in the signed content (the path)
        forged = bytearray(pending.commit)
        forged[pos] ^= 1
        with pytest.raises(InvalidCommit):
            ds.submit_commit(STREAM, publisher.hash, bytes(forged), None, NOW)
    assert ds.group(STREAM).epoch == 1
    ds.submit_commit(STREAM, publisher.hash, pending.commit, None, NOW)
    group.merge_pending()
    assert ds.submit_commit(STREAM, publisher.hash, pending.commit, None, NOW).repeat  # a retry
    stale = joined.commit(force_path=True, now=NOW)  # built on epoch 1, which is over
    with pytest.raises(StaleCommit):
        ds.submit_commit(STREAM, member.hash, stale.commit, None, NOW)
    joined.discard_pending()
    # the member follows the accepted commit it was sent
    joined.process(ds.commits_since(STREAM, member.hash, 1)[0].message)
    assert joined.epoch == group.epoch == ds.group(STREAM).epoch == 2


def test_two_members_race_for_an_epoch_and_the_loser_recovers(relay) -> None:
    ds, directory, _ = relay
    publisher, group, member, joined = _stream_with_member(ds, directory)
    mine = group.commit(force_path=True, now=NOW)
    theirs = joined.commit(force_path=True, now=NOW)
    won = ds.submit_commit(STREAM, member.hash, theirs.commit, None, NOW)
    joined.merge_pending()
    with pytest.raises(StaleCommit):
        ds.submit_commit(STREAM, publisher.hash, mine.commit, None, NOW)
    # the loser processes the winner (its own pending commit is discarded) and both agree
    (note,) = won.notifications
    assert note.recipient == publisher.hash
    group.process(note.event.message)
    assert group.epoch_authenticator == joined.epoch_authenticator
    assert ds.group(STREAM).epoch == group.epoch == 2


def test_a_leaver_proposes_its_removal_and_the_admitter_commits_it(relay) -> None:
    ds, directory, _ = relay
    publisher, group, member, joined = _stream_with_member(ds, directory)
    leave = joined.leave()
    notes = ds.submit_proposal(STREAM, member.hash, leave, NOW)
    assert [n.recipient for n in notes] == [publisher.hash]
    group.process(notes[0].event.message)
    pending = group.commit(now=NOW)  # includes the cached self-Remove by reference
    acc = ds.submit_commit(STREAM, publisher.hash, pending.commit, None, NOW)
    group.merge_pending()
    assert ds.members_of(STREAM) == [publisher.hash]
    assert not ds.is_member(STREAM, member.hash)
    assert [n.recipient for n in acc.notifications] == [member.hash]  # it learns it is out


def test_a_restarted_relay_keeps_the_group_and_admits_a_second_joiner(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    ds = DeliveryService(store)
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
    ds.directory = directory
    publisher, group, member, joined = _stream_with_member(ds, directory)
    second = RNS.Identity()
    bundle = KeyPackageBundle.generate(second.hash, SUITE, now=NOW)
    publish(directory, second, bundle)
    ds.request_join(STREAM, second.hash, NOW)
    store.close()

    store = SQLiteStore(path)
    ds = DeliveryService(store)
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
    ds.directory = directory
    assert ds.group(STREAM).epoch == 1 and ds.members_of(STREAM) == [publisher.hash, member.hash]
    fetched = directory.fetch(publisher.hash, second.hash, 1, NOW + 5)
    pending = group.commit(adds=[fetched.key_package], now=NOW + 5)
    acc = ds.submit_commit(STREAM, publisher.hash, pending.commit, pending.welcome, NOW + 5)
    group.merge_pending()
    late = Group.join(ds.fetch_welcome(STREAM, second.hash, NOW + 6), [bundle])
    joined.process([n for n in acc.notifications if n.recipient == member.hash][0].event.message)
    assert late.epoch_authenticator == group.epoch_authenticator == joined.epoch_authenticator
    store.close()


_FUZZ: dict[str, object] = {}


def _fuzz_setup(tmp: Path):
    if "ds" not in _FUZZ:
        store = SQLiteStore(tmp / "fuzz.db")
        ds = DeliveryService(store)
        directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
        ds.directory = directory
        publisher, group, member, joined = _stream_with_member(ds, directory)
        newcomer = RNS.Identity()
        bundle = KeyPackageBundle.generate(newcomer.hash, SUITE, now=NOW)
        publish(directory, newcomer, bundle)
        ds.request_join(STREAM, newcomer.hash, NOW)
        kp = directory.fetch(publisher.hash, newcomer.hash, 1, NOW).key_package
        pending = group.commit(adds=[kp], now=NOW)
        _FUZZ.update(ds=ds, store=store, publisher=publisher, pending=pending)
    return _FUZZ


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_real_commits_and_welcomes_raise_only_relay_errors(tmp_path_factory, data) -> None:
    f = _fuzz_setup(tmp_path_factory.mktemp("fuzz"))
    ds, pending, who = f["ds"], f["pending"], f["publisher"].hash
    commit, welcome = bytearray(pending.commit), bytearray(pending.welcome)
    target = data.draw(st.sampled_from(["commit", "welcome"]))
    buf = commit if target == "commit" else welcome
    for _ in range(data.draw(st.integers(1, 3))):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))  # may cancel out
    before = ds.group(STREAM).to_bytes()
    try:
        ds.submit_commit(STREAM, who, bytes(commit), bytes(welcome), NOW)
    except RelayError:
        assert ds.group(STREAM).to_bytes() == before
    else:
        # Only the confirmation and membership tags at the end of the commit (which the relay cannot
        # check), or the Welcome's encrypted parts (which only the joiner can open), may change unnoticed.
        changed = [i for i, (a, b) in enumerate(zip(commit, pending.commit, strict=True)) if a != b]
        assert not changed or min(changed) >= len(commit) - 66, f"a change at {changed} went unnoticed"
        ds._store.close()
        _FUZZ.clear()
