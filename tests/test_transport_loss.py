"""The loss-injection seam (transport/loss.py) and the transport's loss-recovery wiring, without RNS I/O.

Fake links stand in for ``RNS.Link``; ``RNS.Packet`` is replaced by a recorder where a packet
would leave.
"""

from __future__ import annotations

from typing import Any

import pytest
import RNS
from support_links import FakeLink

from ciris_av_plugin.media.frames import FrameSealer
from ciris_av_plugin.media.retransmit import NACK_BURST
from ciris_av_plugin.protocol.media_wire import FLAG_RETRANSMISSION, ForwardingHeader, decode_fragment
from ciris_av_plugin.protocol.nack import NACK_TO_END, Nack, NackRange, encode_nack
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.relay.events import NackUpstream
from ciris_av_plugin.transport.client import RelayClient
from ciris_av_plugin.transport.loss import LossInjector
from ciris_av_plugin.transport.media_clients import PublisherClient
from ciris_av_plugin.transport.relay import RelayNode, _LinkState

STREAM = 42


class Recorder:
    """Stands in for RNS.Packet: records (link, data) on send."""

    sent: list[tuple[Any, bytes]] = []

    def __init__(self, link: Any, data: bytes, create_receipt: bool = True) -> None:
        self.link, self.data = link, data

    def send(self) -> bool:
        Recorder.sent.append((self.link, self.data))
        return True


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    Recorder.sent = []
    monkeypatch.setattr(RNS, "Packet", Recorder)
    return Recorder


# ---------------------------------------------------------------- the injector


def test_random_loss_drops_about_the_configured_share_repeatably() -> None:
    a = LossInjector(rate=0.05, seed=7)
    b = LossInjector(rate=0.05, seed=7)
    pattern = [a.drop(i * 0.001) for i in range(20_000)]
    assert pattern == [b.drop(i * 0.001) for i in range(20_000)]
    assert 0.04 < sum(pattern) / len(pattern) < 0.06
    assert a.stats()["dropped"] == sum(pattern) and a.stats()["seen"] == 20_000


def test_bursts_drop_everything_inside_their_windows_only() -> None:
    inj = LossInjector(burst_s=0.2, burst_period_s=2.0, burst_offset_s=1.0, origin=10.0)
    assert not inj.drop(10.5)
    assert inj.drop(11.0) and inj.drop(11.19)
    assert not inj.drop(11.21)
    assert inj.drop(13.1) and not inj.drop(13.3)


def test_off_by_default_and_validated() -> None:
    assert not LossInjector().active
    assert not any(LossInjector().drop(t) for t in range(100))
    with pytest.raises(ValueError):
        LossInjector(rate=1.5)
    with pytest.raises(ValueError):
        LossInjector(burst_s=0.5, burst_period_s=0.5)


def test_the_client_seam_drops_media_both_ways(recorder: type[Recorder]) -> None:
    got: list[bytes] = []
    client = RelayClient(
        RNS.Identity(),
        b"R" * 16,
        receive_mode="callback",
        on_packet=got.append,
        loss_out=LossInjector(rate=1.0),
        loss_in=LossInjector(rate=1.0),
    )
    client._link = FakeLink()  # type: ignore[assignment]
    assert client.send(b"\x01" + bytes(50))  # "sent", and lost on the hop
    client._on_data(b"\x01" + bytes(50))
    assert recorder.sent == [] and got == []
    assert client.loss_out is not None and client.loss_out.dropped == 1
    clean = RelayClient(RNS.Identity(), b"R" * 16, receive_mode="callback", on_packet=got.append)
    clean._link = FakeLink()  # type: ignore[assignment]
    assert clean.send(b"\x01" + bytes(50))
    clean._on_data(b"\x01" + bytes(50))
    assert len(recorder.sent) == 1 and len(got) == 1


# ---------------------------------------------------------------- publisher side


def _publisher() -> tuple[PublisherClient, list[bytes]]:
    sealer = FrameSealer()
    sealer.set_epoch(1, bytes(16), 4, 0)
    pub = PublisherClient(RNS.Identity(), b"R" * 16, STREAM, sealer, receive_mode="callback")
    pub.client._link = FakeLink()  # type: ignore[assignment]
    sent: list[bytes] = []

    def send(data: bytes) -> bool:
        sent.append(data)
        return True

    pub.client.send = send  # type: ignore[method-assign]
    return pub, sent


def test_the_publisher_answers_a_nack_from_its_ring() -> None:
    pub, sent = _publisher()
    fh = ForwardingHeader(STREAM, 1, 1, 5, 0, 0, keyframe=True)
    pub.send_frame(fh, bytes(3000))
    first = list(sent)
    sent.clear()
    h = decode_fragment(first[2])[0]
    pub._on_packet(encode_nack(Nack(STREAM, (NackRange(1, 5, h.offset, h.offset + 1),))))
    assert len(sent) == 1 and pub.retransmitted == 1
    rh, chunk = decode_fragment(sent[0])
    assert rh.flags & FLAG_RETRANSMISSION and bytes(chunk) == bytes(decode_fragment(first[2])[1])


def test_the_publisher_counts_bad_nacks_and_floods() -> None:
    pub, sent = _publisher()
    pub.send_frame(ForwardingHeader(STREAM, 1, 1, 5, 0, 0, keyframe=True), bytes(500))
    sent.clear()
    pub._on_packet(b"\x03\x01garbage")
    pub._on_packet(encode_nack(Nack(STREAM + 1, (NackRange(1, 5, 0, NACK_TO_END),))))
    pub._on_packet(encode_nack(Nack(STREAM, (NackRange(1, 99, 0, NACK_TO_END),))))
    pub._on_packet(b"\x01" + bytes(40))
    for _ in range(100):
        pub._on_packet(encode_nack(Nack(STREAM, (NackRange(1, 5, 0, NACK_TO_END),))))
    drops = pub.nack_drops
    assert drops["bad_nack"] == 1 and drops["nack_other_stream"] == 1 and drops["nack_never_sent"] == 1
    assert drops["unexpected_packet"] == 1 and drops["nack_rate"] >= 70
    assert len(sent) <= 2 * (NACK_BURST + 1)  # two packets per answered NACK, a burst of them


# ---------------------------------------------------------------- relay side


def test_the_relay_sends_an_upstream_nack_as_a_packet_not_an_event(recorder: type[Recorder]) -> None:
    node = RelayNode(
        RNS.Identity(), lambda on_pending: ForwardingEngine(on_pending=on_pending), send_mode="threads"
    )
    link = FakeLink(b"P" * 16)
    state = _LinkState(link=link, link_id=link.link_id, opened_at=0.0)  # type: ignore[arg-type]
    node._links[link.link_id] = state
    packet = encode_nack(Nack(STREAM, (NackRange(1, 5, 0, NACK_TO_END),)))
    node._route_event(NackUpstream(link.link_id, STREAM, packet))
    assert recorder.sent == [(link, packet)]
    assert state.events.poll(0, 0.0, lambda: 0.0) == []
    assert node.counters()["tx_upstream"] == 1
