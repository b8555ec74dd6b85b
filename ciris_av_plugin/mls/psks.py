"""Pre-shared keys (§8.4) and the resumption PSKs of past epochs a member keeps (§8.6).

External PSKs are supplied by the caller per call; resumption PSKs are this group's own, one per
past epoch, kept only as long as a commit may still reference them and not at all where the
policy refuses PSKs (the relayed groups of ARCHITECTURE.md), since there they would be secrets
kept for nothing (§9.2 deletion schedule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import key_schedule as ks
from .crypto import CipherSuite
from .group_errors import MissingPSKError, UnsupportedMessageError
from .proposal_structs import PreSharedKeyID
from .registries import PSKType, ResumptionPSKUsage

__all__ = ["PSKs", "RESUMPTION_PSK_EPOCHS", "ResumptionPSKs", "welcome_psk_secret"]

PSKs = Mapping[bytes, bytes]
"""External PSKs supplied by the caller: psk_id -> psk value (§8.4)."""

RESUMPTION_PSK_EPOCHS = 8
"""Past epochs whose resumption PSK is kept for resumption PSK proposals (§8.6). OpenMLS keeps a
configurable store (default a handful); eight covers a commit racing a few epochs of churn."""


class ResumptionPSKs:
    """This group's resumption PSKs by epoch, and the resolution of the PSKs a commit names."""

    def __init__(self, suite: CipherSuite, group_id: bytes, *, keep: bool, kept: Mapping[int, bytes] | None = None):
        self.suite = suite
        self.group_id = group_id
        self.keep = keep
        """False where the policy refuses PSKs: nothing is kept."""
        self._by_epoch: dict[int, bytes] = dict(kept or {}) if keep else {}

    def remember(self, epoch: int, resumption_psk: bytes) -> None:
        """Keep the PSK of ``epoch``; forget those older than :data:`RESUMPTION_PSK_EPOCHS`."""
        if not self.keep:
            return
        self._by_epoch[epoch] = resumption_psk
        for old in sorted(self._by_epoch)[:-RESUMPTION_PSK_EPOCHS]:
            del self._by_epoch[old]

    def clear(self) -> None:
        self._by_epoch.clear()

    def items(self) -> list[tuple[int, bytes]]:
        """(epoch, psk) pairs oldest first, as saved."""
        return sorted(self._by_epoch.items())

    def value(self, psk: PreSharedKeyID, psks: PSKs | None) -> bytes:
        """The value of one PSK a proposal or Welcome names, or MissingPSKError."""
        if psk.psktype == PSKType.EXTERNAL:
            if psks is None or psk.psk_id not in psks:
                raise MissingPSKError(f"external PSK {psk.psk_id.hex()[:16]} not supplied")
            return psks[psk.psk_id]
        if psk.usage != ResumptionPSKUsage.APPLICATION:
            raise UnsupportedMessageError("reinit/branch resumption PSKs are not supported")
        if psk.psk_group_id != self.group_id or psk.psk_epoch not in self._by_epoch:
            raise MissingPSKError(f"resumption PSK of epoch {psk.psk_epoch} is not kept")
        return self._by_epoch[psk.psk_epoch]

    def available(self, psk: PreSharedKeyID, psks: PSKs | None) -> bool:
        try:
            self.value(psk, psks)
        except MissingPSKError:
            return False
        return True

    def secret(self, psk_ids: Sequence[PreSharedKeyID], psks: PSKs | None) -> bytes | None:
        """§8.4 psk_secret of a commit's PSK list (None without PSKs)."""
        if not psk_ids:
            return None
        return ks.psk_secret(self.suite, [(p, self.value(p, psks)) for p in psk_ids])


def welcome_psk_secret(suite: CipherSuite, ids: Sequence[PreSharedKeyID], psks: PSKs | None) -> bytes | None:
    """psk_secret of a Welcome's GroupSecrets: only external PSKs can be known to a joiner here."""
    if not ids:
        return None
    values = []
    for p in ids:
        if p.psktype != PSKType.EXTERNAL:
            if p.usage == ResumptionPSKUsage.APPLICATION:
                raise MissingPSKError("a joiner holds no resumption PSK of the group it joins")
            raise UnsupportedMessageError("reinit/branch resumption PSKs in a Welcome are not supported")
        if psks is None or p.psk_id not in psks:
            raise MissingPSKError(f"external PSK {p.psk_id.hex()[:16]} not supplied")
        values.append((p, psks[p.psk_id]))
    return ks.psk_secret(suite, values)
