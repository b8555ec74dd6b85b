"""The vector files in tests/vectors/ are the upstream bytes, documented, and the only test data read.

Each folder's PROVENANCE.md lists a sha256 per file; a changed, missing or unlisted file fails here,
so an edit to a vector can never pass unnoticed. The README's interop figures are the pinned ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from support_vectors import (
    FOLDERS,
    MLS,
    MLS_COUNTS,
    SFRAME_COUNTS,
    XWING_CASES,
    MissingVectorFile,
    mls_path,
    provenance_checksums,
    vector_path,
    xwing_path,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_every_vector_file_matches_its_listed_checksum(folder: Path) -> None:
    listed = provenance_checksums(folder)
    assert sorted(listed) == sorted(p.name for p in folder.glob("*.json")), "PROVENANCE.md must list every file"
    for name, digest in listed.items():
        assert hashlib.sha256(vector_path(folder, name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_provenance_names_source_commit_and_licence(folder: Path) -> None:
    text = vector_path(folder, "PROVENANCE.md").read_text()
    assert "https://github.com/" in text
    assert re.search(r"\| Commit \| `[0-9a-f]{40}`", text)
    assert "| Path in that repository |" in text and "| Copied into this repository |" in text
    assert "## Licence" in text


def test_a_missing_vector_file_fails_loudly() -> None:
    with pytest.raises(MissingVectorFile, match="no-such-file.json is missing"):
        mls_path("no-such-file")
    assert issubclass(MissingVectorFile, AssertionError)  # a failure, never a skip


def test_xwing_vectors_have_the_documented_shape() -> None:
    cases = json.loads(xwing_path().read_text())
    assert len(cases) == XWING_CASES
    sizes = {"seed": 32, "pk": 1216, "eseed": 64, "ct": 1120, "ss": 32}
    for case in cases:
        assert {k: len(bytes.fromhex(case[k])) for k in sizes} == sizes


def _interop_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Interop vectors")
    return readme[start : readme.index("\n## ", start + 1)]


def test_readme_interop_section_states_the_pinned_counts() -> None:
    section = _interop_section()
    for stem, (passed, failed, skipped) in MLS_COUNTS.items():
        assert (failed, skipped) == (0, 0)  # what the README promises for every MLS file
        found = re.findall(rf"(?<![\w-]){re.escape(stem)} (\d+)", section)
        assert found == [str(passed)], f"README gives {stem} {found}, the tests pin {passed}"
    passed, failed, skipped = SFRAME_COUNTS
    assert f"`{passed} passed, {failed} failed, {skipped} skipped`" in section


def test_readme_interop_commands_use_the_vectors_in_the_repository() -> None:
    section = _interop_section()
    assert f"ciris_av_plugin.mls.vectors {MLS.relative_to(REPO)}/*.json" in section
    assert "ciris_av_plugin.media.vectors tests/vectors/sframe/test-vectors.json" in section

