"""The hook contract, driven by a minimal test host that is not ``host.py``.

The host here does only what ``hookspecs.py`` says a host does, loading the plugin the way any
host would: ``pm.load_setuptools_entrypoints("ciris_fabric")``. RNS is replaced by a fake relay
node (unit tests have no network); ``integration/test_hooks_integration.py`` runs the real one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import pytest
from support_plugin import FakeRelayNode, install_fake_relay

from ciris_av_plugin import hookspecs, plugin
from ciris_av_plugin.config import Config, ConfigError
from ciris_av_plugin.context import Dispatcher, NodeContext, WelcomeHandler
from ciris_av_plugin.errors import AVError
from ciris_av_plugin.plugins import make_plugin_manager
from ciris_av_plugin.store.identity import IdentityStore


def entry_point_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("ciris_fabric")
    pm.add_hookspecs(hookspecs)
    loaded = pm.load_setuptools_entrypoints("ciris_fabric")
    assert loaded >= 1, "the ciris_fabric entry point is not installed"
    return pm


@dataclass
class TestHost:
    """Follows the lifecycle in hookspecs.py: configure, register, start, status, stop."""

    __test__ = False  # not a pytest class

    pm: pluggy.PluginManager
    dispatchers: list[Any] = field(default_factory=list)
    handlers: list[Any] = field(default_factory=list)
    context: NodeContext | None = None

    def configure(self, settings: dict[str, Any]) -> Config:
        return self.pm.hook.realtime_av_configure(settings=settings)

    def register(self, config: Config) -> None:
        self.pm.hook.register_av_dispatchers(register=self.dispatchers.append, config=config)
        self.pm.hook.register_welcome_handlers(register=self.handlers.append, config=config)

    def start(self, config: Config, identity: Any, data_dir: Path) -> None:
        self.context = NodeContext(
            reticulum=object(), identity=identity, identity_store=IdentityStore(data_dir), config=config
        )
        for dispatcher in self.dispatchers:
            dispatcher.start(self.context)
        self.pm.hook.realtime_av_node_started(context=self.context)

    def stop(self) -> None:
        self.pm.hook.realtime_av_node_stopping()
        for dispatcher in reversed(self.dispatchers):
            dispatcher.stop()


@dataclass
class FakeIdentity:
    hash: bytes = b"\x01" * 16


@pytest.fixture
def fake_transport(monkeypatch: pytest.MonkeyPatch) -> type[FakeRelayNode]:
    return install_fake_relay(monkeypatch)


PEER_RELAY = b"\x07" * 16
ENABLED = {"realtime_av": {"enabled": True, "roles": ["relay"]}}


def test_entry_point_loads_the_plugin_module_and_its_hooks_match_the_specs() -> None:
    pm = entry_point_manager()
    assert pm.get_plugin("realtime_av") is plugin
    pm.check_pending()  # every hookimpl has a hookspec with compatible arguments
    implemented = {impl.function.__name__ for caller in pm.get_hookcallers(plugin) or [] for impl in caller.get_hookimpls()}
    assert implemented == {
        "realtime_av_configure",
        "register_av_dispatchers",
        "register_welcome_handlers",
        "realtime_av_node_started",
        "realtime_av_status",
        "realtime_av_node_stopping",
    }


def test_make_plugin_manager_does_not_register_twice() -> None:
    pm = make_plugin_manager()
    assert [name for name, _ in pm.list_name_plugin()].count("realtime_av") == 1


def test_default_plugin_is_registered_without_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRIS_FABRIC_LOAD_PLUGINS", "")
    assert make_plugin_manager().get_plugin("realtime_av") is plugin
    assert make_plugin_manager(load_entry_points=False).get_plugin("realtime_av") is plugin


def test_disabled_plugin_registers_nothing() -> None:
    host = TestHost(entry_point_manager())
    config = host.configure({"realtime_av": {"enabled": False, "roles": ["relay", "publish", "watch"]}})
    host.register(config)
    assert host.dispatchers == [] and host.handlers == []


def test_default_config_is_disabled() -> None:
    host = TestHost(entry_point_manager())
    host.register(host.configure({}))
    assert host.dispatchers == [] and host.handlers == []


def test_bad_config_is_refused_with_a_clear_message() -> None:
    host = TestHost(entry_point_manager())
    with pytest.raises(ConfigError, match=r"unknown configuration key 'realtime_av\.enabld'; did you mean 'realtime_av\.enabled'\?"):
        host.configure({"realtime_av": {"enabld": True}})
    with pytest.raises(ConfigError, match=r"realtime_av\.roles: 'relai' is not one of relay, publish, watch"):
        host.configure({"realtime_av": {"enabled": True, "roles": ["relai"]}})


def test_enabled_relay_registers_a_keyless_dispatcher_and_a_welcome_handler() -> None:
    host = TestHost(entry_point_manager())
    host.register(host.configure(ENABLED))
    assert [d.name for d in host.dispatchers] == ["realtime_av.relay"]
    assert [h.name for h in host.handlers] == ["realtime_av.mls"]
    assert isinstance(host.dispatchers[0], Dispatcher)
    assert isinstance(host.handlers[0], WelcomeHandler)


def test_participant_only_node_registers_no_relay() -> None:
    host = TestHost(entry_point_manager())
    host.register(host.configure({"realtime_av": {"enabled": True, "roles": ["watch"]}}))
    assert host.dispatchers == []
    assert [h.name for h in host.handlers] == ["realtime_av.mls"]


def test_lifecycle_starts_the_keyless_relay_and_reports_status(
    fake_transport: type[FakeRelayNode], tmp_path: Path
) -> None:
    from ciris_av_plugin.protocol.control import PATH_COMMIT, PATH_KP_FETCH, PATH_KP_PUBLISH, PATH_REGISTER

    host = TestHost(entry_point_manager())
    config = host.configure(
        {"realtime_av": {**ENABLED["realtime_av"], "peer_relays": [PEER_RELAY.hex()]}, "node": {"data_dir": str(tmp_path / "data")}}
    )
    host.register(config)
    identity = FakeIdentity()
    host.start(config, identity, tmp_path / "data")

    (node,) = fake_transport.instances
    assert node.started and node.identity is identity
    assert node.engine.config.max_subscribers_per_stream == config.realtime_av.max_subscribers_per_stream
    assert {PATH_KP_PUBLISH, PATH_KP_FETCH, PATH_REGISTER, PATH_COMMIT} <= set(node.handlers), (
        "the directory and delivery service answer on the relay's control plane"
    )
    assert node.authorize_role is not None, "publish/subscribe are authorised by the delivery service's roster"
    assert node.authorize_role(b"\x09" * 16, "subscribe", 7) is False, "a stranger may not subscribe"
    assert node.authorize_role(PEER_RELAY, "subscribe", 7) is True, "a configured peer relay may (cascade)"
    db = tmp_path / "data" / "relay.sqlite"
    assert db.is_file() and (db.stat().st_mode & 0o777) == 0o600
    (status,) = host.pm.hook.realtime_av_status()
    relay = status["dispatchers"]["realtime_av.relay"]
    assert relay["name"] == "realtime_av.relay" and relay["running"] is True
    assert relay["destination"] == "ab" * 16
    assert relay["engine"]["frames_in"] == 0 and relay["delivery"] == {} and relay["directory"] == {}

    host.stop()
    assert node.stopped
    assert host.pm.hook.realtime_av_status()[0]["dispatchers"] == {}
    assert host.dispatchers[0].status() == {"name": "realtime_av.relay", "running": False}
    host.dispatchers[0].stop()  # idempotent


def test_dispatcher_refuses_a_second_start(fake_transport: type[FakeRelayNode], tmp_path: Path) -> None:
    host = TestHost(entry_point_manager())
    config = host.configure(ENABLED)
    host.register(config)
    host.start(config, FakeIdentity(), tmp_path)
    try:
        with pytest.raises(plugin.RelayError, match="already started"):
            host.dispatchers[0].start(host.context)
        assert len(fake_transport.instances) == 1
    finally:
        host.stop()


def test_context_carries_a_shutdown_signal(tmp_path: Path) -> None:
    context = NodeContext(reticulum=None, identity=None, identity_store=IdentityStore(tmp_path), config=Config())
    assert isinstance(context.shutdown, threading.Event) and not context.shutdown.is_set()
    assert context.data_dir == Config().node.data_dir


def test_welcome_handler_joins_a_group_and_the_state_stays_with_the_caller() -> None:
    from ciris_av_plugin.mls import Group, KeyPackageBundle
    from ciris_av_plugin.mls.crypto import CipherSuite

    host = TestHost(entry_point_manager())
    host.register(host.configure(ENABLED))
    (handler,) = host.handlers
    suite = CipherSuite(1)
    creator = Group.create(b"\x42" * 16, b"\x00" * 16, suite)
    joiner = KeyPackageBundle.generate(b"\x01" * 16, suite)
    pending = creator.commit(adds=[joiner.key_package])
    creator.merge_pending()
    joined = handler.process_welcome(pending.welcome, [joiner])
    assert isinstance(joined, Group)
    assert joined.epoch == creator.epoch == 1
    assert joined.export_secret(b"t", b"", 16) == creator.export_secret(b"t", b"", 16)
    assert vars(handler) == {"config": host.handlers[0].config, "name": "realtime_av.mls"}, "no state kept"
    stranger = KeyPackageBundle.generate(b"\x02" * 16, suite)
    with pytest.raises(AVError):
        handler.process_welcome(pending.welcome, [stranger])


def test_default_engine_enforces_the_configured_fan_out() -> None:
    from ciris_av_plugin.config import parse_config
    from ciris_av_plugin.relay.errors import SubscriberLimitError

    pending: list[bytes] = []
    factory = plugin.default_engine_factory(parse_config({"realtime_av": {"max_subscribers_per_stream": 2}}))
    engine = factory(pending.append)
    engine.add_subscriber(b"a" * 16, 7, 500, 0.0)
    engine.add_subscriber(b"b" * 16, 7, 500, 0.0)
    with pytest.raises(SubscriberLimitError):
        engine.add_subscriber(b"c" * 16, 7, 500, 0.0)
