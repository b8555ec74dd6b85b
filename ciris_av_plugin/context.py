"""What a host hands the plugin, and the shapes of what the plugin hands back.

Kept apart from ``hookspecs.py`` so the contract there stays one screen long. Nothing here imports
RNS (only ``transport/`` does): the RNS objects are typed ``Any`` and documented instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ciris_av_plugin.config import Config
from ciris_av_plugin.store.identity import IdentityStore


@dataclass(frozen=True)
class NodeContext:
    """Everything the plugin may use from the host; built once per node start.

    The host owns every object here and outlives the plugin's use of them: the plugin never stops
    RNS, never deletes identities and never sets ``shutdown`` except to ask the host to stop.
    """

    reticulum: Any
    """The process's single running ``RNS.Reticulum`` (RNS allows one per process)."""
    identity: Any
    """The node's ``RNS.Identity``: the relay destination is created under it."""
    identity_store: IdentityStore
    """Named identities on disk, for a host that also takes part in calls (publish/watch roles)."""
    config: Config
    """The validated configuration (``realtime_av``, ``net``, ``node`` sections)."""
    shutdown: threading.Event = field(default_factory=threading.Event)
    """Set by the host on SIGINT/SIGTERM; plugin threads watch it and wind down."""

    @property
    def data_dir(self) -> Path:
        """Directory where the plugin may keep state (through ``store/``), e.g. the relay's SQLite."""
        return self.config.node.data_dir


@runtime_checkable
class Dispatcher(Protocol):
    """A keyless realtime-AV service the host runs: the relay, directory and delivery service.

    The host calls ``start(context)`` once after RNS is up, ``status()`` whenever it reports, and
    ``stop()`` once on shutdown (also after a failed ``start``). A dispatcher never holds MLS
    group secrets: it forwards ciphertext and follows public group state only.
    """

    name: str

    def start(self, context: NodeContext) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


@runtime_checkable
class WelcomeHandler(Protocol):
    """Turns an MLS Welcome into participant state, for a host that also takes part in calls.

    Participant state (MLS ``Group``, SFrame keys) is kept by the caller, apart from any
    dispatcher: the relay code never touches it.
    """

    name: str

    def process_welcome(self, welcome: bytes, bundles: Iterable[Any], ratchet_tree: bytes | None = None) -> Any:
        """``welcome``: RFC 9420 ``MLSMessage`` bytes; ``bundles``: the joiner's KeyPackage private
        material (``mls.group.KeyPackageBundle``); ``ratchet_tree``: the tree when the Welcome has
        none. Returns the joined ``mls.group.Group``, which the caller keeps."""
        ...


RegisterDispatcher = Callable[[Dispatcher], None]
"""The ``register`` callable a host passes to ``register_av_dispatchers``."""
RegisterWelcomeHandler = Callable[[WelcomeHandler], None]
"""The ``register`` callable a host passes to ``register_welcome_handlers``."""
