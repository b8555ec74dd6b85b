"""The KeyPackage directory with real KeyPackages and real RNS identities.

Every refusal test also checks that what was stored before is still there, byte for byte.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_key_packages import HOUR, NOW, SUITE, Joiner
from support_memory_store import MemoryStore
from support_vectors import load_mls

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.framing import MLSMessage
from ciris_av_plugin.mls.messages import Credential, Extension
from ciris_av_plugin.mls.registries import CredentialType, LeafNodeSource
from ciris_av_plugin.protocol.envelope import (
    ENVELOPE_SIGNATURE_LABEL,
    MAX_ENVELOPE_SIZE,
    BadEnvelopeSignature,
    OversizedEnvelope,
    open_envelope,
)
from ciris_av_plugin.relay.directory import (
    MAX_CLOCK_SKEW_S,
    MAX_ENVELOPE_AGE_S,
    MAX_KEY_PACKAGE_LIFETIME_S,
    ONE_TIME_TAKE_BURST,
    ONE_TIME_TAKE_REFILL_S,
    DirectoryError,
    FetchNotAuthorised,
    FetchRateLimited,
    IdentityMismatch,
    InvalidKeyPackage,
    KeyPackageDirectory,
    KeyPackageExpired,
    KeyPackageNotYetValid,
    LifetimeTooLong,
    NoKeyPackage,
    NotAdmissible,
    PublisherMismatch,
    QuotaExceeded,
    ReplayedKeyPackage,
    StaleEnvelope,
    SuiteNotSupported,
    inspect_key_package,
)
from ciris_av_plugin.relay.storage import CommitRecord, StreamRecord
from ciris_av_plugin.store import SQLiteStore

MEMBER = b"M" * 16


@pytest.fixture(scope="module")
def alice() -> Joiner:
    return Joiner()


@pytest.fixture(scope="module")
def bob() -> Joiner:
    return Joiner()


class Roster:
    """Stands in for the delivery service's ``may_fetch``: who may fetch whose KeyPackages."""

    def __init__(self) -> None:
        self.allowed: set[tuple[bytes, bytes]] = set()

    def __call__(self, requester: bytes, target: bytes, now: float) -> bool:
        return (requester, target) in self.allowed


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SQLiteStore]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = SQLiteStore(tmp_path / "dir.db")
        yield s
        s.close()


def directory_for(store: MemoryStore | SQLiteStore, *targets: bytes, **kw: object) -> KeyPackageDirectory:
    roster = Roster()
    for t in targets:
        roster.allowed.add((MEMBER, t))
    kw.setdefault("suites", {SUITE})  # this relay serves suite 1 only: suite 3 is the "wrong suite"
    return KeyPackageDirectory(store, roster, **kw)


# --- happy paths ---------------------------------------------------------------------------------


