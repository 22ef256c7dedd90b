"""Cross-validation grouped by earthquake cycle, alone and in ``labquake train --folds``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.bundle import inference as bundle
from model.data.simulate import simulate_blocks
from model.network import build_model
from model.training import cross_validation, dataset, train
from model.training import fit as fitting
from stream import cli
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def windows() -> dataset.RecordWindows:
    """30 s of 2-3 s cycles at 20 kHz (about 12 failures), windows of 4,096 every 2,048."""
    blocks = simulate_blocks(30.0, sample_rate=2e4, seed=5, cycle_seconds=(2.0, 3.0))
    return dataset.record_windows(blocks, 2e4, name="sim", window=4096, hop=2048,
                                  feature_names=("num_peaks_2", "log_variance"),
                                  progress=False)


def test_folds_deal_every_failure_cycle_once(windows: dataset.RecordWindows) -> None:
    folds = cross_validation.cycle_folds([windows], 4, seed=3)
    dealt = [pair for fold in folds for pair in fold]
    assert sorted(dealt) == fitting.failure_cycles([windows])
    assert len(dealt) == len(set(dealt)) == len(windows.failure_samples)
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1 and all(fold == sorted(fold) for fold in folds)
    assert cross_validation.cycle_folds([windows], 4, seed=3) == folds
    assert cross_validation.cycle_folds([windows], 4, seed=4) != folds


@pytest.mark.parametrize(("folds", "message"), [
    (1, "--folds 1 is below 2"),
    (99, "--folds 99 exceeds the"),
])
def test_impossible_fold_counts_are_refused(folds: int, message: str,
                                            windows: dataset.RecordWindows) -> None:
    with pytest.raises(LabquakeError, match=message):
        cross_validation.cycle_folds([windows], folds, seed=0)


def test_train_prints_and_stores_each_folds_mae(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fits: list[tuple] = []

    def untrained_fit(split: fitting.Split, **_: object) -> tuple:
        # The fitting itself is tested in test_train; here only what CV does around it.
        features = np.concatenate([part.features for part in split.train])
        fitted = (split, build_model(features.shape[1]), *bundle.fit_scaler(features))
        fits.append(fitted)
        return (*fitted[1:], {"epochs_run": 1, "best_epoch": 1, "loss": [1.0],
                              "val_loss": [1.0]})

    monkeypatch.setattr(train, "fit", untrained_fit)
    monkeypatch.setattr(fitting, "fit", untrained_fit)
    out = tmp_path / "cv.lqb"
    code = cli.main(["train", "--simulate", "40", "--sample-rate", "1e4", "--window", "4096",
                     "--seed", "7", "--folds", "2", "--out", str(out)])
    # The context's choice first, then the folds, their summary, the baselines, the model.
    printed = capsys.readouterr().out.splitlines()[1:]
    assert code == 0
    model = bundle.load(out)
    stored = model.metrics["cross_validation"]
    assert stored["folds"] == 2 and len(stored["per_fold"]) == 2
    assert stored["mae_mean"] == pytest.approx(np.mean([fold["mae"]
                                                        for fold in stored["per_fold"]]))
    # Two fold fits, then the bundle's own on the usual split.
    assert len(fits) == 3
    assert [list(pair) for pair in fits[2][0].validation_cycles] == (
        model.metadata["extra"]["validation_cycles"])
    record = dataset.simulated_windows(40.0, sample_rate=1e4, window=4096, progress=False)
    folds = cross_validation.cycle_folds([record], 2, seed=7)
    for line, fold, held_out, (split, fold_model, mean, std) in zip(
            printed[:2], stored["per_fold"], folds, fits, strict=False):
        # Each fold held out its dealt cycles and was scored on exactly their windows.
        assert split.validation_cycles == held_out
        assert fold["validation_cycles"] == [list(pair) for pair in held_out]
        assert fold["n_validation"] == len(split.validation[0]) > 0
        assert fold["n_train"] == len(split.train[0])
        true = split.validation[0].ttf_s
        predicted = fitting.network_prediction(
            fold_model, fitting.network_inputs(split.validation[0].features, mean, std)).ttf_s
        assert fold["mae"] == pytest.approx(np.mean(np.abs(true - predicted)))
        baseline = np.mean(np.abs(true - np.median(split.train[0].ttf_s)))
        assert fold["baseline_mae"] == pytest.approx(baseline)
        assert line.startswith(f"fold {fold['fold']}/2: {len(held_out)} cycles held out "
                               f"({fold['n_validation']:,} windows, {fold['n_train']:,} "
                               f"training): MAE {fold['mae']:.3g} s (baseline "
                               f"{fold['baseline_mae']:.3g} s), best epoch 1/1")
    assert printed[2].startswith(f"cross-validation over 2 folds: MAE {stored['mae_mean']:.3g}")
    assert printed[3].startswith("baselines on the same validation windows: ")
    assert printed[4].startswith(f"trained {out}")


def test_a_fold_count_below_two_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--simulate", "60", "--out", str(tmp_path / "x.lqb"),
                     "--folds", "1"])
    assert code == 2
    assert "--folds 1 is below 2" in capsys.readouterr().err
