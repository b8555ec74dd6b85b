"""message-protection.json: PublicMessage and PrivateMessage protect/unprotect (§6.2, §6.3).

Per test-vectors.md: the sender is leaf 1 of a two-member group; each of proposal, commit and
application is checked against the vector's messages, then protected by us and unprotected again.
An application message must refuse to be sent as a PublicMessage.
"""

from __future__ import annotations

from ..crypto import CipherSuite
from ..errors import ProtocolError
from ..framing import (
    FramedContent,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    unprotect_public,
)
from ..messages import GroupContext
from ..proposal_structs import Commit, Proposal
from ..registries import WireFormat
from ..secret_tree import SecretTree
from . import Counts
from ._cases import h, run_suite_cases

SENDER_LEAF = 1
N_MEMBERS = 2


def _body_bytes(body) -> bytes:
    return bytes(body) if isinstance(body, bytes | bytearray) else body.to_bytes()


def _check(cs: CipherSuite, c: dict) -> str | None:
    gc = GroupContext(cs.id, h(c["group_id"]), c["epoch"], h(c["tree_hash"]), h(c["confirmed_transcript_hash"]), [])
    sig_priv, sig_pub = h(c["signature_priv"]), h(c["signature_pub"])
    membership_key, sds = h(c["membership_key"]), h(c["sender_data_secret"])

    def keys(leaf: int) -> bytes | None:
        return sig_pub if leaf == SENDER_LEAF else None

    def tree() -> SecretTree:
        return SecretTree(cs, h(c["encryption_secret"]), N_MEMBERS)

    for name, decode in (("proposal", Proposal.from_bytes), ("commit", Commit.from_bytes), ("application", bytes)):
        raw = h(c[name])
        body = decode(raw)
        if _body_bytes(body) != raw:
            return f"{name}: raw value does not round-trip"

        # the vector's PublicMessage (none for application)
        if name != "application":
            wire = h(c[f"{name}_pub"])
            mls = MLSMessage.from_bytes(wire)
            if mls.to_bytes() != wire or not isinstance(mls.body, PublicMessage):
                return f"{name}_pub: not a round-tripping PublicMessage"
            ac = unprotect_public(cs, mls.body, membership_key, gc, sig_pub)
            if _body_bytes(ac.content.body) != raw:
                return f"{name}_pub: content differs"
            tag = ac.auth.confirmation_tag
        else:
            tag = None

        # our PublicMessage
        content = FramedContent(gc.group_id, gc.epoch, Sender.member(SENDER_LEAF), b"", body)
        if name == "application":
            try:
                sign_content(cs, WireFormat.PUBLIC_MESSAGE, content, sig_priv, gc)
                return "application: protecting as PublicMessage did not fail"
            except ProtocolError:
                pass
        else:
            ac = sign_content(cs, WireFormat.PUBLIC_MESSAGE, content, sig_priv, gc, tag)
            pub = MLSMessage(protect_public(cs, ac, membership_key, gc)).to_bytes()
            back = MLSMessage.from_bytes(pub).body
            if _body_bytes(unprotect_public(cs, back, membership_key, gc, sig_pub).content.body) != raw:
                return f"{name}: own PublicMessage does not unprotect"

        # the vector's PrivateMessage
        wire = h(c[f"{name}_priv"])
        mls = MLSMessage.from_bytes(wire)
        if mls.to_bytes() != wire or not isinstance(mls.body, PrivateMessage):
            return f"{name}_priv: not a round-tripping PrivateMessage"
        ac = unprotect_private(cs, mls.body, tree(), sds, gc, keys)
        if _body_bytes(ac.content.body) != raw:
            return f"{name}_priv: content differs"

        # our PrivateMessage
        ac = sign_content(cs, WireFormat.PRIVATE_MESSAGE, content, sig_priv, gc, tag)
        priv = MLSMessage(protect_private(cs, ac, tree(), sds, padding=7)).to_bytes()
        back = MLSMessage.from_bytes(priv).body
        if _body_bytes(unprotect_private(cs, back, tree(), sds, gc, keys).content.body) != raw:
            return f"{name}: own PrivateMessage does not unprotect"
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check)
