"""Fabric node configuration: a TOML file with dotted keys, parsed into frozen dataclasses.

CIRISServer configures its adapters with one TOML file whose keys are dotted
(``realtime_av.enabled = true``); TOML turns those into nested tables, so ``[realtime_av]`` sections
and dotted keys mean the same thing here. Every key has a default, so an empty file is a valid
configuration. Validation is strict because a typo in a security-relevant setting (a listen address,
a role) must not silently fall back to a default: an unknown key is refused and the error names the
nearest valid key.

This module is pure: it parses text or mappings. Reading the file is ``store/``'s job (the only
code that touches disk); :func:`ciris_av_plugin.store.identity.read_config_text` does it.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ciris_av_plugin.errors import ConfigError

ROLE_RELAY = "relay"
"""Forward ciphertext, serve the KeyPackage directory and sequence handshakes (keyless)."""
ROLE_PUBLISH = "publish"
"""Take part in a call as a publishing member (holds MLS state, apart from the relay)."""
ROLE_WATCH = "watch"
"""Take part in a call as a subscriber (holds MLS state, apart from the relay)."""
ROLES = (ROLE_RELAY, ROLE_PUBLISH, ROLE_WATCH)

DEFAULT_LISTEN_ADDR = "127.0.0.1:4242"
"""Loopback by default: a node is reachable from outside only when its operator says so."""

DEFAULT_MAX_SUBSCRIBERS_PER_STREAM = 64
"""The design's fan-out target: 2 Mbit/s to 64 links over the 16 KiB MTU took ~11 % of a core."""
MAX_SUBSCRIBERS_PER_STREAM_LIMIT = 4096
"""MLS trees of 4096 leaves are already far past what one Python relay can feed in real time."""

DEFAULT_KEYPACKAGE_TTL_SECS = 7 * 24 * 3600
"""A week: long enough for an idle joiner, short enough that stale init keys age out (RFC 9420 §10)."""
MIN_KEYPACKAGE_TTL_SECS = 3600
"""Lifetimes are back-dated an hour for clock skew; a shorter TTL would be born nearly expired."""
MAX_KEYPACKAGE_TTL_SECS = 90 * 24 * 3600
"""Ninety days, the longest lifetime the common MLS implementations issue by default."""

DEFAULT_KEYPACKAGE_ONE_TIME_COUNT = 16
"""One-time KeyPackages a joiner keeps published; each admission consumes one."""
MAX_KEYPACKAGE_ONE_TIME_COUNT = 1000
"""Bounds the directory's per-identity storage."""

DEFAULT_MEMBER_LINK_TIMEOUT_SECS = 30
"""A member the relay has not heard from for this long is removed by an admitter (``kill -9``)."""
MIN_MEMBER_LINK_TIMEOUT_SECS = 5
"""Above the control plane's 3 s long-poll hold, so a member with no media link is never taken for gone."""
MAX_MEMBER_LINK_TIMEOUT_SECS = 24 * 3600
"""A day: beyond that a ghost would hold its leaf (and the publisher's member count) for no reason."""

DEFAULT_DATA_DIR = "~/.ciris-av"
DEFAULT_NODE_IDENTITY = "node"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DEFAULT_LOG_LEVEL = "warning"

IDENTITY_HASH_HEX_LEN = 32
"""An RNS identity hash (16 bytes) as ``rnid`` and ``ciris-av keys show`` print it."""

MAX_CONFIG_BYTES = 1024 * 1024
"""A configuration file larger than this is a mistake (or an attack), not a configuration."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A parsed ``host:port`` address (``[v6]:port`` for IPv6 literals)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and ``localhost``; used by hosts that warn on exposure."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class KeyPackageConfig:
    """How the node's KeyPackage directory treats published KeyPackages."""

    ttl_secs: int = DEFAULT_KEYPACKAGE_TTL_SECS
    """Lifetime the directory grants a published KeyPackage."""
    one_time_count: int = DEFAULT_KEYPACKAGE_ONE_TIME_COUNT
    """One-time KeyPackages a participant keeps published (plus one last-resort)."""


@dataclass(frozen=True, slots=True)
class RealtimeAVConfig:
    """The ``realtime_av.*`` section: whether the plugin runs and in which roles."""

    enabled: bool = False
    """Opt-in, as CIRISServer adapters are: an installed plugin does nothing until enabled."""
    roles: tuple[str, ...] = (ROLE_RELAY,)
    """Any of ``relay``, ``publish``, ``watch``; the relay role never holds group secrets."""
    max_subscribers_per_stream: int = DEFAULT_MAX_SUBSCRIBERS_PER_STREAM
    keypackage: KeyPackageConfig = field(default_factory=KeyPackageConfig)
    peer_relays: tuple[bytes, ...] = ()
    """RNS identity hashes of relays allowed to publish/subscribe any stream (cascade)."""
    member_link_timeout_secs: int = DEFAULT_MEMBER_LINK_TIMEOUT_SECS
    """Seconds without a link to the relay after which an admitter removes a member."""


