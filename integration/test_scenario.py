"""Layer-2 end to end over real RNS (issue 2): relay, publisher and three subscribers as processes.

One run of :func:`integration.scenario.run_scenario` (~20 s) backs every assertion below; each
test names one promise of the scenario.
"""

from __future__ import annotations

import pytest

from integration.scenario import ScenarioReport, run_scenario


@pytest.fixture(scope="module")
def scenario() -> ScenarioReport:
    return run_scenario()


def _assert(report: ScenarioReport, *fragments: str) -> None:
    checks = [c for c in report.checks if any(f in c.name for f in fragments)]
    assert checks, f"no check matches {fragments}"
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, failed


def test_mixed_mdus_force_resplitting(scenario: ScenarioReport) -> None:
    _assert(scenario, "mixed MDUs", "publisher sent")
    assert scenario.results["relay"]["engine"]["resplits"] > 0


def test_every_subscriber_decrypts_byte_identical_frames_in_order(scenario: ScenarioReport) -> None:
    _assert(scenario, "byte-identical", "in order", "carries the marker")


def test_healthy_subscribers_lose_nothing_and_get_every_frame_within_one_second(scenario: ScenarioReport) -> None:
    _assert(scenario, "received every frame", "within 1 s")


def test_a_late_subscriber_starts_at_a_keyframe(scenario: ScenarioReport) -> None:
    _assert(scenario, "first video frame is a keyframe", "decodable", "asked for keyframes")


def test_a_stopped_subscriber_is_stalled_bounded_and_resumes_at_a_keyframe(scenario: ScenarioReport) -> None:
    _assert(scenario, "stalled and resumed", "was told", "drops for the stalled", "bounded", "resumed at a keyframe")


def test_the_relay_never_holds_the_key_or_sees_plaintext(scenario: ScenarioReport) -> None:
    _assert(scenario, "never saw the plaintext marker", "never given the key")


def test_every_check_passed(scenario: ScenarioReport) -> None:
    assert scenario.ok, [f"{c.name}: {c.detail}" for c in scenario.failed()]
