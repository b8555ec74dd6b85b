"""The strict TLS codec: minimal varints, reserved prefix, truncation, trailing bytes, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciris_av_plugin.errors import MLSError
from ciris_av_plugin.mls.codec import (
    DecodeError,
    Reader,
    Writer,
    decode_all,
    encode_varint,
)


def test_decode_error_is_an_mls_error() -> None:
    assert issubclass(DecodeError, MLSError)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("4000"),  # 0 in two bytes
        bytes.fromhex("403f"),  # 63 in two bytes
        bytes.fromhex("80000000"),  # 0 in four bytes
        bytes.fromhex("80003fff"),  # 16383 in four bytes
    ],
)
def test_non_minimal_varint_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Reader(data).varint()


@pytest.mark.parametrize("data", [bytes.fromhex("c0"), bytes.fromhex("c000000000000000"), bytes.fromhex("ff")])
def test_reserved_prefix_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Reader(data).varint()


@pytest.mark.parametrize("data", [b"", bytes.fromhex("40"), bytes.fromhex("8000"), bytes.fromhex("800040")])
def test_truncated_varint_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Reader(data).varint()


def test_truncated_opaque_and_fixed() -> None:
    with pytest.raises(DecodeError):
        Reader(bytes.fromhex("05aabb")).opaque()
    for fn in (Reader.u8, Reader.u16, Reader.u32, Reader.u64):
        with pytest.raises(DecodeError):
            fn(Reader(b""))
    with pytest.raises(DecodeError):
        Reader(b"\x00").u16()


def test_trailing_bytes_rejected() -> None:
    with pytest.raises(DecodeError):
        decode_all(b"\x01\xaa\xbb", Reader.opaque)
    assert decode_all(b"\x01\xaa", Reader.opaque) == b"\xaa"


def test_over_limit_length_rejected_before_reading() -> None:
    # a 1 GiB length prefix with no body: refused on the limit, not on truncation after allocation
    with pytest.raises(DecodeError, match="exceeds limit"):
        Reader(bytes.fromhex("bfffffff")).opaque()
    with pytest.raises(DecodeError, match="exceeds limit"):
        Reader(b"\x05hello").opaque(max_len=4)


def test_vector_item_limit() -> None:
    items = Writer().vector(range(10), lambda w, i: w.u8(i)).bytes()
    assert Reader(items).vector(Reader.u8) == list(range(10))
    with pytest.raises(DecodeError, match="more than"):
        Reader(items).vector(Reader.u8, max_items=9)


def test_optional_and_boolean_strict() -> None:
    assert Reader(b"\x00").optional(Reader.u8) is None
    assert Reader(b"\x01\x07").optional(Reader.u8) == 7
    with pytest.raises(DecodeError):
        Reader(b"\x02\x07").optional(Reader.u8)
    with pytest.raises(DecodeError):
        Reader(b"\x02").boolean()


@given(st.integers(min_value=0, max_value=(1 << 30) - 1))
def test_varint_roundtrip(n: int) -> None:
    enc = encode_varint(n)
    r = Reader(enc)
    assert r.varint() == n
    r.done()


@given(st.binary(max_size=300))
def test_opaque_roundtrip(data: bytes) -> None:
    assert decode_all(Writer().opaque(data).bytes(), Reader.opaque) == data


@given(st.binary(max_size=16))
def test_random_varints_raise_only_decode_error(data: bytes) -> None:
    try:
        Reader(data).varint()
    except DecodeError:
        pass
