"""Windows and targets of labelled records: cut as the monitor cuts, targets from the labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.data.simulate import LabFault
from model.features import extract as features
from model.network import FAILURE_HORIZON_S
from model.training import dataset
from stream.core.errors import LabquakeError
from stream.core.windows import WindowAccumulator
from stream.core.wire import Chunk

pytestmark = pytest.mark.unit

RATE = 1e4
WINDOW = 4096
LENGTH = 40_000
FAILURES = (12_000, 30_000)
NEXT_FAILURE = 45_000


def _labels() -> np.ndarray:
    """TTF counting down to each failure (last sample before it reads one sample period)."""
    index = np.arange(LENGTH)
    upcoming = np.searchsorted(np.array((*FAILURES, NEXT_FAILURE)), index, side="right")
    return (np.array((*FAILURES, NEXT_FAILURE))[upcoming] - index) / RATE


def _acoustic() -> np.ndarray:
    return (np.random.default_rng(7).normal(0, 20, LENGTH)).astype(np.int16)


def _blocks(size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    acoustic, ttf = _acoustic(), _labels()
    return [(acoustic[i:i + size], ttf[i:i + size]) for i in range(0, LENGTH, size)]


def _windows(size: int = 3000, hop: int | None = None) -> dataset.RecordWindows:
    return dataset.record_windows(_blocks(size), RATE, name="hand-made", window=WINDOW,
                                  hop=hop, progress=False)


def test_targets_follow_the_labels_at_each_window_end() -> None:
    # Blocks of 3,000 put both failures (12,000 and 30,000) exactly on block boundaries.
    windows = _windows()
    labels = _labels()
    starts = np.arange(0, LENGTH - WINDOW + 1, WINDOW)
    ends = starts + WINDOW - 1
    assert windows.first_sample.tolist() == starts.tolist()
    assert windows.last_sample.tolist() == ends.tolist()
    assert windows.failure_samples.tolist() == list(FAILURES)
    np.testing.assert_array_equal(windows.ttf_s, labels[ends])
    np.testing.assert_array_equal(windows.failure_soon, labels[ends] < FAILURE_HORIZON_S)
    np.testing.assert_allclose(windows.end_time_s, ends / RATE)
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        before = [failure for failure in FAILURES if failure <= end]
        if before:
            assert windows.tsf_s[index] == pytest.approx((end - before[-1]) / RATE)
        else:
            assert math.isnan(windows.tsf_s[index])
        assert windows.cycle[index] == sum(failure <= start for failure in FAILURES)
        assert windows.spans_failure[index] == any(start < f <= end for f in FAILURES)
    # The window [8192, 12287] holds the first failure: TSF known, TTF of the next cycle.
    assert windows.spans_failure[2] and windows.cycle[2] == 0 and windows.last_cycle[2] == 1
    assert windows.tsf_s[2] == pytest.approx((12_287 - 12_000) / RATE)
    assert windows.failure_soon.any() and not windows.failure_soon.all()


def test_block_size_and_chunk_splitting_do_not_change_anything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _windows(size=LENGTH)
    # Chunks are capped at the wire format's MAX_SAMPLES; a small cap forces splitting.
    monkeypatch.setattr(dataset, "MAX_SAMPLES", 1000)
    for other in (_windows(size=3000), _windows(size=7777)):
        assert other.failure_samples.tolist() == reference.failure_samples.tolist()
        for name in ("first_sample", "features", "ttf_s", "cycle", "spans_failure"):
            np.testing.assert_array_equal(getattr(other, name), getattr(reference, name))
        np.testing.assert_array_equal(other.tsf_s, reference.tsf_s)


def test_windows_and_features_are_the_monitors() -> None:
    hop = 3000
    windows = _windows(size=5000, hop=hop)
    accumulator = WindowAccumulator(WINDOW, hop)
    acoustic = _acoustic()
    cut = accumulator.add(Chunk("rig", "ae", 0, RATE, 0.0, acoustic))
    assert windows.first_sample.tolist() == [window.first_sample for window in cut]
    expected = features.extract(np.stack([window.samples for window in cut]),
                                windows.first_sample)
    np.testing.assert_array_equal(windows.features, expected)
    assert windows.feature_names == features.FEATURE_NAMES


def test_a_chosen_feature_subset_is_computed_in_order() -> None:
    names = ("log_variance", "num_peaks_2")
    windows = dataset.record_windows(_blocks(LENGTH), RATE, name="x", window=WINDOW,
                                     feature_names=names, progress=False)
    assert windows.features.shape == (len(windows), 2)
    assert windows.feature_names == names


def test_select_keeps_the_record_and_its_failures() -> None:
    windows = _windows()
    late = windows.select(windows.cycle == 2)
    assert len(late) == int((windows.cycle == 2).sum()) > 0
    assert late.failure_samples.tolist() == list(FAILURES)
    assert np.all(np.isfinite(late.tsf_s))
    assert windows.select(slice(1, 3)).first_sample.tolist() == [WINDOW, 2 * WINDOW]


def test_simulated_windows_find_the_simulators_failures() -> None:
    rate = 2e4
    windows = dataset.simulated_windows(40.0, seed=4, sample_rate=rate, window=WINDOW,
                                        progress=False)
    truth = LabFault(rate, 4).failure_samples(windows.n_samples)
    assert len(truth) >= 2
    assert windows.failure_samples.tolist() == truth
    assert windows.n_samples == 40 * rate
    assert windows.sample_rate == rate


@pytest.mark.parametrize(("window", "hop", "message"), [
    (1000, None, "too short for the features"),
    (WINDOW, 0, "hop 0 is not a positive"),
    (WINDOW, -5, "hop -5 is not a positive"),
])
def test_bad_window_or_hop_is_refused(window: int, hop: int | None, message: str) -> None:
    with pytest.raises(LabquakeError, match=message):
        dataset.record_windows(_blocks(LENGTH), RATE, name="x", window=window, hop=hop,
                               progress=False)


def test_unlabelled_or_too_short_records_are_refused() -> None:
    with pytest.raises(LabquakeError, match="no time_to_failure labels"):
        dataset.record_windows([(_acoustic(), None)], RATE, name="bare", window=WINDOW,
                               progress=False)
    with pytest.raises(LabquakeError, match="fewer than one window"):
        dataset.record_windows([(_acoustic()[:100], _labels()[:100])], RATE, name="short",
                               window=WINDOW, progress=False)


def test_missing_file_is_refused() -> None:
    with pytest.raises(LabquakeError, match="no such file"):
        dataset.file_windows("/nonexistent/record.csv", window=WINDOW, progress=False)
