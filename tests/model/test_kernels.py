"""model.kernels: the compiled loops give bit for bit the NumPy/SciPy formulas."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st

from model import kernels, mfcc

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
        assert variances[(width, stride)].shape == expected.shape
        np.testing.assert_array_equal(variances[(width, stride)], expected)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(2, 9_000), width=st.integers(2, 1_200), stride=st.integers(1, 700),
       seed=st.integers(0, 2**32 - 1))
def test_rolling_variances_any_width_and_stride(length, width, stride, seed):
    width = min(width, length)
    signal = signal_of(2, length, seed)
    variances = kernels.rolling_variances(signal, ((width, stride), (2, 1)))
    np.testing.assert_array_equal(variances[(width, stride)],
                                  numpy_variances(signal, width, stride))
    np.testing.assert_array_equal(variances[(2, 1)], numpy_variances(signal, 2, 1))


def test_a_constant_signal_has_zero_variance():
    variances = kernels.rolling_variances(np.full((1, 5_000), 7.0, np.float32), ((50, 3),))
    assert variances[(50, 3)].shape == (1, (5_000 - 50) // 3 + 1)
    assert not variances[(50, 3)].any()


def test_add_noise_equals_take_then_add():
    rng = np.random.default_rng(3)
    table = rng.normal(0.0, 0.5, 1 << 16).astype(np.float32)
    levels = rng.integers(0, 1 << 16, 10_001).astype(np.uint16)
    window = rng.integers(-32_768, 32_768, 10_001).astype(np.int16)
    out = np.empty(10_001, np.float32)
    kernels.add_noise(table, levels, window, out)
    np.testing.assert_array_equal(out, np.take(table, levels) + window)


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


@pytest.mark.slow
def test_a_cached_copy_made_under_another_module_name_does_not_break_loading(tmp_path):
    # Importing model/kernels.py as a top-level module (a doctest run on the file, say)
    # caches its machine code under that name; a process importing model.kernels cannot
    # load that copy, and compiles instead of failing.
    root = Path(kernels.__file__).resolve().parents[1]
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "import kernels; kernels.warm_up()"],
                   cwd=root / "model", env=environment, check=True, timeout=300)
    assert list(tmp_path.rglob("*.nbi")), "the first process should have cached the kernels"
    result = subprocess.run(
        [sys.executable, "-c", "from model import kernels; kernels.warm_up(); print('ok')"],
        cwd=root, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
    assert "not cached (ModuleNotFoundError" in result.stderr
