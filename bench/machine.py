"""The one way every benchmark writes its JSON: its figures plus a ``machine`` block saying where, when and
how they were measured, so a figure in the README can be traced to a committed run (``bench/results/``) and
judged against the load the machine was under.

Use: ``rec = Recorder("name")`` when the benchmark starts (takes the load average then), and
``rec.write(path, figures)`` when it ends. ``describe`` turns a ``machine`` block into one line of text for
printed headers and for ``bench/tables.py``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
# The packages whose speed the figures depend on (besides Python itself): RNS for the transport benchmarks,
# cryptography for every AEAD, HPKE and signature.
VERSIONED_PACKAGES = ("rns", "cryptography")
# Writing the results file itself must not mark the tree dirty: it is the output, not the code that ran.
_GIT_PATHSPEC = (".", ":(exclude)bench/results")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_mib() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def _virtualisation() -> str | None:
    """What the guest can see of being virtualised; ``None`` when nothing is visible (bare metal or hidden)."""
    hints = []
    if "firecracker" in _read("/proc/cmdline"):
        hints.append("Firecracker VM")
    elif " hypervisor" in _read("/proc/cpuinfo"):
        hints.append("VM (hypervisor CPU flag)")
    if os.path.exists("/.dockerenv"):
        hints.append("container")
    return ", ".join(hints) or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Recorder:
    """One benchmark run: started when the benchmark starts, written once when it ends."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self._started = _now()
        self._load_start = _load()
        # The code that runs is the code at the start: commits made while a long benchmark runs are not it.
        self._commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no", "--", *_GIT_PATHSPEC)
        self._dirty = None if status is None else bool(status)

    def machine(self) -> dict[str, Any]:
        """The ``machine`` block: load average and time at the start and now; the commit at the start."""
        return {
            "cpu_model": _cpu_model(),
            "cpus_online": os.cpu_count(),
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "memory_mib": _memory_mib(),
            "kernel": f"{platform.system()} {platform.release()}",
            "virtualisation": _virtualisation(),
            "python": platform.python_version(),
            **{package: _version(package) for package in VERSIONED_PACKAGES},
            "load_average_start": self._load_start,
            "load_average_end": _load(),
            "started_utc": self._started,
            "finished_utc": _now(),
            "git_commit": self._commit,
            "git_dirty": self._dirty,
            # As typed (``sys.orig_argv``: interpreter, ``-m`` and all), run from the repository root.
            "command": list(sys.orig_argv),
        }

    def write(self, path: Path | str, figures: dict[str, Any]) -> dict[str, Any]:
        """Write ``{"benchmark", "machine", **figures}`` to ``path`` as indented JSON; return the document."""
        doc = {"benchmark": self.benchmark, "machine": self.machine(), **figures}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return doc


def describe(machine: dict[str, Any]) -> str:
    """The hardware and software of a ``machine`` block in one line (no run-specific fields)."""
    cpus = machine["cpus_online"]
    usable = len(machine["cpu_affinity"])
    cores = f"{cpus} CPUs" if usable == cpus else f"{cpus} CPUs ({usable} usable)"
    parts = [machine["cpu_model"], cores]
    if machine.get("memory_mib"):
        parts.append(f"{machine['memory_mib'] / 1024:.1f} GiB")
    if machine.get("virtualisation"):
        parts.append(machine["virtualisation"])
    parts.append(machine["kernel"])
    parts.append(f"Python {machine['python']}")
    parts += [f"{p} {machine[p]}" for p in VERSIONED_PACKAGES if machine.get(p)]
    return ", ".join(parts)


def summary() -> str:
    """``describe`` of this machine now, for the header a benchmark prints."""
    return describe(Recorder("-").machine())
