"""The realtime-AV plugin: hookimpls for the ``ciris_fabric`` contract (``hookspecs.py``).

This module is what the ``realtime_av`` entry point names. It registers:

* ``realtime_av.relay`` — the keyless dispatcher: the transport's ``RelayNode`` over the forwarding
  engine, with the KeyPackage directory and delivery service (``DeliveryPlane``) on its control plane
  and their state in SQLite under ``node.data_dir``. It forwards ciphertext, follows public MLS state
  and never touches a ``Group``. Registered when ``realtime_av.enabled`` and the ``relay`` role is set.
* ``realtime_av.mls`` — the ``process_welcome`` handler a participating host (``publish``/``watch``
  roles, an agent joining a call) uses to turn a Welcome into its own participant state.

Heavy layers (RNS, SQLite, the engine, MLS) are imported when a service starts, not when the host
loads the plugin, so discovery stays cheap and a host without a working RNS can still validate config.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ciris_av_plugin import __version__
from ciris_av_plugin.config import ROLE_RELAY, Config, parse_config
from ciris_av_plugin.context import NodeContext, RegisterDispatcher, RegisterWelcomeHandler
from ciris_av_plugin.errors import AVError, RelayError
from ciris_av_plugin.hookspecs import hookimpl

log = logging.getLogger(__name__)

RELAY_DISPATCHER_NAME = "realtime_av.relay"
RELAY_DB_FILE = "relay.sqlite"
"""The relay's directory and public group state, under ``node.data_dir`` (mode 0600, via ``store/``)."""
WELCOME_HANDLER_NAME = "realtime_av.mls"

EngineFactory = Callable[[Config], Any]
"""Builds the forwarding engine (``transport.relay.Forwarder`` shape) from the configuration."""

_live_lock = threading.Lock()
_live: dict[int, RelayDispatcher] = {}
"""Dispatchers between start and stop, so ``realtime_av_status`` can report them (plugins are modules)."""


def default_engine_factory(config: Config) -> Any:
    """The relay's forwarding engine (``relay/engine.py``) with the configured fan-out limit.

    Returned as a factory of ``on_pending`` so the relay wakes a subscriber's sender exactly when
    its queue fills (``transport.relay.RelayNode`` accepts an engine or such a factory)."""
    from ciris_av_plugin.relay.engine import ForwardingEngine
    from ciris_av_plugin.relay.engine_config import EngineConfig

    limits = EngineConfig(max_subscribers_per_stream=config.realtime_av.max_subscribers_per_stream)
    return lambda on_pending: ForwardingEngine(limits, on_pending=on_pending)


@dataclass
class _Running:
    """What a started relay dispatcher holds, so ``stop`` undoes exactly what ``start`` did."""

    relay: Any
    plane: Any
    store: Any


