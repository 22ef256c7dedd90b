"""Features of windows of acoustic emission (AE): the LANL winners' four and their kin.

Every feature is computed from the *denoised* window, the winners' recipe: add Gaussian
noise N(0, 0.5**2) to every sample, then subtract the window's median. The noise breaks
the integer quantisation and the median removes the drifting offset, so neither leaks into
the features.

Every feature is placed on the instrument's sample counter, not on the window (features
version 2): sample n's noise is drawn by a counter-based generator from n alone, rolling
runs begin on multiples of their stride, STA/LTA ends on multiples of
the short length, and the STFT frames of the MFCC and band powers are the 2048-sample
frames that begin on multiples of 512 and lie wholly in the window. So a sample, a run and
a frame are the same in every window that holds them, a replay of the same data gives
bit-identical features, and windows that overlap can share their work (below).

Around the winners' four (peaks of support 2, the 20th percentile of the 50-sample rolling
standard deviation, the means of MFCC 4 and 18), the set holds the volatility statistics
that Rouet-Leduc et al. (2017) found to predict time to failure (variance above all, then
kurtosis, threshold counts), rolling-std percentiles at several widths, STA/LTA ratios and
band powers. Scale-dependent ones are logs (of variances, powers, 1 + counts) so the
network sees well-conditioned inputs; ``FEATURE_DEFINITIONS`` defines each in one line.

How they are computed. A stretch of samples (a "block") is reduced to partial results
(``_compute_blocks``): its median, its moments' sums, the threshold counts, the rolling
variances' percentiles or (for a cache) their sorted values, the STA/LTA sums, the peaks,
and per STFT frame what the MFCC needs. Every item (a run, a ratio, a peak, a frame)
belongs to the block its last sample falls in; a block made with the samples before it
holds the items that begin there too. A window is then combined from its blocks
(``_Windows``), vectorised over the batch:

- alone, a window is one block, and its median, percentiles and |x| are its own;
- with a :class:`BlockCache`, windows every ``hop`` samples are ``window / hop`` blocks
  each, every block computed once for all its windows: medians and percentiles are order
  statistics of the blocks' sorted values (``kernels.ranked``), moments combine by
  Pébay's formulas, and the window's median, which each block did not know, enters the
  MFCC and band powers through spectrum bins 0 and 1 alone (a constant moves no other
  bin of a Hann-windowed frame). Each window's features are its own, up to float
  rounding in the last digits.

The rows of a batch (and a cache's new blocks) are computed in chunks on several threads:
the calling thread and up to ``MAX_THREADS - 1`` of one module-level pool, made at the
first threaded call. The per-sample loops (the noise, the rolling variances, the STFT's
framing and squares, the counts) are compiled (``model.features.kernels``) and, like NumPy's sorts
and SciPy's FFTs, run without the GIL; the Python between the calls holds it, so threads
help by less than their number. The number of threads is ``extract``'s ``threads``
argument; by default the environment variable ``LABQUAKE_FEATURE_THREADS`` (1 to
``MAX_THREADS``), else one per core, at most ``MAX_THREADS``. Each row's features are the
same bits whatever the threads and chunks.

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

import bisect
import collections
import dataclasses
import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

import numpy as np
import scipy.fft
import scipy.sparse
import scipy.special

from model.features import kernels, mfcc
from stream.core.errors import LabquakeError

FEATURES_VERSION = 2
MIN_WINDOW_LEN = 4096
CHUNK_SAMPLES = 1 << 18
# With several threads, chunks twice as large: fewer and longer calls a window, so fewer
# hand-offs of the GIL between the threads.
THREADED_CHUNK_SAMPLES = 1 << 19

NOISE_STD = 0.5
# Part of the definition of every feature: changing it changes every trained model's inputs.
NOISE_SEED = 0x4C41_4E4C
# The noise is drawn by inverse CDF from the exact quantiles of N(0, NOISE_STD**2) at the
# centres of 2**16 equiprobable cells, indexed by 16-bit words of a counter-based
# generator (SplitMix64 from NOISE_SEED; sample n reads word n % 4 of output n // 4): five
# times faster than a Gaussian sampler, within 2**-16 of the normal CDF, a function of
# the sample's place alone, and made in a compiled loop without the GIL.
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


_Value = TypeVar("_Value")


class _cached_property(Generic[_Value]):
    """``functools.cached_property`` without its lock.

    Before Python 3.12 that lock is one per property, shared by every instance, so the
    threads' ``_Windows`` would wait for each other's order statistics and MFCCs. A
    ``_Windows`` is only ever used by one thread.
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


def _noisy(samples: np.ndarray, first_sample: int, out: np.ndarray | None = None,
           ) -> np.ndarray:
    """``samples`` (int16, one stretch of a stream) plus the denoising noise of their
    places on the counter: float32 (``kernels.counter_noise``), into ``out`` if given.
    Sample n's noise depends on n alone, so a sample has the same value in every window
    that holds it."""
    return kernels.counter_noise(_NOISE_TABLE, NOISE_SEED, samples, first_sample, out)


def _median(signal: np.ndarray) -> np.float32:
    """The median of a float32 row as ``np.median`` takes it, in float32."""
    length = len(signal)
    half = length // 2
    ordered = np.partition(signal, half)
    if length % 2:
        return ordered[half]
    # One partition and a max: several times faster than partitioning at two ranks.
    return (ordered[:half].max() + ordered[half]) * np.float32(0.5)


def denoise(windows: np.ndarray, start_samples: np.ndarray | None = None) -> np.ndarray:
    """The winners' denoising: add N(0, 0.5**2) noise to each sample, subtract the median.

    Args:
        windows: int16 array of shape (batch, window_len).
        start_samples: int64 array of shape (batch,), each window's first sample on the
            instrument's counter; a sample's noise depends on its place on the counter.
            None means all zeros.

    Returns:
        float32 array of shape (batch, window_len) whose rows have median 0.

    Example:
        >>> signal = denoise(np.full((1, 4096), 7, np.int16))
        >>> abs(float(np.median(signal))) < 1e-6, round(float(signal.std()), 1)
        (True, 0.5)
    """
    windows, starts = _validated(windows, start_samples)
    signal = np.empty(windows.shape, np.float32)
    for row, start in enumerate(starts):
        noisy = _noisy(windows[row], start)
        signal[row] = noisy - _median(noisy)
    return signal


