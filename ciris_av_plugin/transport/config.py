"""Bootstrapping one RNS instance per process: a config directory written before start.

RNS allows one ``RNS.Reticulum`` per process and reads its whole configuration from a directory,
so a relay or client process writes that directory first (ARCHITECTURE.md, "Reticulum facts").
The option names below are the ones rns 1.5.7 parses (``Reticulum.__apply_config`` and
``TCPInterface``): ``share_instance``, ``link_mtu_discovery``, ``listen_ip``/``listen_port`` for
``TCPServerInterface``, ``target_host``/``target_port`` for ``TCPClientInterface``.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import RNS

log = logging.getLogger(__name__)

# RNS's own log level (0 critical .. 7 extreme). Errors only: RNS logs to stdout and its INFO
# lines would drown the reports child processes print.
RNS_LOGLEVEL = RNS.LOG_ERROR

# Seconds a TCP client interface waits for the initial connect; RNS's default is 5.
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Where a node listens or connects, and whether it negotiates a large link MTU."""

    listen_port: int | None = None
    """Relay: accept RNS over TCP on 127.0.0.1:<port>."""
    connect_port: int | None = None
    """Client: connect to a relay's TCP server on <host>:<port>."""
    host: str = "127.0.0.1"
    link_mtu_discovery: bool = True
    """Off makes this instance's links stay at the base 500-byte MTU (link MDU 431)."""

    def render(self) -> str:
        lines = [
            "[reticulum]",
            "  enable_transport = No",
            "  share_instance = No",
            f"  link_mtu_discovery = {'Yes' if self.link_mtu_discovery else 'No'}",
            "  panic_on_interface_error = No",
            "  respond_to_probes = No",
            "",
            "[logging]",
            f"  loglevel = {RNS_LOGLEVEL}",
            "",
            "[interfaces]",
        ]
        if self.listen_port is not None:
            lines += [
                "  [[ciris av relay server]]",
                "    type = TCPServerInterface",
                "    enabled = Yes",
                f"    listen_ip = {self.host}",
                f"    listen_port = {self.listen_port}",
            ]
        if self.connect_port is not None:
            lines += [
                "  [[ciris av relay uplink]]",
                "    type = TCPClientInterface",
                "    enabled = Yes",
                f"    target_host = {self.host}",
                f"    target_port = {self.connect_port}",
                f"    connect_timeout = {CONNECT_TIMEOUT_S}",
            ]
        return "\n".join(lines) + "\n"


def write_config(configdir: str | os.PathLike[str], node: NodeConfig) -> Path:
    """Write ``<configdir>/config`` (creating the directory) and return its path."""
    path = Path(configdir)
    path.mkdir(parents=True, exist_ok=True)
    config = path / "config"
    config.write_text(node.render())
    return config


def start_reticulum(configdir: str | os.PathLike[str], node: NodeConfig | None = None) -> RNS.Reticulum:
    """Start this process's single RNS instance, writing its config first when ``node`` is given."""
    if node is not None:
        write_config(configdir, node)
    log.debug("starting RNS from %s", configdir)
    return RNS.Reticulum(configdir=str(configdir), loglevel=RNS_LOGLEVEL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick; racy but fine on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
