"""Refusing RNS Resource advertisements before RNS allocates what a sender merely declares.

A request or response larger than a link MDU travels as an RNS Resource: the sender advertises
it in one small packet and the receiver's ``Resource.accept`` sets the transfer up. rns 1.5.x
checks only the declared data size ``d`` against ``max_request_size`` / ``max_response_size``,
and then trusts the rest of the advertisement:

* it allocates part slots from the declared transfer size ``t`` (up to 3 MiB);
* a *compressed* resource is bz2-inflated on assembly up to 64 MiB, whatever ``d`` said;
* the storage file of a resource is named after the sender-chosen ``original_hash`` ``o``, and
  every link of the process shares the directory, so two transfers naming the same ``o`` append
  to and unlink one file; the loser's ``assemble`` thread dies with ``FileNotFoundError``;
* a hashmap longer than the part count raises inside ``accept`` after the resource was
  registered, leaving it on the link with no watchdog.

So a ~140-byte advertisement could make a relay inflate 64 MiB with no membership at all.
:class:`ResourceGuard` sits in front of RNS on each link it is attached to (wrapping that link
instance's ``receive``, which ``Transport`` calls for every link packet, so the inline receive
hook of ``hook.py`` and the packet-callback mode are both covered) and refuses, before
``Resource.accept`` runs, an advertisement that is not the kind this side expects (requests at
the relay, responses at a client), is compressed, carries metadata, is split into segments,
declares sizes over the limit, names an ``original_hash`` other than its own hash or one already
in transfer anywhere in the process, or would exceed the per-link or per-node number of inbound
transfers. A refusal is counted per reason and answered with RNS's own reject packet, so an
honest sender fails fast; an undecodable advertisement closes the link, as RNS itself does.

This relies on RNS internals; :func:`check_rns_internals` verifies them at start-up and raises
:class:`ResourceGuardUnavailable` with what changed, so a relay never runs unguarded.

Our own clients send large requests uncompressed (:func:`send_request`): ``Link.request`` would
bz2-compress them and the relay refuses compressed requests.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import RNS
from RNS.vendor import umsgpack

from .errors import ResourceGuardUnavailable
from .hook import _rns_version

log = logging.getLogger(__name__)

KIND_REQUEST = "request"
KIND_RESPONSE = "response"

# Refusal reasons (counter ``resource_refused_<reason>``). Stable strings: dashboards use them.
REFUSED_MALFORMED = "malformed"  # undecodable, wrong field types, inconsistent parts/hashmap/flags
REFUSED_UNEXPECTED = "unexpected"  # not the kind this side accepts (a response at the relay, ...)
REFUSED_UNCONFIRMED = "unconfirmed"  # the link has not confirmed its identity yet
REFUSED_COMPRESSED = "compressed"
REFUSED_METADATA = "metadata"
REFUSED_SPLIT = "split"
REFUSED_OVERSIZED = "oversized"  # declared t, d or part count above the limit
REFUSED_ORIGINAL_HASH = "original-hash"  # o != h, or o/h already in transfer in this process
REFUSED_LINK_BUSY = "link-busy"
REFUSED_NODE_BUSY = "node-busy"
REFUSED_GUARD_ERROR = "guard-error"  # a bug in the guard: fail closed, never raise into RNS

# Inbound Resources one link may have in transfer at once. A client has at most a few requests
# in flight (its events long poll, one session action, one application call), and RNS sends one
# outgoing Resource per link at a time anyway; 4 lets all of those be large, while one link
# still holds at most 4 x the request limit (1 MiB at the relay) in part buffers.
MAX_INBOUND_RESOURCES_PER_LINK = 4
# Inbound Resources across every guarded link of the process. Large requests are rare (a commit,
# a GroupInfo: a few per epoch change), so 16 at once is ample; at the relay's 256 KiB limit that
# bounds buffered parts at 4 MiB, ~12 MiB with the copies RNS makes while assembling, well inside
# the +32 MB a relay may grow under attack.
MAX_INBOUND_RESOURCES_PER_NODE = 16

# What RNS adds to a resource's data before cutting it into parts: a 4-byte random hash, then
# the link token's IV and HMAC (TOKEN_OVERHEAD) and up to one AES block of PKCS#7 padding.
TRANSFER_OVERHEAD = RNS.Resource.RANDOM_HASH_SIZE + RNS.Identity.TOKEN_OVERHEAD + RNS.Identity.AES128_BLOCKSIZE

# Resource flag bits as RNS packs them (ResourceAdvertisement: f = x<<5 | p<<4 | u<<3 | s<<2 | c<<1 | e).
_FLAG_ENCRYPTED = 0x01
_FLAG_COMPRESSED = 0x02
_FLAG_SPLIT = 0x04
_FLAG_REQUEST = 0x08
_FLAG_RESPONSE = 0x10
_FLAG_METADATA = 0x20

_HASH_LEN = RNS.Identity.HASHLENGTH // 8
_REQUEST_ID_LEN = RNS.Identity.TRUNCATED_HASHLENGTH // 8
_RANDOM_HASH_LEN = RNS.Resource.RANDOM_HASH_SIZE


@dataclass(frozen=True, slots=True)
class Advert:
    """The fields of a Resource advertisement the guard decides on, as RNS's ``accept`` reads them."""

    transfer_size: int  # t: bytes on the wire; RNS allocates ceil(t / sdu) part slots from it
    data_size: int  # d: declared size after assembly (the only field RNS checks)
    parts: int  # n
    hash: bytes  # h
    original_hash: bytes  # o: names the storage file
    flags: int  # f
    segment_index: int  # i
    segments: int  # l
    request_id: bytes | None  # q
    hashmap_entries: int  # map hashes carried in this advertisement

    @property
    def compressed(self) -> bool:
        return bool(self.flags & _FLAG_COMPRESSED)

    @property
    def kind(self) -> str | None:
        if self.request_id is None:
            return None
        if self.flags & _FLAG_REQUEST and not self.flags & _FLAG_RESPONSE:
            return KIND_REQUEST
        if self.flags & _FLAG_RESPONSE and not self.flags & _FLAG_REQUEST:
            return KIND_RESPONSE
        return None


