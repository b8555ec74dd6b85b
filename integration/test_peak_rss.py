"""The children's peak-memory figure (``harness.peak_rss_kb``) is their own, not their parent's.

``test_loss_recovery.test_memory_stays_bounded`` once failed in CI with a publisher at 304 MB where
it uses ~42 MB: ``ru_maxrss`` of a child started by ``subprocess`` includes the high-water mark of
the address space it was forked from, i.e. the pytest process's peak. These tests start an
intermediate process that peaks at ``PARENT_MB`` and frees it again, then a grandchild from it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from integration.harness import REPO, peak_rss_kb

PARENT_MB = 160
CHILD_MB = 64

_PARENT = f"""
import subprocess, sys
blob = bytearray({PARENT_MB} << 20)
for i in range(0, len(blob), 4096):
    blob[i] = 1
del blob
sys.exit(subprocess.run([sys.executable, "-c", sys.argv[1]], start_new_session=True).returncode)
"""

_CHILD = f"""
import json, resource
from integration.harness import peak_rss_kb
out = {{"own": peak_rss_kb(), "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}
blob = bytearray({CHILD_MB} << 20)
for i in range(0, len(blob), 4096):
    blob[i] = 1
out["own_after"] = peak_rss_kb()
print(json.dumps(out))
"""


def _grandchild() -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", _PARENT, _CHILD], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and the execve carry-over are Linux's")
def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    got = _grandchild()
    # What the kernel does (the cause of the CI failure): ru_maxrss carries the parent's peak.
    assert got["ru_maxrss"] >= PARENT_MB * 1024, got
    # What the harness reports instead: a bare interpreter, far below the parent's peak ...
    assert got["own"] < PARENT_MB * 1024 // 2, got
    # ... that still sees memory the child itself touches.
    assert got["own_after"] >= got["own"] + CHILD_MB * 1024 * 9 // 10, got


def test_peak_rss_is_positive_in_this_process() -> None:
    assert peak_rss_kb() > 0
