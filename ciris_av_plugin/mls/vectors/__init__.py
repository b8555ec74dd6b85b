"""Runner for the official mlswg interop vectors (``python -m ciris_av_plugin.mls.vectors PATH ...``).

Each vector file is recognised by its stem (``tree-math``, ``crypto-basics``, ...) and handed to the
checker module ``check_<stem with - replaced by _>`` in this package. A checker exposes
``run(cases: list[dict]) -> Counts``; a case of a cipher suite we do not implement counts as skipped,
never as passed.
"""

from __future__ import annotations

import importlib
import json
import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Counts:
    """Outcome of one vector file."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    """One line per failed case, for the log."""

    def fail(self, where: str, why: str) -> None:
        self.failed += 1
        self.failures.append(f"{where}: {why}")


def checker_for(stem: str):
    """The checker module for a vector file stem, or None if no checker exists yet."""
    name = "check_" + stem.replace("-", "_")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(name):
            return None
        raise


def run_file(path: Path) -> Counts:
    """Run every case of one vector file; a crashing case counts as failed, not as an abort."""
    stem = path.stem
    module = checker_for(stem)
    if module is None:
        counts = Counts()
        counts.fail(stem, "no checker for this vector file")
        return counts
    cases = json.loads(path.read_text())
    try:
        return module.run(cases)
    except Exception:  # a checker bug must show as a failure line, not a traceback without counts
        counts = Counts()
        counts.fail(stem, traceback.format_exc(limit=3))
        return counts
