"""Evaluation: the metric functions on hand-made inputs, and the ``evaluate`` verb."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from model.bundle import inference as bundle
from model.bundle.inference import Prediction
from model.data import records
from model.data.simulate import simulate_blocks
from model.evaluation import evaluate
from model.network import build_model
from model.training import dataset
from stream import cli
from stream.core.alert_policy import AlertPolicy, AlertPolicyConfig
from stream.core.events import CLOCK_DECIMALS, PROBABILITY_DECIMALS, TIME_DECIMALS

pytestmark = pytest.mark.unit

RATE = 5e4
WINDOW = 15_000


# --- TTF metrics ------------------------------------------------------------------------


def test_mean_absolute_error_by_hand() -> None:
    assert evaluate.mean_absolute_error([1.0, 2.0, 4.0], [2.0, 2.0, 1.0]) == pytest.approx(4 / 3)
    assert evaluate.mean_absolute_error(np.array([3.0]), np.array([3.0])) == 0.0


def test_r_squared_by_hand() -> None:
    true = np.array([1.0, 2.0, 3.0, 6.0])
    assert evaluate.r_squared(true, true) == 1.0
    assert evaluate.r_squared(true, np.full(4, true.mean())) == pytest.approx(0.0)
    # SS_res = 1 + 0 + 1 + 4 = 6, SS_tot = 4 + 1 + 0 + 9 = 14.
    assert evaluate.r_squared(true, [2.0, 2.0, 2.0, 4.0]) == pytest.approx(1 - 6 / 14)
    assert math.isnan(evaluate.r_squared([2.0, 2.0], [1.0, 3.0]))


def test_metric_inputs_must_match() -> None:
    with pytest.raises(ValueError, match="one length"):
        evaluate.mean_absolute_error([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        evaluate.r_squared([], [])


# --- alert metrics ----------------------------------------------------------------------


def test_alert_quality_by_hand() -> None:
    failures = [10.0, 30.0, 50.0, 70.0]
    raises = [
        8.5,   # exactly 1.5 s before 10: warns it (lead 1.5)
        9.9,   # also before 10: a second true raise, the lead stays the earliest's
        27.0,  # 3 s before 30: too early, false
        50.0,  # at the failure itself, not before it: false
        69.0,  # warns 70 (lead 1.0)
        90.0,  # no failure follows: false
    ]
    quality = evaluate.alert_quality(raises, failures, failures)
    assert (quality.n_failures, quality.n_detected) == (4, 2)
    assert (quality.n_raises, quality.n_true_raises) == (6, 3)
    assert quality.recall == 0.5
    assert quality.precision == 0.5
    assert quality.lead_times_s == pytest.approx((1.5, 1.0))


def test_alert_quality_scores_only_the_failures_given_for_recall() -> None:
    quality = evaluate.alert_quality([0.5, 9.0], [1.0, 10.0], scored_failure_times_s=[10.0])
    assert quality.recall == 1.0 and quality.n_failures == 1
    # The raise at 0.5 s still announced the failure at 1 s: precision counts every failure.
    assert quality.precision == 1.0


def test_alert_quality_without_raises_or_failures_is_nan() -> None:
    quality = evaluate.alert_quality([], [5.0], [5.0])
    assert quality.recall == 0.0 and math.isnan(quality.precision)
    assert math.isnan(evaluate.alert_quality([1.0], [], []).recall)


def test_alert_qualities_add_up() -> None:
    total = (evaluate.alert_quality([9.0], [10.0], [10.0])
             + evaluate.alert_quality([1.0], [20.0], [20.0]))
    assert (total.n_failures, total.n_detected, total.n_raises, total.n_true_raises) == (
        2, 1, 2, 1)
    assert total.lead_times_s == (1.0,)


def test_scored_failures_need_the_horizon_before_and_the_windows_up_to_them() -> None:
    failures = [100, 149, 150, 900, 1099, 1200, 1201]
    scored = evaluate.scored_failures(failures, first_sample=0, last_sample=1099, hop=100,
                                      horizon_samples=150)
    assert scored.tolist() == [150, 900, 1099]


def _hand_made_windows(p_failure: np.ndarray, hop: int = 100) -> dataset.RecordWindows:
    count = len(p_failure)
    first = np.arange(count) * hop
    return dataset.RecordWindows(
        name="hand-made", sample_rate=100.0, window=hop, hop=hop, n_samples=count * hop,
        failure_samples=np.array([1000, 2500], np.int64), feature_names=("x",),
        first_sample=first, end_time_s=(first + hop - 1) / 100.0,
        features=np.zeros((count, 1), np.float32), ttf_s=np.ones(count), tsf_s=np.ones(count),
        failure_soon=np.zeros(count, bool), cycle=np.zeros(count, np.int64),
        spans_failure=np.zeros(count, bool))


def test_alert_transitions_are_the_policys() -> None:
    p = np.array([0.1, 0.7, 0.8, 0.9, 0.1, 0.05, 0.02, 0.9, 0.9, 0.2])
    windows = _hand_made_windows(p)
    prediction = Prediction(np.full(10, 5.0), np.full(10, 3.0), p)
    config = AlertPolicyConfig(raise_threshold=0.6, clear_threshold=0.3, consecutive=2,
                               withdraw_after_s=0.0, refractory_s=0.0, update_step_s=100.0)
    transitions = evaluate.alert_transitions(windows, prediction, config)
    policy = AlertPolicy(config)
    expected = [policy.update(int(end), float(time), p_failure=float(prob), ttf_s=5.0,
                              tsf_s=3.0)
                for end, time, prob in zip(windows.last_sample, windows.end_time_s, p,
                                           strict=True)]
    assert transitions == [t for t in expected if t is not None]
    assert [t.kind for t in transitions] == ["raised", "withdrawn", "raised", "withdrawn"]


def test_each_contiguous_run_gets_a_fresh_policy() -> None:
    p = np.array([0.9, 0.9, 0.9, 0.9])
    windows = _hand_made_windows(p).select(np.array([True, False, True, True]))
    assert evaluate.contiguous_runs(windows) == [slice(0, 1), slice(1, 3)]
    prediction = Prediction(np.full(3, 5.0), np.full(3, 3.0), np.full(3, 0.9))
    config = AlertPolicyConfig(consecutive=2)
    _, transitions = evaluate.record_alert_quality(windows, prediction, config)
    # One window alone cannot raise with consecutive=2; the run of two raises once.
    assert [(t.kind, t.window_end_sample) for t in transitions] == [("raised", 399)]


def test_prepared_runs_score_every_policy_as_a_fresh_evaluation_does() -> None:
    rng = np.random.default_rng(3)
    # Values on the pipeline's rounding edges as well as random ones.
    p = np.concatenate([rng.uniform(0, 1, 30), [0.299995, 0.3000049, 0.6000049, 0.599995]])
    windows = _hand_made_windows(p).select(np.r_[np.ones(20, bool), False, np.ones(13, bool)])
    prediction = Prediction(rng.uniform(0, 9, len(windows)), rng.uniform(0, 9, len(windows)),
                            p[np.r_[np.ones(20, bool), False, np.ones(13, bool)]])
    prepared = evaluate.PolicyRuns.of(windows, prediction)
    for threshold, consecutive in [(0.3, 1), (0.6, 2), (0.5, 3), (0.9, 1)]:
        config = AlertPolicyConfig(raise_threshold=threshold, clear_threshold=threshold / 2,
                                   consecutive=consecutive)
        quality, transitions = prepared.quality(config)
        # The one-off path, window by window through a fresh AlertPolicy per run.
        expected = []
        for run in evaluate.contiguous_runs(windows):
            policy = AlertPolicy(config)
            for index in range(run.start, run.stop):
                transition = policy.update(
                    int(windows.last_sample[index]),
                    round(float(windows.end_time_s[index]), CLOCK_DECIMALS),
                    p_failure=round(float(prediction.p_failure[index]), PROBABILITY_DECIMALS),
                    ttf_s=round(float(prediction.ttf_s[index]), TIME_DECIMALS),
                    tsf_s=round(float(prediction.tsf_s[index]), TIME_DECIMALS))
                if transition is not None:
                    expected.append(transition)
        assert transitions == expected
        assert evaluate.record_alert_quality(windows, prediction, config) == (quality,
                                                                             transitions)


def test_metrics_report_every_field_and_null_for_the_undefined() -> None:
    p = np.zeros(30)
    windows = _hand_made_windows(p)
    prediction = Prediction(np.full(30, 1.0), np.zeros(30), p)
    result = evaluate.metrics([(windows, prediction)], AlertPolicyConfig(), 3.0)
    assert result["mae"] == 0.0
    assert result["baseline_mae"] == 2.0
    assert result["r2"] is None  # constant truth
    assert result["alert_precision"] is None and result["n_raises"] == 0
    # Failures at 10 s and 25 s, windows from 0 to 30 s: both scored, neither warned.
    assert (result["n_failures"], result["alert_recall"]) == (2, 0.0)
    assert result["lead_time_median_s"] is None
    assert result["n_windows"] == 30
    assert (result["raises_per_failure"], result["missed_failures"]) == (0.0, 2)
    assert result["observed_hours"] == pytest.approx(30.0 / 3600)
    assert result["false_alarms_per_hour"] == 0.0 and result["interval_coverage"] is None
    json.dumps(result, allow_nan=False)


# --- the verb ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled LANL-format CSV: 16 s at 50 kHz, short cycles for many failures."""
    path = tmp_path_factory.mktemp("evaluate") / "lab.csv"
    records.write_record(path, simulate_blocks(16.0, sample_rate=RATE, seed=3,
                                               cycle_seconds=(1.0, 2.0)), RATE)
    return path


