"""Golden table of the control plane's strings on the wire: event kinds, request paths, error codes.

Each string is written out literally here, once, independent of the code: renaming an event class
or an error class, or editing a constant, fails one of these tests instead of silently changing what
a member and a relay of another version say to each other. A deliberate protocol change edits this
table in the same commit (and ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import ModuleType

from support_session import FakeRelay, make_plane

from ciris_av_plugin.protocol import codes, control, envelope
from ciris_av_plugin.relay import delivery_errors, delivery_events, directory, events, storage
from ciris_av_plugin.relay.delivery_events import Notify

# Event classes the relay emits -> the ``kind`` a long-poll entry carries for them.
# Typed refusals -> the ``error`` code of their reply.
ERROR_CODES = {
    "delivery_errors.DeliveryError": "delivery",
    "delivery_errors.UnknownStream": "unknown-stream",
    "delivery_errors.StreamExists": "stream-exists",
    "delivery_errors.BadGroupInfo": "bad-group-info",
    "delivery_errors.NotAMember": "not-member",
    "delivery_errors.AlreadyMember": "already-member",
    "delivery_errors.JoinQueueFull": "join-queue-full",
    "delivery_errors.RateLimited": "rate-limited",
    "delivery_errors.SubmissionTooLarge": "submission-too-large",
    "delivery_errors.NotACommit": "not-a-commit",
    "delivery_errors.PrivateHandshake": "private-handshake",
    "delivery_errors.ExternalCommit": "external-commit",
    "delivery_errors.NotAProposal": "not-a-proposal",
    "delivery_errors.ExternalProposal": "external-proposal",
    "delivery_errors.ProposalNotAllowed": "proposal-not-allowed",
    "delivery_errors.TooManyProposals": "too-many-proposals",
    "delivery_errors.InvalidCommit": "invalid-commit",
    "delivery_errors.StaleCommit": "stale-epoch",
    "delivery_errors.FutureCommit": "future-epoch",
    "delivery_errors.SenderMismatch": "sender-mismatch",
    "delivery_errors.DuplicateIdentity": "duplicate-identity",
    "delivery_errors.WelcomeMismatch": "welcome-mismatch",
    "delivery_errors.NoWelcome": "no-welcome",
    "delivery_errors.NotAnAdmitter": "not-admitter",
    "delivery_errors.NoJoinRequest": "no-join-request",
    "delivery_errors.RemoveNotOwn": "remove-not-own",
    "delivery_errors.SinceOutOfRange": "since-out-of-range",
    "delivery_errors.BadAdmitters": "bad-admitters",
    "directory.DirectoryError": "directory",
    "directory.InvalidKeyPackage": "invalid-key-package",
    "directory.IdentityMismatch": "identity-mismatch",
    "directory.PublisherMismatch": "publisher-mismatch",
    "directory.SuiteNotSupported": "unsupported-suite",
    "directory.KeyPackageExpired": "expired",
    "directory.KeyPackageNotYetValid": "not-yet-valid",
    "directory.LifetimeTooLong": "lifetime-too-long",
    "directory.StaleEnvelope": "stale-envelope",
    "directory.ReplayedKeyPackage": "replayed",
    "directory.QuotaExceeded": "quota",
    "directory.DirectoryFull": "directory-full",
    "directory.FetchNotAuthorised": "not-authorised",
    "directory.NoKeyPackage": "no-key-package",
    "directory.FetchRateLimited": "fetch-rate-limited",
    "directory.NotAdmissible": "key-package-not-admissible",
    "envelope.EnvelopeError": "bad-envelope",
    "envelope.MalformedEnvelope": "malformed-envelope",
    "envelope.OversizedEnvelope": "oversized",
    "envelope.BadEnvelopeSignature": "bad-signature",
    "storage.StorageError": "storage",
}
EVENT_KINDS = {
    "delivery_events.JoinRequested": "JoinRequested",
    "delivery_events.WelcomeReady": "WelcomeReady",
    "delivery_events.CommitAccepted": "CommitAccepted",
    "delivery_events.ProposalReceived": "ProposalReceived",
    "delivery_events.RecoveryRequested": "RecoveryRequested",
    "delivery_events.WelcomeExpired": "WelcomeExpired",
    "delivery_events.MemberUnreachable": "MemberUnreachable",
    "events.KeyframeRequested": "KeyframeRequested",
    "events.SubscriberStalled": "SubscriberStalled",
    "events.SubscriberResumed": "SubscriberResumed",
    "events.NackUpstream": "NackUpstream",
}

# Every constant of protocol/control.py, as it goes on the wire.
CONTROL_NAMES = {
    "APP_NAME": "ciris_av",
    "RELAY_ASPECT": "relay",
    "PATH_IDENTIFY_CONFIRM": "identify-confirm",
    "PATH_PUBLISH": "publish",
    "PATH_SUBSCRIBE": "subscribe",
    "PATH_EVENTS": "events",
    "PATH_STATS": "stats",
    "PATH_KP_PUBLISH": "kp-publish",
    "PATH_KP_FETCH": "kp-fetch",
    "PATH_REGISTER": "register-stream",
    "PATH_JOIN": "join",
    "PATH_WELCOME": "welcome",
    "PATH_WELCOME_ACK": "welcome-ack",
    "PATH_TREE": "tree",
    "PATH_COMMIT": "commit",
    "PATH_PROPOSE": "propose",
    "PATH_COMMITS": "commits",
    "PATH_COMMIT_FAILED": "commit-failed",
    "PATH_KEYFRAME": "keyframe",
    "PATH_JOIN_REQUESTS": "join-requests",
    "PATH_PROPOSALS": "proposals",
    "EVENT_JOIN_REQUESTED": "JoinRequested",
    "EVENT_WELCOME_READY": "WelcomeReady",
    "EVENT_COMMIT_ACCEPTED": "CommitAccepted",
    "EVENT_PROPOSAL_RECEIVED": "ProposalReceived",
    "EVENT_RECOVERY_REQUESTED": "RecoveryRequested",
    "EVENT_WELCOME_EXPIRED": "WelcomeExpired",
    "EVENT_MEMBER_UNREACHABLE": "MemberUnreachable",
    "EVENT_KEYFRAME_WANTED": "KeyframeWanted",
    "EVENT_KEYFRAME_REQUESTED": "KeyframeRequested",
    "EVENT_SUBSCRIBER_STALLED": "SubscriberStalled",
    "EVENT_SUBSCRIBER_RESUMED": "SubscriberResumed",
    "EVENT_NACK_UPSTREAM": "NackUpstream",
}

# The control plane's own refusal codes (transport/relay.py, transport/delivery_handlers.py).
CONTROL_CODES = {
    "ERR_BAD_REQUEST": "bad-request",
    "ERR_NOT_IDENTIFIED": "not-identified",
    "ERR_RATE_LIMITED": "rate-limited",
    "ERR_BUSY": "busy",
    "ERR_REFUSED": "refused",
    "ERR_UNKNOWN_LINK": "unknown-link",
    "ERR_NOT_MEMBER": "not-member",
    "ERR_TOO_LARGE": "too-large",
    "ERR_INTERNAL": "internal",
}

EVENT_MODULES = (delivery_events, events)
ERROR_MODULES = (delivery_errors, directory, envelope, storage)


def classes_of(modules: tuple[ModuleType, ...], keep) -> dict[str, type]:
    """``module.Class`` -> class, for the classes defined (not imported) in ``modules`` that ``keep``."""
    return {
        f"{m.__name__.rsplit('.', 1)[-1]}.{name}": obj
        for m in modules
        for name, obj in vars(m).items()
        if isinstance(obj, type) and obj.__module__ == m.__name__ and keep(obj)
    }


def test_every_event_class_has_its_pinned_wire_kind() -> None:
    found = classes_of(EVENT_MODULES, dataclasses.is_dataclass)
    found = {name: cls for name, cls in found.items() if name not in ("events.Event", "delivery_events.Notify")}
    assert {name: cls.KIND for name, cls in found.items()} == EVENT_KINDS


def test_every_event_names_its_kind_itself() -> None:
    """A new event must choose its wire name, not inherit one (or fall back to its class name)."""
    for name, cls in classes_of(EVENT_MODULES, lambda c: hasattr(c, "KIND")).items():
        assert "KIND" in vars(cls), f"{name} inherits its wire kind"


def test_every_refusal_has_its_pinned_code() -> None:
    found = classes_of(ERROR_MODULES, lambda c: issubclass(c, Exception) and "code" in vars(c))
    assert {name: cls.code for name, cls in found.items()} == ERROR_CODES


def test_control_names_and_codes_are_pinned() -> None:
    assert {k: v for k, v in vars(control).items() if k.isupper()} == CONTROL_NAMES
    every_code = set(ERROR_CODES.values()) | set(CONTROL_CODES.values())
    declared = {k: v for k, v in vars(codes).items() if k.isupper()}
    assert set(declared.values()) == every_code
    assert {k: declared[k] for k in CONTROL_CODES} == CONTROL_CODES


def test_codes_are_unique_kebab_case_strings() -> None:
    declared = [v for k, v in vars(codes).items() if k.isupper()]
    assert len(set(declared)) == len(declared)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", c) for c in declared), declared




def renamed(cls: type) -> type:
    """``cls`` under another class name, as a refactoring might leave it."""
    return dataclasses.dataclass(frozen=True)(type("Renamed" + cls.__name__, (cls,), {}))


def test_delivery_events_go_out_under_their_kind_not_their_class_name(tmp_path: Path) -> None:
    relay = FakeRelay()
    plane, store = make_plane(tmp_path / "relay.db", relay)
    try:
        link = relay.open_link(b"a" * 16)
        plane._notify([Notify(b"a" * 16, renamed(delivery_events.JoinRequested)(7, b"j" * 16))])
        assert relay.events[link.link_id] == [("JoinRequested", {"stream_id": 7, "identity": b"j" * 16})]
    finally:
        store.close()
