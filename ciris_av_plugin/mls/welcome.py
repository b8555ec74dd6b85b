"""Welcome handling (RFC 9420 §12.4.3): build one for joiners, open one as a joiner.

A joiner's steps (§12.4.3.1), each a function here so the group state machine can compose them and
the relay can reuse the public ones: find its EncryptedGroupSecrets by KeyPackageRef, HPKE-decrypt
the GroupSecrets with its init key, derive welcome key/nonce from joiner_secret and psk_secret,
decrypt the GroupInfo, verify the signer's signature and the confirmation tag, and check the
ratchet tree against the GroupInfo's tree hash. Everything is sans-I/O; PSK values come from a
caller-supplied lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import key_schedule as ks
from . import tree_math as tm
from .codec import DecodeError
from .crypto import CipherSuite
from .errors import CryptoError, ProtocolError
from .messages import find_extension
from .proposal_structs import PreSharedKeyID
from .registries import ExtensionType, PSKType, ResumptionPSKUsage
from .tree import RatchetTree
from .tree_structs import HPKECiphertext, KeyPackage
from .treekem import TreeKEMError, TreeKEMPrivate
from .welcome_structs import EncryptedGroupSecrets, GroupInfo, GroupSecrets, Welcome

log = logging.getLogger(__name__)

WELCOME_LABEL = b"Welcome"
"""EncryptWithLabel label for GroupSecrets; the context is encrypted_group_info (§12.4.3.1)."""


class WelcomeError(ProtocolError):
    """A Welcome that is not for us, does not decrypt, or whose GroupInfo does not check out."""


PskLookup = Callable[[PreSharedKeyID], bytes]
"""Returns the PSK value for an id, raising :class:`MLSError` if unknown (§8.4)."""


# ------------------------------------------------------------------ building (committer side)


def encrypt_group_info(suite: CipherSuite, joiner_secret: bytes, psk_secret: bytes | None, group_info: GroupInfo) -> bytes:
    """AEAD-encrypt the signed GroupInfo under welcome_key/welcome_nonce (§12.4.3.1), empty AAD."""
    key, nonce = ks.welcome_key_nonce(suite, ks.welcome_secret(suite, joiner_secret, psk_secret))
    return suite.aead_encrypt(key, nonce, b"", group_info.to_bytes())


def encrypt_group_secrets(
    suite: CipherSuite, key_package: KeyPackage, encrypted_group_info: bytes, secrets: GroupSecrets
) -> EncryptedGroupSecrets:
    """One Welcome entry: GroupSecrets sealed to the KeyPackage's init_key, bound to the GroupInfo."""
    kem_output, ct = suite.encrypt_with_label(
        key_package.init_key, WELCOME_LABEL, encrypted_group_info, secrets.to_bytes()
    )
    return EncryptedGroupSecrets(key_package.ref(suite), HPKECiphertext(kem_output, ct))


# ------------------------------------------------------------------ opening (joiner side)


def find_secrets(welcome: Welcome, key_package_ref: bytes) -> EncryptedGroupSecrets:
    """The entry addressed to our KeyPackageRef, or :class:`WelcomeError` if the Welcome is not for us."""
    for entry in welcome.secrets:
        if entry.new_member == key_package_ref:
            return entry
    raise WelcomeError("Welcome has no entry for this KeyPackage")


def decrypt_group_secrets(
    suite: CipherSuite, entry: EncryptedGroupSecrets, init_priv: bytes, encrypted_group_info: bytes
) -> GroupSecrets:
    """DecryptWithLabel(init_key_priv, "Welcome", encrypted_group_info, ...) then decode (§12.4.3.1)."""
    try:
        plain = suite.decrypt_with_label(
            init_priv,
            WELCOME_LABEL,
            encrypted_group_info,
            entry.encrypted_group_secrets.kem_output,
            entry.encrypted_group_secrets.ciphertext,
        )
    except CryptoError as exc:
        raise WelcomeError("GroupSecrets do not decrypt with this init key") from exc
    return GroupSecrets.from_bytes(plain)


