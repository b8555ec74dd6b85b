"""The secret tree and its per-sender hash ratchets (RFC 9420 §9), and the sender-data key (§6.3.2).

Secrets are derived lazily and deleted as soon as they are consumed (§9.2): deriving a leaf replaces
each ancestor on the way by its two children, a ratchet keeps only its next secret plus a bounded
set of keys skipped by out-of-order delivery, and a key is erased once it has decrypted a message.

Looking a key up (:meth:`SecretTree.key_nonce`) never changes state; only :meth:`SecretTree.consume`
(after a successful decryption) or :meth:`SecretTree.next_for_sending` does. A forged message can
therefore not advance or wipe a ratchet.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum

from . import tree_math
from .crypto import CipherSuite
from .errors import SecretTreeError

log = logging.getLogger(__name__)

__all__ = [
    "RatchetType",
    "HashRatchet",
    "SecretTree",
    "sender_data_key_nonce",
    "MAX_FORWARD_DISTANCE",
    "OUT_OF_ORDER_TOLERANCE",
]

# How far ahead of the next expected generation a received message may be. OpenMLS's
# SenderRatchetConfiguration defaults to 1000; past that we would burn CPU deriving keys for a
# message that is more likely forged or from a broken peer than legitimately delayed.
MAX_FORWARD_DISTANCE = 1000
# Keys of skipped generations kept for late messages, per ratchet. OpenMLS keeps 5 by default;
# handshake and application messages here are rare (media uses SFrame), so 32 is ample and bounded.
OUT_OF_ORDER_TOLERANCE = 32
# Generation is a uint32 on the wire (§6.3.2 PrivateMessageContent's SenderData).
MAX_GENERATION = 0xFFFFFFFF


class RatchetType(IntEnum):
    """Which of a leaf's two ratchets (§9): handshake (proposals, commits) or application."""

    HANDSHAKE = 0
    APPLICATION = 1


