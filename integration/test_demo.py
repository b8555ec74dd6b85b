"""``./run demo`` (``python -m integration.demo``, ``ciris-av demo``): one real run over RNS, its JSON and exit status.

The real run is the join scenario without its race and restarts (~5 s); ``test_join.py`` runs the
full scenario. The failure paths use a stubbed scenario so they cost nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from integration import demo
from integration.join_scenario import JoinReport


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    path = tmp_path_factory.mktemp("demo") / "summary.json"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = demo.main(["--json", str(path)])
    return rc, json.loads(path.read_text()), out.getvalue()


def test_the_demo_passes_and_writes_the_summary_schema(real_run: tuple[int, dict[str, Any], str]) -> None:
    rc, summary, _ = real_run
    assert rc == 0, summary
    assert summary["ok"] is True
    assert isinstance(summary["late_joiner_first_frame_s"], float)
    assert summary["late_joiner_first_frame_s"] > 0
    assert summary["removed_member_decrypted_after_removal"] == 0
    assert isinstance(summary["relay_drops"], dict)
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in summary["relay_drops"].items())
    assert set(summary["peers"]) == {"pub", "sub1", "sub2", "joiner"}
    for name, peer in summary["peers"].items():
        assert {"sent", "received", "decrypted"} <= set(peer), name
        assert all(isinstance(peer[k], int) for k in ("sent", "received", "decrypted")), name


def test_every_peer_decrypts_and_the_publisher_sends(real_run: tuple[int, dict[str, Any], str]) -> None:
    peers = real_run[1]["peers"]
    assert peers["pub"]["sent"] > 0  # the publisher only sends: it opens nothing of its own stream
    for name in ("sub1", "sub2", "joiner"):
        assert peers[name]["decrypted"] > 0, name
        assert peers[name]["received"] >= peers[name]["decrypted"] > 0, name


def test_the_removed_member_was_fed_ciphertext_of_its_removal_epoch(real_run: tuple[int, dict[str, Any], str]) -> None:
    summary = real_run[1]
    removal = summary["removal"]
    assert removal["captured_frames_at_or_after_removal"] > 0  # a 0 above is not vacuous
    assert summary["peers"]["joiner"]["removed_at_epoch"] == removal["removal_epoch"]
    assert summary["relay_drops"].get("kid_sender_not_link_leaf", 0) >= 20  # the forged frames


def test_the_demo_prints_live_progress_and_a_summary_table(real_run: tuple[int, dict[str, Any], str]) -> None:
    text = real_run[2]
    assert "late joiner asks to join mid-stream" in text
    assert "publisher removes the late joiner" in text
    assert "[ok]" in text
    for name in ("pub", "sub1", "sub2", "joiner", "relay"):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
    assert "PASS:" in text


def _stub(monkeypatch: pytest.MonkeyPatch, report: JoinReport | Exception) -> None:
    def run(**_kw: Any) -> JoinReport:
        if isinstance(report, Exception):
            raise report
        return report

    monkeypatch.setattr(demo, "run_join_scenario", run)


def test_a_failed_check_gives_a_non_zero_exit_and_ok_false(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = JoinReport()
    report.check("something", False, "broken")
    report.figures["join_to_first_frame_s"] = 0.1
    report.results["removal_promise"] = {"opened_at_or_after_removal": 0, "removal_epoch": 5, "retained_epoch": 4,
                                         "captured_at_or_after_removal": 10, "opened_by_epoch": {}}
    _stub(monkeypatch, report)
    assert demo.main(["--json", str(tmp_path / "s.json")]) == 1
    assert json.loads((tmp_path / "s.json").read_text())["ok"] is False
    assert "[FAIL] something" in capsys.readouterr().out


def test_a_scenario_that_dies_gives_a_non_zero_exit_and_ok_false(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    _stub(monkeypatch, RuntimeError("p-sub1 died"))
    assert demo.main(["--json", str(tmp_path / "s.json")]) == 1
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] is False and summary["removed_member_decrypted_after_removal"] is None