def psk_secret_for(suite: CipherSuite, psks: Sequence[PreSharedKeyID], lookup: PskLookup | None) -> bytes | None:
    """psk_secret from the GroupSecrets' PSK ids (§8.4); ``None`` (all-zero) when there are none."""
    if not psks:
        return None
    special = [
        p for p in psks
        if p.psktype == PSKType.RESUMPTION and p.usage in (ResumptionPSKUsage.REINIT, ResumptionPSKUsage.BRANCH)
    ]
    if special and len(psks) > 1:
        raise WelcomeError("a reinit or branch resumption PSK must be the only PSK (§12.4.3.1)")
    if lookup is None:
        raise WelcomeError("Welcome requires PSKs and no PSK lookup was given")
    return ks.psk_secret(suite, [(psk_id, lookup(psk_id)) for psk_id in psks])


def decrypt_group_info(
    suite: CipherSuite, joiner_secret: bytes, psk_secret: bytes | None, encrypted_group_info: bytes
) -> GroupInfo:
    """Decrypt and decode the GroupInfo with the welcome key and nonce (§12.4.3.1)."""
    key, nonce = ks.welcome_key_nonce(suite, ks.welcome_secret(suite, joiner_secret, psk_secret))
    try:
        plain = suite.aead_decrypt(key, nonce, b"", encrypted_group_info)
    except CryptoError as exc:
        raise WelcomeError("GroupInfo does not decrypt with the welcome key") from exc
    return GroupInfo.from_bytes(plain)


def verify_confirmation_tag(
    suite: CipherSuite, group_info: GroupInfo, joiner_secret: bytes, psk_secret: bytes | None
) -> ks.EpochSecrets:
    """Recompute the epoch's confirmation tag from joiner_secret (§12.4.3.1 step 7); return the secrets."""
    secrets = ks.epoch_secrets_from_joiner(suite, joiner_secret, psk_secret, group_info.group_context)
    tag = ks.confirmation_tag(suite, secrets.confirmation_key, group_info.group_context.confirmed_transcript_hash)
    if tag != group_info.confirmation_tag:
        raise WelcomeError("GroupInfo confirmation tag does not match the key schedule")
    return secrets


def ratchet_tree_of(suite: CipherSuite, group_info: GroupInfo) -> RatchetTree | None:
    """The tree from the GroupInfo's ratchet_tree extension, or ``None`` if it has none (§12.4.3.3)."""
    ext = find_extension(group_info.extensions, ExtensionType.RATCHET_TREE)
    if ext is None:
        return None
    return RatchetTree.from_bytes(suite, ext.extension_data)


@dataclass
class JoinedWelcome:
    """What a joiner learns from a Welcome; the group state machine takes it from here."""

    group_info: GroupInfo
    group_secrets: GroupSecrets
    epoch_secrets: ks.EpochSecrets
    psk_secret: bytes | None
    tree: RatchetTree | None
    """The verified tree: from the ratchet_tree extension, or the one the caller supplied."""
    my_leaf: int | None = None
    """The joiner's leaf: the one identical to its KeyPackage's LeafNode (needs a tree)."""
    private: TreeKEMPrivate | None = None
    """The joiner's TreeKEM keys (leaf key plus path secrets from the committer), if asked for."""


def find_my_leaf(tree: RatchetTree, key_package: KeyPackage) -> int:
    """The leaf whose LeafNode is byte-identical to the KeyPackage's (§12.4.3.1)."""
    want = key_package.leaf_node.to_bytes()
    for i, leaf in tree.leaves():
        if leaf.to_bytes() == want:
            return i
    raise WelcomeError("the tree has no leaf matching our KeyPackage")


