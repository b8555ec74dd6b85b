"""Tampered inputs are refused with their typed error and leave Group and PublicGroup unchanged."""

from __future__ import annotations

import dataclasses

import pytest
from support_mls_group import NOW, SUITE, bundle, clock, ident

from ciris_av_plugin.mls import (
    CipherSuite,
    FutureEpochError,
    Group,
    InvalidGroupInfoError,
    InvalidKeyPackageError,
    InvalidPathError,
    InvalidSignatureError,
    InvalidTreeError,
    KeyPackageBundle,
    MissingPathError,
    MLSError,
    NoMatchingKeyPackageError,
    Policy,
    PublicGroup,
    StaleEpochError,
    UnknownProposalError,
    WrongConfirmationTag,
    WrongGroupError,
    WrongMembershipTag,
)
from ciris_av_plugin.mls.framing import (
    MLSMessage,
    PublicMessage,
    _membership_tag,
    protect_public,
    sign_content,
)
from ciris_av_plugin.mls.messages import Extension, Lifetime
from ciris_av_plugin.mls.proposal_structs import ProposalOrRef
from ciris_av_plugin.mls.registries import ExtensionType, WireFormat
from ciris_av_plugin.mls.tree import RatchetTree
from ciris_av_plugin.mls.tree_structs import KeyPackage, ParentNode
from ciris_av_plugin.mls.welcome import (
    decrypt_group_info,
    decrypt_group_secrets,
    encrypt_group_info,
    encrypt_group_secrets,
    find_secrets,
)
from ciris_av_plugin.mls.welcome_structs import GroupInfo, Welcome


def small_group(n: int) -> tuple[list[Group], PublicGroup]:
    creator = Group.create(b"tamper", ident(0), SUITE, clock=clock)
    public = PublicGroup.from_group_info(creator.group_info(), clock=clock)
    bundles = [bundle(i) for i in range(1, n)]
    pending = creator.commit(adds=[b.key_package for b in bundles])
    public.process(pending.commit)
    creator.merge_pending()
    return [creator] + [Group.join(pending.welcome, [b], clock=clock) for b in bundles], public


def resign(committer: Group, raw: bytes, mutate, membership: bool = True) -> bytes:
    """Mutate a PublicMessage's content and sign/tag it again as ``committer`` (still at the old epoch)."""
    pm = MLSMessage.from_bytes(raw).body
    assert isinstance(pm, PublicMessage)
    mutate(pm)
    e = committer._e
    ac = sign_content(SUITE, WireFormat.PUBLIC_MESSAGE, pm.content, committer._sig_priv, e.public.group_context,
                      pm.auth.confirmation_tag)
    out = protect_public(SUITE, ac, e.secrets.membership_key, e.public.group_context)
    if not membership:
        out.membership_tag = pm.membership_tag
    return MLSMessage(out).to_bytes()


def rewelcome(signer: Group, welcome: bytes, joiner: KeyPackageBundle, mutate_info, sig_priv: bytes | None = None) -> bytes:
    """Open a Welcome as ``joiner``, change its GroupInfo, sign it again and re-seal it."""
    w = MLSMessage.from_bytes(welcome).body
    assert isinstance(w, Welcome)
    kp = joiner.package
    secrets = decrypt_group_secrets(SUITE, find_secrets(w, kp.ref(SUITE)), joiner.init_priv, w.encrypted_group_info)
    info = decrypt_group_info(SUITE, secrets.joiner_secret, None, w.encrypted_group_info)
    mutate_info(info)
    info.sign(SUITE, sig_priv or signer._sig_priv)
    egi = encrypt_group_info(SUITE, secrets.joiner_secret, None, info)
    return MLSMessage(Welcome(SUITE.id, [encrypt_group_secrets(SUITE, kp, egi, secrets)], egi)).to_bytes()


def drop_tree(info: GroupInfo) -> None:
    info.extensions = [e for e in info.extensions if e.extension_type != ExtensionType.RATCHET_TREE]


def assert_unchanged(obj, fn, error: type[MLSError]) -> None:
    before = obj.to_bytes()
    with pytest.raises(error):
        fn()
    assert obj.to_bytes() == before


# ------------------------------------------------------------------------------------------ Welcome


def _pending_add():
    groups, public = small_group(3)
    joiner = bundle(10)
    pending = groups[0].commit(adds=[joiner.key_package])
    return groups, public, joiner, pending