_Runs = tuple[int, int]  # (width, stride) of a set of rolling runs


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the chosen features need of a stretch of samples, worked out once a call."""

    runs: tuple[_Runs, ...]  # every set of runs a chosen feature reads
    percents: dict[_Runs, tuple[int, ...]]  # the rolling-std percentiles asked, by runs
    sta_lta: tuple[tuple[int, int], ...]  # (short, long) pairs
    thresholds: tuple[int, ...]  # |x| thresholds counted
    absolute: bool  # mean, largest |x| or threshold counts asked
    moments: bool
    peaks: bool
    spectrum: bool  # MFCC, band powers or centroid asked
    columns: dict[str, int]  # a block's statistics row (``_columns``)


def _frame_span(start: int, stop: int, available: int) -> tuple[int, int]:
    """First start and count of the STFT frames that end in (start, stop] and begin at or
    after ``available``: frames begin on multiples of the hop on the counter."""
    hop = mfcc.HOP_LENGTH
    lowest = max(available, start - mfcc.N_FFT + 1)
    first = -(-lowest // hop) * hop
    last = (stop - mfcc.N_FFT) // hop * hop
    return first, max(0, (last - first) // hop + 1)


def _hann_responses() -> tuple[complex, complex]:
    # H_k = sum_n hann[n] exp(-2 pi i k n / N) for k = 0, 1: how a constant c added to a
    # frame moves its first two spectrum bins (by c * H_k); it moves no other bin.
    hann = mfcc.hann_window().astype(np.float64)
    phase = np.exp(-2j * np.pi * np.arange(mfcc.N_FFT) / mfcc.N_FFT)
    return complex(hann.sum()), complex((hann * phase).sum())


def _band_matrix() -> scipy.sparse.csr_array:
    # Row j sums a frame's scaled power over band j; the last row weighs each bin by its
    # frequency, for the centroid.
    matrix = np.zeros((mfcc.N_BINS, len(_BAND_BINS) + 1), np.float64)
    for band, (first, stop) in enumerate(_BAND_BINS):
        matrix[first:stop, band] = _POWER_SCALE[first:stop]
    matrix[:, -1] = _POWER_SCALE * _NYQUIST_FRACTION
    return scipy.sparse.csr_array(matrix.T.astype(np.float32))


_HANN_RESPONSE = _hann_responses()
# The mel bands bins 0 and 1 reach (their power moves with the window's median), and
# the others, whose dB a block can take once for all its windows.
_MEL_SHIFTED = np.flatnonzero(mfcc.mel_filter_bank()[:, :2].any(axis=1))
_MEL_FINAL = np.setdiff1d(np.arange(mfcc.N_MELS), _MEL_SHIFTED)
_SPECTRUM_MATRIX = scipy.sparse.vstack(
    [scipy.sparse.csr_array(mfcc.mel_filter_bank()), _band_matrix()], format="csr")
# The band that holds bins 0 and 1 (they are in the first band for these edges).
_LOW_BAND = next(band for band, (first, stop) in enumerate(_BAND_BINS) if first <= 1 < stop)


def _columns(plan_sta_lta: tuple[tuple[int, int], ...],
             percents: dict[_Runs, tuple[int, ...]],
             thresholds: tuple[int, ...]) -> dict[str, int]:
    """Columns of a block's statistics row; "<name>/<part>" for the parts (0: all the
    block's items, 1: its interior ones, without those that begin before it)."""
    names = ["samples", "ref", "mean", "m2", "m3", "m4", "abs_sum", "abs_max"]
    names += [f"over_{threshold}" for threshold in thresholds]
    names += [f"p_{width}_{stride}_{percent}" for (width, stride), found in percents.items()
              for percent in found]
    for part in (0, 1):
        names += [f"peaks/{part}", f"frames/{part}", f"centroid/{part}", f"db_max/{part}"]
        names += [f"band_{band}/{part}" for band in range(len(_BAND_BINS))]
        names += [f"low_{k}_{kind}/{part}" for k in (0, 1) for kind in ("re", "im", "sq")]
        names += [f"sta_{short}_{long}_{kind}/{part}" for short, long in plan_sta_lta
                  for kind in ("sum", "count", "max")]
    return {name: index for index, name in enumerate(names)}


class _Slots:
    """Per-block results, one row ("slot") per block: statistics, the per-frame values
    a window still needs, and, for a :class:`BlockCache`, the sorted samples and rolling
    variances."""

    def __init__(self, plan: _Plan, capacity: int, samples: int, sort: bool) -> None:
        self.plan = plan
        self.samples = samples  # the most samples a block holds
        self.frames = (samples + mfcc.N_FFT) // mfcc.HOP_LENGTH + 1  # the most frames
        self.sort = sort
        self.layout: dict[_Runs, int] = {}
        width = 0
        if sort:
            width = samples
            for runs in plan.percents:
                self.layout[runs] = width
                width += (samples + _CONTEXT) // runs[1] + 2
        self._width = width
        self.capacity = 0
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        plan, count = self.plan, capacity - self.capacity
        final, shifted = len(_MEL_FINAL), len(_MEL_SHIFTED)
        frames = self.frames if plan.spectrum else 0
        new = {
            "stats": np.zeros((count, len(plan.columns)), np.float64),
            "decibel_sums": np.zeros((count, 2, final), np.float64),
            "decibel_minima": np.zeros((count, 2, final), np.float32),
            "decibels": np.zeros((count, final, frames), np.float32),
            "shifted": np.zeros((count, shifted, frames), np.float32),
            "low_bins": np.zeros((count, frames, 2), np.complex128),
            "frame_counts": np.zeros((count, 2), np.int64),
            "values": np.zeros((count, self._width), np.float32),
            "sums": np.zeros((count, self.samples if self.sort else 0), np.float64),
            "bounds": np.zeros((count, 1 + len(self.layout), 4), np.int64),
        }
        for name, array in new.items():
            setattr(self, name, array if not self.capacity
                    else np.concatenate([getattr(self, name), array]))
        self.capacity = capacity

    def grow(self, capacity: int) -> None:
        if capacity > self.capacity:
            self._allocate(max(capacity, 2 * self.capacity))


def _compute_blocks(slots: _Slots, rows: Sequence[int], segments: np.ndarray,
                    available: Sequence[int], context: int,
                    follows: Sequence[bool] | None = None) -> None:
    """Partial results of blocks into ``slots`` rows ``rows``.

    Block i is ``segments[i, context:]``, its first sample at ``available[i] + context``
    on the counter; ``segments[i, :context]`` are the samples before it, whose items
    that end in the block it holds too ("crossing" ones). ``follows[i]``: block i is the
    one after block i - 1 of the same stream (its context is block i - 1's end).
    """
    plan, columns, stats = slots.plan, slots.plan.columns, slots.stats
    count, total = segments.shape
    own = total - context
    rows = np.asarray(rows, np.int64)
    noisy = np.empty((count, total), np.float32)
    for index in range(count):
        if follows is not None and follows[index]:
            # The block before it is the previous row's: its samples are this context.
            noisy[index, :context] = noisy[index - 1, own:]
            _noisy(segments[index, context:], available[index] + context,
                   noisy[index, context:])
        else:
            _noisy(segments[index], available[index], noisy[index])
    mine = noisy[:, context:]
    half = own // 2
    if slots.sort:
        # Sorted in place in the slot, row by row: twice as fast as a sorted copy of the
        # group that is then scattered to the slots.
        ref = np.empty(count, np.float32)
        for index, row in enumerate(rows.tolist()):
            ordered = slots.values[row, :own]
            ordered[:] = mine[index]
            ordered.sort()
            kernels.running_sums(ordered, slots.sums[row, :own])
            ref[index] = (ordered[half] if own % 2
                          else (ordered[half - 1] + ordered[half]) * np.float32(0.5))
        slots.bounds[rows, 0] = (0, own, 0, 0)
    else:
        ordered = np.partition(mine, half, axis=1)
        ref = (ordered[:, half] if own % 2
               else (ordered[:, :half].max(axis=1) + ordered[:, half]) * np.float32(0.5))
    stats[rows, columns["samples"]] = own
    stats[rows, columns["ref"]] = ref
    signal = noisy - ref[:, np.newaxis]
    x = signal[:, context:]
    if plan.moments:
        squares = np.square(x)
        # float32 pairwise sums; x has median 0, so the raw moments convert to central
        # ones without loss in float64.
        mean, second, third, fourth = (np.asarray(total_, np.float64) / own for total_ in (
            x.sum(axis=1), squares.sum(axis=1), (squares * x).sum(axis=1),
            np.square(squares).sum(axis=1)))
        stats[rows, columns["mean"]] = ref + mean
        stats[rows, columns["m2"]] = own * (second - mean**2)
        stats[rows, columns["m3"]] = own * (third - 3 * mean * second + 2 * mean**3)
        stats[rows, columns["m4"]] = own * (fourth - 4 * mean * third
                                            + 6 * mean**2 * second - 3 * mean**4)
    if plan.absolute and not slots.sort:
        # A window alone: its median is the block's, so |x| is taken here.
        thresholds = np.array(plan.thresholds, np.float64)
        for index in range(count):
            found = kernels.abs_stats(mine[index], float(ref[index]), thresholds)
            stats[rows[index], columns["abs_sum"]] = found[0]
            stats[rows[index], columns["abs_max"]] = found[1]
            for threshold, value in zip(plan.thresholds, found[2:], strict=True):
                stats[rows[index], columns[f"over_{threshold}"]] = value
    starts = np.asarray(available, np.int64) + context
    if plan.runs:
        _block_runs(slots, rows, signal, np.asarray(available, np.int64), starts)
    if plan.peaks:
        # Peaks at p with p - 2 >= the first sample held and p + 2 in the block. Found
        # on the noisy samples: a shift does not move a peak, and comparing them as they
        # are, not less a median rounded in, gives every window the same answer.
        first = max(PEAK_SUPPORT, context - PEAK_SUPPORT)
        flags = _peak_flags(noisy, first, PEAK_SUPPORT)
        split = max(0, context + PEAK_SUPPORT - first)
        stats[rows, columns["peaks/0"]] = flags.sum(axis=1)
        stats[rows, columns["peaks/1"]] = flags[:, split:].sum(axis=1)
    if plan.spectrum:
        _block_frames(slots, rows, signal, available, starts, own)


