"""Compiled loops for the features' per-sample work, run without the GIL.

Four kernels, compiled by Numba, replace NumPy passes that held the GIL or went over a
window several times:

- ``rolling_variances``: the running sums of x and x**2 and the variance of every run
  the features read, all widths and strides in one pass (NumPy needed a cumulative sum,
  which holds the GIL throughout, then a difference, square and scale per run width);
- ``add_noise``: the denoising noise's table look-up plus the sample;
- ``hann_frames`` and ``power``: the STFT's centred, zero-padded framing times the Hann
  window, and |z|**2 of its spectrum.

With the GIL released, the threads of ``model.features`` run them side by side. They are
bit for bit the NumPy formulas they replace (the tests compare them): the running sums
are the same sequential float64 additions as ``np.cumsum``, a run's variance is the same
float64 difference rounded to float32 and scaled in float32, and the products and sums
are the same float32 operations. No fast-math: every operation is IEEE, in the written
order.

Each kernel has one signature, compiled at its first use (about five seconds for the
four) and kept in the package's ``__pycache__`` (or ``$NUMBA_CACHE_DIR``), so later
processes load it in a fraction of a second; ``warm_up`` does this ahead of time.

Example:
    >>> import numpy as np
    >>> signal = np.arange(8, dtype=np.float32)[np.newaxis, :]
    >>> rolling_variances(signal, ((4, 1),))[(4, 1)].astype(float).round(3).tolist()
    [[1.667, 1.667, 1.667, 1.667, 1.667]]
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


def _rolling_variances_source(signal, widths, strides, scales, offsets, segment, out):
    """Per row, the sample variance of the runs of ``widths[i]`` samples starting every
    ``strides[i]`` samples, from running sums of x and x**2 (float64, sequential); run p
    of row r goes to ``out[offsets[i] + r * counts + p]``, counts = the runs in a row.

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
                scale = scales[i]
                count = (length - width) // stride + 1
                # The runs that end in this segment: run p ends after sample count
                # e = p * stride + width, e in (start, stop].
                lowest = max(start + 1, width)
                first_run = (lowest - width + stride - 1) // stride
                last_run = (stop - width) // stride
                if last_run < first_run:
                    continue
                runs = last_run - first_run + 1
                at = reach + first_run * stride + width - start
                # Slices indexed from 0 by the loop counter: no negative-index checks, so
                # the loop vectorises.
                span = (runs - 1) * stride + 1
                sums_at_end = first[at:at + span:stride]
                sums_at_start = first[at - width:at - width + span:stride]
                squares_at_end = second[at:at + span:stride]
                squares_at_start = second[at - width:at - width + span:stride]
                base = offsets[i] + row * count + first_run
                into = out[base:base + runs]
                for k in range(runs):
                    run_sum = sums_at_end[k] - sums_at_start[k]
                    run_squares = (squares_at_end[k] - squares_at_start[k]) * width
                    difference = run_squares - run_sum * run_sum
                    into[k] = np.float32(difference) * scale


def _add_noise_source(noise_table, levels, window, out):
    """out[k] = noise_table[levels[k]] + window[k], in float32."""
    for k in range(out.shape[0]):
        out[k] = noise_table[levels[k]] + np.float32(window[k])


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


def _signatures() -> dict[str, tuple[Callable[..., None], Any]]:
    """Each kernel's source and its one signature: inputs typed read-only (a writable
    array passes too), so every caller's arrays match it and nothing compiles twice."""
    from numba import types

    def array(dtype: Any, dimensions: int, layout: str = "C", readonly: bool = False) -> Any:
        return types.Array(dtype, dimensions, layout, readonly=readonly)

    return {
        "rolling_variances": (_rolling_variances_source, types.void(
            array(types.float32, 2, readonly=True), array(types.int64, 1, readonly=True),
            array(types.int64, 1, readonly=True), array(types.float32, 1, readonly=True),
            array(types.int64, 1, readonly=True), types.int64, array(types.float32, 1))),
        "add_noise": (_add_noise_source, types.void(
            array(types.float32, 1, readonly=True), array(types.uint16, 1, readonly=True),
            array(types.int16, 1, "A", readonly=True), array(types.float32, 1))),
        "hann_frames": (_hann_frames_source, types.void(
            array(types.float32, 1, readonly=True), array(types.float32, 1, readonly=True),
            types.int64, types.int64, array(types.float32, 2))),
        "power": (_power_source, types.void(
            array(types.complex64, 2, readonly=True), array(types.float32, 2))),
    }


def _kernel(name: str) -> Callable[..., None]:
    """The compiled kernel ``name``: loaded from the cache, or compiled, at its first use."""
    kernel = _COMPILED.get(name)
    if kernel is None:
        with _COMPILE_LOCK:
            kernel = _COMPILED.get(name)
            if kernel is None:
                import numba

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


def rolling_variances(signal: np.ndarray,
                      runs: tuple[tuple[int, int], ...]) -> dict[tuple[int, int], np.ndarray]:
    """Sample variances (ddof=1) of runs of samples, for several widths and strides.

    Args:
        signal: float32 array of shape (batch, length).
        runs: ``(width, stride)`` pairs: runs of ``width`` consecutive samples starting
            every ``stride`` samples from the first, the last one ending at or before the
            row's end; 2 <= width <= length, stride >= 1.

    Returns:
        ``{(width, stride): float32 array of shape (batch, (length - width) // stride + 1)}``.

    Example:
        >>> signal = np.array([[1, 2, 3, 4, 6]], np.float32)
        >>> variances = rolling_variances(signal, ((2, 1), (3, 2)))
        >>> variances[(2, 1)].tolist(), variances[(3, 2)].astype(float).round(4).tolist()
        ([[0.5, 0.5, 0.5, 2.0]], [[1.0, 2.3333]])
    """
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    batch, length = signal.shape
    widths = np.array([width for width, _ in runs], np.int64)
    strides = np.array([stride for _, stride in runs], np.int64)
    # The same float64 division, rounded to float32, as the NumPy formula's scale.
    scales = np.array([np.float32(1.0 / (width * (width - 1))) for width, _ in runs],
                      np.float32)
    counts = [(length - width) // stride + 1 for width, stride in runs]
    offsets = np.cumsum([0] + [batch * count for count in counts]).astype(np.int64)
    out = np.empty(int(offsets[-1]), np.float32)
    _kernel("rolling_variances")(signal, widths, strides, scales,
                                 np.ascontiguousarray(offsets[:-1]), SEGMENT_SAMPLES, out)
    return {pair: out[offsets[i]:offsets[i + 1]].reshape(batch, counts[i])
            for i, pair in enumerate(runs)}


def add_noise(noise_table: np.ndarray, levels: np.ndarray, window: np.ndarray,
              out: np.ndarray) -> None:
    """``out = noise_table[levels] + window`` in float32, in one pass.

    Args:
        noise_table: float32 array of noise values.
        levels: uint16 indices into ``noise_table``, one per sample.
        window: int16 samples, as many as ``levels``.
        out: float32 array of the same length, written.

    Example:
        >>> out = np.empty(2, np.float32)
        >>> add_noise(np.array([0.5, -0.5], np.float32), np.array([1, 0], np.uint16),
        ...           np.array([3, 4], np.int16), out)
        >>> out.tolist()
        [2.5, 4.5]
    """
    _kernel("add_noise")(np.ascontiguousarray(noise_table), np.ascontiguousarray(levels),
                         window, out)


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


def warm_up() -> None:
    """Compile every kernel now (or load it from the cache), so the first real call pays
    nothing.

    Example:
        >>> warm_up()
    """
    for name in _signatures():
        _kernel(name)
