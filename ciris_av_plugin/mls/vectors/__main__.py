"""``python -m ciris_av_plugin.mls.vectors PATH [PATH ...]``: one line per file, exit 1 on any failure."""

from __future__ import annotations

import sys
from pathlib import Path

from . import run_file


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m ciris_av_plugin.mls.vectors PATH [PATH ...]", file=sys.stderr)
        return 2
    any_failed = False
    for arg in argv:
        path = Path(arg)
        counts = run_file(path)
        for line in counts.failures[:20]:
            print(f"  FAIL {line}", file=sys.stderr)
        print(f"{path.stem}: {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped")
        any_failed = any_failed or counts.failed > 0
    return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
