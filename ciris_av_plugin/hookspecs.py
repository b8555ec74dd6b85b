"""The host <-> plugin contract for realtime AV on a CIRIS fabric node (pluggy project ``ciris_fabric``).

A host discovers plugins through the ``ciris_fabric`` entry-point group and calls, in this order
(the lifecycle of CIRISServer adapters: config -> start -> run -> stop, with status any time):

1. ``realtime_av_configure(settings)``: validate the config; the host gets a ``Config`` or an error.
2. ``register_av_dispatchers(register, config)`` and ``register_welcome_handlers(register, config)``.
3. The host starts RNS (one ``RNS.Reticulum`` per process) and calls ``start(context)`` on each
   registered dispatcher, then ``realtime_av_node_started(context)``.
4. Run until ``context.shutdown`` is set. ``realtime_av_status()`` may be called at any time.
5. ``realtime_av_node_stopping()``, then ``stop()`` on each dispatcher in reverse order.

The plugin promises: dispatchers are keyless (they forward ciphertext and follow public MLS state,
never holding group secrets); participant state from a welcome handler is kept by the caller,
apart from the relay; a disabled config registers nothing. Types: ``context.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from ciris_av_plugin.config import Config
    from ciris_av_plugin.context import NodeContext, RegisterDispatcher, RegisterWelcomeHandler

PROJECT = "ciris_fabric"
"""pluggy project name and entry-point group: ``pip install`` is all a host needs for discovery."""

hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def realtime_av_configure(settings: Mapping[str, Any]) -> Config:
    """Validate the host's ``realtime_av``/``net``/``node`` settings (TOML tables or dotted keys).

    Return the validated ``Config``, or raise ``ConfigError`` naming the bad key and what was expected."""


@hookspec
def register_av_dispatchers(register: RegisterDispatcher, config: Config) -> None:
    """Call ``register(dispatcher)`` for each keyless AV service to run (relay, directory, delivery).

    The host must later call ``dispatcher.start(context)`` with a running RNS instance and the
    node's RNS identity, and ``dispatcher.stop()`` on shutdown."""


@hookspec
def register_welcome_handlers(register: RegisterWelcomeHandler, config: Config) -> None:
    """Call ``register(handler)`` for each MLS ``process_welcome`` handler a participating host may use."""


@hookspec
def realtime_av_node_started(context: NodeContext) -> None:
    """The node is up and registered dispatchers have started; ``context`` holds the host's RNS
    instance and identity, the identity store, the config and the shutdown signal."""


@hookspec
def realtime_av_status() -> dict[str, Any]:
    """A JSON-safe dict of the plugin's state and counters; the host collects one per plugin."""


@hookspec
def realtime_av_node_stopping() -> None:
    """The host is stopping: finish quickly; dispatchers are stopped right after this returns."""
