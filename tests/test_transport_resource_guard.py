"""The Resource advertisement guard, fed advertisements crafted as an attacker would (no network).

Advertisements come from real RNS code: ``RNS.Resource`` built on a fake link (``advertise=False``
so nothing is sent) and packed by ``RNS.ResourceAdvertisement``, then tampered with where an
attacker would. The fake link encrypts with a real RNS ``Token``, so the guard decrypts exactly
what RNS's ``Link.receive`` would.
"""

from __future__ import annotations

import bz2
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import RNS
from RNS.Cryptography import Token
from RNS.vendor import umsgpack

from ciris_av_plugin.transport import control, hook, resource_guard
from ciris_av_plugin.transport.errors import ResourceGuardUnavailable
from ciris_av_plugin.transport.resource_guard import (
    KIND_REQUEST,
    KIND_RESPONSE,
    MAX_INBOUND_RESOURCES_PER_LINK,
    MAX_INBOUND_RESOURCES_PER_NODE,
    NodeResources,
    ResourceGuard,
)

LIMIT = control.MAX_REQUEST_SIZE


class FakeLink:
    """What RNS's Resource and the guard use of a link; encryption is a real link Token."""

    mtu = 500
    mdu = 431
    rtt = 0.01
    traffic_timeout_factor = 6
    type = RNS.Destination.LINK

    def __init__(self) -> None:
        self.link_id = self.hash = os.urandom(16)
        self.status = RNS.Link.ACTIVE
        self._token = Token(os.urandom(64))
        self.incoming_resources: list[Any] = []
        self.outgoing_resources: list[Any] = []
        self.pending_requests: list[Any] = []
        self.passed: list[Any] = []
        self.torn_down = False

    def encrypt(self, data: bytes) -> bytes:
        return self._token.encrypt(data)

    def decrypt(self, data: bytes) -> bytes | None:
        try:
            return self._token.decrypt(data)
        except Exception:
            return None

    def receive(self, packet: Any) -> None:  # RNS's own handling, reached only by admitted packets
        self.passed.append(packet)

    def teardown(self) -> None:
        self.torn_down = True
        self.status = RNS.Link.CLOSED

    def get_last_resource_window(self) -> None:
        return None

    def get_last_resource_eifr(self) -> None:
        return None


class Guarded:
    """A guard with its own node registry and a recording reject seam."""

    def __init__(self, kind: str = KIND_REQUEST, storage: Path | None = None, **kw: Any) -> None:
        self.node = NodeResources(storage_dir=lambda: str(storage) if storage else None)
        self.rejected: list[bytes] = []
        self.guard = ResourceGuard(kind, LIMIT if kind == KIND_REQUEST else control.MAX_RESPONSE_SIZE,
                                   node=self.node, reject=lambda _link, h: self.rejected.append(h), **kw)

    def link(self) -> FakeLink:
        link = FakeLink()
        self.guard.attach(link)
        return link

    def refused(self) -> dict[str, int]:
        return {k.removeprefix("resource_refused_"): v for k, v in self.guard.counters().items() if "refused" in k}


def make_resource(link: FakeLink, data: bytes, *, compress: bool = False, response: bool = False) -> Any:
    """A real outgoing RNS Resource for a request (or response) body, not advertised."""
    return RNS.Resource(data, link, advertise=False, auto_compress=compress, request_id=os.urandom(16),
                        is_response=response)


def advert_bytes(resource: Any, **tamper: Any) -> bytes:
    """RNS's own packed advertisement of ``resource``, with fields overwritten as an attacker would."""
    adv = umsgpack.unpackb(RNS.ResourceAdvertisement(resource, request_id=resource.request_id,
                                                     is_response=resource.is_response).pack())
    adv.update(tamper)
    return umsgpack.packb(adv)


def adv_packet(link: FakeLink, plaintext: bytes) -> Any:
    return SimpleNamespace(context=RNS.Packet.RESOURCE_ADV, data=link.encrypt(plaintext), link=link)


def send(link: FakeLink, plaintext: bytes) -> bool:
    """Deliver one advertisement through the link's (wrapped) receive; True if RNS got it."""
    before = len(link.passed)
    link.receive(adv_packet(link, plaintext))
    return len(link.passed) > before


