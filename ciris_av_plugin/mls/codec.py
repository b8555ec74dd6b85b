"""Strict TLS presentation-language codec with MLS variable-length vectors (RFC 9420 §2.1.2).

Every decoder in ``mls/`` reads through :class:`Reader`, so the strictness lives in one place:
lengths must use the minimal varint encoding, the reserved 0b11 prefix is refused, truncated input
and trailing bytes raise :class:`DecodeError`, and no length may exceed the reader's limit.
Nothing else (no ``IndexError``, ``struct.error``) escapes a decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..errors import MLSError

T = TypeVar("T")

# Largest single vector a decoder accepts. Welcomes for a 128-member group with the ratchet tree
# run to ~100 kB; 16 MiB leaves room for big trees while refusing absurd lengths before allocation.
MAX_VECTOR_LEN = 16 * 1024 * 1024
# Vectors of vectors (trees, proposal lists) are bounded by item count too, so a vector of
# many tiny items cannot make the decoder do unbounded work per byte.
MAX_VECTOR_ITEMS = 1 << 16


class DecodeError(MLSError):
    """Malformed TLS/MLS encoding: truncated, non-minimal, reserved, trailing or over-limit."""


class Reader:
    """A cursor over bytes; every read checks bounds and raises :class:`DecodeError`."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data)

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def fixed(self, n: int) -> bytes:
        if n < 0 or self._pos + n > self._end:
            raise DecodeError(f"truncated: need {n} bytes, have {self.remaining}")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return self.fixed(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.fixed(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.fixed(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.fixed(8))[0]

    def varint(self) -> int:
        """RFC 9420 §2.1.2 variable-length integer; minimal encoding is mandatory."""
        first = self.u8()
        prefix = first >> 6
        if prefix == 0:
            return first & 0x3F
        if prefix == 1:
            value = ((first & 0x3F) << 8) | self.u8()
            if value < 64:
                raise DecodeError("non-minimal varint")
            return value
        if prefix == 2:
            rest = self.fixed(3)
            value = ((first & 0x3F) << 24) | int.from_bytes(rest, "big")
            if value < 16384:
                raise DecodeError("non-minimal varint")
            return value
        raise DecodeError("reserved varint prefix 0b11")

    def opaque(self, max_len: int = MAX_VECTOR_LEN) -> bytes:
        """``opaque data<V>``: a varint length then that many bytes."""
        n = self.varint()
        if n > max_len:
            raise DecodeError(f"vector of {n} bytes exceeds limit {max_len}")
        return self.fixed(n)

    def sub(self, max_len: int = MAX_VECTOR_LEN) -> Reader:
        """A reader over the next length-prefixed vector's contents."""
        return Reader(self.opaque(max_len))

    def vector(self, item: Callable[[Reader], T], max_items: int = MAX_VECTOR_ITEMS) -> list[T]:
        """``T items<V>``: decode items until the length-prefixed region is consumed."""
        inner = self.sub()
        out: list[T] = []
        while inner.remaining:
            if len(out) >= max_items:
                raise DecodeError(f"vector has more than {max_items} items")
            out.append(item(inner))
        return out

    def optional(self, item: Callable[[Reader], T]) -> T | None:
        """``optional<T>``: a presence byte that must be 0 or 1."""
        flag = self.u8()
        if flag == 0:
            return None
        if flag == 1:
            return item(self)
        raise DecodeError(f"optional presence byte {flag} is not 0 or 1")

    def boolean(self) -> bool:
        flag = self.u8()
        if flag > 1:
            raise DecodeError(f"bool byte {flag} is not 0 or 1")
        return bool(flag)

    def done(self) -> None:
        if self.remaining:
            raise DecodeError(f"{self.remaining} trailing bytes")


def decode_all(data: bytes | bytearray | memoryview, fn: Callable[[Reader], T]) -> T:
    """Decode one value that must span ``data`` exactly (no trailing bytes)."""
    r = Reader(data)
    value = fn(r)
    r.done()
    return value


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative length")
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", 0x4000 | n)
    if n < 1 << 30:
        return struct.pack(">I", 0x80000000 | n)
    raise ValueError(f"length {n} too large for an MLS varint")


class Writer:
    """Accumulates an encoding; the mirror of :class:`Reader`."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def u8(self, v: int) -> Writer:
        return self.raw(struct.pack(">B", v))

    def u16(self, v: int) -> Writer:
        return self.raw(struct.pack(">H", v))

    def u32(self, v: int) -> Writer:
        return self.raw(struct.pack(">I", v))

    def u64(self, v: int) -> Writer:
        return self.raw(struct.pack(">Q", v))

    def boolean(self, v: bool) -> Writer:
        return self.u8(1 if v else 0)

    def opaque(self, data: bytes) -> Writer:
        self._parts.append(encode_varint(len(data)))
        self._parts.append(bytes(data))
        return self

    def vector(self, items: Iterable[T], fn: Callable[[Writer, T], object]) -> Writer:
        inner = Writer()
        for it in items:
            fn(inner, it)
        return self.opaque(inner.bytes())

    def optional(self, value: T | None, fn: Callable[[Writer, T], object]) -> Writer:
        if value is None:
            return self.u8(0)
        self.u8(1)
        fn(self, value)
        return self

    def bytes(self) -> bytes:
        return b"".join(self._parts)


def opaque_bytes(data: bytes) -> bytes:
    """Shorthand: ``data`` encoded as ``opaque<V>``."""
    return encode_varint(len(data)) + bytes(data)
