"""The binding between an MLS :class:`~ciris_av_plugin.mls.Group` and the SFrame media layer.

On every epoch the media layer needs ``base_key = MLS-Exporter("SFrame 1.0 Base Key", "", Nk)``
(RFC 9605 §5.2), the tree's width in leaves (S in the KID layout, ARCHITECTURE.md) and, to send,
the member's leaf index. :class:`GroupKeySource` is the :class:`~.keyring.KeySource` over a Group;
:class:`MediaKeyBinding` pushes each new epoch into a :class:`~.frames.FrameSealer` (at once:
senders switch the moment they merge or process a commit) and a :class:`~.frames.FrameOpener`
(which keeps the previous epoch for its receive grace).

A removed member's group is inactive: it yields no keys, so its opener never learns the epoch of
its removal or any later one — the removal promise of ARCHITECTURE.md.
"""

from __future__ import annotations

import logging

from ..mls import Group
from .events import FrameEvent
from .frames import FrameOpener, FrameSealer
from .keyring import EpochKeys
from .sframe import MEDIA_SUITE, suite_params

log = logging.getLogger(__name__)

SFRAME_EXPORTER_LABEL = b"SFrame 1.0 Base Key"
"""RFC 9605 §5.2 exporter label."""
SFRAME_EXPORTER_CONTEXT = b""
"""RFC 9605 §5.2: the exporter context is empty."""


def epoch_keys(group: Group, suite: int = MEDIA_SUITE, *, send: bool = True) -> EpochKeys:
    """The media keys of the group's current epoch (raises GroupInactiveError once removed)."""
    nk = suite_params(suite).nk
    return EpochKeys(
        epoch=group.epoch,
        base_key=group.export_secret(SFRAME_EXPORTER_LABEL, SFRAME_EXPORTER_CONTEXT, nk),
        leaf_count=group.leaf_count,
        own_leaf=group.leaf_index if send else None,
    )


class GroupKeySource:
    """A :class:`~.keyring.KeySource` reading the current epoch of a Group (None once removed)."""

    def __init__(self, group: Group, suite: int = MEDIA_SUITE) -> None:
        self.group = group
        self.suite = suite

    def current_keys(self) -> EpochKeys | None:
        if not self.group.active:
            return None
        return epoch_keys(self.group, self.suite)


class MediaKeyBinding:
    """Feeds a sealer and/or an opener the keys of each epoch the group reaches.

    Call :meth:`sync` after every ``merge_pending()``, ``process()`` that returned a commit event,
    or join; it is idempotent within an epoch.
    """

    def __init__(
        self,
        group: Group,
        sealer: FrameSealer | None = None,
        opener: FrameOpener | None = None,
        suite: int = MEDIA_SUITE,
    ) -> None:
        self.source = GroupKeySource(group, suite)
        self.sealer = sealer
        self.opener = opener
        self.installed_epoch: int | None = None

    @property
    def group(self) -> Group:
        return self.source.group

    @group.setter
    def group(self, group: Group) -> None:
        """Replace the group (a rejoin or a restore from bytes); the next :meth:`sync` installs it."""
        self.source.group = group

    def sync(self, now: float) -> list[FrameEvent]:
        """Install the current epoch if it is new; returns the opener's events (released held frames)."""
        keys = self.source.current_keys()
        if keys is None or keys.epoch == self.installed_epoch:
            return []
        if self.sealer is not None:
            self.sealer.set_keys(keys)
        events: list[FrameEvent] = []
        if self.opener is not None:
            events = self.opener.install_keys(keys, now)
        self.installed_epoch = keys.epoch
        log.debug("media keys for epoch %d (%d leaves, leaf %s)", keys.epoch, keys.leaf_count, keys.own_leaf)
        return events


__all__ = ["SFRAME_EXPORTER_LABEL", "epoch_keys", "GroupKeySource", "MediaKeyBinding"]
