"""Features of windows of acoustic emission (AE): the LANL winners' four and their kin.

Every feature is computed from the *denoised* window, the winners' recipe: add Gaussian
noise N(0, 0.5**2) to every sample, then subtract the window's median. The noise breaks
the integer quantisation and the median removes the drifting offset, so neither leaks into
the features. The noise is seeded by the window's first sample on the instrument's sample
counter, so a replay of the same data gives bit-identical features.

Around the winners' four (peaks of support 2, the 20th percentile of the 50-sample rolling
standard deviation, the means of MFCC 4 and 18), the set holds the volatility statistics
that Rouet-Leduc et al. (2017) found to predict time to failure (variance above all, then
kurtosis, threshold counts), rolling-std percentiles at several widths, STA/LTA ratios and
band powers. Scale-dependent ones are logs (of variances, powers, 1 + counts) so the
network sees well-conditioned inputs; ``FEATURE_DEFINITIONS`` defines each in one line.

The work is vectorised over the batch; rows are processed in chunks of about
``CHUNK_SAMPLES`` samples so that the intermediates stay in cache, and the intermediates
(denoised signal, cumulative sums, rolling variances, spectrogram) are computed once per
chunk and shared by the features that need them.

The chunks of a batch are computed on several threads at once: the calling thread and up
to ``MAX_THREADS - 1`` of one module-level pool, made at the first threaded call. The
per-sample loops (the noise, the running sums of the rolling statistics, the STFT's
framing and squares) are compiled (``model.kernels``, bit for bit the NumPy formulas)
and, like NumPy's ufuncs, partitions and SciPy's FFTs, run without the GIL; the Python
between the calls holds it, so threads help by less than their number. The number of
threads is ``extract``'s ``threads`` argument; by default the environment variable
``LABQUAKE_FEATURE_THREADS`` (1 to ``MAX_THREADS``), else one per core, at most
``MAX_THREADS``. Each row's features are the same bits whatever the threads and chunks.

Example:
    >>> import numpy as np
    >>> from model import features
    >>> windows = np.zeros((2, 150_000), np.int16)
    >>> features.extract(windows).shape == (2, len(features.FEATURE_NAMES))
    True
    >>> features.extract(windows, names=features.WINNERS_FEATURES).shape
    (2, 4)
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

import numpy as np
import scipy.special

from model import kernels, mfcc
from stream.errors import LabquakeError

FEATURES_VERSION = 1
MIN_WINDOW_LEN = 4096
CHUNK_SAMPLES = 1 << 18
# With several threads, chunks twice as large: fewer and longer calls a window, so fewer
# hand-offs of the GIL between the threads (measured on two threads, 150,000-sample
# windows: 52-53 MS/s against 44-45 MS/s with chunks of 1 << 17; on one, 5 % slower).
THREADED_CHUNK_SAMPLES = 1 << 19

NOISE_STD = 0.5
# Part of the definition of every feature: changing it changes every trained model's inputs.
NOISE_SEED = 0x4C41_4E4C
# The noise is drawn by inverse CDF from the exact quantiles of N(0, NOISE_STD**2) at the
# centres of 2**16 equiprobable cells, indexed by 16-bit words of the PCG64 stream: five
# times faster than a Gaussian sampler, within 2**-16 of the normal CDF, and it depends
# only on the bit generator's stream, which NumPy keeps stable across versions.
NOISE_LEVEL_BITS = 16

PEAK_SUPPORT = 2
WINNER_ROLLING_WIDTH = 50
WINNER_ROLLING_PERCENT = 20
MFCC_COEFFICIENTS = (4, 18)
ROLLING_WIDTHS = (10, 50, 100, 1000)
ROLLING_PERCENTS = (1, 5, 50)
# The extra rolling-std features take runs starting every width // 10 samples: runs that
# overlap by 90 % tell the same story as all of them, at a tenth of the work for wide
# ones. The winners' feature keeps every run, as they defined it.
ROLLING_STRIDE_DIVISOR = 10
AMPLITUDE_THRESHOLDS = (10, 50, 250)
STA_LTA_MEAN_PAIRS = ((10, 100), (50, 1000))
# STA/LTA is evaluated every `short` samples (the short runs tile the signal), so each
# `long` must be a multiple of its `short`.
STA_LTA_MAX_PAIR = (50, 1000)
# Band edges as fractions of the Nyquist frequency (at the LANL 4 MHz: 0, 62.5, 250,
# 500, 1000 and 2000 kHz); roughly octaves, finer where the AE carries most power.
BAND_EDGES = (0.0, 1 / 32, 1 / 8, 1 / 4, 1 / 2, 1.0)
# Floors keep logs and ratios finite on degenerate windows; the denoising noise alone has
# variance 0.25, so real windows never reach them.
VARIANCE_FLOOR = 1e-6
AMPLITUDE_FLOOR = 1e-3

# Threads that compute a batch's chunks side by side (see the module docstring): the
# default is one per core, at most this many.
MAX_THREADS = 4
THREADS_ENV = "LABQUAKE_FEATURE_THREADS"


def _noise_table() -> np.ndarray:
    levels = 1 << NOISE_LEVEL_BITS
    cell_centres = (np.arange(levels) + 0.5) / levels
    return (NOISE_STD * scipy.special.ndtri(cell_centres)).astype(np.float32)


_NOISE_TABLE = _noise_table()
_WORDS_PER_DRAW = 64 // NOISE_LEVEL_BITS


def denoise(windows: np.ndarray, start_samples: np.ndarray | None = None) -> np.ndarray:
    """The winners' denoising: add N(0, 0.5**2) noise to each sample, subtract the median.

    Args:
        windows: int16 array of shape (batch, window_len).
        start_samples: int64 array of shape (batch,), each window's first sample on the
            instrument's counter; it seeds the window's noise. None means all zeros.

    Returns:
        float32 array of shape (batch, window_len) whose rows have median 0.

    Example:
        >>> signal = denoise(np.full((1, 4096), 7, np.int16))
        >>> abs(float(np.median(signal))) < 1e-6, round(float(signal.std()), 1)
        (True, 0.5)
    """
    windows, starts = _validated(windows, start_samples)
    return _denoise(windows, starts)


def _denoise(windows: np.ndarray, start_samples: Sequence[int]) -> np.ndarray:
    batch, length = windows.shape
    words = -(-length // _WORDS_PER_DRAW)
    signal = np.empty((batch, length), np.float32)
    for row, start in enumerate(start_samples):
        draws = np.random.PCG64([NOISE_SEED, start]).random_raw(words)
        # Fixed byte order, so the 16-bit words are the same on any machine.
        levels = draws.astype("<u8", copy=False).view("<u2")[:length]
        # The noise's value for each level plus the sample, in one compiled pass.
        kernels.add_noise(_NOISE_TABLE, levels, windows[row], signal[row])
    half = length // 2
    ordered = np.partition(signal, half, axis=1)
    median = ordered[:, half]
    if length % 2 == 0:
        median = (ordered[:, :half].max(axis=1) + median) * np.float32(0.5)
    signal -= median[:, np.newaxis]
    return signal


def _clipped_sqrt(variance: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(variance.astype(np.float64), 0.0))


def _std_percentiles(variance: np.ndarray, percents: Sequence[float]) -> np.ndarray:
    """``np.percentile(np.sqrt(variance), percents, axis=1).T``, without the full sqrt.

    The square root is monotonic, so the percentile of the std interpolates between the
    square roots of the same two ranks of the variance. Each needed rank costs one
    single-rank partition (NumPy's SIMD select), largest rank first, each on the part
    the previous one left below its rank.
    """
    count = variance.shape[1]
    positions = np.asarray(percents, np.float64) / 100.0 * (count - 1)
    below = np.floor(positions).astype(np.int64)
    low: dict[int, np.ndarray] = {}
    high: dict[int, np.ndarray] = {}
    candidates = variance
    for rank in sorted(set(below.tolist()), reverse=True):
        if candidates is variance:  # the shared variances stay as they are
            candidates = np.partition(candidates, rank, axis=1)
        else:  # a part of this function's own copy: in place
            candidates.partition(rank, axis=1)
        low[rank] = _clipped_sqrt(candidates[:, rank])
        above = candidates[:, rank + 1:]
        high[rank] = _clipped_sqrt(above.min(axis=1)) if above.size else low[rank]
        candidates = candidates[:, :rank + 1]
    result = np.empty((variance.shape[0], len(percents)))
    for column, (rank, position) in enumerate(zip(below.tolist(), positions, strict=True)):
        result[:, column] = low[rank] + (position - rank) * (high[rank] - low[rank])
    return result


def _count_peaks(signal: np.ndarray, support: int) -> np.ndarray:
    length = signal.shape[1]
    centre = signal[:, support:length - support]
    is_peak = np.ones(centre.shape, bool)
    for shift in range(1, support + 1):
        is_peak &= centre > signal[:, support - shift:length - support - shift]
        is_peak &= centre > signal[:, support + shift:length - support + shift]
    return np.count_nonzero(is_peak, axis=1)


def _band_bins() -> tuple[tuple[int, int], ...]:
    edges = [round(fraction * (mfcc.N_BINS - 1)) for fraction in BAND_EDGES]
    edges[-1] = mfcc.N_BINS  # the last band keeps the Nyquist bin
    return tuple(itertools.pairwise(edges))


def _power_scale() -> np.ndarray:
    # Scales the one-sided power spectrum of Hann-windowed frames so that it sums to the
    # mean square of the signal (Parseval): band powers are then in counts**2.
    one_sided = np.full(mfcc.N_BINS, 2.0)
    one_sided[[0, -1]] = 1.0
    window_power = float(np.sum(np.square(mfcc.hann_window(), dtype=np.float64)))
    return one_sided / (mfcc.N_FFT * window_power)


_BAND_BINS = _band_bins()
_POWER_SCALE = _power_scale()
_NYQUIST_FRACTION = np.arange(mfcc.N_BINS) / (mfcc.N_BINS - 1)


_Runs = tuple[int, int]  # (width, stride) of a set of rolling runs


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the chosen features need of the rolling statistics, worked out once a call."""

    runs: frozenset[_Runs]  # every set of runs a chosen feature reads
    percents: dict[_Runs, tuple[int, ...]]  # the rolling-std percentiles asked, by runs


_Value = TypeVar("_Value")


class _cached_property(Generic[_Value]):
    """``functools.cached_property`` without its lock.

    Before Python 3.12 that lock is one per property, shared by every instance, so the
    threads' chunks would wait for each other's spectrograms and rolling passes. A chunk
    is only ever used by one thread.
    """

    def __init__(self, compute: Callable[[Any], _Value]):
        self._compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type | None = None) -> _Value:
        # A non-data descriptor: once the value is in the instance's __dict__, Python
        # finds it there without calling this again.
        value = self._compute(instance)
        instance.__dict__[self._name] = value
        return value


