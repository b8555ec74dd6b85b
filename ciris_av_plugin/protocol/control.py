"""Names of the control plane on the wire: the relay destination, request paths and long-poll event kinds.

Requests are ``RNS.Link.request`` paths with msgpack map bodies (``transport/control.py``); events
are long-poll entries ``{"kind": ..., "data": ...}``. Both ends must spell these exactly as the other
does, so they are constants here, not derived from Python names: every event dataclass the relay
emits carries its kind as ``KIND`` (``relay/delivery_events.py``, ``relay/events.py``) and the
transport sends that, so renaming a class cannot change the protocol. ``tests/test_protocol_golden.py``
pins every string. Refusal codes are ``protocol/codes.py``.
"""

from __future__ import annotations

# The relay's RNS destination is (APP_NAME, RELAY_ASPECT) under its identity: a client computes the
# same destination hash from the relay's identity, so both ends must spell these alike.
APP_NAME = "ciris_av"
RELAY_ASPECT = "relay"

# Media-plane control (transport/relay.py). Kept short: RNS hashes the path into every request.
PATH_IDENTIFY_CONFIRM = "identify-confirm"
PATH_PUBLISH = "publish"
PATH_SUBSCRIBE = "subscribe"
PATH_EVENTS = "events"
PATH_STATS = "stats"

# The delivery service (transport/delivery_handlers.py).
PATH_KP_PUBLISH = "kp-publish"
PATH_KP_FETCH = "kp-fetch"
PATH_REGISTER = "register-stream"
PATH_JOIN = "join"
PATH_WELCOME = "welcome"
PATH_WELCOME_ACK = "welcome-ack"
PATH_TREE = "tree"
PATH_COMMIT = "commit"
PATH_PROPOSE = "propose"
PATH_COMMITS = "commits"
PATH_COMMIT_FAILED = "commit-failed"
PATH_KEYFRAME = "keyframe"
PATH_JOIN_REQUESTS = "join-requests"
PATH_PROPOSALS = "proposals"

# Delivery-service events (relay/delivery_events.py), to members.
EVENT_JOIN_REQUESTED = "JoinRequested"
EVENT_WELCOME_READY = "WelcomeReady"
EVENT_COMMIT_ACCEPTED = "CommitAccepted"
EVENT_PROPOSAL_RECEIVED = "ProposalReceived"
EVENT_RECOVERY_REQUESTED = "RecoveryRequested"
EVENT_WELCOME_EXPIRED = "WelcomeExpired"
EVENT_MEMBER_UNREACHABLE = "MemberUnreachable"
EVENT_KEYFRAME_WANTED = "KeyframeWanted"
"""On a publisher link: a member at ``epoch`` needs a keyframe of ``track_id``."""

# Forwarding-engine events (relay/events.py), to publishers and subscribers.
EVENT_KEYFRAME_REQUESTED = "KeyframeRequested"
"""On a publisher link: the relay's engine wants a keyframe (new or recovering subscriber)."""
EVENT_SUBSCRIBER_STALLED = "SubscriberStalled"
EVENT_SUBSCRIBER_RESUMED = "SubscriberResumed"
EVENT_NACK_UPSTREAM = "NackUpstream"
"""Counted by kind like the others, but sent as a ``PT_NACK`` media packet, not a long-poll entry."""
