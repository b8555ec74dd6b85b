"""Persistence adapters: the only package that touches disk.

The relay core defines what it needs stored as protocols in :mod:`ciris_av_plugin.relay.storage`;
:class:`SQLiteStore` implements them in one SQLite file. Everything else in the package is sans-I/O.
"""

from .sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = ["SQLiteStore", "SCHEMA_VERSION"]
