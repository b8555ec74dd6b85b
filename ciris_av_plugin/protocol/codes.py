"""Error codes on the wire: the ``error`` of a refused control request (``{"error": code, "message": text}``).

Stable strings: clients branch on them (a member retries a ``stale-epoch`` commit after catching up,
backs off on ``rate-limited``), so a code never changes once shipped; ``tests/test_protocol_golden.py``
pins every one. Each typed refusal (``relay/delivery_errors.py``, ``relay/directory.py``,
``protocol/envelope.py``, ``relay/storage.py``) takes its ``code`` from here.
"""

from __future__ import annotations

# The control plane's own refusals (transport/relay.py, transport/delivery_handlers.py).
ERR_BAD_REQUEST = "bad-request"
ERR_NOT_IDENTIFIED = "not-identified"
ERR_RATE_LIMITED = "rate-limited"
ERR_BUSY = "busy"
ERR_REFUSED = "refused"
ERR_UNKNOWN_LINK = "unknown-link"
ERR_NOT_MEMBER = "not-member"
ERR_TOO_LARGE = "too-large"
ERR_INTERNAL = "internal"

# The delivery service (relay/delivery_errors.py).
ERR_DELIVERY = "delivery"
ERR_UNKNOWN_STREAM = "unknown-stream"
ERR_STREAM_EXISTS = "stream-exists"
ERR_BAD_GROUP_INFO = "bad-group-info"
ERR_ALREADY_MEMBER = "already-member"
ERR_JOIN_QUEUE_FULL = "join-queue-full"
ERR_SUBMISSION_TOO_LARGE = "submission-too-large"
ERR_NOT_A_COMMIT = "not-a-commit"
ERR_PRIVATE_HANDSHAKE = "private-handshake"
ERR_EXTERNAL_COMMIT = "external-commit"
ERR_NOT_A_PROPOSAL = "not-a-proposal"
ERR_EXTERNAL_PROPOSAL = "external-proposal"
ERR_PROPOSAL_NOT_ALLOWED = "proposal-not-allowed"
ERR_TOO_MANY_PROPOSALS = "too-many-proposals"
ERR_INVALID_COMMIT = "invalid-commit"
ERR_STALE_EPOCH = "stale-epoch"
ERR_FUTURE_EPOCH = "future-epoch"
ERR_SENDER_MISMATCH = "sender-mismatch"
ERR_DUPLICATE_IDENTITY = "duplicate-identity"
ERR_WELCOME_MISMATCH = "welcome-mismatch"
ERR_NO_WELCOME = "no-welcome"
ERR_NOT_ADMITTER = "not-admitter"
ERR_NO_JOIN_REQUEST = "no-join-request"
ERR_REMOVE_NOT_OWN = "remove-not-own"
ERR_SINCE_OUT_OF_RANGE = "since-out-of-range"
ERR_BAD_ADMITTERS = "bad-admitters"

# The KeyPackage directory (relay/directory.py).
ERR_DIRECTORY = "directory"
ERR_INVALID_KEY_PACKAGE = "invalid-key-package"
ERR_IDENTITY_MISMATCH = "identity-mismatch"
ERR_PUBLISHER_MISMATCH = "publisher-mismatch"
ERR_UNSUPPORTED_SUITE = "unsupported-suite"
ERR_EXPIRED = "expired"
ERR_NOT_YET_VALID = "not-yet-valid"
ERR_LIFETIME_TOO_LONG = "lifetime-too-long"
ERR_STALE_ENVELOPE = "stale-envelope"
ERR_REPLAYED = "replayed"
ERR_QUOTA = "quota"
ERR_DIRECTORY_FULL = "directory-full"
ERR_NOT_AUTHORISED = "not-authorised"
ERR_NO_KEY_PACKAGE = "no-key-package"
ERR_FETCH_RATE_LIMITED = "fetch-rate-limited"
ERR_KEY_PACKAGE_NOT_ADMISSIBLE = "key-package-not-admissible"

# KeyPackage envelopes (protocol/envelope.py).
ERR_BAD_ENVELOPE = "bad-envelope"
ERR_MALFORMED_ENVELOPE = "malformed-envelope"
ERR_OVERSIZED = "oversized"
ERR_BAD_SIGNATURE = "bad-signature"

# Relay storage (relay/storage.py).
ERR_STORAGE = "storage"