class MalformedAdvert(ValueError):
    """An advertisement RNS would choke on (it tears the link down for these)."""


def parse_advert(plaintext: bytes) -> Advert:
    """Decode an advertisement with RNS's own parser and check the field types the guard relies on."""
    try:
        adv = RNS.ResourceAdvertisement.unpack(plaintext)
    except Exception as exc:  # umsgpack, KeyError, RNS's own ValueError for t > 3 MiB
        raise MalformedAdvert(f"undecodable advertisement: {type(exc).__name__}: {exc}") from None
    ints = {"t": adv.t, "d": adv.d, "n": adv.n, "f": adv.f, "i": adv.i, "l": adv.l}
    for name, value in ints.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedAdvert(f"field {name} is not a non-negative integer")
    for name, value, size in (("h", adv.h, _HASH_LEN), ("o", adv.o, _HASH_LEN), ("r", adv.r, _RANDOM_HASH_LEN)):
        if not isinstance(value, bytes) or len(value) != size:
            raise MalformedAdvert(f"field {name} is not {size} bytes")
    if not isinstance(adv.m, bytes) or len(adv.m) % RNS.Resource.MAPHASH_LEN:
        raise MalformedAdvert("hashmap is not a whole number of map hashes")
    if adv.q is not None and (not isinstance(adv.q, bytes) or len(adv.q) != _REQUEST_ID_LEN):
        raise MalformedAdvert("request id is not a truncated hash")
    return Advert(
        transfer_size=adv.t,
        data_size=adv.d,
        parts=adv.n,
        hash=adv.h,
        original_hash=adv.o,
        flags=adv.f,
        segment_index=adv.i,
        segments=adv.l,
        request_id=adv.q,
        hashmap_entries=len(adv.m) // RNS.Resource.MAPHASH_LEN,
    )


def link_sdu(link: Any) -> int:
    """The part size RNS's receiving ``Resource`` uses on ``link`` (its ``__init__`` computes the same)."""
    mtu = getattr(link, "mtu", None)
    if mtu:
        return int(mtu) - RNS.Reticulum.HEADER_MAXSIZE - RNS.Reticulum.IFAC_MIN_SIZE
    return int(getattr(link, "mdu", None) or RNS.Resource.SDU)


def max_transfer_size(max_data_size: int) -> int:
    """Largest honest ``t`` for an uncompressed resource of at most ``max_data_size`` bytes."""
    return max_data_size + TRANSFER_OVERHEAD


