"""The relay's KeyPackage directory: publish, fetch, admissibility, expiry (sans-I/O).

A joiner publishes KeyPackages inside envelopes signed by its RNS identity (:mod:`.envelope`); a
member of a stream the joiner asked to join fetches one to commit an Add; the delivery service asks
:meth:`KeyPackageDirectory.check_admissible` before it accepts a commit that adds it. The relay holds
no group secrets, so everything here is a public check:

* the envelope signature (the RNS identity really published this);
* the binding: the KeyPackage's ``BasicCredential.identity`` must be that identity's hash, so one
  identity cannot publish KeyPackages that would add someone else (ARCHITECTURE "Identity binding");
* the KeyPackage itself as RFC 9420 §10.1 asks: its signature, its leaf node (§7.3: source, leaf
  signature, credential and extensions covered by its capabilities), ``init_key != encryption_key``,
  a cipher suite this relay serves, a lifetime that holds now (within :data:`MAX_CLOCK_SKEW_S`);
* one-time KeyPackages go out once and their ref is never accepted again; a last-resort one (marked
  in the envelope, since MLS has no such field) is handed out only when no one-time one is left;
* a per-identity quota and a global cap, so a flood of publishes costs bounded storage.

Every refusal is a :class:`DirectoryError` subclass with a stable ``code`` and leaves the store as it
was. Time comes in as ``now``: wall-clock Unix seconds, because KeyPackage lifetimes are wall-clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import MLSError, RelayError
from ..mls.codec import Reader, decode_all
from ..mls.crypto import SUITES, CipherSuite
from ..mls.registries import CredentialType, ProtocolVersion, WireFormat
from ..mls.tree import validate_key_package
from ..mls.tree_structs import KeyPackage
from ..protocol import codes
from ..protocol.envelope import IDENTITY_HASH_LEN, KeyPackageEnvelope, open_envelope
from ..ratelimit import TokenBucket
from .storage import DirectoryStore, KeyPackageEntry, PutOutcome

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "MAX_ENVELOPE_AGE_S",
    "MAX_KEY_PACKAGE_LIFETIME_S",
    "MAX_ONE_TIME_PER_IDENTITY",
    "MAX_DIRECTORY_ENTRIES",
    "DirectoryError",
    "InvalidKeyPackage",
    "IdentityMismatch",
    "PublisherMismatch",
    "SuiteNotSupported",
    "KeyPackageExpired",
    "KeyPackageNotYetValid",
    "LifetimeTooLong",
    "StaleEnvelope",
    "ReplayedKeyPackage",
    "QuotaExceeded",
    "DirectoryFull",
    "FetchNotAuthorised",
    "NoKeyPackage",
    "FetchRateLimited",
    "NotAdmissible",
    "KeyPackageInfo",
    "PublishResult",
    "FetchedKeyPackage",
    "inspect_key_package",
    "KeyPackageDirectory",
]

# Clock disagreement tolerated between a publisher and the relay. KeyPackages are back-dated an hour
# by their creators, so ``not_before`` almost never needs it; it matters for the envelope's ``ts``
# and a joiner whose clock runs ahead. Five minutes is Kerberos' default skew and what NTP-less
# embedded nodes typically stay within.
MAX_CLOCK_SKEW_S = 5 * 60

# Oldest envelope accepted. Clients sign at publish time and retry within seconds; a day allows a
# client that queued publishes while offline, and bounds how long a captured envelope stays replayable
# (a replayed one-time ref is refused anyway; this also covers the time after its spent ref is swept).
MAX_ENVELOPE_AGE_S = 24 * 3600

# Longest KeyPackage lifetime accepted (from ``now`` to ``not_after``). OpenMLS defaults to 12 weeks
# (plus the hour of back-dating); 90 days admits that. It bounds how long a spent ref must be
# remembered and keeps ``not_after`` (a uint64 on the wire) within the store's 64-bit integers.
MAX_KEY_PACKAGE_LIFETIME_S = 90 * 24 * 3600

# Live one-time KeyPackages per identity. A joiner needs one per join attempt and replenishes when it
# reconnects; Matrix keeps ~50 one-time keys per device for a far busier use. 32 covers a burst of
# joins and re-adds (recovery after commit_failed) while bounding one identity's storage to ~256 KiB.
MAX_ONE_TIME_PER_IDENTITY = 32

# All stored entries, every identity. At the 8 KiB KeyPackage ceiling this is under 1 GiB worst case
# (~300 MB at X-Wing sizes); a fabric node serving a few thousand identities never comes near it.
MAX_DIRECTORY_ENTRIES = 100_000

# One-time KeyPackages one member may take of one identity: a burst of 3 (a fetch, and retries after
# losing a commit race), then one per 30 s. Beyond it the member gets the last-resort KeyPackage
# (or a refusal if there is none), so one greedy or buggy member cannot drain a joiner's stock that
# other streams' admitters also draw on. A join needs one fetch.
ONE_TIME_TAKE_BURST = 3
ONE_TIME_TAKE_REFILL_S = 30.0
# (requester, target) pairs whose take budgets are remembered; full ones are forgotten first.
MAX_TAKE_BUDGETS = 10_000


# --- errors -------------------------------------------------------------------------------------


class DirectoryError(RelayError):
    """A directory refusal; ``code`` is stable and machine-readable for the typed error reply."""

    code = codes.ERR_DIRECTORY


class InvalidKeyPackage(DirectoryError):
    """Not a valid RFC 9420 KeyPackage (framing, signatures, leaf node, keys)."""

    code = codes.ERR_INVALID_KEY_PACKAGE


class IdentityMismatch(DirectoryError):
    """The KeyPackage's credential is not a basic credential naming the envelope signer."""

    code = codes.ERR_IDENTITY_MISMATCH


