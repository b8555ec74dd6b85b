"""mlswg passive-client vectors: a Group joins and follows; a PublicGroup follows alongside it.

Every case of every implemented suite must pass (a case is counted passed or failed, never
dropped). Alongside the full client, a PublicGroup built from the first epoch's GroupInfo processes
every handshake and must hold the same GroupContext after each epoch.
"""

from __future__ import annotations

from collections import Counter

import pytest
from support_vectors import MLS_COUNTS, load_mls, mls_path

from ciris_av_plugin.mls import Group, Policy, PolicyRefusedError, PublicGroup
from ciris_av_plugin.mls.vectors import run_file
from ciris_av_plugin.mls.vectors._passive import case_time, play_case

# Suite-1 cases of each file (the relay's suite); every other suite must pass too.
SUITE1 = {
    "passive-client-welcome": 8,
    "passive-client-handling-commit": 13,
    "passive-client-random": 1,
}
# Cases per cipher suite in passive-client-handling-commit: 13 for each of suites 1-7.
HANDLING_COMMIT_PER_SUITE = 13


def _cases(stem: str) -> list[dict]:
    return load_mls(stem)


def test_every_pinned_passive_file_is_played_here() -> None:
    assert sorted(SUITE1) == sorted(s for s in MLS_COUNTS if s.startswith("passive-"))


@pytest.mark.parametrize("stem", sorted(SUITE1))
def test_passive_file_through_runner(stem: str) -> None:
    counts = run_file(mls_path(stem))
    assert (counts.passed, counts.failed, counts.skipped) == MLS_COUNTS[stem], counts.failures
    cases = _cases(stem)
    assert counts.passed == len(cases)  # every case counted: none dropped, none skipped
    assert sum(1 for c in cases if c["cipher_suite"] == 1) == SUITE1[stem]


def test_random_case_has_200_epochs() -> None:
    (case,) = _cases("passive-client-random")
    assert case["cipher_suite"] == 1 and len(case["epochs"]) == 200


def test_lifetimes_are_checked_against_a_time_inside_them() -> None:
    case = _cases("passive-client-welcome")[0]
    t = case_time(case)
    assert 1677842000 < t < 1709378000  # inside the vector KeyPackages' lifetimes, not a skipped check


class _Follower:
    """Builds a PublicGroup from the joined Group's first-epoch GroupInfo and follows each epoch."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.public: PublicGroup | None = None
        self.epochs = 0

    def __call__(self, n: int, group: Group, messages: list[bytes]) -> None:
        if n < 0:
            self.public = PublicGroup.from_group_info(group.group_info(ratchet_tree=True), policy=self.policy,
                                                      clock=group.clock)
            rebuilt = PublicGroup.from_group_info(group.group_info(ratchet_tree=False), group.tree.to_bytes(),
                                                  policy=self.policy, clock=group.clock)
            assert rebuilt.group_context == self.public.group_context
        else:
            assert self.public is not None
            for raw in messages:
                self.public.process(raw)
            self.epochs += 1
            # survive a restart mid-case, too
            self.public = PublicGroup.from_bytes(self.public.to_bytes(), clock=group.clock)
        assert self.public.group_context.to_bytes() == group.group_context.to_bytes()
        assert self.public.members == group.members
        assert self.public.epoch == group.epoch


@pytest.mark.parametrize("stem", sorted(SUITE1))
def test_public_group_follows_every_case(stem: str) -> None:
    followed = 0
    for case in _cases(stem):
        if case["cipher_suite"] != 1:
            continue
        follower = _Follower(Policy())
        play_case(case, follower)
        assert follower.epochs == len(case["epochs"])
        followed += 1
    assert followed == SUITE1[stem]


@pytest.mark.parametrize("suite", [2, 3, 4, 5, 6, 7])
def test_public_group_follows_other_suites(suite: int) -> None:
    cases = [c for c in _cases("passive-client-handling-commit") if c["cipher_suite"] == suite]
    assert len(cases) == HANDLING_COMMIT_PER_SUITE
    for case in cases:
        follower = _Follower(Policy())
        play_case(case, follower)
        assert follower.epochs == len(case["epochs"])


def test_handling_commit_covers_suites_1_to_7() -> None:
    suites = Counter(c["cipher_suite"] for c in _cases("passive-client-handling-commit"))
    assert suites == {s: HANDLING_COMMIT_PER_SUITE for s in range(1, 8)}


def test_relay_policy_refuses_psk_proposals_of_the_vectors() -> None:
    """The handling-commit cases with PSK proposals are valid MLS, but not for a relayed group."""
    refused = 0
    for case in _cases("passive-client-handling-commit"):
        if case["cipher_suite"] != 1:
            continue
        follower = _Follower(Policy.relay())
        try:
            play_case(case, follower)
        except PolicyRefusedError:
            refused += 1
    # cases 2, 3, 5 carry PSKs inline; 9, 10 and 12 by reference in a proposal message
    assert refused == 6


def test_runner_counts_a_wrong_expectation_as_failed() -> None:
    from ciris_av_plugin.mls.vectors._passive import run_passive

    case = dict(_cases("passive-client-handling-commit")[0])
    case["epochs"] = [dict(e) for e in case["epochs"]]
    case["epochs"][1]["epoch_authenticator"] = "00" * 32
    counts = run_passive("tampered", [case, {**_cases("passive-client-welcome")[0], "initial_epoch_authenticator": "00"}])
    assert (counts.passed, counts.failed) == (0, 2)
    unknown = {**_cases("passive-client-welcome")[0], "cipher_suite": 0x0A0A}
    counts = run_passive("grease", [unknown])
    assert (counts.passed, counts.failed, counts.skipped) == (0, 0, 1)