class NodeResources:
    """Every guarded link of this process: the per-node cap and the storage-file check span them all.

    RNS keeps a link's transfers in ``link.incoming_resources`` and removes them when they finish,
    fail or the link closes, so the live count is read from there: nothing here can leak a slot.
    """

    def __init__(self, storage_dir: Callable[[], str | None] | None = None) -> None:
        self._links: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._storage_dir = storage_dir or (lambda: getattr(RNS.Reticulum, "resourcepath", None))

    def add(self, link: Any) -> None:
        with self._lock:
            self._links.add(link)

    def in_transfer(self) -> list[Any]:
        """Inbound resources of every guarded link that is not closed."""
        closed = RNS.Link.CLOSED
        with self._lock:
            links = list(self._links)
        out: list[Any] = []
        for link in links:
            if getattr(link, "status", closed) != closed:
                out.extend(list(link.incoming_resources))
        return out

    def storage_in_use(self, original_hash: bytes) -> bool:
        """Whether RNS's storage file for ``original_hash`` exists (a transfer is assembling into it)."""
        base = self._storage_dir()
        if not base:
            return False
        path = os.path.join(base, original_hash.hex())
        return os.path.exists(path) or os.path.exists(path + ".meta")


# The process's one registry: RNS's storage directory is per process, so the cap is too.
NODE = NodeResources()

Rejector = Callable[[Any, bytes], None]


def _send_reject(link: Any, resource_hash: bytes) -> None:
    """RNS's reject (``Resource.reject``): tells an honest sender to stop at once."""
    RNS.Packet(link, resource_hash, context=RNS.Packet.RESOURCE_RCL).send()


class ResourceGuard:
    """Admits or refuses each Resource advertisement on the links it is attached to.

    ``kind`` is what this side accepts (``request`` at a relay, ``response`` at a client);
    ``max_size`` the largest declared data size (the relay's request limit, a client's response
    limit). ``may_transfer(link)`` is asked last for request links (the relay admits large
    requests only from links that confirmed their identity). Thread-safe; RNS calls it from its
    single inbound worker.
    """

    def __init__(
        self,
        kind: str,
        max_size: int,
        *,
        may_transfer: Callable[[Any], bool] | None = None,
        per_link: int = MAX_INBOUND_RESOURCES_PER_LINK,
        per_node: int = MAX_INBOUND_RESOURCES_PER_NODE,
        node: NodeResources = NODE,
        reject: Rejector = _send_reject,
    ) -> None:
        if kind not in (KIND_REQUEST, KIND_RESPONSE):
            raise ValueError(f"unknown advertisement kind {kind!r}")
        if max_size > RNS.Resource.MAX_EFFICIENT_SIZE:
            raise ValueError("max_size must fit one RNS Resource segment (split resources are refused)")
        self.kind = kind
        self.max_size = max_size
        self.may_transfer = may_transfer
        self.per_link = per_link
        self.per_node = per_node
        self._node = node
        self._reject = reject
        self._counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    # ---- wiring ----------------------------------------------------------------------------

    def attach(self, link: Any) -> None:
        """Check every Resource advertisement on ``link`` before RNS handles it.

        Shadows ``receive`` on this link instance only; every other packet goes to the previous
        ``receive`` untouched. Attach before ``hook.attach_receiver`` or after: both compose.
        """
        check_rns_internals()
        self._node.add(link)
        original = link.receive
        adv_context = RNS.Packet.RESOURCE_ADV

        def receive(packet: Any) -> None:
            if packet.context == adv_context and not self.admit(link, packet):
                return
            original(packet)

        link.receive = receive

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    # ---- the decision ----------------------------------------------------------------------

    def admit(self, link: Any, packet: Any) -> bool:
        """True to let RNS handle this advertisement packet; False when it was refused (and rejected)."""
        try:
            plaintext = link.decrypt(packet.data)
            if plaintext is None:
                return True  # not for this link's keys: RNS drops it without allocating anything
            try:
                advert = parse_advert(plaintext)
            except MalformedAdvert as exc:
                self._count(f"resource_refused_{REFUSED_MALFORMED}")
                log.info("link %s: %s; closing it", _hex(link), exc)
                link.teardown()
                return False
            reason = self.refusal(link, advert)
        except Exception:
            log.exception("resource guard failed; refusing the advertisement")
            self._count(f"resource_refused_{REFUSED_GUARD_ERROR}")
            return False
        if reason is None:
            self._count("resource_accepted")
            return True
        self._count(f"resource_refused_{reason}")
        log.info(
            "link %s: refused %s advertisement (%s): t=%d d=%d n=%d l=%d flags=%#x",
            _hex(link), advert.kind, reason, advert.transfer_size, advert.data_size, advert.parts,
            advert.segments, advert.flags,
        )
        try:
            self._reject(link, advert.hash)
        except Exception:
            log.debug("could not send the reject", exc_info=True)
        return False

    def refusal(self, link: Any, advert: Advert) -> str | None:
        """Why ``advert`` on ``link`` is refused, or None to admit it (no side effects)."""
        if advert.kind != self.kind:
            return REFUSED_UNEXPECTED
        if not advert.flags & _FLAG_ENCRYPTED:
            return REFUSED_MALFORMED  # RNS always encrypts link resources
        if self.may_transfer is not None and not self.may_transfer(link):
            return REFUSED_UNCONFIRMED
        if advert.compressed:
            return REFUSED_COMPRESSED
        if advert.flags & _FLAG_METADATA:
            return REFUSED_METADATA
        if advert.flags & _FLAG_SPLIT or advert.segments != 1 or advert.segment_index != 1:
            return REFUSED_SPLIT
        sdu = link_sdu(link)
        max_t = max_transfer_size(self.max_size)
        if (
            advert.data_size > self.max_size
            or advert.transfer_size > max_t
            or advert.parts > math.ceil(max_t / sdu)
        ):
            return REFUSED_OVERSIZED
        slots = math.ceil(advert.transfer_size / sdu)
        if (
            advert.transfer_size == 0
            or advert.parts != slots
            or not 0 < advert.hashmap_entries <= min(slots, RNS.ResourceAdvertisement.HASHMAP_MAX_LEN)
        ):
            return REFUSED_MALFORMED  # would raise inside Resource.accept and strand the transfer
        if advert.original_hash != advert.hash:
            return REFUSED_ORIGINAL_HASH  # only later segments of a split resource differ
        in_transfer = self._node.in_transfer()
        if any(advert.hash in (r.hash, r.original_hash) for r in in_transfer) or self._node.storage_in_use(
            advert.original_hash
        ):
            return REFUSED_ORIGINAL_HASH
        if len(link.incoming_resources) >= self.per_link:
            return REFUSED_LINK_BUSY
        if len(in_transfer) >= self.per_node:
            return REFUSED_NODE_BUSY
        return None