def big_body(size: int = 200_000) -> bytes:
    """A control request body above the link MDU, as incompressible as MLS ciphertext."""
    return control.pack_body({"stream_id": 1, "commit": os.urandom(size)})


# ---- admitted ----------------------------------------------------------------------------------


def test_legitimate_large_request_is_admitted() -> None:
    g = Guarded()
    link = g.link()
    resource = make_resource(link, big_body())
    assert resource.size > link.mdu and not resource.compressed
    assert send(link, advert_bytes(resource))
    assert g.guard.counters() == {"resource_accepted": 1} and g.rejected == []


def test_request_at_exactly_the_limit_is_admitted() -> None:
    g = Guarded()
    link = g.link()
    resource = make_resource(link, os.urandom(LIMIT))
    assert send(link, advert_bytes(resource)), g.refused()


def test_transfer_overhead_bounds_every_honest_transfer_size() -> None:
    token = Token(os.urandom(64))
    for d in list(range(0, 100)) + [431, 1000, 4095, 4096, LIMIT]:
        t = len(token.encrypt(os.urandom(RNS.Resource.RANDOM_HASH_SIZE + d)))
        assert t <= resource_guard.max_transfer_size(d), d


# ---- refused, one reason each --------------------------------------------------------------------


def test_compressed_request_is_refused_and_rejected() -> None:
    g = Guarded()
    link = g.link()
    # The bomb: zeros compress ~1000:1, and the declared size d is whatever the attacker says.
    resource = make_resource(link, bytes(2_000_000), compress=True)
    assert resource.compressed
    assert not send(link, advert_bytes(resource, d=100))
    assert g.refused() == {"compressed": 1}
    assert g.rejected == [resource.hash], "an honest sender is told at once"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("d", LIMIT + 1),
        ("t", resource_guard.max_transfer_size(LIMIT) + 1),
        ("n", 100_000),
    ],
)
def test_declared_sizes_over_the_limit_are_refused(field: str, value: int) -> None:
    g = Guarded()
    link = g.link()
    resource = make_resource(link, big_body(1000))
    assert not send(link, advert_bytes(resource, **{field: value}))
    assert g.refused() == {"oversized": 1}


