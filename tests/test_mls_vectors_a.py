"""The mlswg interop vectors of the crypto / key-schedule / framing half, through the runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ciris_av_plugin.mls.vectors import run_file

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "mls"

FILES = [
    "tree-math",
    "crypto-basics",
    "deserialization",
    "secret-tree",
    "key-schedule",
    "psk_secret",
    "transcript-hashes",
    "message-protection",
]


@pytest.mark.parametrize("stem", FILES)
def test_vector_file(stem: str) -> None:
    path = VECTORS / f"{stem}.json"
    assert path.exists(), f"missing vector file {path}"
    counts = run_file(path)
    assert counts.failed == 0, counts.failures
    assert counts.passed > 0


def test_runner_cli_prints_one_line_per_file() -> None:
    paths = [str(VECTORS / f"{stem}.json") for stem in ("tree-math", "crypto-basics")]
    out = subprocess.run(
        [sys.executable, "-m", "ciris_av_plugin.mls.vectors", *paths], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "tree-math: 10 passed, 0 failed, 0 skipped"
    assert lines[1].startswith("crypto-basics: ") and " 0 failed" in lines[1]
