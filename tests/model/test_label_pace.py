"""The sample rate implied by a record's labels, and the readers that stop when it differs."""

from __future__ import annotations

import numpy as np
import pytest

from model.data import label_pace, record_cache, records
from model.training import dataset
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

LANL_BIN = 4096
# LANL's train.csv: labels fall about 1.1 ns a sample within a 4,096-sample bin and about
# 1.1 ms from one bin to the next (the recording pauses between bins).
LANL_IN_BIN_STEP_S = 1.1e-9
LANL_BIN_STEP_S = 1.0955e-3


def sawtooth_labels(samples: int, sample_rate: float, cycle_s: float) -> np.ndarray:
    """Labels counting down at ``sample_rate`` to a failure every ``cycle_s`` seconds."""
    time_s = np.arange(samples) / sample_rate
    return cycle_s - time_s % cycle_s


def lanl_like_labels(bins: int, failure_bin: int) -> np.ndarray:
    """LANL-style staircase labels over ``bins`` bins, with a failure at ``failure_bin``."""
    bin_start = 8.0 - LANL_BIN_STEP_S * np.arange(bins)
    bin_start[failure_bin:] += 12.0 - bin_start[failure_bin]
    within = LANL_IN_BIN_STEP_S * np.arange(LANL_BIN)
    return (bin_start[:, None] - within[None, :]).reshape(-1)


def write_labelled(path, labels: np.ndarray, sample_rate: float = records.LANL_SAMPLE_RATE):
    rng = np.random.default_rng(0)
    acoustic = rng.normal(0.0, 50.0, len(labels)).astype(np.int16)
    records.write_record(path, [(acoustic, labels)], sample_rate)
    return path


def test_pace_of_lanl_staircase_labels_is_about_4_mhz_despite_bins_and_a_failure():
    labels = lanl_like_labels(bins=400, failure_bin=150)
    implied = label_pace.implied_rate(labels)
    assert implied == pytest.approx(LANL_BIN / LANL_BIN_STEP_S, rel=0.02)
    label_pace.check_labels(labels, records.LANL_SAMPLE_RATE, "assumed", "train.csv")


def test_pace_ignores_the_jumps_at_failures():
    labels = sawtooth_labels(3_000_000, 15_000.0, cycle_s=9.0)
    assert label_pace.implied_rate(labels) == pytest.approx(15_000.0, rel=1e-3)


def test_too_short_a_record_is_not_judged():
    assert label_pace.implied_rate(np.linspace(1.0, 0.0, 1000)) is None
    label_pace.check_labels(np.linspace(1.0, 0.0, 1000), 4e6, "assumed", "short.csv")


def test_labels_that_never_fall_are_refused():
    with pytest.raises(LabquakeError, match="do not count down"):
        label_pace.check_labels(np.zeros(200_000), 4e6, "assumed", "flat.csv")


def test_a_15_khz_csv_read_as_4_mhz_stops_with_the_rate_to_pass(tmp_path):
    path = write_labelled(tmp_path / "lab.csv", sawtooth_labels(400_000, 15_000.0, 9.0))
    with pytest.raises(LabquakeError) as error:
        list(records.read_blocks(path))
    message = str(error.value)
    assert "\n" not in message
    assert "15000 samples a second" in message and "not the 4000000 Hz assumed for a CSV" in message
    assert message.endswith("pass --sample-rate 15000")


def test_a_matching_rate_passes_silently(tmp_path):
    labels = sawtooth_labels(400_000, 15_000.0, 9.0)
    path = write_labelled(tmp_path / "lab.csv", labels)
    block = records.read_record(path, sample_rate=15_000.0)
    np.testing.assert_array_equal(block.time_to_failure, labels)


def test_a_wrong_rate_given_is_named_as_given(tmp_path):
    path = write_labelled(tmp_path / "lab.csv", sawtooth_labels(400_000, 15_000.0, 9.0))
    with pytest.raises(LabquakeError, match="not the 1000000 Hz given; pass --sample-rate 15000"):
        records.read_record(path, sample_rate=1e6)


def test_an_npz_whose_labels_contradict_its_rate_must_be_written_again(tmp_path):
    labels = sawtooth_labels(400_000, 15_000.0, 9.0)
    path = write_labelled(tmp_path / "lab.npz", labels, sample_rate=4e6)
    with pytest.raises(LabquakeError, match="the file records; write it again with "
                                            "sample_rate 15000"):
        records.read_record(path)
    good = write_labelled(tmp_path / "good.npz", labels, sample_rate=15_000.0)
    assert records.read_record(good).sample_rate == 15_000.0


def test_training_windows_stop_before_any_work_streamed_or_cached(tmp_path):
    path = write_labelled(tmp_path / "lab.csv", sawtooth_labels(400_000, 15_000.0, 9.0))
    for use_cache in (False, True):
        with pytest.raises(LabquakeError, match="pass --sample-rate 15000"):
            dataset.file_windows(path, window=15_000, progress=False, use_cache=use_cache,
                                 cache_root=tmp_path / "cache", convert_any_size=use_cache)
    # A cache made at the right rate is still checked when read at the wrong one.
    record_cache.convert(path, tmp_path / "cache", sample_rate=15_000.0, progress=False)
    with pytest.raises(LabquakeError, match="pass --sample-rate 15000"):
        dataset.file_windows(path, window=15_000, progress=False,
                             cache_root=tmp_path / "cache")
    windows = dataset.file_windows(path, window=15_000, sample_rate=15_000.0,
                                   progress=False, cache_root=tmp_path / "cache")
    assert windows.sample_rate == 15_000.0 and len(windows) == 26


def test_unlabelled_records_pass_untouched(tmp_path):
    path = tmp_path / "segment.csv"
    records.write_record(path, [(np.arange(200_000, dtype=np.int64).astype(np.int16), None)])
    assert len(records.read_record(path).acoustic_data) == 200_000