def test_oversized_transfer_within_rns_own_bound_is_refused() -> None:
    """t of 2 MiB passes RNS's own check (3 MiB) and a forged d passes max_request_size."""
    g = Guarded()
    link = g.link()
    resource = make_resource(link, big_body(1000))
    t = 2 * 1024 * 1024
    assert not send(link, advert_bytes(resource, d=100, t=t, n=-(-t // resource_guard.link_sdu(link))))
    assert g.refused() == {"oversized": 1}


@pytest.mark.parametrize("tamper", [{"f": 0x0D}, {"l": 2}, {"i": 2, "l": 2}])
def test_split_requests_are_refused(tamper: dict[str, int]) -> None:
    g = Guarded()
    link = g.link()
    assert not send(link, advert_bytes(make_resource(link, big_body(1000)), **tamper))
    assert g.refused() == {"split": 1}


def test_metadata_is_refused() -> None:
    g = Guarded()
    link = g.link()
    assert not send(link, advert_bytes(make_resource(link, big_body(1000)), f=0x29))
    assert g.refused() == {"metadata": 1}


def test_foreign_original_hash_is_refused() -> None:
    g = Guarded()
    link = g.link()
    assert not send(link, advert_bytes(make_resource(link, big_body(1000)), o=bytes(32)))
    assert g.refused() == {"original-hash": 1}


def test_original_hash_in_transfer_on_any_link_is_refused() -> None:
    g = Guarded()
    first, second = g.link(), g.link()
    resource = make_resource(first, big_body(1000))
    first.incoming_resources.append(SimpleNamespace(hash=resource.hash, original_hash=resource.hash))
    assert not send(second, advert_bytes(resource)), "the storage file is per process, not per link"
    assert g.refused() == {"original-hash": 1}
    first.incoming_resources.clear()  # that transfer finished
    assert send(second, advert_bytes(resource))


def test_original_hash_whose_storage_file_exists_is_refused(tmp_path: Path) -> None:
    """After a transfer leaves the link's list RNS still reads and unlinks its file: hold the name."""
    g = Guarded(storage=tmp_path)
    link = g.link()
    resource = make_resource(link, big_body(1000))
    (tmp_path / resource.hash.hex()).write_bytes(b"assembling")
    assert not send(link, advert_bytes(resource))
    assert g.refused() == {"original-hash": 1}


def test_per_link_cap() -> None:
    g = Guarded()
    link, other = g.link(), g.link()
    link.incoming_resources.extend(
        SimpleNamespace(hash=os.urandom(32), original_hash=os.urandom(32)) for _ in range(MAX_INBOUND_RESOURCES_PER_LINK)
    )
    assert not send(link, advert_bytes(make_resource(link, big_body(1000))))
    assert g.refused() == {"link-busy": 1}
    assert send(other, advert_bytes(make_resource(other, big_body(1000)))), "other links are not affected"


def test_per_node_cap() -> None:
    g = Guarded()
    links = [g.link() for _ in range(MAX_INBOUND_RESOURCES_PER_NODE)]
    for link in links:
        link.incoming_resources.append(SimpleNamespace(hash=os.urandom(32), original_hash=os.urandom(32)))
    fresh = g.link()
    assert not send(fresh, advert_bytes(make_resource(fresh, big_body(1000))))
    assert g.refused() == {"node-busy": 1}
    links[0].status = RNS.Link.CLOSED  # a closed link's transfers no longer count
    assert send(fresh, advert_bytes(make_resource(fresh, big_body(1000))))


def test_unconfirmed_links_may_not_send_large_requests() -> None:
    confirmed: set[bytes] = set()
    g = Guarded(may_transfer=lambda link: link.link_id in confirmed)
    link = g.link()
    resource = make_resource(link, big_body(1000))
    assert not send(link, advert_bytes(resource))
    assert g.refused() == {"unconfirmed": 1}
    confirmed.add(link.link_id)
    assert send(link, advert_bytes(resource))


def test_each_side_accepts_only_its_kind() -> None:
    relay = Guarded(KIND_REQUEST)
    link = relay.link()
    assert not send(link, advert_bytes(make_resource(link, big_body(1000), response=True)))
    assert relay.refused() == {"unexpected": 1}
    client = Guarded(KIND_RESPONSE)
    link = client.link()
    assert not send(link, advert_bytes(make_resource(link, big_body(1000))))
    assert send(link, advert_bytes(make_resource(link, big_body(1000), response=True)))
    assert client.refused() == {"unexpected": 1}


def test_client_refuses_a_response_bomb() -> None:
    """The relay's link to a member is the only sender of responses; it cannot balloon the member."""
    g = Guarded(KIND_RESPONSE)
    link = g.link()
    bomb = make_resource(link, bytes(3_000_000), compress=True, response=True)
    assert not send(link, advert_bytes(bomb, d=100))
    too_big = make_resource(link, os.urandom(control.MAX_RESPONSE_SIZE + 1 - 40), response=True)
    assert not send(link, advert_bytes(too_big, d=control.MAX_RESPONSE_SIZE + 1))
    assert g.refused() == {"compressed": 1, "oversized": 1}


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x00garbage",
        umsgpack.packb({"t": 1}),
        "hashmap-longer-than-parts",
        "transfer-over-rns-bound",
        "string-size",
    ],
)
def test_malformed_advertisements_close_the_link(plaintext: Any) -> None:
    g = Guarded()
    link = g.link()
    resource = make_resource(link, big_body(1000))
    if plaintext == "hashmap-longer-than-parts":
        # Resource.accept would register the transfer, then IndexError in hashmap_update: stranded.
        plaintext = advert_bytes(resource, m=os.urandom(4 * (len(resource.parts) + 5)))
    elif plaintext == "transfer-over-rns-bound":
        plaintext = advert_bytes(resource, t=4 * 1024 * 1024)
    elif plaintext == "string-size":
        plaintext = advert_bytes(resource, d="100")
    assert not send(link, plaintext)
    assert g.refused() == {"malformed": 1}
    assert link.torn_down or g.rejected, "refused loudly: torn down (undecodable) or rejected"


def test_undecryptable_advertisement_is_left_to_rns() -> None:
    g = Guarded()
    link = g.link()
    link.receive(SimpleNamespace(context=RNS.Packet.RESOURCE_ADV, data=b"not for this link", link=link))
    assert len(link.passed) == 1 and g.guard.counters() == {}


def test_a_guard_bug_never_raises_into_rns() -> None:
    def broken(_link: Any) -> bool:
        raise RuntimeError("bug")

    g = Guarded(may_transfer=broken)
    link = g.link()
    assert not send(link, advert_bytes(make_resource(link, big_body(1000))))  # must not raise
    assert g.refused() == {"guard-error": 1}


# ---- wiring ------------------------------------------------------------------------------------


def test_guard_composes_with_the_inline_receive_hook() -> None:
    g = Guarded()
    link = FakeLink()
    got: list[bytes] = []
    g.guard.attach(link)
    hook.attach_receiver(link, got.append, hook.MODE_INLINE)  # type: ignore[arg-type]
    link.attached_interface = None  # type: ignore[attr-defined]
    link.last_inbound = link.last_data = 0.0  # type: ignore[attr-defined]
    link.rx = link.rxbytes = 0  # type: ignore[attr-defined]
    media = SimpleNamespace(packet_type=RNS.Packet.DATA, context=RNS.Packet.NONE, data=link.encrypt(b"frame"),
                            receiving_interface=None)
    link.receive(media)
    assert got == [b"frame"]
    bomb = make_resource(link, bytes(1_000_000), compress=True)
    link.receive(SimpleNamespace(packet_type=RNS.Packet.DATA, context=RNS.Packet.RESOURCE_ADV,
                                 data=link.encrypt(advert_bytes(bomb, d=10)), receiving_interface=None))
    assert link.passed == [] and g.refused() == {"compressed": 1}
    good = make_resource(link, big_body(1000))
    link.receive(SimpleNamespace(packet_type=RNS.Packet.DATA, context=RNS.Packet.RESOURCE_ADV,
                                 data=link.encrypt(advert_bytes(good)), receiving_interface=None))
    assert len(link.passed) == 1


def test_send_request_sends_large_bodies_uncompressed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RNS.Resource, "advertise", lambda self: None)  # no network here
    link = FakeLink()
    body = control.pack_body({"stream_id": 1, "commit": bytes(100_000)})  # bz2 would shrink it 1000x
    receipt = resource_guard.send_request(
        link, "commit", body, response_callback=lambda _r: None, failed_callback=lambda _r: None,
        timeout=5.0, max_response_size=control.MAX_RESPONSE_SIZE,
    )
    assert isinstance(receipt, RNS.RequestReceipt) and receipt in link.pending_requests
    resource = receipt.resource
    assert not resource.compressed and resource.total_size > 100_000
    g = Guarded(may_transfer=lambda _l: True)
    relay_side = g.link()
    relay_side._token = link._token
    assert send(relay_side, advert_bytes(resource)), g.refused()
    # RNS's request envelope and id, as Link.request makes them and the relay's RNS reads them.
    packed = umsgpack.packb([0.0, RNS.Identity.truncated_hash(b"commit"), body])
    assert resource.total_size == len(packed)
    assert receipt.request_id == resource.request_id


