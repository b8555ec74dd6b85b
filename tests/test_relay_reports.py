"""Receiver-report codec (protocol/reports.py): round trips, exact sizes, and every malformed shape."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciris_av_plugin.errors import RelayError
from ciris_av_plugin.protocol.media_wire import PT_FRAGMENT, PT_RECEIVER_REPORT
from ciris_av_plugin.protocol.reports import (
    MAX_REPORT_TRACKS,
    MAX_REPORTED_LOSS,
    REPORT_ENTRY_LEN,
    REPORT_HEADER_LEN,
    ReceiverReport,
    TrackReport,
    decode_receiver_report,
    encode_receiver_report,
)
from ciris_av_plugin.relay.errors import ReportError

track_reports = st.builds(
    TrackReport,
    track_id=st.integers(0, 255),
    highest_seq=st.none() | st.integers(0, 2**32 - 1),
    lost=st.integers(0, MAX_REPORTED_LOSS),
)
reports = st.builds(
    ReceiverReport,
    stream_id=st.integers(0, 2**64 - 1),
    tracks=st.lists(track_reports, max_size=MAX_REPORT_TRACKS, unique_by=lambda t: t.track_id).map(tuple),
)


@given(reports)
def test_round_trip(report: ReceiverReport) -> None:
    data = encode_receiver_report(report)
    assert data[0] == PT_RECEIVER_REPORT
    assert len(data) == REPORT_HEADER_LEN + REPORT_ENTRY_LEN * len(report.tracks)
    assert decode_receiver_report(data) == report
    assert decode_receiver_report(memoryview(data)) == report


def test_layout_is_the_documented_one() -> None:
    data = encode_receiver_report(ReceiverReport(0x0102030405060708, (TrackReport(7, 0xAABBCCDD, 3),)))
    assert data == bytes([0x02, 1, 1, 2, 3, 4, 5, 6, 7, 8, 1, 7, 1, 0xAA, 0xBB, 0xCC, 0xDD, 0, 3])


def test_largest_report_fits_smallest_rns_mdu() -> None:
    full = ReceiverReport(1, tuple(TrackReport(i, i, 1) for i in range(MAX_REPORT_TRACKS)))
    assert len(encode_receiver_report(full)) <= 431


def test_loss_saturates() -> None:
    data = encode_receiver_report(ReceiverReport(1, (TrackReport(0, 5, 10**6),)))
    assert decode_receiver_report(data).tracks[0].lost == MAX_REPORTED_LOSS


@pytest.mark.parametrize(
    "report",
    [
        ReceiverReport(1, tuple(TrackReport(i, 0) for i in range(MAX_REPORT_TRACKS + 1))),
        ReceiverReport(1, (TrackReport(1, 0), TrackReport(1, 2))),
        ReceiverReport(1, (TrackReport(256, 0),)),
        ReceiverReport(1, (TrackReport(1, 2**32),)),
        ReceiverReport(1, (TrackReport(1, 0, -1),)),
        ReceiverReport(2**64, ()),
        ReceiverReport(-1, ()),
    ],
)
def test_encode_refuses_out_of_range(report: ReceiverReport) -> None:
    with pytest.raises(ReportError):
        encode_receiver_report(report)


def _good() -> bytes:
    return encode_receiver_report(ReceiverReport(9, (TrackReport(0, 5, 0), TrackReport(1, None, 2))))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"",
        lambda d: d[: REPORT_HEADER_LEN - 1],
        lambda d: d[:-1],
        lambda d: d + b"\x00",
        lambda d: bytes([PT_FRAGMENT]) + d[1:],
        lambda d: d[:1] + b"\x02" + d[2:],
        lambda d: d[:10] + bytes([MAX_REPORT_TRACKS + 1]) + d[11:],
        lambda d: d[:10] + b"\x03" + d[11:],
        # reserved entry flag
        lambda d: d[:12] + b"\x03" + d[13:],
        # duplicate track id
        lambda d: d[:19] + b"\x00" + d[20:],
        # highest_seq set on an entry without the COMPLETED flag
        lambda d: d[:21] + struct.pack(">I", 7) + d[25:],
    ],
)
def test_decode_refuses_malformed(mutate) -> None:
    bad = mutate(_good())
    with pytest.raises(ReportError) as info:
        decode_receiver_report(bad)
    assert isinstance(info.value, RelayError)


@given(st.binary(max_size=200))
def test_decode_garbage_raises_only_report_error(data: bytes) -> None:
    try:
        report = decode_receiver_report(data)
    except ReportError:
        return
    assert encode_receiver_report(report) == data
