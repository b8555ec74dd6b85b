"""Hypothesis fuzz: decoders and the opener meet random and mutated-valid bytes with MediaError only."""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciris_av_plugin.errors import MediaError
from ciris_av_plugin.media.frames import FrameDecrypted, FrameOpener, FrameSealer
from ciris_av_plugin.media.ordering import REORDER_WAIT_S
from ciris_av_plugin.media.reassembly import MAX_BUFFERED_BYTES, FrameComplete, Reassembler
from ciris_av_plugin.media.sframe import decode_header
from ciris_av_plugin.protocol import media_wire as wire
from ciris_av_plugin.protocol.media_wire import ForwardingHeader, decode_fragment

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = b"\x42" * 16


PLAINTEXTS: set[bytes] = set()


def _valid_packets() -> list[bytes]:
    sealer = FrameSealer()
    sealer.set_epoch(1, KEY, 4, 1)
    out = []
    for seq in range(3):
        fh = ForwardingHeader(
            stream_id=5,
            track_id=1,
            kind=wire.KIND_VIDEO,
            frame_seq=seq,
            gop_id=0,
            capture_ts_us=seq,
            keyframe=seq == 0,
        )
        plaintext = os.urandom(700)
        PLAINTEXTS.add(plaintext)
        sealed = sealer.seal(fh, plaintext)
        out += sealed.packets(300)  # three fragments: reassembly paths
        out += sealed.packets(2000)  # one packet per frame: a mutation reaches keys, replay, AEAD
    return out


VALID = _valid_packets()


@st.composite
def mutated(draw):
    base = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "extend"]))
        if op == "flip" and base:
            i = draw(st.integers(0, len(base) - 1))
            base[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and base:
            i = draw(st.integers(0, len(base) - 1))
            base[i] = draw(st.integers(0, 255))
        elif op == "cut":
            base = base[: draw(st.integers(0, len(base)))]
        else:
            base += draw(st.binary(max_size=40))
    return bytes(base)


PACKETS = st.one_of(st.binary(max_size=120), mutated())


def _only_media_errors(fn, data):
    try:
        fn(data)
    except MediaError:
        pass


@FUZZ
@given(PACKETS)
def test_decode_fragment(data):
    _only_media_errors(decode_fragment, data)


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated().map(lambda p: p[wire.FRAG_HEADER_LEN :])))
def test_forwarding_header_decode(data):
    _only_media_errors(ForwardingHeader.decode, data)


@FUZZ
@given(st.one_of(st.binary(max_size=24), mutated().map(lambda p: p[wire.FRAG_HEADER_LEN + wire.FH_LEN :])))
def test_sframe_header_decode(data):
    try:
        h = decode_header(data)
    except MediaError:
        return
    assert 1 <= h.length <= len(data)


@FUZZ
@given(st.lists(PACKETS, min_size=1, max_size=12), st.lists(st.floats(0, 0.3), min_size=12, max_size=12))
def test_opener_receive_packet(packets, gaps):
    opener = FrameOpener()
    opener.install_epoch(1, KEY, 4, now=0.0)
    now = 0.0
    events = []
    for packet, gap in zip(packets, gaps, strict=False):
        now += gap
        events += opener.receive_packet(packet, now)  # must not raise anything
        assert opener.reassembler.buffered_bytes <= MAX_BUFFERED_BYTES
    # Valid traffic still decrypts after the garbage (no state poisoned for other frames).
    sealer = FrameSealer(ctr_floor=1 << 40)
    sealer.set_epoch(1, KEY, 4, 1)
    seq = (1 << 30) | 12345
    fh = ForwardingHeader(
        stream_id=5, track_id=1, kind=wire.KIND_VIDEO, frame_seq=seq, gop_id=9, capture_ts_us=0, keyframe=True
    )
    for packet in sealer.seal(fh, b"still fine").packets(300):
        events += opener.receive_packet(packet, now)
    events += opener.expire(now + REORDER_WAIT_S)  # it may wait behind a gap the fuzz left
    # (genuine fuzz frames still waiting in order may be released alongside it)
    payloads = [e.payload for e in events if isinstance(e, FrameDecrypted)]
    assert b"still fine" in payloads
    # Whatever the mutations, nothing but genuine plaintext ever comes out.
    assert set(payloads) <= PLAINTEXTS | {b"still fine"}


@settings(max_examples=150, deadline=None)
@given(
    st.binary(min_size=1, max_size=6000),
    st.lists(st.integers(40, 2000), min_size=1, max_size=4),
    st.randoms(use_true_random=False),
)
def test_any_split_resplit_duplicate_and_order_reassembles_identically(data, mdus, rng):
    header = wire.FragmentHeader(
        stream_id=1, track_id=2, frame_seq=3, gop_id=0, offset=0, total_len=len(data), kid=0x100
    )
    packets: list[bytes] = []
    for mdu in mdus:  # several hops' worth of cuts, each re-split from the previous one
        source = packets or wire.split(header, data, mdus[0])
        packets = []
        for p in source:
            h, chunk = decode_fragment(p)
            packets += wire.split(h, chunk, mdu)
    packets += rng.sample(packets, k=min(len(packets), 3))  # duplicates
    rng.shuffle(packets)
    r = Reassembler()
    done = []
    for p in packets:
        h, chunk = decode_fragment(p)
        done += [e for e in r.add(h, chunk, 0.0) if isinstance(e, FrameComplete)]
    assert [d.data for d in done] == [data]
    assert r.buffered_bytes == 0