def _hex(link: Any) -> str:
    link_id = getattr(link, "link_id", None)
    return link_id.hex() if isinstance(link_id, bytes) else "?"


# ---- sending requests without compression ----------------------------------------------------


def send_request(
    link: RNS.Link,
    path: str,
    data: Any,
    *,
    response_callback: Callable[[RNS.RequestReceipt], None],
    failed_callback: Callable[[RNS.RequestReceipt], None],
    timeout: float,
    max_response_size: int,
) -> RNS.RequestReceipt | bool:
    """``link.request`` for our clients, with a large request sent as an *uncompressed* Resource.

    A request that fits one packet goes through ``Link.request`` unchanged. A larger one is what
    ``Link.request`` does (same packing, same request id, same receipt), except that its Resource
    is not bz2-compressed: the relay refuses compressed requests, because RNS inflates them
    without regard to the declared size.
    """
    check_rns_internals()
    packed = umsgpack.packb([time.time(), RNS.Identity.truncated_hash(path.encode("utf-8")), data])
    if len(packed) <= link.mdu:
        return link.request(
            path, data, response_callback=response_callback, failed_callback=failed_callback,
            timeout=timeout, max_response_size=max_response_size,
        )
    request_id = RNS.Identity.truncated_hash(packed)
    resource = RNS.Resource(packed, link, request_id=request_id, is_response=False, timeout=timeout, auto_compress=False)
    return RNS.RequestReceipt(
        link, resource=resource, response_callback=response_callback, failed_callback=failed_callback,
        timeout=timeout, request_size=len(packed), max_response_size=max_response_size,
    )


# ---- start-up self-test ----------------------------------------------------------------------

_checked: list[bool] = []
_check_lock = threading.Lock()


