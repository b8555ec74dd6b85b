"""What a removed member can still derive: the adversary's side of the removal promise.

A removed member running this library stops at the commit that removes it (§12.4.2:
:class:`~.group.Group` marks itself inactive and derives nothing). That alone proves nothing about
the *commit*: a removed member running other code keeps every private key it held and will try
them all. :func:`follow_as_removed` plays that member. It replays the commits after its removal
against the state it retained, and at the commit that removes it tries every HPKE private key
it holds (its old leaf key and every parent-node key) against every path-secret ciphertext of the
UpdatePath. A correct commit encrypts the new path secrets only to the resolutions of the tree
*after* the removal, so nothing opens and the new epoch stays out of reach. A commit that also
encrypted a path secret to the removed leaf (the mistake this audit exists to catch) opens, and
the audit then derives the new epoch's exporter secret exactly as the remaining members do.

Sans-I/O and read-only: it takes the retained state bytes and commit bytes and returns what it
derived. It lives in the package (not the tests) because the demo checks the removal promise
with it on every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import MLSError
from . import key_schedule as ks
from .commit_rules import public_path_handler, stage_commit
from .crypto import CipherSuite
from .errors import CryptoError
from .framing import MLSMessage, PublicMessage
from .group import Group
from .group_events import CommitProcessed
from .public_state import verify_public_message
from .treekem import UPDATE_PATH_LABEL, next_path_secret

__all__ = ["DerivedEpoch", "RemovalAudit", "follow_as_removed"]


@dataclass(frozen=True)
class DerivedEpoch:
    """An epoch whose exporter secret the audited member holds (or obtained)."""

    epoch: int
    """The epoch number."""
    leaf_count: int
    """Width of the tree at that epoch (media KIDs depend on it)."""
    suite: CipherSuite
    """The group's cipher suite."""
    exporter_secret: bytes = field(repr=False)
    """§8.5 exporter secret of the epoch."""
    after_removal: bool
    """True when the epoch is the removal epoch or later: holding it breaks the removal promise."""

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """MLS-Exporter(label, context, length) of this epoch (§8.5)."""
        return ks.exporter(self.suite, self.exporter_secret, label, context, length)


@dataclass
class RemovalAudit:
    """The outcome of replaying the commits after a removal against the retained state."""

    retained_epoch: int
    """Epoch of the state the removed member kept."""
    epochs: list[DerivedEpoch] = field(default_factory=list)
    """Every epoch the member held or derived, the retained one first."""
    removal_epoch: int | None = None
    """The epoch the removing commit started (None if no commit removed it)."""
    outcome: str = "no-removal"
    """``removed`` (reported itself removed, derived nothing), ``derived-after-removal`` (the commit
    leaked the new epoch), ``refused`` (a commit was refused before any removal), or ``no-removal``."""
    detail: str = ""
    """The refusal's message, when a commit was refused."""

    @property
    def broken(self) -> bool:
        """True when the member holds keys of an epoch at or after its removal."""
        return any(e.after_removal for e in self.epochs)


def _epoch_of(group: Group, *, after_removal: bool) -> DerivedEpoch:
    e = group._e  # noqa: SLF001 - the audit reads the retained state's own secrets
    return DerivedEpoch(group.epoch, group.leaf_count, group.suite, e.secrets.exporter_secret, after_removal)


def follow_as_removed(retained_state: bytes, commits: Sequence[bytes], *, now: float) -> RemovalAudit:
    """Replay ``commits`` (oldest first, from the retained epoch on) as a removed member would.

    Commits before the removal are processed normally (the member was still in the group). At
    the removing commit the member's own Group stops; the audit then tries its retained private
    keys against the commit's UpdatePath (see the module docstring) and, if one opens, derives
    the new epoch. Commits after that are not followed: one leaked epoch already breaks the promise.
    """
    group = Group.from_bytes(retained_state)
    audit = RemovalAudit(group.epoch, [_epoch_of(group, after_removal=False)])
    for commit in commits:
        before = Group.from_bytes(group.to_bytes())
        try:
            event = group.process(commit, now=now)
        except MLSError as exc:
            audit.outcome, audit.detail = "refused", f"{type(exc).__name__}: {exc}"
            return audit
        if not isinstance(event, CommitProcessed):
            continue
        if not event.self_removed:
            audit.epochs.append(_epoch_of(group, after_removal=False))
            continue
        audit.removal_epoch = before.epoch + 1
        leaked = _derive_despite_removal(before, commit, now)
        if leaked is None:
            audit.outcome = "removed"
        else:
            audit.outcome = "derived-after-removal"
            audit.epochs.append(leaked)
        return audit
    return audit


def _derive_despite_removal(member: Group, commit: bytes, now: float) -> DerivedEpoch | None:
    """Try every retained private key on the commit's path secrets; derive the epoch if one opens."""
    e = member._e  # noqa: SLF001 - the adversary uses every secret the state holds
    suite = member.suite
    msg = MLSMessage.from_bytes(commit).body
    if not isinstance(msg, PublicMessage):
        return None
    ac = verify_public_message(e.public, msg, e.secrets.membership_key, member.policy)
    keys = [e.private.encryption_priv, *e.private.path_keys.values()]
    found: dict[str, bytes] = {}

    def handler(tree, committer, path, provisional, added):
        new, tree_hash = public_path_handler(tree, committer, path, provisional, added)
        ctx = dataclasses.replace(provisional, tree_hash=tree_hash).to_bytes()
        pairs = new.filtered_direct_path_with_copath(committer)
        for i, upn in enumerate(path.nodes):
            for ct in upn.encrypted_path_secret:
                for key in keys:
                    try:
                        secret = suite.decrypt_with_label(key, UPDATE_PATH_LABEL, ctx, ct.kem_output, ct.ciphertext)
                    except CryptoError:
                        continue
                    for _ in range(i + 1, len(pairs)):
                        secret = next_path_secret(suite, secret)
                    found["commit_secret"] = next_path_secret(suite, secret)
                    return new, tree_hash
        return new, tree_hash

    staged = stage_commit(e.public, ac, member.policy, now, handler)
    if "commit_secret" not in found:
        return None
    secrets = ks.derive_epoch_secrets(
        suite, e.secrets.init_secret, found["commit_secret"], None, staged.group_context
    )
    return DerivedEpoch(staged.group_context.epoch, staged.tree.n_leaves, suite, secrets.exporter_secret, True)
