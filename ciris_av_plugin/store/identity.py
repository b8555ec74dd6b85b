"""On-disk store of named RNS-compatible identities, and the node's configuration file reader.

An RNS identity is 64 bytes of private key material: an X25519 private key followed by an Ed25519
seed, exactly what ``RNS.Identity.get_private_key()`` returns and ``RNS.Identity.to_file()`` writes.
This store keeps that format so an identity file works with the ``rn*`` tools too, but it never
imports RNS (only ``transport/`` does): ``transport.identity`` turns the bytes into an
``RNS.Identity``. The public key and identity hash are derived here with ``cryptography`` the same
way RNS does (hash = first 16 bytes of SHA-256 over X25519 public || Ed25519 public), so ``ciris-av
keys show`` needs no RNS instance.

Private files are written 0600 in a 0700 directory, atomically, never overwritten; a private file
that group or others can read is refused, as ssh refuses a readable key, because it has already
leaked and using it would hide that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ciris_av_plugin.errors import AVError, ConfigError

log = logging.getLogger(__name__)

PRIVATE_KEY_LEN = 64
"""X25519 private key (32) + Ed25519 seed (32), RNS's ``Identity.KEYSIZE`` of 512 bits."""
HALF_KEY_LEN = PRIVATE_KEY_LEN // 2
IDENTITY_HASH_LEN = 16
"""RNS's ``TRUNCATED_HASHLENGTH`` of 128 bits; also the MLS ``BasicCredential.identity``."""

IDENTITIES_DIR = "identities"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
FORBIDDEN_FILE_BITS = 0o077
"""Any group/other permission on a private key file means it may have been read: refuse it."""
FORBIDDEN_DIR_BITS = 0o022
"""A directory others can write lets them swap the key file: refuse to read from it."""

MAX_CONFIG_FILE_BYTES = 1024 * 1024
"""Same bound as ``config.MAX_CONFIG_BYTES``; read no further than that."""

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
"""Names become file names: no separators, no leading dot (hidden files, ``..``), 64 chars at most."""


class IdentityStoreError(AVError):
    """The identity store refused an operation; the message says which file and why."""


def check_identity_name(name: str) -> str:
    """Return ``name`` if it is a safe identity name, else raise :class:`IdentityStoreError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise IdentityStoreError(
            f"identity name {name!r} is not valid: use 1-64 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return name


def public_key_of(private_key: bytes) -> bytes:
    """The 64-byte RNS public key (X25519 public || Ed25519 public) for 64 bytes of private key."""
    if len(private_key) != PRIVATE_KEY_LEN:
        raise IdentityStoreError(f"private key is {len(private_key)} bytes, expected {PRIVATE_KEY_LEN}")
    x_pub = X25519PrivateKey.from_private_bytes(private_key[:HALF_KEY_LEN]).public_key().public_bytes_raw()
    ed_pub = Ed25519PrivateKey.from_private_bytes(private_key[HALF_KEY_LEN:]).public_key().public_bytes_raw()
    return x_pub + ed_pub


def identity_hash_of(public_key: bytes) -> bytes:
    """RNS's identity hash: the first 16 bytes of SHA-256 over the 64-byte public key."""
    return hashlib.sha256(public_key).digest()[:IDENTITY_HASH_LEN]


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    """One identity from the store; ``private_key`` is kept out of ``repr`` so logs never carry it."""

    name: str
    private_key: bytes = field(repr=False)
    """64 bytes for ``RNS.Identity.from_bytes`` (via ``transport.identity``)."""
    public_key: bytes = field(repr=False)
    hash: bytes
    """16-byte RNS identity hash."""

    @classmethod
    def from_private_key(cls, name: str, private_key: bytes) -> StoredIdentity:
        public_key = public_key_of(private_key)
        return cls(name, bytes(private_key), public_key, identity_hash_of(public_key))

    @property
    def hexhash(self) -> str:
        return self.hash.hex()


def generate_private_key() -> bytes:
    """Fresh RNS identity key material, generated the way ``RNS.Identity.create_keys`` does."""
    x_prv = X25519PrivateKey.generate().private_bytes_raw()
    ed_prv = Ed25519PrivateKey.generate().private_bytes_raw()
    return x_prv + ed_prv