def check_rns_internals() -> None:
    """Verify the RNS internals the guard and :func:`send_request` rely on; raise if they changed.

    Run once per process (cheap: source inspection and one advertisement round trip). The error
    says what is missing; the fix is to re-read the new RNS and adapt this module, not to run
    without it.
    """
    with _check_lock:
        if _checked:
            return
        problems = _internals_problems()
        if problems:
            version = ".".join(map(str, _rns_version()))
            raise ResourceGuardUnavailable(
                f"rns {version}: the Resource advertisement guard cannot run, RNS internals changed: "
                + "; ".join(problems)
            )
        _checked.append(True)


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _internals_problems() -> list[str]:
    problems: list[str] = []

    def need(text: str, where: str, source: str) -> None:
        if text not in source:
            problems.append(f"{where} no longer contains {text!r}")

    # Intercepting link.receive sees every advertisement before Resource.accept.
    need("link.receive(packet)", "Transport._inbound", _source(getattr(RNS.Transport, "_inbound", None)))
    link_receive = _source(getattr(RNS.Link, "_Link__receive", None))
    need("RNS.Packet.RESOURCE_ADV", "Link.__receive", link_receive)
    need("RNS.Resource.accept(packet", "Link.__receive", link_receive)
    need("self.incoming_resources", "Link", _source(RNS.Link.__init__))
    # What accept trusts from the advertisement, and where it stores the data.
    accept = _source(getattr(RNS.Resource, "accept", None))
    for text in (
        "ResourceAdvertisement.unpack(advertisement_packet.plaintext)",
        "resource.size                 = adv.t",
        "resource.original_hash        = adv.o",
        "resource.hash                 = adv.h",
        "resource.total_parts          = int(math.ceil(resource.size/float(resource.sdu)))",
        "resourcepath+\"/\"+resource.original_hash.hex()",
        "resource.hashmap_update(0, resource.hashmap_raw)",
    ):
        need(text, "Resource.accept", accept)
    need("self.link.mtu - RNS.Reticulum.HEADER_MAXSIZE - RNS.Reticulum.IFAC_MIN_SIZE", "Resource.__init__",
         _source(RNS.Resource.__init__))
    # The advertisement fields and flag bits, round-tripped through RNS's own packer and parser.
    try:
        fake = _FakeResource()
        adv = RNS.ResourceAdvertisement.unpack(RNS.ResourceAdvertisement(fake, request_id=fake.request_id).pack())
        got = (adv.t, adv.d, adv.n, adv.h, adv.o, adv.i, adv.l, adv.q, adv.m, adv.c, adv.s, adv.x, adv.u, adv.p, adv.e)
        want = (fake.size, fake.total_size, 1, fake.hash, fake.original_hash, 1, 1, fake.request_id, fake.hashmap,
                True, False, False, True, False, True)
        if got != want:
            problems.append("ResourceAdvertisement fields or flags no longer round-trip as read here")
        advert = parse_advert(RNS.ResourceAdvertisement(fake, request_id=fake.request_id).pack())
        if advert.kind != KIND_REQUEST or not advert.compressed or advert.flags & _FLAG_SPLIT:
            problems.append("ResourceAdvertisement flag bits moved")
    except Exception as exc:
        problems.append(f"ResourceAdvertisement round trip failed: {type(exc).__name__}: {exc}")
    # transport/client.py wraps Link.handle_response per link and reads Link.pending_requests (the
    # early-response race of Link.request, see _guard_early_responses there).
    need("for pending_request in self.pending_requests", "Link.handle_response",
         _source(getattr(RNS.Link, "handle_response", None)))
    need("self.pending_requests", "Link.__init__", _source(RNS.Link.__init__))
    # send_request mirrors Link.request's packing and receipt.
    need("[time.time(), request_path_hash, data]", "Link.request", _source(RNS.Link.request))
    for cls, names in (
        (RNS.Resource, ("data", "link", "auto_compress", "timeout", "request_id", "is_response")),
        (RNS.RequestReceipt, ("link", "resource", "response_callback", "failed_callback", "timeout",
                              "request_size", "max_response_size")),
    ):
        try:
            params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        missing = [n for n in names if n not in params]
        if missing:
            problems.append(f"{cls.__name__}.__init__ lacks {', '.join(missing)}")
    return problems


class _FakeResource:
    """What ``ResourceAdvertisement.__init__`` reads from a resource: a compressed request."""

    size = 1234
    total_size = 5678
    parts = [None]
    hash = bytes(range(32))
    random_hash = b"\x01\x02\x03\x04"
    original_hash = bytes(range(32))
    hashmap = b"\xaa\xbb\xcc\xdd"
    compressed = True
    encrypted = True
    split = False
    has_metadata = False
    segment_index = 1
    total_segments = 1
    request_id = bytes(16)
    is_response = False
