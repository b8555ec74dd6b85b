"""``python -m ciris_av_plugin.mls.vectors PATH [PATH ...]``: one line per file.

Exit 1 when a case failed, 2 when a file could not be read (missing, not JSON): a missing file is an
error, never a file with nothing to check. Exit status as the SFrame runner's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import run_file


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m ciris_av_plugin.mls.vectors PATH [PATH ...]", file=sys.stderr)
        return 2
    any_failed = unreadable = False
    for arg in argv:
        path = Path(arg)
        try:
            counts = run_file(path)
        except (OSError, ValueError) as exc:  # missing file, not JSON
            print(f"cannot read {path}: {exc}", file=sys.stderr)
            unreadable = True
            continue
        for line in counts.failures[:20]:
            print(f"  FAIL {line}", file=sys.stderr)
        print(f"{path.stem}: {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped")
        any_failed = any_failed or counts.failed > 0
    return 2 if unreadable else 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
