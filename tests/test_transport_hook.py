"""The inbound-worker receive hook: detection, fallback, and what it does to a link (with fakes)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import RNS

from ciris_av_plugin.transport import hook


class FakeLink:
    def __init__(self) -> None:
        self.status = RNS.Link.ACTIVE
        self.attached_interface = object()
        self.last_inbound = self.last_data = 0.0
        self.rx = self.rxbytes = 0
        self.original_calls: list[object] = []
        self.callback = None

    def receive(self, packet: object) -> None:
        self.original_calls.append(packet)

    def decrypt(self, data: bytes) -> bytes | None:
        return None if data.startswith(b"bad") else b"plain:" + data

    def set_packet_callback(self, cb: object) -> None:
        self.callback = cb


def _packet(link: FakeLink, data: bytes, *, context: int = RNS.Packet.NONE, ptype: int = RNS.Packet.DATA, iface=None):
    return SimpleNamespace(
        packet_type=ptype, context=context, data=data,
        receiving_interface=link.attached_interface if iface is None else iface,
    )


def test_installed_rns_supports_the_inline_hook() -> None:
    ok, why = hook.inline_receive_available()
    assert ok, why
    assert hook.resolve_mode("auto") == hook.MODE_INLINE
    assert hook.resolve_mode("callback") == hook.MODE_CALLBACK


def test_unsupported_rns_version_falls_back_to_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hook, "_rns_version", lambda: (1, 6, 0))
    ok, why = hook.inline_receive_available()
    assert not ok and "outside" in why
    assert hook.resolve_mode("inline") == hook.MODE_CALLBACK
    assert hook.resolve_mode("auto") == hook.MODE_CALLBACK


@pytest.mark.parametrize("setting, value", [("USE_INBOUND_QUEUE", False), ("TRANSPORT_WORKERS", 2)])
def test_several_inbound_threads_fall_back_to_callback(monkeypatch: pytest.MonkeyPatch, setting: str,
                                                       value: object) -> None:
    monkeypatch.setattr(RNS.Transport, setting, value)
    ok, why = hook.inline_receive_available()
    assert not ok and setting in why
    assert hook.resolve_mode("auto") == hook.MODE_CALLBACK


def test_the_checked_rns_range_is_the_pinned_one() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if d.startswith("rns")]
    low, high = hook.SUPPORTED_RNS
    assert pins == [f"rns>={'.'.join(map(str, low))},<{'.'.join(map(str, high[:2]))}"]
    assert low <= hook._rns_version() < high  # noqa: SLF001 - the installed rns is in the range


def test_inline_hook_delivers_data_and_passes_everything_else_on() -> None:
    link = FakeLink()
    got: list[bytes] = []
    hook.attach_receiver(link, got.append, hook.MODE_INLINE)  # type: ignore[arg-type]
    link.status = RNS.Link.STALE
    link.receive(_packet(link, b"one"))
    assert got == [b"plain:one"]
    assert link.status == RNS.Link.ACTIVE and link.rx == 1 and link.rxbytes == 3 and link.last_inbound > 0
    request = _packet(link, b"req", context=RNS.Packet.REQUEST)
    link.receive(request)
    assert link.original_calls == [request], "requests go to RNS's own handling"
    link.receive(_packet(link, b"bad"))  # fails link decryption: dropped silently
    link.receive(_packet(link, b"x", iface=object()))  # wrong interface: dropped
    assert got == [b"plain:one"]
    link.status = RNS.Link.CLOSED
    link.receive(_packet(link, b"late"))
    assert got == [b"plain:one"]


def test_handler_exceptions_do_not_escape_into_rns() -> None:
    link = FakeLink()

    def boom(_data: bytes) -> None:
        raise RuntimeError("bug")

    hook.attach_receiver(link, boom, hook.MODE_INLINE)  # type: ignore[arg-type]
    link.receive(_packet(link, b"x"))  # must not raise
    hook.attach_receiver(link, boom, hook.MODE_CALLBACK)  # type: ignore[arg-type]
    assert link.callback is not None
    link.callback(b"x", None)  # must not raise either


def test_congestion_probe_says_stop_before_a_blocking_write_would_block() -> None:
    """The inline sender's guarantee: while the probe says go, a write to the socket cannot block."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    try:
        sender.settimeout(2.0)  # a write that blocks would raise here instead of hanging the test
        link = SimpleNamespace(attached_interface=SimpleNamespace(socket=sender))
        probe = hook.congestion_probe(link)  # type: ignore[arg-type]
        assert probe is not None
        chunk = bytes(16 * 1024)
        written = 0
        while not probe(len(chunk)):
            sender.sendall(chunk)  # never reads on the other side
            written += len(chunk)
            assert written < 64 * 1024 * 1024, "probe never reported congestion"
        assert written > 0
        # Draining the receiver frees room again (after the probe's next real look).
        receiver.setblocking(False)
        try:
            while receiver.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        import time

        deadline = time.monotonic() + 20  # loopback drains in milliseconds; 20 s only if it never does
        while probe(len(chunk)) and time.monotonic() < deadline:
            try:
                receiver.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.01)
        assert not probe(len(chunk))
    finally:
        for s in (sender, receiver, server):
            s.close()


def test_congestion_probe_needs_a_tcp_socket() -> None:
    assert hook.congestion_probe(SimpleNamespace(attached_interface=SimpleNamespace())) is None  # type: ignore[arg-type]
    assert hook.congestion_probe(SimpleNamespace()) is None  # type: ignore[arg-type]