@dataclass(frozen=True, slots=True)
class NetConfig:
    """The ``net.*`` section: where the node's RNS TCP server listens and whom it dials."""

    listen_addr: HostPort = field(default_factory=lambda: _parse_host_port("net.listen_addr", DEFAULT_LISTEN_ADDR))
    bootstrap_peers: tuple[HostPort, ...] = ()
    link_mtu_discovery: bool = True
    """RNS's link MTU discovery; off gives 431-byte MDUs (used to test mixed MDUs)."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The ``node.*`` section: the node's files and identity."""

    data_dir: Path = field(default_factory=lambda: Path(DEFAULT_DATA_DIR).expanduser())
    """Holds ``identities/``, the RNS config dir and the relay's SQLite state."""
    identity: str = DEFAULT_NODE_IDENTITY
    """Name of the node's identity in the identity store (created on first start)."""
    log_level: str = DEFAULT_LOG_LEVEL


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated configuration."""

    realtime_av: RealtimeAVConfig = field(default_factory=RealtimeAVConfig)
    net: NetConfig = field(default_factory=NetConfig)
    node: NodeConfig = field(default_factory=NodeConfig)


# --- validators: each takes (key, raw value) and returns the typed value or raises ConfigError ---


def _type_name(value: Any) -> str:
    return type(value).__name__


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {_type_name(value)} {value!r}")
    return value


def _int_range(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        # bool is an int subclass; `enabled = 1` style confusion should not pass as a number either.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_type_name(value)} {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(f"{key}: {value} is out of range, expected {lo} to {hi}")
        return value

    return check


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {_type_name(value)} {value!r}")
    if not value:
        raise ConfigError(f"{key}: expected a non-empty string")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        text = _str(key, value)
        if text not in choices:
            raise ConfigError(f"{key}: {text!r} is not one of {', '.join(choices)}")
        return text

    return check


def _roles(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of roles ({', '.join(ROLES)}), got {_type_name(value)}")
    if not value:
        raise ConfigError(f"{key}: expected at least one role of {', '.join(ROLES)}")
    roles: list[str] = []
    for item in value:
        role = _choice(ROLES)(key, item)
        if role in roles:
            raise ConfigError(f"{key}: role {role!r} is listed twice")
        roles.append(role)
    return tuple(roles)


def _parse_host_port(key: str, value: Any) -> HostPort:
    text = _str(key, value)
    expected = 'expected "host:port" such as "127.0.0.1:4242" or "[::1]:4242"'
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{key}: {text!r} is not an address, {expected}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{key}: {host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ConfigError(f"{key}: {text!r} is not an address, {expected}")
    if not port_text.isdigit():
        raise ConfigError(f"{key}: port {port_text!r} in {text!r} is not a number, {expected}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} in {text!r} is out of range, expected 1 to 65535")
    return HostPort(host, port)


def _peers(key: str, value: Any) -> tuple[HostPort, ...]:
    if not isinstance(value, list):
        raise ConfigError(f'{key}: expected a list of "host:port" strings, got {_type_name(value)}')
    return tuple(_parse_host_port(f"{key}[{i}]", item) for i, item in enumerate(value))


def _identity_hashes(key: str, value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of RNS identity hashes (32 hex digits), got {_type_name(value)}")
    hashes = []
    for index, item in enumerate(value):
        text = _str(f"{key}[{index}]", item)
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != IDENTITY_HASH_HEX_LEN // 2:
            raise ConfigError(f"{key}[{index}]: {text!r} is not an RNS identity hash ({IDENTITY_HASH_HEX_LEN} hex digits)")
        hashes.append(raw)
    return tuple(hashes)


def _path(key: str, value: Any) -> Path:
    return Path(_str(key, value)).expanduser()


def _identity_name(key: str, value: Any) -> str:
    # The same rule the identity store applies, checked here so a bad name fails at load time.
    from ciris_av_plugin.store.identity import IdentityStoreError, check_identity_name

    name = _str(key, value)
    try:
        check_identity_name(name)
    except IdentityStoreError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return name


SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "realtime_av.enabled": _bool,
    "realtime_av.roles": _roles,
    "realtime_av.max_subscribers_per_stream": _int_range(1, MAX_SUBSCRIBERS_PER_STREAM_LIMIT),
    "realtime_av.keypackage.ttl_secs": _int_range(MIN_KEYPACKAGE_TTL_SECS, MAX_KEYPACKAGE_TTL_SECS),
    "realtime_av.keypackage.one_time_count": _int_range(1, MAX_KEYPACKAGE_ONE_TIME_COUNT),
    "realtime_av.peer_relays": _identity_hashes,
    "realtime_av.member_link_timeout_secs": _int_range(MIN_MEMBER_LINK_TIMEOUT_SECS, MAX_MEMBER_LINK_TIMEOUT_SECS),
    "net.listen_addr": _parse_host_port,
    "net.bootstrap_peers": _peers,
    "net.link_mtu_discovery": _bool,
    "node.data_dir": _path,
    "node.identity": _identity_name,
    "node.log_level": _choice(LOG_LEVELS),
}
"""Every valid dotted key and its validator; the configuration reference in the README lists them."""

_SECTIONS = {key.rsplit(".", 1)[0] for key in SCHEMA} | {key.split(".", 1)[0] for key in SCHEMA}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested TOML tables back into the dotted keys the schema is written in."""
    flat: dict[str, Any] = {}
    for name, value in table.items():
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}{name!r}: keys must be strings")
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, key + "."))
        elif key in _SECTIONS:
            raise ConfigError(f"{key}: expected a table of settings ([{key}]), got {_type_name(value)}")
        else:
            flat[key] = value
    return flat


