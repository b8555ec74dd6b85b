"""The joiner path through the relay with real MLS clients (mls.group) on both ends.

The relay side is the real directory, delivery service and SQLite store; only the keyless
PublicGroup is stood in for (a roster view and a checker that reads the commit's Adds by value),
until it lands. What is proved: a KeyPackage made by the MLS client passes the directory with an
RNS-signed envelope, the Welcome the committer's Group built is routed to the joiner, and the joiner
joins the same epoch with the same secrets; a Welcome built for another KeyPackage is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest
import RNS

group_mod = pytest.importorskip("ciris_av_plugin.mls.group")

from ciris_av_plugin.mls.crypto import CipherSuite  # noqa: E402
from ciris_av_plugin.mls.framing import MLSMessage  # noqa: E402
from ciris_av_plugin.mls.messages import Add, ExtensionType, find_extension  # noqa: E402
from ciris_av_plugin.mls.tree import RatchetTree  # noqa: E402
from ciris_av_plugin.relay.delivery import (  # noqa: E402
    BadGroupInfo,
    CommitEffect,
    DeliveryService,
    Notify,
    WelcomeMismatch,
    WelcomeReady,
)
from ciris_av_plugin.relay.directory import KeyPackageDirectory  # noqa: E402
from ciris_av_plugin.relay.envelope import open_envelope, seal_envelope  # noqa: E402
from ciris_av_plugin.store import SQLiteStore  # noqa: E402

Group = group_mod.Group
KeyPackageBundle = group_mod.KeyPackageBundle

NOW = 1_800_000_000
SUITE = CipherSuite(1)
STREAM = 42
GROUP_ID = b"stream-42-group"


@dataclass
class RosterView:
    """Epoch and roster: the part of PublicGroup the delivery service reads."""

    epoch: int
    members: dict[int, bytes] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.epoch, sorted(self.members.items())])

    @classmethod
    def from_bytes(cls, data: bytes) -> RosterView:
        epoch, members = msgpack.unpackb(data)
        return cls(epoch, dict(members))


def roster_from_group_info(group_info: bytes) -> RosterView:
    """Stand-in for PublicGroup.from_group_info: epoch and roster from the GroupInfo's ratchet tree."""
    info = MLSMessage.from_bytes(group_info).body
    tree_ext = find_extension(info.extensions, ExtensionType.RATCHET_TREE)
    tree = RatchetTree.from_bytes(CipherSuite(info.group_context.cipher_suite), tree_ext.extension_data)
    return RosterView(info.group_context.epoch, {i: leaf.credential.identity for i, leaf in tree.leaves()})


def read_adds(group: RosterView, commit: bytes) -> CommitEffect:
    """Stand-in for PublicGroup.process: the by-value Adds of a real commit, refs computed here."""
    body = MLSMessage.from_bytes(commit).body.content.body
    added = []
    for p in body.proposals:
        if p.proposal is not None and isinstance(p.proposal.body, Add):
            kp = p.proposal.body.key_package
            added.append((kp.ref(CipherSuite(kp.cipher_suite)), kp.leaf_node.credential.identity))
    members = dict(group.members)
    for _, identity in added:
        members[min(i for i in range(len(members) + 1) if i not in members)] = identity
    return CommitEffect(tuple(added), (), RosterView(group.epoch + 1, members))


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[DeliveryService, KeyPackageDirectory, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "relay.db")
    ds = DeliveryService(store, load_group=RosterView.from_bytes, group_from_info=roster_from_group_info,
                         check_commit=read_adds)
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

    # the joiner fetches its Welcome from the relay and joins the same epoch with the same secrets
    welcome = ds.fetch_welcome(STREAM, joiner.hash, NOW + 1)
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
