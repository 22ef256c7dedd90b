"""The calm-alert metrics, the calm policy search, the countdown interval's calibration and
retuning a bundle's policy in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model.bundle import inference as bundle
from model.bundle.inference import Prediction
from model.data.simulate import simulate_blocks
from model.evaluation import evaluate
from model.evaluation.alert_metrics import (
    alerts_in_force,
    interval_hits,
    storm_metrics,
    transition_quality,
)
from model.training import dataset, policy_tuning
from stream import cli
from stream.core.alert_policy import AlertPolicyConfig, AlertTransition
from stream.core.countdown import CountdownInterval

pytestmark = pytest.mark.unit


def _alert(kind: str, time: float, failure_time: float | None = None,
           bounds: tuple[float, float] | None = None) -> AlertTransition:
    lower, upper = bounds or (None, None)
    reason = {"raised": "probability_high", "updated": "countdown_moved",
              "withdrawn": "probability_dropped", "cleared": "failure_passed"}[kind]
    return AlertTransition(kind, reason, int(time * 100), time, 0.9, 0.3, 5.0, 0,
                           failure_time, lower, upper)


def test_storm_metrics_by_hand() -> None:
    # One hour watched; failures at 10, 30 and 50 s; a storm of three raises before 10 s,
    # one withdrawn false alarm at 20 s, and 30 s warned by an episode whose interval holds.
    transitions = [
        _alert("raised", 9.0, 9.4, (9.2, 9.8)), _alert("withdrawn", 9.2),
        _alert("raised", 9.5, 10.3, (10.2, 10.6)), _alert("cleared", 10.1),
        _alert("raised", 20.0, 20.5, (20.3, 20.9)), _alert("withdrawn", 21.0),
        _alert("raised", 29.0, 29.5, (29.3, 29.8)), _alert("updated", 29.6, 30.0, (29.9, 30.2)),
        _alert("cleared", 30.2),
    ]
    quality = transition_quality(transitions, [10.0, 30.0, 50.0], [10.0, 30.0, 50.0],
                                          observed_s=3600.0)
    result = storm_metrics(quality, quality.observed_s, 0.8)
    assert (quality.n_raises, quality.n_true_raises, quality.n_detected) == (4, 3, 2)
    assert result["raises_per_failure"] == pytest.approx(4 / 3)
    assert result["false_alarms_per_hour"] == 1.0 and result["n_false_alarms"] == 1
    assert result["missed_failures"] == 1
    assert result["withdrawn_per_hour"] == 2.0 and result["n_updated"] == 1
    assert result["first_raise_precision"] == 0.5
    assert result["lead_time_p50_s"] == pytest.approx(1.0)  # leads 1.0 (10 s) and 1.0 (30 s)
    # At 10 s the raise of 9.5 s is in force: 10 is outside (10.2, 10.6); at 30 s the
    # update's (29.9, 30.2) holds it; nothing is in force at 50 s.
    assert interval_hits(transitions, [10.0, 30.0, 50.0]) == (1, 2)
    assert result["interval_coverage"] == 0.5 and result["n_interval_failures"] == 2
    assert [alert.kind for _, alert in alerts_in_force(transitions, [9.1, 9.3, 25.0])] == ["raised"]


def test_calm_score_makes_a_second_raise_cost_like_a_false_alarm() -> None:
    calm = evaluate.AlertQuality(n_failures=10, n_detected=10, n_raises=10, n_true_raises=10)
    stormy = evaluate.AlertQuality(n_failures=10, n_detected=10, n_raises=20, n_true_raises=20)
    assert policy_tuning.calm_score(calm) == 1.0
    assert policy_tuning.calm_score(stormy) == pytest.approx(2 * 0.5 / 1.5)
    assert policy_tuning.calm_score(evaluate.AlertQuality()) == 0.0


@pytest.fixture(scope="module")
def cycles() -> dataset.RecordWindows:
    """60 s of 2-3 s cycles at 40 kHz, windows of 4,096 samples (about 0.1 s)."""
    blocks = simulate_blocks(60.0, sample_rate=4e4, seed=5, cycle_seconds=(2.0, 3.0))
    return dataset.record_windows(blocks, 4e4, name="sim", window=4096, progress=False)


def _flapping(windows: dataset.RecordWindows) -> Prediction:
    """P(failure) high in the last 0.6 s before each failure, with a one-window dip every
    other window there; the TTF is exact."""
    near = windows.ttf_s < 0.6
    dips = (np.arange(len(windows)) % 2 == 0) & near
    p = np.where(near & ~dips, 0.8, np.where(dips, 0.35, 0.05)).astype(np.float32)
    tsf = np.nan_to_num(windows.tsf_s, nan=5.0).astype(np.float32)  # unknown before the first
    return Prediction(windows.ttf_s.astype(np.float32), tsf, p)


def test_the_calm_search_finds_one_raise_per_failure(cycles: dataset.RecordWindows) -> None:
    prediction = _flapping(cycles)
    runs = [evaluate.PolicyRuns.of(cycles, prediction)]
    storm = AlertPolicyConfig(raise_threshold=0.5, clear_threshold=0.4, consecutive=1,
                              withdraw_after_s=0.0, refractory_s=0.0)
    quality, _ = runs[0].quality(storm)
    assert quality.n_raises > 1.5 * quality.n_failures  # the dips flap a plain policy
    chosen = policy_tuning.tune_policy(runs, AlertPolicyConfig(), 0.8, full=True)
    quality, _ = runs[0].quality(chosen)
    # One raise per failure (the first failure, too early to be scored, is raised too).
    assert quality.n_detected == quality.n_failures > 10
    assert quality.n_true_raises == quality.n_raises == len(cycles.failure_samples)


def test_the_calibrated_interval_covers_new_failures_as_promised() -> None:
    rng = np.random.default_rng(0)
    ttf = rng.uniform(0.0, 1.0, 4000)
    residuals = rng.normal(0.0, 0.05 + 0.2 * ttf)  # wider for longer countdowns
    interval = CountdownInterval.calibrate(residuals[:400], ttf[:400], 0.8)
    assert len(interval.ttf_edges_s) == 2 and sum(interval.n_calibration) == 400
    bounds = np.array([interval.bounds(value) for value in ttf[400:]])
    covered = (bounds[:, 0] <= residuals[400:]) & (residuals[400:] <= bounds[:, 1])
    assert 0.76 <= covered.mean() <= 0.86
    assert interval.upper_s[2] - interval.lower_s[2] > interval.upper_s[0] - interval.lower_s[0]
    assert CountdownInterval.from_dict(json.loads(json.dumps(interval.to_dict()))) == interval
    with pytest.raises(ValueError, match="at least 10"):
        CountdownInterval.calibrate([0.1] * 9, [0.5] * 9, 0.8)


def test_calibration_uses_the_alert_in_force_at_each_failure(
        cycles: dataset.RecordWindows) -> None:
    # A TTF that is 0.1 s late everywhere: every residual is -0.1 s.
    prediction = _flapping(cycles)
    late = Prediction(prediction.ttf_s + np.float32(0.1), prediction.tsf_s, prediction.p_failure)
    runs = [evaluate.PolicyRuns.of(cycles, late)]
    config = AlertPolicyConfig(raise_threshold=0.3, clear_threshold=0.1, consecutive=1)
    residuals, ttfs = policy_tuning.interval_residuals(runs, config)
    assert ttfs.shape == residuals.shape
    assert residuals.size >= 10
    np.testing.assert_allclose(residuals, -0.1, atol=1e-3)
    interval = policy_tuning.calibrate_interval(runs, config, 0.8)
    assert all(-0.101 <= low <= high <= -0.099
               for low, high in zip(interval.lower_s, interval.upper_s, strict=True))


def test_write_policy_changes_only_the_policy(tmp_path: Path) -> None:
    source = tmp_path / "source.lqb"
    shutil.copytree(bundle.DEFAULT_BUNDLE_PATH, source)
    before = bundle.load(source)
    policy = AlertPolicyConfig(raise_threshold=0.6, clear_threshold=0.2, warmup_s=5.0,
                               interval=CountdownInterval(0.8, (), (-0.2,), (0.1,), (50,)))
    out = policy_tuning.write_policy(source, tmp_path / "out.lqb", policy, {"seeds": [1]})
    after = bundle.load(out)
    assert AlertPolicyConfig.from_dict(after.alert_policy) == policy
    assert after.version == before.version
    assert after.metadata["extra"]["policy_retuned"] == {"seeds": [1]}
    assert bundle.load(source).alert_policy == before.alert_policy  # the source untouched
    policy_tuning.write_policy(source, source, policy, {})  # in place
    assert AlertPolicyConfig.from_dict(bundle.load(source).alert_policy) == policy


@pytest.mark.parametrize(("extra", "message"), [
    (["--retune-seeds", "1"], "--retune-seeds and --calibration-seeds need --simulate"),
    (["--data", "x.csv"], "other calibration records"),
])
def test_retune_mistakes_are_one_line(extra: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["train", "--retune", str(bundle.DEFAULT_BUNDLE_PATH), "--out",
                 str(tmp_path / "x.lqb"), *extra]
    if "--data" not in extra:
        arguments[1:1] = []
        arguments += ["--data", "unused.csv"]
    assert cli.main(arguments) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