class IdentityStore:
    """Named identities under ``<data_dir>/identities/<name>``, one raw 64-byte file each."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.directory = self.data_dir / IDENTITIES_DIR

    def path_of(self, name: str) -> Path:
        return self.directory / check_identity_name(name)

    def _ensure_directory(self) -> None:
        self.data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        try:
            self.directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
        else:
            # mkdir's mode is filtered by the umask; set it exactly.
            os.chmod(self.directory, PRIVATE_DIR_MODE)
        self._check_directory()

    def _check_directory(self) -> None:
        try:
            st = os.stat(self.directory, follow_symlinks=False)
        except FileNotFoundError:
            raise IdentityStoreError(f"{self.directory}: no identity store here") from None
        if not stat.S_ISDIR(st.st_mode):
            raise IdentityStoreError(f"{self.directory}: not a directory")
        if st.st_mode & FORBIDDEN_DIR_BITS:
            raise IdentityStoreError(
                f"{self.directory}: mode {stat.S_IMODE(st.st_mode):04o} lets others write; "
                f"run chmod {PRIVATE_DIR_MODE:o} on it"
            )

    def names(self) -> list[str]:
        """Names of the stored identities, sorted; an absent store has none."""
        if not self.directory.exists():
            return []
        self._check_directory()
        return sorted(p.name for p in self.directory.iterdir() if _NAME_RE.fullmatch(p.name) and p.is_file())

    def exists(self, name: str) -> bool:
        return self.path_of(name).exists()

    def create(self, name: str, private_key: bytes | None = None) -> StoredIdentity:
        """Write a new identity (fresh keys, or ``private_key`` to import one); never overwrites."""
        path = self.path_of(name)
        key = generate_private_key() if private_key is None else bytes(private_key)
        identity = StoredIdentity.from_private_key(name, key)  # validates an imported key first
        self._ensure_directory()
        tmp = self.directory / f".{name}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            if os.write(fd, key) != len(key):
                raise IdentityStoreError(f"{tmp}: short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if the name exists, so two creators cannot both win and none overwrites.
            os.link(tmp, path)
        except FileExistsError:
            raise IdentityStoreError(f"{path}: identity {name!r} already exists") from None
        finally:
            os.unlink(tmp)
        _fsync_directory(self.directory)  # the new name survives a crash: the node keeps its identity
        log.info("created identity %s <%s>", name, identity.hexhash)
        return identity

    def load(self, name: str) -> StoredIdentity:
        """Read an identity, refusing files that group or others can access."""
        path = self.path_of(name)
        self._check_directory()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise IdentityStoreError(f"{path}: no identity named {name!r}") from None
        except OSError as exc:
            raise IdentityStoreError(f"{path}: cannot open identity ({exc.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IdentityStoreError(f"{path}: not a regular file")
            if st.st_mode & FORBIDDEN_FILE_BITS:
                raise IdentityStoreError(
                    f"{path}: private key file has mode {stat.S_IMODE(st.st_mode):04o}, readable beyond "
                    f"its owner; refusing to use it (if it has not leaked, chmod {PRIVATE_FILE_MODE:o} it)"
                )
            data = os.read(fd, PRIVATE_KEY_LEN + 1)
        finally:
            os.close(fd)
        if len(data) != PRIVATE_KEY_LEN:
            raise IdentityStoreError(
                f"{path}: identity file holds {len(data)} bytes or more, expected exactly {PRIVATE_KEY_LEN}"
            )
        return StoredIdentity.from_private_key(name, data)

    def load_or_create(self, name: str) -> StoredIdentity:
        """The node's identity: created on first start, the same one on every later start."""
        if self.exists(name):
            return self.load(name)
        try:
            return self.create(name)
        except IdentityStoreError:
            if self.exists(name):  # another process created it between our check and create
                return self.load(name)
            raise


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_file(path: Path | str, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file + rename), e.g. a node's ready/status file,
    so a reader polling for it never sees half a document."""
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_config_text(path: Path | str) -> str:
    """Read a node configuration file as UTF-8 text (store/ is the only code that touches disk)."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"{path}: configuration file is larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: configuration file is not UTF-8 ({exc.reason} at byte {exc.start})") from None
