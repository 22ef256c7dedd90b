"""The alert policy on hand-made prediction sequences."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.alert_policy import AlertPolicy, AlertPolicyConfig
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

WINDOW = 150_000
WINDOW_SECONDS = 0.0375
FAR = 10.0  # a ttf/tsf that triggers no failure rule


def run(policy: AlertPolicy, probabilities, *, ttf=FAR, tsf=FAR, first_window=0):
    """Feed one window per probability; return {window number: transition}."""
    transitions = {}
    for offset, p in enumerate(probabilities):
        number = first_window + offset
        ttf_s = ttf[offset] if isinstance(ttf, list) else ttf
        tsf_s = tsf[offset] if isinstance(tsf, list) else tsf
        transition = policy.update((number + 1) * WINDOW - 1, (number + 1) * WINDOW_SECONDS,
                                   p, ttf_s, tsf_s)
        if transition is not None:
            transitions[number] = transition
    return transitions


def kinds(transitions):
    return {number: (t.kind, t.reason) for number, t in transitions.items()}


@pytest.mark.parametrize("consecutive", [1, 2, 3])
def test_raises_after_k_consecutive_high_windows(consecutive):
    policy = AlertPolicy(AlertPolicyConfig(consecutive=consecutive))
    transitions = run(policy, [0.1] + [0.9] * 5)
    assert kinds(transitions) == {consecutive: ("raised", "probability_high")}
    raised = transitions[consecutive]
    assert raised.window_end_sample == (consecutive + 1) * WINDOW - 1
    assert raised.window_end_time == pytest.approx((consecutive + 1) * WINDOW_SECONDS)
    assert (raised.p_failure, raised.ttf_s, raised.tsf_s) == (0.9, FAR, FAR)
    assert policy.raised


def test_a_single_spike_does_not_raise():
    policy = AlertPolicy()
    assert run(policy, [0.9, 0.1, 0.95, 0.2, 0.99, 0.49]) == {}
    assert not policy.raised


def test_the_raise_threshold_itself_counts_as_high():
    assert kinds(run(AlertPolicy(), [0.5, 0.5])) == {1: ("raised", "probability_high")}


def test_clears_when_probability_stays_low_for_k_windows():
    transitions = run(AlertPolicy(), [0.9, 0.9, 0.2, 0.25, 0.1])
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  3: ("cleared", "probability_dropped")}
    assert transitions[3].p_failure == 0.25


def test_hysteresis_keeps_state_between_the_thresholds():
    policy = AlertPolicy()
    # Between clear (0.3) and raise (0.5): neither raises nor clears.
    assert run(policy, [0.4] * 10) == {}
    transitions = run(policy, [0.9, 0.9] + [0.4] * 10 + [0.2, 0.4, 0.2, 0.2], first_window=10)
    assert kinds(transitions) == {11: ("raised", "probability_high"),
                                  25: ("cleared", "probability_dropped")}


def test_clears_when_predicted_time_since_failure_resets():
    tsf = [8.0, 8.1, 8.2, 0.4]
    transitions = run(AlertPolicy(), [0.9, 0.9, 0.9, 0.9], tsf=tsf)
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  3: ("cleared", "failure_passed")}
    assert transitions[3].tsf_s == 0.4


def test_a_low_time_since_failure_clears_only_after_it_was_high():
    tsf = [0.2, 0.3, 0.4, 0.5, 2.0, 0.6]
    transitions = run(AlertPolicy(), [0.9] * 6, tsf=tsf)
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  5: ("cleared", "failure_passed")}


def test_clears_when_the_clock_passes_the_predicted_failure_time_plus_grace():
    policy = AlertPolicy(AlertPolicyConfig(failure_grace_s=1.0))
    assert policy.update(1, 10.0, 0.9, 0.5, FAR) is None
    raised = policy.update(2, 11.0, 0.9, 0.5, FAR)
    assert raised.kind == "raised"
    assert policy.predicted_failure_time == 11.5
    assert policy.update(3, 12.5, 0.9, 0.1, FAR) is None  # exactly at the limit: not passed
    cleared = policy.update(4, 12.51, 0.9, 0.1, FAR)
    assert (cleared.kind, cleared.reason) == ("cleared", "failure_passed")
    assert policy.predicted_failure_time is None


def test_failure_passed_wins_over_probability_dropped_in_the_same_window():
    transitions = run(AlertPolicy(), [0.9, 0.9, 0.1, 0.1], tsf=[5.0, 5.0, 5.0, 0.1])
    assert kinds(transitions)[3] == ("cleared", "failure_passed")


def test_after_a_clear_raising_needs_k_fresh_windows():
    transitions = run(AlertPolicy(), [0.9, 0.9, 0.9, 0.9, 0.9, 0.9], tsf=[5, 5, 5, 0.1, 5, 5])
    assert kinds(transitions) == {1: ("raised", "probability_high"),
                                  3: ("cleared", "failure_passed"),
                                  5: ("raised", "probability_high")}


def test_a_gap_restarts_the_counts():
    policy = AlertPolicy()
    assert run(policy, [0.9]) == {}
    policy.gap()
    assert run(policy, [0.9], first_window=5) == {}
    assert kinds(run(policy, [0.9], first_window=6)) == {6: ("raised", "probability_high")}


def test_a_gap_does_not_drop_a_raised_alert():
    policy = AlertPolicy()
    run(policy, [0.9, 0.9])
    policy.gap()
    assert policy.raised
    assert run(policy, [0.1], first_window=5) == {}
    policy.gap()
    assert run(policy, [0.1], first_window=9) == {}
    assert policy.raised
    assert kinds(run(policy, [0.1], first_window=10)) == {10: ("cleared", "probability_dropped")}


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 20), st.floats(-1, 20), st.booleans()),
                max_size=60),
       st.integers(1, 4))
def test_same_predictions_give_same_transitions_and_they_alternate(sequence, consecutive):
    config = AlertPolicyConfig(consecutive=consecutive)

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
    assert [t.kind for t in transitions] == ["raised", "cleared"] * (len(transitions) // 2) + (
        ["raised"] if len(transitions) % 2 else [])


def test_numpy_inputs_give_json_ready_transitions():
    policy = AlertPolicy(AlertPolicyConfig(consecutive=1))
    transition = policy.update(np.int64(149_999), np.float64(0.0375), np.float32(0.75),
                               np.float32(0.25), np.float32(7.5))
    record = json.loads(json.dumps(transition.__dict__))
    assert record == {"kind": "raised", "reason": "probability_high",
                      "window_end_sample": 149_999, "window_end_time": 0.0375,
                      "p_failure": 0.75, "ttf_s": 0.25, "tsf_s": 7.5}


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
    config = AlertPolicyConfig(raise_threshold=0.7, clear_threshold=0.2, consecutive=3,
                               failure_tsf_s=0.5, failure_grace_s=2.0)
    assert AlertPolicyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert AlertPolicyConfig.from_dict({}) == AlertPolicyConfig()
    assert AlertPolicyConfig.from_dict({"raise_threshold": 1}).raise_threshold == 1.0


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
    ({"raise_treshold": 0.5}, "unknown alert policy settings"),
])
def test_config_validation(values, reason):
    with pytest.raises(LabquakeError, match=reason):
        AlertPolicyConfig.from_dict(values)

