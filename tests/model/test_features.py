"""model.features.extract: shapes, determinism, each winner feature against a plain reference."""

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.stats

from model.features import extract as features
from model.features import mfcc
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

LANL_WINDOW = 150_000
SHORT_WINDOW = 15_000
INT16_MAX = np.iinfo(np.int16).max
# Peaks in the hand-worked pattern rise 10+ counts above their neighbours; the denoising
# noise never exceeds 0.5 * 4.4 (its largest quantile), so it cannot move a peak.
PEAK_PATTERN = (0, 10, 40, 10, 0, 20, 60, 20, 0, 50, 10, 30, 10, 0, 0, 0)
PEAKS_PER_PATTERN = 3  # at 40, 60 and 50; 30 tops its neighbours but not 50 two away


def lanl_like(rows: int, length: int, seed: int = 0) -> np.ndarray:
    """Background AE around a small offset, with a few large bursts."""
    rng = np.random.default_rng(seed)
    signal = 4.5 + rng.normal(0.0, 4.0, (rows, length))
    for row in range(rows):
        onset = rng.integers(0, length - 1000)
        signal[row, onset:onset + 1000] += rng.uniform(200, 3000) * rng.standard_normal(1000)
    return np.clip(np.rint(signal), -INT16_MAX, INT16_MAX).astype(np.int16)


@pytest.fixture(scope="module")
def lanl_windows() -> np.ndarray:
    return lanl_like(3, LANL_WINDOW)


@pytest.fixture(scope="module")
def short_windows() -> np.ndarray:
    return lanl_like(20, SHORT_WINDOW, seed=1)


def column(name: str) -> int:
    return features.FEATURE_NAMES.index(name)


def test_feature_set_is_named_and_defined():
    names = features.FEATURE_NAMES
    assert 20 <= len(names) <= 35
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names)
    assert list(features.FEATURE_DEFINITIONS) == list(names)
    assert all("\n" not in text and len(text) > 20
               for text in features.FEATURE_DEFINITIONS.values())
    assert features.WINNERS_FEATURES == (
        "num_peaks_2", "rolling_std_50_p20", "mfcc_4_mean", "mfcc_18_mean")
    assert set(features.WINNERS_FEATURES) <= set(names)


def test_shape_and_dtype(lanl_windows):
    result = features.extract(lanl_windows, np.array([0, LANL_WINDOW, 2 * LANL_WINDOW]))
    assert result.shape == (3, len(features.FEATURE_NAMES))
    assert result.dtype == np.float32
    assert np.isfinite(result).all()


def test_works_at_the_short_window(short_windows):
    result = features.extract(short_windows, np.arange(20) * SHORT_WINDOW)
    assert result.shape == (20, len(features.FEATURE_NAMES))
    assert np.isfinite(result).all()
    # The burst windows are louder than a quiet one of the shortest length.
    quiet_window = np.random.default_rng(2).integers(-1, 2, (1, 4096)).astype(np.int16)
    quiet = features.extract(quiet_window, names=["log_variance"])
    assert (result[:, column("log_variance")] > quiet[0, 0] + 2.0).all()


def test_same_start_sample_gives_identical_bits(short_windows):
    starts = np.arange(20, dtype=np.int64) * 7_919
    first = features.extract(short_windows, starts)
    again = features.extract(short_windows.copy(), starts.copy())
    assert first.tobytes() == again.tobytes()


def test_start_sample_seeds_the_noise(short_windows):
    window = short_windows[:1]
    at_zero = features.denoise(window, np.array([0]))
    np.testing.assert_array_equal(at_zero, features.denoise(window))  # None means zeros
    elsewhere = features.denoise(window, np.array([150_000]))
    assert np.mean(at_zero != elsewhere) > 0.9
    # The noise is small: the two stay within a few noise standard deviations.
    assert np.abs(at_zero - elsewhere).max() < 8 * features.NOISE_STD
    assert not np.array_equal(features.extract(window, np.array([0])),
                              features.extract(window, np.array([150_000])))


def test_noise_is_gaussian_with_std_one_half():
    noise = features.denoise(np.zeros((1, LANL_WINDOW), np.int16), np.array([42]))[0]
    assert abs(np.median(noise)) < 1e-6
    result = scipy.stats.kstest(noise, "norm", args=(0.0, features.NOISE_STD))
    assert result.pvalue > 0.01
    assert abs(noise.std() - features.NOISE_STD) < 0.005


def test_noise_stream_is_pinned():
    # These bits are part of every feature's definition: if this fails, the features of
    # every trained bundle changed; bump FEATURES_VERSION and retrain.
    noise = features.denoise(np.zeros((1, 4096), np.int16), np.array([123_456_789]))[0, :4]
    np.testing.assert_array_equal(
        noise, np.array([-0.87943149, -0.52300107, -0.47961277, 0.046497907], np.float32))


