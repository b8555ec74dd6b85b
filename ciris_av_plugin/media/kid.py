"""The SFrame KID layout for MLS groups (RFC 9605 §5.2), as fixed in ARCHITECTURE.md.

``KID = (context << (S + E)) + (sender_leaf << E) + (epoch mod 2^E)``

* ``E = EPOCH_BITS = 8``: the low byte of the MLS epoch. It bounds how many epochs a receiver
  can tell apart (256), far more than the one or two it holds during a grace window.
* ``S = log2(leaf_count)``: MLS trees are a power of two wide and leaf indices survive blank
  leaves, so every leaf index fits in exactly S bits. S changes when the tree grows or shrinks,
  so a KID must always be read with the leaf count *of its own epoch*.
* ``context`` is the track id, so audio and video of one sender never share a key or a
  counter (SFrame §9.1, "Header Value Uniqueness").

The epoch bits sit at the bottom whatever S is, so ``kid & EPOCH_MASK`` is readable without
knowing the tree (the key ring uses that to pick the epoch first).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import KidError

EPOCH_BITS = 8
EPOCH_MASK = (1 << EPOCH_BITS) - 1
# The KID is a 64-bit integer on the wire (SFrame §4.3: at most 8 bytes) and in the key label
# (SFrame §4.4.2: 8-byte big-endian).
KID_BITS = 64
# Largest tree we accept. 2^32 leaves is the MLS ceiling (leaf indices are uint32, RFC 9420 §7.1)
# and still leaves 64 - 32 - 8 = 24 bits of context, enough for any track id.
MAX_LEAF_BITS = 32


@dataclass(frozen=True, slots=True)
class KidParts:
    """A KID read back with one epoch's leaf count."""

    context: int
    """Track id the sender chose (the KID's top bits)."""
    sender_leaf: int
    """MLS leaf index of the sender."""
    epoch_low: int
    """The epoch modulo 2^EPOCH_BITS."""


def sender_bits(leaf_count: int) -> int:
    """S for a tree of ``leaf_count`` leaves: log2, with S = 0 for a one-leaf tree."""
    if isinstance(leaf_count, bool) or not isinstance(leaf_count, int):
        raise KidError(f"leaf count must be an int, not {type(leaf_count).__name__}")
    if leaf_count < 1 or leaf_count & (leaf_count - 1):
        raise KidError(f"leaf count {leaf_count} is not a power of two >= 1")
    s = leaf_count.bit_length() - 1
    if s > MAX_LEAF_BITS:
        raise KidError(f"leaf count 2^{s} exceeds 2^{MAX_LEAF_BITS}")
    return s


def encode_kid(context: int, sender_leaf: int, epoch: int, leaf_count: int) -> int:
    """Build the KID a sender at ``sender_leaf`` uses for track ``context`` in ``epoch``."""
    s = sender_bits(leaf_count)
    if not 0 <= sender_leaf < leaf_count:
        raise KidError(f"sender leaf {sender_leaf} outside a tree of {leaf_count} leaves")
    if epoch < 0:
        raise KidError(f"epoch {epoch} is negative")
    max_context = 1 << (KID_BITS - s - EPOCH_BITS)
    if not 0 <= context < max_context:
        raise KidError(f"context {context} does not fit in {KID_BITS - s - EPOCH_BITS} bits")
    return (context << (s + EPOCH_BITS)) | (sender_leaf << EPOCH_BITS) | (epoch & EPOCH_MASK)


def decode_kid(kid: int, leaf_count: int) -> KidParts:
    """Split a KID with the leaf count of the epoch it names (its low byte)."""
    s = sender_bits(leaf_count)
    if not 0 <= kid < (1 << KID_BITS):
        raise KidError(f"KID {kid} outside 0..2^{KID_BITS}-1")
    return KidParts(
        context=kid >> (s + EPOCH_BITS),
        sender_leaf=(kid >> EPOCH_BITS) & ((1 << s) - 1),
        epoch_low=kid & EPOCH_MASK,
    )


def kid_epoch_low(kid: int) -> int:
    """The epoch's low bits of a KID; readable without knowing the tree size."""
    return kid & EPOCH_MASK
