"""The rules beyond RFC 9420 a deployment chooses (:class:`Policy`) and the identity and KeyPackage
checks members and the relay apply alike (§5.3, §7.2, §10.1, §12.2's one leaf per identity).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .codec import DecodeError
from .crypto import CipherSuite
from .group_errors import InvalidKeyPackageError, InvalidProposalError, InvalidTreeError
from .messages import RequiredCapabilities, find_extension
from .registries import ExtensionType
from .tree import (
    DEFAULT_EXTENSION_TYPES,
    RatchetTree,
    TreeError,
    check_required_capabilities,
    validate_key_package,
)
from .tree_structs import KeyPackage, LeafNode

log = logging.getLogger(__name__)


KEY_PACKAGE_CLOCK_SKEW = 5 * 60
"""Seconds of clock difference tolerated on KeyPackage lifetimes. KeyPackages here are back-dated
an hour (ARCHITECTURE.md), so this only needs to cover a fast verifier clock on the not_after side;
five minutes is Kerberos' default skew and X.509 practice."""


@dataclass(frozen=True)
class Policy:
    """Rules beyond RFC 9420 that the application chooses (§12.2: "an application may extend")."""

    allow_private_handshakes: bool = True
    """False on the relay: it can only follow PublicMessage handshakes."""
    allow_psk: bool = True
    """False on the relay: PSK proposals change the key schedule in a way it cannot see."""
    allow_reinit: bool = True
    """False on the relay: ReInit and ExternalInit are refused by policy (typed) before any other check."""
    allow_external_senders: bool = True
    """Proposals from the external_senders extension's senders (§12.1.8)."""
    immutable_identity: bool = True
    """A member's credential identity never changes across Updates and commits (ARCHITECTURE.md)."""

    @classmethod
    def relay(cls) -> Policy:
        """The relayed-group policy of ARCHITECTURE.md: PublicMessage handshakes, no PSK/ReInit."""
        return cls(allow_private_handshakes=False, allow_psk=False, allow_reinit=False)


def credential_identity(leaf: LeafNode) -> bytes:
    """The application identity of a leaf: the BasicCredential identity (the RNS identity hash).

    X.509 credentials are identified by their leaf certificate.
    """
    cred = leaf.credential
    if cred.identity or not cred.certificates:
        return cred.identity
    return cred.certificates[0]


def check_unique_identities(tree: RatchetTree) -> None:
    """One leaf per credential identity (§12.2 same-client rule, ARCHITECTURE.md) in a received tree."""
    seen: set[bytes] = set()
    for i, leaf in tree.leaves():
        ident = credential_identity(leaf)
        if ident in seen:
            raise InvalidTreeError(f"leaf {i} repeats another member's identity")
        seen.add(ident)


def check_tree_against_context(tree: RatchetTree, extensions: Sequence) -> None:
    """A received tree fits its GroupContext: every member supports the group's extensions and
    required capabilities (§7.3, §11.1), and holds one leaf per identity."""
    check_unique_identities(tree)
    required = required_capabilities(extensions)
    for i, leaf in tree.leaves():
        try:
            check_extensions_supported(extensions, leaf, i)
            if required is not None:
                check_required_capabilities(leaf, required)
        except (InvalidProposalError, TreeError) as exc:
            raise InvalidTreeError(str(exc)) from exc


def lifetime_ok(leaf: LeafNode, now: float | None, skew: int = KEY_PACKAGE_CLOCK_SKEW) -> bool:
    """Lifetime check with skew on both sides (§7.3); ``None`` means the caller opted out."""
    if now is None or leaf.lifetime is None:
        return True
    return leaf.lifetime.not_before - skew <= now <= leaf.lifetime.not_after + skew


def required_capabilities(extensions: Sequence) -> RequiredCapabilities | None:
    ext = find_extension(list(extensions), ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return RequiredCapabilities.from_bytes(ext.extension_data)
    except DecodeError as exc:
        raise InvalidProposalError("malformed required_capabilities extension") from exc


def check_key_package(
    suite: CipherSuite, kp: KeyPackage, extensions: Sequence, now: float | None
) -> None:
    """§10.1 with the group's required capabilities and a skewed lifetime; InvalidKeyPackageError."""
    if kp.cipher_suite != suite.id:
        raise InvalidKeyPackageError(f"KeyPackage for suite {kp.cipher_suite}, group uses {suite.id}")
    if suite.id not in {int(c) for c in kp.leaf_node.capabilities.cipher_suites}:
        raise InvalidKeyPackageError("KeyPackage leaf does not list the group's cipher suite")
    try:
        validate_key_package(suite, kp, required=required_capabilities(extensions))
    except (TreeError, InvalidProposalError) as exc:
        raise InvalidKeyPackageError(str(exc)) from exc
    if not lifetime_ok(kp.leaf_node, now):
        raise InvalidKeyPackageError("KeyPackage lifetime does not cover the current time")




def check_extensions_supported(extensions: Sequence, leaf: LeafNode, where: int) -> None:
    listed = {int(e) for e in leaf.capabilities.extensions}
    for ext in extensions:
        t = int(ext.extension_type)
        if t not in DEFAULT_EXTENSION_TYPES and t not in listed:
            raise InvalidProposalError(f"member {where} does not support group extension {t} (§12.1.7)")


__all__ = [
    "KEY_PACKAGE_CLOCK_SKEW",
    "Policy",
    "credential_identity",
    "check_unique_identities",
    "check_tree_against_context",
    "lifetime_ok",
    "required_capabilities",
    "check_key_package",
    "check_extensions_supported",
]
