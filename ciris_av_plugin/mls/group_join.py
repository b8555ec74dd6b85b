"""Joining a group from a Welcome (§12.4.3.1): the member's first epoch, checked end to end."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from . import key_schedule as ks
from . import tree_math as tm
from .codec import DecodeError
from .crypto import CipherSuite
from .errors import MLSError
from .framing import MLSMessage
from .group_errors import InvalidWelcomeError, NoMatchingKeyPackageError, WrongConfirmationTag
from .group_info import verified_group_info_tree, verify_group_info_signature
from .group_state import EpochState, strip_secrets
from .key_package_bundle import KeyPackageBundle
from .psks import PSKs, welcome_psk_secret
from .public_state import PublicState
from .secret_tree import SecretTree
from .tree import TreeError
from .treekem import TreeKEMError, TreeKEMPrivate
from .welcome import WelcomeError, decrypt_group_info, decrypt_group_secrets
from .welcome_structs import Welcome

__all__ = ["open_welcome"]

log = logging.getLogger(__name__)


def open_welcome(
    welcome: bytes, bundles: Iterable[KeyPackageBundle], ratchet_tree: bytes | None, psks: PSKs | None
) -> tuple[EpochState, bytes]:
    """The joiner's first epoch and its signature key, from a Welcome and the bundle it addresses.

    The tree is the GroupInfo's ratchet_tree extension, else ``ratchet_tree`` (the extension
    body, e.g. served by the relay); it is checked against the signed tree hash, then for leaf
    signatures and parent hashes, before the GroupInfo signature is checked with the signer
    leaf of that verified tree. Every failure is a typed error and nothing is kept.
    """
    try:
        msg = MLSMessage.from_bytes(welcome).body
    except DecodeError as exc:
        raise InvalidWelcomeError("not an MLSMessage") from exc
    if not isinstance(msg, Welcome):
        raise InvalidWelcomeError("MLSMessage does not carry a Welcome")
    entries = {e.new_member: e for e in msg.secrets}
    bundle = entry = kp = suite = None
    for b in bundles:
        cand = b.package
        try:
            cand_suite = CipherSuite(cand.cipher_suite)
        except MLSError:
            continue
        ref = cand.ref(cand_suite)
        if ref in entries:
            bundle, entry, kp, suite = b, entries[ref], cand, cand_suite
            break
    if bundle is None or entry is None or kp is None or suite is None:
        raise NoMatchingKeyPackageError("the Welcome addresses none of these KeyPackages")
    if msg.cipher_suite != suite.id:
        raise InvalidWelcomeError("Welcome and KeyPackage cipher suites differ")
    try:
        secrets = decrypt_group_secrets(suite, entry, bundle.init_priv, msg.encrypted_group_info)
    except (WelcomeError, DecodeError) as exc:
        raise InvalidWelcomeError(str(exc)) from exc
    psk_secret = welcome_psk_secret(suite, secrets.psks, psks)
    try:
        info = decrypt_group_info(suite, secrets.joiner_secret, psk_secret, msg.encrypted_group_info)
    except (WelcomeError, DecodeError) as exc:
        raise InvalidWelcomeError(str(exc)) from exc
    gc = info.group_context
    if gc.cipher_suite != suite.id:
        raise InvalidWelcomeError("GroupInfo cipher suite differs from the KeyPackage's")
    tree = verified_group_info_tree(suite, info, ratchet_tree)
    verify_group_info_signature(suite, info, tree)
    me = next((i for i, leaf in tree.leaves() if leaf == kp.leaf_node), None)
    if me is None:
        raise InvalidWelcomeError("no leaf of the tree is our KeyPackage's leaf")
    epoch_secrets = ks.epoch_secrets_from_joiner(suite, secrets.joiner_secret, psk_secret, gc)
    tag = ks.confirmation_tag(suite, epoch_secrets.confirmation_key, gc.confirmed_transcript_hash)
    if tag != info.confirmation_tag:
        raise WrongConfirmationTag("GroupInfo confirmation tag does not match the key schedule")
    private = TreeKEMPrivate(me, bundle.encryption_priv)
    if secrets.path_secret is not None:
        x = tm.common_ancestor(2 * me, 2 * info.signer)
        try:
            private.implant_from(tree, x, secrets.path_secret.path_secret)
        except (TreeKEMError, TreeError) as exc:
            raise InvalidWelcomeError(f"path secret: {exc}") from exc
    interim = ks.interim_transcript_hash(suite, gc.confirmed_transcript_hash, info.confirmation_tag)
    public = PublicState(suite, gc, tree, interim)
    epoch = EpochState(
        public,
        private,
        strip_secrets(epoch_secrets),
        SecretTree(suite, epoch_secrets.encryption_secret, tree.n_leaves),
        info.confirmation_tag,
    )
    log.debug("joined group %s at epoch %d as leaf %d", gc.group_id.hex()[:16], gc.epoch, me)
    return epoch, bundle.signature_priv
