"""Persistence adapters: the only package that touches disk.

The relay core defines what it needs stored as protocols in :mod:`ciris_av_plugin.relay.storage`;
:class:`SQLiteStore` implements them in one SQLite file. Everything else in the package is sans-I/O.
"""

from typing import Any

__all__ = ["SQLiteStore", "SCHEMA_VERSION"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: a member imports ``store.member_state`` or ``store.identity`` and must not
    # load the relay's storage protocols that the SQLite store implements.
    if name in __all__:
        from . import sqlite

        return getattr(sqlite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
