"""The passive-client scenario shared by the three passive-client vector files.

A case is played by a :class:`~ciris_av_plugin.mls.group.Group` joined from the case's Welcome with
a :class:`KeyPackageBundle` made of the case's private keys. KeyPackage lifetimes are checked
against a time inside every KeyPackage the case carries (the latest ``not_before``), never skipped.
An ``observer`` (the PublicGroup follow test) is called after the join and after every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

from ..crypto import CipherSuite
from ..framing import MLSMessage, PublicMessage
from ..group import Group
from ..key_package_bundle import KeyPackageBundle
from ..proposal_structs import Add, Commit, Proposal
from ..tree_structs import KeyPackage
from . import Counts
from ._cases import run_suite_cases

Observer = Callable[[int, Group, "list[bytes]"], None]
"""(epoch index or -1 after the join, the group, the handshake messages of that epoch)."""


def _key_packages(case: dict) -> list[KeyPackage]:
    """The joiner's KeyPackage and every KeyPackage added by a PublicMessage of the case."""
    out = []
    kp = MLSMessage.from_bytes(bytes.fromhex(case["key_package"])).body
    assert isinstance(kp, KeyPackage)
    out.append(kp)
    for epoch in case["epochs"]:
        for raw in [*epoch["proposals"], epoch["commit"]]:
            body = MLSMessage.from_bytes(bytes.fromhex(raw)).body
            if not isinstance(body, PublicMessage):
                continue
            content = body.content.body
            props = []
            if isinstance(content, Proposal):
                props = [content]
            elif isinstance(content, Commit):
                props = [p.proposal for p in content.proposals if p.proposal is not None]
            out.extend(p.body.key_package for p in props if isinstance(p.body, Add))
    return out


def case_time(case: dict) -> int:
    """A time inside every KeyPackage lifetime of the case (AssertionError if there is none)."""
    lifetimes = [kp.leaf_node.lifetime for kp in _key_packages(case) if kp.leaf_node.lifetime is not None]
    start = max((lt.not_before for lt in lifetimes), default=0)
    end = min((lt.not_after for lt in lifetimes), default=start)
    if start > end:
        raise AssertionError("the case's KeyPackage lifetimes have no common time")
    return start


def play_case(case: dict, observer: Observer | None = None) -> None:
    """Join and follow one case; AssertionError (or an MLSError) on the first disagreement."""
    suite = CipherSuite(int(case["cipher_suite"]))
    now = case_time(case)
    bundle = KeyPackageBundle(
        bytes.fromhex(case["key_package"]),
        bytes.fromhex(case["init_priv"]),
        bytes.fromhex(case["encryption_priv"]),
        bytes.fromhex(case["signature_priv"]),
    )
    kp = bundle.package
    if suite.hpke_public_key(bundle.init_priv) != kp.init_key:
        raise AssertionError("init_priv does not match the KeyPackage init_key")
    if suite.hpke_public_key(bundle.encryption_priv) != kp.leaf_node.encryption_key:
        raise AssertionError("encryption_priv does not match the leaf encryption_key")
    if suite.signature_public_key(bundle.signature_priv) != kp.leaf_node.signature_key:
        raise AssertionError("signature_priv does not match the leaf signature_key")
    psks = {bytes.fromhex(p["psk_id"]): bytes.fromhex(p["psk"]) for p in case["external_psks"]}
    tree = bytes.fromhex(case["ratchet_tree"]) if case["ratchet_tree"] else None
    group = Group.join(bytes.fromhex(case["welcome"]), [bundle], tree, psks, now=now, clock=lambda: now)
    if group.epoch_authenticator.hex() != case["initial_epoch_authenticator"]:
        raise AssertionError("initial epoch authenticator differs")
    if observer is not None:
        observer(-1, group, [])
    for n, epoch in enumerate(case["epochs"]):
        messages = [bytes.fromhex(p) for p in epoch["proposals"]] + [bytes.fromhex(epoch["commit"])]
        for raw in messages:
            group.process(raw, psks, now=now)
        if group.epoch_authenticator.hex() != epoch["epoch_authenticator"]:
            raise AssertionError(f"epoch {n}: epoch authenticator differs")
        if observer is not None:
            observer(n, group, messages)


def run_passive(name: str, cases: list[dict], observer_factory: Callable[[], Observer] | None = None) -> Counts:
    def check(_suite: CipherSuite, case: dict) -> None:
        play_case(case, observer_factory() if observer_factory else None)

    return run_suite_cases(cases, check, name + "[{i}] suite {suite}")
