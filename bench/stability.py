"""The stability record: the whole suite (``./run test-all``) N times in a row beside a busy core.

Usage: ``./run stability [--runs 5] [--json bench/results/stability.json] [-- PYTEST ARGS]``.

The suite must stay green on a loaded 2-core machine, so while it runs a child
``python -c 'while True: pass'`` keeps one core busy (started here, killed by its pid when the runs
end). Each run's counts come from pytest's JUnit XML, not from parsing its console output. The JSON
holds the command, the machine (``bench/machine.py``: CPU model, cores, load average at start and
end, dates, commit) and per run: exit status, passed/failed/errors/skipped, duration, the load
average around it and the names of any tests that did not pass; plus the one markdown line for
the README's record, which is also printed. Exit status 0 only if every run was green.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bench.machine import REPO, RESULTS_DIR, Recorder, describe

DEFAULT_RUNS = 5
"""The issue's record: five consecutive green runs."""
BUSY_LOOP = "while True: pass"
"""Occupies one core for the whole record, as another job on a shared CI machine would."""


def junit_counts(path: Path) -> dict[str, Any]:
    """Passed, failed, errors and skipped from a JUnit XML file, with the ids of tests that did not pass."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0}
    not_passed: list[str] = []
    for suite in suites:
        counts["tests"] += int(suite.get("tests", 0))
        counts["failed"] += int(suite.get("failures", 0))
        counts["errors"] += int(suite.get("errors", 0))
        counts["skipped"] += int(suite.get("skipped", 0))
        for case in suite.iter("testcase"):
            if any(child.tag in ("failure", "error") for child in case):
                not_passed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts["passed"] = counts["tests"] - counts["failed"] - counts["errors"] - counts["skipped"]
    counts["not_passed"] = not_passed
    return counts


def run_once(index: int, pytest_args: list[str], log_dir: Path) -> dict[str, Any]:
    """One ``./run test-all`` with a JUnit report; its console output goes to a log file."""
    xml = log_dir / f"run{index}.xml"
    log = log_dir / f"run{index}.log"
    cmd = [str(REPO / "run"), "test-all", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *pytest_args]
    load_start = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    with open(log, "wb") as out:
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    duration = time.monotonic() - started
    row: dict[str, Any] = {"run": index, "exit_code": rc, "duration_s": round(duration, 1),
                           "load_average_start": load_start,
                           "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    if xml.exists():
        row.update(junit_counts(xml))
    else:  # pytest never got to write it (collection crash, killed): the log says why
        row.update({"tests": 0, "passed": 0, "failed": 0, "errors": 1, "skipped": 0,
                    "not_passed": [f"no JUnit report; log tail: {log.read_text(errors='replace')[-2000:]}"]})
    row["green"] = rc == 0 and row["failed"] == 0 and row["errors"] == 0
    return row


def markdown_line(doc: dict[str, Any]) -> str:
    """The README record in one line: when, what, where, and the outcome of every run."""
    runs = doc["runs"]
    green = sum(r["green"] for r in runs)
    per_run = "; ".join(
        f"{r['passed']} passed, {r['failed']} failed, {r['errors']} errors, {r['skipped']} skipped in {r['duration_s']:.0f} s"
        for r in runs
    )
    day = doc["machine"]["started_utc"][:10]
    return (f"{day}: `{doc['command']}` — {green}/{len(runs)} runs green beside a busy core "
            f"({describe(doc['machine'])}; load average {doc['machine']['load_average_start']} at the start): {per_run}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"consecutive runs (default {DEFAULT_RUNS})")
    ap.add_argument("--json", type=Path, default=RESULTS_DIR / "stability.json", help="where to write the record")
    ap.add_argument("--no-busy-core", action="store_true", help="do not occupy a core (for trying the script)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    rec = Recorder("stability")
    busy = None if args.no_busy_core else subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="ciris-av-stability-") as tmp:
            for i in range(1, args.runs + 1):
                row = run_once(i, args.pytest_args, Path(tmp))
                runs.append(row)
                print(f"run {i}/{args.runs}: {'green' if row['green'] else 'RED'} — {row['passed']} passed, "
                      f"{row['failed']} failed, {row['errors']} errors, {row['skipped']} skipped in "
                      f"{row['duration_s']:.0f} s (load {row['load_average_start']})", flush=True)
                for name in row["not_passed"]:
                    print(f"    not passed: {name}", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    command = "./run test-all" + (" " + " ".join(args.pytest_args) if args.pytest_args else "")
    figures = {"command": command, "runs_requested": args.runs, "busy_core": busy is not None,
               "all_green": all(r["green"] for r in runs), "runs": runs}
    line = markdown_line({**figures, "machine": rec.machine()})
    rec.write(args.json, {**figures, "markdown": line})
    print(line)
    print(f"record written to {args.json}")
    return 0 if figures["all_green"] else 1


if __name__ == "__main__":
    sys.exit(main())
