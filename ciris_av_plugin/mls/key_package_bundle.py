"""A joiner's KeyPackage with its private keys (§10), and parsing KeyPackages received as bytes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clock import DEFAULT_CLOCK
from .codec import DecodeError, Writer, decode_all
from .crypto import CipherSuite
from .framing import MLSMessage
from .group_errors import InvalidKeyPackageError
from .messages import Capabilities, Credential, Lifetime
from .policy import credential_identity
from .tree_structs import KeyPackage

__all__ = ["KEY_PACKAGE_LIFETIME", "KEY_PACKAGE_BACKDATE", "KeyPackageBundle", "parse_key_package"]

KEY_PACKAGE_LIFETIME = 90 * 24 * 3600
"""Validity of a generated KeyPackage. OpenMLS uses about 3 months; directory sweeps reclaim them."""

KEY_PACKAGE_BACKDATE = 3600
"""KeyPackages start an hour in the past so a peer with a slow clock accepts them (ARCHITECTURE.md)."""


@dataclass
class KeyPackageBundle:
    """A KeyPackage with the private keys that go with it (§10): what a joiner keeps until its Welcome."""

    key_package: bytes
    """The MLSMessage-framed KeyPackage, as published to the directory."""
    init_priv: bytes
    encryption_priv: bytes
    signature_priv: bytes

    @classmethod
    def generate(
        cls,
        identity: bytes,
        suite: CipherSuite,
        *,
        signature_priv: bytes | None = None,
        now: float | None = None,
        lifetime: int = KEY_PACKAGE_LIFETIME,
        capabilities: Capabilities | None = None,
        clock: Callable[[], float] = DEFAULT_CLOCK,
    ) -> KeyPackageBundle:
        """A fresh KeyPackage for a BasicCredential ``identity``, back-dated by an hour.

        ``signature_priv`` reuses a member's signature key (a rejoin); by default a new one is made.
        """
        if signature_priv is None:
            signature_priv, _ = suite.generate_signature_key_pair()
        t = int(clock() if now is None else now)
        kp, init_priv, enc_priv = KeyPackage.create(
            suite,
            Credential.basic(identity),
            signature_priv,
            Lifetime(max(0, t - KEY_PACKAGE_BACKDATE), t + lifetime),
            capabilities=capabilities,
        )
        return cls(MLSMessage(kp).to_bytes(), init_priv, enc_priv, signature_priv)

    @property
    def package(self) -> KeyPackage:
        body = MLSMessage.from_bytes(self.key_package).body
        assert isinstance(body, KeyPackage)
        return body

    @property
    def suite(self) -> CipherSuite:
        return CipherSuite(self.package.cipher_suite)

    @property
    def ref(self) -> bytes:
        """The KeyPackageRef a Welcome addresses (§5.2)."""
        return self.package.ref(self.suite)

    @property
    def identity(self) -> bytes:
        return credential_identity(self.package.leaf_node)

    def to_bytes(self) -> bytes:
        """Private keys included: store like :meth:`Group.to_bytes` (mode 0600)."""
        w = Writer().opaque(self.key_package).opaque(self.init_priv)
        return w.opaque(self.encryption_priv).opaque(self.signature_priv).bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyPackageBundle:
        return decode_all(data, lambda r: cls(r.opaque(), r.opaque(), r.opaque(), r.opaque()))


def parse_key_package(data: bytes) -> KeyPackage:
    """A KeyPackage from MLSMessage bytes (or bare KeyPackage bytes), InvalidKeyPackageError if neither."""
    try:
        body = MLSMessage.from_bytes(data).body
    except DecodeError:
        try:
            return KeyPackage.from_bytes(data)
        except DecodeError as exc:
            raise InvalidKeyPackageError("not a KeyPackage") from exc
    if not isinstance(body, KeyPackage):
        raise InvalidKeyPackageError("MLSMessage does not carry a KeyPackage")
    return body
