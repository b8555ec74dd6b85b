"""The RNS config a node writes before start: option names as rns 1.5.7 parses them."""

from __future__ import annotations

import socket
from pathlib import Path

from RNS.vendor.configobj import ConfigObj

from ciris_av_plugin.transport.config import NodeConfig, free_port, write_config


def test_relay_config_listens_on_loopback_without_a_shared_instance(tmp_path: Path) -> None:
    cfg = ConfigObj(str(write_config(tmp_path / "relay", NodeConfig(listen_port=4242))))
    ret = cfg["reticulum"]
    assert ret.as_bool("share_instance") is False and ret.as_bool("enable_transport") is False
    assert ret.as_bool("link_mtu_discovery") is True
    (iface,) = cfg["interfaces"].values()
    assert iface["type"] == "TCPServerInterface" and iface.as_bool("enabled")
    assert (iface["listen_ip"], iface.as_int("listen_port")) == ("127.0.0.1", 4242)


def test_client_config_connects_and_can_turn_mtu_discovery_off(tmp_path: Path) -> None:
    cfg = ConfigObj(str(write_config(tmp_path / "c", NodeConfig(connect_port=4243, link_mtu_discovery=False))))
    assert cfg["reticulum"].as_bool("link_mtu_discovery") is False
    (iface,) = cfg["interfaces"].values()
    assert iface["type"] == "TCPClientInterface"
    assert (iface["target_host"], iface.as_int("target_port")) == ("127.0.0.1", 4243)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
