"""The delivery control plane on a real RelayNode (fake links, no RNS I/O): bad input is refused, typed.

Oversized and malformed requests, floods of join requests and KeyPackage publishes from one link and
from many identities, non-members opening publish/subscribe links, unidentified links, and the media
enforcement (KID sender and epoch) that the DeliveryPlane installs in the engine. Every refusal is a
typed error reply, and what was stored before stays intact.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import RNS
from support_links import FakeLink

from ciris_av_plugin.media.kid import encode_kid
from ciris_av_plugin.mls import CipherSuite, Group, KeyPackageBundle
from ciris_av_plugin.protocol.control import PATH_JOIN, PATH_KP_FETCH, PATH_KP_PUBLISH, PATH_REGISTER
from ciris_av_plugin.protocol.envelope import seal_envelope
from ciris_av_plugin.protocol.media_wire import FragmentHeader
from ciris_av_plugin.relay.delivery import DeliveryService
from ciris_av_plugin.relay.directory import KeyPackageDirectory
from ciris_av_plugin.relay.enforcement import (
    DROP_KID_CONTEXT,
    DROP_KID_SENDER,
    DROP_NOT_BOUND,
    DROP_OLD_EPOCH,
    DROP_UNKNOWN_EPOCH,
    OLD_EPOCH_GRACE_S,
    EpochEnforcer,
)
from ciris_av_plugin.relay.engine import ForwardingEngine
from ciris_av_plugin.store import SQLiteStore
from ciris_av_plugin.transport import control
from ciris_av_plugin.transport.delivery_handlers import DeliveryPlane
from ciris_av_plugin.transport.relay import RelayNode, _LinkState

SUITE = CipherSuite(1)
STREAM = 9


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def node(tmp_path: Path) -> Any:
    clock = Clock()
    relay = RelayNode(RNS.Identity(), lambda on_pending: ForwardingEngine(on_pending=on_pending), clock=clock,
                      send_mode="threads")
    store = SQLiteStore(tmp_path / "relay.db")
    ds = DeliveryService(store)
    directory = KeyPackageDirectory(store, ds.may_fetch, suites={1})
    ds.directory = directory
    plane = DeliveryPlane(relay, ds, directory)
    yield relay, plane, clock
    relay.stop()
    store.close()


def _link(relay: RelayNode, identity: RNS.Identity | None, name: bytes | None = None) -> _LinkState:
    link = FakeLink((name or (identity.hash if identity else b"anon"))[:12].ljust(16, b"_"))
    state = _LinkState(link=link, link_id=link.link_id, opened_at=relay.clock())  # type: ignore[arg-type]
    relay._links[link.link_id] = state
    if identity is not None:
        state.identity_hash, state.confirmed = identity.hash, True
    return state


def _req(relay: RelayNode, path: str, state: _LinkState, body: Any) -> dict[str, Any]:
    fn = {control.PATH_PUBLISH: relay._req_publish, control.PATH_SUBSCRIBE: relay._req_subscribe}.get(path)
    handler = relay._wrap(path, fn or relay._extra_handlers[path])
    data = body if isinstance(body, bytes) else control.pack_body(body)
    return control.unpack_body(handler(path, data, b"req", state.link_id, None, time.time()))


def _envelope(who: RNS.Identity, bundle: KeyPackageBundle, last_resort: bool = False) -> bytes:
    return seal_envelope(bundle.key_package, last_resort=last_resort, identity_pub=who.get_public_key(),
                         ts=int(time.time()), sign=who.sign)


def _stream(relay: RelayNode) -> tuple[RNS.Identity, Group, _LinkState]:
    creator = RNS.Identity()
    group = Group.create(b"g-wire", creator.hash, SUITE)
    state = _link(relay, creator)
    assert "error" not in _req(relay, PATH_REGISTER, state, {"stream_id": STREAM,
                                                              "group_info": group.group_info(ratchet_tree=True)})
    return creator, group, state


def test_unidentified_links_get_nothing(node) -> None:
    relay, plane, _ = node
    anon = _link(relay, None)
    for path in (PATH_KP_PUBLISH, PATH_JOIN, PATH_REGISTER, PATH_KP_FETCH):
        assert _req(relay, path, anon, {"stream_id": STREAM})["error"] == control.ERR_NOT_IDENTIFIED


def test_oversized_and_malformed_requests_are_refused_typed(node) -> None:
    relay, plane, _ = node
    who = RNS.Identity()
    state = _link(relay, who)
    big = _req(relay, PATH_KP_PUBLISH, state, control.pack_body({"envelope": b"x" * (control.MAX_REQUEST_SIZE + 1)}))
    assert big["error"] == control.ERR_BAD_REQUEST
    assert _req(relay, PATH_KP_PUBLISH, state, {"envelope": "text"})["error"] == control.ERR_BAD_REQUEST
    assert _req(relay, PATH_JOIN, state, {"stream_id": "9"})["error"] == control.ERR_BAD_REQUEST
    assert _req(relay, PATH_JOIN, state, b"\xc1not msgpack")["error"] == control.ERR_BAD_REQUEST
    assert _req(relay, PATH_KP_FETCH, state, {"target": b"short", "suite": 1})["error"] == control.ERR_BAD_REQUEST
    assert _req(relay, PATH_KP_PUBLISH, state, {"envelope": b"\x82garbage"})["error"] == "malformed-envelope"
    assert _req(relay, PATH_JOIN, state, {"stream_id": 12345})["error"] == "unknown-stream"


def test_non_members_may_neither_subscribe_nor_publish(node) -> None:
    relay, plane, _ = node
    creator, group, cstate = _stream(relay)
    stranger = _link(relay, RNS.Identity())
    assert _req(relay, control.PATH_SUBSCRIBE, stranger, {"stream_id": STREAM})["error"] == control.ERR_NOT_MEMBER
    assert _req(relay, control.PATH_PUBLISH, stranger, {"stream_id": STREAM})["error"] == control.ERR_NOT_MEMBER
    assert stranger.role is None
    media = _link(relay, creator, b"creator-media")
    assert "error" not in _req(relay, control.PATH_PUBLISH, media, {"stream_id": STREAM})
    # a configured peer relay may subscribe (cascade) without a leaf
    peer = RNS.Identity()
    plane.peer_relays = frozenset({peer.hash})
    assert "error" not in _req(relay, control.PATH_SUBSCRIBE, _link(relay, peer), {"stream_id": STREAM})


def test_join_floods_from_one_identity_and_from_many_are_bounded(node) -> None:
    relay, plane, _ = node
    _stream(relay)
    one = _link(relay, RNS.Identity())
    codes = [_req(relay, PATH_JOIN, one, {"stream_id": STREAM}).get("error") for _ in range(6)]
    assert codes[:3] == [None, None, None] and set(codes[3:]) == {"rate-limited"}
    ds = plane.ds
    stored = len(ds._store.join_requests(STREAM, time.time()))
    many = [RNS.Identity() for _ in range(70)]
    codes = [_req(relay, PATH_JOIN, _link(relay, i, i.hash), {"stream_id": STREAM}).get("error") for i in many]
    assert codes.count("join-queue-full") == stored + 70 - 64
    assert len(ds._store.join_requests(STREAM, time.time())) == 64  # the earlier ones were kept


def test_publish_floods_hit_the_link_limit_and_the_identity_quota(node) -> None:
    relay, plane, _ = node
    who = RNS.Identity()
    state = _link(relay, who)
    bundles = [KeyPackageBundle.generate(who.hash, SUITE) for _ in range(40)]
    codes = [_req(relay, PATH_KP_PUBLISH, state, {"envelope": _envelope(who, b)}).get("error") for b in bundles]
    assert control.ERR_RATE_LIMITED in codes  # one link cannot push faster than its request budget
    published = codes.count(None)
    assert published >= 1
    # many links of one identity still meet the per-identity quota of one-time KeyPackages
    for b in bundles:
        _req(relay, PATH_KP_PUBLISH, _link(relay, who, b.ref[:12]), {"envelope": _envelope(who, b)})
    assert plane.directory.count_one_time(who.hash) == 32
    # another identity's envelope from this link is refused; what was stored stays
    other = RNS.Identity()
    forged = _envelope(other, KeyPackageBundle.generate(other.hash, SUITE))
    assert _req(relay, PATH_KP_PUBLISH, _link(relay, who, b"again"), {"envelope": forged})["error"] == "publisher-mismatch"
    assert plane.directory.count_one_time(who.hash) == 32


def test_key_packages_are_fetchable_only_by_members_of_a_stream_the_target_asked_to_join(node) -> None:
    relay, plane, _ = node
    creator, group, cstate = _stream(relay)
    joiner = RNS.Identity()
    jstate = _link(relay, joiner)
    _req(relay, PATH_KP_PUBLISH, jstate, {"envelope": _envelope(joiner, KeyPackageBundle.generate(joiner.hash, SUITE))})
    body = {"target": joiner.hash, "suite": 1}
    assert _req(relay, PATH_KP_FETCH, cstate, body)["error"] == "not-authorised"  # no join request yet
    _req(relay, PATH_JOIN, jstate, {"stream_id": STREAM})
    stranger = _link(relay, RNS.Identity())
    assert _req(relay, PATH_KP_FETCH, stranger, body)["error"] == "not-authorised"
    assert "key_package" in _req(relay, PATH_KP_FETCH, cstate, body)
    # the admitter was told through its control link's long poll
    assert [e.kind for e in cstate.events.pending()] == ["JoinRequested"]


def test_the_frame_filter_drops_foreign_kids_and_old_epochs() -> None:
    enf = EpochEnforcer()
    alice, bob = b"a" * 16, b"b" * 16
    enf.set_epoch(5, 3, {0: alice, 1: bob}, 2, now=10.0)
    enf.bind(b"L-alice", alice, 5)

    def frag(kid: int, track: int = 1, stream: int = 5) -> FragmentHeader:
        return FragmentHeader(stream, track, 0, 0, 0, 10, kid)

    assert enf.filter(b"L-alice", frag(encode_kid(1, 0, 3, 2)), 10.0) is None
    assert enf.filter(b"L-alice", frag(encode_kid(1, 1, 3, 2)), 10.0) == DROP_KID_SENDER  # bob's leaf
    assert enf.filter(b"L-alice", frag(encode_kid(2, 0, 3, 2)), 10.0) == DROP_KID_CONTEXT
    assert enf.filter(b"L-alice", frag(encode_kid(1, 0, 4, 2)), 10.0) == DROP_UNKNOWN_EPOCH  # not accepted yet
    assert enf.filter(b"L-nobody", frag(encode_kid(1, 0, 3, 2)), 10.0) == DROP_NOT_BOUND
    assert enf.filter(b"L-alice", frag(encode_kid(1, 0, 3, 2), stream=6), 10.0) == DROP_NOT_BOUND
    # epoch 4 widens the tree to 4 leaves and moves alice to leaf 2: old KIDs decode with the old width
    enf.set_epoch(5, 4, {1: bob, 2: alice}, 4, now=20.0)
    assert enf.filter(b"L-alice", frag(encode_kid(1, 2, 4, 4)), 20.0) is None
    assert enf.filter(b"L-alice", frag(encode_kid(1, 0, 3, 2)), 20.0 + OLD_EPOCH_GRACE_S / 2) is None  # in flight
    assert enf.filter(b"L-alice", frag(encode_kid(1, 0, 3, 2)), 20.0 + OLD_EPOCH_GRACE_S + 0.01) == DROP_OLD_EPOCH
    enf.set_epoch(5, 5, {1: bob, 2: alice}, 4, now=30.0)
    assert enf.filter(b"L-alice", frag(encode_kid(1, 0, 3, 2)), 30.0) == DROP_UNKNOWN_EPOCH
    assert enf.drops[DROP_OLD_EPOCH] == 1
    # a peer relay forwards other members' frames: only the epoch rule applies to it
    enf.bind(b"L-peer", b"p" * 16, 5, peer=True)
    assert enf.filter(b"L-peer", frag(encode_kid(1, 1, 5, 4)), 30.0) is None


def test_member_keyframe_requests_are_coalesced_unless_they_name_a_newer_epoch(node) -> None:
    relay, plane, clock = node
    creator, group, cstate = _stream(relay)
    media = _link(relay, creator, b"creator-media")
    _req(relay, control.PATH_PUBLISH, media, {"stream_id": STREAM})
    ask = {"stream_id": STREAM, "track_id": 1, "epoch": 0}
    assert _req(relay, "keyframe", cstate, ask)["publishers"] == 1
    assert _req(relay, "keyframe", cstate, ask).get("coalesced") is True  # a flood from one member
    assert _req(relay, "keyframe", cstate, dict(ask, epoch=1))["publishers"] == 1  # a newer epoch passes
    clock.t += 1.0
    assert _req(relay, "keyframe", cstate, ask)["publishers"] == 1
    assert [e.kind for e in media.events.pending()] == ["KeyframeWanted"] * 3
    stranger = _link(relay, RNS.Identity())
    assert _req(relay, "keyframe", stranger, ask)["error"] == control.ERR_NOT_MEMBER
