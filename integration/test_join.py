"""The joiner path end to end over real RNS (issue 5): relay, publisher, subscribers and joiners as processes.

One run of :func:`integration.join_scenario.run_join_scenario` (~20 s idle) backs every assertion below;
each test names one promise of the scenario. Marked slow: with its commit race and two restarts it takes
1-3 minutes on a loaded 2-core machine, too much of ``./run test``'s 5-minute budget; ``./run test-all``
and CI's ``./run test-slow`` run it. Its first half (join, leave, removal, forged KIDs, the removal
promise) also runs in ``./run test`` as the demo (``test_demo.py``).
"""

from __future__ import annotations

import pytest

from integration.join_scenario import JoinReport, run_join_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scenario() -> JoinReport:
    return run_join_scenario()


def _assert(report: JoinReport, *fragments: str) -> None:
    checks = [c for c in report.checks if any(f in c.name for f in fragments)]
    assert checks, f"no check matches {fragments}"
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, failed


def test_a_joiner_joins_mid_stream_and_decrypts_frames(scenario: JoinReport) -> None:
    _assert(scenario, "two subscribers joined", "joins mid-stream", "join latency recorded")
    print("join figures:", scenario.figures)  # noqa: T201 - shown with -s; the report carries them too


def test_a_leaver_and_a_removed_member_go_dark(scenario: JoinReport) -> None:
    _assert(scenario, "self-Remove is committed", "learns it is out", "opens no frame", "at and after the removal",
            "closed the leaver")


def test_two_members_race_for_one_epoch_and_the_loser_recovers(scenario: JoinReport) -> None:
    _assert(scenario, "race for one epoch")


def test_the_relay_drops_frames_sealed_under_another_members_kid(scenario: JoinReport) -> None:
    _assert(scenario, "another member's KID")


def test_the_relay_restarts_mid_stream_and_a_second_joiner_joins(scenario: JoinReport) -> None:
    _assert(scenario, "same destination", "stream resumes", "second joiner")


def test_a_restored_publisher_commits_an_update_before_it_sends(scenario: JoinReport) -> None:
    _assert(scenario, "restored publisher")


def test_every_check_passed(scenario: JoinReport) -> None:
    assert scenario.ok, [f"{c.name}: {c.detail}" for c in scenario.failed()]