@dataclass(eq=False)
class RelayDispatcher:
    """The keyless relay service: forwarding engine, KeyPackage directory and delivery service.

    It binds ``transport.relay.RelayNode`` (the RNS destination, links, media) and
    ``transport.delivery_handlers.DeliveryPlane`` (the MLS control requests) to one SQLite file,
    ``<node.data_dir>/relay.sqlite``, so the directory and the public group state survive a restart.
    It follows public MLS state only (``PublicGroup``) and never holds a group secret.
    """

    config: Config
    engine_factory: EngineFactory = default_engine_factory
    name: str = RELAY_DISPATCHER_NAME
    _running: _Running | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def start(self, context: NodeContext) -> None:
        """Open the relay's store, create the relay destination under the node's identity, announce."""
        # Imported here: RNS only once the host runs one, SQLite only once there is a data dir.
        from ciris_av_plugin.relay.delivery import DeliveryService
        from ciris_av_plugin.relay.directory import KeyPackageDirectory
        from ciris_av_plugin.store.sqlite import SQLiteStore
        from ciris_av_plugin.transport.delivery_handlers import DeliveryPlane
        from ciris_av_plugin.transport.relay import RelayNode

        with self._lock:
            if self._running is not None:
                raise RelayError(f"{self.name} is already started")
            store = SQLiteStore(context.data_dir / RELAY_DB_FILE)
            try:
                delivery = DeliveryService(store)
                directory = KeyPackageDirectory(store, delivery.may_fetch)
                delivery.directory = directory
                relay = RelayNode(context.identity, self.engine_factory(self.config))
                # Registers its requests on the relay, so before relay.start().
                av = self.config.realtime_av
                plane = DeliveryPlane(relay, delivery, directory, peer_relays=av.peer_relays,
                                      member_link_timeout=float(av.member_link_timeout_secs))
                relay.start()
                plane.start()
            except BaseException:
                store.close()
                raise
            self._running = _Running(relay, plane, store)
        with _live_lock:
            _live[id(self)] = self
        log.info("%s started: destination %s", self.name, relay.destination_hash.hex())

    def stop(self) -> None:
        """Stop the delivery ticker, tear down the relay's links, close the store. Idempotent."""
        with _live_lock:
            _live.pop(id(self), None)
        with self._lock:
            running, self._running = self._running, None
        if running is not None:
            running.plane.stop()
            running.relay.stop()
            running.store.close()
            log.info("%s stopped", self.name)

    @property
    def destination_hash(self) -> bytes | None:
        """The relay's RNS destination hash, which clients dial; None until started."""
        running = self._running
        return None if running is None else running.relay.destination_hash

    def status(self) -> dict[str, Any]:
        running = self._running
        if running is None:
            return {"name": self.name, "running": False}
        return {
            "name": self.name,
            "running": True,
            "destination": running.relay.destination_hash.hex(),
            "counters": running.relay.counters(),
            "engine": running.relay.engine_stats(),
            **running.plane.stats(),
        }


@dataclass(eq=False)
class MLSWelcomeHandler:
    """``process_welcome`` for a participating host: MLS ``Group.join`` on a Welcome (§12.4.3.1).

    It keeps no state: the returned ``Group`` (keys, epoch secrets) belongs to the caller, never
    to a dispatcher, so the relay stays keyless on a node that also takes part in calls.
    """

    config: Config
    name: str = WELCOME_HANDLER_NAME

    def process_welcome(
        self, welcome: bytes, bundles: Iterable[Any], ratchet_tree: bytes | None = None
    ) -> Any:
        """``bundles``: the joiner's ``mls.group.KeyPackageBundle``s (the right one is picked by
        KeyPackageRef); ``ratchet_tree``: the relay-served tree when the Welcome carries none."""
        from ciris_av_plugin.mls.group import Group

        return Group.join(welcome, bundles, ratchet_tree)


@hookimpl
def realtime_av_configure(settings: Mapping[str, Any]) -> Config:
    return parse_config(settings)


@hookimpl
def register_av_dispatchers(register: RegisterDispatcher, config: Config) -> None:
    av = config.realtime_av
    if av.enabled and ROLE_RELAY in av.roles:
        register(RelayDispatcher(config))


@hookimpl
def register_welcome_handlers(register: RegisterWelcomeHandler, config: Config) -> None:
    # Any enabled node may take part in a call (an agent joining one), so the handler does not
    # depend on the publish/watch roles; it is inert until a host calls it.
    if config.realtime_av.enabled:
        register(MLSWelcomeHandler(config))


@hookimpl
def realtime_av_node_started(context: NodeContext) -> None:
    log.info(
        "realtime_av on node %s: enabled=%s roles=%s",
        context.identity.hash.hex() if getattr(context.identity, "hash", None) else "?",
        context.config.realtime_av.enabled,
        ",".join(context.config.realtime_av.roles),
    )


@hookimpl
def realtime_av_status() -> dict[str, Any]:
    with _live_lock:
        live = list(_live.values())
    statuses = {}
    for dispatcher in live:
        try:
            statuses[dispatcher.name] = dispatcher.status()
        except AVError as exc:  # a status call must never take the host's status page down
            statuses[dispatcher.name] = {"name": dispatcher.name, "error": str(exc)}
    return {"plugin": "realtime_av", "version": __version__, "dispatchers": statuses}


@hookimpl
def realtime_av_node_stopping() -> None:
    with _live_lock:
        count = len(_live)
    log.info("realtime_av stopping (%d dispatcher(s) running)", count)
