"""Sans-I/O media layer: fragments, SFrame (RFC 9605), key ring, replay window.

The packet layouts it shares with the relay (forwarding and fragment headers, NACKs, receiver
reports) are ``ciris_av_plugin/protocol/``. Modules, from the wire inwards:

* :mod:`.reassembly` — fragments back into frame objects, with a deadline and bounded memory;
* :mod:`.sframe` — RFC 9605 header codec, key derivation, suites 1-5; :mod:`.vectors` checks it;
* :mod:`.kid` — the MLS KID layout (context = track, sender leaf, epoch low byte);
* :mod:`.keyring` — receive keys per epoch with a grace window, and the future-frame hold;
* :mod:`.replay` — per-KID anti-replay windows;
* :mod:`.ordering` — in-order release per track, loss counts, keyframe gating;
* :mod:`.nack` — the receiver's loss detector; :mod:`.retransmit` — the
  sender's retransmission ring and NACK responder (publisher and relay alike);
* :mod:`.frames` — :class:`FrameSealer` (publisher) and :class:`FrameOpener` (receiver), which
  tie the above together; :mod:`.events` holds the receiver's event dataclasses.

Nothing here reads a clock, sleeps or does I/O: time comes in as ``now`` (monotonic seconds).
"""

from .events import FrameDecrypted, FrameDropped, FrameEvent, FrameHeld
from .frames import FrameOpener, FrameSealer, SealedFrame
from .keyring import EpochKeyRing, EpochKeys, FutureFrameHold, KeySource, StaticKeySource
from .kid import KidParts, decode_kid, encode_kid
from .ordering import TrackStats
from .sframe import MEDIA_SUITE, CipherSuite, SFrameKey, sframe_decrypt, sframe_encrypt

__all__ = [
    "MEDIA_SUITE",
    "CipherSuite",
    "EpochKeyRing",
    "EpochKeys",
    "FrameDecrypted",
    "FrameDropped",
    "FrameEvent",
    "FrameHeld",
    "FrameOpener",
    "FrameSealer",
    "FutureFrameHold",
    "KeySource",
    "KidParts",
    "SFrameKey",
    "SealedFrame",
    "StaticKeySource",
    "TrackStats",
    "decode_kid",
    "encode_kid",
    "sframe_decrypt",
    "sframe_encrypt",
]
