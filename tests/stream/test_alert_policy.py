"""The alert policy's episode rules on hand-made prediction sequences."""

import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.alert_policy import AlertPolicy, AlertPolicyConfig
from stream.core.countdown import CountdownInterval
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

WINDOW = 150_000
WINDOW_SECONDS = 0.125  # exact in binary, so the timed rules fall on whole windows
FAR = 10.0  # a tsf that triggers no failure rule
FAILURE_AT = 100.0  # by default the TTF counts down to this time: the countdown stays put


def run(policy: AlertPolicy, probabilities, *, ttf=None, tsf=FAR, first_window=0):
    """Feed one window per probability; return {window number: transition}."""
    transitions = {}
    for offset, p in enumerate(probabilities):
        number = first_window + offset
        time = (number + 1) * WINDOW_SECONDS
        ttf_s = ttf[offset] if isinstance(ttf, list) else FAILURE_AT - time
        tsf_s = tsf[offset] if isinstance(tsf, list) else tsf
        transition = policy.update((number + 1) * WINDOW - 1, time, p, ttf_s, tsf_s)
        if transition is not None:
            transitions[number] = transition
    return transitions


def kinds(transitions):
    return {number: (t.kind, t.reason) for number, t in transitions.items()}


def sample_of(number):
    return (number + 1) * WINDOW - 1


@pytest.mark.parametrize("consecutive", [1, 2, 3])
def test_raises_after_k_consecutive_high_windows(consecutive):
    policy = AlertPolicy(AlertPolicyConfig(consecutive=consecutive))
    transitions = run(policy, [0.1] + [0.9] * 5)
    assert kinds(transitions) == {consecutive: ("raised", "probability_high")}
    raised = transitions[consecutive]
    assert raised.window_end_sample == raised.episode_sample == sample_of(consecutive)
    assert raised.window_end_time == (consecutive + 1) * WINDOW_SECONDS
    assert (raised.p_failure, raised.tsf_s) == (0.9, FAR)
    assert raised.failure_time == FAILURE_AT
    assert policy.raised


def test_a_single_spike_does_not_raise():
    policy = AlertPolicy()
    assert run(policy, [0.9, 0.1, 0.95, 0.2, 0.99, 0.49]) == {}
    assert not policy.raised


def test_the_raise_threshold_itself_counts_as_high():
    assert kinds(run(AlertPolicy(), [0.5, 0.5])) == {1: ("raised", "probability_high")}


def test_an_episode_holds_through_low_dips_shorter_than_the_withdrawal_time():
    # withdraw_after_s 0.5 = four window steps: the fifth low window in a row withdraws.
    policy = AlertPolicy(AlertPolicyConfig(withdraw_after_s=0.5))
    transitions = run(policy, [0.9, 0.9] + [0.1] * 4 + [0.4] + [0.1] * 5)
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  11: ("withdrawn", "probability_dropped")}
    assert transitions[11].episode_sample == transitions[1].episode_sample
    assert transitions[11].failure_time is None
    assert not policy.raised


def test_withdraw_after_zero_withdraws_at_the_first_low_window():
    config = AlertPolicyConfig(consecutive=1, withdraw_after_s=0.0)
    assert kinds(run(AlertPolicy(config), [0.9, 0.4, 0.2])) == {
        0: ("raised", "probability_high"), 2: ("withdrawn", "probability_dropped")}