def test_compression_would_have_been_chosen_without_send_request() -> None:
    """Why send_request exists: RNS's default Resource compresses a compressible request."""
    link = FakeLink()
    data = umsgpack.packb([0.0, bytes(16), control.pack_body({"x": bytes(100_000)})])
    assert RNS.Resource(data, link, advertise=False, request_id=os.urandom(16)).compressed
    assert len(bz2.compress(data)) < len(data) // 100


def test_start_up_self_test(monkeypatch: pytest.MonkeyPatch) -> None:
    resource_guard.check_rns_internals()  # the installed rns passes
    monkeypatch.setattr(resource_guard, "_checked", [])

    def accept(advertisement_packet: Any, callback: Any = None) -> None:
        """A future RNS whose accept reads the advertisement differently."""

    monkeypatch.setattr(RNS.Resource, "accept", staticmethod(accept))
    with pytest.raises(ResourceGuardUnavailable, match=r"Resource\.accept no longer contains"):
        resource_guard.check_rns_internals()
    with pytest.raises(ResourceGuardUnavailable):
        ResourceGuard(KIND_REQUEST, LIMIT).attach(FakeLink())


def test_self_test_notices_moved_advertisement_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource_guard, "_checked", [])
    original = RNS.ResourceAdvertisement.unpack

    def unpack(data: bytes) -> Any:
        adv = original(data)
        adv.t, adv.d = adv.d, adv.t  # a release that swapped the meaning of t and d
        return adv

    monkeypatch.setattr(RNS.ResourceAdvertisement, "unpack", staticmethod(unpack))
    with pytest.raises(ResourceGuardUnavailable, match="round-trip"):
        resource_guard.check_rns_internals()