def test_publish_then_fetch_returns_the_key_package_and_its_envelope(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    kp = alice.key_package()
    env = alice.envelope(kp)
    res = d.publish(env, NOW, publisher=alice.hash)
    assert not res.duplicate and not res.last_resort
    assert res.ref == CipherSuite(SUITE).make_key_package_ref(kp[4:])
    got = d.fetch(MEMBER, alice.hash, SUITE, NOW)
    assert (got.ref, got.key_package, got.envelope, got.last_resort) == (res.ref, kp, env, False)
    # the fetcher can check the RNS binding itself from what it received
    opened = open_envelope(got.envelope)
    assert opened.identity_hash == alice.hash and opened.key_package == got.key_package
    assert d.counters["published"] == 1 and d.counters["fetched.one_time"] == 1


def test_one_time_first_then_last_resort_repeatedly(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    one = [d.publish(alice.publishable(), NOW).ref for _ in range(2)]
    lr = d.publish(alice.publishable(last_resort=True), NOW).ref
    fetched = [d.fetch(MEMBER, alice.hash, SUITE, NOW) for _ in range(4)]
    assert sorted(f.ref for f in fetched[:2]) == sorted(one)
    assert not fetched[0].last_resort and not fetched[1].last_resort
    assert [f.ref for f in fetched[2:]] == [lr, lr]
    assert fetched[3].last_resort


def test_republishing_an_unfetched_key_package_is_an_idempotent_retry(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    env = alice.publishable()
    first = d.publish(env, NOW)
    again = d.publish(env, NOW + 5)
    assert again.duplicate and again.ref == first.ref
    assert d.count_one_time(alice.hash) == 1


def test_newer_last_resort_replaces_older_and_older_cannot_come_back(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    old_env = alice.publishable(last_resort=True, ts=NOW - 60)
    old = d.publish(old_env, NOW)
    new = d.publish(alice.publishable(last_resort=True, ts=NOW), NOW)
    assert d.fetch(MEMBER, alice.hash, SUITE, NOW).ref == new.ref
    with pytest.raises(ReplayedKeyPackage):
        d.publish(old_env, NOW + 1)
    assert d.fetch(MEMBER, alice.hash, SUITE, NOW).ref == new.ref != old.ref


def test_back_dated_lifetime_and_small_skew_are_accepted(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    d.publish(alice.publishable(not_before=NOW + MAX_CLOCK_SKEW_S - 1, ts=NOW + MAX_CLOCK_SKEW_S - 1), NOW)
    d.publish(alice.publishable(not_before=NOW - HOUR, not_after=NOW + 60, ts=NOW - MAX_ENVELOPE_AGE_S + 1), NOW)
    assert d.count_one_time(alice.hash) == 2


# --- refusals: typed, and nothing stored changes ------------------------------------------------------


def snapshot(store: MemoryStore | SQLiteStore) -> object:
    """Everything a store holds, in a comparable form."""
    if isinstance(store, SQLiteStore):
        raw = sqlite3.connect(store._path)
        try:
            return list(raw.iterdump())
        finally:
            raw.close()
    return (
        {r: (s.entry, s.taken_by) for r, s in store._kps.items()},
        dict(store._spent),
    )


@pytest.fixture
def populated(store, alice: Joiner, bob: Joiner) -> tuple[KeyPackageDirectory, object]:
    """A directory with a few KeyPackages in every state, and a snapshot of it."""
    d = directory_for(store, alice.hash, bob.hash)
    for _ in range(3):
        d.publish(alice.publishable(), NOW)
    d.publish(alice.publishable(last_resort=True), NOW)
    d.publish(bob.publishable(), NOW)
    d.fetch(MEMBER, alice.hash, SUITE, NOW)  # one taken, spent
    return d, snapshot(store)


def refusal_cases(alice: Joiner, bob: Joiner) -> dict[str, tuple[type[DirectoryError] | type, bytes, dict]]:
    """name -> (expected error, envelope, publish kwargs)."""
    mallory = Joiner()
    forged_body = msgpack.unpackb(alice.publishable())["body"]
    forged = msgpack.packb({"body": forged_body, "sig": mallory.rns.sign(ENVELOPE_SIGNATURE_LABEL + forged_body)})
    suite3 = alice.key_package(suite_id=3)
    return {
        "forged envelope": (BadEnvelopeSignature, forged, {}),
        "kp carrying another identity": (IdentityMismatch, alice.publishable(identity=bob.hash), {}),
        "kp carrying a short identity": (IdentityMismatch, alice.publishable(identity=alice.hash[:8]), {}),
        "x509 credential": (
            IdentityMismatch,
            alice.publishable(credential=Credential(CredentialType.X509, certificates=[b"cert"])),
            {},
        ),
        "link is not the signer": (PublisherMismatch, alice.publishable(), {"publisher": bob.hash}),
        "expired": (KeyPackageExpired, alice.publishable(not_before=NOW - 2 * HOUR, not_after=NOW), {}),
        "not yet valid": (KeyPackageNotYetValid, alice.publishable(not_before=NOW + MAX_CLOCK_SKEW_S + 1), {}),
        "lifetime too long": (
            LifetimeTooLong,
            alice.publishable(not_after=NOW + MAX_KEY_PACKAGE_LIFETIME_S + 1),
            {},
        ),
        "uint64 max not_after": (LifetimeTooLong, alice.publishable(not_after=2**64 - 1), {}),
        "suite not served": (SuiteNotSupported, alice.envelope(suite3), {}),
        "envelope from the future": (StaleEnvelope, alice.publishable(ts=NOW + MAX_CLOCK_SKEW_S + 1), {}),
        "envelope too old": (StaleEnvelope, alice.publishable(ts=NOW - MAX_ENVELOPE_AGE_S - 1), {}),
        "bad kp signature": (InvalidKeyPackage, alice.publishable(break_kp_signature=True), {}),
        "bad leaf signature": (InvalidKeyPackage, alice.publishable(break_leaf_signature=True), {}),
        "init key equals encryption key": (
            InvalidKeyPackage,
            alice.publishable(same_init_and_encryption_key=True),
            {},
        ),
        "leaf extension not in capabilities": (
            InvalidKeyPackage,
            alice.publishable(leaf_extensions=[Extension(0xF0F0, b"x")]),
            {},
        ),
        "update leaf in a key package": (
            InvalidKeyPackage,
            alice.publishable(source=LeafNodeSource.UPDATE),
            {},
        ),
        "not a key package": (InvalidKeyPackage, alice.envelope(b"\x00\x01\x00\x03" + b"\x00" * 40), {}),
        "trailing bytes": (InvalidKeyPackage, alice.envelope(alice.key_package() + b"\x00"), {}),
        "garbage": (InvalidKeyPackage, alice.envelope(b"\xff" * 100), {}),
        "oversized": (OversizedEnvelope, b"\x81" + b"\x00" * MAX_ENVELOPE_SIZE, {}),
    }


def test_every_refusal_is_typed_and_changes_nothing(store, populated, alice: Joiner, bob: Joiner) -> None:
    d, before = populated
    for name, (error, env, kwargs) in refusal_cases(alice, bob).items():
        with pytest.raises(error) as ei:
            d.publish(env, NOW, **kwargs)
        assert isinstance(ei.value.code, str) and ei.value.code, name
        assert snapshot(store) == before, f"{name} changed the store"
    assert d.counters["refused.identity-mismatch"] == 3
    # and the directory still works afterwards
    assert d.fetch(MEMBER, bob.hash, SUITE, NOW).key_package


def test_error_codes_are_stable(alice: Joiner, bob: Joiner) -> None:
    codes = {name: err.code for name, (err, _, _) in refusal_cases(alice, bob).items()}
    assert codes["forged envelope"] == "bad-signature"
    assert codes["kp carrying another identity"] == "identity-mismatch"
    assert codes["expired"] == "expired"
    assert codes["suite not served"] == "unsupported-suite"
    assert codes["oversized"] == "oversized"
    assert ReplayedKeyPackage.code == "replayed" and QuotaExceeded.code == "quota"
    assert FetchNotAuthorised.code == "not-authorised" and NotAdmissible.code == "key-package-not-admissible"


def test_default_extension_types_need_not_be_listed(store, alice: Joiner) -> None:
    """§7.2: application_id (0x0001) is a default extension type, so a leaf may carry it unlisted."""
    d = directory_for(store, alice.hash)
    d.publish(alice.publishable(leaf_extensions=[Extension(0x0001, b"app")]), NOW)
    assert d.count_one_time(alice.hash) == 1


def test_unimplemented_suite_is_refused_even_if_configured(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash, suites={SUITE, 0x004D})
    kp = bytearray(alice.key_package())
    kp[4:8] = b"\x00\x01\x00\x4d"  # version mls10, cipher_suite X-Wing (not implemented yet)
    with pytest.raises(SuiteNotSupported):
        d.publish(alice.envelope(bytes(kp)), NOW)


def test_replayed_one_time_key_package_is_refused_after_fetch_and_after_use(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    env_a, env_b = alice.publishable(), alice.publishable()
    ref_a = d.publish(env_a, NOW).ref
    ref_b = d.publish(env_b, NOW).ref
    taken = d.fetch(MEMBER, alice.hash, SUITE, NOW).ref
    other_env = env_b if taken == ref_a else env_a
    d.fetch(MEMBER, alice.hash, SUITE, NOW)
    assert {taken, ref_a, ref_b} == {ref_a, ref_b}
    # both handed out: each replay is refused, even re-marked as last resort (a new signed envelope)
    with pytest.raises(ReplayedKeyPackage):
        d.publish(other_env, NOW + 1)
    kp = open_envelope(env_a).key_package
    with pytest.raises(ReplayedKeyPackage):
        d.publish(alice.envelope(kp, last_resort=True, ts=NOW + 2), NOW + 2)
    # after an accepted commit used it, it is gone from the directory and still refused
    store.create_stream(StreamRecord(1, b"g", MEMBER, 0, b"g"))
    store.accept_commit(1, epoch=0, group_state=b"g1", commit=CommitRecord(1, 0, MEMBER, b"c", NOW),
                        welcomes=[], used_refs=[ref_a])
    with pytest.raises(ReplayedKeyPackage):
        d.publish(env_a, NOW + 3)
    with pytest.raises(NotAdmissible):
        d.check_admissible(ref_a, alice.hash, NOW + 3)


def test_quota_per_identity(store, alice: Joiner, bob: Joiner) -> None:
    d = directory_for(store, alice.hash, max_one_time_per_identity=3)
    envs = [alice.publishable() for _ in range(3)]
    for env in envs:
        d.publish(env, NOW)
    before = snapshot(store)
    assert d.publish(envs[-1], NOW).duplicate  # a retry at quota is still answered as a duplicate
    with pytest.raises(QuotaExceeded):
        d.publish(alice.publishable(), NOW)
    # refused before the KeyPackage is even looked at (a flood past quota stays cheap)
    with pytest.raises(QuotaExceeded):
        d.publish(alice.envelope(b"\xff" * 64), NOW)
    assert snapshot(store) == before
    d.publish(bob.publishable(), NOW)  # another identity is not affected
    d.publish(alice.publishable(last_resort=True), NOW)  # nor is the last-resort slot
    d.fetch(MEMBER, alice.hash, SUITE, NOW)
    d.publish(alice.publishable(), NOW)  # a fetched one frees its slot


def test_global_cap(store, alice: Joiner, bob: Joiner) -> None:
    d = directory_for(store, max_entries=2)
    d.publish(alice.publishable(), NOW)
    d.publish(bob.publishable(), NOW)
    with pytest.raises(DirectoryError) as ei:
        d.publish(alice.publishable(), NOW)
    assert ei.value.code == "directory-full"


# --- fetch ----------------------------------------------------------------------------------------


def test_fetch_needs_authorisation_and_consumes_nothing_when_refused(store, alice: Joiner) -> None:
    d = directory_for(store)  # nobody may fetch
    d.publish(alice.publishable(), NOW)
    before = snapshot(store)
    with pytest.raises(FetchNotAuthorised):
        d.fetch(MEMBER, alice.hash, SUITE, NOW)
    with pytest.raises(FetchNotAuthorised):
        d.fetch(alice.hash, alice.hash, SUITE, NOW)
    assert snapshot(store) == before
    assert d.count_one_time(alice.hash) == 1


def test_fetch_with_nothing_left_or_wrong_suite_or_expired(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    with pytest.raises(NoKeyPackage):
        d.fetch(MEMBER, alice.hash, SUITE, NOW)
    d.publish(alice.publishable(not_after=NOW + 100), NOW)
    d.publish(alice.publishable(last_resort=True, not_after=NOW + 100), NOW)
    with pytest.raises(NoKeyPackage):
        d.fetch(MEMBER, alice.hash, 3, NOW)
    with pytest.raises(NoKeyPackage):
        d.fetch(MEMBER, alice.hash, SUITE, NOW + 100)  # both expired: neither is handed out
    assert d.count_one_time(alice.hash) == 1


def _race(d: KeyPackageDirectory, target: bytes, n: int) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = []
    lock = threading.Lock()

    members = [bytes([0x10 + i]) * 16 for i in range(n)]
    for m in members:
        d._may_fetch.allowed.add((m, target))

    def member(requester: bytes) -> None:
        barrier.wait()
        try:
            r: object = d.fetch(requester, target, SUITE, NOW)
        except DirectoryError as e:
            r = e
        with lock:
            results.append(r)

    threads = [threading.Thread(target=member, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_members_racing_for_one_one_time_key_package(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    one = d.publish(alice.publishable(), NOW).ref
    lr = d.publish(alice.publishable(last_resort=True), NOW).ref
    for _ in range(5):  # repeat: each round the one-time KeyPackage must go to exactly one fetcher
        results = _race(d, alice.hash, 2)
        refs = sorted(r.ref for r in results)
        assert refs == sorted([one, lr]), "one fetcher gets the one-time, the other the last resort"
        one = d.publish(alice.publishable(), NOW).ref


def test_many_members_racing_without_last_resort(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    refs = {d.publish(alice.publishable(), NOW).ref for _ in range(3)}
    results = _race(d, alice.hash, 12)
    got = [r.ref for r in results if not isinstance(r, DirectoryError)]
    assert sorted(got) == sorted(refs)
    assert sum(isinstance(r, NoKeyPackage) for r in results) == 9


def test_one_member_cannot_drain_a_joiners_one_time_stock(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    for _ in range(6):
        d.publish(alice.publishable(), NOW)
    got = [d.fetch(MEMBER, alice.hash, SUITE, NOW) for _ in range(ONE_TIME_TAKE_BURST)]
    assert not any(g.last_resort for g in got)
    with pytest.raises(FetchRateLimited) as ei:  # no last resort to fall back on
        d.fetch(MEMBER, alice.hash, SUITE, NOW)
    assert 0 < ei.value.retry_after <= ONE_TIME_TAKE_REFILL_S
    lr = d.publish(alice.publishable(last_resort=True), NOW).ref
    assert d.fetch(MEMBER, alice.hash, SUITE, NOW).ref == lr
    assert d.count_one_time(alice.hash) == 6 - ONE_TIME_TAKE_BURST  # the rest is kept for others
    other = b"O" * 16
    d._may_fetch.allowed.add((other, alice.hash))
    assert not d.fetch(other, alice.hash, SUITE, NOW).last_resort
    assert not d.fetch(MEMBER, alice.hash, SUITE, NOW + ONE_TIME_TAKE_REFILL_S).last_resort  # refilled


# --- admissibility and sweep ----------------------------------------------------------------------


def test_admissible_only_for_its_own_identity_while_live(store, alice: Joiner, bob: Joiner) -> None:
    d = directory_for(store, alice.hash)
    ref = d.publish(alice.publishable(not_after=NOW + 600), NOW).ref
    lr = d.publish(alice.publishable(last_resort=True, not_after=NOW + 600), NOW).ref
    assert d.fetch(MEMBER, alice.hash, SUITE, NOW).ref == ref
    assert d.check_admissible(ref, alice.hash, NOW).ref == ref
    assert d.is_admissible(lr, alice.hash, NOW)
    assert not d.is_admissible(ref, bob.hash, NOW)
    assert not d.is_admissible(b"\x00" * 32, alice.hash, NOW)
    assert d.is_admissible(ref, alice.hash, NOW + 600 + MAX_CLOCK_SKEW_S - 1)
    assert not d.is_admissible(ref, alice.hash, NOW + 600 + MAX_CLOCK_SKEW_S)
    # a last-resort KeyPackage stays admissible after being used
    store.create_stream(StreamRecord(1, b"g", MEMBER, 0, b"g"))
    store.accept_commit(1, epoch=0, group_state=b"g1", commit=CommitRecord(1, 0, MEMBER, b"c", NOW),
                        welcomes=[], used_refs=[ref, lr])
    assert not d.is_admissible(ref, alice.hash, NOW)
    assert d.is_admissible(lr, alice.hash, NOW)


def test_sweep_drops_expired_and_keeps_spent_refs_until_replay_is_impossible(store, alice: Joiner) -> None:
    d = directory_for(store, alice.hash)
    short_env = alice.publishable(not_after=NOW + 100)
    short = d.publish(short_env, NOW).ref
    d.fetch(MEMBER, alice.hash, SUITE, NOW)  # the short one goes first (soonest expiry)
    long_ref = d.publish(alice.publishable(), NOW).ref
    assert d.sweep(NOW + 50) == 0
    assert d.sweep(NOW + 100 + MAX_CLOCK_SKEW_S + 1) == 1
    assert store.get_key_package(short) is None and store.get_key_package(long_ref) is not None
    # a replay of the swept one now fails its lifetime check
    with pytest.raises(KeyPackageExpired):
        d.publish(short_env, NOW + 100 + MAX_CLOCK_SKEW_S + 1)


# --- independent implementations: the mlswg vectors -----------------------------------------------------


def test_mlswg_key_packages_pass_inspection() -> None:
    cases = load_mls("messages")
    for case in cases[:20]:
        info = inspect_key_package(bytes.fromhex(case["mls_key_package"]), frozenset({1, 3}))
        assert info.suite == 1 and info.not_before < info.not_after


def test_key_package_ref_matches_welcome_new_member_in_mlswg_vectors() -> None:
    """Our ref over the received bytes is what other implementations put in Welcome.secrets."""
    checked = 0
    for case in load_mls("welcome"):
        if case["cipher_suite"] not in (1, 3):
            continue
        info = inspect_key_package(bytes.fromhex(case["key_package"]), frozenset({1, 3}))
        welcome = MLSMessage.from_bytes(bytes.fromhex(case["welcome"])).body
        assert info.ref in [s.new_member for s in welcome.secrets]
        checked += 1
    assert checked == 2


# --- fuzz: mutated KeyPackages inside validly signed envelopes --------------------------------------

_FUZZ_JOINER = Joiner()
_FUZZ_KP = _FUZZ_JOINER.key_package()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), min_size=1, max_size=4),
       st.integers(min_value=-8, max_value=8))
def test_mutated_key_packages_raise_only_directory_errors_and_store_nothing(flips, cut) -> None:
    kp = bytearray(_FUZZ_KP)
    for pos, xor in flips:
        kp[pos % len(kp)] ^= xor
    if cut < 0:
        kp = kp[:cut]
    elif cut > 0:
        kp += bytes(cut)
    store = MemoryStore()
    d = KeyPackageDirectory(store, Roster(), suites={SUITE})
    try:
        d.publish(_FUZZ_JOINER.envelope(bytes(kp)), NOW)
    except DirectoryError:
        assert store.count_total() == 0
    else:  # a flip that left a valid KeyPackage (e.g. in a GREASE-free padding byte) is fine
        assert store.count_total() == 1