def _unknown(key: str) -> ConfigError:
    near = difflib.get_close_matches(key, SCHEMA, n=1, cutoff=0.6)
    if not near:
        # A wrong section name ("realtime.enabled") still deserves a hint: match on the last part.
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in SCHEMA if k.rsplit(".", 1)[-1] == leaf][:1]
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys are {', '.join(SCHEMA)}"
    return ConfigError(f"unknown configuration key {key!r}{hint}")


def parse_config(settings: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document (nested tables or dotted keys) into a :class:`Config`.

    Raises :class:`ConfigError` for the first problem, in a stable order (sorted keys), so a
    message is reproducible. A host that owns other sections of the same file passes only the
    ``realtime_av``, ``net`` and ``node`` tables.
    """
    if not isinstance(settings, Mapping):
        raise ConfigError(f"configuration: expected a table of settings, got {_type_name(settings)}")
    flat = _flatten(settings)
    values: dict[str, Any] = {}
    for key in sorted(flat):
        if key not in SCHEMA:
            raise _unknown(key)
        values[key] = SCHEMA[key](key, flat[key])

    def get(key: str, default: Any) -> Any:
        return values.get(key, default)

    kp_default = KeyPackageConfig()
    av_default = RealtimeAVConfig()
    net_default = NetConfig()
    node_default = NodeConfig()
    return Config(
        realtime_av=RealtimeAVConfig(
            enabled=get("realtime_av.enabled", av_default.enabled),
            roles=get("realtime_av.roles", av_default.roles),
            max_subscribers_per_stream=get(
                "realtime_av.max_subscribers_per_stream", av_default.max_subscribers_per_stream
            ),
            keypackage=KeyPackageConfig(
                ttl_secs=get("realtime_av.keypackage.ttl_secs", kp_default.ttl_secs),
                one_time_count=get("realtime_av.keypackage.one_time_count", kp_default.one_time_count),
            ),
            peer_relays=get("realtime_av.peer_relays", av_default.peer_relays),
            member_link_timeout_secs=get("realtime_av.member_link_timeout_secs", av_default.member_link_timeout_secs),
        ),
        net=NetConfig(
            listen_addr=get("net.listen_addr", net_default.listen_addr),
            bootstrap_peers=get("net.bootstrap_peers", net_default.bootstrap_peers),
            link_mtu_discovery=get("net.link_mtu_discovery", net_default.link_mtu_discovery),
        ),
        node=NodeConfig(
            data_dir=get("node.data_dir", node_default.data_dir),
            identity=get("node.identity", node_default.identity),
            log_level=get("node.log_level", node_default.log_level),
        ),
    )


def parse_toml(text: str, source: str = "<config>") -> dict[str, Any]:
    """TOML text to a document; a syntax error or oversize text becomes a :class:`ConfigError`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def parse_config_text(text: str, source: str = "<config>") -> Config:
    """Parse and validate TOML text; errors name ``source`` (a syntax error) or the key."""
    return parse_config(parse_toml(text, source))


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Lay settings over each other as dotted keys, later layers winning (e.g. a subcommand's
    defaults, then the file, then ``--set`` overrides); each layer may be nested or dotted."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(_flatten(layer))
    return merged