def test_guard_limits_fit_one_segment() -> None:
    with pytest.raises(ValueError):
        ResourceGuard(KIND_REQUEST, RNS.Resource.MAX_EFFICIENT_SIZE + 1)
    with pytest.raises(ValueError):
        ResourceGuard("other", LIMIT)


# ---- the relay's wiring ------------------------------------------------------------------------


def _relay() -> Any:
    from ciris_av_plugin.relay.engine import ForwardingEngine
    from ciris_av_plugin.transport.relay import RelayNode

    return RelayNode(RNS.Identity(), lambda on_pending: ForwardingEngine(on_pending=on_pending), send_mode="threads")


def test_relay_guards_requests_of_confirmed_links_and_reports_refusals() -> None:
    from ciris_av_plugin.transport.relay import _LinkState

    relay = _relay()
    try:
        guard = relay.resource_guard
        assert guard.kind == KIND_REQUEST and guard.max_size == control.MAX_REQUEST_SIZE
        link = FakeLink()
        state = _LinkState(link=link, link_id=link.link_id, opened_at=0.0)  # type: ignore[arg-type]
        relay._links[link.link_id] = state
        guard.attach(link)
        assert not send(link, advert_bytes(make_resource(link, big_body(1000))))
        state.confirmed = True
        assert send(link, advert_bytes(make_resource(link, big_body(1000))))
        assert not send(link, advert_bytes(make_resource(link, bytes(500_000), compress=True), d=100))
        counters = relay.counters()
        assert counters["resource_refused_unconfirmed"] == 1
        assert counters["resource_refused_compressed"] == 1
        assert counters["resource_accepted"] == 1
    finally:
        relay.stop()


def test_relay_answers_a_reply_over_the_limit_with_a_typed_error() -> None:
    from ciris_av_plugin.transport.relay import _LinkState

    relay = _relay()
    try:
        link = FakeLink()
        relay._links[link.link_id] = _LinkState(link=link, link_id=link.link_id, opened_at=0.0,  # type: ignore[arg-type]
                                                confirmed=True)
        sizes = {"small": control.MAX_REPLY_SIZE - 100, "big": control.MAX_REPLY_SIZE + 16}

        def handler(_state: Any, body: dict[str, Any], _identity: Any) -> dict[str, Any]:
            return {"blob": bytes(sizes[body["which"]] - 16)}

        gen = relay._wrap("blob", handler)
        ok = control.unpack_body(gen("blob", control.pack_body({"which": "small"}), b"r", link.link_id, None, 0.0))
        assert "error" not in ok
        # RNS's own envelope around the largest reply still fits what clients accept.
        assert len(umsgpack.packb([os.urandom(16), control.pack_body(ok)])) <= control.MAX_RESPONSE_SIZE
        big = control.unpack_body(gen("blob", control.pack_body({"which": "big"}), b"r", link.link_id, None, 0.0))
        assert big["error"] == control.ERR_TOO_LARGE
        assert relay.counters()["req_error_too-large"] == 1
    finally:
        relay.stop()


def test_self_test_notices_a_link_without_the_response_bookkeeping_the_client_wraps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource_guard, "_checked", [])

    def handle_response(self: Any, request_id: bytes, response_data: Any) -> None:
        """A future RNS whose responses are matched some other way."""

    monkeypatch.setattr(RNS.Link, "handle_response", handle_response)
    with pytest.raises(ResourceGuardUnavailable, match="handle_response"):
        resource_guard.check_rns_internals()