def sender_data_key_nonce(suite: CipherSuite, sender_data_secret: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """§6.3.2: key/nonce from sender_data_secret and the first Nh bytes of the content ciphertext."""
    sample = ciphertext[: suite.Nh]
    return (
        suite.expand_with_label(sender_data_secret, b"key", sample, suite.Nk),
        suite.expand_with_label(sender_data_secret, b"nonce", sample, suite.Nn),
    )


@dataclass
class HashRatchet:
    """One sender ratchet (§9.1): ``secret`` is ratchet_secret_[N]_[generation]."""

    suite: CipherSuite
    secret: bytes
    generation: int = 0
    skipped: OrderedDict[int, tuple[bytes, bytes]] = field(default_factory=OrderedDict)
    """Keys of generations passed over for out-of-order messages, oldest first."""

    def _key_nonce(self, secret: bytes, generation: int) -> tuple[bytes, bytes]:
        s = self.suite
        return (
            s.derive_tree_secret(secret, b"key", generation, s.Nk),
            s.derive_tree_secret(secret, b"nonce", generation, s.Nn),
        )

    def _next_secret(self, secret: bytes, generation: int) -> bytes:
        return self.suite.derive_tree_secret(secret, b"secret", generation, self.suite.Nh)

    def key_nonce(self, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce of ``generation`` without changing the ratchet (for trial decryption)."""
        if generation < self.generation:
            got = self.skipped.get(generation)
            if got is None:
                raise SecretTreeError(f"generation {generation} already used or expired")
            return got
        if generation - self.generation > MAX_FORWARD_DISTANCE:
            raise SecretTreeError(
                f"generation {generation} is more than {MAX_FORWARD_DISTANCE} ahead of {self.generation}"
            )
        if generation > MAX_GENERATION:
            raise SecretTreeError(f"generation {generation} exceeds uint32")
        secret, g = self.secret, self.generation
        while g < generation:
            secret = self._next_secret(secret, g)
            g += 1
        return self._key_nonce(secret, generation)

    def consume(self, generation: int) -> tuple[bytes, bytes]:
        """Mark ``generation`` used: advance past it, keep skipped keys (bounded), erase its key."""
        if generation < self.generation:
            got = self.skipped.pop(generation, None)
            if got is None:
                raise SecretTreeError(f"generation {generation} already used or expired")
            return got
        self.key_nonce(generation)  # range checks, without state change on failure
        while self.generation < generation:
            self.skipped[self.generation] = self._key_nonce(self.secret, self.generation)
            self._advance()
        while len(self.skipped) > OUT_OF_ORDER_TOLERANCE:
            dropped, _ = self.skipped.popitem(last=False)
            log.debug("dropping key of skipped generation %d", dropped)
        out = self._key_nonce(self.secret, generation)
        self._advance()
        return out

    def _advance(self) -> None:
        if self.generation >= MAX_GENERATION:
            raise SecretTreeError("ratchet exhausted (generation would exceed uint32)")
        self.secret = self._next_secret(self.secret, self.generation)
        self.generation += 1


class SecretTree:
    """Per-epoch secret tree rooted at encryption_secret (§9) for a group of ``n_leaves`` leaves."""

    def __init__(self, suite: CipherSuite, encryption_secret: bytes, n_leaves: int) -> None:
        if n_leaves < 1:
            raise SecretTreeError("a secret tree needs at least one leaf")
        self.suite = suite
        self.n_leaves = tree_math.leaf_width_for(n_leaves)
        self._nodes: dict[int, bytes] = {tree_math.root(self.n_leaves): encryption_secret}
        self._ratchets: dict[tuple[int, RatchetType], HashRatchet] = {}

    def _check_leaf(self, leaf: int) -> None:
        if not 0 <= leaf < self.n_leaves:
            raise SecretTreeError(f"leaf {leaf} outside a tree of {self.n_leaves} leaves")

    def _derive_leaf(self, leaf: int) -> None:
        """Walk down from the lowest held ancestor, replacing each node by its children (§9.2)."""
        target = tree_math.leaf_to_node(leaf)
        path = [target] + tree_math.direct_path(target, self.n_leaves)
        start = next((i for i, node in enumerate(path) if node in self._nodes), None)
        if start is None:
            raise SecretTreeError(f"secrets for leaf {leaf} were already consumed")
        for node in reversed(path[1 : start + 1]):
            secret = self._nodes.pop(node)
            s = self.suite
            self._nodes[tree_math.left(node)] = s.expand_with_label(secret, b"tree", b"left", s.Nh)
            self._nodes[tree_math.right(node)] = s.expand_with_label(secret, b"tree", b"right", s.Nh)
        leaf_secret = self._nodes.pop(target)
        s = self.suite
        self._ratchets[(leaf, RatchetType.HANDSHAKE)] = HashRatchet(
            s, s.expand_with_label(leaf_secret, b"handshake", b"", s.Nh)
        )
        self._ratchets[(leaf, RatchetType.APPLICATION)] = HashRatchet(
            s, s.expand_with_label(leaf_secret, b"application", b"", s.Nh)
        )

    def ratchet(self, leaf: int, kind: RatchetType) -> HashRatchet:
        """The ratchet of ``leaf``, deriving the leaf's secrets on first use."""
        self._check_leaf(leaf)
        r = self._ratchets.get((leaf, kind))
        if r is None:
            self._derive_leaf(leaf)
            r = self._ratchets[(leaf, kind)]
        return r

    def key_nonce(self, leaf: int, kind: RatchetType, generation: int) -> tuple[bytes, bytes]:
        """Key and nonce for a received message, without consuming them."""
        return self.ratchet(leaf, kind).key_nonce(generation)

    def consume(self, leaf: int, kind: RatchetType, generation: int) -> tuple[bytes, bytes]:
        """Erase the key of ``generation`` after it decrypted a message (§9.2)."""
        return self.ratchet(leaf, kind).consume(generation)

    def next_for_sending(self, leaf: int, kind: RatchetType) -> tuple[int, bytes, bytes]:
        """(generation, key, nonce) for our next outgoing message; the key is consumed at once."""
        r = self.ratchet(leaf, kind)
        generation = r.generation
        key, nonce = r.consume(generation)
        return generation, key, nonce
