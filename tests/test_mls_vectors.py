"""The mlswg interop vectors through the runner (the passive-client files: test_mls_passive_vectors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ciris_av_plugin.mls.vectors import run_file

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "mls"

# Cases each file must pass, with none failing: suite-independent files pass every case; the
# others every suite 1 case (1 where any passing case will do).
FILES = {
    "tree-math": 1,
    "crypto-basics": 1,
    "deserialization": 1,
    "secret-tree": 1,
    "key-schedule": 1,
    "psk_secret": 1,
    "transcript-hashes": 1,
    "message-protection": 1,
    "messages": 300,
    "tree-operations": 5,
    "tree-validation": 14,
    "treekem": 11,
    "welcome": 1,
}


@pytest.mark.parametrize("stem", sorted(FILES))
def test_vector_file(stem: str) -> None:
    path = VECTORS / f"{stem}.json"
    assert path.exists(), f"missing vector file {path}"
    counts = run_file(path)
    assert counts.failed == 0, counts.failures
    assert counts.passed >= FILES[stem]


def _runner_lines(*stems: str) -> list[str]:
    paths = [str(VECTORS / f"{stem}.json") for stem in stems]
    out = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.mls.vectors", *paths], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_runner_cli_prints_one_line_per_file() -> None:
    lines = _runner_lines("tree-math", "crypto-basics")
    assert lines[0] == "tree-math: 10 passed, 0 failed, 0 skipped"
    assert lines[1].startswith("crypto-basics: ") and " 0 failed" in lines[1]


def test_runner_cli_lines_for_tree_files() -> None:
    lines = _runner_lines("tree-operations", "welcome")
    assert lines[0] == "tree-operations: 5 passed, 0 failed, 0 skipped"
    assert lines[1].startswith("welcome: ") and " 0 failed" in lines[1]
