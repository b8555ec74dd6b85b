"""Starting node processes for integration tests, the demo and benchmarks, and cleaning up after them.

Every child gets its own RNS config directory under one temp directory, a hard timeout it
enforces itself (``node.py`` arms an ``os._exit`` timer) and a result file it writes JSON to
(RNS detaches stdout in its exit handler, so stdout is not a reliable channel). The parent
kills whatever is left in :meth:`Cluster.close`, which callers run in a ``finally``.

Nothing here starts on a wall-clock time computed in advance: a scenario waits until every child
reported ready (``ready.json``: links up, identified, subscribed), then :meth:`Cluster.release`
writes the cluster's ``go.json`` with the start instant, which children wait for
(:meth:`integration.node.Ctx.wait_go`) before their media clocks start. Every later step waits on
an event a child reports (``progress.json``, ``status.json``, ``result.json``) with a timeout far
beyond its expected time, so a slow machine makes a run slower, never red.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

READY_TIMEOUT_S = 60.0
"""A child's RNS start, link, identification and subscription take ~1-3 s on an idle machine; a busy
2-core CI machine has been seen 5x slower. 60 s is > 10x the expected time and still bounds a hang."""
EVENT_TIMEOUT_S = 60.0
"""Bound on waiting for one reported event (frames decrypted, a join, a stall, a catch-up): each takes
~1-5 s idle. Exceeding it means the behaviour is broken, not that the machine is slow."""
GO_TIMEOUT_S = 300.0
"""How long a ready child waits for the start signal before giving up: the parent starts a whole
cluster (up to ~12 processes) before it releases, each bounded by READY_TIMEOUT_S."""
POLL_S = 0.02
"""Polling interval for files children write (ready, progress, results)."""


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

    @property
    def progress_path(self) -> Path:
        return self.workdir / "progress.json"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                try:
                    return json.loads(self.ready_path.read_text())
                except json.JSONDecodeError:
                    pass  # written but not yet complete
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready: {self.log_tail()}")
            time.sleep(POLL_S)
        raise TimeoutError(f"{self.name} not ready after {timeout} s: {self.log_tail()}")

    def progress(self) -> dict[str, Any]:
        """The child's latest ``progress.json`` (``{}`` before the first one)."""
        return read_json(self.progress_path)

    def stop(self) -> None:
        """Ask the child to finish: it writes its result and exits by itself."""
        (self.workdir / "stop").touch()

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
        spec = dict(spec, name=name, workdir=str(workdir), go=str(self.go_path))
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

    @property
    def go_path(self) -> Path:
        return self.root / "go.json"

    def release(self) -> float:
        """The readiness barrier's start signal: call once every child reported ready; returns the start
        instant (wall clock, shared by every process on this host) that children read from ``go.json``."""
        t0 = time.time()
        write_json(self.go_path, {"t0": t0})
        return t0

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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file a child rewrites atomically; ``{}`` if it is not there yet."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so a reader never sees half of it (temp file, then rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def wait_until(what: str, pred: Callable[[], Any], timeout: float = EVENT_TIMEOUT_S,
               watch: Iterable[Node] = ()) -> bool:
    """Poll ``pred`` until it is true (returns True) or ``timeout`` passes (returns False).

    A child in ``watch`` that exits with a non-zero status ends the wait with RuntimeError: its log is
    the useful error, not a timeout. KeyError/TypeError from ``pred`` count as "not yet" (a status
    file without the field so far)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except (KeyError, TypeError):
            pass
        for node in watch:
            if node.proc.poll() not in (None, 0):
                raise RuntimeError(f"{node.name} died while waiting for {what}: {node.log_tail()}")
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def require(what: str, pred: Callable[[], Any], timeout: float = EVENT_TIMEOUT_S,
            watch: Iterable[Node] = ()) -> None:
    """:func:`wait_until` that raises TimeoutError naming ``what``: for set-up steps a scenario cannot go on without."""
    if not wait_until(what, pred, timeout, watch):
        tails = "; ".join(f"{n.name}: {n.log_tail(600)}" for n in watch)
        raise TimeoutError(f"no {what} after {timeout} s. {tails}")


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