class PublisherMismatch(DirectoryError):
    """The publishing link's identity is not the envelope signer."""

    code = codes.ERR_PUBLISHER_MISMATCH


class SuiteNotSupported(DirectoryError):
    """The KeyPackage's cipher suite is not one this relay serves."""

    code = codes.ERR_UNSUPPORTED_SUITE


class KeyPackageExpired(DirectoryError):
    """The KeyPackage's lifetime has ended."""

    code = codes.ERR_EXPIRED


class KeyPackageNotYetValid(DirectoryError):
    """The KeyPackage's lifetime starts in the future (beyond the clock-skew allowance)."""

    code = codes.ERR_NOT_YET_VALID


class LifetimeTooLong(DirectoryError):
    """``not_after`` is further away than :data:`MAX_KEY_PACKAGE_LIFETIME_S`."""

    code = codes.ERR_LIFETIME_TOO_LONG


class StaleEnvelope(DirectoryError):
    """The envelope's ``ts`` is older than :data:`MAX_ENVELOPE_AGE_S` or in the future."""

    code = codes.ERR_STALE_ENVELOPE


class ReplayedKeyPackage(DirectoryError):
    """A one-time ref already handed out or used, or a last-resort envelope no newer than the stored one."""

    code = codes.ERR_REPLAYED


class QuotaExceeded(DirectoryError):
    """The identity already holds :data:`MAX_ONE_TIME_PER_IDENTITY` live one-time KeyPackages."""

    code = codes.ERR_QUOTA


class DirectoryFull(DirectoryError):
    """The directory holds :data:`MAX_DIRECTORY_ENTRIES`."""

    code = codes.ERR_DIRECTORY_FULL


class FetchNotAuthorised(DirectoryError):
    """The requester is not a member of a stream the target asked to join (RFC 9420 §16.8)."""

    code = codes.ERR_NOT_AUTHORISED


class NoKeyPackage(DirectoryError):
    """The target has no live KeyPackage of the requested suite."""

    code = codes.ERR_NO_KEY_PACKAGE


class FetchRateLimited(DirectoryError):
    """The requester used up its one-time budget for this identity and no last resort exists."""

    code = codes.ERR_FETCH_RATE_LIMITED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotAdmissible(DirectoryError):
    """An Add names a KeyPackage the directory cannot vouch for (unknown, other identity, used, expired)."""

    code = codes.ERR_KEY_PACKAGE_NOT_ADMISSIBLE


# --- KeyPackage inspection ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPackageInfo:
    """What the directory needs from a KeyPackage that passed RFC 9420 §10.1 checks."""

    ref: bytes
    """KeyPackageRef (§5.2) over the KeyPackage bytes as received."""
    identity: bytes
    """``BasicCredential.identity`` of its leaf node."""
    suite: int
    """Its cipher suite id."""
    not_before: int
    """Lifetime start (Unix seconds)."""
    not_after: int
    """Lifetime end (Unix seconds)."""


# MLSMessage header in front of a KeyPackage body: version (u16) and wire_format (u16).
_MLS_MESSAGE_HEADER_LEN = 4