def test_no_raise_in_the_refractory_time_after_a_withdrawal():
    config = AlertPolicyConfig(consecutive=1, withdraw_after_s=0.0, refractory_s=0.5)
    # Withdrawn at window 1 (t 0.25): no raise before t 0.75, i.e. before window 5.
    transitions = run(AlertPolicy(config), [0.9, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert kinds(transitions) == {0: ("raised", "probability_high"),
                                  1: ("withdrawn", "probability_dropped"),
                                  5: ("raised", "probability_high")}


def test_no_refractory_time_after_the_failure_passed():
    config = AlertPolicyConfig(consecutive=1, refractory_s=5.0)
    transitions = run(AlertPolicy(config), [0.9, 0.9, 0.9], tsf=[5.0, 0.1, 0.2])
    assert kinds(transitions) == {0: ("raised", "probability_high"),
                                  1: ("cleared", "failure_passed"),
                                  2: ("raised", "probability_high")}


def test_updated_when_the_predicted_failure_time_moves_by_more_than_the_step():
    policy = AlertPolicy(AlertPolicyConfig(consecutive=1, update_step_s=0.25))
    # Failure times (window end + ttf): 2.125, 2.125, 2.125 (moved 0), 2.25 (moved 0.125
    # from the published 2.125: no), 1.75 (moved 0.375: updated), 1.625 (0.125 from 1.75).
    transitions = run(policy, [0.9] * 6, ttf=[2.0, 1.875, 1.75, 1.75, 1.125, 0.875])
    assert kinds(transitions) == {0: ("raised", "probability_high"),
                                  4: ("updated", "countdown_moved")}
    updated = transitions[4]
    assert updated.failure_time == 1.75
    assert updated.episode_sample == transitions[0].episode_sample == sample_of(0)
    assert policy.predicted_failure_time == 1.75


def test_cleared_when_predicted_time_since_failure_resets():
    tsf = [8.0, 8.1, 8.2, 0.4]
    transitions = run(AlertPolicy(), [0.9, 0.9, 0.9, 0.9], tsf=tsf)
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  3: ("cleared", "failure_passed")}
    assert transitions[3].tsf_s == 0.4
    assert transitions[3].episode_sample == sample_of(1)


def test_a_low_time_since_failure_clears_only_after_it_was_high():
    tsf = [0.2, 0.3, 0.4, 0.5, 2.0, 0.6]
    transitions = run(AlertPolicy(), [0.9] * 6, tsf=tsf)
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  5: ("cleared", "failure_passed")}


def test_cleared_when_the_clock_passes_the_raises_failure_time_plus_grace():
    policy = AlertPolicy(AlertPolicyConfig(failure_grace_s=1.0, update_step_s=5.0))
    assert policy.update(1, 10.0, 0.9, 0.5, FAR) is None
    raised = policy.update(2, 11.0, 0.9, 0.5, FAR)
    assert raised.kind == "raised"
    assert policy.predicted_failure_time == 11.5
    assert policy.update(3, 12.5, 0.9, 0.1, FAR) is None  # exactly at the limit: not passed
    cleared = policy.update(4, 12.51, 0.9, 0.1, FAR)
    assert (cleared.kind, cleared.reason) == ("cleared", "failure_passed")
    assert policy.predicted_failure_time is None


def test_a_countdown_stuck_at_zero_is_cleared_by_the_raises_failure_time():
    policy = AlertPolicy(AlertPolicyConfig(failure_grace_s=0.5, update_step_s=0.2))
    policy.update(1, 10.0, 0.9, 0.5, FAR)
    assert policy.update(2, 10.25, 0.9, 0.5, FAR).failure_time == 10.75
    # The TTF stays at zero: every update moves the published failure time with the clock,
    # but the raise's 10.75 + 0.5 still ends the episode.
    for number, time in enumerate((10.5, 10.75, 11.0, 11.25), start=3):  # 11.25: the limit
        assert policy.update(number, time, 0.9, 0.0, FAR).kind == "updated"
    assert policy.update(7, 11.5, 0.9, 0.0, FAR).reason == "failure_passed"


def test_failure_passed_wins_over_a_withdrawal_in_the_same_window():
    config = AlertPolicyConfig(withdraw_after_s=0.0)
    transitions = run(AlertPolicy(config), [0.9, 0.9, 0.1, 0.1], tsf=[5.0, 5.0, 5.0, 0.1])
    assert kinds(transitions)[2] == ("withdrawn", "probability_dropped")
    transitions = run(AlertPolicy(config), [0.9, 0.9, 0.1], tsf=[5.0, 5.0, 0.1])
    assert kinds(transitions)[2] == ("cleared", "failure_passed")


def test_a_gap_restarts_the_run_towards_a_raise():
    policy = AlertPolicy()
    assert run(policy, [0.9]) == {}
    policy.gap()
    assert run(policy, [0.9], first_window=5) == {}
    assert kinds(run(policy, [0.9], first_window=6)) == {6: ("raised", "probability_high")}


def test_a_gap_keeps_the_episode_and_restarts_its_low_time():
    policy = AlertPolicy(AlertPolicyConfig(withdraw_after_s=0.25))
    run(policy, [0.9, 0.9])
    policy.gap()
    assert policy.raised
    assert run(policy, [0.1, 0.1], first_window=5) == {}
    policy.gap()
    assert run(policy, [0.1, 0.1], first_window=9) == {}
    assert policy.raised
    assert kinds(run(policy, [0.1], first_window=11)) == {
        11: ("withdrawn", "probability_dropped")}


