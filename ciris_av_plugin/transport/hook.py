"""Receiving link packets: inside RNS's inbound worker when we can, else the packet callback.

``Link.set_packet_callback`` starts one thread per packet (~60-80 µs each, out of order under
load; ARCHITECTURE.md "Reticulum facts"). RNS's single inbound worker already decrypts nothing
for us but calls ``link.receive(packet)`` for every link packet; replacing ``receive`` on our
link *instances* lets us decrypt and hand the plaintext on in that thread, in order, with no
thread start. This is undocumented RNS behaviour, so:

* it is used only on the rns versions it was read against (``SUPPORTED_RNS``, matching the
  ``rns>=1.5.7,<1.6`` pin) and only when the attributes and call sites it relies on are present
  (:func:`inline_receive_available` checks at start-up), and only while RNS drains its inbound
  queue with one worker thread (so handlers run on one thread, in arrival order);
* every other packet (requests, responses, identify, keepalives, link close, resources) is passed
  to the original ``Link.receive`` untouched (or to ``resource_guard``'s wrapper of it, attached
  first, which refuses hostile Resource advertisements before RNS sees them);
* otherwise we fall back to the packet callback, which the tests exercise too.

Handlers must be short: they run in the one thread that feeds every link of the process.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable

import RNS

log = logging.getLogger(__name__)

MODE_INLINE = "inline"
MODE_CALLBACK = "callback"
MODE_AUTO = "auto"

# The rns releases whose Link/Transport internals this hook was checked against.
SUPPORTED_RNS = ((1, 5, 7), (1, 6, 0))

# What the hook touches on an RNS.Link instance, and what must call it.
_LINK_ATTRIBUTES = ("status", "attached_interface", "last_inbound", "last_data", "rx", "rxbytes")

PacketHandler = Callable[[bytes], None]


def _rns_version() -> tuple[int, ...]:
    try:
        from RNS._version import __version__
    except ImportError:  # pragma: no cover - every 1.x release has it
        return (0,)
    parts = []
    for piece in __version__.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def inline_receive_available() -> tuple[bool, str]:
    """Whether the inbound-worker hook can be used with the installed rns, and why not."""
    version = _rns_version()
    low, high = SUPPORTED_RNS
    if not low <= version < high:
        return False, f"rns {'.'.join(map(str, version))} outside the checked range"
    try:
        inbound_src = inspect.getsource(RNS.Transport._inbound)
        receive_src = inspect.getsource(RNS.Link._Link__receive)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError) as exc:
        return False, f"cannot inspect RNS internals: {exc}"
    if "link.receive(packet)" not in inbound_src:
        return False, "Transport._inbound no longer dispatches through link.receive"
    for attr in _LINK_ATTRIBUTES + ("self.decrypt(packet.data)",):
        name = attr if attr.startswith("self.") else f"self.{attr}"
        if name not in receive_src:
            return False, f"Link.__receive no longer uses {name}"
    if not hasattr(RNS.Packet, "NONE") or not hasattr(RNS.Packet, "DATA"):
        return False, "RNS.Packet constants changed"
    # Handlers assume one thread calls them, in arrival order: RNS's inbound queue drained by a
    # single worker. With the queue off, every interface's reader thread would call them at once.
    if getattr(RNS.Transport, "USE_INBOUND_QUEUE", None) is not True:
        return False, "RNS.Transport.USE_INBOUND_QUEUE is off: packets would arrive on several threads"
    if getattr(RNS.Transport, "TRANSPORT_WORKERS", None) != 1:
        return False, "RNS.Transport.TRANSPORT_WORKERS is not 1: packets would arrive on several threads"
    return True, "ok"


def resolve_mode(requested: str) -> str:
    """Turn ``auto``/``inline``/``callback`` into the mode actually used (logging a fallback)."""
    if requested == MODE_CALLBACK:
        return MODE_CALLBACK
    ok, why = inline_receive_available()
    if ok:
        return MODE_INLINE
    if requested == MODE_INLINE:
        log.warning("inline receive requested but unavailable (%s); using the packet callback", why)
    else:
        log.info("inline receive unavailable (%s); using the packet callback", why)
    return MODE_CALLBACK


def attach_receiver(link: RNS.Link, handler: PacketHandler, mode: str) -> None:
    """Deliver every plain data packet's plaintext on ``link`` to ``handler``.

    ``mode`` must come from :func:`resolve_mode`. Exceptions from ``handler`` are logged and
    swallowed: one bad packet must not kill RNS's inbound worker.
    """
    if mode == MODE_INLINE:
        _attach_inline(link, handler)
    else:

        def on_packet(data: bytes, packet: RNS.Packet) -> None:
            try:
                handler(data)
            except Exception:
                log.exception("packet handler failed")

        link.set_packet_callback(on_packet)


def _attach_inline(link: RNS.Link, handler: PacketHandler) -> None:
    original = link.receive
    data_type, plain_context = RNS.Packet.DATA, RNS.Packet.NONE
    closed, stale, active = RNS.Link.CLOSED, RNS.Link.STALE, RNS.Link.ACTIVE

    def receive(packet: RNS.Packet) -> None:
        if packet.packet_type != data_type or packet.context != plain_context:
            original(packet)
            return
        if link.status == closed or packet.receiving_interface is not link.attached_interface:
            return
        # The bookkeeping Link.__receive does for every packet: liveness for the watchdog
        # (a link with no inbound for stale_time is torn down) and the counters.
        now = time.time()
        link.last_inbound = now
        link.last_data = now
        link.rx += 1
        link.rxbytes += len(packet.data)
        if link.status == stale:
            link.status = active
        plaintext = link.decrypt(packet.data)
        if plaintext is None:
            return
        try:
            handler(plaintext)
        except Exception:
            log.exception("inline packet handler failed")

    link.receive = receive  # shadows the class method for this instance only


# ---- congestion probe --------------------------------------------------------------------------

# A link counts as congested when its TCP send queue would pass this share of the socket's send
# buffer. Linux blocks a writer only when the queue reaches the whole buffer (sk_wmem_queued >
# sk_sndbuf), and counts queued memory with some per-segment overhead, so half leaves a wide margin.
# On loopback the autotuned buffer is ~4 MB, far more than 2 Mbit/s of media for the 300 ms it
# takes the relay to declare a silent subscriber stalled.
CONGESTED_SHARE = 0.5

# Bytes of other writers' traffic (RNS keepalives, request responses) assumed between probes.
PROBE_SLACK = 64 * 1024

CongestionProbe = Callable[[int], bool]


def congestion_probe(link: RNS.Link) -> CongestionProbe | None:
    """A cheap ``would_block(nbytes)`` test for the TCP socket under ``link``, or None.

    Uses the kernel's unsent-bytes count (``SIOCOUTQ``, Linux) and ``SO_SNDBUF`` of the socket of
    the link's attached RNS TCP interface. None when the link is not on such an interface or the
    platform lacks the ioctl: the caller then sends from a thread per link instead.
    """
    try:
        import fcntl
        import socket as socketlib
        import struct
        import termios

        outq_req = termios.TIOCOUTQ  # == SIOCOUTQ on Linux
    except (ImportError, AttributeError):
        return None
    sock = getattr(getattr(link, "attached_interface", None), "socket", None)
    if not isinstance(sock, socketlib.socket) or sock.type != socketlib.SOCK_STREAM:
        return None
    zero = b"\0\0\0\0"
    unpack = struct.Struct("i").unpack
    sol, sndbuf_opt = socketlib.SOL_SOCKET, socketlib.SO_SNDBUF
    # Room measured at the last probe minus what was asked for since: the queue only grows by
    # what is written, so while this stays positive no syscall is needed (RNS's own small writes
    # on the link, keepalives and responses, are covered by PROBE_SLACK).
    budget = [0]

    def would_block(nbytes: int) -> bool:
        if budget[0] > nbytes + PROBE_SLACK:
            budget[0] -= nbytes
            return False
        try:
            fd = sock.fileno()
            if fd < 0:
                return True
            (queued,) = unpack(fcntl.ioctl(fd, outq_req, zero))
            room = int(sock.getsockopt(sol, sndbuf_opt) * CONGESTED_SHARE) - queued
        except OSError:
            return True  # a closed or broken socket: do not write to it
        budget[0] = room // 2  # re-probe after half the room is used
        if room < nbytes:
            return True
        budget[0] -= nbytes
        return False

    try:
        would_block(0)
    except Exception:
        return None
    return would_block