def inspect_key_package(mls_message: bytes, suites: frozenset[int]) -> KeyPackageInfo:
    """Decode an MLSMessage-framed KeyPackage and check what RFC 9420 §10.1 lets a non-member check.

    Lifetime and identity are returned, not judged: they depend on ``now`` and on the envelope.
    Raises :class:`InvalidKeyPackage` or :class:`SuiteNotSupported`.
    """

    def body(r: Reader) -> KeyPackage:
        version = r.u16()
        if version != ProtocolVersion.MLS10:
            raise InvalidKeyPackage(f"MLSMessage version {version} is not mls10")
        wire_format = r.u16()
        if wire_format != WireFormat.KEY_PACKAGE:
            raise InvalidKeyPackage(f"MLSMessage wire format {wire_format} is not mls_key_package")
        return KeyPackage.decode(r)

    try:
        kp = decode_all(mls_message, body)
    except MLSError as e:
        raise InvalidKeyPackage(f"KeyPackage does not decode: {e}") from None
    if kp.version != ProtocolVersion.MLS10:
        raise InvalidKeyPackage(f"KeyPackage version {kp.version} is not mls10")
    if kp.cipher_suite not in suites:
        raise SuiteNotSupported(f"cipher suite 0x{kp.cipher_suite:04x} is not served here")
    try:
        suite = CipherSuite(kp.cipher_suite)
    except MLSError:
        raise SuiteNotSupported(f"cipher suite 0x{kp.cipher_suite:04x} is not implemented") from None
    leaf = kp.leaf_node
    if leaf.credential.credential_type != CredentialType.BASIC:
        raise IdentityMismatch("credential is not a basic credential carrying an RNS identity hash")
    try:
        # The MLS core's §10.1 / §7.3 checks (source, capabilities, both signatures, fresh init_key),
        # so the relay and members judge a KeyPackage by one implementation. Lifetime is left to the
        # caller, which applies its own clock-skew allowance.
        validate_key_package(suite, kp)
    except MLSError as e:
        raise InvalidKeyPackage(str(e)) from None
    if leaf.lifetime is None:  # unreachable after validation; keeps the type checker honest
        raise InvalidKeyPackage("key_package leaf node without lifetime")
    return KeyPackageInfo(
        ref=suite.make_key_package_ref(mls_message[_MLS_MESSAGE_HEADER_LEN:]),
        identity=leaf.credential.identity,
        suite=kp.cipher_suite,
        not_before=leaf.lifetime.not_before,
        not_after=leaf.lifetime.not_after,
    )


# --- the directory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """A successful publish."""

    ref: bytes
    """KeyPackageRef of the stored KeyPackage."""
    last_resort: bool
    """Whether it was stored as the identity's last-resort KeyPackage."""
    duplicate: bool
    """It was already stored (a retry): nothing changed."""


@dataclass(frozen=True)
class FetchedKeyPackage:
    """What a fetching member gets: the KeyPackage and the envelope that binds it to the identity."""

    ref: bytes
    """KeyPackageRef the member's Add will carry."""
    key_package: bytes
    """MLSMessage-framed KeyPackage."""
    envelope: bytes
    """The publisher's signed envelope, for the member to check the RNS binding itself."""
    last_resort: bool
    """Whether this was the last-resort KeyPackage (the target has no one-time one left)."""


MayFetch = Callable[[bytes, bytes, float], bool]
"""``may_fetch(requester, target, now)``: is ``requester`` a member of a stream ``target`` has a live
request to join at ``now``?"""

Inspector = Callable[[bytes, frozenset[int]], KeyPackageInfo]