def test_warming_up_windows_raise_nothing_and_say_so():
    policy = AlertPolicy(AlertPolicyConfig(consecutive=1, warmup_s=0.5))
    flags = []
    for number in range(6):
        transition = policy.update(sample_of(number), (number + 1) * WINDOW_SECONDS, 0.99,
                                   FAR, FAR)
        flags.append(policy.warming_up)
        if number < 4:
            assert transition is None
    # Windows at 0.125 .. 0.5 are within 0.5 s of the first; at 0.625 the context is full.
    assert flags == [True, True, True, True, False, False]
    assert not AlertPolicy().update(1, 0.1, 0.2, FAR, FAR) and not AlertPolicy().warming_up


def test_a_stricter_threshold_may_raise_while_warming_up():
    config = AlertPolicyConfig(consecutive=1, warmup_s=1.0, warmup_raise_threshold=0.95)
    transitions = run(AlertPolicy(config), [0.9, 0.9, 0.96])
    assert kinds(transitions) == {2: ("raised", "probability_high")}
    assert transitions[2].warming_up


def test_a_gap_starts_a_new_warm_up():
    policy = AlertPolicy(AlertPolicyConfig(consecutive=1, warmup_s=0.25))
    run(policy, [0.1] * 4)
    assert not policy.warming_up
    policy.gap()
    assert run(policy, [0.9, 0.9], first_window=10) == {}
    assert policy.warming_up
    assert kinds(run(policy, [0.9], first_window=12)) == {12: ("raised", "probability_high")}


def test_raised_and_updated_alerts_carry_the_calibrated_interval():
    interval = CountdownInterval(0.8, (1.0,), (-0.1, -0.5), (0.2, 0.6), (50, 50))
    policy = AlertPolicy(AlertPolicyConfig(consecutive=1, update_step_s=0.1,
                                           interval=interval))
    raised = policy.update(1, 10.0, 0.9, 0.5, FAR)
    assert (raised.failure_time_lower, raised.failure_time, raised.failure_time_upper) == (
        10.4, 10.5, 10.7)
    updated = policy.update(2, 10.25, 0.9, 1.5, FAR)  # the second TTF bin
    assert (updated.failure_time_lower, updated.failure_time_upper) == (11.25, 12.35)
    near = AlertPolicy(AlertPolicyConfig(consecutive=1, interval=interval))
    # A bound before the announcing window is moved up to it.
    assert near.update(1, 10.0, 0.9, 0.05, FAR).failure_time_lower == 10.0


KIND_SEQUENCE = re.compile(r"(R U* [WC] )*(R U* )?")


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 20), st.floats(-1, 20), st.booleans()),
                max_size=60),
       st.integers(1, 3), st.sampled_from([0.0, 0.1, 0.3]), st.sampled_from([0.0, 0.2]))
def test_episodes_are_well_formed_and_replay_identically(sequence, consecutive, withdraw,
                                                         refractory):
    config = AlertPolicyConfig(consecutive=consecutive, withdraw_after_s=withdraw,
                               refractory_s=refractory, warmup_s=0.05)

    def replay():
        policy, out = AlertPolicy(config), []
        for number, (p, ttf, tsf, gap_before) in enumerate(sequence):
            if gap_before:
                policy.gap()
            out.append(policy.update(number * 10 + 9, number * 0.01, p, ttf, tsf))
        return out

    first, second = replay(), replay()
    assert first == second
    transitions = [t for t in first if t is not None]
    letters = "".join(t.kind[0].upper() + " " for t in transitions)
    assert KIND_SEQUENCE.fullmatch(letters)
    for transition in transitions:  # every alert names the raise of its episode
        if transition.kind == "raised":
            episode = transition.episode_sample
        assert transition.episode_sample == episode


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 3), st.floats(-1, 3), st.booleans()),
                min_size=1, max_size=60),
       st.integers(0, 60))
def test_a_restored_snapshot_continues_exactly(sequence, stop):
    config = AlertPolicyConfig(consecutive=1, withdraw_after_s=0.02, refractory_s=0.03,
                               update_step_s=0.1, warmup_s=0.04, failure_grace_s=0.2)

    def feed(policy, items, first):
        out = []
        for number, (p, ttf, tsf, gap_before) in enumerate(items, start=first):
            if gap_before:
                policy.gap()
            out.append(policy.update(number * 10 + 9, number * 0.01, p, ttf, tsf))
        return out

    whole = feed(AlertPolicy(config), sequence, 0)
    stop = min(stop, len(sequence))
    before = AlertPolicy(config)
    head = feed(before, sequence[:stop], 0)
    state = json.loads(json.dumps(before.snapshot()))
    tail = feed(AlertPolicy.restore(config, state), sequence[stop:], stop)
    assert head + tail == whole


