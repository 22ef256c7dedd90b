"""The KS feature filter, alone and in ``labquake train --test-segments``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from model.bundle import inference as bundle
from model.data import records, segments
from model.data.simulate import simulate_blocks
from model.features.extract import FEATURE_NAMES
from model.training import ks_filter
from stream import cli
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

RATE = 2e4
WINDOW = 4096


def test_a_moved_feature_is_dropped_and_a_steady_one_kept() -> None:
    rng = np.random.default_rng(1)
    train = np.column_stack([rng.normal(0, 1, 800), rng.normal(0, 1, 800),
                             rng.exponential(1, 800)])
    test = np.column_stack([rng.normal(0, 1, 400), rng.normal(0.5, 1, 400),
                            rng.exponential(1, 400)])
    selection = ks_filter.select(train, test, ["steady", "moved", "skewed"], alpha=0.01)
    assert selection.kept == ("steady", "skewed") and selection.dropped == ("moved",)
    for column, name in enumerate(["steady", "moved", "skewed"]):
        expected = ks_2samp(train[:, column], test[:, column])
        assert selection.p_values[name] == expected.pvalue
        assert selection.statistics[name] == expected.statistic
    assert (selection.n_train, selection.n_test, selection.alpha) == (800, 400, 0.01)
    stored = selection.to_dict()
    assert stored["kept"] == ["steady", "skewed"] and stored["n_test_segments"] == 400


def test_alpha_decides_at_the_boundary() -> None:
    rng = np.random.default_rng(2)
    train, test = rng.normal(0, 1, (300, 1)), rng.normal(0.15, 1, (300, 1))
    p_value = ks_2samp(train[:, 0], test[:, 0]).pvalue
    assert ks_filter.select(train, test, ["x"], alpha=p_value).kept == ("x",)
    with pytest.raises(LabquakeError, match=r"separates every feature.*smaller --ks-alpha"):
        ks_filter.select(train, test, ["x"], alpha=math.nextafter(p_value, 1.0))


def test_only_windows_that_share_no_sample_are_tested() -> None:
    assert ks_filter.independent_rows(10, 150_000, 15_000) == slice(None, None, 10)
    assert ks_filter.independent_rows(10, 150_000, 150_000) == slice(None, None, 1)
    assert ks_filter.independent_rows(10, 150_000, 40_000) == slice(None, None, 4)
    assert ks_filter.independent_rows(10, 4096, 8192) == slice(None, None, 1)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, math.nan])
def test_alpha_outside_zero_one_is_refused(alpha: float) -> None:
    with pytest.raises(LabquakeError, match=r"--ks-alpha .* is not between 0 and 1"):
        ks_filter.check_alpha(alpha)


def test_empty_sides_are_refused() -> None:
    with pytest.raises(LabquakeError, match="needs training windows and test segments"):
        ks_filter.select(np.zeros((0, 1)), np.zeros((3, 1)), ["x"])


def test_train_keeps_the_features_that_pass_and_records_the_test(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "lab.csv"
    records.write_record(data, simulate_blocks(30.0, sample_rate=RATE, seed=6,
                                               cycle_seconds=(2.0, 3.0)), RATE)
    folder = segments.write_segments(tmp_path / "test", 40, sample_rate=RATE, seed=7,
                                     segment_samples=WINDOW, cycle_seconds=(2.0, 3.0),
                                     progress=False).folder
    out = tmp_path / "ks.lqb"
    code = cli.main(["train", "--data", str(data), "--sample-rate", str(RATE), "--window",
                     str(WINDOW), "--epochs", "1", "--out", str(out), "--test-segments",
                     str(folder), "--ks-alpha", "0.3", "--workers", "1", "--no-context"])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    model = bundle.load(out)
    selection = model.metadata["extra"]["ks_filter"]
    assert selection["alpha"] == 0.3 and selection["n_test_segments"] == 40
    assert selection["n_train_windows"] == int(30 * RATE) // WINDOW
    kept = [name for name in FEATURE_NAMES if selection["p_values"][name] >= 0.3]
    assert list(model.feature_names) == selection["kept"] == kept
    assert 0 < len(kept) < len(FEATURE_NAMES)
    assert selection["dropped"] == [name for name in FEATURE_NAMES if name not in kept]
    assert printed[0].startswith(f"KS filter (alpha 0.3, 146 training windows, 40 test "
                                 f"segments): kept {len(kept)} of {len(FEATURE_NAMES)} features")
    assert printed[-1].startswith(f"trained {out}")


def test_a_missing_segment_folder_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--simulate", "60", "--out", str(tmp_path / "x.lqb"),
                     "--test-segments", str(tmp_path / "absent")])
    assert code == 2
    assert "no such folder" in capsys.readouterr().err


def test_test_segments_need_a_model_that_reads_each_window_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = segments.write_segments(tmp_path / "test", 2, sample_rate=RATE, seed=7,
                                     segment_samples=WINDOW, progress=False).folder
    code = cli.main(["train", "--simulate", "60", "--out", str(tmp_path / "x.lqb"),
                     "--test-segments", str(folder)])
    assert code == 2
    assert "add --no-context" in capsys.readouterr().err
