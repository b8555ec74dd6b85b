"""The delivery control plane's names on the wire, shared by the relay binding and the client session.

Requests are ``RNS.Link.request`` paths with msgpack map bodies (``transport/control.py``); events
are long-poll entries whose ``kind`` is the delivery event's class name (``relay/delivery.py``).
Keeping the names here lets the sans-I/O session speak the protocol without importing the transport.
"""

from __future__ import annotations

from .delivery import FutureCommit, SinceOutOfRange, StaleCommit

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

EVENT_JOIN_REQUESTED = "JoinRequested"
EVENT_WELCOME_READY = "WelcomeReady"
EVENT_COMMIT_ACCEPTED = "CommitAccepted"
EVENT_PROPOSAL_RECEIVED = "ProposalReceived"
EVENT_RECOVERY_REQUESTED = "RecoveryRequested"
EVENT_WELCOME_EXPIRED = "WelcomeExpired"
EVENT_MEMBER_UNREACHABLE = "MemberUnreachable"
EVENT_KEYFRAME_WANTED = "KeyframeWanted"
"""On a publisher link: a member at ``epoch`` needs a keyframe of ``track_id``."""
EVENT_KEYFRAME_REQUESTED = "KeyframeRequested"
"""On a publisher link: the relay's engine wants a keyframe (new or recovering subscriber)."""

# Refusal codes the session acts on (the delivery service's and directory's stable codes).
CODE_STALE_COMMIT = StaleCommit.code
CODE_FUTURE_COMMIT = FutureCommit.code
CODE_SINCE_OUT_OF_RANGE = SinceOutOfRange.code