@pytest.fixture(scope="module")
def untrained_bundle(record: Path, tmp_path_factory: pytest.TempPathFactory) -> bundle.Bundle:
    """A bundle of an untrained network: evaluate's numbers need no good model."""
    windows = dataset.file_windows(record, window=WINDOW, sample_rate=RATE, progress=False)
    keras.utils.set_random_seed(0)
    mean, std = bundle.fit_scaler(windows.features)
    return bundle.save(
        tmp_path_factory.mktemp("bundles") / "untrained.lqb",
        build_model(len(windows.feature_names)), feature_names=windows.feature_names,
        window=WINDOW, hop=WINDOW, scaler_mean=mean, scaler_std=std,
        training_fingerprint="sha256:test", metrics={},
        alert_policy=AlertPolicyConfig(raise_threshold=0.4, consecutive=1).to_dict(),
        extra={"training_ttf_median_s": 0.8, "sample_rate_hz": RATE})


def test_evaluate_json_reports_the_metrics_of_the_bundles_predictions(
        record: Path, untrained_bundle: bundle.Bundle,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["evaluate", "--model", str(untrained_bundle.path), "--data", str(record),
                     "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    for key in ("mae", "r2", "baseline_mae", "alert_recall", "alert_precision", "n_windows",
                "n_failures", "n_raises", "lead_time_median_s", "lead_time_min_s",
                "lead_time_max_s"):
        assert key in result
    # The sample rate comes from the bundle, the window and hop too.
    windows = dataset.file_windows(record, window=WINDOW, sample_rate=RATE, progress=False)
    prediction = untrained_bundle.predict_features(windows.features)
    assert result["n_windows"] == len(windows) == int(16.0 * RATE) // WINDOW
    assert result["mae"] == pytest.approx(
        evaluate.mean_absolute_error(windows.ttf_s, prediction.ttf_s), rel=1e-6)
    assert result["baseline_mae"] == pytest.approx(
        evaluate.mean_absolute_error(windows.ttf_s, np.full(len(windows), 0.8)))
    assert result["n_failures"] >= 1
    assert result["model_version"] == untrained_bundle.version


def test_evaluate_text_and_plot(record: Path, untrained_bundle: bundle.Bundle,
                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figure = tmp_path / "ttf.png"
    code = cli.main(["evaluate", "--model", str(untrained_bundle.path), "--data", str(record),
                     "--plot", str(figure)])
    out = capsys.readouterr().out
    assert code == 0
    assert "MAE" in out and "recall" in out and "plot written" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [path.name for path in tmp_path.iterdir()] == ["ttf.png"]


def test_evaluate_on_the_simulator(untrained_bundle: bundle.Bundle,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["evaluate", "--model", str(untrained_bundle.path), "--simulate", "9",
                     "--sim-seed", "5", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["n_windows"] == int(9 * RATE) // WINDOW
    assert result["data"] == "simulated 9 s, seed 5"


def test_evaluate_refuses_a_missing_bundle_in_one_line(
        record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["evaluate", "--model", str(tmp_path / "none.lqb"), "--data", str(record)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "no model bundle" in err


def test_plot_refuses_a_missing_folder(record: Path, untrained_bundle: bundle.Bundle,
                                       tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["evaluate", "--model", str(untrained_bundle.path), "--data", str(record),
                     "--plot", str(tmp_path / "absent" / "x.png")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
