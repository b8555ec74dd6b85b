"""Members and the relay share only ``protocol/``: importing one side loads none of the other.

Each check runs in a fresh interpreter (a subprocess), because this test process has long since
imported both sides; what counts is what one ``import`` pulls in on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Generous: a cold interpreter importing the package takes ~1 s on a busy 2-core machine.
IMPORT_TIMEOUT_S = 60

MEMBER_SIDE = ("ciris_av_plugin.session", "ciris_av_plugin.participant")
RELAY_SIDE = ("ciris_av_plugin.relay",)
# Modules no protocol module may load: protocol/ is the shared floor both sides stand on.
ABOVE_PROTOCOL = ("ciris_av_plugin.relay", "ciris_av_plugin.session", "ciris_av_plugin.participant",
                  "ciris_av_plugin.media", "ciris_av_plugin.transport", "ciris_av_plugin.mls",
                  "ciris_av_plugin.store", "ciris_av_plugin.config")


def loaded_after(*modules: str) -> list[str]:
    """The ``ciris_av_plugin`` modules a fresh interpreter has loaded after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ciris_av_plugin'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S,
                         check=True)
    return json.loads(out.stdout)


def within(loaded: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == p or m.startswith(p + ".") or m.startswith(p + "_") for p in prefixes)]


@pytest.mark.parametrize("member", ["ciris_av_plugin.session", "ciris_av_plugin.participant",
                                    "ciris_av_plugin.transport.session_client"])
def test_member_code_loads_no_relay_code(member: str) -> None:
    assert within(loaded_after(member), RELAY_SIDE) == []


@pytest.mark.parametrize("relay", ["ciris_av_plugin.relay.delivery", "ciris_av_plugin.relay.engine",
                                   "ciris_av_plugin.transport.relay", "ciris_av_plugin.transport.delivery_handlers"])
def test_relay_code_loads_no_member_code(relay: str) -> None:
    assert within(loaded_after(relay), MEMBER_SIDE) == []


def test_protocol_stands_on_nothing_but_the_error_roots() -> None:
    loaded = loaded_after("ciris_av_plugin.protocol.control", "ciris_av_plugin.protocol.codes",
                          "ciris_av_plugin.protocol.envelope", "ciris_av_plugin.protocol.media_wire",
                          "ciris_av_plugin.protocol.nack", "ciris_av_plugin.protocol.reports")
    assert within(loaded, ABOVE_PROTOCOL) == []


def test_store_does_not_import_the_configuration() -> None:
    """``config`` checks identity names with the store's rule; the store must not import ``config`` back."""
    assert within(loaded_after("ciris_av_plugin.store.identity"), ("ciris_av_plugin.config",)) == []
