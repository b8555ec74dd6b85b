"""The embedded node's lifecycle with RNS faked out (one RNS per process: the real one runs in
``integration/test_hooks_integration.py``)."""

from __future__ import annotations

import os
import signal
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from support_plugin import FAKE_DESTINATION, FakeRelayNode, install_fake_relay

from ciris_av_plugin import host
from ciris_av_plugin.config import Config, ConfigError, HostPort, parse_config
from ciris_av_plugin.errors import RelayError
from ciris_av_plugin.hookspecs import hookimpl
from ciris_av_plugin.plugins import make_plugin_manager


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """No RNS instance: record start_rns calls and fake the relay node (all else is real)."""
    started: list[Config] = []
    install_fake_relay(monkeypatch)
    monkeypatch.setattr(host, "start_rns", lambda config: started.append(config) or "reticulum")
    return started


def node_config(tmp_path: Path, **av: Any) -> Config:
    return parse_config({"realtime_av": {"enabled": True, **av}, "node": {"data_dir": str(tmp_path / "data")}})


def test_lifecycle_identity_rns_dispatchers_status_stop(fakes: list[Config], tmp_path: Path) -> None:
    config = node_config(tmp_path)
    node = host.FabricNode(config)
    context = node.start()
    assert fakes == [config], "RNS started once, from the node's configuration"
    assert context.reticulum == "reticulum" and context.config is config
    assert node.stored_identity is not None and context.identity.hash == node.stored_identity.hash
    key_file = tmp_path / "data" / "identities" / "node"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (relay,) = FakeRelayNode.instances
    assert relay.started and relay.identity is context.identity
    assert [d.name for d in node.dispatchers] == ["realtime_av.relay"]
    assert [h.name for h in node.welcome_handlers] == ["realtime_av.mls"]
    status = node.status()
    assert status["identity"] == node.stored_identity.hexhash
    assert status["plugins"][0]["dispatchers"]["realtime_av.relay"]["destination"] == FAKE_DESTINATION.hex()
    node.stop()
    assert relay.stopped and context.shutdown.is_set()
    node.stop()  # idempotent

    again = host.FabricNode(config)
    again.start()
    try:
        assert again.stored_identity == node.stored_identity, "the node keeps its identity across restarts"
    finally:
        again.stop()


def test_disabled_node_starts_rns_but_registers_nothing(fakes: list[Config], tmp_path: Path) -> None:
    config = parse_config({"node": {"data_dir": str(tmp_path / "data")}})
    node = host.FabricNode(config)
    node.start()
    node.stop()
    assert node.dispatchers == [] and node.welcome_handlers == [] and FakeRelayNode.instances == []


class _Failing:
    name = "test.failing"

    def start(self, context: Any) -> None:
        raise RelayError("cannot start")

    def stop(self) -> None:
        raise AssertionError("a dispatcher that never started is not stopped")

    def status(self) -> dict[str, Any]:
        return {}


class _FailingPlugin:
    @hookimpl(trylast=True)  # registered after the relay, so the relay has started when this fails
    def register_av_dispatchers(self, register: Any, config: Config) -> None:
        register(_Failing())


def test_a_failing_start_stops_what_already_started(fakes: list[Config], tmp_path: Path) -> None:
    pm = make_plugin_manager()
    pm.register(_FailingPlugin(), name="failing")
    node = host.FabricNode(node_config(tmp_path), pm=pm)
    with pytest.raises(RelayError, match="cannot start"):
        node.start()
    (relay,) = FakeRelayNode.instances
    assert relay.started and relay.stopped


def test_run_node_returns_0_after_shutdown_and_1_on_failure(fakes: list[Config], tmp_path: Path) -> None:
    seen: list[host.FabricNode] = []

    def on_ready(node: host.FabricNode) -> None:
        seen.append(node)
        assert node.context is not None
        node.context.shutdown.set()

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(host.run_node(host.FabricNode(node_config(tmp_path)), on_ready=on_ready)))
    thread.start()
    thread.join(10)
    assert result == [0] and len(seen) == 1 and FakeRelayNode.instances[0].stopped

    bad = parse_config({"realtime_av": {"enabled": True}, "node": {"data_dir": str(tmp_path / "data"), "identity": "other"}})
    (tmp_path / "data" / "identities").chmod(0o777)  # the store refuses: run_node reports failure
    assert host.run_node(host.FabricNode(bad)) == 1


def test_from_settings_goes_through_the_configure_hook(tmp_path: Path) -> None:
    node = host.FabricNode.from_settings({"realtime_av": {"enabled": True}, "node": {"data_dir": str(tmp_path)}})
    assert node.config.realtime_av.enabled and node.config.node.data_dir == tmp_path


def test_stop_signals_set_the_shutdown_event() -> None:
    shutdown = threading.Event()
    saved = {sig: signal.getsignal(sig) for sig in host.STOP_SIGNALS}
    try:
        host.install_stop_signals(shutdown)
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.wait(2)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_rns_config_has_the_listener_and_every_bootstrap_peer(tmp_path: Path) -> None:
    from RNS.vendor.configobj import ConfigObj

    from ciris_av_plugin.transport.config import NodeConfig, write_config

    peers = (HostPort("127.0.0.1", 5001), HostPort("127.0.0.2", 5002))
    path = write_config(tmp_path / "rns", host._WithPeers(NodeConfig(listen_port=4242, host="127.0.0.1"), peers))
    cfg = ConfigObj(str(path))  # parsed the way RNS parses it
    assert cfg["reticulum"]["share_instance"] == "No"
    interfaces = cfg["interfaces"]
    servers = [i for i in interfaces.values() if i["type"] == "TCPServerInterface"]
    clients = [i for i in interfaces.values() if i["type"] == "TCPClientInterface"]
    assert [(s["listen_ip"], s["listen_port"]) for s in servers] == [("127.0.0.1", "4242")]
    assert [(c["target_host"], c["target_port"]) for c in clients] == [("127.0.0.1", "5001"), ("127.0.0.2", "5002")]


def test_load_settings_layers_defaults_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[realtime_av]\nenabled = false\nroles = ['watch']\n")
    defaults = {"realtime_av.enabled": True, "realtime_av.max_subscribers_per_stream": 9}
    config = parse_config(host.load_settings(path, defaults=defaults))
    assert not config.realtime_av.enabled, "the file beats the defaults"
    assert config.realtime_av.max_subscribers_per_stream == 9
    config = parse_config(host.load_settings(path, defaults=defaults, overrides={"realtime_av.enabled": True}))
    assert config.realtime_av.enabled and config.realtime_av.roles == ("watch",)
    assert parse_config(host.load_settings(None, defaults=defaults)).realtime_av.enabled


def test_from_settings_refuses_a_bad_config_through_the_hook() -> None:
    with pytest.raises(ConfigError, match=r"unknown configuration key 'node\.identiy'; did you mean 'node\.identity'\?"):
        host.FabricNode.from_settings({"node.identiy": "x"})
