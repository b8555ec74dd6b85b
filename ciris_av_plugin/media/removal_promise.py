"""The removal promise checked from ciphertext (ARCHITECTURE.md, "Epochs, removal and media keys").

A removed member cannot decrypt any frame whose KID epoch is at or after the epoch of its removal.
:func:`check_removal_promise` proves it the way an auditor would: it replays the commits that
followed the removal against the member's retained state (:func:`~..mls.removal_audit.follow_as_removed`,
which tries every private key the member kept), installs every epoch the member held or derived
into one opener per epoch, feeds it the frames a remaining member captured, and counts what opened
by KID epoch. Counting from the frames, not from the relay having closed links, is what makes
the check able to fail: a commit that leaks the new epoch to the removed leaf opens frames here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..mls.removal_audit import RemovalAudit, follow_as_removed
from ..protocol import media_wire as wire
from .errors import MediaError
from .events import FrameDecrypted
from .frames import FrameOpener
from .keyring import EpochKeys
from .mls_keys import SFRAME_EXPORTER_CONTEXT, SFRAME_EXPORTER_LABEL
from .sframe import MEDIA_SUITE, suite_params

__all__ = ["RemovalPromise", "check_removal_promise"]

EPOCH_MASK = 0xFF
"""KIDs carry the epoch mod 2^8 (E = 8, SFrame §5.2 layout of ARCHITECTURE.md)."""


@dataclass
class RemovalPromise:
    """Counts from one check; ``kept`` is the promise."""

    audit: RemovalAudit
    """What replaying the commits against the retained state gave."""
    captured_by_kid_epoch: dict[int, int] = field(default_factory=dict)
    """Frames captured, by KID epoch (mod 256)."""
    opened_by_epoch: dict[int, int] = field(default_factory=dict)
    """Frames the removed member's keys opened, by epoch."""

    @property
    def removal_epoch(self) -> int | None:
        return self.audit.removal_epoch

    @property
    def opened_at_or_after_removal(self) -> int:
        r = self.removal_epoch
        return 0 if r is None else sum(n for e, n in self.opened_by_epoch.items() if e >= r)

    @property
    def captured_at_or_after_removal(self) -> int:
        r = self.removal_epoch
        if r is None:
            return 0
        return sum(n for e, n in self.captured_by_kid_epoch.items() if e >= r & EPOCH_MASK)

    @property
    def kept(self) -> bool:
        """The removal happened, frames of its epoch or later were captured, and none opened."""
        return (
            self.removal_epoch is not None
            and self.captured_at_or_after_removal > 0
            and self.opened_at_or_after_removal == 0
        )

    def to_dict(self) -> dict:
        return {
            "outcome": self.audit.outcome,
            "detail": self.audit.detail,
            "retained_epoch": self.audit.retained_epoch,
            "removal_epoch": self.removal_epoch,
            "epochs_held": [e.epoch for e in self.audit.epochs],
            "captured_frames_by_kid_epoch": self.captured_by_kid_epoch,
            "opened_by_epoch": self.opened_by_epoch,
            "opened_at_or_after_removal": self.opened_at_or_after_removal,
            "captured_at_or_after_removal": self.captured_at_or_after_removal,
            "kept": self.kept,
        }


def check_removal_promise(
    capture: Sequence[bytes], retained_state: bytes, commits: Sequence[bytes], *, now: float,
    suite: int = MEDIA_SUITE,
) -> RemovalPromise:
    """Replay ``commits`` against ``retained_state``, then open ``capture`` (fragment packets)."""
    audit = follow_as_removed(retained_state, commits, now=now)
    result = RemovalPromise(audit)
    for pkt in capture:
        try:
            frag, _ = wire.decode_fragment(pkt)
        except MediaError:
            continue
        if frag.offset == 0:
            low = frag.kid & EPOCH_MASK
            result.captured_by_kid_epoch[low] = result.captured_by_kid_epoch.get(low, 0) + 1
    nk = suite_params(suite).nk
    for held in audit.epochs:
        # One opener per epoch: each holds only its own key, so nothing depends on the key ring's grace.
        opener = FrameOpener()
        base_key = held.export_secret(SFRAME_EXPORTER_LABEL, SFRAME_EXPORTER_CONTEXT, nk)
        opener.install_keys(EpochKeys(held.epoch, base_key, held.leaf_count), now)
        events = [ev for pkt in capture for ev in opener.receive_packet(pkt, now)]
        events += opener.expire(now + 10)
        for ev in events:
            if isinstance(ev, FrameDecrypted):
                result.opened_by_epoch[ev.epoch] = result.opened_by_epoch.get(ev.epoch, 0) + 1
    return result
