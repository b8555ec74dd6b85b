"""The delivery service's refusals: one class per reason, each with a stable wire ``code``.

The transport answers a refused request with ``{"error": exc.code, "message": str(exc)}``; members
branch on the code (``protocol/codes.py`` holds the strings). Raising one leaves stored state unchanged.
"""

from __future__ import annotations

from ..errors import RelayError
from ..protocol import codes

__all__ = [
    "DeliveryError",
    "UnknownStream",
    "StreamExists",
    "BadGroupInfo",
    "NotAMember",
    "AlreadyMember",
    "JoinQueueFull",
    "RateLimited",
    "SubmissionTooLarge",
    "NotACommit",
    "PrivateHandshake",
    "ExternalCommit",
    "NotAProposal",
    "ExternalProposal",
    "ProposalNotAllowed",
    "TooManyProposals",
    "InvalidCommit",
    "StaleCommit",
    "FutureCommit",
    "SenderMismatch",
    "DuplicateIdentity",
    "WelcomeMismatch",
    "NoWelcome",
    "NotAnAdmitter",
    "NoJoinRequest",
    "RemoveNotOwn",
    "SinceOutOfRange",
    "BadAdmitters",
]


class DeliveryError(RelayError):
    """A delivery-service refusal; ``code`` is stable for the typed error reply."""

    code = codes.ERR_DELIVERY


class UnknownStream(DeliveryError):
    code = codes.ERR_UNKNOWN_STREAM


class StreamExists(DeliveryError):
    """``register_stream`` for a stream id or MLS group that is already registered."""

    code = codes.ERR_STREAM_EXISTS


class BadGroupInfo(DeliveryError):
    """The GroupInfo does not decode, or its signer is not the registering identity."""

    code = codes.ERR_BAD_GROUP_INFO


class NotAMember(DeliveryError):
    """The operation needs a leaf in the stream's current tree."""

    code = codes.ERR_NOT_MEMBER


class AlreadyMember(DeliveryError):
    """A join request from an identity that already has a leaf."""

    code = codes.ERR_ALREADY_MEMBER


class JoinQueueFull(DeliveryError):
    code = codes.ERR_JOIN_QUEUE_FULL


class RateLimited(DeliveryError):
    """Too many requests from this identity; ``retry_after`` seconds until the next is allowed."""

    code = codes.ERR_RATE_LIMITED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SubmissionTooLarge(DeliveryError):
    """A commit + Welcome, GroupInfo or proposal over :data:`MAX_SUBMISSION_SIZE` / :data:`MAX_PROPOSAL_SIZE`."""

    code = codes.ERR_SUBMISSION_TOO_LARGE


class NotACommit(DeliveryError):
    """The submitted message is not an MLSMessage carrying a commit."""

    code = codes.ERR_NOT_A_COMMIT


class PrivateHandshake(DeliveryError):
    """Handshakes in relayed groups must be PublicMessage so the relay can follow them."""

    code = codes.ERR_PRIVATE_HANDSHAKE


class ExternalCommit(DeliveryError):
    """External commits (and non-member senders) are refused in relayed groups."""

    code = codes.ERR_EXTERNAL_COMMIT


class NotAProposal(DeliveryError):
    """The submitted message is not an MLSMessage carrying a proposal."""

    code = codes.ERR_NOT_A_PROPOSAL


class ExternalProposal(DeliveryError):
    """Proposals from non-members are refused in relayed groups."""

    code = codes.ERR_EXTERNAL_PROPOSAL


class ProposalNotAllowed(DeliveryError):
    """A proposal type relayed groups do not carry (see :data:`ALLOWED_PROPOSAL_TYPES`)."""

    code = codes.ERR_PROPOSAL_NOT_ALLOWED


class TooManyProposals(DeliveryError):
    """The epoch already holds :data:`MAX_PROPOSALS_PER_EPOCH` proposals."""

    code = codes.ERR_TOO_MANY_PROPOSALS


class InvalidCommit(DeliveryError):
    """The commit is not publicly valid (or is for another group)."""

    code = codes.ERR_INVALID_COMMIT


class StaleCommit(DeliveryError):
    """The commit is for an epoch that has already been committed (another commit won)."""

    code = codes.ERR_STALE_EPOCH


class FutureCommit(DeliveryError):
    """The commit is for an epoch the stream has not reached."""

    code = codes.ERR_FUTURE_EPOCH


class SenderMismatch(DeliveryError):
    """The commit's sender leaf is not the submitting identity's leaf."""

    code = codes.ERR_SENDER_MISMATCH


class DuplicateIdentity(DeliveryError):
    """The commit would give an identity a second leaf (§12.2; a rejoin is Remove + Add in one commit)."""

    code = codes.ERR_DUPLICATE_IDENTITY


class WelcomeMismatch(DeliveryError):
    """The Welcome's ``new_member`` refs are not exactly the commit's Adds (or a Welcome is missing/extra)."""

    code = codes.ERR_WELCOME_MISMATCH


class NoWelcome(DeliveryError):
    """No unexpired Welcome waits for this identity in this stream."""

    code = codes.ERR_NO_WELCOME


class NotAnAdmitter(DeliveryError):
    """A commit carries a proposal by value (an Add or a Remove) but its committer is not one of the
    stream's admitters; other members commit only proposals the relay already holds, by reference."""

    code = codes.ERR_NOT_ADMITTER


class NoJoinRequest(DeliveryError):
    """A commit adds an identity that has no live join request on this stream."""

    code = codes.ERR_NO_JOIN_REQUEST


class RemoveNotOwn(DeliveryError):
    """A member proposed to remove another member's leaf (a member may propose only its own removal)."""

    code = codes.ERR_REMOVE_NOT_OWN


class SinceOutOfRange(DeliveryError):
    """``commits`` asked from an epoch the log cannot serve: ahead of the stream, or already pruned
    (the member is too far behind to replay; it re-joins instead)."""

    code = codes.ERR_SINCE_OUT_OF_RANGE


class BadAdmitters(DeliveryError):
    """The admitters named at registration are not identity hashes, or too many."""

    code = codes.ERR_BAD_ADMITTERS
