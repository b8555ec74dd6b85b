"""The test vectors: where they live in the repository and the exact result each file must give.

The files are copies of upstream vectors under ``tests/vectors/`` (one folder per source, each with a
PROVENANCE.md naming repository, commit, path, licence and checksums). Paths are built from this file's
own location, so a bare clone runs the suite with nothing beside it. A missing file raises
:class:`MissingVectorFile` (an AssertionError): the test that needs it fails, or its module fails to
collect; it is never skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent / "vectors"
MLS = VECTORS / "mls"
SFRAME = VECTORS / "sframe"
XWING = VECTORS / "xwing"
FOLDERS = (MLS, SFRAME, XWING)

# Exact (passed, failed, skipped) the runner must report for each mlswg file (README "Interop vectors"
# lists the same figures). Every case of every file runs: all 7 suites of the vectors are implemented.
MLS_COUNTS: dict[str, tuple[int, int, int]] = {
    "crypto-basics": (7, 0, 0),
    "deserialization": (14, 0, 0),
    "key-schedule": (7, 0, 0),
    "message-protection": (7, 0, 0),
    "messages": (300, 0, 0),
    "passive-client-handling-commit": (91, 0, 0),
    "passive-client-random": (1, 0, 0),
    "passive-client-welcome": (56, 0, 0),
    "psk_secret": (77, 0, 0),
    "secret-tree": (21, 0, 0),
    "transcript-hashes": (7, 0, 0),
    "tree-math": (10, 0, 0),
    "tree-operations": (5, 0, 0),
    "tree-validation": (98, 0, 0),
    "treekem": (77, 0, 0),
    "welcome": (7, 0, 0),
}

SFRAME_FILE = "test-vectors.json"
# The 3 skipped are the aes_256_ctr_hmac section's suites 6-8, which are not RFC 9605 suites.
SFRAME_COUNTS = (297, 0, 3)

XWING_FILE = "test-vectors.json"
XWING_CASES = 3

_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$", re.MULTILINE)


class MissingVectorFile(AssertionError):
    """A vector file the tests need is not in the repository (restore it from git, see PROVENANCE.md)."""


def vector_path(folder: Path, name: str) -> Path:
    """``folder/name``, or MissingVectorFile naming the file and where its provenance is written."""
    path = folder / name
    if not path.is_file():
        raise MissingVectorFile(
            f"test vector file {path} is missing; it belongs in the repository "
            f"(source and checksum in {folder / 'PROVENANCE.md'})"
        )
    return path


def mls_path(stem: str) -> Path:
    return vector_path(MLS, f"{stem}.json")


def load_mls(stem: str) -> list[dict[str, Any]]:
    """The cases of one mlswg vector file (a JSON list)."""
    return json.loads(mls_path(stem).read_text())


def sframe_path() -> Path:
    return vector_path(SFRAME, SFRAME_FILE)


def xwing_path() -> Path:
    return vector_path(XWING, XWING_FILE)


def provenance_checksums(folder: Path) -> dict[str, str]:
    """``{file name: sha256 hex}`` from the ``sha256sum`` lines of the folder's PROVENANCE.md."""
    text = vector_path(folder, "PROVENANCE.md").read_text()
    return {name: digest for digest, name in _CHECKSUM_LINE.findall(text)}
