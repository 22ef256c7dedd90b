"""model.features.mfcc against librosa's own output, stored in fixtures/mfcc_librosa.npz.

The fixture was made once with librosa 0.11 by fixtures/make_mfcc_fixture.py (librosa is
not a labquake dependency). Tolerance: 1e-3 dB absolute on every coefficient. float32
arithmetic honestly achieves about 1e-4 dB here (the largest coefficients are ~1,000 dB,
whose float32 spacing is 6e-5); the 10x margin absorbs other CPUs' FFT rounding.
"""

from pathlib import Path

import numpy as np
import pytest
import scipy.fft

from model.features import mfcc

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mfcc_librosa.npz"
MFCC_ATOL_DB = 1e-3
SIGNAL_NAMES = ("bursts_150k", "bursts_15k", "denoised_15k", "zeros_4096", "clipped_4096")


@pytest.fixture(scope="module")
def librosa_reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as stored:
        return {name: stored[name] for name in stored.files}


def test_mel_filter_bank_matches_librosa(librosa_reference):
    np.testing.assert_allclose(mfcc.mel_filter_bank(), librosa_reference["mel_filter_bank"],
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_mfcc_matches_librosa(librosa_reference, name):
    signal = librosa_reference[f"signal_{name}"].astype(np.float32)
    expected = librosa_reference[f"mfcc_{name}"]

    ours = mfcc.mfcc(signal[np.newaxis])[0]

    assert ours.dtype == np.float32
    assert ours.shape == expected.shape == (mfcc.N_MFCC, mfcc.frame_count(signal.size))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=MFCC_ATOL_DB)


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_mean_mfcc_matches_librosa_frame_means(librosa_reference, name):
    signal = librosa_reference[f"signal_{name}"].astype(np.float32)
    expected = librosa_reference[f"mfcc_{name}"].mean(axis=1, dtype=np.float64)
    coefficients = (4, 18, 0, 19)

    means = mfcc.mean_mfcc(mfcc.power_spectrogram(signal[np.newaxis]), coefficients)

    assert means.shape == (1, len(coefficients))
    np.testing.assert_allclose(means[0], expected[list(coefficients)], rtol=0, atol=MFCC_ATOL_DB)


def test_batch_takes_the_top_db_floor_per_signal(librosa_reference):
    # A loud and a quiet signal together: a batch-wide floor would clip the quiet one.
    loud = librosa_reference["signal_bursts_15k"].astype(np.float32)
    quiet = librosa_reference["signal_denoised_15k"] * np.float32(1e-3)
    both = mfcc.mfcc(np.stack([loud, quiet]))
    np.testing.assert_array_equal(both[0], mfcc.mfcc(loud[np.newaxis])[0])
    np.testing.assert_array_equal(both[1], mfcc.mfcc(quiet[np.newaxis])[0])


def test_power_spectrogram_frames_and_parseval():
    signal = np.random.default_rng(3).normal(0.0, 2.0, (1, 15_000)).astype(np.float32)
    power = mfcc.power_spectrogram(signal)
    assert power.shape == (1, mfcc.frame_count(15_000), mfcc.N_BINS) == (1, 30, 1025)
    # Frame 10 is whole (no padding): its one-sided power sums to N_FFT * sum((w x)**2).
    frame = signal[0, 10 * mfcc.HOP_LENGTH - mfcc.N_FFT // 2:][:mfcc.N_FFT] * mfcc.hann_window()
    one_sided = power[0, 10, 0] + power[0, 10, -1] + 2 * power[0, 10, 1:-1].sum()
    np.testing.assert_allclose(one_sided, mfcc.N_FFT * np.sum(frame.astype(np.float64) ** 2),
                               rtol=1e-5)


def test_hann_window_is_periodic():
    window = mfcc.hann_window()
    assert window[0] == 0.0 and window[mfcc.N_FFT // 2] == 1.0
    np.testing.assert_allclose(window[1:], window[1:][::-1], atol=1e-7)


def test_chosen_coefficients_of_mean_decibels_are_the_dct_rows():
    mean_decibels = np.random.default_rng(7).uniform(-100, 20, (3, mfcc.N_MELS))
    coefficients = [0, 4, 18, 19]
    expected = scipy.fft.dct(mean_decibels, type=2, norm="ortho", axis=-1)[:, coefficients]
    np.testing.assert_allclose(mfcc.mfcc_of_mean_decibels(mean_decibels, coefficients),
                               expected, rtol=1e-6, atol=1e-3)
