"""The mlswg interop vectors of the structures / tree / TreeKEM / Welcome half, through the runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ciris_av_plugin.mls.vectors import run_file

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "mls"

# Suite-independent files must pass every case; the others must pass every suite 1 case.
FILES = {
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


def test_runner_cli_lines_for_part_b() -> None:
    paths = [str(VECTORS / f"{stem}.json") for stem in ("tree-operations", "welcome")]
    out = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.mls.vectors", *paths], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "tree-operations: 5 passed, 0 failed, 0 skipped"
    assert lines[1].startswith("welcome: ") and " 0 failed" in lines[1]
