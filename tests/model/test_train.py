"""Training: the cycle-grouped split, the targets, policy tuning, and the ``train`` verb."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from model.bundle import inference as bundle
from model.bundle.inference import Prediction
from model.data import records
from model.data.simulate import simulate_blocks
from model.network import FAILURE_OUTPUT, TSF_OUTPUT, TTF_OUTPUT
from model.training import dataset, train
from model.training import fit as fitting
from stream import cli
from stream.core.alert_policy import AlertPolicyConfig
from stream.core.errors import LabquakeError
from stream.core.windows import WINDOW_SAMPLES

pytestmark = pytest.mark.unit

CSV_RATE = 5e4
CSV_WINDOW = 15_000


@pytest.fixture(scope="module")
def overlapping() -> dataset.RecordWindows:
    """30 s of 2-3 s cycles at 20 kHz, windows of 4,096 every 2,048 samples (overlapping)."""
    blocks = simulate_blocks(30.0, sample_rate=2e4, seed=5, cycle_seconds=(2.0, 3.0))
    return dataset.record_windows(blocks, 2e4, name="sim", window=4096, hop=2048,
                                  progress=False)


def test_default_window_is_the_monitors() -> None:
    assert train.DEFAULT_WINDOW == WINDOW_SAMPLES == dataset.DEFAULT_WINDOW


# --- the split --------------------------------------------------------------------------


def test_split_keeps_validation_windows_apart_from_training_windows(
        overlapping: dataset.RecordWindows) -> None:
    split = fitting.split_by_cycles([overlapping], 0.2, seed=0)
    (fit_part,), (validation,) = split.train, split.validation
    assert len(fit_part) > len(validation) > 0
    # No validation window shares a sample with a training window.
    overlaps = ((validation.first_sample[:, None] <= fit_part.last_sample[None, :])
                & (validation.last_sample[:, None] >= fit_part.first_sample[None, :]))
    assert not overlaps.any()
    chosen = {cycle for _, cycle in split.validation_cycles}
    assert set(validation.cycle) | set(validation.last_cycle) <= chosen
    assert not (set(fit_part.cycle) | set(fit_part.last_cycle)) & chosen
    # Dropped: exactly the windows that touch a training and a validation cycle.
    dropped = len(overlapping) - len(fit_part) - len(validation)
    mixed = sum((first in chosen) != (last in chosen)
                for first, last in zip(overlapping.cycle, overlapping.last_cycle, strict=True))
    assert dropped == mixed > 0


def test_split_draws_about_the_fraction_of_failure_cycles_from_the_seed(
        overlapping: dataset.RecordWindows) -> None:
    failures = len(overlapping.failure_samples)
    split = fitting.split_by_cycles([overlapping], 0.25, seed=3)
    assert len(split.validation_cycles) == round(0.25 * failures)
    assert all(cycle < failures for _, cycle in split.validation_cycles)
    again = fitting.split_by_cycles([overlapping], 0.25, seed=3)
    assert again.validation_cycles == split.validation_cycles
    others = {tuple(fitting.split_by_cycles([overlapping], 0.25, seed=s).validation_cycles)
              for s in range(6)}
    assert len(others) > 1


def test_split_over_several_records_names_each_records_cycles(
        overlapping: dataset.RecordWindows) -> None:
    split = fitting.split_by_cycles([overlapping, overlapping], 0.5, seed=1)
    assert {record for record, _ in split.validation_cycles} <= {0, 1}
    assert len(split.train) == len(split.validation) == 2
    for record, part in enumerate(split.validation):
        mine = {cycle for owner, cycle in split.validation_cycles if owner == record}
        assert set(part.cycle) <= mine


def test_split_needs_two_failures(overlapping: dataset.RecordWindows) -> None:
    one_failure = overlapping.select(overlapping.cycle <= 1)
    few = dataset.RecordWindows(**{**one_failure.__dict__,
                                   "failure_samples": overlapping.failure_samples[:1]})
    with pytest.raises(LabquakeError, match="needs at least 2"):
        fitting.split_by_cycles([few], 0.2, seed=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        fitting.split_by_cycles([overlapping], 1.0, seed=0)


# --- targets and inputs -----------------------------------------------------------------


def test_targets_mask_the_unknown_time_since_failure(
        overlapping: dataset.RecordWindows) -> None:
    y, weights = fitting.targets([overlapping])
    unknown = np.isnan(overlapping.tsf_s)
    assert unknown.any() and not unknown.all()
    assert np.all(np.isfinite(y[TSF_OUTPUT]))
    np.testing.assert_array_equal(weights[TSF_OUTPUT], (~unknown).astype(np.float32))
    np.testing.assert_array_equal(y[TTF_OUTPUT], overlapping.ttf_s.astype(np.float32))
    np.testing.assert_array_equal(y[FAILURE_OUTPUT], overlapping.failure_soon)
    assert np.all(weights[TTF_OUTPUT] == 1) and np.all(weights[FAILURE_OUTPUT] == 1)


def test_network_inputs_standardise_per_feature() -> None:
    features = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 6.0]])
    mean, std = bundle.fit_scaler(features)
    inputs = fitting.network_inputs(features, mean, std)
    assert inputs.shape == (2, 1, 3) and inputs.dtype == np.float32
    np.testing.assert_allclose(inputs[:, 0, :], [[-1.0, 0.0, -1.0], [1.0, 0.0, 1.0]])


# --- policy tuning ----------------------------------------------------------------------


def test_tuning_finds_the_threshold_that_announces_every_failure(
        overlapping: dataset.RecordWindows) -> None:
    # A made-up model: P(failure) 0.35 in the last second before each failure, 0.1 else.
    last_second = overlapping.ttf_s < 1.0
    p_failure = np.where(last_second, 0.35, 0.1).astype(np.float32)
    prediction = Prediction(overlapping.ttf_s.astype(np.float32),
                            np.zeros(len(overlapping), np.float32), p_failure)
    config = fitting.tune_policy([(overlapping, prediction)])
    assert 0.1 < config.raise_threshold <= 0.35
    assert config.clear_threshold <= config.raise_threshold
    from model.evaluation.evaluate import record_alert_quality

    quality, _ = record_alert_quality(overlapping, prediction, config)
    assert quality.recall == 1.0 and quality.precision == 1.0
    # With nothing to find, the defaults stay.
    silent = Prediction(prediction.ttf_s, prediction.tsf_s, np.zeros_like(p_failure))
    assert fitting.tune_policy([(overlapping, silent)]) == AlertPolicyConfig()


@pytest.mark.parametrize("policy", [None, AlertPolicyConfig(raise_threshold=0.3,
                                                               clear_threshold=0.2,
                                                               consecutive=1)])
def test_stopping_on_alerts_keeps_the_epoch_whose_validation_alerts_were_best(
        overlapping: dataset.RecordWindows, policy: AlertPolicyConfig | None) -> None:
    from model.evaluation import evaluate

    split = fitting.split_by_cycles([overlapping], 0.3, seed=0)
    model, mean, std, history = fitting.fit(split, epochs=6, batch_size=64, patience=2,
                                          seed=0, stop_on="alerts", policy=policy)
    scores = history["val_alert_f1"]
    assert history["stop_on"] == "alerts" and len(scores) == history["epochs_run"]
    best = history["best_epoch"]
    # The kept epoch has the best F1 (ties: the lower validation loss) ...
    keys = [(score, -loss) for score, loss in zip(scores, history["val_loss"], strict=True)]
    assert keys.index(max(keys)) == best - 1
    # ... and no more than `patience` epochs ran after it (unless the epochs ran out).
    assert history["epochs_run"] == 6 or history["epochs_run"] - best == 2
    # The weights kept are that epoch's: its validation alerts score again as recorded.
    parts = [(part, fitting.network_prediction(model, fitting.network_inputs(part.features,
                                                                         mean, std)))
             for part in split.validation]
    config = policy if policy is not None else fitting.tune_policy(parts)
    quality = evaluate.metrics(parts, config, None)
    recall, precision = quality["alert_recall"] or 0.0, quality["alert_precision"] or 0.0
    f1 = 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
    assert f1 == pytest.approx(scores[best - 1], abs=1e-6)


def test_fit_refuses_an_unknown_stopping_score(overlapping: dataset.RecordWindows) -> None:
    split = fitting.split_by_cycles([overlapping], 0.3, seed=0)
    with pytest.raises(ValueError, match="stop_on"):
        fitting.fit(split, epochs=1, batch_size=64, patience=1, seed=0, stop_on="r2")


# --- the verb ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lanl_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 s of LANL-format CSV at 50 kHz with 1-2 s cycles (about 10 failures)."""
    path = tmp_path_factory.mktemp("train") / "lab.csv"
    records.write_record(path, simulate_blocks(16.0, sample_rate=CSV_RATE, seed=3,
                                               cycle_seconds=(1.0, 2.0)), CSV_RATE)
    return path


