"""model.features.kernels: the compiled loops give bit for bit the NumPy/SciPy formulas."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st

from model.features import kernels, mfcc

pytestmark = pytest.mark.unit


def numpy_variances(signal: np.ndarray, width: int, stride: int) -> np.ndarray:
    """The plain formula: float64 cumulative sums, a float64 difference, float32 scale."""
    x = signal.astype(np.float64)
    first = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x, axis=1)], axis=1)
    second = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x * x, axis=1)], axis=1)
    starts = np.arange(0, x.shape[1] - width + 1, stride)
    run_sum = first[:, starts + width] - first[:, starts]
    run_squares = (second[:, starts + width] - second[:, starts]) * width
    difference = run_squares - run_sum * run_sum
    return np.multiply(difference, np.float32(1.0 / (width * (width - 1))), dtype=np.float32)


def signal_of(rows: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    signal = rng.normal(4.5, 5.0, (rows, length))
    signal[:, length // 3:length // 3 + 50] *= 800.0  # a burst: large sums, then small runs
    return signal.astype(np.float32)


FEATURE_RUNS = ((10, 1), (50, 1), (50, 5), (100, 10), (1000, 100), (10, 10), (100, 10),
                (50, 50), (1000, 50))


@pytest.mark.parametrize("length", [4_095, 4_096, 4_097, 8_192, 20_011, 150_000])
def test_rolling_variances_equal_the_numpy_formula_bit_for_bit(length):
    signal = signal_of(3, length, seed=length)
    runs = tuple(sorted(set(FEATURE_RUNS)))
    variances = kernels.rolling_variances(signal, runs)
    for width, stride in runs:
        expected = numpy_variances(signal, width, stride)
        np.testing.assert_array_equal(np.stack(variances[(width, stride)]), expected)


def test_each_row_starts_its_runs_at_its_own_phase():
    signal = signal_of(3, 9_000, seed=5)
    runs = ((50, 1), (1000, 50), (10, 10))
    phases = np.array([[0, 7, 49], [3, 0, 999], [9, 1, 0]])
    variances = kernels.rolling_variances(signal, runs, phases)
    for index, (width, stride) in enumerate(runs):
        for row in range(3):
            phase = phases[index, row]
            expected = numpy_variances(signal[row:row + 1, phase:], width, stride)[0]
            np.testing.assert_array_equal(variances[(width, stride)][row], expected)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(2, 9_000), width=st.integers(2, 1_200), stride=st.integers(1, 700),
       seed=st.integers(0, 2**32 - 1))
def test_rolling_variances_any_width_and_stride(length, width, stride, seed):
    width = min(width, length)
    signal = signal_of(2, length, seed)
    variances = kernels.rolling_variances(signal, ((width, stride), (2, 1)))
    np.testing.assert_array_equal(np.stack(variances[(width, stride)]),
                                  numpy_variances(signal, width, stride))
    np.testing.assert_array_equal(np.stack(variances[(2, 1)]), numpy_variances(signal, 2, 1))


def test_a_constant_signal_has_zero_variance():
    variances = kernels.rolling_variances(np.full((1, 5_000), 7.0, np.float32), ((50, 3),))
    assert variances[(50, 3)][0].shape == ((5_000 - 50) // 3 + 1,)
    assert not variances[(50, 3)][0].any()


def splitmix64_word(seed: int, draw: int) -> int:
    """SplitMix64's output number ``draw`` from ``seed``, in Python integers."""
    mask = (1 << 64) - 1
    z = (seed + (draw + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


@pytest.mark.parametrize("first", [0, 1, 3, 4, 2**40 + 2, 2**62 - 7])
def test_counter_noise_reads_splitmix64_words_by_place(first):
    table = np.random.default_rng(3).normal(0.0, 0.5, 1 << 16).astype(np.float32)
    samples = np.random.default_rng(4).integers(-32_768, 32_768, 11).astype(np.int16)
    out = kernels.counter_noise(table, 0x4C41_4E4C, samples, first)
    for k, value in enumerate(out):
        place = first + k
        level = (splitmix64_word(0x4C41_4E4C, place // 4) >> (16 * (place % 4))) & 0xFFFF
        assert value == table[level] + np.float32(samples[k])


def test_hann_frames_and_power_equal_numpy_framing_and_squares():
    signal = signal_of(1, 15_000, seed=9)[0]
    frames = mfcc.frame_count(len(signal))
    padded = np.pad(signal, mfcc.N_FFT // 2)
    expected = np.stack([padded[f * mfcc.HOP_LENGTH:f * mfcc.HOP_LENGTH + mfcc.N_FFT]
                         for f in range(frames)]) * mfcc.hann_window()
    windowed = np.empty((frames - 3, mfcc.N_FFT), np.float32)
    kernels.hann_frames(signal, mfcc.hann_window(), 3, mfcc.HOP_LENGTH, windowed)
    np.testing.assert_array_equal(windowed, expected[3:])
    spectrum = scipy.fft.rfft(windowed, axis=-1)
    power = np.empty(spectrum.shape, np.float32)
    kernels.power(spectrum, power)
    parts = spectrum.view(np.float32)
    np.testing.assert_array_equal(power, np.square(parts[:, 0::2]) + np.square(parts[:, 1::2]))


def union_less(parts: list[np.ndarray], left: np.ndarray) -> np.ndarray:
    values = list(np.concatenate(parts))
    for value in left:
        values.remove(value)
    return np.sort(np.array(values, np.float32))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), blocks=st.integers(1, 6), scale=st.sampled_from(
    [0.5, 1e-3, 7.0, 1e6]), size=st.integers(1, 300))
def test_ranked_is_the_sorted_union_less_the_left_out_values(seed, blocks, scale, size):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, size + 1, blocks)
    buffer = np.zeros((blocks, 2 * size + 1), np.float32)
    parts = []
    for block, count in enumerate(counts):
        # Few distinct values: ties everywhere, as in a quantised signal.
        part = np.sort(rng.integers(-20, 20, count).astype(np.float32) * np.float32(scale))
        buffer[block, :count] = part
        parts.append(part)
    left = np.sort(parts[0][rng.random(counts[0]) < 0.3])
    buffer[0, size:size + len(left)] = left
    union = union_less(parts, left)
    if not len(union):
        return
    bounds = np.zeros((blocks, 1, 4), np.int64)
    bounds[:, 0, 1] = counts
    bounds[0, 0, 2:] = (size, size + len(left))
    ranks = np.arange(len(union))
    found = kernels.ranked(buffer, bounds, np.arange(blocks)[np.newaxis], np.zeros_like(ranks),
                           ranks[np.newaxis])
    np.testing.assert_array_equal(found[0, 0], union)
    np.testing.assert_array_equal(found[1, 0], np.append(union[1:], union[-1]))


def test_ranked_answers_each_window_and_quantity():
    rng = np.random.default_rng(8)
    buffer = np.sort(rng.normal(size=(5, 400)).astype(np.float32), axis=1)
    bounds = np.zeros((5, 2, 4), np.int64)
    bounds[:, 0, 1] = 200  # quantity 0: each row's first half (sorted), quantity 1: the rest
    bounds[:, 1, :2] = (200, 400)
    buffer[:, 200:] = np.sort(buffer[:, 200:], axis=1)
    windows = np.array([[0, 1, 2], [2, 3, 4], [4, 0, 1]])
    ranks = np.array([[0, 599], [300, 10], [123, 456]])
    found = kernels.ranked(buffer, bounds, windows, np.array([0, 1]), ranks)
    for window, slots in enumerate(windows):
        for request, quantity in enumerate((0, 1)):
            union = np.sort(np.concatenate([buffer[slot, bounds[slot, quantity, 0]:
                                                   bounds[slot, quantity, 1]] for slot in slots]))
            assert found[0, window, request] == union[ranks[window, request]]


@given(seed=st.integers(0, 2**32 - 1))
def test_ranked_answers_do_not_depend_on_the_first_pivots(seed):
    # Windows a block apart over blocks of few distinct values: the previous window's
    # answers seed the search, and any seed gives the same answers.
    rng = np.random.default_rng(seed)
    blocks, size = 6, 40
    buffer = np.sort(rng.integers(-8, 8, (blocks + 3, size)).astype(np.float32), axis=1)
    bounds = np.zeros((blocks + 3, 1, 4), np.int64)
    bounds[:, 0, 1] = size
    windows = np.array([np.arange(start, start + blocks) for start in range(4)])
    ranks = rng.integers(0, blocks * size, (4, 3))
    quantities = np.zeros(3, np.int64)
    alone = kernels.ranked(buffer, bounds, windows, quantities, ranks)
    seeded = kernels.ranked(buffer, bounds, windows, quantities, ranks,
                            previous=np.array([-1, 0, 1, 0]))
    np.testing.assert_array_equal(seeded, alone)
    for window, slots in enumerate(windows):
        union = np.sort(buffer[slots].ravel())
        np.testing.assert_array_equal(alone[0, window], union[ranks[window]])


def test_ranked_refuses_a_previous_window_that_comes_later():
    buffer = np.zeros((2, 4), np.float32)
    bounds = np.zeros((2, 1, 4), np.int64)
    bounds[:, 0, 1] = 4
    with pytest.raises(ValueError, match="earlier window"):
        kernels.ranked(buffer, bounds, np.array([[0], [1]]), np.zeros(1, np.int64),
                       np.zeros((2, 1), np.int64), previous=np.array([1, -1]))


def test_sorted_abs_stats_equal_a_pass_over_the_samples():
    rng = np.random.default_rng(4)
    counts = np.array([300, 1, 77])
    buffer = np.zeros((3, 300), np.float32)
    for row, count in enumerate(counts):
        buffer[row, :count] = np.sort(np.round(rng.normal(0, 20, count)).astype(np.float32) / 4)
    sums = np.cumsum(buffer, axis=1, dtype=np.float64)
    thresholds = np.array([0.0, 2.5, 10.0, 50.0])
    centres = np.array([0.25, -3.0])
    found = kernels.sorted_abs_stats(buffer, sums, np.array([[0, 1, 2], [2, 0, 1]]), counts,
                                     centres, thresholds)
    samples = np.concatenate([buffer[row, :count] for row, count in enumerate(counts)])
    for window, centre in enumerate(centres):
        direct = kernels.abs_stats(samples, centre, thresholds)
        np.testing.assert_allclose(found[window], direct, rtol=1e-12)
        x = samples.astype(np.float64) - centre
        np.testing.assert_allclose(direct, [np.abs(x).sum(), np.abs(x).max(),
                                            *[(np.abs(x) > t).sum() for t in thresholds]],
                                   rtol=1e-12)


def test_sta_lta_stats_equal_numpy():
    rng = np.random.default_rng(6)
    short = rng.uniform(0.1, 9, 300).astype(np.float32)
    long = rng.uniform(0, 5, 280).astype(np.float32)
    long[7] = 0.0  # floored
    ratio = (short[20:300] / np.maximum(long, np.float32(1e-6))).astype(np.float64)
    found = kernels.sta_lta_stats(short, long, 20, 13, 1e-6)
    np.testing.assert_allclose(found, [ratio.sum(), 280, ratio.max(), ratio[13:].sum(), 267,
                                       ratio[13:].max()], rtol=1e-12)


def test_sta_lta_rows_are_each_rows_stats_from_the_variance_table():
    rng = np.random.default_rng(9)
    signal = rng.normal(0, 3, (3, 900)).astype(np.float32)
    runs = ((10, 10), (100, 10))
    phases = np.array([[0, 4, 9], [0, 4, 9]])
    table, offsets, counts = kernels.rolling_variance_table(signal, runs, phases)
    variances = kernels.rolling_variances(signal, runs, phases)
    shifts, crossings = np.array([9, 9, 9]), np.array([0, 3, 50])
    found = kernels.sta_lta_rows(table, offsets[0], offsets[1], counts[1], shifts, crossings,
                                 1e-6)
    for row in range(3):
        np.testing.assert_array_equal(found[row], kernels.sta_lta_stats(
            variances[(10, 10)][row], variances[(100, 10)][row], 9, crossings[row], 1e-6))
    assert found[2, 4] == counts[1, 2] - 50  # the ratios after the crossing


def test_running_sums_are_numpy_cumulative_sums():
    values = np.random.default_rng(2).normal(0, 1e4, 20_001).astype(np.float32)
    out = np.empty(20_001)
    kernels.running_sums(values, out)
    np.testing.assert_array_equal(out, np.cumsum(values, dtype=np.float64))


@pytest.mark.slow
def test_a_cached_copy_made_under_another_module_name_does_not_break_loading(tmp_path):
    # Importing model/features/kernels.py as a top-level module (a doctest run on the file, say)
    # caches its machine code under that name; a process importing model.features.kernels cannot
    # load that copy, and compiles instead of failing.
    root = Path(kernels.__file__).resolve().parents[2]
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "import kernels; kernels.warm_up()"],
                   cwd=root / "model" / "features", env=environment, check=True, timeout=300)
    assert list(tmp_path.rglob("*.nbi")), "the first process should have cached the kernels"
    result = subprocess.run(
        [sys.executable, "-c",
         "from model.features import kernels; kernels.warm_up(); print('ok')"],
        cwd=root, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
    assert "not cached (ModuleNotFoundError" in result.stderr


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lookback=st.integers(1, 50), steps=st.integers(1, 200),
       cut=st.integers(0, 200))
def test_context_steps_keep_the_lookbacks_values_sorted(seed, lookback, steps, cut):
    # The baseline's sorted lookback: one value leaves and one arrives a step, ties too,
    # whether the steps come in one call or two.
    rng = np.random.default_rng(seed)
    values = rng.integers(-5, 5, (steps, 3)).astype(np.float32)
    ordered = np.zeros((3, lookback))
    history = np.zeros((2 * max(lookback, 4), 3))
    state = np.array([0, 0, -1], np.int64)
    for part in (values[:cut], values[cut:]):
        kernels.context_steps(part, ordered, history, state, lookback, 2, 2, 0.5, 0, 1.0,
                              10.0, 20.0)
    held = int(state[0])
    assert held == min(steps, lookback) and state[1] == steps
    np.testing.assert_array_equal(ordered[:, :held], np.sort(values[-held:].T, axis=1))
