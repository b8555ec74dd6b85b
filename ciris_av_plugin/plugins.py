"""Plugin discovery for a fabric host: a PluginManager with our hookspecs and the entry points loaded.

Like ``llm/plugins.py``: installed plugins come from the ``ciris_fabric`` entry-point group; the
default plugin (this package's own) is registered too, so a source checkout without installed
metadata still works. ``CIRIS_FABRIC_LOAD_PLUGINS`` (comma-separated entry-point names, empty for
none) limits which installed plugins load, for debugging a host with a broken plugin installed.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

import pluggy

from ciris_av_plugin import hookspecs

log = logging.getLogger(__name__)

DEFAULT_PLUGINS = {"realtime_av": "ciris_av_plugin.plugin"}
"""Entry-point name -> module, registered when the entry point was not (not installed, or filtered)."""
LOAD_PLUGINS_ENV = "CIRIS_FABRIC_LOAD_PLUGINS"


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager; hosts keep one per node (plugins are modules, so registering is cheap)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    wanted = os.environ.get(LOAD_PLUGINS_ENV)
    if load_entry_points and wanted is None:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    elif load_entry_points and wanted:
        names = {name.strip() for name in wanted.split(",") if name.strip()}
        for ep in entry_points(group=hookspecs.PROJECT):
            if ep.name in names and pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.name)
    for name, module_name in DEFAULT_PLUGINS.items():
        module = importlib.import_module(module_name)
        if pm.get_plugin(name) is None and not pm.is_registered(module):
            pm.register(module, name=name)
    log.debug("fabric plugins: %s", ", ".join(sorted(n for n, _ in pm.list_name_plugin())))
    return pm
