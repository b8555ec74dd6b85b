"""Starting node processes for integration tests, the demo and benchmarks, and cleaning up after them.

Every child gets its own RNS config directory under one temp directory, a hard timeout it
enforces itself (``node.py`` arms an ``os._exit`` timer) and a result file it writes JSON to
(RNS detaches stdout in its exit handler, so stdout is not a reliable channel). The parent
kills whatever is left in :meth:`Cluster.close`, which callers run in a ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    spec: dict[str, Any]

    @property
    def result_path(self) -> Path:
        return self.workdir / "result.json"

    @property
    def ready_path(self) -> Path:
        return self.workdir / "ready.json"

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                try:
                    return json.loads(self.ready_path.read_text())
                except json.JSONDecodeError:
                    pass  # written but not yet complete
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready: {self.log_tail()}")
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready after {timeout} s: {self.log_tail()}")

    def wait_result(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise TimeoutError(f"{self.name} did not finish in {timeout} s: {self.log_tail()}") from None
        if not self.result_path.exists():
            raise RuntimeError(f"{self.name} exited {self.proc.returncode} without a result: {self.log_tail()}")
        return json.loads(self.result_path.read_text())

    def log_tail(self, n: int = 3000) -> str:
        path = self.workdir / "log.txt"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)


@dataclass
class Cluster:
    """A set of node processes under one temp directory."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ciris-av-it-")))
    nodes: list[Node] = field(default_factory=list)
    keep: bool = False

    def spawn(
        self, name: str, spec: dict[str, Any], *, cpus: str | None = None, entry: list[str] | None = None
    ) -> Node:
        """Start ``entry`` (default ``-m integration.node``) with a spec file, optionally pinned to ``cpus``."""
        workdir = self.root / name
        workdir.mkdir(parents=True, exist_ok=True)
        spec = dict(spec, name=name, workdir=str(workdir))
        (workdir / "spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, *(entry or ["-m", "integration.node"]), str(workdir / "spec.json")]
        if cpus is not None and _have_taskset():
            cmd = ["taskset", "-c", cpus, *cmd]
        log = open(workdir / "log.txt", "wb")  # noqa: SIM115 - owned by the child for its lifetime
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        node = Node(name, proc, workdir, spec)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                try:
                    os.kill(node.proc.pid, signal.SIGCONT)  # a stopped child cannot die of SIGTERM
                    node.proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for node in self.nodes:
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=5)
        if not self.keep:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)


def peak_rss_kb() -> int:
    """This process's own peak resident memory in KiB (``VmHWM`` of ``/proc/self/status``).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the high-water mark of the address
    space a process had *before* ``execve`` into it, and ``subprocess`` forks (vfork) from the
    parent, so every child of a large parent reports at least the parent's peak. A child of a
    pytest process that once peaked at 300 MB reads 300 MB however little it uses itself (see
    ``integration/test_peak_rss.py``). ``VmHWM`` belongs to the address space ``execve`` created.
    Falls back to ``ru_maxrss`` (an upper bound) where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _have_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None
