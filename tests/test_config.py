"""Configuration: defaults, dotted keys == tables, and every validation error names key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciris_av_plugin.config import (
    DEFAULT_KEYPACKAGE_ONE_TIME_COUNT,
    DEFAULT_KEYPACKAGE_TTL_SECS,
    DEFAULT_MAX_SUBSCRIBERS_PER_STREAM,
    SCHEMA,
    Config,
    ConfigError,
    HostPort,
    merge_settings,
    parse_config,
    parse_config_text,
)
from ciris_av_plugin.errors import AVError


def test_empty_file_gives_documented_defaults() -> None:
    config = parse_config_text("")
    assert config == Config()
    assert config.realtime_av.enabled is False
    assert config.realtime_av.roles == ("relay",)
    assert config.realtime_av.max_subscribers_per_stream == DEFAULT_MAX_SUBSCRIBERS_PER_STREAM == 64
    assert config.realtime_av.keypackage.ttl_secs == DEFAULT_KEYPACKAGE_TTL_SECS
    assert config.realtime_av.keypackage.one_time_count == DEFAULT_KEYPACKAGE_ONE_TIME_COUNT
    assert config.net.listen_addr == HostPort("127.0.0.1", 4242)
    assert str(config.net.listen_addr) == "127.0.0.1:4242"
    assert config.net.bootstrap_peers == ()
    assert config.realtime_av.peer_relays == ()
    assert config.realtime_av.member_link_timeout_secs == 30
    assert config.node.data_dir == Path("~/.ciris-av").expanduser()
    assert config.node.identity == "node"


FULL = """
realtime_av.enabled = true
realtime_av.roles = ["relay", "watch"]
realtime_av.max_subscribers_per_stream = 128
realtime_av.keypackage.ttl_secs = 86400
realtime_av.keypackage.one_time_count = 4
realtime_av.peer_relays = ["00112233445566778899aabbccddeeff"]
realtime_av.member_link_timeout_secs = 12
net.listen_addr = "127.0.0.1:5000"
net.bootstrap_peers = ["127.0.0.1:5001", "[::1]:5002"]
net.link_mtu_discovery = false
node.data_dir = "/tmp/ciris-node"
node.identity = "relay-1"
node.log_level = "debug"
"""

FULL_AS_TABLES = """
[realtime_av]
enabled = true
roles = ["relay", "watch"]
max_subscribers_per_stream = 128
peer_relays = ["00112233445566778899aabbccddeeff"]
member_link_timeout_secs = 12
[realtime_av.keypackage]
ttl_secs = 86400
one_time_count = 4
[net]
listen_addr = "127.0.0.1:5000"
bootstrap_peers = ["127.0.0.1:5001", "[::1]:5002"]
link_mtu_discovery = false
[node]
data_dir = "/tmp/ciris-node"
identity = "relay-1"
log_level = "debug"
"""


def test_every_key_parses_and_dotted_keys_equal_tables() -> None:
    config = parse_config_text(FULL)
    assert config == parse_config_text(FULL_AS_TABLES)
    assert config.realtime_av.enabled is True
    assert config.realtime_av.roles == ("relay", "watch")
    assert config.realtime_av.max_subscribers_per_stream == 128
    assert config.realtime_av.keypackage.ttl_secs == 86400
    assert config.realtime_av.keypackage.one_time_count == 4
    assert config.realtime_av.peer_relays == (bytes.fromhex("00112233445566778899aabbccddeeff"),)
    assert config.realtime_av.member_link_timeout_secs == 12
    assert config.net.listen_addr == HostPort("127.0.0.1", 5000)
    assert config.net.bootstrap_peers == (HostPort("127.0.0.1", 5001), HostPort("::1", 5002))
    assert str(config.net.bootstrap_peers[1]) == "[::1]:5002"
    assert config.net.link_mtu_discovery is False
    assert config.node.data_dir == Path("/tmp/ciris-node")
    assert config.node.identity == "relay-1"
    assert config.node.log_level == "debug"


def test_full_example_covers_the_whole_schema() -> None:
    # Guards the test above (and the README reference) against a key added without coverage.
    keys = {line.split("=")[0].strip() for line in FULL.strip().splitlines()}
    assert keys == set(SCHEMA)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.realtime_av.enabled = True  # type: ignore[misc]


def test_dotted_mapping_and_overrides() -> None:
    assert parse_config({"realtime_av.enabled": True}).realtime_av.enabled is True
    merged = merge_settings(
        {"realtime_av.enabled": True, "node.identity": "a"},
        {"realtime_av": {"enabled": False, "roles": ["watch"]}},
        {"realtime_av.enabled": True},
    )
    config = parse_config(merged)
    assert config.realtime_av.enabled is True, "the last layer wins"
    assert config.realtime_av.roles == ("watch",)
    assert config.node.identity == "a", "earlier layers fill what later ones leave out"


def test_non_loopback_listen_address_is_allowed_and_flagged() -> None:
    config = parse_config({"net": {"listen_addr": "0.0.0.0:4242"}})
    assert config.net.listen_addr.is_loopback is False
    assert Config().net.listen_addr.is_loopback is True
    assert HostPort("localhost", 1).is_loopback and HostPort("::1", 1).is_loopback


def _error(settings: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(settings)  # type: ignore[arg-type]
    assert isinstance(info.value, AVError)
    return str(info.value)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        # unknown keys name the key and the nearest valid one
        ({"realtime_av": {"enabeld": True}}, "unknown configuration key 'realtime_av.enabeld'; did you mean 'realtime_av.enabled'?"),
        ({"realtime": {"roles": ["relay"]}}, "unknown configuration key 'realtime.roles'; did you mean 'realtime_av.roles'?"),
        ({"net": {"listen": "127.0.0.1:1"}}, "unknown configuration key 'net.listen'; did you mean 'net.listen_addr'?"),
        ({"realtime_av": {"keypackage": {"ttl": 5}}}, "did you mean 'realtime_av.keypackage.ttl_secs'?"),
        ({"zzz": 1}, "unknown configuration key 'zzz'; valid keys are realtime_av.enabled"),
        # a section given as a scalar
        ({"realtime_av": True}, "realtime_av: expected a table of settings ([realtime_av]), got bool"),
        # wrong types
        ({"realtime_av": {"enabled": "yes"}}, "realtime_av.enabled: expected true or false, got str 'yes'"),
        ({"realtime_av": {"enabled": 1}}, "realtime_av.enabled: expected true or false, got int 1"),
        ({"realtime_av": {"max_subscribers_per_stream": "64"}}, "realtime_av.max_subscribers_per_stream: expected an integer, got str '64'"),
        ({"realtime_av": {"max_subscribers_per_stream": True}}, "realtime_av.max_subscribers_per_stream: expected an integer, got bool True"),
        ({"realtime_av": {"max_subscribers_per_stream": 6.5}}, "expected an integer, got float 6.5"),
        ({"realtime_av": {"roles": "relay"}}, "realtime_av.roles: expected a list of roles (relay, publish, watch), got str"),
        ({"net": {"bootstrap_peers": "127.0.0.1:1"}}, 'net.bootstrap_peers: expected a list of "host:port" strings, got str'),
        ({"net": {"listen_addr": 4242}}, "net.listen_addr: expected a string, got int 4242"),
        ({"node": {"data_dir": ""}}, "node.data_dir: expected a non-empty string"),
        # out of range
        ({"realtime_av": {"max_subscribers_per_stream": 0}}, "realtime_av.max_subscribers_per_stream: 0 is out of range, expected 1 to 4096"),
        ({"realtime_av": {"max_subscribers_per_stream": 4097}}, "4097 is out of range, expected 1 to 4096"),
        ({"realtime_av": {"keypackage": {"ttl_secs": 60}}}, "realtime_av.keypackage.ttl_secs: 60 is out of range, expected 3600 to 7776000"),
        ({"realtime_av": {"keypackage": {"one_time_count": 0}}}, "realtime_av.keypackage.one_time_count: 0 is out of range, expected 1 to 1000"),
        ({"realtime_av": {"member_link_timeout_secs": 3}}, "realtime_av.member_link_timeout_secs: 3 is out of range, expected 5 to 86400"),
        ({"realtime_av": {"member_link_timeout_secs": 2.5}}, "realtime_av.member_link_timeout_secs: expected an integer, got float 2.5"),
        # bad choices
        ({"realtime_av": {"roles": []}}, "realtime_av.roles: expected at least one role of relay, publish, watch"),
        ({"realtime_av": {"roles": ["relay", "stream"]}}, "realtime_av.roles: 'stream' is not one of relay, publish, watch"),
        ({"realtime_av": {"roles": ["watch", "watch"]}}, "realtime_av.roles: role 'watch' is listed twice"),
        ({"realtime_av": {"peer_relays": "ab" * 16}}, "realtime_av.peer_relays: expected a list of RNS identity hashes (32 hex digits), got str"),
        ({"realtime_av": {"peer_relays": ["ab" * 15]}}, "realtime_av.peer_relays[0]: 'ababababababababababababababab' is not an RNS identity hash (32 hex digits)"),
        ({"realtime_av": {"peer_relays": ["zz" * 16]}}, "realtime_av.peer_relays[0]: 'zzzz"),
        ({"node": {"log_level": "loud"}}, "node.log_level: 'loud' is not one of critical, error, warning, info, debug"),
        ({"node": {"identity": "../etc/passwd"}}, "node.identity: identity name '../etc/passwd' is not valid"),
        # addresses
        ({"net": {"listen_addr": "127.0.0.1"}}, "net.listen_addr: '127.0.0.1' is not an address, expected \"host:port\""),
        ({"net": {"listen_addr": "127.0.0.1:http"}}, "net.listen_addr: port 'http' in '127.0.0.1:http' is not a number"),
        ({"net": {"listen_addr": "127.0.0.1:0"}}, "net.listen_addr: port 0 in '127.0.0.1:0' is out of range, expected 1 to 65535"),
        ({"net": {"listen_addr": "127.0.0.1:70000"}}, "port 70000 in '127.0.0.1:70000' is out of range"),
        ({"net": {"listen_addr": "::1:4242"}}, "net.listen_addr: '::1:4242' is not an address"),
        ({"net": {"listen_addr": "[::g]:4242"}}, "net.listen_addr: '::g' in '[::g]:4242' is not an IPv6 address"),
        ({"net": {"listen_addr": "[::1]4242"}}, "net.listen_addr: '[::1]4242' is not an address"),
        ({"net": {"bootstrap_peers": ["127.0.0.1:1", "nope"]}}, "net.bootstrap_peers[1]: 'nope' is not an address"),
        # not a table at all
        (["realtime_av.enabled"], "configuration: expected a table of settings, got list"),
    ],
)
def test_validation_errors_name_the_key_and_the_expectation(settings: object, expected: str) -> None:
    assert expected in _error(settings)


def test_toml_syntax_error_names_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^node\.toml: not valid TOML: "):
        parse_config_text("realtime_av.enabled = = true", source="node.toml")


def test_oversized_text_is_refused() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        parse_config_text("# " + "x" * (1024 * 1024))


def test_first_error_is_stable_across_orderings() -> None:
    a = {"realtime_av": {"enabled": "x"}, "net": {"listen_addr": 1}}
    b = {"net": {"listen_addr": 1}, "realtime_av": {"enabled": "x"}}
    assert _error(a) == _error(b)
