"""The mlswg interop vectors through the runner: each file gives exactly its pinned counts.

The passive-client files are also played with a PublicGroup alongside (test_mls_passive_vectors).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from support_vectors import MLS, MLS_COUNTS, mls_path

from ciris_av_plugin.mls.vectors import run_file


@pytest.mark.parametrize("stem", sorted(MLS_COUNTS))
def test_vector_file(stem: str) -> None:
    counts = run_file(mls_path(stem))
    assert (counts.passed, counts.failed, counts.skipped) == MLS_COUNTS[stem], counts.failures


def test_every_vector_file_in_the_folder_has_pinned_counts() -> None:
    """A vector file added without expected counts would otherwise never be run."""
    assert sorted(p.stem for p in MLS.glob("*.json")) == sorted(MLS_COUNTS)


def _runner_lines(*stems: str) -> list[str]:
    paths = [str(mls_path(stem)) for stem in stems]
    out = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.mls.vectors", *paths], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def _line(stem: str) -> str:
    passed, failed, skipped = MLS_COUNTS[stem]
    return f"{stem}: {passed} passed, {failed} failed, {skipped} skipped"


def test_runner_cli_prints_one_line_per_file() -> None:
    assert _runner_lines("tree-math", "crypto-basics") == [_line("tree-math"), _line("crypto-basics")]
    assert _line("tree-math") == "tree-math: 10 passed, 0 failed, 0 skipped"


def test_runner_cli_lines_for_tree_files() -> None:
    assert _runner_lines("tree-operations", "welcome") == [_line("tree-operations"), _line("welcome")]


def test_runner_cli_refuses_a_missing_file_with_exit_2(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.mls.vectors", str(tmp_path / "welcome.json"), str(mls_path("tree-math"))],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 2
    assert "cannot read" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout.splitlines() == [_line("tree-math")]  # the readable file is still checked
