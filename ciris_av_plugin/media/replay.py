"""Per-KID anti-replay window over SFrame counters (RFC 9605 §9.3 points to RFC 3711 §3.3.2).

The classic sliding bitmap of SRTP and IPsec (RFC 4303 §3.4.3): per KID we keep the highest
counter accepted and a bitmap of the ``REPLAY_WINDOW`` counters below it. A counter above the
top is new; one inside the window is new unless its bit is set; one below the window is too old
to tell and is refused.

Two verbs, in this order around decryption: :meth:`ReplayWindow.check` before decrypting (cheap
refusal of duplicates, no state change) and :meth:`ReplayWindow.commit` only after the AEAD
accepted the frame, so forged frames can never move the window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ReplayError
from .kid import kid_epoch_low

log = logging.getLogger(__name__)

# Counters one KID may lag behind its newest frame and still be accepted. One KID is one
# track of one sender, counting whole frames: 1024 frames is ~34 s of 30 fps video or ~20 s of
# 50 fps audio, far more reordering than the 1 s reassembly deadline lets through. SRTP
# (RFC 3711 §3.3.2) asks for at least 64; IPsec ESN windows commonly use 1024 or more.
REPLAY_WINDOW = 1024
# KIDs tracked at once. Windows are created only after a frame authenticated, and dropped when
# the key ring wipes their epoch, so this counts live (epoch, sender, track) triples: two epochs
# x 256 tracks x 8 senders. When full we refuse new KIDs (fail closed) rather than forget a
# window, because a forgotten window would accept replays of everything it had seen.
MAX_REPLAY_KIDS = 4096


@dataclass(slots=True)
class _KidWindow:
    top: int
    bitmap: int  # bit i set: counter (top - i) was accepted


class ReplayWindow:
    """Sliding anti-replay windows for many KIDs, with a bounded number of KIDs."""

    def __init__(self, window: int = REPLAY_WINDOW, max_kids: int = MAX_REPLAY_KIDS) -> None:
        if window < 1 or max_kids < 1:
            raise ValueError("window and max_kids must be positive")
        self.window = window
        self.max_kids = max_kids
        self._mask = (1 << window) - 1
        self._kids: dict[int, _KidWindow] = {}

    def __len__(self) -> int:
        return len(self._kids)

    def __contains__(self, kid: int) -> bool:
        return kid in self._kids

    def check(self, kid: int, ctr: int) -> None:
        """Raise :class:`ReplayError` if ``(kid, ctr)`` was seen or is too old. Changes nothing."""
        w = self._kids.get(kid)
        if w is None:
            if len(self._kids) >= self.max_kids:
                raise ReplayError(f"replay table full ({self.max_kids} KIDs); refusing new KID {kid}")
            return
        if ctr > w.top:
            return
        age = w.top - ctr
        if age >= self.window:
            raise ReplayError(f"KID {kid} counter {ctr} is older than the window (top {w.top})")
        if (w.bitmap >> age) & 1:
            raise ReplayError(f"KID {kid} counter {ctr} already received")

    def commit(self, kid: int, ctr: int) -> None:
        """Record ``(kid, ctr)`` as accepted. Call only after the frame authenticated.

        Raises :class:`ReplayError` (without changing anything) if :meth:`check` would.
        """
        self.check(kid, ctr)
        w = self._kids.get(kid)
        if w is None:
            self._kids[kid] = _KidWindow(top=ctr, bitmap=1)
            return
        if ctr > w.top:
            shift = ctr - w.top
            w.bitmap = ((w.bitmap << shift) | 1) & self._mask if shift < self.window else 1
            w.top = ctr
        else:
            w.bitmap |= 1 << (w.top - ctr)

    def top(self, kid: int) -> int | None:
        """Highest counter accepted for ``kid``, or None."""
        w = self._kids.get(kid)
        return None if w is None else w.top

    def forget(self, kids: Iterable[int]) -> None:
        """Drop the windows of KIDs whose keys are gone (nothing under them can decrypt)."""
        for kid in kids:
            self._kids.pop(kid, None)

    def forget_epoch_low(self, epoch_low: int) -> int:
        """Drop every window whose KID names ``epoch_low``; returns how many went.

        Called when the key ring wipes an epoch. Safe because the key ring holds at most one
        epoch per low byte (RFC 9605 §5.2 requires removing an old epoch when a new one with
        the same low bits arrives), so no live key shares these KIDs.
        """
        gone = [kid for kid in self._kids if kid_epoch_low(kid) == epoch_low]
        for kid in gone:
            del self._kids[kid]
        if gone:
            log.debug("replay: forgot %d KIDs of epoch low %d", len(gone), epoch_low)
        return len(gone)