def joiner_private(
    tree: RatchetTree, my_leaf: int, encryption_priv: bytes, signer: int, secrets: GroupSecrets
) -> TreeKEMPrivate:
    """Leaf key plus, if a path secret came, keys from the joiner/signer common ancestor up (§12.4.3.1)."""
    private = TreeKEMPrivate(my_leaf, encryption_priv)
    if secrets.path_secret is not None:
        if signer == my_leaf or signer >= tree.n_leaves:
            raise WelcomeError("path secret present but the signer's leaf gives no common ancestor")
        ancestor = tm.common_ancestor(2 * my_leaf, 2 * signer)
        try:
            private.implant_from(tree, ancestor, secrets.path_secret.path_secret)
        except TreeKEMError as exc:
            raise WelcomeError(f"path secret does not match the tree: {exc}") from exc
    try:
        private.check_against(tree)
    except TreeKEMError as exc:
        raise WelcomeError(f"our keys do not match the tree: {exc}") from exc
    return private


def open_welcome(
    suite: CipherSuite,
    welcome: Welcome,
    key_package: KeyPackage,
    init_priv: bytes,
    *,
    signer_pub: bytes | None = None,
    tree: RatchetTree | None = None,
    psk_lookup: PskLookup | None = None,
    verify_tree: bool = True,
    encryption_priv: bytes | None = None,
) -> JoinedWelcome:
    """All joiner checks of §12.4.3.1 that need no group state, in order.

    The GroupInfo signer's key is taken from ``signer_pub`` if given, else from the signer's leaf
    in the tree (the extension's, or ``tree`` supplied out of band, e.g. by the relay). A tree is
    checked against the GroupInfo's tree hash and, with ``verify_tree``, for leaf signatures and
    parent hashes (§7.9.2). With a tree, the joiner's own leaf is located; with
    ``encryption_priv`` (its KeyPackage leaf's HPKE key) the joiner's TreeKEM keys are derived
    from the GroupSecrets' path secret and checked against the tree.
    """
    if welcome.cipher_suite != suite.id or key_package.cipher_suite != suite.id:
        raise WelcomeError("Welcome, KeyPackage and cipher suite disagree")
    entry = find_secrets(welcome, key_package.ref(suite))
    secrets = decrypt_group_secrets(suite, entry, init_priv, welcome.encrypted_group_info)
    psk = psk_secret_for(suite, secrets.psks, psk_lookup)
    group_info = decrypt_group_info(suite, secrets.joiner_secret, psk, welcome.encrypted_group_info)
    gc = group_info.group_context
    if gc.cipher_suite != suite.id:
        raise WelcomeError("GroupInfo cipher suite differs from the Welcome's")

    try:
        ext_tree = ratchet_tree_of(suite, group_info)
    except DecodeError as exc:
        raise WelcomeError("GroupInfo ratchet_tree extension is malformed") from exc
    if ext_tree is not None:
        tree = ext_tree
    if tree is not None:
        if tree.tree_hash() != gc.tree_hash:
            raise WelcomeError("ratchet tree does not match the GroupInfo tree hash")
        if verify_tree:
            tree.verify(gc.group_id)
    if signer_pub is None:
        if tree is None:
            raise WelcomeError("no ratchet tree and no signer key: cannot verify the GroupInfo")
        leaf = tree.leaf(group_info.signer) if group_info.signer < tree.n_leaves else None
        if leaf is None:
            raise WelcomeError(f"GroupInfo signer {group_info.signer} is not a member")
        signer_pub = leaf.signature_key
    if not group_info.verify(suite, signer_pub):
        raise WelcomeError("GroupInfo signature does not verify")
    epoch_secrets = verify_confirmation_tag(suite, group_info, secrets.joiner_secret, psk)
    my_leaf = find_my_leaf(tree, key_package) if tree is not None else None
    private = None
    if encryption_priv is not None:
        if tree is None or my_leaf is None:
            raise WelcomeError("TreeKEM keys need the ratchet tree")
        private = joiner_private(tree, my_leaf, encryption_priv, group_info.signer, secrets)
    return JoinedWelcome(group_info, secrets, epoch_secrets, psk, tree, my_leaf, private)


__all__ = [
    "WelcomeError",
    "JoinedWelcome",
    "open_welcome",
    "find_secrets",
    "decrypt_group_secrets",
    "decrypt_group_info",
    "verify_confirmation_tag",
    "encrypt_group_info",
    "encrypt_group_secrets",
    "ratchet_tree_of",
    "psk_secret_for",
    "find_my_leaf",
    "joiner_private",
]
