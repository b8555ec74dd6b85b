"""The test suite stands alone: no path outside the checkout, helpers only through support_* modules,
and no test silently skipped because the project's own code failed to import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Built from pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/" + "work/", r"parents\[1\]" + r"\.parent"]))


def _modules() -> list[Path]:
    return sorted(TESTS.glob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_reads_outside_the_repository() -> None:
    """A sibling folder or one machine's absolute path is absent from a bare clone."""
    offenders = [
        f"{path.name}:{n}"
        for path in _modules()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_tests_share_helpers_only_through_support_modules() -> None:
    offenders = {
        path.name: sorted(m for m in _imported(path) if m.startswith(("test_", "tests.")) or m == "tests")
        for path in _modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_skip_of_the_projects_own_code() -> None:
    """``importorskip`` / ``skip`` would turn a broken module of ours into a green run."""
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"importorskip", "skip", "skipif", "xfail"}:
                offenders.append(f"{path.name}:{node.lineno} {node.attr}")
    assert offenders == []
