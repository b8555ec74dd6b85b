"""README's benchmark figures are the committed runs' figures.

Every table of README's "Benchmarks" section must be exactly what ``bench/tables.py`` renders from the JSON in
``bench/results/`` (each written by the command named beside its table, with the machine described), and a
table with no committed run behind it fails. The checker itself is tested on doctored copies of README and of
the results, so it cannot quietly pass everything.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MACHINE_KEYS = {
    "cpu_model", "cpus_online", "cpu_affinity", "memory_mib", "kernel", "virtualisation", "python", "rns",
    "cryptography", "load_average_start", "load_average_end", "started_utc", "finished_utc", "git_commit",
    "git_dirty", "command",
}


def _load_tables():
    # bench/ is scripts, not an installed package: load the renderer from its file.
    spec = importlib.util.spec_from_file_location("bench_tables_under_test", REPO / "bench" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tables = _load_tables()


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A copy of the committed results the renderer reads instead, to doctor."""
    copy = tmp_path / "results"
    shutil.copytree(REPO / "bench" / "results", copy)
    monkeypatch.setattr(tables, "RESULTS_DIR", copy)
    return copy


def test_readme_benchmarks_are_the_committed_results():
    assert tables.problems(README.read_text()) == []


def test_every_block_is_in_the_readme_and_names_its_results_file():
    text = tables.section(README.read_text())
    for name in tables.BLOCKS:
        assert f"<!-- bench:{name} -->" in text
        if name != "machine":
            assert f"[`bench/results/{name}.json`](bench/results/{name}.json)" in tables.BLOCKS[name]()


def test_every_committed_result_describes_its_machine_and_command():
    files = sorted((REPO / "bench" / "results").glob("*.json"))
    assert {f.stem for f in files} >= set(tables.BLOCKS) - {"machine"}
    for f in files:
        machine = json.loads(f.read_text())["machine"]
        assert MACHINE_KEYS <= set(machine), f.name
        assert machine["command"][machine["command"].index("--json") + 1] == f"bench/results/{f.name}"


def test_a_changed_figure_is_caught():
    readme = README.read_text()
    body = tables.BLOCKS["mls_ops"]()
    row = next(line for line in body.splitlines() if line.startswith("| 128 |"))
    doctored = readme.replace(row, row.replace("| 128 |", "| 129 |"), 1)
    assert doctored != readme
    assert any(p.startswith("mls_ops:") for p in tables.problems(doctored))


def test_a_table_with_no_committed_source_is_caught():
    readme = README.read_text()
    section = tables.section(readme)
    doctored = readme.replace(section, section + "\n| op | ms |\n|---:|---:|\n| join | 0.1 |\n")
    found = tables.problems(doctored)
    assert len(found) == 3 and all(p.startswith("table line with no committed source") for p in found)


def test_a_missing_results_file_is_caught(results):
    (results / "join_latency.json").unlink()
    found = tables.problems(README.read_text())
    assert [p for p in found if p.startswith("join_latency: cannot render")]


def test_results_written_by_another_command_are_caught(results):
    path = results / "mls_ops.json"
    doc = json.loads(path.read_text())
    doc["machine"]["command"][doc["machine"]["command"].index("--json") + 1] = "/tmp/elsewhere.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(tables.FigureError, match="does not write it"):
        tables.BLOCKS["mls_ops"]()


def test_new_figures_change_the_readme_rendering(results):
    path = results / "join_latency.json"
    doc = json.loads(path.read_text())
    doc["runs"][-1]["join_to_first_frame_s_p95"] = 2.0
    path.write_text(json.dumps(doc))
    body = tables.BLOCKS["join_latency"]()
    assert "2000 ms" in body and "**not met**" in body
    assert any(p.startswith("join_latency:") for p in tables.problems(README.read_text()))
