"""Real KeyPackages for a real RNS identity, minted and enveloped the way a client does.

Shared by the directory and delivery-service tests; ``NOW`` is a fixed time the KeyPackages' lifetimes
and envelope timestamps are built around.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import RNS

from ciris_av_plugin.mls.crypto import CipherSuite
from ciris_av_plugin.mls.framing import MLSMessage
from ciris_av_plugin.mls.messages import Capabilities, Credential, Extension, Lifetime
from ciris_av_plugin.mls.registries import LeafNodeSource
from ciris_av_plugin.mls.tree_structs import KeyPackage, LeafNode
from ciris_av_plugin.protocol.envelope import seal_envelope

NOW = 1_800_000_000
HOUR = 3600
SUITE = 1


@dataclass
class Joiner:
    """An RNS identity that can mint KeyPackages and envelopes the way a client would."""

    rns: RNS.Identity = field(default_factory=RNS.Identity)

    @property
    def hash(self) -> bytes:
        return self.rns.hash

    def key_package(
        self,
        *,
        suite_id: int = SUITE,
        identity: bytes | None = None,
        not_before: int = NOW - HOUR,  # back-dated an hour, as clients do
        not_after: int = NOW + 30 * 24 * HOUR,
        credential: Credential | None = None,
        same_init_and_encryption_key: bool = False,
        leaf_extensions: list[Extension] | None = None,
        break_leaf_signature: bool = False,
        break_kp_signature: bool = False,
        source: LeafNodeSource = LeafNodeSource.KEY_PACKAGE,
    ) -> bytes:
        """An MLSMessage-framed KeyPackage signed with a fresh MLS key (never the RNS key)."""
        suite = CipherSuite(suite_id)
        sig_priv, sig_pub = suite.generate_signature_key_pair()
        _, init_pub = suite.generate_hpke_key_pair()
        _, enc_pub = suite.generate_hpke_key_pair()
        if same_init_and_encryption_key:
            enc_pub = init_pub
        leaf = LeafNode(
            encryption_key=enc_pub,
            signature_key=sig_pub,
            credential=credential or Credential.basic(self.hash if identity is None else identity),
            capabilities=Capabilities(cipher_suites=[suite_id]),
            leaf_node_source=source,
            lifetime=Lifetime(not_before, not_after) if source == LeafNodeSource.KEY_PACKAGE else None,
            extensions=leaf_extensions or [],
        )
        if source == LeafNodeSource.KEY_PACKAGE:
            leaf.sign(suite, sig_priv)
        else:
            leaf.sign(suite, sig_priv, group_id=b"some group", leaf_index=0)
        if break_leaf_signature:
            leaf.signature = bytes([leaf.signature[0] ^ 1]) + leaf.signature[1:]
        kp = KeyPackage(suite_id, init_pub, leaf)
        kp.sign(suite, sig_priv)
        if break_kp_signature:
            kp.signature = bytes([kp.signature[0] ^ 1]) + kp.signature[1:]
        return MLSMessage(kp).to_bytes()

    def envelope(self, kp: bytes, *, last_resort: bool = False, ts: int = NOW) -> bytes:
        return seal_envelope(kp, last_resort=last_resort, identity_pub=self.rns.get_public_key(), ts=ts,
                             sign=self.rns.sign)

    def publishable(self, *, last_resort: bool = False, ts: int = NOW, **kp_args: object) -> bytes:
        return self.envelope(self.key_package(**kp_args), last_resort=last_resort, ts=ts)
