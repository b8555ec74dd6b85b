"""The embedded fabric node: the host side of ``hookspecs.py`` for standalone use on one machine.

CIRISServer is the real host; this is the same lifecycle in one process so a user can run a relay
with ``ciris-av node --config node.toml``. In order it: validates the configuration (through the
plugin's ``realtime_av_configure``), opens the identity store and loads or creates the node's
identity, writes the RNS config directory and starts RNS (transport's bootstrap helper), collects
what the plugins register, starts the dispatchers, runs until SIGINT/SIGTERM sets the shutdown
signal, then stops everything in reverse. Files go through ``store/``, RNS through ``transport/``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from ciris_av_plugin.config import Config, merge_settings, parse_config, parse_toml
from ciris_av_plugin.context import Dispatcher, NodeContext, WelcomeHandler
from ciris_av_plugin.errors import AVError
from ciris_av_plugin.plugins import make_plugin_manager
from ciris_av_plugin.store.identity import IdentityStore, StoredIdentity, read_config_text

log = logging.getLogger(__name__)

RNS_CONFIG_DIR = "rns"
"""Sub-directory of ``node.data_dir`` holding this node's RNS configuration and storage."""

STATUS_LOG_INTERVAL_S = 60.0
"""How often a running node logs its status at INFO: often enough to see it alive, rarely enough
that an idle node's log stays readable."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def load_settings(
    path: Path | str | None,
    *,
    defaults: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Dotted-key settings: ``defaults`` < the file at ``path`` (if any) < ``overrides``.

    Not yet validated: that is the configure hook's job (:meth:`FabricNode.from_settings`)."""
    document = {} if path is None else parse_toml(read_config_text(path), source=str(path))
    return merge_settings(defaults or {}, document, overrides or {})


def start_rns(config: Config) -> Any:
    """Write ``<data_dir>/rns/config`` and start this process's single ``RNS.Reticulum``.

    Uses transport's bootstrap helper (share_instance = No, TCP server on ``net.listen_addr``)
    and adds one TCP client interface per ``net.bootstrap_peers`` entry.
    """
    from ciris_av_plugin.transport.config import NodeConfig, start_reticulum

    listen = config.net.listen_addr
    base = NodeConfig(listen_port=listen.port, host=listen.host, link_mtu_discovery=config.net.link_mtu_discovery)
    return start_reticulum(config.node.data_dir / RNS_CONFIG_DIR, _WithPeers(base, config.net.bootstrap_peers))


@dataclass(frozen=True)
class _WithPeers:
    """Transport's RNS config plus client interfaces to the bootstrap peers.

    Transport's ``NodeConfig`` dials at most one peer on its own host; a fabric node may list
    several. ``write_config`` only needs ``render()``, so this extends the text it renders.
    """

    base: Any
    peers: tuple[Any, ...]

    def render(self) -> str:
        lines = [self.base.render().rstrip("\n")]
        for index, peer in enumerate(self.peers):
            lines += [
                f"  [[ciris av bootstrap peer {index}]]",
                "    type = TCPClientInterface",
                "    enabled = Yes",
                f"    target_host = {peer.host}",
                f"    target_port = {peer.port}",
            ]
        return "\n".join(lines) + "\n"


@dataclass
class FabricNode:
    """One embedded fabric node; ``start()``, ``run()`` (blocks), ``stop()``; or :func:`run_node`."""

    config: Config
    pm: pluggy.PluginManager = field(default_factory=make_plugin_manager)
    dispatchers: list[Dispatcher] = field(default_factory=list)
    welcome_handlers: list[WelcomeHandler] = field(default_factory=list)
    context: NodeContext | None = None
    stored_identity: StoredIdentity | None = None
    _started: list[Dispatcher] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], pm: pluggy.PluginManager | None = None) -> FabricNode:
        """Configure through the plugins' ``realtime_av_configure`` (the config phase); raises
        ``ConfigError`` before anything starts."""
        pm = pm or make_plugin_manager()
        config = pm.hook.realtime_av_configure(settings=settings)
        return cls(config=config if config is not None else parse_config(settings), pm=pm)

    def start(self, shutdown: threading.Event | None = None) -> NodeContext:
        """Registrations, identity, RNS, dispatcher starts, ``realtime_av_node_started``."""
        from ciris_av_plugin.transport.identity import rns_identity_from_private_key

        config = self.config
        # Registration first (hookspecs.py order): a plugin that refuses fails before RNS starts.
        self.pm.hook.register_av_dispatchers(register=self.dispatchers.append, config=config)
        self.pm.hook.register_welcome_handlers(register=self.welcome_handlers.append, config=config)
        store = IdentityStore(config.node.data_dir)
        self.stored_identity = store.load_or_create(config.node.identity)
        identity = rns_identity_from_private_key(self.stored_identity.private_key)
        if not config.net.listen_addr.is_loopback:
            log.warning("listening on %s: reachable beyond this machine", config.net.listen_addr)
        reticulum = start_rns(config)
        self.context = NodeContext(
            reticulum=reticulum,
            identity=identity,
            identity_store=store,
            config=config,
            shutdown=shutdown or threading.Event(),
        )
        try:
            for dispatcher in self.dispatchers:
                dispatcher.start(self.context)
                self._started.append(dispatcher)
            self.pm.hook.realtime_av_node_started(context=self.context)
        except BaseException:
            self._stop_dispatchers()
            raise
        log.info(
            "fabric node %s up on %s: %d dispatcher(s), %d welcome handler(s)",
            self.stored_identity.hexhash,
            config.net.listen_addr,
            len(self.dispatchers),
            len(self.welcome_handlers),
        )
        return self.context

    def status(self) -> dict[str, Any]:
        """The node's identity and address plus every plugin's ``realtime_av_status``."""
        return {
            "identity": self.stored_identity.hexhash if self.stored_identity else None,
            "listen_addr": str(self.config.net.listen_addr),
            "plugins": self.pm.hook.realtime_av_status(),
        }

    def run(self) -> None:
        """Block until the shutdown signal is set, logging status now and then."""
        assert self.context is not None, "start() first"
        while not self.context.shutdown.wait(STATUS_LOG_INTERVAL_S):
            log.info("status: %s", self.status())

    def stop(self) -> None:
        """``realtime_av_node_stopping``, then dispatchers in reverse start order. Idempotent."""
        if self.context is not None:
            self.context.shutdown.set()
        try:
            self.pm.hook.realtime_av_node_stopping()
        finally:
            self._stop_dispatchers()

    def _stop_dispatchers(self) -> None:
        while self._started:
            dispatcher = self._started.pop()
            try:
                dispatcher.stop()
            except Exception:  # one failing stop must not leave the others running
                log.exception("stopping %s failed", getattr(dispatcher, "name", dispatcher))


def install_stop_signals(shutdown: threading.Event) -> None:
    """SIGINT/SIGTERM set ``shutdown`` instead of RNS's handlers, which exit without stop hooks.

    Call after RNS has started (it installs its own) and only from the main thread."""

    def handler(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        shutdown.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def run_node(node: FabricNode, *, on_ready: Callable[[FabricNode], None] | None = None) -> int:
    """Run ``node`` until SIGINT/SIGTERM; returns the process exit status (0 clean, 1 failed)."""
    shutdown = threading.Event()
    try:
        node.start(shutdown)
        if threading.current_thread() is threading.main_thread():
            install_stop_signals(shutdown)
        if on_ready is not None:
            on_ready(node)
        node.run()
    except AVError as exc:
        log.error("node failed: %s", exc)
        return 1
    finally:
        node.stop()
    return 0
