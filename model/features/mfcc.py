"""Mel-frequency cepstral coefficients exactly as librosa's defaults define them, on SciPy.

The LANL winners called ``librosa.feature.mfcc(y=x)`` with no other argument, so the
definition is librosa's default one: sample rate 22,050 Hz (librosa's default, not the
instrument's), ``n_fft`` 2048, hop 512, centred frames zero-padded by ``n_fft // 2`` on
each side (librosa >= 0.10 pads with zeros), a periodic Hann window, the power
spectrogram, 128 Slaney mel bands (``htk=False``, ``norm="slaney"``, 0 Hz to 11,025 Hz),
``power_to_db(ref=1.0, amin=1e-10, top_db=80.0)`` per signal, and an orthonormal
DCT-II keeping 20 coefficients. ``tests/model/fixtures/mfcc_librosa.npz`` holds librosa
0.11's output for a few signals and the tests hold this module to it.

``model.features.extract`` takes the window, the mel bank and the DCT from here, over its own
frames (those lying wholly in a window, on the sample counter); :func:`mfcc` and
:func:`power_spectrogram` are librosa's centred framing, kept as the reference the tests
hold to librosa's output, so the conventions the features use stay librosa's.

librosa is not a dependency: this module is NumPy and SciPy only. The functions on
signals work on batches: the first axis of their arrays is the signal.

Example:
    >>> import numpy as np
    >>> from model import mfcc
    >>> signals = np.random.default_rng(0).normal(size=(2, 15_000)).astype(np.float32)
    >>> mfcc.mfcc(signals).shape  # (signal, coefficient, frame), librosa's layout
    (2, 20, 30)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import scipy.fft
import scipy.sparse

from model.features import kernels

SAMPLE_RATE = 22_050
N_FFT = 2048
HOP_LENGTH = 512
N_BINS = N_FFT // 2 + 1
N_MELS = 128
N_MFCC = 20
AMIN = 1e-10
TOP_DB = 80.0
# The STFT runs over blocks of 32 frames (256 KiB of float32): a block's buffers stay in
# cache, and the allocator reuses them instead of handing multi-megabyte arrays back to
# the OS after every call (whose page faults cost more than the FFT itself).
FRAMES_PER_BLOCK = 32

# The Slaney mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def frame_count(n_samples: int) -> int:
    """Number of STFT frames of a signal of ``n_samples`` samples (centred framing).

    Args:
        n_samples: the signal's length.

    Returns:
        ``1 + n_samples // HOP_LENGTH``, as librosa with ``center=True``.

    Example:
        >>> frame_count(150_000)
        293
    """
    return 1 + n_samples // HOP_LENGTH


@functools.cache
def hann_window() -> np.ndarray:
    """The periodic Hann window of ``N_FFT`` samples (``scipy.signal.get_window("hann")``).

    Returns:
        float32 array of shape (N_FFT,), read-only.

    Example:
        >>> float(hann_window()[N_FFT // 2])
        1.0
    """
    phase = 2.0 * np.pi * np.arange(N_FFT) / N_FFT
    window = (0.5 - 0.5 * np.cos(phase)).astype(np.float32)
    window.flags.writeable = False
    return window


def power_spectrogram(signals: np.ndarray) -> np.ndarray:
    """Power spectrogram ``|STFT|**2`` of a batch of signals, librosa's default framing.

    Args:
        signals: float32 array of shape (batch, n_samples), n_samples >= N_FFT.

    Returns:
        float32 array of shape (batch, frame_count(n_samples), N_BINS).

    Example:
        >>> power_spectrogram(np.ones((1, 4096), np.float32)).shape
        (1, 9, 1025)
    """
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    batch, n_samples = signals.shape
    n_frames = frame_count(n_samples)
    power = np.empty((batch, n_frames, N_BINS), np.float32)
    windowed = np.empty((FRAMES_PER_BLOCK, N_FFT), np.float32)
    for row in range(batch):
        for first in range(0, n_frames, FRAMES_PER_BLOCK):
            count = min(FRAMES_PER_BLOCK, n_frames - first)
            # Framing (zero-padded at the ends, as np.pad would), the Hann window and
            # |z|**2 are compiled loops (model.features.kernels): one pass each, without the GIL.
            kernels.hann_frames(signals[row], hann_window(), first, HOP_LENGTH,
                                windowed[:count])
            spectrum = scipy.fft.rfft(windowed[:count], axis=-1)
            kernels.power(spectrum, power[row, first:first + count])
    return power


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    linear = hz / _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_LOG_START_MEL + np.log(
        np.maximum(hz, _SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_LOG_START_HZ, logarithmic, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_LOG_START_HZ * np.exp(
        _SLANEY_LOG_STEP * (mel - _SLANEY_LOG_START_MEL))
    return np.where(mel >= _SLANEY_LOG_START_MEL, logarithmic, linear)


@functools.cache
def mel_filter_bank() -> np.ndarray:
    """librosa's default mel filter bank: 128 Slaney-normalised triangles, 0 Hz to sr/2.

    Returns:
        float32 array of shape (N_MELS, N_BINS), read-only; equals
        ``librosa.filters.mel(sr=22050, n_fft=2048)`` to float32 rounding.

    Example:
        >>> mel_filter_bank().shape
        (128, 1025)
    """
    bin_hz = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    edges_mel = np.linspace(_hz_to_slaney_mel(np.array(0.0)),
                            _hz_to_slaney_mel(np.array(SAMPLE_RATE / 2.0)), N_MELS + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths_hz = np.diff(edges_hz)
    offsets = edges_hz[:, np.newaxis] - bin_hz[np.newaxis, :]
    rising = -offsets[:-2] / widths_hz[:-1, np.newaxis]
    falling = offsets[2:] / widths_hz[1:, np.newaxis]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    # Slaney normalisation: each band has about the same energy (area 1 in Hz).
    # Scaled in float64 and rounded once, in the order librosa rounds.
    area_norm = 2.0 / (edges_hz[2:] - edges_hz[:-2])
    bank = (triangles * area_norm[:, np.newaxis]).astype(np.float32)
    bank.flags.writeable = False
    return bank


@functools.cache
def _sparse_mel_filter_bank() -> scipy.sparse.csr_array:
    # Each FFT bin feeds at most two bands, so the bank is 1.5 % non-zero: a sparse
    # product is several times faster than a dense one, and unlike BLAS it runs on one
    # thread and gives the same bits on every CPU.
    return scipy.sparse.csr_array(mel_filter_bank())


def mfcc_of_mean_decibels(mean_decibels: np.ndarray, coefficients: Sequence[int]) -> np.ndarray:
    """Chosen MFCCs of mean log-mel spectra: the orthonormal DCT-II's rows, applied.

    Args:
        mean_decibels: float array of shape (batch, N_MELS).
        coefficients: 0-based MFCC indices, each below N_MFCC.

    Returns:
        float32 array of shape (batch, len(coefficients)).

    Example:
        >>> mfcc_of_mean_decibels(np.full((1, N_MELS), -100.0), [0, 4]).round(2)
        array([[-1131.37,     0.  ]], dtype=float32)
    """
    # An elementwise product and sum, not a BLAS call (which may start threads).
    rows = _dct_rows(tuple(coefficients))
    return (np.asarray(mean_decibels)[:, np.newaxis, :] * rows).sum(axis=2).astype(np.float32)


@functools.cache
def _dct_rows(coefficients: tuple[int, ...]) -> np.ndarray:
    # Rows of the orthonormal DCT-II of N_MELS points (scipy.fft.dct(type=2,
    # norm="ortho")): one dot product per coefficient instead of a whole DCT.
    m = np.arange(N_MELS)
    rows = np.array([np.cos(np.pi * k * (2 * m + 1) / (2 * N_MELS)) for k in coefficients])
    scale = np.where(np.array(coefficients) == 0, np.sqrt(1 / N_MELS), np.sqrt(2 / N_MELS))
    rows = rows * scale[:, np.newaxis]
    rows.flags.writeable = False
    return rows


def log_mel_spectrogram(power: np.ndarray) -> np.ndarray:
    """Mel power in dB, as ``librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=80)``.

    The ``top_db`` floor is taken per signal (the batch's signals are independent), as
    librosa does for each call on one signal.

    Args:
        power: float32 array of shape (batch, frames, N_BINS), from :func:`power_spectrogram`.

    Returns:
        float32 array of shape (batch, N_MELS, frames), librosa's (band, frame) layout.

    Example:
        >>> round(float(log_mel_spectrogram(np.zeros((1, 3, N_BINS), np.float32))[0, 0, 0]), 3)
        -100.0
    """
    batch, frames, _ = power.shape
    flat = power.reshape(batch * frames, N_BINS)
    mel = (_sparse_mel_filter_bank() @ flat.T).reshape(N_MELS, batch, frames)
    decibels = 10.0 * np.log10(np.maximum(np.float32(AMIN), mel.transpose(1, 0, 2)))
    floor = decibels.max(axis=(1, 2), keepdims=True) - np.float32(TOP_DB)
    return np.maximum(decibels, floor)


def mfcc(signals: np.ndarray) -> np.ndarray:
    """MFCCs of a batch of signals, as ``librosa.feature.mfcc(y=signal)`` for each one.

    Args:
        signals: float32 array of shape (batch, n_samples), n_samples >= N_FFT.

    Returns:
        float32 array of shape (batch, N_MFCC, frame_count(n_samples)), librosa's layout.

    Example:
        >>> mfcc(np.zeros((1, 4096), np.float32)).shape
        (1, 20, 9)
    """
    decibels = log_mel_spectrogram(power_spectrogram(signals))
    return scipy.fft.dct(decibels, type=2, norm="ortho", axis=1)[:, :N_MFCC]


def mean_mfcc(power: np.ndarray, coefficients: Sequence[int]) -> np.ndarray:
    """Mean over frames of chosen MFCCs, as ``librosa.feature.mfcc(y=signal)[c].mean()``.

    The DCT is linear, so the mean of a coefficient over frames is the DCT of the mean
    log-mel spectrum: one 128-point DCT per signal instead of one per frame.

    Args:
        power: float32 array of shape (batch, frames, N_BINS), from :func:`power_spectrogram`.
        coefficients: 0-based MFCC indices, each below N_MFCC.

    Returns:
        float32 array of shape (batch, len(coefficients)).

    Example:
        >>> mean_mfcc(np.zeros((1, 3, N_BINS), np.float32), [0, 4]).round(2)
        array([[-1131.37,     0.  ]], dtype=float32)
    """
    mean_decibels = log_mel_spectrogram(power).mean(axis=2, dtype=np.float64)
    cepstrum = scipy.fft.dct(mean_decibels, type=2, norm="ortho", axis=-1)
    return cepstrum[:, list(coefficients)].astype(np.float32)
