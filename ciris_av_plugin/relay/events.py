"""Events the forwarding engine returns from :meth:`ForwardingEngine.tick` (aioquic style).

The transport routes them: ``KeyframeRequested`` to the publisher's long-poll ``events`` queue,
``SubscriberStalled``/``SubscriberResumed`` to the subscriber (and to logs and metrics),
``NackUpstream`` as a media packet on the publisher's link (not through the events queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..protocol import control


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of the relay engine's events.

    ``KIND`` is the event's stable wire name (``protocol/control.py``): the transport sends and counts
    events by it, never by class name, so renaming a class cannot change the protocol.
    """

    KIND: ClassVar[str]


@dataclass(frozen=True, slots=True)
class KeyframeRequested(Event):
    """Ask the publisher of a video track for a keyframe (coalesced and rate-limited per track)."""

    KIND: ClassVar[str] = control.EVENT_KEYFRAME_REQUESTED

    stream_id: int
    "The stream the track belongs to."
    track_id: int
    "The video track that needs a keyframe."
    link_id: bytes
    "The publisher (or upstream relay) link that feeds this track and should receive the request."


@dataclass(frozen=True, slots=True)
class SubscriberStalled(Event):
    """A subscriber sent no receiver report for ``stall_timeout``: sending to it has stopped."""

    KIND: ClassVar[str] = control.EVENT_SUBSCRIBER_STALLED

    link_id: bytes
    "The subscriber link."
    since: float
    "Relay-clock time of its last receiver report (or of its subscription, if it never sent one)."
    dropped_packets: int
    "Packets discarded from its queue when the stall began."


@dataclass(frozen=True, slots=True)
class SubscriberResumed(Event):
    """A stalled subscriber reported again: sending restarts at the next keyframe of each video track."""

    KIND: ClassVar[str] = control.EVENT_SUBSCRIBER_RESUMED

    link_id: bytes
    "The subscriber link."
    stalled_for: float
    "Seconds between the stall being declared and the report that ended it."


@dataclass(frozen=True, slots=True)
class NackUpstream(Event):
    """Fragments from a publisher went missing on its hop: send this NACK on its link.

    The transport sends ``packet`` as an unreliable media packet on ``link_id`` (the publisher,
    or upstream relay, that feeds the tracks named in it); it is not a long-poll event.
    """

    KIND: ClassVar[str] = control.EVENT_NACK_UPSTREAM

    link_id: bytes
    "The link that feeds the NACKed tracks."
    stream_id: int
    "The stream the NACK is about."
    packet: bytes
    "The encoded PT_NACK packet (protocol/nack.py)."