@pytest.mark.parametrize("start", [0, 5, 65_535, 2**40 + 2])
def test_a_samples_noise_depends_on_its_place_alone(start):
    # The same samples read from two places on the counter get the same noise where they
    # overlap: overlapping windows can share work.
    samples = lanl_like(1, 10_000, seed=3)[0]
    whole = features._noisy(samples, start)
    for offset in (1, 3, 4, 4_097, 9_999):
        np.testing.assert_array_equal(features._noisy(samples[offset:], start + offset),
                                      whole[offset:])


def test_denoise_removes_the_offset():
    offset = np.full((2, 4096), 1000, np.int16)
    offset[1] -= 2000
    denoised = features.denoise(offset)
    # 0 up to float32 rounding at the offset (the spacing of float32 near 1000 is 6e-5).
    np.testing.assert_allclose(np.median(denoised, axis=1), [0.0, 0.0], atol=1e-4)
    assert np.abs(denoised).max() < 3.0


def test_peak_count_on_a_hand_worked_pattern():
    window = np.tile(np.array(PEAK_PATTERN, np.int16), 4096 // len(PEAK_PATTERN))[np.newaxis]
    # The first two and last two samples cannot be peaks; here none of them is one anyway.
    expected = PEAKS_PER_PATTERN * (4096 // len(PEAK_PATTERN))
    for start in (0, 1, 987_654_321):
        count = features.extract(window, np.array([start]), names=["num_peaks_2"])
        assert count[0, 0] == expected


def test_peak_needs_support_on_both_sides():
    # 3 at index 2 is a peak; 2 at index 5 tops its neighbours but not the 5 two away;
    # 5 at index 7 lacks a second right neighbour.
    signal = np.array([[0, 1, 3, 1, 0, 2, 1, 5, 0]], np.float32)
    assert features._peak_flags(signal, 2, 2).sum() == 1


def reference_rolling_std(signal: np.ndarray, width: int, stride: int,
                          start: int = 0) -> np.ndarray:
    """The std of every full run of ``width`` samples beginning on a multiple of ``stride``
    on the counter, for a row whose first sample is ``start`` on it."""
    runs = np.lib.stride_tricks.sliding_window_view(signal.astype(np.float64), width, axis=-1)
    return runs[..., (-start) % stride::stride, :].std(axis=-1, ddof=1)


def test_winner_rolling_std_percentile_matches_a_plain_reference(lanl_windows):
    starts = np.array([5, 6, 7])
    ours = features.extract(lanl_windows, starts, names=["rolling_std_50_p20"])[:, 0]
    stds = reference_rolling_std(features.denoise(lanl_windows, starts), 50, 1)
    np.testing.assert_allclose(ours, np.percentile(stds, 20, axis=1), rtol=1e-5)


@pytest.mark.parametrize("width", features.ROLLING_WIDTHS)
def test_rolling_std_features_match_a_plain_reference(short_windows, width):
    # Starts off the runs' grid too: the runs begin on multiples of the stride on the
    # counter, not at the window's first sample.
    windows, starts = short_windows[:4], np.array([0, 7, SHORT_WINDOW + 33, 999])
    names = [f"log_rolling_std_{width}_p{percent:02d}" for percent in features.ROLLING_PERCENTS]
    ours = features.extract(windows, starts, names=names)
    stride = max(1, width // features.ROLLING_STRIDE_DIVISOR)
    denoised = features.denoise(windows, starts)
    for row, start in enumerate(starts):
        stds = reference_rolling_std(denoised[row], width, stride, start)
        expected = np.log(np.percentile(stds, features.ROLLING_PERCENTS))
        np.testing.assert_allclose(ours[row], expected, rtol=1e-5, atol=1e-5)


def test_moments_and_counts_match_numpy(short_windows):
    windows, starts = short_windows[:3], np.array([1, 2, 3])
    x = features.denoise(windows, starts).astype(np.float64)
    names = ["log_variance", "skewness", "log_kurtosis", "log_mean_abs_deviation",
             "log_max_abs", "log1p_count_over_50"]
    expected = np.stack([np.log(x.var(axis=1)), scipy.stats.skew(x, axis=1),
                         np.log(scipy.stats.kurtosis(x, axis=1, fisher=False)),
                         np.log(np.abs(x).mean(axis=1)), np.log(np.abs(x).max(axis=1)),
                         np.log1p((np.abs(x) > 50).sum(axis=1))], axis=1)
    np.testing.assert_allclose(features.extract(windows, starts, names=names), expected,
                               rtol=1e-4, atol=1e-5)


def test_sta_lta_long_runs_are_whole_multiples_of_short_ones():
    # STA/LTA is evaluated at every short-th end sample; its alignment needs this.
    for short, long in (*features.STA_LTA_MEAN_PAIRS, features.STA_LTA_MAX_PAIR):
        assert long % short == 0


def test_sta_lta_matches_a_plain_reference(short_windows):
    windows, starts = short_windows[:2], np.array([0, 1])
    denoised = features.denoise(windows, starts)
    ours = features.extract(windows, starts,
                            names=["sta_lta_50_1000_mean", "log_sta_lta_50_1000_max"])
    for row, start in enumerate(starts):
        # Both at every end sample on a multiple of 50 on the counter.
        short = reference_rolling_std(denoised[row], 50, 50, start) ** 2
        long = reference_rolling_std(denoised[row], 1000, 50, start) ** 2
        ratio = short[(1000 - 50) // 50:][:len(long)] / long
        np.testing.assert_allclose(ours[row, 0], ratio.mean(), rtol=1e-4)
        np.testing.assert_allclose(ours[row, 1], np.log(ratio.max()), rtol=1e-4)


def test_band_powers_sum_to_the_variance():
    bands = [name for name in features.FEATURE_NAMES if name.startswith("log_band_power_")]
    # A steady signal: Parseval, up to the Hann window's weighting of the window's ends
    # (frames lie wholly inside the window, so its first and last samples weigh less).
    steady = np.random.default_rng(5).normal(3.0, 40.0, (4, SHORT_WINDOW)).round()
    result = features.extract(steady.astype(np.int16), np.arange(4) * 1_001,
                              names=[*bands, "log_variance"])
    np.testing.assert_allclose(np.exp(result[:, :-1]).sum(axis=1), np.exp(result[:, -1]),
                               rtol=0.03)


def reference_mean_mfcc(x: np.ndarray, start: int) -> np.ndarray:
    """librosa's MFCC 4 and 18, mean over the frames of 2048 samples that begin on a
    multiple of 512 on the counter and lie wholly in the window: NumPy and SciPy, frame
    by frame."""
    first = (-start) % mfcc.HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), mfcc.N_FFT)
    frames = frames[first::mfcc.HOP_LENGTH] * mfcc.hann_window()
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    decibels = 10 * np.log10(np.maximum(1e-10, mfcc.mel_filter_bank().astype(np.float64)
                                        @ power.T))
    decibels = np.maximum(decibels, decibels.max() - 80.0)
    return scipy.fft.dct(decibels.mean(axis=1), type=2, norm="ortho")[[4, 18]]


def test_mfcc_features_are_the_frame_means_of_the_mfcc(lanl_windows):
    starts = np.array([10, 512, 30_001])
    ours = features.extract(lanl_windows, starts, names=["mfcc_4_mean", "mfcc_18_mean"])
    denoised = features.denoise(lanl_windows, starts)
    for row, start in enumerate(starts):
        np.testing.assert_allclose(ours[row], reference_mean_mfcc(denoised[row], start),
                                   atol=1e-3)


@pytest.mark.parametrize("kind", ["zeros", "max", "min", "alternating", "square", "spike"])
def test_degenerate_windows_give_finite_features(kind):
    window = np.zeros((1, LANL_WINDOW), np.int16)
    if kind == "max":
        window[:] = INT16_MAX
    elif kind == "min":
        window[:] = -INT16_MAX
    elif kind == "alternating":
        window[0, ::2], window[0, 1::2] = INT16_MAX, -INT16_MAX
    elif kind == "square":
        window[0, :100_000] = INT16_MAX
        window[0, 100_000:] = -INT16_MAX
    elif kind == "spike":
        window[0, 70_000] = INT16_MAX
    for start in (0, 1):
        result = features.extract(window, np.array([start]))
        assert np.isfinite(result).all(), dict(zip(features.FEATURE_NAMES, result[0], strict=True))


def test_names_subset_equals_the_matching_columns(short_windows):
    windows, starts = short_windows[:5], np.arange(5) * 3
    full = features.extract(windows, starts)
    for names in (features.WINNERS_FEATURES, features.FEATURE_NAMES[::-1],
                  ("log_rolling_std_10_p05",), ("mfcc_18_mean", "num_peaks_2", "mfcc_18_mean")):
        subset = features.extract(windows, starts, names=names)
        np.testing.assert_array_equal(subset, full[:, [column(name) for name in names]])


def test_batch_results_equal_per_row_results(short_windows):
    starts = np.arange(len(short_windows), dtype=np.int64) * SHORT_WINDOW + 17
    batch = features.extract(short_windows, starts)
    rows = np.concatenate([features.extract(short_windows[row:row + 1], starts[row:row + 1])
                           for row in range(len(short_windows))])
    np.testing.assert_array_equal(batch, rows)


def test_empty_batch():
    assert features.extract(np.zeros((0, 4096), np.int16)).shape == (
        0, len(features.FEATURE_NAMES))


@pytest.mark.parametrize(("windows", "starts", "names", "message"), [
    (np.zeros((2, 4096), np.float32), None, features.FEATURE_NAMES, "int16"),
    (np.zeros(4096, np.int16), None, features.FEATURE_NAMES, "int16"),
    (np.zeros((2, 4095), np.int16), None, features.FEATURE_NAMES, "at least 4096"),
    (np.zeros((2, 4096), np.int16), np.array([0]), features.FEATURE_NAMES, "one integer"),
    (np.zeros((2, 4096), np.int16), np.array([0.0, 1.0]), features.FEATURE_NAMES, "one integer"),
    (np.zeros((2, 4096), np.int16), np.array([0, -1]), features.FEATURE_NAMES, ">= 0"),
    (np.zeros((2, 4096), np.int16), None, ["num_peaks_2", "nope"], "'nope'"),
    (np.zeros((2, 4096), np.int16), None, "num_peaks_2", "['num_peaks_2']"),
])
def test_bad_input_raises_labquake_error(windows, starts, names, message):
    with pytest.raises(LabquakeError, match=re.escape(message)):
        features.extract(windows, starts, names=names)


def test_values_do_not_depend_on_the_threads(short_windows):
    starts = np.arange(len(short_windows), dtype=np.int64) * 5_003
    one = features.extract(short_windows, starts, threads=1)
    # Two threads cut the batch into two chunks of 10; MAX_THREADS into finer ones.
    for threads in (2, features.MAX_THREADS):
        np.testing.assert_array_equal(
            features.extract(short_windows, starts, threads=threads), one)
    lanl = lanl_like(3, LANL_WINDOW, seed=4)  # one window a chunk, an odd count
    np.testing.assert_array_equal(features.extract(lanl, threads=2),
                                  features.extract(lanl, threads=1))


def test_threads_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(features.THREADS_ENV, "1")
    assert features.default_threads() == 1
    monkeypatch.setenv(features.THREADS_ENV, str(features.MAX_THREADS))
    assert features.default_threads() == features.MAX_THREADS
    monkeypatch.delenv(features.THREADS_ENV)
    assert 1 <= features.default_threads() <= features.MAX_THREADS


@pytest.mark.parametrize("setting", ["0", "two", "-1", str(features.MAX_THREADS + 1)])
def test_bad_thread_setting_raises_labquake_error(monkeypatch, setting):
    monkeypatch.setenv(features.THREADS_ENV, setting)
    with pytest.raises(LabquakeError, match=features.THREADS_ENV):
        features.extract(np.zeros((1, 4096), np.int16))


@pytest.mark.parametrize("threads", [0, features.MAX_THREADS + 1, 1.5, True])
def test_bad_thread_count_raises_labquake_error(threads):
    with pytest.raises(LabquakeError, match="threads="):
        features.extract(np.zeros((1, 4096), np.int16), threads=threads)


def test_an_error_in_a_chunk_reaches_the_caller(monkeypatch):
    real_noisy = features._noisy

    def failing_noisy(samples, first_sample, out=None):
        if first_sample == 3:  # in the second of two chunks, on whichever thread
            raise ValueError("boom")
        return real_noisy(samples, first_sample, out)

    monkeypatch.setattr(features, "_noisy", failing_noisy)
    with pytest.raises(ValueError, match="boom"):
        features.extract(np.zeros((4, 4096), np.int16), np.arange(4), threads=2)
    # The pool is still usable afterwards.
    monkeypatch.setattr(features, "_noisy", real_noisy)
    assert features.extract(np.zeros((4, 4096), np.int16), threads=2).shape == (
        4, len(features.FEATURE_NAMES))


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "features_v2.npz"


def test_values_are_pinned_for_this_features_version():
    # Made once by fixtures/make_features_fixture.py; a change that moves any feature by a
    # bit must bump FEATURES_VERSION (bundles trained before then are refused) and remake it.
    pinned = np.load(FIXTURE)
    assert int(pinned["features_version"]) == features.FEATURES_VERSION
    assert tuple(pinned["feature_names"].tolist()) == features.FEATURE_NAMES
    for threads in (1, 2):
        values = features.extract(pinned["windows"], pinned["start_samples"], threads=threads)
        mismatched = [name for name, same in zip(
            features.FEATURE_NAMES, (values == pinned["features"]).all(axis=0), strict=True)
            if not same]
        assert not mismatched, f"changed under FEATURES_VERSION {features.FEATURES_VERSION}"