@pytest.fixture(scope="module")
def csv_bundle(lanl_csv: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[bundle.Bundle, str]:
    out = tmp_path_factory.mktemp("bundles") / "lab.lqb"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["train", "--data", str(lanl_csv), "--out", str(out), "--window",
                         str(CSV_WINDOW), "--sample-rate", str(CSV_RATE), "--epochs", "2",
                         "--seed", "1"])
    assert code == 0
    return bundle.load(out), printed.getvalue().strip()


def test_train_on_lanl_csv_writes_a_bundle_that_predicts(
        csv_bundle: tuple[bundle.Bundle, str], lanl_csv: Path) -> None:
    model, printed = csv_bundle
    # The context's choice and the baselines, then the one-line summary.
    summary = printed.splitlines()[-1]
    assert summary.startswith(f"trained {model.path} (blend, version {model.version})")
    assert "MAE" in summary and len(printed.splitlines()) == 3
    assert (model.window, model.hop) == (CSV_WINDOW, CSV_WINDOW)
    # The bundle predicts on raw windows of the record, as the monitor would give them.
    raw = records.read_record(lanl_csv, sample_rate=CSV_RATE).acoustic_data
    count = len(raw) // CSV_WINDOW
    windows = raw[:count * CSV_WINDOW].reshape(count, CSV_WINDOW)
    starts = np.arange(count, dtype=np.int64) * CSV_WINDOW
    prediction = model.predict(windows, starts)
    assert prediction.ttf_s.shape == prediction.p_failure.shape == (count,)
    assert np.all((prediction.p_failure >= 0) & (prediction.p_failure <= 1))
    # Training saw the same features: the dataset path and the bundle path agree.
    # The network reads each window with its stream context (model/features/context.py).
    assert model.context is not None and model.feature_names[-1] == "seconds_since_burst"
    cut = dataset.file_windows(lanl_csv, window=CSV_WINDOW, sample_rate=CSV_RATE,
                               progress=False)
    cut = dataset.add_context(cut, model.context).with_features(model.feature_names)
    np.testing.assert_allclose(model.predict_features(cut.features).ttf_s, prediction.ttf_s,
                               rtol=1e-5, atol=1e-5)


