"""Compiled loops for the features' per-sample work, run without the GIL.

Kernels compiled by Numba, for passes that NumPy made while holding the GIL, made
several times over a window, or could not make without a copy:

- ``rolling_variances``: the running sums of x and x**2 and the variance of every run
  the features read, all widths and strides in one pass, each row's runs from its own
  first sample (NumPy needed a cumulative sum, which holds the GIL throughout, then a
  difference, square and scale per run width);
- ``counter_noise``: the denoising noise, by each sample's place on the counter (a
  counter-based generator), its table look-up plus the sample;
- ``hann_frames`` and ``power``: the STFT's framing times the Hann window, and |z|**2 of
  its spectrum;
- ``abs_stats``: the sum of |x - centre| and the threshold counts, in one pass;
- ``sta_lta_stats``: sums, counts and largest STA/LTA ratios, of many rows in a call;
- ``running_sums``: float64 running sums of float32 values, without a float64 copy;
- ``context_steps``: a stream context's steps over many windows in one call, its
  baseline quantile read from the lookback's values kept sorted, one value leaving and
  one arriving a step;
- ``ranked`` and ``sorted_abs_stats``: order statistics and |x| sums of windows made of
  blocks whose values lie sorted in a buffer (``model.features.extract.BlockCache``), without
  merging the blocks.

With the GIL released, the threads of ``model.features.extract`` run them side by side. Where a
kernel replaces a NumPy formula it is that formula bit for bit (the tests compare them):
the running sums are the same sequential float64 additions as ``np.cumsum``, a run's
variance is the same float64 difference rounded to float32 and scaled in float32, and
the products and sums are the same float32 operations. No fast-math: every operation is
IEEE, in the written order.

Each kernel has one signature, compiled at its first use (about ten seconds for all)
and kept in the package's ``__pycache__`` (or ``$NUMBA_CACHE_DIR``), so later processes
load it in a fraction of a second; ``warm_up`` does this ahead of time.

Example:
    >>> import numpy as np
    >>> signal = np.arange(8, dtype=np.float32)[np.newaxis, :]
    >>> rolling_variances(signal, ((4, 1),))[(4, 1)][0].astype(float).round(3).tolist()
    [1.667, 1.667, 1.667, 1.667, 1.667]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

# Samples a row's sums are kept for at a time: 64 KiB of float64 sums, in a core's cache.
SEGMENT_SAMPLES = 4096

log = logging.getLogger(__name__)

_COMPILED: dict[str, Callable[..., None]] = {}
_COMPILE_LOCK = threading.Lock()


def _rolling_variances_source(signal, widths, strides, phases, scales, offsets, segment,
                               out):
    """Per row r, the sample variance of the runs of ``widths[i]`` samples starting at
    ``phases[i, r]`` and every ``strides[i]`` samples after, from running sums of x and
    x**2 (float64, sequential); run p goes to ``out[offsets[i, r] + p]``.

    A row goes ``segment`` samples at a time: first the sums (one chain of dependent
    additions), then each set of runs that end in the segment (independent, so the
    compiler vectorises them), from a buffer that stays in cache and keeps the previous
    segment's last sums.
    """
    batch, length = signal.shape
    reach = 0
    for width in widths:
        reach = max(reach, width)
    # first[reach + k] is the running sum of x over the row's first (start + k) samples;
    # second the same for x**2.
    first = np.empty(reach + segment + 1, np.float64)
    second = np.empty(reach + segment + 1, np.float64)
    for row in range(batch):
        first[reach] = 0.0
        second[reach] = 0.0
        total = 0.0
        total_squares = 0.0
        for start in range(0, length, segment):
            stop = min(start + segment, length)
            if start:
                first[:reach + 1] = first[segment:segment + reach + 1]
                second[:reach + 1] = second[segment:segment + reach + 1]
            samples = signal[row, start:stop]
            sums = first[reach + 1:reach + 1 + stop - start]
            squares = second[reach + 1:reach + 1 + stop - start]
            for k in range(stop - start):
                value = np.float64(samples[k])
                total += value
                total_squares += value * value
                sums[k] = total
                squares[k] = total_squares
            for i in range(widths.shape[0]):
                width = widths[i]
                stride = strides[i]
                phase = phases[i, row]
                scale = scales[i]
                count = max(0, (length - phase - width) // stride + 1)
                # The runs that end in this segment: run p ends after sample count
                # e = phase + p * stride + width, e in (start, stop].
                lowest = max(start + 1, phase + width)
                first_run = (lowest - phase - width + stride - 1) // stride
                last_run = (stop - phase - width) // stride
                if last_run < first_run or count == 0:
                    continue
                runs = last_run - first_run + 1
                at = reach + phase + first_run * stride + width - start
                # Slices indexed from 0 by the loop counter: no negative-index checks, so
                # the loop vectorises.
                span = (runs - 1) * stride + 1
                sums_at_end = first[at:at + span:stride]
                sums_at_start = first[at - width:at - width + span:stride]
                squares_at_end = second[at:at + span:stride]
                squares_at_start = second[at - width:at - width + span:stride]
                base = offsets[i, row] + first_run
                into = out[base:base + runs]
                for k in range(runs):
                    run_sum = sums_at_end[k] - sums_at_start[k]
                    run_squares = (squares_at_end[k] - squares_at_start[k]) * width
                    difference = run_squares - run_sum * run_sum
                    into[k] = np.float32(difference) * scale


def _counter_noise_source(noise_table, seed, samples, first_sample, out):
    """out[k] = noise_table[level of sample n = first_sample + k] + samples[k], where the
    level is 16-bit word n % 4 of SplitMix64's output number n // 4 from ``seed``:
    mix64(seed + (n // 4 + 1) * 0x9E3779B97F4A7C15) (Steele, Lea and Flood, 2014)."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    length = samples.shape[0]
    k = 0
    while k < length:
        place = first_sample + k
        z = seed + (np.uint64(place >> 2) + np.uint64(1)) * gamma
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        lane = place & 3
        while lane < 4 and k < length:
            level = (z >> np.uint64(16 * lane)) & np.uint64(0xFFFF)
            out[k] = noise_table[level] + np.float32(samples[k])
            lane += 1
            k += 1


def _hann_frames_source(signal, hann, first_frame, hop, out):
    """Frames ``first_frame``... of ``signal`` zero-padded by half a frame on each side
    (librosa's centred framing), times the window ``hann``, into ``out``."""
    length = signal.shape[0]
    size = hann.shape[0]
    for frame in range(out.shape[0]):
        start = (first_frame + frame) * hop - size // 2
        row = out[frame]
        for k in range(size):
            at = start + k
            value = signal[at] if 0 <= at < length else np.float32(0.0)
            row[k] = value * hann[k]


def _power_source(spectrum, out):
    """out = |spectrum|**2: re * re + im * im, each product rounded to float32."""
    for frame in range(out.shape[0]):
        for k in range(out.shape[1]):
            value = spectrum[frame, k]
            out[frame, k] = value.real * value.real + value.imag * value.imag


def _abs_stats_source(signal, centre, thresholds, out):
    """Over one row, with x = signal - centre exactly (float64): out[0] the sum of |x|,
    out[2 + j] the samples with |x| > thresholds[j] (out[1] is left to the caller)."""
    # Four running sums side by side: no single chain of dependent additions.
    length = signal.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    for k in range(0, length - 3, 4):
        s0 += abs(np.float64(signal[k]) - centre)
        s1 += abs(np.float64(signal[k + 1]) - centre)
        s2 += abs(np.float64(signal[k + 2]) - centre)
        s3 += abs(np.float64(signal[k + 3]) - centre)
    for k in range(length - length % 4, length):
        s0 += abs(np.float64(signal[k]) - centre)
    out[0] = (s0 + s1) + (s2 + s3)
    for j in range(thresholds.shape[0]):
        # |x| > t: above centre + t or below centre - t; each loop vectorised.
        above = centre + thresholds[j]
        below = centre - thresholds[j]
        count = 0
        for k in range(length):
            value = np.float64(signal[k])
            count += (value > above) + (value < below)
        out[2 + j] = count


def _running_sums_source(values, out):
    """out[k] = values[0] + ... + values[k], in float64, in order (``np.cumsum``'s sums)."""
    total = 0.0
    for k in range(values.shape[0]):
        total += np.float64(values[k])
        out[k] = total


def _context_steps_source(rows, ordered, history, state, lookback, capacity, width, bins,
                          quantile, burst, burst_log_ratio, windows_per_second, max_since_s,
                          out):
    """``model.features.context.StreamContext.step`` for each row of ``rows`` in turn, the same
    float64 operations in the same order. ``ordered`` (bases, lookback): the last
    ``lookback`` rows, each column sorted; ``history`` (2 * capacity, bases): each row
    written twice, ``capacity`` apart; ``state``: rows held in ``ordered``, rows written,
    windows since the last burst (-1: none yet), updated. Row t's context features go to
    ``out[t]``: per base its ``bins`` slice means of ``width`` windows less the baseline,
    then the seconds since the burst."""
    bases = rows.shape[1]
    held = state[0]
    written = state[1]
    since = state[2]
    baseline = np.empty(bases, np.float64)
    span = bins * width
    for t in range(rows.shape[0]):
        remove = held == lookback
        slot = written % capacity
        for c in range(bases):
            arriving = np.float64(rows[t, c])
            column = ordered[c]
            count = held
            if remove:
                leaving = history[(written - lookback) % capacity, c]
                at = 0
                while at < count and column[at] != leaving:
                    at += 1
                for k in range(at, count - 1):
                    column[k] = column[k + 1]
                count -= 1
            at = count
            while at > 0 and column[at - 1] > arriving:
                column[at] = column[at - 1]
                at -= 1
            column[at] = arriving
            history[slot, c] = arriving
            history[slot + capacity, c] = arriving
        if not remove:
            held += 1
        written += 1
        # The baseline: NumPy's linear quantile, interpolated from the nearer end.
        index = (held - 1) * quantile
        low = int(np.floor(index))
        high = min(low + 1, held - 1)
        gamma = index - low
        for c in range(bases):
            below = ordered[c, low]
            difference = ordered[c, high] - below
            if gamma >= 0.5:
                baseline[c] = ordered[c, high] - difference * (1 - gamma)
            else:
                baseline[c] = below + difference * gamma
        # The past, oldest first, is history[end - past:end].
        past = min(written, capacity)
        end = (written - 1) % capacity + capacity + 1
        for c in range(bases):
            for b in range(bins):
                stop = past - b * width
                value = 0.0
                if past >= span or stop > 0:
                    first = max(0, stop - width)
                    total = history[end - past + first, c]
                    for k in range(first + 1, stop):
                        total += history[end - past + k, c]
                    value = total / (stop - first) - baseline[c]
                out[t, c * bins + b] = np.float32(value)
        if np.float64(rows[t, burst]) - baseline[burst] > burst_log_ratio:
            since = 0
        elif since >= 0:
            since += 1
        seconds = max_since_s if since < 0 else min(max_since_s, since / windows_per_second)
        out[t, bases * bins] = np.float32(seconds)
    state[0] = held
    state[1] = written
    state[2] = since


def _count_at_most(values, first, stop, bound):
    """How many of the sorted values[first:stop] are <= bound (float64 comparison)."""
    low = first
    high = stop
    while low < high:
        middle = (low + high) // 2
        if np.float64(values[middle]) <= bound:
            low = middle + 1
        else:
            high = middle
    return low - first


def _ranked_source(buffer, bounds, slots, quantities, ranks, previous, out):
    """Order statistics of windows made of sorted parts of a buffer's rows.

    Window r is the blocks in buffer rows slots[r, :]; its quantity q is the multiset
    union over them of buffer[slot, bounds[slot, q, 0]:bounds[slot, q, 1]] (each
    sorted), less the values of its first block's buffer[slot, bounds[slot, q, 2]:
    bounds[slot, q, 3]] (sorted, all among that block's own). Request j asks quantity
    quantities[j] for its ranks[r, j]-th smallest value (0-based) into out[0, r, j], and
    the value at the next rank into out[1, r, j]. previous[r] >= 0 names an earlier window
    whose answer to the same request is the first pivot (a window a block later, whose
    answers lie close); any pivot gives the same answer.

    The search keeps, per part, the stretch [below, above) where the answer may be; each
    step counts the values below and up to a pivot taken from the widest stretch at the
    answer's expected place, and either finds the answer there or cuts every stretch.
    """
    parts = slots.shape[1]
    below = np.empty(parts + 1, np.int64)
    above = np.empty(parts + 1, np.int64)
    under = np.empty(parts + 1, np.int64)
    upto = np.empty(parts + 1, np.int64)
    for r in range(slots.shape[0]):
        head = slots[r, 0]
        for j in range(quantities.shape[0]):
            q = quantities[j]
            rank = ranks[r, j]
            for i in range(parts):
                slot = slots[r, i]
                below[i] = bounds[slot, q, 0]
                above[i] = bounds[slot, q, 1]
            below[parts] = bounds[head, q, 2]  # the left-out values, counted negatively
            above[parts] = bounds[head, q, 3]
            passed = 0  # values below every stretch, left-out ones taken off
            value = np.float64(0.0)
            hinted = previous[r] >= 0
            while True:
                active = 0
                widest = 0
                for i in range(parts):
                    if above[i] - below[i] > above[widest] - below[widest]:
                        widest = i
                    active += above[i] - below[i]
                active -= above[parts] - below[parts]
                share = (rank - passed + 0.5) / max(active, 1)
                span = above[widest] - below[widest]
                pick = below[widest] + min(span - 1, max(0, int(share * span)))
                pivot = np.float64(buffer[slots[r, widest], pick])
                if hinted:
                    pivot = np.float64(out[0, previous[r], j])
                    hinted = False
                smaller = passed
                at_most = passed
                for i in range(parts + 1):
                    row = buffer[head] if i == parts else buffer[slots[r, i]]
                    under[i] = below[i] + _count_below(row, below[i], above[i], pivot)
                    upto[i] = under[i] + _count_at_most(row, under[i], above[i], pivot)
                    sign = -1 if i == parts else 1
                    smaller += sign * (under[i] - below[i])
                    at_most += sign * (upto[i] - below[i])
                if smaller <= rank < at_most:
                    value = pivot
                    break
                if rank < smaller:
                    for i in range(parts + 1):
                        above[i] = under[i]
                else:
                    for i in range(parts + 1):
                        below[i] = upto[i]
                    passed = at_most
            out[0, r, j] = np.float32(value)
            # The next value: this one again if it repeats past the rank, else the
            # smallest larger value that is not one of the values left out. The last
            # step's counts are exact (every value outside the stretches lies beyond
            # them), and upto[i] is where each part's values above this one begin.
            count = at_most
            following = value
            while count < rank + 2:
                candidate = np.inf
                for i in range(parts):
                    slot = slots[r, i]
                    if upto[i] < bounds[slot, q, 1]:
                        candidate = min(candidate, np.float64(buffer[slot, upto[i]]))
                if candidate == np.inf:
                    break  # the rank is the last: its next is itself
                for i in range(parts):
                    slot = slots[r, i]
                    while upto[i] < bounds[slot, q, 1] and (
                            np.float64(buffer[slot, upto[i]]) <= candidate):
                        upto[i] += 1
                        count += 1
                while upto[parts] < bounds[head, q, 3] and (
                        np.float64(buffer[head, upto[parts]]) <= candidate):
                    upto[parts] += 1
                    count -= 1
                if count >= rank + 2:
                    following = candidate
                # Otherwise every value there was left out: look past them.
            out[1, r, j] = np.float32(following)


def _sorted_abs_stats_source(buffer, sums, slots, counts, centres, thresholds, out):
    """Per window r (the blocks in buffer rows slots[r, :], each holding its counts[slot]
    samples sorted from column 0, their running sums in ``sums``), with x = sample -
    centres[r] exactly (float64): out[r, 0] the sum of |x|, out[r, 1] the largest |x|,
    out[r, 2 + j] the samples with |x| > thresholds[j]."""
    for r in range(slots.shape[0]):
        centre = centres[r]
        total = 0.0
        largest = 0.0
        for j in range(thresholds.shape[0]):
            out[r, 2 + j] = 0.0
        for i in range(slots.shape[1]):
            slot = slots[r, i]
            stop = counts[slot]
            if stop <= 0:
                continue
            row = buffer[slot]
            running = sums[slot]
            below = _count_at_most(row, 0, stop, centre)
            at_split = running[below - 1] if below > 0 else 0.0
            above = stop - below
            total += (below * centre - at_split) + (running[stop - 1] - at_split
                                                    - above * centre)
            largest = max(largest, np.float64(row[stop - 1]) - centre,
                          centre - np.float64(row[0]))
            for j in range(thresholds.shape[0]):
                over = stop - _count_at_most(row, 0, stop, centre + thresholds[j])
                out[r, 2 + j] += over + _count_below(row, 0, stop, centre - thresholds[j])
        out[r, 0] = total
        out[r, 1] = largest


def _sta_lta_stats_source(variances, short_first, long_first, long_count, offset, crossing,
                          floor, out):
    """Per row r, the ratios short[offset[r] + k] / max(long[k], floor), with short the
    row's short variances from variances[short_first[r]] on and long its long_count[r]
    long ones from variances[long_first[r]]: their sum, count and largest over all k
    (out[r, 0:3]) and over k >= crossing[r] (out[r, 3:6])."""
    for r in range(out.shape[0]):
        count = long_count[r]
        for part in range(2):
            total = 0.0
            largest = -np.inf
            first = 0 if part == 0 else crossing[r]
            for k in range(first, count):
                ratio = variances[short_first[r] + offset[r] + k] / max(
                    variances[long_first[r] + k], floor)
                total += ratio
                largest = max(largest, np.float64(ratio))
            out[r, 3 * part] = total
            out[r, 3 * part + 1] = count - first
            out[r, 3 * part + 2] = largest


def _count_below(values, first, stop, bound):
    """How many of the sorted values[first:stop] are < bound (float64 comparison)."""
    low = first
    high = stop
    while low < high:
        middle = (low + high) // 2
        if np.float64(values[middle]) < bound:
            low = middle + 1
        else:
            high = middle
    return low - first


def _signatures() -> dict[str, tuple[Callable[..., None], Any]]:
    """Each kernel's source and its one signature: inputs typed read-only (a writable
    array passes too), so every caller's arrays match it and nothing compiles twice."""
    from numba import types

    def array(dtype: Any, dimensions: int, layout: str = "C", readonly: bool = False) -> Any:
        return types.Array(dtype, dimensions, layout, readonly=readonly)

    return {
        "rolling_variances": (_rolling_variances_source, types.void(
            array(types.float32, 2, readonly=True), array(types.int64, 1, readonly=True),
            array(types.int64, 1, readonly=True), array(types.int64, 2, readonly=True),
            array(types.float32, 1, readonly=True),
            array(types.int64, 2, readonly=True), types.int64, array(types.float32, 1))),
        "counter_noise": (_counter_noise_source, types.void(
            array(types.float32, 1, readonly=True), types.uint64,
            array(types.int16, 1, "A", readonly=True), types.int64, array(types.float32, 1))),
        "hann_frames": (_hann_frames_source, types.void(
            array(types.float32, 1, readonly=True), array(types.float32, 1, readonly=True),
            types.int64, types.int64, array(types.float32, 2))),
        "power": (_power_source, types.void(
            array(types.complex64, 2, readonly=True), array(types.float32, 2))),
        "abs_stats": (_abs_stats_source, types.void(
            array(types.float32, 1, readonly=True), types.float64,
            array(types.float64, 1, readonly=True), array(types.float64, 1))),
        "ranked": (_ranked_source, types.void(
            array(types.float32, 2, readonly=True), array(types.int64, 3, readonly=True),
            array(types.int64, 2, readonly=True), array(types.int64, 1, readonly=True),
            array(types.int64, 2, readonly=True), array(types.int64, 1, readonly=True),
            array(types.float32, 3))),
        "sorted_abs_stats": (_sorted_abs_stats_source, types.void(
            array(types.float32, 2, readonly=True), array(types.float64, 2, readonly=True),
            array(types.int64, 2, readonly=True), array(types.int64, 1, readonly=True),
            array(types.float64, 1, readonly=True), array(types.float64, 1, readonly=True),
            array(types.float64, 2))),
        "running_sums": (_running_sums_source, types.void(
            array(types.float32, 1, readonly=True), array(types.float64, 1))),
        "context_steps": (_context_steps_source, types.void(
            array(types.float32, 2, readonly=True), array(types.float64, 2),
            array(types.float64, 2), array(types.int64, 1), types.int64, types.int64,
            types.int64, types.int64, types.float64, types.int64, types.float64,
            types.float64, types.float64, array(types.float32, 2))),
        "sta_lta_stats": (_sta_lta_stats_source, types.void(
            array(types.float32, 1, readonly=True), array(types.int64, 1, readonly=True),
            array(types.int64, 1, readonly=True), array(types.int64, 1, readonly=True),
            array(types.int64, 1, readonly=True), array(types.int64, 1, readonly=True),
            types.float32, array(types.float64, 2))),
    }


_HELPERS = ("_count_at_most", "_count_below")


def _jit_helpers(numba: Any) -> None:
    """Make the kernels' helper functions compiled ones, which the kernels can call.

    They are not cached on their own: a kernel's cached machine code holds the helpers
    it calls, and a cache file of theirs made under another module name would not load.
    """
    for name in _HELPERS:
        helper = globals()[name]
        if not hasattr(helper, "py_func"):
            globals()[name] = numba.njit(cache=False, nogil=True)(helper)


def _kernel(name: str) -> Callable[..., None]:
    """The compiled kernel ``name``: loaded from the cache, or compiled, at its first use."""
    kernel = _COMPILED.get(name)
    if kernel is None:
        with _COMPILE_LOCK:
            kernel = _COMPILED.get(name)
            if kernel is None:
                import numba

                _jit_helpers(numba)
                source, signature = _signatures()[name]
                # nogil: the feature threads run kernels side by side; no fastmath, so the
                # arithmetic is IEEE and in order, the same bits as NumPy's.
                options = {"nogil": True, "error_model": "numpy"}
                try:
                    # The machine code is kept in __pycache__ (or $NUMBA_CACHE_DIR), so a
                    # new process loads it instead of compiling again.
                    kernel = numba.njit([signature], cache=True, **options)(source)
                except Exception as error:  # any trouble with the cache: compile here
                    # Nowhere writable to keep it, or a kept copy that does not load (one
                    # made when this file was imported under another module name): the
                    # kernel is compiled in this process instead, a few seconds.
                    log.warning("compiled feature kernel %s not cached (%s: %s); compiling "
                                "it in this process", name, type(error).__name__, error)
                    kernel = numba.njit([signature], cache=False, **options)(source)
                _COMPILED[name] = kernel
    return kernel


def rolling_variances(signal: np.ndarray, runs: tuple[tuple[int, int], ...],
                      phases: np.ndarray | None = None,
                      ) -> dict[tuple[int, int], list[np.ndarray]]:
    """Sample variances (ddof=1) of runs of samples, for several widths and strides.

    Args:
        signal: float32 array of shape (batch, length).
        runs: ``(width, stride)`` pairs: runs of ``width`` consecutive samples starting
            every ``stride`` samples, the last one ending at or before the row's end;
            2 <= width, stride >= 1.
        phases: int array of shape (len(runs), batch): the sample each row's first run
            of each pair starts at (default: 0).

    Returns:
        ``{(width, stride): [float32 array per row]}``, row r holding
        ``max(0, (length - phase - width) // stride + 1)`` runs.

    Example:
        >>> signal = np.array([[1, 2, 3, 4, 6]], np.float32)
        >>> variances = rolling_variances(signal, ((2, 1), (3, 2)))
        >>> variances[(2, 1)][0].tolist(), variances[(3, 2)][0].astype(float).round(4).tolist()
        ([0.5, 0.5, 0.5, 2.0], [1.0, 2.3333])
    """
    out, offsets, counts = rolling_variance_table(signal, runs, phases)
    return {pair: [out[offsets[i, row]:offsets[i, row] + counts[i, row]]
                   for row in range(len(signal))] for i, pair in enumerate(runs)}


def rolling_variance_table(signal: np.ndarray, runs: tuple[tuple[int, int], ...],
                           phases: np.ndarray | None = None,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rolling_variances` as one flat float32 array: run pair i of row r is
    ``out[offsets[i, r]:offsets[i, r] + counts[i, r]]``.

    Example:
        >>> out, offsets, counts = rolling_variance_table(
        ...     np.array([[1, 2, 3, 4, 6]], np.float32), ((2, 1),))
        >>> out.tolist(), offsets.tolist(), counts.tolist()
        ([0.5, 0.5, 0.5, 2.0], [[0]], [[4]])
    """
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    batch, length = signal.shape
    widths = np.array([width for width, _ in runs], np.int64)
    strides = np.array([stride for _, stride in runs], np.int64)
    # The same float64 division, rounded to float32, as the NumPy formula's scale.
    scales = np.array([np.float32(1.0 / (width * (width - 1))) for width, _ in runs],
                      np.float32)
    starts = (np.zeros((len(runs), batch), np.int64) if phases is None
              else np.ascontiguousarray(phases, np.int64).reshape(len(runs), batch))
    counts = np.maximum(0, (length - starts - widths[:, np.newaxis]) // strides[:, np.newaxis]
                        + 1)
    ends = np.cumsum(counts.ravel()).reshape(counts.shape)
    offsets = (ends - counts).astype(np.int64)
    out = np.empty(int(ends[-1, -1]) if counts.size else 0, np.float32)
    _kernel("rolling_variances")(signal, widths, strides, starts, scales, offsets,
                                 SEGMENT_SAMPLES, out)
    return out, offsets, counts


def counter_noise(noise_table: np.ndarray, seed: int, samples: np.ndarray,
                  first_sample: int, out: np.ndarray | None = None) -> np.ndarray:
    """The samples plus noise that depends on each sample's place on the counter alone.

    Sample n's noise is ``noise_table[level]``, the level being 16-bit word ``n % 4``
    (least significant first) of SplitMix64's output number ``n // 4`` from ``seed``: a
    counter-based generator, so any stretch is made without the ones before it.

    Args:
        noise_table: float32 array of 2**16 noise values.
        seed: the generator's seed, 0 <= seed < 2**64.
        samples: int16 samples.
        first_sample: the first sample's place on the counter, >= 0.
        out: a contiguous float32 array of the samples' length to write into (default: a
            new one).

    Returns:
        float32 array (``out``): each sample plus its noise.

    Example:
        >>> table = np.arange(1 << 16, dtype=np.float32)
        >>> whole = counter_noise(table, 7, np.zeros(9, np.int16), 3)
        >>> bool((counter_noise(table, 7, np.zeros(4, np.int16), 8) == whole[5:]).all())
        True
    """
    if out is None:
        out = np.empty(len(samples), np.float32)
    _kernel("counter_noise")(np.ascontiguousarray(noise_table), np.uint64(seed), samples,
                             int(first_sample), out)
    return out


def hann_frames(signal: np.ndarray, hann: np.ndarray, first_frame: int, hop: int,
                out: np.ndarray) -> None:
    """Centred frames of ``signal`` times ``hann``: frame f covers samples from
    ``(first_frame + f) * hop - len(hann) // 2``, zeros outside the signal.

    Args:
        signal: float32 samples of one signal, contiguous.
        hann: float32 window of the frame's length.
        first_frame: index of the first frame written.
        hop: samples between frame starts.
        out: float32 array of shape (frames, len(hann)), written.

    Example:
        >>> out = np.empty((2, 4), np.float32)
        >>> hann_frames(np.arange(1, 5, dtype=np.float32), np.ones(4, np.float32), 0, 2, out)
        >>> out.tolist()
        [[0.0, 0.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0]]
    """
    _kernel("hann_frames")(np.ascontiguousarray(signal), np.ascontiguousarray(hann),
                           first_frame, hop, out)


def power(spectrum: np.ndarray, out: np.ndarray) -> None:
    """``out = |spectrum|**2`` of a complex64 array, each square rounded to float32.

    Args:
        spectrum: complex64 array of shape (frames, bins).
        out: float32 array of the same shape (may be a view), written.

    Example:
        >>> out = np.empty((1, 2), np.float32)
        >>> power(np.array([[3 + 4j, 1j]], np.complex64), out)
        >>> out.tolist()
        [[25.0, 1.0]]
    """
    _kernel("power")(np.ascontiguousarray(spectrum), out)


def abs_stats(signal: np.ndarray, centre: float, thresholds: np.ndarray) -> np.ndarray:
    """Sum and largest of |x| and the counts of |x| > each threshold, x = signal - centre
    taken exactly (in float64), in one pass.

    Args:
        signal: float32 samples of one row.
        centre: the value subtracted.
        thresholds: float64 thresholds.

    Returns:
        float64 array: the sum of |x|, the largest |x|, then one count per threshold.

    Example:
        >>> abs_stats(np.array([1, 4, -2], np.float32), 1.0, np.array([2.0])).tolist()
        [6.0, 3.0, 2.0]
    """
    out = np.empty(2 + len(thresholds), np.float64)
    signal = np.ascontiguousarray(signal, np.float32)
    _kernel("abs_stats")(signal, float(centre), np.ascontiguousarray(thresholds, np.float64),
                         out)
    # NumPy's SIMD minimum and maximum: the compiled loop's NaN-aware ones are not.
    out[1] = max(float(signal.max()) - centre, centre - float(signal.min())) if len(
        signal) else 0.0
    return out


def ranked(buffer: np.ndarray, bounds: np.ndarray, slots: np.ndarray,
           quantities: np.ndarray, ranks: np.ndarray,
           previous: np.ndarray | None = None) -> np.ndarray:
    """Order statistics of windows made of blocks whose values lie sorted in a buffer.

    Args:
        buffer: float32 array of shape (rows, n): one row per block.
        bounds: int64 array of shape (rows, quantities, 4): quantity q of the block in
            row b is ``buffer[b, bounds[b, q, 0]:bounds[b, q, 1]]`` (sorted); a window
            leaves out its first block's ``buffer[b, bounds[b, q, 2]:bounds[b, q, 3]]``
            (sorted, values among the block's own).
        slots: int64 array of shape (windows, blocks): each window's buffer rows.
        quantities: int64 array of shape (requests,): the quantity each request asks.
        ranks: int64 array of shape (windows, requests): the 0-based rank each asks.
        previous: int64 array of shape (windows,): for each window, an earlier one (-1:
            none) whose answers are near its own (the window a block before, in a
            stream): the search starts from them. The answers do not depend on it.

    Returns:
        float32 array of shape (2, windows, requests): each request's value, and the
        value at the next rank (the same value at the last rank).

    Example:
        >>> buffer = np.array([[1, 5, 9, 0], [2, 3, 4, 8]], np.float32)
        >>> bounds = np.array([[[0, 3, 2, 3]], [[0, 4, 0, 0]]])
        >>> ranked(buffer, bounds, np.array([[0, 1]]), np.array([0, 0, 0]),
        ...        np.array([[0, 3, 5]])).tolist()
        [[[1.0, 4.0, 8.0]], [[2.0, 5.0, 8.0]]]
    """
    out = np.empty((2, *np.shape(ranks)), np.float32)
    windows = len(slots)
    previous = (np.full(windows, -1, np.int64) if previous is None
                else np.ascontiguousarray(previous, np.int64))
    if previous.shape != (windows,) or np.any(previous >= np.arange(windows)):
        raise ValueError("previous must name, per window, an earlier window or -1")
    _kernel("ranked")(buffer, np.ascontiguousarray(bounds, np.int64),
                      np.ascontiguousarray(slots, np.int64),
                      np.ascontiguousarray(quantities, np.int64),
                      np.ascontiguousarray(ranks, np.int64), previous, out)
    return out


def sorted_abs_stats(buffer: np.ndarray, sums: np.ndarray, slots: np.ndarray,
                     counts: np.ndarray, centres: np.ndarray,
                     thresholds: np.ndarray) -> np.ndarray:
    """:func:`abs_stats` of windows made of blocks whose samples lie sorted in a buffer,
    from their running sums, without reading every sample.

    Args:
        buffer: float32 array of shape (rows, n): row b holds a block's ``counts[b]``
            samples sorted ascending from column 0.
        sums: float64 array of the same shape, ``sums[b, k] = buffer[b, :k + 1].sum()``.
        slots: int64 array of shape (windows, blocks): each window's buffer rows.
        counts: int64 array of shape (rows,).
        centres: float64 array of shape (windows,): the value each window subtracts.
        thresholds: float64 thresholds.

    Returns:
        float64 array of shape (windows, 2 + len(thresholds)), as :func:`abs_stats`.

    Example:
        >>> buffer = np.array([[-2, 1, 4]], np.float32)
        >>> sorted_abs_stats(buffer, np.cumsum(buffer, axis=1, dtype=np.float64),
        ...                  np.array([[0]]), np.array([3]), np.array([1.0]),
        ...                  np.array([2.0])).tolist()
        [[6.0, 3.0, 2.0]]
    """
    out = np.empty((len(slots), 2 + len(thresholds)), np.float64)
    _kernel("sorted_abs_stats")(buffer, sums, np.ascontiguousarray(slots, np.int64),
                                np.ascontiguousarray(counts, np.int64),
                                np.ascontiguousarray(centres, np.float64),
                                np.ascontiguousarray(thresholds, np.float64), out)
    return out


def context_steps(rows: np.ndarray, ordered: np.ndarray, history: np.ndarray,
                  state: np.ndarray, lookback: int, width: int, bins: int, quantile: float,
                  burst: int, burst_log_ratio: float, windows_per_second: float,
                  max_since_s: float) -> np.ndarray:
    """A stream context's steps over consecutive windows (``model.features.context.StreamContext``
    keeps the arrays and calls this), bit for bit its NumPy formulas, one call for many
    windows.

    Args:
        rows: float32 array of shape (windows, bases): each window's base features.
        ordered: float64 array of shape (bases, lookback): the last ``lookback`` rows,
            each column sorted (its first ``state[0]`` values); updated.
        history: float64 array of shape (2 * capacity, bases), capacity >= lookback and
            >= bins * width: each row written at ``i % capacity`` and ``capacity``
            later; updated.
        state: int64 array [rows held in ``ordered``, rows written, windows since the
            last burst or -1]; updated.
        lookback: rows the baseline quantile is taken over.
        width, bins: windows per slice, and slices.
        quantile: the baseline's quantile.
        burst: the column that marks a burst; burst_log_ratio: by how much over the
            baseline.
        windows_per_second: for the seconds since the burst; max_since_s: their cap.

    Returns:
        float32 array of shape (windows, bases * bins + 1).

    Example:
        >>> ordered, history = np.zeros((1, 4)), np.zeros((8, 1))
        >>> state = np.zeros(3, np.int64)
        >>> state[2] = -1
        >>> context_steps(np.array([[1.0], [3.0]], np.float32), ordered, history, state,
        ...               4, 1, 2, 0.5, 0, 5.0, 10.0, 20.0).tolist()
        [[0.0, 0.0, 20.0], [1.0, -1.0, 20.0]]
    """
    rows = np.ascontiguousarray(rows, np.float32)
    out = np.empty((len(rows), rows.shape[1] * bins + 1), np.float32)
    _kernel("context_steps")(rows, ordered, history, state, int(lookback),
                             len(history) // 2, int(width), int(bins), float(quantile),
                             int(burst), float(burst_log_ratio), float(windows_per_second),
                             float(max_since_s), out)
    return out


def running_sums(values: np.ndarray, out: np.ndarray) -> None:
    """``np.cumsum(values, dtype=np.float64, out=out)`` for float32 values, the same sums,
    several times faster (no float64 copy first).

    Example:
        >>> out = np.empty(3)
        >>> running_sums(np.array([1, 2, 3.5], np.float32), out)
        >>> out.tolist()
        [1.0, 3.0, 6.5]
    """
    _kernel("running_sums")(values, out)


def sta_lta_stats(short_variance: np.ndarray, long_variance: np.ndarray, offset: int,
                  crossing: int, floor: float) -> np.ndarray:
    """Sum, count and largest of the ratios ``short_variance[offset + k] /
    max(long_variance[k], floor)``, over every k and over k >= ``crossing``.

    Args:
        short_variance, long_variance: float32 arrays of one row's variances.
        offset: the short run that ends where the first long one does.
        crossing: the ratios before it are left out of the second part.
        floor: the smallest divisor.

    Returns:
        float64 array: sum, count, largest over all, then over k >= crossing.

    Example:
        >>> sta_lta_stats(np.array([1, 2, 4], np.float32), np.array([2, 2], np.float32),
        ...               1, 1, 1e-6).tolist()
        [3.0, 2.0, 2.0, 2.0, 1.0, 2.0]
    """
    short = np.ascontiguousarray(short_variance, np.float32)
    variances = np.concatenate([short, np.ascontiguousarray(long_variance, np.float32)])
    return sta_lta_rows(variances, np.zeros(1, np.int64), np.array([len(short)]),
                        np.array([len(long_variance)]), np.array([offset]),
                        np.array([crossing]), floor)[0]


def sta_lta_rows(variances: np.ndarray, short_first: np.ndarray, long_first: np.ndarray,
                 long_count: np.ndarray, offset: np.ndarray, crossing: np.ndarray,
                 floor: float) -> np.ndarray:
    """:func:`sta_lta_stats` of many rows in one call, their variances in one flat array
    (as :func:`rolling_variance_table` lays them out).

    Args:
        variances: float32 array holding every row's short and long variances.
        short_first, long_first: int64 arrays, per row: where its short and its long
            variances begin in ``variances``.
        long_count: int64 array, per row: how many long variances it has.
        offset, crossing: int64 arrays, per row, as :func:`sta_lta_stats` takes them.
        floor: the smallest divisor.

    Returns:
        float64 array of shape (rows, 6), each row as :func:`sta_lta_stats` returns it.
    """
    out = np.empty((len(long_count), 6), np.float64)
    _kernel("sta_lta_stats")(np.ascontiguousarray(variances, np.float32),
                             *(np.ascontiguousarray(values, np.int64) for values in (
                                 short_first, long_first, long_count, offset, crossing)),
                             np.float32(floor), out)
    return out


def warm_up() -> None:
    """Compile every kernel now (or load it from the cache), so the first real call pays
    nothing.

    Example:
        >>> warm_up()
    """
    for name in _signatures():
        _kernel(name)