def test_flipped_byte_in_supplied_ratchet_tree() -> None:
    groups, _, joiner, pending = _pending_add()
    welcome = rewelcome(groups[0], pending.welcome, joiner, drop_tree)
    tree = pending._next.public.tree.to_bytes()
    with pytest.raises(InvalidTreeError):
        Group.join(welcome, [joiner], clock=clock)  # no tree at all
    for pos in range(0, len(tree), max(1, len(tree) // 40)):
        bad = bytearray(tree)
        bad[pos] ^= 0x01
        with pytest.raises(InvalidTreeError):
            Group.join(welcome, [joiner], bytes(bad), clock=clock)
    joined = Group.join(welcome, [joiner], tree, clock=clock)  # the intact tree works
    groups[0].merge_pending()
    assert joined.epoch_authenticator == groups[0].epoch_authenticator


def test_group_info_signed_by_a_leaf_that_is_not_its_signer() -> None:
    groups, _, joiner, pending = _pending_add()
    other = groups[1]._sig_priv
    forged = rewelcome(groups[0], pending.welcome, joiner, lambda info: None, sig_priv=other)
    with pytest.raises(InvalidSignatureError):
        Group.join(forged, [joiner], clock=clock)

    def claim_other(info: GroupInfo) -> None:
        info.signer = 1

    with pytest.raises(InvalidSignatureError):
        Group.join(rewelcome(groups[0], pending.welcome, joiner, claim_other), [joiner], clock=clock)

    def blank_signer(info: GroupInfo) -> None:
        info.signer = 200

    with pytest.raises(InvalidGroupInfoError):
        Group.join(rewelcome(groups[0], pending.welcome, joiner, blank_signer), [joiner], clock=clock)
    # and the relay's PublicGroup
    info = MLSMessage.from_bytes(groups[0].group_info()).body
    info.sign(SUITE, other)
    with pytest.raises(InvalidSignatureError):
        PublicGroup.from_group_info(MLSMessage(info).to_bytes(), clock=clock)


def _break_parent_hash(info: GroupInfo) -> None:
    ext = next(e for e in info.extensions if e.extension_type == ExtensionType.RATCHET_TREE)
    tree = RatchetTree.from_bytes(SUITE, ext.extension_data)
    x = next(i for i, n in enumerate(tree.nodes) if isinstance(n, ParentNode) and n.parent_hash)
    node = tree.nodes[x]
    tree.nodes[x] = ParentNode(node.encryption_key, bytes(len(node.parent_hash)), list(node.unmerged_leaves))
    info.extensions = [Extension(ExtensionType.RATCHET_TREE, tree.to_bytes())]
    info.group_context = dataclasses.replace(info.group_context, tree_hash=tree.tree_hash())


def test_broken_parent_hash_in_welcome_tree_and_group_info() -> None:
    groups, public, joiner, pending = _pending_add()
    groups[0].merge_pending()
    for g in groups[1:]:
        g.process(pending.commit)
    # a path commit so that the tree has parent hashes to break
    joiner2 = bundle(11)
    pending = groups[1].commit(adds=[joiner2.key_package], force_path=True)
    bad = rewelcome(groups[1], pending.welcome, joiner2, _break_parent_hash)
    with pytest.raises(InvalidTreeError):
        Group.join(bad, [joiner2], clock=clock)
    groups[1].merge_pending()
    info = MLSMessage.from_bytes(groups[1].group_info()).body
    assert isinstance(info, GroupInfo)
    _break_parent_hash(info)
    info.sign(SUITE, groups[1]._sig_priv)
    with pytest.raises(InvalidTreeError):
        PublicGroup.from_group_info(MLSMessage(info).to_bytes(), clock=clock)


def test_broken_parent_hash_in_commit_path() -> None:
    groups, public = small_group(4)
    pending = groups[0].commit(force_path=True)

    def swap_key(pm: PublicMessage) -> None:
        node = pm.content.body.path.nodes[0]
        node.encryption_key = SUITE.generate_hpke_key_pair()[1]

    bad = resign(groups[0], pending.commit, swap_key)
    assert_unchanged(groups[1], lambda: groups[1].process(bad), InvalidPathError)
    assert_unchanged(public, lambda: public.process(bad), InvalidPathError)


def test_wrong_ciphertext_count_and_missing_path() -> None:
    groups, public = small_group(4)
    pending = groups[0].commit(force_path=True)

    def drop_ct(pm: PublicMessage) -> None:
        pm.content.body.path.nodes[-1].encrypted_path_secret.pop()

    bad = resign(groups[0], pending.commit, drop_ct)
    assert_unchanged(groups[1], lambda: groups[1].process(bad), InvalidPathError)
    assert_unchanged(public, lambda: public.process(bad), InvalidPathError)
    groups[0].discard_pending()
    pending = groups[0].commit(removes=[ident(3)])

    def no_path(pm: PublicMessage) -> None:
        pm.content.body.path = None

    bad = resign(groups[0], pending.commit, no_path)
    assert_unchanged(groups[1], lambda: groups[1].process(bad), MissingPathError)
    assert_unchanged(public, lambda: public.process(bad), MissingPathError)


def test_wrong_confirmation_tag() -> None:
    groups, public = small_group(3)
    pending = groups[0].commit(force_path=True)

    def flip_tag(pm: PublicMessage) -> None:
        pm.auth.confirmation_tag = bytes([pm.auth.confirmation_tag[0] ^ 1]) + pm.auth.confirmation_tag[1:]

    bad = resign(groups[0], pending.commit, flip_tag)
    assert_unchanged(groups[1], lambda: groups[1].process(bad), WrongConfirmationTag)
    # a keyless relay cannot check it (ARCHITECTURE.md); members do
    groups[1].process(pending.commit)


def test_flipped_membership_tag_and_signature() -> None:
    groups, public = small_group(3)
    pending = groups[0].commit(force_path=True)
    pm = MLSMessage.from_bytes(pending.commit).body
    pm.membership_tag = bytes([pm.membership_tag[0] ^ 1]) + pm.membership_tag[1:]
    bad = MLSMessage(pm).to_bytes()
    assert_unchanged(groups[1], lambda: groups[1].process(bad), WrongMembershipTag)
    pm = MLSMessage.from_bytes(pending.commit).body
    pm.auth.signature = bytes([pm.auth.signature[0] ^ 1]) + pm.auth.signature[1:]
    bad = MLSMessage(pm).to_bytes()
    # the membership tag covers the signature; with a fresh tag the signature check itself refuses
    e = groups[0]._e
    pm.membership_tag = _membership_tag(SUITE, e.secrets.membership_key, pm.authenticated_content(),
                                        e.public.group_context)
    retagged = MLSMessage(pm).to_bytes()
    assert_unchanged(groups[1], lambda: groups[1].process(bad), WrongMembershipTag)
    assert_unchanged(groups[1], lambda: groups[1].process(retagged), InvalidSignatureError)
    assert_unchanged(public, lambda: public.process(bad), InvalidSignatureError)
    groups[1].process(pending.commit)


def test_commits_for_past_future_or_other_group() -> None:
    groups, public = small_group(3)
    first = groups[0].commit(force_path=True)
    groups[0].merge_pending()
    second = groups[0].commit(force_path=True)
    assert_unchanged(groups[1], lambda: groups[1].process(second.commit), FutureEpochError)
    assert_unchanged(public, lambda: public.process(second.commit), FutureEpochError)
    groups[1].process(first.commit)
    public.process(first.commit)
    assert_unchanged(groups[1], lambda: groups[1].process(first.commit), StaleEpochError)
    assert_unchanged(public, lambda: public.process(first.commit), StaleEpochError)

    def other_group(pm: PublicMessage) -> None:
        pm.content.group_id = b"another"

    bad = resign(groups[0], second.commit, other_group)
    assert_unchanged(groups[1], lambda: groups[1].process(bad), WrongGroupError)


def test_unknown_proposal_reference() -> None:
    groups, public = small_group(3)
    pending = groups[0].commit(force_path=True)

    def add_ref(pm: PublicMessage) -> None:
        pm.content.body.proposals.append(ProposalOrRef(reference=b"\x00" * 32))

    bad = resign(groups[0], pending.commit, add_ref)
    assert_unchanged(groups[1], lambda: groups[1].process(bad), UnknownProposalError)
    assert_unchanged(public, lambda: public.process(bad), UnknownProposalError)


# ------------------------------------------------------------------------------------------ KeyPackages


def test_key_package_for_another_suite() -> None:
    groups, public = small_group(2)
    foreign = bundle(20, CipherSuite(3))
    assert_unchanged(groups[0], lambda: groups[0].commit(adds=[foreign.key_package]), InvalidKeyPackageError)
    assert groups[0].pending is None
    # the same KeyPackage proposed by value is refused by members and by the relay
    kp = foreign.package
    proposal = groups[1].propose_add(bundle(21).key_package)
    pm = MLSMessage.from_bytes(proposal).body

    def swap(p: PublicMessage) -> None:
        p.content.body.body.key_package = kp

    bad = resign(groups[1], proposal, swap)
    assert pm.content.body.body.key_package != kp
    assert_unchanged(groups[0], lambda: groups[0].process(bad), InvalidKeyPackageError)
    assert_unchanged(public, lambda: public.process(bad), InvalidKeyPackageError)


def test_key_package_lifetime_signature_and_welcome_match() -> None:
    groups, _ = small_group(2)
    old = KeyPackageBundle.generate(ident(30), SUITE, now=NOW - 400 * 24 * 3600)
    assert_unchanged(groups[0], lambda: groups[0].commit(adds=[old.key_package]), InvalidKeyPackageError)
    # within the skew, a KeyPackage from a slightly fast clock is fine
    fast = KeyPackageBundle.generate(ident(31), SUITE, now=NOW + 3600 + 60)
    groups[0].commit(adds=[fast.key_package])
    groups[0].discard_pending()
    kp = bundle(32).package
    kp.signature = bytes([kp.signature[0] ^ 1]) + kp.signature[1:]
    assert_unchanged(groups[0], lambda: groups[0].commit(adds=[MLSMessage(kp).to_bytes()]), InvalidKeyPackageError)
    kp = bundle(33).package
    kp.leaf_node.lifetime = Lifetime(0, 1)
    assert_unchanged(groups[0], lambda: groups[0].commit(adds=[MLSMessage(kp).to_bytes()]), InvalidKeyPackageError)
    # a Welcome for someone else
    joiner = bundle(34)
    pending = groups[0].commit(adds=[joiner.key_package])
    with pytest.raises(NoMatchingKeyPackageError):
        Group.join(pending.welcome, [bundle(35)], clock=clock)
    assert isinstance(KeyPackage.from_bytes(joiner.package.to_bytes()), KeyPackage)


def test_relay_policy_is_a_flag() -> None:
    groups, _ = small_group(2)
    permissive = PublicGroup.from_group_info(groups[0].group_info(), policy=Policy(), clock=clock)
    relay = PublicGroup.from_group_info(groups[0].group_info(), clock=clock)
    assert relay.policy == Policy.relay() and permissive.policy != relay.policy
    restored = PublicGroup.from_bytes(permissive.to_bytes(), clock=clock)
    assert restored.policy == permissive.policy


def test_tree_with_two_leaves_of_one_identity_is_refused() -> None:
    a = Group.create(b"dup", ident(0), SUITE, clock=clock)
    tree = a.tree
    tree.add_leaf(bundle(1).package.leaf_node)
    tree.add_leaf(bundle(1).package.leaf_node)  # same identity, other keys
    info = MLSMessage.from_bytes(a.group_info()).body
    info.extensions = [Extension(ExtensionType.RATCHET_TREE, tree.to_bytes())]
    info.group_context = dataclasses.replace(info.group_context, tree_hash=tree.tree_hash())
    info.sign(SUITE, a._sig_priv)
    with pytest.raises(InvalidTreeError):
        PublicGroup.from_group_info(MLSMessage(info).to_bytes(), clock=clock)


def test_cached_add_that_expired_is_left_out_of_the_next_commit() -> None:
    groups, public = small_group(2)
    soon = KeyPackageBundle.generate(ident(40), SUITE, now=NOW, lifetime=3600)
    proposal = groups[1].propose_add(soon.key_package)
    groups[0].process(proposal)
    later = NOW + 2 * 3600 + 3600
    pending = groups[0].commit(force_path=True, now=later)
    assert pending.added == {} and pending.welcome is None
    groups[0].discard_pending()
    pending = groups[0].commit(now=NOW)
    assert set(pending.added.values()) == {ident(40)}


def test_tree_must_meet_the_group_context_capabilities() -> None:
    from ciris_av_plugin.mls.messages import RequiredCapabilities

    a = Group.create(b"caps", ident(0), SUITE, clock=clock)
    info = MLSMessage.from_bytes(a.group_info()).body
    required = RequiredCapabilities(extension_types=[0xFF00]).to_bytes()
    info.group_context.extensions = [Extension(ExtensionType.REQUIRED_CAPABILITIES, required)]
    info.sign(SUITE, a._sig_priv)
    with pytest.raises(InvalidTreeError):
        PublicGroup.from_group_info(MLSMessage(info).to_bytes(), clock=clock)
    info.group_context.extensions = [Extension(0xFF01, b"")]  # a group extension no member supports
    info.sign(SUITE, a._sig_priv)
    with pytest.raises(InvalidTreeError):
        PublicGroup.from_group_info(MLSMessage(info).to_bytes(), clock=clock)
