"""The inbound-worker receive hook: detection, fallback, and what it does to a link (with fakes)."""

from __future__ import annotations

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