def test_a_snapshot_from_before_episodes_restores_as_an_open_episode():
    old = {"raised": True, "high_count": 0, "low_count": 1, "predicted_failure_time": 12.0,
           "tsf_reached": True, "last_window_end_sample": 999}
    policy = AlertPolicy.restore(AlertPolicyConfig(warmup_s=5.0), old)
    assert policy.raised and policy.predicted_failure_time == 12.0
    cleared = policy.update(1999, 11.0, 0.9, 1.0, 0.1)
    assert (cleared.kind, cleared.episode_sample, cleared.warming_up) == ("cleared", 999, False)


def test_numpy_inputs_give_json_ready_transitions():
    policy = AlertPolicy(AlertPolicyConfig(consecutive=1))
    transition = policy.update(np.int64(149_999), np.float64(0.0375), np.float32(0.75),
                               np.float32(0.25), np.float32(7.5))
    record = json.loads(json.dumps(transition.__dict__))
    assert record == {"kind": "raised", "reason": "probability_high",
                      "window_end_sample": 149_999, "window_end_time": 0.0375,
                      "p_failure": 0.75, "ttf_s": 0.25, "tsf_s": 7.5,
                      "episode_sample": 149_999, "failure_time": 0.2875,
                      "failure_time_lower": None, "failure_time_upper": None,
                      "warming_up": False}


@pytest.mark.parametrize(("arguments", "reason"), [
    ((9, 1.0, float("nan"), 1.0, 1.0), "p_failure must be finite"),
    ((9, 1.0, 1.2, 1.0, 1.0), r"p_failure must be in \[0, 1\]"),
    ((9, float("inf"), 0.5, 1.0, 1.0), "window_end_time must be finite"),
    ((9, 1.0, 0.5, 1.0, float("nan")), "tsf_s must be finite"),
    ((4, 1.0, 0.5, 1.0, 1.0), "does not come after"),
    ((5, 1.0, 0.5, 1.0, 1.0), "does not come after"),
])
def test_bad_predictions_are_refused(arguments, reason):
    policy = AlertPolicy()
    policy.update(5, 0.5, 0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match=reason):
        policy.update(*arguments)


def test_config_round_trips_through_json():
    interval = CountdownInterval(0.8, (), (-0.2,), (0.3,), (120,))
    config = AlertPolicyConfig(raise_threshold=0.7, clear_threshold=0.2, consecutive=3,
                               failure_tsf_s=0.5, failure_grace_s=2.0, withdraw_after_s=0.75,
                               refractory_s=2.0, update_step_s=0.1, warmup_s=5.0,
                               warmup_raise_threshold=0.9, interval=interval)
    assert AlertPolicyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AlertPolicyConfig.from_dict({}) == AlertPolicyConfig()
    assert AlertPolicyConfig.from_dict({"raise_threshold": 1}).raise_threshold == 1.0
    assert config.overridden({"refractory_s": 0.5, "warmup_s": None}).refractory_s == 0.5
    assert config.overridden({"warmup_s": None}) == config


@pytest.mark.parametrize(("values", "reason"), [
    ({"raise_threshold": 1.5}, r"raise_threshold must be in \[0, 1\]"),
    ({"clear_threshold": -0.1}, r"clear_threshold must be in \[0, 1\]"),
    ({"raise_threshold": 0.4, "clear_threshold": 0.45}, "above raise_threshold"),
    ({"raise_threshold": float("nan")}, "finite"),
    ({"raise_threshold": "0.5"}, "must be a number"),
    ({"consecutive": 0}, "consecutive"),
    ({"consecutive": 2.0}, "consecutive"),
    ({"consecutive": True}, "consecutive"),
    ({"failure_tsf_s": -1.0}, "failure_tsf_s must be >= 0"),
    ({"failure_grace_s": float("inf")}, "failure_grace_s must be finite"),
    ({"withdraw_after_s": -0.5}, "withdraw_after_s must be >= 0"),
    ({"refractory_s": "1"}, "must be a number"),
    ({"warmup_raise_threshold": 0.3}, "stricter"),
    ({"interval": {"coverage": 0.8}}, "countdown interval needs exactly the keys"),
    ({"interval": {"coverage": 1.5, "ttf_edges_s": [], "lower_s": [0.0], "upper_s": [0.1],
                   "n_calibration": [10]}}, r"coverage must be in \(0, 1\)"),
    ({"raise_treshold": 0.5}, "unknown alert policy settings"),
])
def test_config_validation(values, reason):
    with pytest.raises(LabquakeError, match=reason):
        AlertPolicyConfig.from_dict(values)
