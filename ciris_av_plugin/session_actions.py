"""What a :class:`~ciris_av_plugin.session.Session` asks its caller to do: the I/O it does not do itself.

Every session call returns a list of :data:`Action` items, executed in order: these instructions
(send a request, persist or delete the state, install keys, subscribe, wait) and the application
events of ``session_events.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .session_events import AdmissionFailed, EpochChanged, Joined, KeyframeNeeded, Removed

__all__ = ["Request", "SaveState", "DeleteState", "InstallKeys", "Backoff", "Subscribe", "Action"]


@dataclass(frozen=True)
class Request:
    """Send a control request; feed its reply to ``on_reply`` (or a refusal to ``on_refused``)."""

    path: str
    """Request path (``protocol/control.py``)."""
    body: dict[str, Any]
    """msgpack-able body."""
    op: str = ""
    """What the reply continues (internal to the session)."""
    context: Any = None
    """Internal: what the session needs back with the reply."""


@dataclass(frozen=True)
class SaveState:
    """Persist the group state (``Group.to_bytes()``, mode 0600) before acting on the new epoch."""

    state: bytes
    """The bytes to store."""
    epoch: int
    """Epoch they hold."""


@dataclass(frozen=True)
class DeleteState:
    """The member is out of the group: delete its stored state."""


@dataclass(frozen=True)
class InstallKeys:
    """The group is at ``epoch``: install its media keys (opener always; sealer when ``send``)."""

    epoch: int
    """The group's epoch now."""
    send: bool
    """Senders may seal under it (False only while a restored publisher still owes its Update)."""


@dataclass(frozen=True)
class Backoff:
    """Call :meth:`Session.resume` after ``seconds`` (a commit was refused for now, not for good)."""

    seconds: float
    """How long to wait."""


@dataclass(frozen=True)
class Subscribe:
    """The joiner is a leaf now: open the media subscription of ``stream_id``."""

    stream_id: int
    """Stream to subscribe to."""


Action = (
    Request | Backoff | SaveState | DeleteState | InstallKeys | Subscribe | Joined | EpochChanged | KeyframeNeeded | Removed
    | AdmissionFailed
)
