"""The base of every RFC 9420 structure here: ``encode``/``decode`` plus ``to_bytes``/``from_bytes``, and how
registry values are read (extensible registries keep unknown values as ints, so GREASE survives, §13.5).
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import TypeVar

from .codec import DecodeError, Reader, Writer, decode_all

log = logging.getLogger(__name__)


E = TypeVar("E", bound=IntEnum)


S = TypeVar("S", bound="Struct")


def known(enum: type[E], value: int) -> E | int:
    """The enum member for ``value`` or the bare int if the registry does not (yet) know it."""
    try:
        return enum(value)
    except ValueError:
        return value


def closed(enum: type[E], value: int, what: str) -> E:
    """The enum member for ``value`` of a non-extensible selector; unknown values cannot be parsed."""
    try:
        return enum(value)
    except ValueError:
        raise DecodeError(f"unknown {what} {value}") from None


class Struct:
    """Mixin giving ``to_bytes``/``from_bytes`` on top of ``encode``/``decode``."""

    def encode(self, w: Writer) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode(cls: type[S], r: Reader) -> S:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.bytes()

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        return decode_all(data, cls.decode)


__all__ = [
    "E",
    "S",
    "known",
    "closed",
    "Struct",
]