class _Chunk:
    """The denoised rows of one chunk and the intermediates its features share."""

    def __init__(self, signal: np.ndarray, plan: _Plan):
        self.signal = signal
        self._plan = plan
        self._above: dict[float, list[np.ndarray]] = {}  # see count_over
        self._rolling_percentiles: dict[_Runs, dict[int, np.ndarray]] = {}

    @_cached_property
    def squares(self) -> np.ndarray:
        return np.square(self.signal)

    @_cached_property
    def raw_moments(self) -> tuple[np.ndarray, ...]:
        """Means of x, x**2, x**3 and x**4 (the central moments follow exactly).

        x has median 0, so its mean is within a few standard deviations of 0 and the
        conversion to central moments loses nothing in float64; it saves a centred copy.
        """
        squares = self.squares
        # float32 pairwise sums (relative error ~1e-7 log n) are several times faster
        # than float64 ones; products, not np.power, which is tens of times slower.
        sums = (self.signal.sum(axis=1), squares.sum(axis=1),
                (squares * self.signal).sum(axis=1), np.square(squares).sum(axis=1))
        return tuple(total.astype(np.float64) / self.signal.shape[1] for total in sums)

    @_cached_property
    def variance(self) -> np.ndarray:
        mean, second, _, _ = self.raw_moments
        return np.maximum(second - mean**2, VARIANCE_FLOOR)

    @_cached_property
    def skewness(self) -> np.ndarray:
        mean, second, third, _ = self.raw_moments
        return (third - 3 * mean * second + 2 * mean**3) / self.variance**1.5

    @_cached_property
    def kurtosis(self) -> np.ndarray:
        mean, second, third, fourth = self.raw_moments
        central = fourth - 4 * mean * third + 6 * mean**2 * second - 3 * mean**4
        return central / self.variance**2

    @_cached_property
    def magnitude(self) -> np.ndarray:
        return np.abs(self.signal)

    def count_over(self, threshold: float) -> np.ndarray:
        """Samples of each row with |x| > ``threshold``, int64 of shape (batch,).

        Counted among each row's samples above the largest threshold asked before that is
        below this one: AE is mostly small, so after the first count each reads few.
        """
        lower = max((known for known in self._above if known < threshold), default=None)
        pools = self._above[lower] if lower is not None else list(self.magnitude)
        above = [pool[pool > threshold] for pool in pools]
        self._above[threshold] = above
        return np.array([len(values) for values in above], np.int64)

    @_cached_property
    def rolling_variances(self) -> dict[_Runs, np.ndarray]:
        """Every set of runs the chosen features read, in one compiled pass (``model.kernels``).

        Each run's sum is the difference of two float64 running sums, and float64 keeps
        that difference exact enough; the pass is sequential, so the sums are bit for bit
        those of ``np.cumsum`` over the whole row, and it runs without the GIL.
        """
        return kernels.rolling_variances(self.signal, tuple(sorted(self._plan.runs)))

    def rolling_variance(self, width: int, stride: int) -> np.ndarray:
        """Sample variance (ddof=1) of the runs of ``width`` samples starting every
        ``stride`` samples (the last run ending at or before the window's end), float32.

        Rounding can leave a constant run a hair below zero; users clip what they pick.
        """
        return self.rolling_variances[(width, stride)]

    def rolling_std_percentile(self, width: int, stride: int, percent: int) -> np.ndarray:
        """``np.percentile`` of the rolling std over runs of ``width`` every ``stride``; the
        percents asked for the same runs are computed together, sharing partitions."""
        runs = (width, stride)
        if runs not in self._rolling_percentiles:
            percents = self._plan.percents[runs]
            values = _std_percentiles(self.rolling_variance(width, stride), percents)
            self._rolling_percentiles[runs] = {
                asked: values[:, column] for column, asked in enumerate(percents)}
        return self._rolling_percentiles[runs][percent]

    def sta_lta(self, short: int, long: int) -> np.ndarray:
        """(variance over the last ``short`` samples) / (over the last ``long``), at every
        ``short``-th end sample."""
        long_variance = self.rolling_variance(long, short)
        # Run i of the short ones ends where run i - (long - short) / short of the long ends.
        offset = (long - short) // short
        short_variance = self.rolling_variance(short, short)[
            :, offset:offset + long_variance.shape[1]]
        return short_variance / np.maximum(long_variance, np.float32(VARIANCE_FLOOR))

    @_cached_property
    def power(self) -> np.ndarray:
        return mfcc.power_spectrogram(self.signal)

    @_cached_property
    def mean_power_spectrum(self) -> np.ndarray:
        # A float32 sum over a few hundred frames is accurate to ~1e-5, plenty for a log.
        frames = self.power.shape[1]
        return self.power.sum(axis=1).astype(np.float64) * (_POWER_SCALE / frames)

    @_cached_property
    def mfcc_means(self) -> dict[int, np.ndarray]:
        means = mfcc.mean_mfcc(self.power, MFCC_COEFFICIENTS)
        return {coefficient: means[:, column]
                for column, coefficient in enumerate(MFCC_COEFFICIENTS)}


