"""A stand-in for ``transport.relay.RelayNode`` so the plugin's relay dispatcher runs without RNS.

Unit tests may not start RNS (one instance per process; the real one runs in
``integration/test_hooks_integration.py``). The fake offers what the dispatcher and the real
``DeliveryPlane`` use from a relay node, so everything else the dispatcher builds is real: the
forwarding engine, the delivery service, the directory and the SQLite store.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

FAKE_DESTINATION = b"\xab" * 16


class FakeRelayNode:
    instances: list[FakeRelayNode] = []

    def __init__(self, identity: Any, engine: Any) -> None:
        self.identity = identity
        # RelayNode takes an engine or a factory of on_pending; mirror that.
        self.engine = engine if hasattr(engine, "receive_packet") else engine(lambda link_id: None)
        self.handlers: dict[str, Any] = {}
        self.authorize_role: Any = None
        self.started = self.stopped = False
        FakeRelayNode.instances.append(self)

    def add_request_handler(self, path: str, fn: Any) -> None:
        assert not self.started, "handlers are registered before start()"
        self.handlers[path] = fn

    def clock(self) -> float:
        return time.monotonic()

    def links(self, role: str | None = None) -> list[bytes]:
        return []

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    @property
    def destination_hash(self) -> bytes:
        return FAKE_DESTINATION

    def counters(self) -> dict[str, int]:
        return {"links": 0}

    def engine_stats(self) -> dict[str, Any]:
        return self.engine.stats()


def install_fake_relay(monkeypatch: pytest.MonkeyPatch) -> type[FakeRelayNode]:
    import ciris_av_plugin.transport.relay as transport_relay

    FakeRelayNode.instances = []
    monkeypatch.setattr(transport_relay, "RelayNode", FakeRelayNode)
    return FakeRelayNode