def test_train_metadata(csv_bundle: tuple[bundle.Bundle, str], lanl_csv: Path) -> None:
    model, _ = csv_bundle
    metadata = model.metadata
    assert metadata["training_fingerprint"] == train.fingerprint(
        {"files": [{"name": "lab.csv", "bytes": lanl_csv.stat().st_size}]})
    assert model.alert_policy == AlertPolicyConfig().to_dict()
    validation = model.metrics["validation"]
    for key in ("mae", "r2", "baseline_mae", "alert_recall", "alert_precision", "n_windows"):
        assert key in validation
    assert validation["mae"] > 0 and validation["n_windows"] > 0
    extra = metadata["extra"]
    assert extra["sample_rate_hz"] == CSV_RATE
    assert 0 < extra["training_ttf_median_s"] < 2.0
    assert extra["epochs_run"] == 2 and extra["seed"] == 1
    assert extra["n_train_windows"] > extra["n_validation_windows"] > 0
    assert not extra["policy_tuned_on_validation"]
    # Stopped on the validation alerts by default, one F1 per epoch kept.
    assert extra["stop_on"] == "alerts" and len(extra["val_alert_f1"]) == 2


def test_evaluate_reads_the_csv_at_the_bundles_rate(
        csv_bundle: tuple[bundle.Bundle, str], lanl_csv: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = csv_bundle
    code = cli.main(["evaluate", "--model", str(model.path), "--data", str(lanl_csv),
                     "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["n_windows"] == int(16.0 * CSV_RATE) // CSV_WINDOW
    assert result["n_failures"] >= 5  # failure times in seconds at 50 kHz, not 4 MHz


def _train_simulated(out: Path, *extra: str) -> bundle.Bundle:
    code = cli.main(["train", "--simulate", "40", "--sample-rate", "1e4", "--window", "4096",
                     "--epochs", "1", "--seed", "7", "--out", str(out), *extra])
    assert code == 0
    return bundle.load(out)


def test_train_from_the_simulator_is_reproducible_and_can_tune_the_policy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _train_simulated(tmp_path / "a.lqb", "--tune-policy")
    second = _train_simulated(tmp_path / "b.lqb", "--tune-policy")
    out = capsys.readouterr().out
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    extra = first.metadata["extra"]
    assert extra["training_data"] == {"simulator": {"seconds": 40.0, "seed": 0,
                                                    "sample_rate_hz": 1e4}}
    assert first.metadata["training_fingerprint"] == train.fingerprint(extra["training_data"])
    assert extra["policy_tuned_on_validation"]
    AlertPolicyConfig.from_dict(first.alert_policy)
    assert out.count("trained ") == 2


def test_train_can_stop_on_the_validation_loss(tmp_path: Path) -> None:
    extra = _train_simulated(tmp_path / "loss.lqb", "--stop-on", "loss").metadata["extra"]
    assert extra["stop_on"] == "loss" and "val_alert_f1" not in extra
    assert extra["best_epoch"] == int(np.argmin(extra["val_loss"])) + 1


def test_an_unknown_stopping_score_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--simulate", "60", "--out", "x.lqb", "--stop-on", "r2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stop-on: invalid choice: 'r2'" in err


def test_an_existing_folder_that_is_not_a_bundle_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes").mkdir()
    code = cli.main(["train", "--simulate", "60", "--out", str(tmp_path / "notes")])
    assert code == 2
    assert "is not a model bundle" in capsys.readouterr().err


@pytest.mark.parametrize(("arguments", "message"), [
    (["--data", "/nonexistent/train.csv"], "no such file"),
    (["--simulate", "60", "--hop", "0"], "hop 0 is not a positive"),
    (["--simulate", "60", "--window", "1000"], "too short for the features"),
    (["--simulate", "60", "--validation-fraction", "1.5"], "not between 0 and 1"),
    (["--simulate", "60", "--epochs", "0"], "--epochs 0 is below 1"),
    (["--simulate", "0"], "not a positive length"),
    (["--simulate", "60", "--tune-policy", "--raise-threshold", "0.3"], "drop one"),
    (["--simulate", "60", "--raise-threshold", "0.2", "--clear-threshold", "0.5"],
     "above raise_threshold"),
    # 8 s at 10 kHz of 7-16 s cycles: at most one failure.
    (["--simulate", "8", "--sample-rate", "1e4", "--window", "4096"], "needs at least 2"),
])
def test_bad_input_is_one_line(arguments: list[str], message: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--out", str(tmp_path / "x.lqb"), *arguments])
    err = capsys.readouterr().err
    # Progress bars may come first (they redraw with carriage returns); the error is last.
    errors = [line for line in re.split(r"[\r\n]", err) if line.startswith("labquake train: ")]
    assert code == 2
    assert len(errors) == 1 and message in errors[0]
    assert err.rstrip("\n").endswith(errors[0])
    assert not (tmp_path / "x.lqb").exists()