@dataclasses.dataclass(frozen=True)
class _Feature:
    """One named feature: its one-line definition and how a chunk computes it."""

    name: str
    definition: str
    compute: Callable[[_Chunk], np.ndarray]
    rolling: tuple[_Runs, int] | None = None  # (runs, percent) of a rolling-std percentile
    runs: tuple[_Runs, ...] = ()  # the rolling runs it reads


def _log(values: np.ndarray, floor: float) -> np.ndarray:
    return np.log(np.maximum(values, floor))


def _peaks_feature() -> _Feature:
    return _Feature(
        f"num_peaks_{PEAK_SUPPORT}",
        f"number of samples of x strictly greater than the {PEAK_SUPPORT} samples on each "
        f"side (tsfresh number_peaks, n={PEAK_SUPPORT})",
        lambda chunk: _count_peaks(chunk.signal, PEAK_SUPPORT))


def _ordinal(number: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{'th' if 10 <= number % 100 <= 20 else suffix}"


def _rolling_feature(width: int, percent: int, winners: bool) -> _Feature:
    stride = 1 if winners else max(1, width // ROLLING_STRIDE_DIVISOR)
    runs = f"every full {width}-sample run" if stride == 1 else (
        f"the {width}-sample runs starting every {stride} samples")
    definition = f"{_ordinal(percent)} percentile of the std (ddof=1) of x over {runs}"
    if winners:
        return _Feature(f"rolling_std_{width}_p{percent}", definition,
                        lambda chunk: chunk.rolling_std_percentile(width, stride, percent),
                        rolling=((width, stride), percent), runs=((width, stride),))
    return _Feature(
        f"log_rolling_std_{width}_p{percent:02d}", f"log of the {definition}",
        lambda chunk: _log(chunk.rolling_std_percentile(width, stride, percent),
                           AMPLITUDE_FLOOR),
        rolling=((width, stride), percent), runs=((width, stride),))


def _mfcc_feature(coefficient: int) -> _Feature:
    return _Feature(
        f"mfcc_{coefficient}_mean",
        f"mean over frames of MFCC {coefficient} (0-based) of x: librosa.feature.mfcc(y=x)"
        f"[{coefficient}].mean(), librosa's defaults (sr 22,050, n_fft 2048, hop 512, 128 mels)",
        lambda chunk: chunk.mfcc_means[coefficient])


def _threshold_feature(threshold: int) -> _Feature:
    return _Feature(
        f"log1p_count_over_{threshold}",
        f"log(1 + number of samples with |x| > {threshold} counts)",
        lambda chunk: np.log1p(chunk.count_over(threshold)))


def _sta_lta_mean_feature(short: int, long: int) -> _Feature:
    return _Feature(
        f"sta_lta_{short}_{long}_mean",
        f"mean over every {short}th end sample of (variance of x over the last {short} "
        f"samples) / (variance over the last {long})",
        lambda chunk: chunk.sta_lta(short, long).mean(axis=1, dtype=np.float64),
        runs=((short, short), (long, short)))


def _sta_lta_max_feature(short: int, long: int) -> _Feature:
    return _Feature(
        f"log_sta_lta_{short}_{long}_max",
        f"log of the largest, over every {short}th end sample, of (variance of x over the "
        f"last {short} samples) / (variance over the last {long})",
        lambda chunk: _log(chunk.sta_lta(short, long).max(axis=1), VARIANCE_FLOOR),
        runs=((short, short), (long, short)))


def _band_feature(band: int) -> _Feature:
    first, stop = _BAND_BINS[band]
    low, high = BAND_EDGES[band], BAND_EDGES[band + 1]
    return _Feature(
        f"log_band_power_{band + 1}",
        f"log of the power of x (counts**2; the bands sum to the variance) from {low:g} to "
        f"{high:g} of the Nyquist frequency, from the mean Hann-windowed STFT power",
        lambda chunk: _log(chunk.mean_power_spectrum[:, first:stop].sum(axis=1), VARIANCE_FLOOR))


def _spectral_centroid(chunk: _Chunk) -> np.ndarray:
    spectrum = chunk.mean_power_spectrum
    weighted = (spectrum * _NYQUIST_FRACTION).sum(axis=1)
    return weighted / np.maximum(spectrum.sum(axis=1), VARIANCE_FLOOR)


_WINNERS = (
    _peaks_feature(),
    _rolling_feature(WINNER_ROLLING_WIDTH, WINNER_ROLLING_PERCENT, winners=True),
    *(_mfcc_feature(coefficient) for coefficient in MFCC_COEFFICIENTS),
)

_FEATURES: tuple[_Feature, ...] = (
    *_WINNERS,
    _Feature("log_variance", "log of the variance of x",
             lambda chunk: np.log(chunk.variance)),
    _Feature("log_mean_abs_deviation", "log of the mean absolute deviation of x from its "
             "median (the mean of |x|)",
             lambda chunk: _log(chunk.magnitude.mean(axis=1), AMPLITUDE_FLOOR)),
    _Feature("skewness", "skewness of x (third standardised moment)",
             lambda chunk: chunk.skewness),
    _Feature("log_kurtosis", "log of the kurtosis of x (fourth standardised moment, 3 for a "
             "Gaussian)",
             # Pearson's kurtosis is >= 1; the floor only catches a fully degenerate window.
             lambda chunk: _log(chunk.kurtosis, 1.0)),
    _Feature("log_max_abs", "log of the largest |x|",
             lambda chunk: _log(chunk.magnitude.max(axis=1), AMPLITUDE_FLOOR)),
    *(_threshold_feature(threshold) for threshold in AMPLITUDE_THRESHOLDS),
    *(_rolling_feature(width, percent, winners=False)
      for width in ROLLING_WIDTHS for percent in ROLLING_PERCENTS),
    *(_sta_lta_mean_feature(short, long) for short, long in STA_LTA_MEAN_PAIRS),
    _sta_lta_max_feature(*STA_LTA_MAX_PAIR),
    *(_band_feature(band) for band in range(len(_BAND_BINS))),
    _Feature("spectral_centroid",
             "power-weighted mean frequency of x, as a fraction of the Nyquist frequency",
             _spectral_centroid),
)
_FEATURES_BY_NAME = {feature.name: feature for feature in _FEATURES}

FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in _FEATURES)
WINNERS_FEATURES: tuple[str, ...] = tuple(feature.name for feature in _WINNERS)
FEATURE_DEFINITIONS: dict[str, str] = {
    feature.name: f"{feature.definition}; x is the denoised window (window + "
                  f"N(0, {NOISE_STD}**2) noise, minus its median)"
    for feature in _FEATURES}


def default_threads() -> int:
    """Threads ``extract`` uses when not told: ``$LABQUAKE_FEATURE_THREADS``, or one per
    core this process may run on, at most ``MAX_THREADS``.

    Raises:
        LabquakeError: the environment variable is set but not a whole number from 1 to
            MAX_THREADS.

    Example:
        >>> 1 <= default_threads() <= MAX_THREADS
        True
    """
    setting = os.environ.get(THREADS_ENV, "").strip()
    if not setting:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
        return min(cores, MAX_THREADS)
    if not setting.isdigit() or not 1 <= int(setting) <= MAX_THREADS:
        raise LabquakeError(f"{THREADS_ENV}={setting!r} is not a whole number from 1 to "
                            f"{MAX_THREADS}; set it to e.g. 2, or unset it for one per core")
    return int(setting)


def _checked_threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not (
            1 <= threads <= MAX_THREADS):
        raise LabquakeError(f"threads={threads!r} is not a whole number from 1 to "
                            f"{MAX_THREADS}; pass e.g. 2, or None for the default")
    return threads


_POOL_LOCK = threading.Lock()
_POOL: list[ThreadPoolExecutor] = []  # the one pool, made at the first threaded call


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            # The calling thread computes chunks too, so the pool needs one thread less.
            _POOL.append(ThreadPoolExecutor(max_workers=MAX_THREADS - 1,
                                            thread_name_prefix="labquake-features"))
        return _POOL[0]


def extract(windows: np.ndarray, start_samples: np.ndarray | None = None,
            names: Sequence[str] = FEATURE_NAMES, *, threads: int | None = None) -> np.ndarray:
    """Features of a batch of AE windows, each computed from the denoised window.

    Args:
        windows: int16 array of shape (batch, window_len), window_len >= MIN_WINDOW_LEN.
        start_samples: int64 array of shape (batch,), each window's first sample on the
            instrument's counter; it seeds the denoising noise, so the same window at the
            same place always gives the same features. None means all zeros.
        names: the features to compute, in the output's column order (default: all of
            FEATURE_NAMES; ``WINNERS_FEATURES`` for the winners' four alone).
        threads: threads that compute the batch's chunks, 1 to MAX_THREADS; None means
            ``default_threads()``. The values do not depend on it.

    Returns:
        float32 array of shape (batch, len(names)), finite for any int16 input.

    Raises:
        LabquakeError: windows not int16 of shape (batch, window_len >= MIN_WINDOW_LEN),
            start_samples not one non-negative integer per window, an unknown name, or a
            bad thread count (``threads`` or ``$LABQUAKE_FEATURE_THREADS``).

    Example:
        >>> windows = np.zeros((3, 15_000), np.int16)
        >>> extract(windows, np.array([0, 15_000, 30_000]), names=["log_variance"]).shape
        (3, 1)
    """
    windows, starts = _validated(windows, start_samples)
    threads = _checked_threads(threads)
    if isinstance(names, str):
        raise LabquakeError(f"names must be a sequence of feature names, got the string "
                            f"{names!r}; pass [{names!r}] for one feature")
    unknown = [name for name in names if name not in _FEATURES_BY_NAME]
    if unknown:
        raise LabquakeError(f"unknown feature(s) {', '.join(map(repr, unknown))}; "
                            f"choose from model.features.FEATURE_NAMES")
    features = [_FEATURES_BY_NAME[name] for name in names]
    percents_by_runs: dict[_Runs, set[int]] = {}
    for feature in features:
        if feature.rolling is not None:
            runs, percent = feature.rolling
            percents_by_runs.setdefault(runs, set()).add(percent)
    plan = _Plan(
        runs=frozenset(runs for feature in features for runs in feature.runs),
        percents={runs: tuple(sorted(percents)) for runs, percents in percents_by_runs.items()})

    batch, length = windows.shape
    result = np.empty((batch, len(features)), np.float32)
    # Every thread gets chunks: a batch of short windows is cut finer than CHUNK_SAMPLES
    # rather than left to one thread (a row's features do not depend on its chunk).
    chunk_samples = CHUNK_SAMPLES if threads == 1 else THREADED_CHUNK_SAMPLES
    rows_per_chunk = max(1, min(chunk_samples // length, -(-batch // threads)))
    # As many chunks as that takes, rounded up to a multiple of the threads, of sizes
    # that differ by at most one row: the threads finish together.
    needed = math.ceil(batch / rows_per_chunk)
    count = min(batch, math.ceil(needed / threads) * threads)
    bounds = [batch * part // count for part in range(count + 1)] if batch else [0]
    # Largest first, so the last ones to be taken are the small ones.
    chunks = sorted((slice(first, stop) for first, stop in itertools.pairwise(bounds)),
                    key=lambda rows: rows.start - rows.stop)

    def compute(rows: slice) -> None:
        chunk = _Chunk(_denoise(windows[rows], starts[rows]), plan)
        for column, feature in enumerate(features):
            result[rows, column] = feature.compute(chunk)

    _run_chunks(compute, chunks, threads)
    return result


def _run_chunks(compute: Callable[[slice], None], chunks: list[slice], threads: int) -> None:
    """``compute`` each chunk, on this thread and up to ``threads - 1`` of the pool's.

    Each thread takes the next chunk when it is done with one, so uneven chunks balance;
    after an error every thread stops at the end of its chunk, and the error is raised.
    """
    helpers = min(threads, len(chunks)) - 1
    if helpers <= 0:
        for rows in chunks:
            compute(rows)
        return
    pending = iter(chunks)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                rows = next(pending, None)
            if rows is None:
                return
            try:
                compute(rows)
            except BaseException:
                with lock:
                    collections.deque(pending, maxlen=0)  # drain: the others stop
                raise

    futures = [_pool().submit(work) for _ in range(helpers)]
    try:
        work()
    finally:
        for future in futures:
            # Once this thread is done, every chunk is taken: a helper that has not
            # started (the pool busy with another call's chunks) has nothing left to do.
            future.cancel()
        wait(futures)
    for future in futures:
        if not future.cancelled():
            future.result()  # raises a helper's error


def _validated(windows: np.ndarray,
               start_samples: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.dtype != np.int16:
        raise LabquakeError(
            f"windows must be an int16 array of shape (batch, window_len), got "
            f"{windows.dtype} of shape {windows.shape}; pass raw int16 samples, one row per window")
    batch, length = windows.shape
    if length < MIN_WINDOW_LEN:
        raise LabquakeError(f"a window of {length} samples is too short for the features; "
                            f"use windows of at least {MIN_WINDOW_LEN} samples")
    if start_samples is None:
        return windows, [0] * batch
    starts = np.asarray(start_samples)
    if starts.shape != (batch,) or not np.issubdtype(starts.dtype, np.integer):
        raise LabquakeError(
            f"start_samples must hold one integer per window, shape ({batch},), got "
            f"{starts.dtype} of shape {starts.shape}; pass each window's first sample index")
    if batch and starts.min() < 0:
        raise LabquakeError("start_samples must be >= 0 (indices on the instrument's sample "
                            "counter); pass each window's first sample index")
    return windows, starts.tolist()