class KeyPackageDirectory:
    """KeyPackage directory logic over a :class:`DirectoryStore`.

    ``may_fetch`` comes from the delivery service, which knows rosters and join requests; ``suites``
    are the cipher suites this relay serves (default: every suite this build implements).
    Single-threaded: part of the delivery core, whose one lock the transport holds.
    """

    def __init__(
        self,
        store: DirectoryStore,
        may_fetch: MayFetch,
        *,
        suites: Iterable[int] | None = None,
        max_one_time_per_identity: int = MAX_ONE_TIME_PER_IDENTITY,
        max_entries: int = MAX_DIRECTORY_ENTRIES,
        inspect: Inspector = inspect_key_package,
    ) -> None:
        self._store = store
        self._may_fetch = may_fetch
        self._suites = frozenset(SUITES if suites is None else suites)
        self._max_one_time = max_one_time_per_identity
        self._max_entries = max_entries
        self._inspect = inspect
        self._budgets: dict[tuple[bytes, bytes], TokenBucket] = {}
        self.counters: Counter[str] = Counter()
        """Outcomes by name (``published``, ``refused.<code>``, ``fetched.one_time`` ...), for metrics."""

    @property
    def suites(self) -> frozenset[int]:
        """Cipher suites this directory accepts."""
        return self._suites

    # --- publish ----------------------------------------------------------------------------

    def publish(self, envelope: bytes, now: float, *, publisher: bytes | None = None) -> PublishResult:
        """Verify and store one published KeyPackage; raise a :class:`RelayError` to refuse it.

        ``publisher`` is the identity hash of the link it came in on, when the transport knows it:
        a link may only publish its own KeyPackages.
        """
        try:
            result = self._publish(envelope, now, publisher)
        except RelayError as e:
            self.counters[f"refused.{e.code}"] += 1
            log.info("KeyPackage publish refused (%s): %s", e.code, e)
            raise
        self.counters["duplicate" if result.duplicate else "published"] += 1
        return result

    def _publish(self, raw: bytes, now: float, publisher: bytes | None) -> PublishResult:
        env: KeyPackageEnvelope = open_envelope(raw)
        signer = env.identity_hash
        if publisher is not None and publisher != signer:
            raise PublisherMismatch("envelope is signed by another identity than the publishing link")
        if env.ts > now + MAX_CLOCK_SKEW_S or env.ts < now - MAX_ENVELOPE_AGE_S:
            raise StaleEnvelope(f"envelope ts {env.ts} is outside [now - {MAX_ENVELOPE_AGE_S}, now + skew]")
        if (
            not env.last_resort
            and self._store.count_one_time(signer) >= self._max_one_time
            and not self._is_stored(env.key_package)
        ):
            # Cheap early refusal before the KeyPackage's two signature checks, so an identity
            # flooding past its quota costs one envelope verification per publish. A retry of a
            # stored KeyPackage goes on to be answered as a duplicate. The store re-checks
            # atomically on insert.
            raise QuotaExceeded(f"identity holds {self._max_one_time} one-time KeyPackages already")
        info = self._inspect(env.key_package, self._suites)
        if len(info.identity) != IDENTITY_HASH_LEN or info.identity != signer:
            raise IdentityMismatch("KeyPackage credential identity is not the envelope signer's identity hash")
        if info.not_before > now + MAX_CLOCK_SKEW_S:
            raise KeyPackageNotYetValid(f"lifetime starts at {info.not_before}, now is {now:.0f}")
        if info.not_after <= now:
            raise KeyPackageExpired(f"lifetime ended at {info.not_after}, now is {now:.0f}")
        if info.not_after - now > MAX_KEY_PACKAGE_LIFETIME_S:
            raise LifetimeTooLong(f"lifetime ends more than {MAX_KEY_PACKAGE_LIFETIME_S} s from now")
        entry = KeyPackageEntry(
            ref=info.ref,
            identity=signer,
            suite=info.suite,
            last_resort=env.last_resort,
            not_after=info.not_after,
            key_package=env.key_package,
            envelope=env.raw,
            published_ts=env.ts,
        )
        outcome = self._store.put_key_package(entry, max_one_time=self._max_one_time, max_total=self._max_entries)
        if outcome is PutOutcome.STORED:
            return PublishResult(info.ref, env.last_resort, duplicate=False)
        if outcome is PutOutcome.DUPLICATE:
            stored = self._store.get_key_package(info.ref)
            return PublishResult(info.ref, stored.last_resort if stored else env.last_resort, duplicate=True)
        if outcome in (PutOutcome.SPENT, PutOutcome.STALE_LAST_RESORT):
            raise ReplayedKeyPackage(f"KeyPackage {info.ref.hex()[:16]} was already handed out or superseded")
        if outcome is PutOutcome.QUOTA:
            raise QuotaExceeded(f"identity holds {self._max_one_time} one-time KeyPackages already")
        raise DirectoryFull(f"directory holds {self._max_entries} KeyPackages")

    def _is_stored(self, mls_message: bytes) -> bool:
        """Whether this exact KeyPackage is stored, judged by its ref alone (one hash, no checks)."""
        suite_id = int.from_bytes(mls_message[6:8], "big")  # MLSMessage header (4) + KeyPackage.version (2)
        if suite_id not in self._suites or suite_id not in SUITES:
            return False
        ref = CipherSuite(suite_id).make_key_package_ref(mls_message[_MLS_MESSAGE_HEADER_LEN:])
        return self._store.get_key_package(ref) is not None

    # --- fetch ------------------------------------------------------------------------------

    def fetch(self, requester: bytes, target: bytes, suite: int, now: float) -> FetchedKeyPackage:
        """Hand ``requester`` one KeyPackage of ``target`` for ``suite``: one-time first, then last resort.

        Only a member of a stream that ``target`` asked to join may fetch (``may_fetch``), so
        KeyPackages cannot be drained or harvested by anyone else (RFC 9420 §16.8).
        """
        if not self._may_fetch(requester, target, now):
            self.counters[f"refused.{FetchNotAuthorised.code}"] += 1
            raise FetchNotAuthorised("requester is not a member of a stream the target asked to join")
        bucket = self._take_budget(requester, target, now)
        budget = bucket.tokens
        entry = None
        if budget >= 1:
            entry = self._store.take_one_time(target, suite, now, taken_by=requester)
            if entry is not None:
                bucket.tokens -= 1
        if entry is None:
            entry = self._store.last_resort(target, suite, now)
        if entry is None:
            if budget < 1 and self._store.count_one_time(target):
                self.counters[f"refused.{FetchRateLimited.code}"] += 1
                raise FetchRateLimited(
                    "one-time KeyPackages of this identity taken too fast",
                    retry_after=bucket.retry_after(),
                )
            self.counters[f"refused.{NoKeyPackage.code}"] += 1
            raise NoKeyPackage(f"no live KeyPackage of suite 0x{suite:04x} for that identity")
        self.counters["fetched.last_resort" if entry.last_resort else "fetched.one_time"] += 1
        log.debug("KeyPackage %s of %s fetched by %s", entry.ref.hex()[:16], target.hex(), requester.hex())
        return FetchedKeyPackage(entry.ref, entry.key_package, entry.envelope, entry.last_resort)

    def _take_budget(self, requester: bytes, target: bytes, now: float) -> TokenBucket:
        """The one-time take bucket of (requester, target), refilled to ``now``."""
        key = (requester, target)
        bucket = self._budgets.get(key)
        if bucket is None:
            if len(self._budgets) >= MAX_TAKE_BUDGETS:
                self._budgets.clear()  # forgetting only forgives; bounded memory under a flood
            bucket = self._budgets[key] = TokenBucket(1 / ONE_TIME_TAKE_REFILL_S, ONE_TIME_TAKE_BURST, now)
        bucket.refill(now)
        return bucket

    # --- admissibility (delivery service) ------------------------------------------------------

    def check_admissible(self, ref: bytes, identity: bytes, now: float) -> KeyPackageEntry:
        """The directory entry an Add of ``ref`` for ``identity`` may use, or :class:`NotAdmissible`.

        Admissible: stored with a verified envelope of ``identity``, not expired (allowing
        :data:`MAX_CLOCK_SKEW_S` for a commit built just before expiry), and for a one-time
        KeyPackage not yet used by an accepted commit. The delivery service marks it used in the
        same transaction that accepts the commit (``GroupStateStore.accept_commit``).
        """
        entry = self._store.get_key_package(ref)
        if entry is None:
            raise NotAdmissible("KeyPackage is not in the directory (never published, used or expired)")
        if entry.identity != identity:
            raise NotAdmissible("KeyPackage belongs to another identity")
        if entry.not_after + MAX_CLOCK_SKEW_S <= now:
            raise NotAdmissible("KeyPackage has expired")
        if not entry.last_resort and self._store.is_used(ref):
            raise NotAdmissible("one-time KeyPackage was already added")
        return entry

    def is_admissible(self, ref: bytes, identity: bytes, now: float) -> bool:
        """Boolean form of :meth:`check_admissible`."""
        try:
            self.check_admissible(ref, identity, now)
        except NotAdmissible:
            return False
        return True

    # --- housekeeping -----------------------------------------------------------------------

    def sweep(self, now: float) -> int:
        """Forget expired KeyPackages and the spent refs that can no longer be replayed.

        Runs with a skew margin so a wall clock stepped back a little cannot revive a swept ref.
        """
        n = self._store.sweep_expired(now - MAX_CLOCK_SKEW_S)
        if n:
            self.counters["swept"] += n
            log.info("swept %d expired KeyPackages", n)
        return n

    def retain(self, identity: bytes, refs: Iterable[bytes]) -> int:
        """Keep only the KeyPackages of ``identity`` named in ``refs`` (the ones its running process
        holds the private keys of); drop the rest for good and return how many.

        A joiner restarted with the same identity cannot open a Welcome made for a KeyPackage its
        earlier process published; without this the directory would hand those out first.
        """
        n = self._store.retain_key_packages(identity, tuple(refs))
        if n:
            self.counters["replaced"] += n
        return n

    def count_one_time(self, identity: bytes) -> int:
        """Live one-time KeyPackages of ``identity`` (for a client deciding to replenish)."""
        return self._store.count_one_time(identity)
