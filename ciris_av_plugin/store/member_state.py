"""A member's MLS group state on disk: ``Group.to_bytes()`` in one file, mode 0600, replaced atomically.

The bytes hold the member's private keys and the current epoch's secrets (RFC 9420 §14 asks that old
epochs' secrets be deleted, which replacing the whole file does). So the file is created 0600 inside a
0700 directory, written to a temporary file that is fsynced and renamed over the old one (a crash
leaves the old or the new state, never half of one), and a state file that others can read is
refused on load, as ssh refuses a readable key: it has already leaked.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ..errors import AVError

log = logging.getLogger(__name__)

STATE_FILE_MODE = 0o600
STATE_DIR_MODE = 0o700

# A 1,000-member group's state (tree with every leaf's keys and credentials) is well under 1 MB at
# suite 1; X-Wing leaves are ~5x larger. 16 MiB refuses a corrupt or hostile file before reading it.
MAX_STATE_BYTES = 16 << 20


class MemberStateError(AVError):
    """The state file is unreadable, too large or readable by others."""


class MemberStateStore:
    """One member's state for one group, at ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def save(self, state: bytes) -> None:
        """Replace the stored state with ``state`` (durable when this returns)."""
        self.path.parent.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STATE_FILE_MODE)
        try:
            os.fchmod(fd, STATE_FILE_MODE)
            view = memoryview(state)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        try:
            dfd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def load(self) -> bytes | None:
        """The stored state, or None if there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise MemberStateError(f"{self.path} is accessible to group or others (mode {st.st_mode & 0o777:o})")
            if st.st_size > MAX_STATE_BYTES:
                raise MemberStateError(f"{self.path} holds {st.st_size} bytes, more than {MAX_STATE_BYTES}")
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def delete(self) -> None:
        """Forget the state (the member left or was removed)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