def _block_runs(slots: _Slots, rows: np.ndarray, signal: np.ndarray, available: np.ndarray,
                starts: np.ndarray) -> None:
    """The blocks' rolling variances: percentiles (a window alone) or sorted parts (a
    cache), and the STA/LTA sums."""
    plan, columns, stats = slots.plan, slots.plan.columns, slots.stats
    firsts = {}
    for width, stride in plan.runs:
        lowest = np.maximum(available, starts - width + 1)
        firsts[(width, stride)] = -(-lowest // stride) * stride
    phases = np.stack([firsts[runs] - available for runs in plan.runs])
    table, offsets, counts = kernels.rolling_variance_table(signal, plan.runs, phases)
    which = {runs: at for at, runs in enumerate(plan.runs)}
    crossing = {runs: np.maximum(0, -(-(starts - firsts[runs]) // runs[1]))
                for runs in plan.runs}
    percent_columns = {runs: [columns[f"p_{runs[0]}_{runs[1]}_{percent}"]
                              for percent in percents]
                       for runs, percents in plan.percents.items()}
    # Per STA/LTA pair: its columns, and the short run that ends where each block's first
    # long one does (both sets end on multiples of `short`, the long set's first end at
    # or after the short set's).
    ratios = [((short, long),
               [columns[f"sta_{short}_{long}_{kind}/{part}"] for part in (0, 1)
                for kind in ("sum", "count", "max")],
               (firsts[(long, short)] + long - firsts[(short, short)] - short) // short)
              for short, long in plan.sta_lta]
    for (short, long), ratio_columns, shifts in ratios:
        found = kernels.sta_lta_rows(
            table, offsets[which[(short, short)]], offsets[which[(long, short)]],
            counts[which[(long, short)]], shifts, crossing[(long, short)], VARIANCE_FLOOR)
        stats[np.ix_(rows, ratio_columns)] = found
    percent_runs = [(quantity, runs, percents, which[runs], crossing[runs].tolist())
                    for quantity, (runs, percents) in enumerate(plan.percents.items(),
                                                                start=1)]
    for index, row in enumerate(rows.tolist()):
        for quantity, runs, percents, at, crossed in percent_runs:
            first = offsets[at, index]
            values = table[first:first + counts[at, index]]
            if not slots.sort:
                stats[row, percent_columns[runs]] = _std_percentiles(
                    values[np.newaxis, :], percents)[0]
                continue
            offset = slots.layout[runs]
            end = offset + len(values)
            cross = min(crossed[index], len(values))
            buffer = slots.values[row]
            every = buffer[offset:end]
            every[:] = values
            every.sort()
            apart = buffer[end:end + cross]
            apart[:] = values[:cross]
            apart.sort()
            slots.bounds[row, quantity] = (offset, end, end, end + cross)


def _block_frames(slots: _Slots, rows: np.ndarray, signal: np.ndarray,
                  available: Sequence[int], starts: np.ndarray, own: int) -> None:
    """The blocks' STFT frames (2048 samples, beginning on multiples of 512 on the
    counter, ending in the block), reduced to what a window needs of them.

    For the mel bands that bins 0 and 1 do not reach, each frame's dB is final: per
    part, their sums, minima and largest value, and the dB themselves for a window whose
    top_db floor cuts into a band. For the bands bins 0 and 1 reach, the frames' mel
    power without them, and the two bins, which the window's median shifts. For the
    band powers and the centroid, sums.
    """
    columns, stats = slots.plan.columns, slots.stats
    spans = [_frame_span(int(start), int(start) + own, int(first))
             for start, first in zip(starts.tolist(), available, strict=True)]
    counts = np.array([count for _, count in spans], np.int64)
    crossing = np.array([max(0, min(count, -(-(int(start) - first) // mfcc.HOP_LENGTH)))
                         for (first, count), start in zip(spans, starts.tolist(), strict=True)],
                        np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    power = np.empty((total, mfcc.N_BINS), np.float32)
    low_bins = np.empty((total, 2), np.complex128)
    # The frames go through the FFT FRAMES_PER_BLOCK at a time, across the blocks' edges
    # (a call for a block's last frame or two alone costs as much as ten frames), from a
    # buffer small enough to stay in cache.
    windowed = np.empty((mfcc.FRAMES_PER_BLOCK, mfcc.N_FFT), np.float32)
    filled = 0
    done = 0

    def transform() -> None:
        spectrum = scipy.fft.rfft(windowed[:filled], axis=-1)
        kernels.power(spectrum, power[done:done + filled])
        low_bins[done:done + filled] = spectrum[:, :2]

    for index, (first, count) in enumerate(spans):
        framed = signal[index, first - available[index]:]
        at = 0
        while at < count:
            take = min(count - at, mfcc.FRAMES_PER_BLOCK - filled)
            # Frame i starts at (2 + at + i) * hop - N_FFT // 2 = (at + i) * hop.
            kernels.hann_frames(framed, mfcc.hann_window(), 2 + at, mfcc.HOP_LENGTH,
                                windowed[filled:filled + take])
            filled += take
            at += take
            if filled == mfcc.FRAMES_PER_BLOCK:
                transform()
                done += filled
                filled = 0
    if filled:
        transform()
    power[:, :2] = 0.0
    # Mel bands, band powers and the centroid's numerator in one sparse product (one
    # thread; BLAS would start threads of its own).
    products = np.asarray(_SPECTRUM_MATRIX @ np.ascontiguousarray(power.T), np.float32)
    decibels = 10.0 * np.log10(np.maximum(np.float32(mfcc.AMIN), products[_MEL_FINAL]))
    shifted = products[_MEL_SHIFTED]
    sums = products[mfcc.N_MELS:].astype(np.float64)
    low_squares = np.abs(low_bins) ** 2
    # Segments: each block's crossing frames, then its interior ones (never empty).
    bounds = np.stack([offsets[:-1], offsets[:-1] + crossing], axis=1).ravel()
    empty = crossing == 0

    def parts(reduce: np.ufunc, values: np.ndarray, axis: int, neutral: float,
              ) -> tuple[np.ndarray, np.ndarray]:
        found = reduce.reduceat(values, bounds, axis=axis)
        found = np.moveaxis(found, axis, 0)
        cross, interior = found[0::2], found[1::2]
        cross = np.where(empty.reshape((-1,) + (1,) * (cross.ndim - 1)), neutral, cross)
        return reduce(cross, interior), interior

    for part, (band_sums) in enumerate(parts(np.add, sums, 1, 0.0)):
        for band in range(len(_BAND_BINS)):
            stats[rows, columns[f"band_{band}/{part}"]] = band_sums[:, band]
        stats[rows, columns[f"centroid/{part}"]] = band_sums[:, -1]
    for part, found in enumerate(parts(np.add, low_bins, 0, 0.0)):
        for k in (0, 1):
            stats[rows, columns[f"low_{k}_re/{part}"]] = found[:, k].real
            stats[rows, columns[f"low_{k}_im/{part}"]] = found[:, k].imag
    for part, found in enumerate(parts(np.add, low_squares, 0, 0.0)):
        for k in (0, 1):
            stats[rows, columns[f"low_{k}_sq/{part}"]] = found[:, k]
    for part, found in enumerate(parts(np.add, decibels.astype(np.float64), 1, 0.0)):
        slots.decibel_sums[rows, part] = found
    for part, found in enumerate(parts(np.minimum, decibels, 1, np.inf)):
        slots.decibel_minima[rows, part] = found
    for part, found in enumerate(parts(np.maximum, decibels, 1, -np.inf)):
        stats[rows, columns[f"db_max/{part}"]] = found.max(axis=1)
    stats[rows, columns["frames/0"]] = counts
    stats[rows, columns["frames/1"]] = counts - crossing
    slots.frame_counts[rows] = np.stack([counts, crossing], axis=1)
    for index, row in enumerate(rows.tolist()):
        frames = slice(int(offsets[index]), int(offsets[index + 1]))
        count = int(counts[index])
        slots.decibels[row, :, :count] = decibels[:, frames]
        slots.shifted[row, :, :count] = shifted[:, frames]
        slots.low_bins[row, :count] = low_bins[frames]


def _peak_flags(signal: np.ndarray, first: int, support: int) -> np.ndarray:
    """Whether each sample from column ``first`` to ``length - support`` of each row is
    strictly greater than the ``support`` samples on each side."""
    length = signal.shape[1]
    centre = signal[:, first:length - support]
    flags = np.ones(centre.shape, bool)
    for shift in range(1, support + 1):
        flags &= centre > signal[:, first - shift:length - support - shift]
        flags &= centre > signal[:, first + shift:length - support + shift]
    return flags


class _Windows:
    """Features of windows made of consecutive blocks in ``slots`` (window r is blocks
    ``blocks[r, :]``; its first block's crossing items are left out), as arrays over
    the windows."""

    def __init__(self, slots: _Slots, blocks: np.ndarray) -> None:
        self.slots = slots
        self.plan = slots.plan
        self.blocks = np.asarray(blocks, np.int64)
        self.columns = slots.plan.columns
        stats = slots.stats[self.blocks]  # (windows, blocks, columns)
        self._stats = stats
        self.samples = stats[:, :, self.columns["samples"]].sum(axis=1)
        if self.blocks.shape[1] == 1:
            self.median = stats[:, 0, self.columns["ref"]].astype(np.float32)
            self._percentiles = {
                (runs, percent): stats[:, 0, self.columns[f"p_{runs[0]}_{runs[1]}_{percent}"]]
                for runs, percents in self.plan.percents.items() for percent in percents}
        else:
            self._order_statistics()

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` of each window's blocks, (windows, blocks)."""
        return self._stats[:, :, self.columns[name]]

    def parted(self, name: str) -> np.ndarray:
        """``name/1`` of each window's first block and ``name/0`` of the others."""
        values = self.column(f"{name}/0").copy()
        values[:, 0] = self.column(f"{name}/1")[:, 0]
        return values

    def _order_statistics(self) -> None:
        """The medians and rolling-std percentiles, from the blocks' sorted parts, in
        one call of ``kernels.ranked``."""
        bounds = self.slots.bounds[self.blocks]  # (windows, blocks, quantities, 4)
        sizes = ((bounds[:, :, :, 1] - bounds[:, :, :, 0]).sum(axis=1)
                 - (bounds[:, 0, :, 3] - bounds[:, 0, :, 2]))  # (windows, quantities)
        samples = self.samples.astype(np.int64)
        half = samples // 2
        quantities = [0]
        ranks = [np.where(samples % 2 == 1, half, half - 1)]
        positions = {}
        for index, (runs, percents) in enumerate(self.plan.percents.items(), start=1):
            for percent in percents:
                position = percent / 100.0 * (sizes[:, index] - 1)
                positions[(runs, percent)] = position
                quantities.append(index)
                ranks.append(np.floor(position).astype(np.int64))
        # A stream's next window, a block later, starts its searches from this one's
        # answers.
        previous = np.full(len(self.blocks), -1, np.int64)
        later = (self.blocks[1:, :-1] == self.blocks[:-1, 1:]).all(axis=1)
        previous[1:][later] = np.flatnonzero(later)
        values = kernels.ranked(self.slots.values, self.slots.bounds, self.blocks,
                                np.array(quantities, np.int64), np.stack(ranks, axis=1),
                                previous)
        self.median = np.where(samples % 2 == 1, values[0, :, 0],
                               (values[0, :, 0] + values[1, :, 0]) * np.float32(0.5))
        self._percentiles = {}
        for column, (key, position) in enumerate(positions.items(), start=1):
            low = _clipped_sqrt(values[0, :, column])
            high = _clipped_sqrt(values[1, :, column])
            self._percentiles[key] = low + (position - np.floor(position)) * (high - low)

    def rolling_std_percentile(self, runs: _Runs, percent: int) -> np.ndarray:
        return self._percentiles[(runs, percent)]

    @_cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Variance, skewness and kurtosis of each window's samples (population)."""
        counts, means = self.column("samples"), self.column("mean")
        b2, b3, b4 = self.column("m2"), self.column("m3"), self.column("m4")
        if counts.shape[1] == 1:
            n, m2, m3, m4 = counts[:, 0], b2[:, 0], b3[:, 0], b4[:, 0]
        else:
            # Each block's central moment sums moved to the window's mean (the binomial
            # shift; its first central sum is 0), all blocks at once.
            n = counts.sum(axis=1)
            delta = means - ((counts * means).sum(axis=1) / n)[:, np.newaxis]
            squared = delta * delta
            m2 = (b2 + counts * squared).sum(axis=1)
            m3 = (b3 + delta * (3 * b2 + counts * squared)).sum(axis=1)
            m4 = (b4 + delta * (4 * b3 + delta * (6 * b2 + counts * squared))).sum(axis=1)
        variance = np.maximum(m2 / n, VARIANCE_FLOOR)
        return variance, (m3 / n) / variance**1.5, (m4 / n) / variance**2

    @_cached_property
    def absolute(self) -> dict[str, np.ndarray]:
        """Sum and largest of |x|, and the counts over each threshold."""
        names = ["abs_sum", "abs_max", *(f"over_{t}" for t in self.plan.thresholds)]
        if self.blocks.shape[1] == 1:
            return {name: self.column(name)[:, 0] for name in names}
        found = kernels.sorted_abs_stats(
            self.slots.values, self.slots.sums, self.blocks,
            self.slots.stats[:, self.columns["samples"]].astype(np.int64),
            self.median.astype(np.float64), np.array(self.plan.thresholds, np.float64))
        return {name: found[:, index] for index, name in enumerate(names)}

    @_cached_property
    def peaks(self) -> np.ndarray:
        return self.parted("peaks").sum(axis=1)

    def sta_lta(self, short: int, long: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and largest STA/LTA ratio over each window's ends."""
        name = f"sta_{short}_{long}"
        total = self.parted(f"{name}_sum").sum(axis=1)
        count = self.parted(f"{name}_count").sum(axis=1)
        return total / np.maximum(count, 1), self.parted(f"{name}_max").max(axis=1)

    @_cached_property
    def _shift(self) -> np.ndarray:
        """Each block's median less the window's, (windows, blocks): x = the block's
        own x - shift."""
        return self.median[:, np.newaxis].astype(np.float64) - self.column("ref")

    @_cached_property
    def frames(self) -> np.ndarray:
        return self.parted("frames").sum(axis=1)

    @_cached_property
    def _low_power(self) -> tuple[np.ndarray, np.ndarray]:
        """Sums over each window's frames of |bin 0|**2 and |bin 1|**2 of x: sum |X -
        d H|**2 = sum |X|**2 - 2 d Re(conj(H) sum X) + d**2 |H|**2 n."""
        shift, frames = self._shift, self.parted("frames")
        found = []
        for k in (0, 1):
            response = _HANN_RESPONSE[k]
            sums = self.parted(f"low_{k}_re") + 1j * self.parted(f"low_{k}_im")
            found.append((self.parted(f"low_{k}_sq")
                          - 2 * shift * (response.conjugate() * sums).real
                          + shift**2 * abs(response) ** 2 * frames).sum(axis=1))
        return found[0], found[1]

    @_cached_property
    def band_powers(self) -> np.ndarray:
        """Mean band powers over each window's frames, (windows, bands)."""
        bands = np.stack([self.parted(f"band_{band}").sum(axis=1)
                          for band in range(len(_BAND_BINS))], axis=1)
        bin0, bin1 = self._low_power
        bands[:, _LOW_BAND] += bin0 * _POWER_SCALE[0] + bin1 * _POWER_SCALE[1]
        return bands / np.maximum(self.frames, 1)[:, np.newaxis]

    @_cached_property
    def centroid(self) -> np.ndarray:
        frames = np.maximum(self.frames, 1)
        weighted = self.parted("centroid").sum(axis=1)
        weighted = weighted + self._low_power[1] * _POWER_SCALE[1] * _NYQUIST_FRACTION[1]
        return (weighted / frames) / np.maximum(self.band_powers.sum(axis=1), VARIANCE_FLOOR)

    @_cached_property
    def mfcc_means(self) -> dict[int, np.ndarray]:
        """librosa's mean MFCCs: the mean over frames of the dB (floored top_db below
        the window's largest), then the DCT."""
        slots, blocks = self.slots, self.blocks
        counts = slots.frame_counts[blocks]  # (windows, blocks, 2)
        index = np.arange(slots.frames)
        valid = index < counts[:, :, :1]  # (windows, blocks, frames)
        valid[:, 0] &= index >= counts[:, 0, 1:]
        low = slots.low_bins[blocks]  # (windows, blocks, frames, 2)
        shifted = slots.shifted[blocks]  # (windows, blocks, bands, frames)
        bank = mfcc.mel_filter_bank()
        for k in (0, 1):
            power = np.abs(low[..., k] - self._shift[..., np.newaxis] * _HANN_RESPONSE[k]) ** 2
            shifted = shifted + (bank[_MEL_SHIFTED, k][:, np.newaxis]
                                 * power[:, :, np.newaxis, :].astype(np.float32))
        shifted_db = 10.0 * np.log10(np.maximum(np.float32(mfcc.AMIN), shifted))
        mask = valid[:, :, np.newaxis, :]
        largest = np.maximum(
            np.where(mask, shifted_db, -np.inf).max(axis=(1, 2, 3)),
            self.parted("db_max").max(axis=1)).astype(np.float32)
        floor = largest - np.float32(mfcc.TOP_DB)
        windows = len(blocks)
        means = np.empty((windows, mfcc.N_MELS), np.float64)
        means[:, _MEL_SHIFTED] = np.where(
            mask, np.maximum(shifted_db, floor[:, np.newaxis, np.newaxis, np.newaxis]), 0.0
        ).sum(axis=(1, 3), dtype=np.float64)
        parts = np.zeros(blocks.shape, np.int64)
        parts[:, 0] = 1
        sums = slots.decibel_sums[blocks, parts].sum(axis=1)  # (windows, final bands)
        minima = slots.decibel_minima[blocks, parts].min(axis=1)
        # A band whose frames all lie above the floor sums as it is; one the floor cuts
        # into is summed again from its frames, floored.
        cut_windows, cut_bands = np.nonzero(minima < floor[:, np.newaxis])
        for window in np.unique(cut_windows).tolist():
            bands = cut_bands[cut_windows == window]
            # (bands, the window's frames): each row sums as the band's frames alone would.
            values = slots.decibels[blocks[window][:, np.newaxis], bands].transpose(1, 0, 2)[
                :, valid[window]]
            sums[window, bands] = np.maximum(values, floor[window]).sum(axis=1,
                                                                         dtype=np.float64)
        means[:, _MEL_FINAL] = sums
        means /= np.maximum(self.frames, 1)[:, np.newaxis]
        values = mfcc.mfcc_of_mean_decibels(means, MFCC_COEFFICIENTS)
        return {coefficient: values[:, column]
                for column, coefficient in enumerate(MFCC_COEFFICIENTS)}


class BlockCache:
    """The recent blocks of every stream, so that overlapping windows share their work.

    With windows of ``window`` samples starting every ``hop`` samples (``hop`` dividing
    ``window``), each window is ``window // hop`` blocks of ``hop`` samples, and each
    block serves that many windows: its partial results are computed once and each
    window's features combined from them (sorted samples and rolling variances for the
    medians and percentiles, sums for the moments, per-frame values for the MFCC). Pass
    one cache and each window's stream to :func:`extract`; the features are each window's
    alone, up to float rounding in the last digits.

    Args:
        window: window length in samples.
        hop: samples between window starts; ``window`` must be a multiple, and ``hop``
            at least ``MIN_SHARED_HOP`` (see :func:`shares_blocks`).

    Raises:
        LabquakeError: the hop does not divide the window or is below ``MIN_SHARED_HOP``.

    Example:
        >>> cache = BlockCache(150_000, 15_000)
        >>> cache.blocks_per_window
        10
    """

    def __init__(self, window: int, hop: int) -> None:
        if not shares_blocks(window, hop):
            raise LabquakeError(
                f"windows of {window} samples every {hop} cannot share blocks: the hop must "
                f"divide the window and be at least {MIN_SHARED_HOP} samples")
        self.window = window
        self.hop = hop
        self.blocks_per_window = window // hop
        self._slots: _Slots | None = None
        self._index: dict[tuple[Any, int], int] = {}  # (stream, block start) -> slot
        self._context: dict[int, bool] = {}  # slot -> made with the samples before it
        # Per slot, its block's fingerprint (see _fingerprint), and the read-only piece it
        # was made from when the window came as pieces: that piece again needs no look.
        self._prints = np.zeros((0, 2 * _FINGERPRINT), np.int16)
        self._sources: dict[int, np.ndarray] = {}
        self._free: list[int] = []
        self._latest: dict[Any, int] = {}  # stream -> start of its last window

    def forget(self, stream: Any) -> None:
        """Forget a stream's blocks (its counter jumped, or it went elsewhere)."""
        self._keep(stream, np.iinfo(np.int64).max)

    def _keep(self, stream: Any, first_sample: int) -> None:
        for key in [key for key in self._index if key[0] == stream and key[1] < first_sample]:
            self._release(key)

    def _release(self, key: tuple[Any, int]) -> None:
        """Forget one block and free its slot."""
        slot = self._index.pop(key)
        self._context.pop(slot, None)
        self._sources.pop(slot, None)
        self._free.append(slot)

    def _ready(self, plan: _Plan) -> _Slots:
        if self._slots is None or (self._slots.plan is not plan and self._slots.plan != plan):
            self._index.clear()
            self._context.clear()
            self._sources.clear()
            self._slots = _Slots(plan, 0, self.hop, sort=True)
            self._free = []
        return self._slots

    def _take(self, count: int) -> list[int]:
        assert self._slots is not None
        if count > len(self._free):
            old = self._slots.capacity
            self._slots.grow(old + count - len(self._free))
            self._free.extend(range(old, self._slots.capacity))
            grown = np.zeros((self._slots.capacity, 2 * _FINGERPRINT), np.int16)
            grown[:len(self._prints)] = self._prints
            self._prints = grown
        taken, self._free = self._free[:count], self._free[count:]
        return taken


def shares_blocks(window: int, hop: int) -> bool:
    """Whether windows of ``window`` samples every ``hop`` can share a
    :class:`BlockCache`: hop < window, hop divides window, hop >= MIN_SHARED_HOP.

    Example:
        >>> shares_blocks(150_000, 15_000), shares_blocks(150_000, 150_000)
        (True, False)
    """
    return 0 < hop < window and window % hop == 0 and hop >= MIN_SHARED_HOP


def _fingerprint(block: np.ndarray) -> np.ndarray:
    """A block's first and last samples: a stream restarted under the same name, whose
    blocks begin at the same places with other samples, is caught by them."""
    return np.concatenate([block[:_FINGERPRINT], block[-_FINGERPRINT:]])


def _blocks_of(row: np.ndarray | _Pieces, count: int, hop: int) -> list[np.ndarray]:
    """A window's blocks, as views (a stream's pieces are its blocks)."""
    if isinstance(row, _Pieces) and len(row.pieces) == count and all(
            len(piece) == hop for piece in row.pieces):
        return list(row.pieces)
    return [row[index * hop:(index + 1) * hop] for index in range(count)]


_FINGERPRINT = 32
# Samples before a block that its crossing items may reach back to: an STFT frame.
_CONTEXT = mfcc.N_FFT - 1
MIN_SHARED_HOP = mfcc.N_FFT + mfcc.HOP_LENGTH


@dataclasses.dataclass(frozen=True)
class _Feature:
    """One named feature: its one-line definition and how a window computes it."""

    name: str
    definition: str
    compute: Callable[[_Windows], np.ndarray]
    rolling: tuple[_Runs, int] | None = None  # (runs, percent) of a rolling-std percentile
    runs: tuple[_Runs, ...] = ()  # the rolling runs it reads
    sta_lta: tuple[int, int] | None = None  # its (short, long) ratio
    threshold: int | None = None  # the |x| threshold it counts
    group: str = ""  # "moments", "absolute", "peaks" or "spectrum": what else it reads


def _log(values: np.ndarray, floor: float) -> np.ndarray:
    return np.log(np.maximum(values, floor))


def _peaks_feature() -> _Feature:
    return _Feature(
        f"num_peaks_{PEAK_SUPPORT}",
        f"number of samples of x strictly greater than the {PEAK_SUPPORT} samples on each "
        f"side (tsfresh number_peaks, n={PEAK_SUPPORT})",
        lambda window: window.peaks, group="peaks")


def _ordinal(number: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{'th' if 10 <= number % 100 <= 20 else suffix}"


def _rolling_feature(width: int, percent: int, winners: bool) -> _Feature:
    stride = 1 if winners else max(1, width // ROLLING_STRIDE_DIVISOR)
    runs = f"every full {width}-sample run" if stride == 1 else (
        f"the full {width}-sample runs starting on multiples of {stride} on the counter")
    definition = f"{_ordinal(percent)} percentile of the std (ddof=1) of x over {runs}"
    pair = (width, stride)
    if winners:
        return _Feature(f"rolling_std_{width}_p{percent}", definition,
                        lambda window: window.rolling_std_percentile(pair, percent),
                        rolling=(pair, percent), runs=(pair,))
    return _Feature(
        f"log_rolling_std_{width}_p{percent:02d}", f"log of the {definition}",
        lambda window: _log(window.rolling_std_percentile(pair, percent), AMPLITUDE_FLOOR),
        rolling=(pair, percent), runs=(pair,))


def _mfcc_feature(coefficient: int) -> _Feature:
    return _Feature(
        f"mfcc_{coefficient}_mean",
        f"mean over frames of MFCC {coefficient} (0-based) of x, librosa's definition and "
        f"defaults (sr 22,050, n_fft 2048, 128 mels, top_db 80) over the window's full "
        f"2048-sample frames that begin on multiples of 512 on the counter",
        lambda window: window.mfcc_means[coefficient], group="spectrum")


def _threshold_feature(threshold: int) -> _Feature:
    return _Feature(
        f"log1p_count_over_{threshold}",
        f"log(1 + number of samples with |x| > {threshold} counts)",
        lambda window: np.log1p(window.absolute[f"over_{threshold}"]),
        threshold=threshold, group="absolute")


def _sta_lta_mean_feature(short: int, long: int) -> _Feature:
    return _Feature(
        f"sta_lta_{short}_{long}_mean",
        f"mean over the end samples on multiples of {short} on the counter of (variance of "
        f"x over the last {short} samples) / (variance over the last {long})",
        lambda window: window.sta_lta(short, long)[0],
        runs=((short, short), (long, short)), sta_lta=(short, long))


def _sta_lta_max_feature(short: int, long: int) -> _Feature:
    return _Feature(
        f"log_sta_lta_{short}_{long}_max",
        f"log of the largest, over the end samples on multiples of {short} on the counter, "
        f"of (variance of x over the last {short} samples) / (variance over the last {long})",
        lambda window: _log(window.sta_lta(short, long)[1], VARIANCE_FLOOR),
        runs=((short, short), (long, short)), sta_lta=(short, long))


def _band_feature(band: int) -> _Feature:
    low, high = BAND_EDGES[band], BAND_EDGES[band + 1]
    return _Feature(
        f"log_band_power_{band + 1}",
        f"log of the power of x (counts**2; the bands sum to the variance) from {low:g} to "
        f"{high:g} of the Nyquist frequency, from the mean Hann-windowed power of the "
        f"frames of the MFCC",
        lambda window: _log(window.band_powers[:, band], VARIANCE_FLOOR),
        group="spectrum")


_WINNERS = (
    _peaks_feature(),
    _rolling_feature(WINNER_ROLLING_WIDTH, WINNER_ROLLING_PERCENT, winners=True),
    *(_mfcc_feature(coefficient) for coefficient in MFCC_COEFFICIENTS),
)

_FEATURES: tuple[_Feature, ...] = (
    *_WINNERS,
    _Feature("log_variance", "log of the variance of x",
             lambda window: np.log(window.moments[0]), group="moments"),
    _Feature("log_mean_abs_deviation", "log of the mean absolute deviation of x from its "
             "median (the mean of |x|)",
             lambda window: _log(window.absolute["abs_sum"] / window.samples,
                                 AMPLITUDE_FLOOR),
             group="absolute"),
    _Feature("skewness", "skewness of x (third standardised moment)",
             lambda window: window.moments[1], group="moments"),
    _Feature("log_kurtosis", "log of the kurtosis of x (fourth standardised moment, 3 for a "
             "Gaussian)",
             # Pearson's kurtosis is >= 1; the floor only catches a fully degenerate window.
             lambda window: _log(window.moments[2], 1.0), group="moments"),
    _Feature("log_max_abs", "log of the largest |x|",
             lambda window: _log(window.absolute["abs_max"], AMPLITUDE_FLOOR),
             group="absolute"),
    *(_threshold_feature(threshold) for threshold in AMPLITUDE_THRESHOLDS),
    *(_rolling_feature(width, percent, winners=False)
      for width in ROLLING_WIDTHS for percent in ROLLING_PERCENTS),
    *(_sta_lta_mean_feature(short, long) for short, long in STA_LTA_MEAN_PAIRS),
    _sta_lta_max_feature(*STA_LTA_MAX_PAIR),
    *(_band_feature(band) for band in range(len(_BAND_BINS))),
    _Feature("spectral_centroid",
             "power-weighted mean frequency of x, as a fraction of the Nyquist frequency",
             lambda window: window.centroid, group="spectrum"),
)
_FEATURES_BY_NAME = {feature.name: feature for feature in _FEATURES}

FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in _FEATURES)
WINNERS_FEATURES: tuple[str, ...] = tuple(feature.name for feature in _WINNERS)
FEATURE_DEFINITIONS: dict[str, str] = {
    feature.name: f"{feature.definition}; x is the denoised window (window + "
                  f"N(0, {NOISE_STD}**2) noise drawn by each sample's place on the counter, "
                  f"minus the window's median)"
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


def extract(windows: np.ndarray | Sequence[np.ndarray],
            start_samples: np.ndarray | None = None,
            names: Sequence[str] = FEATURE_NAMES, *, threads: int | None = None,
            cache: BlockCache | None = None,
            streams: Sequence[Hashable | None] | None = None) -> np.ndarray:
    """Features of a batch of AE windows, each computed from the denoised window.

    Args:
        windows: int16 array of shape (batch, window_len), window_len >= MIN_WINDOW_LEN,
            or a list of rows, each a 1-D int16 array or a tuple of consecutive ones (a
            window's pieces, ``stream.core.windows.Window.pieces``); with a cache, rows are
            read where their new blocks lie, not copied.
        start_samples: int64 array of shape (batch,), each window's first sample on the
            instrument's counter: the noise, the rolling runs and the STFT frames are
            placed by it, so the same window at the same place always gives the same
            features. None means all zeros.
        names: the features to compute, in the output's column order (default: all of
            FEATURE_NAMES; ``WINNERS_FEATURES`` for the winners' four alone).
        threads: threads that compute the batch, 1 to MAX_THREADS; None means
            ``default_threads()``. The values do not depend on it.
        cache: a :class:`BlockCache` for overlapping windows: with ``streams``, each
            window's stream (any hashable; None: the window alone), the windows of a
            stream share the work of their common blocks, within a call and from call
            to call. A stream's windows must come in order of their start.
        streams: see ``cache``.

    Returns:
        float32 array of shape (batch, len(names)), finite for any int16 input.

    Raises:
        LabquakeError: windows not int16 of shape (batch, window_len >= MIN_WINDOW_LEN),
            start_samples not one non-negative integer per window, an unknown name, a
            bad thread count (``threads`` or ``$LABQUAKE_FEATURE_THREADS``), or a cache
            without one stream per window, for another window length, or given a
            stream's windows out of order.

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
                            f"choose from model.features.extract.FEATURE_NAMES")
    features = [_FEATURES_BY_NAME[name] for name in names]
    plan = _plan_for(tuple(names))
    batch, length = windows.shape
    shared = _checked_sharing(cache, streams, batch, length)
    result = np.empty((batch, len(features)), np.float32)

    def fill(rows: Sequence[int], merged: _Windows) -> None:
        for column, feature in enumerate(features):
            result[rows, column] = feature.compute(merged)

    # Windows alone: each is one block, in one set of slots; their blocks are made in
    # chunks on the threads, then combined over all of them at once (a handful of
    # NumPy calls for the whole batch, not per window).
    sharing = set(shared)
    lone = [row for row in range(batch) if row not in sharing]
    lone_slots = _Slots(plan, len(lone), length, sort=False)

    def alone(at: list[int]) -> None:
        rows = [lone[index] for index in at]
        samples = (np.stack([windows[row] for row in rows]) if isinstance(windows, _RowList)
                   else windows[rows])
        _compute_blocks(lone_slots, at, samples, [starts[row] for row in rows], 0)

    def combine_alone(at: list[int]) -> None:
        fill([lone[index] for index in at],
             _Windows(lone_slots, np.array(at, np.int64)[:, np.newaxis]))

    tasks: list[Callable[[], None]] = [
        functools.partial(alone, at) for at in _row_chunks(list(range(len(lone))), length,
                                                           threads)]
    merges: list[Callable[[], None]] = [
        functools.partial(combine_alone, list(at))
        for at in np.array_split(np.arange(len(lone)), min(threads, len(lone))) if len(at)
    ] if lone else []
    if shared:
        assert cache is not None and streams is not None
        slots = cache._ready(plan)
        for group in _block_groups(cache, windows, starts, streams, shared, threads):
            tasks.append(functools.partial(_compute_blocks, slots, *group))
        _run_tasks(lambda task: task(), tasks, threads)
        blocks = np.array([[cache._index[(streams[row], starts[row] + index * cache.hop)]
                            for index in range(cache.blocks_per_window)] for row in shared],
                          np.int64)
        parts = _row_chunks(list(range(len(shared))), cache.hop, threads)
        merges.extend(functools.partial(
            lambda part: fill([shared[at] for at in part], _Windows(slots, blocks[part])),
            part) for part in parts)
        _run_tasks(lambda task: task(), merges, threads)
        for stream, start in {streams[row]: starts[row] for row in shared}.items():
            # The stream's next window begins a hop later: older blocks are done.
            cache._keep(stream, start + cache.hop)
            cache._latest[stream] = start
    else:
        _run_tasks(lambda task: task(), tasks, threads)
        _run_tasks(lambda task: task(), merges, threads)
    return result


def _row_chunks(rows: list[int], length: int, threads: int) -> list[list[int]]:
    """``rows`` cut into chunks for the threads: about CHUNK_SAMPLES samples each (every
    thread gets one), as many as that takes rounded up to a multiple of the threads, of
    sizes that differ by at most one row, largest first."""
    if not rows:
        return []
    chunk_samples = CHUNK_SAMPLES if threads == 1 else THREADED_CHUNK_SAMPLES
    count = len(rows)
    per_chunk = max(1, min(chunk_samples // length, -(-count // threads)))
    needed = math.ceil(count / per_chunk)
    chunks = min(count, math.ceil(needed / threads) * threads)
    bounds = [count * part // chunks for part in range(chunks + 1)]
    parts = [rows[first:stop] for first, stop in itertools.pairwise(bounds)]
    return sorted(parts, key=len, reverse=True)


def _checked_sharing(cache: BlockCache | None, streams: Sequence[Hashable | None] | None,
                     batch: int, length: int) -> list[int]:
    """The rows that use the cache."""
    if cache is None:
        if streams is not None:
            raise LabquakeError("streams were given without a cache; pass cache=BlockCache("
                                "window, hop) with them, or neither")
        return []
    if streams is None or len(streams) != batch:
        raise LabquakeError(f"a cache needs one stream (or None) per window ({batch}), got "
                            f"{'none' if streams is None else len(streams)}; pass streams=")
    if cache.window != length:
        raise LabquakeError(f"a BlockCache for windows of {cache.window} samples was given "
                            f"windows of {length}; make one cache per window length and hop")
    return [row for row, stream in enumerate(streams) if stream is not None]


def _block_groups(cache: BlockCache, windows: np.ndarray | _RowList, starts: Sequence[int],
                  streams: Sequence[Hashable | None], rows: list[int], threads: int,
                  ) -> list[tuple[list[int], np.ndarray, list[int], int, list[bool]]]:
    """The blocks the rows need that the cache lacks, given slots, as arguments of
    ``_compute_blocks``: each made from a row that holds the samples before it where one
    does, in groups of one context length, cut for the threads."""
    hop, count = cache.hop, cache.blocks_per_window
    jobs: dict[tuple[Hashable, int], tuple[int, int]] = {}
    blocks: dict[int, list[np.ndarray]] = {}
    latest: dict[Hashable, int] = {}
    for row in rows:
        stream, start = streams[row], starts[row]
        if stream in latest and start <= latest[stream]:
            raise LabquakeError("a stream's windows must come in order of their start; "
                                "pass them as the stream gave them")
        if stream not in latest and start < cache._latest.get(stream, -1):
            cache.forget(stream)  # the stream went back: a new recording under its name
        latest[stream] = start
        blocks[row] = row_blocks = _blocks_of(windows[row], count, hop)
        for index, block in enumerate(row_blocks):
            key = (stream, start + index * hop)
            slot = cache._index.get(key)
            # A block made alone (no samples before it) serves only as a window's first.
            if slot is not None and (index == 0 or cache._context[slot]) and (
                    cache._sources.get(slot) is block
                    or np.array_equal(cache._prints[slot], _fingerprint(block))):
                continue
            if key not in jobs or (index > 0 and jobs[key][1] == 0):
                jobs[key] = (row, index)
    for key in jobs:
        if key in cache._index:  # made again: with its context, or of other samples
            cache._release(key)
    slots = cache._take(len(jobs))
    groups: dict[bool, list[tuple[int, int, int]]] = {False: [], True: []}
    for (key, (row, index)), slot in zip(jobs.items(), slots, strict=True):
        cache._index[key] = slot
        cache._context[slot] = index > 0
        block = blocks[row][index]
        cache._prints[slot] = _fingerprint(block)
        if isinstance(windows[row], _Pieces) and not block.flags.writeable:
            cache._sources[slot] = block  # read-only: the same object, the same samples
        groups[index > 0].append((slot, row, index))
    found = []
    for context, members in groups.items():
        size = _CONTEXT if context else 0
        for part in _row_chunks(members, hop + size, threads):
            found.append((
                [slot for slot, _, _ in part],
                _segments(windows, [(row, index * hop - size, (index + 1) * hop)
                                    for _, row, index in part]),
                [starts[row] + index * hop - size for _, row, index in part],
                size,
                [bool(context and at and streams[row] == streams[part[at - 1][1]]
                      and starts[row] + index * hop
                      == starts[part[at - 1][1]] + (part[at - 1][2] + 1) * hop)
                 for at, (_, row, index) in enumerate(part)]))
    return found


_Task = TypeVar("_Task")


def _run_tasks(compute: Callable[[_Task], None], tasks: list[_Task], threads: int) -> None:
    """``compute`` each task, on this thread and up to ``threads - 1`` of the pool's.

    Each thread takes the next task when it is done with one, so uneven tasks balance;
    after an error every thread stops at the end of its task, and the error is raised.
    """
    helpers = min(threads, len(tasks)) - 1
    if helpers <= 0:
        for task in tasks:
            compute(task)
        return
    pending = iter(tasks)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                task = next(pending, None)
            if task is None:
                return
            try:
                compute(task)
            except BaseException:
                with lock:
                    collections.deque(pending, maxlen=0)  # drain: the others stop
                raise

    futures = [_pool().submit(work) for _ in range(helpers)]
    try:
        work()
    finally:
        for future in futures:
            # Once this thread is done, every task is taken: a helper that has not
            # started (the pool busy with another call's tasks) has nothing left to do.
            future.cancel()
        wait(futures)
    for future in futures:
        if not future.cancelled():
            future.result()  # raises a helper's error


@functools.lru_cache(maxsize=64)
def _plan_for(names: tuple[str, ...]) -> _Plan:
    features = [_FEATURES_BY_NAME[name] for name in names]
    percents: dict[_Runs, set[int]] = {}
    for feature in features:
        if feature.rolling is not None:
            runs, percent = feature.rolling
            percents.setdefault(runs, set()).add(percent)
    groups = {feature.group for feature in features}
    ordered = {runs: tuple(sorted(found)) for runs, found in sorted(percents.items())}
    pairs = tuple(sorted({feature.sta_lta for feature in features
                          if feature.sta_lta is not None}))
    thresholds = tuple(sorted({feature.threshold for feature in features
                               if feature.threshold is not None}))
    return _Plan(
        runs=tuple(sorted({runs for feature in features for runs in feature.runs})),
        percents=ordered, sta_lta=pairs, thresholds=thresholds,
        absolute="absolute" in groups, moments="moments" in groups,
        peaks="peaks" in groups, spectrum="spectrum" in groups,
        columns=_columns(pairs, ordered, thresholds))


class _RowList(list):
    """Windows given as a list of equal 1-D int16 arrays or :class:`_Pieces`, used as
    they are (no copy)."""

    shape: tuple[int, int]


class _Pieces:
    """One window given as consecutive 1-D int16 arrays (a stream's pieces as they were
    stored, shared by overlapping windows): a slice inside one piece is a view of it, and
    only one across pieces, or the whole window, joins them."""

    def __init__(self, pieces: Sequence[np.ndarray]) -> None:
        self.pieces = tuple(pieces)
        self.ends = list(itertools.accumulate(len(piece) for piece in self.pieces))

    def __len__(self) -> int:
        return self.ends[-1]

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(len(self))
        assert step == 1, "a window's pieces are read by plain slices"
        if start >= stop:
            return np.empty(0, np.int16)
        first = bisect.bisect_right(self.ends, start)
        begin = self.ends[first - 1] if first else 0
        if stop <= self.ends[first]:
            return self.pieces[first][start - begin:stop - begin]
        joined = np.empty(stop - start, np.int16)
        self.copy_into(start, joined)
        return joined

    def copy_into(self, start: int, out: np.ndarray) -> None:
        """Samples ``[start, start + len(out))`` into ``out``, piece by piece."""
        stop = start + len(out)
        at = bisect.bisect_right(self.ends, start)
        while start < stop:
            begin = self.ends[at - 1] if at else 0
            end = min(stop, self.ends[at])
            out[start - stop + len(out):end - stop + len(out)] = (
                self.pieces[at][start - begin:end - begin])
            start = end
            at += 1

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        joined = np.concatenate(self.pieces)
        return joined if dtype is None else joined.astype(dtype, copy=False)


def _segments(windows: np.ndarray | _RowList, spans: list[tuple[int, int, int]],
              ) -> np.ndarray:
    """Samples ``[first, stop)`` of row ``row`` for each ``(row, first, stop)`` of
    ``spans`` (all of one length), stacked: one copy, also from a window's pieces."""
    length = spans[0][2] - spans[0][1]
    out = np.empty((len(spans), length), np.int16)
    for line, (row, first, stop) in zip(out, spans, strict=True):
        window = windows[row]
        if isinstance(window, _Pieces):
            window.copy_into(first, line)
        else:
            line[:] = window[first:stop]
    return out


def _is_row(row: Any) -> bool:
    return isinstance(row, np.ndarray) and row.ndim == 1 and row.dtype == np.int16


def _validated(windows: np.ndarray | Sequence[np.ndarray | Sequence[np.ndarray]],
               start_samples: np.ndarray | None,
               ) -> tuple[np.ndarray | _RowList, list[int]]:
    if isinstance(windows, list | tuple) and windows and all(
            _is_row(row) or (isinstance(row, tuple) and row and all(map(_is_row, row)))
            for row in windows):
        rows = [_Pieces(row) if isinstance(row, tuple) else row for row in windows]
        if any(len(row) != len(rows[0]) for row in rows):
            raise LabquakeError(
                f"windows must all have the same length, got lengths "
                f"{sorted({len(row) for row in rows})}; pass windows of one length")
        windows = _RowList(rows)
        windows.shape = (len(windows), len(windows[0]))
    else:
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.dtype != np.int16:
            raise LabquakeError(
                f"windows must be an int16 array of shape (batch, window_len), got "
                f"{windows.dtype} of shape {windows.shape}; pass raw int16 samples, one row "
                f"per window")
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
