"""Failures found in a shear-stress series, and the time-to-failure labels they give.

A lab fault in stick-slip loads slowly (the shear stress climbs) and fails abruptly (the
stress drops). A failure **starts** at the highest stress since the previous failure
ended, where the fault stops holding, and **ends** at the lowest stress before the fault
reloads, where slip stops.

Which drops are failures. A dynamic failure releases about what its cycle loaded: its
drop is of the order of the stress's swing between the peaks and troughs of the cycles.
Slow slip and precursory creep release a small part of it. A drop counts as a failure
when the stress falls at least ``min_drop`` below its running peak; by default
``min_drop`` is half the record's swing (``DROP_FRACTION``), the swing being the range
between the 5th and the 95th percentile of the stress, which a sawtooth spends its time
in. Half the swing lies midway between "no release" and "a whole cycle's release", so
the rule needs no tuning to one rig; a record whose load level drifts by more than a
cycle's swing, or whose failures vary a lot in size, should give ``min_drop`` in its own
units (MPa) instead. The same threshold, upward, confirms that the fault reloaded after a
failure (hysteresis): noise smaller than ``min_drop`` can neither start nor end a failure.
Only at the end of a series is less asked: the last failure's end is seen once the stress
has climbed back a quarter of ``min_drop``; a series that stops before that (in the middle
of a drop) leaves it unknown.

Slow slip and small precursory drops. A drop smaller than ``min_drop`` is never a failure
of its own. If the stress regains its earlier peak afterwards, the small drop is simply
part of the loading; if it does not, and a failure follows, the failure starts at that
earlier peak: the precursory slip is counted as the beginning of the failure.

Noise. With ``smooth_s`` the stress is first passed through a running median over that
many seconds (spikes go, the edge of a drop stays in place); failures are found on the
smoothed series, and each start and end is then placed at the raw series' extreme within
half a filter width of the smoothed one: exact on a clean series, and within about one
filter width when the noise is large (the noise then hides where the peak was). Without
smoothing, a noise deviation above a twelfth of ``min_drop`` is refused.

Output of :func:`label_file`: the input table, every column and row, with
``time_to_failure`` (seconds from the row to the next failure's start) and
``time_to_failure_end`` (to the next failure's end) added; both are empty (missing) for
rows after the last start, whose next failure is not in the record.

Example:
    >>> rows = np.arange(300)
    >>> time_s, stress = rows / 10, 3.0 + 0.006 * (rows % 100)  # 10-s cycles, drops of 0.6
    >>> found = find_failures(time_s, stress)
    >>> found.start_s.tolist(), found.end_s.tolist()
    ([9.9, 19.9], [10.0, 20.0])
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter

from model.data import tables
from stream.core.errors import LabquakeError

DEFAULT_TIME_COLUMN = "Time"
DEFAULT_STRESS_COLUMN = "ShearStress"
# The columns :func:`label_file` adds: seconds to the next failure's start and end.
TTF_COLUMN = "time_to_failure"
TTE_COLUMN = "time_to_failure_end"

# A failure drops the stress by at least this fraction of the record's swing.
DROP_FRACTION = 0.5
# The swing: the range between these percentiles of the stress.
SWING_PERCENTILES = (5.0, 95.0)
# The minimum drop must stand this many noise deviations above the noise, or detection
# would follow the noise (the peak-to-peak of millions of Gaussian samples is ~11 sigma).
MIN_DROP_NOISE_RATIO = 12.0
# The last failure's end is seen once the stress climbs back this fraction of the minimum
# drop above its trough (a reload, not noise, which stays below a twelfth of it).
END_RISE_FRACTION = 0.25
# Rows a series needs before failures can be told from noise.
MIN_ROWS = 8


@dataclasses.dataclass(frozen=True)
class Failures:
    """The failures found in a stress series, in time order.

    Attributes:
        start: int64 row of each failure's start (the peak stress).
        end: int64 row of each failure's end (the trough); -1 where the series stops
            before the fault has reloaded, so the end is not known.
        start_s: float64 time of each start.
        end_s: float64 time of each end; NaN where unknown.
        drop: float64 stress drop of each failure (peak minus trough, or minus the lowest
            stress seen when the end is unknown).
        min_drop: the smallest drop that counted as a failure.
        swing: the series' swing (see the module docstring), in stress units.
    """

    start: np.ndarray
    end: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    drop: np.ndarray
    min_drop: float
    swing: float

    def __len__(self) -> int:
        return len(self.start)


def find_failures(time_s: np.ndarray, stress: np.ndarray, *, min_drop: float | None = None,
                  drop_fraction: float = DROP_FRACTION, smooth_s: float = 0.0) -> Failures:
    """Find each failure's start and end in a shear-stress series.

    Args:
        time_s: strictly increasing times of the rows, seconds.
        stress: the shear stress at each row (any unit: MPa, kN, volts).
        min_drop: the smallest stress drop that is a failure, in the stress's unit;
            default ``drop_fraction`` times the series' swing.
        drop_fraction: the minimum drop as a fraction of the swing, when ``min_drop`` is
            not given.
        smooth_s: width of the running median applied first, seconds (0: none).

    Returns:
        The :class:`Failures`.

    Raises:
        LabquakeError: too few rows, times not increasing, missing stress values, or a
            minimum drop that the noise would reach.
        ValueError: arrays of different lengths or a bad argument.

    Example:
        >>> time_s = np.arange(0.0, 12.0, 0.1)
        >>> len(find_failures(time_s, np.where(time_s < 6.0, time_s, time_s - 6.0)))
        1
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    raw = np.asarray(stress, dtype=np.float64)
    if time_s.ndim != 1 or raw.shape != time_s.shape:
        raise ValueError(f"time_s and stress must be 1-D of the same length, got shapes "
                         f"{time_s.shape} and {raw.shape}")
    if not 0.0 < drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must lie in (0, 1), got {drop_fraction}")
    if not (np.isfinite(smooth_s) and smooth_s >= 0.0):
        raise ValueError(f"smooth_s must be a finite number >= 0, got {smooth_s}")
    _check_series(time_s, raw)
    width = _filter_width(time_s, smooth_s)
    smoothed = median_filter(raw, size=width, mode="nearest") if width > 1 else raw
    low, high = np.percentile(smoothed, SWING_PERCENTILES)
    swing = float(high - low)
    threshold = drop_fraction * swing if min_drop is None else float(min_drop)
    if not (np.isfinite(threshold) and threshold > 0.0):
        raise LabquakeError("the stress does not vary, so no failure can be found; check "
                            "the stress column" if min_drop is None else
                            f"minimum drop {min_drop} is not a positive number")
    noise = noise_deviation(smoothed)
    if threshold < MIN_DROP_NOISE_RATIO * noise:
        raise LabquakeError(
            f"the stress noise (about {noise:.3g} per row) is too close to the minimum drop "
            f"{threshold:.3g}: smooth it (e.g. --smooth {_suggested_smoothing(time_s)}) or "
            "give a larger --min-drop")
    triggers, reloads = _hysteresis_turns(smoothed, threshold)
    start, end = _extremes(raw, smoothed, triggers, reloads, width, threshold)
    known = end >= 0
    end_s = np.full(len(start), np.nan)
    end_s[known] = time_s[end[known]]
    lowest = np.array([raw[stop] if stop >= 0 else raw[first:].min()
                       for first, stop in zip(start.tolist(), end.tolist(), strict=True)])
    return Failures(start=start, end=end, start_s=time_s[start], end_s=end_s,
                    drop=raw[start] - lowest if len(start) else np.zeros(0),
                    min_drop=threshold, swing=swing)


def failure_labels(time_s: np.ndarray, failures: Failures) -> tuple[np.ndarray, np.ndarray]:
    """Seconds from each row to the next failure's start and to the next failure's end.

    A row at a failure's start reads 0 to failure, the row after it the time to the next
    failure (a failing fault has already failed); likewise for the end. Rows after the
    last start have no next failure: NaN, as are rows whose next end is not known.

    Args:
        time_s: the rows' times, as given to :func:`find_failures`.
        failures: what :func:`find_failures` found.

    Returns:
        ``(time_to_failure, time_to_end)``, float64 arrays of the rows' length.

    Example:
        >>> rows = np.arange(12)
        >>> time_s, stress = rows / 2, np.where(rows < 6, rows, rows - 6.0)
        >>> until_start, until_end = failure_labels(time_s, find_failures(time_s, stress))
        >>> until_start.tolist()[:7], until_end.tolist()[:7]
        ([2.5, 2.0, 1.5, 1.0, 0.5, 0.0, nan], [3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0])
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    rows = np.arange(len(time_s))
    # Only the last failure can lack its end, so the known ends are the first ones.
    return (_time_to_next(time_s, rows, failures.start),
            _time_to_next(time_s, rows, failures.end[failures.end >= 0]))


def noise_deviation(series: np.ndarray) -> float:
    """The standard deviation of a series' row-to-row noise, robust to its trends.

    Second differences cancel a straight loading ramp, so what is left is noise
    (``sqrt(6)`` times its deviation) except at the few rows where the trend bends; their
    median absolute deviation ignores those.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> round(noise_deviation(np.linspace(0, 5, 10_000) + rng.normal(0, 0.01, 10_000)), 3)
        0.01
    """
    second = np.diff(np.asarray(series, dtype=np.float64), 2)
    if len(second) == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(second - np.median(second))) / np.sqrt(6.0))


def _check_series(time_s: np.ndarray, stress: np.ndarray) -> None:
    if len(time_s) < MIN_ROWS:
        raise LabquakeError(f"only {len(time_s)} rows of stress; at least {MIN_ROWS} are "
                            "needed to find failures")
    bad = np.flatnonzero(~np.isfinite(stress))
    if len(bad):
        raise LabquakeError(f"stress is missing or not a number at row {bad[0] + 1} (and "
                            f"{len(bad) - 1} more); fill or remove those rows")
    steps = np.diff(time_s)
    backwards = np.flatnonzero(~(steps > 0))
    if len(backwards) or not np.isfinite(time_s).all():
        row = int(backwards[0]) + 2 if len(backwards) else 1
        raise LabquakeError(f"times must increase from row to row; row {row} does not (or a "
                            "time is missing); sort the rows or name the right time column")


def _filter_width(time_s: np.ndarray, smooth_s: float) -> int:
    """An odd number of rows spanning about ``smooth_s`` seconds (1: no smoothing)."""
    step = float(np.median(np.diff(time_s)))
    rows = round(smooth_s / step)
    return rows + 1 - rows % 2 if rows > 1 else 1


def _suggested_smoothing(time_s: np.ndarray) -> str:
    """Ten rows' worth of seconds, the first smoothing to try."""
    return f"{10 * float(np.median(np.diff(time_s))):.2g}"


def _hysteresis_turns(stress: np.ndarray, threshold: float) -> tuple[list[int], list[int]]:
    """Rows where the stress has fallen ``threshold`` below its peak (a failure under way)
    and where it has then risen ``threshold`` above its trough (the fault reloading)."""
    triggers: list[int] = []
    reloads: list[int] = []
    failing = False
    extreme = float(stress[0])
    for row, value in enumerate(stress.tolist()):
        if not failing:
            if value > extreme:
                extreme = value
            elif value <= extreme - threshold:
                triggers.append(row)
                failing, extreme = True, value
        elif value < extreme:
            extreme = value
        elif value >= extreme + threshold:
            reloads.append(row)
            failing, extreme = False, value
    return triggers, reloads


def _extremes(raw: np.ndarray, smoothed: np.ndarray, triggers: list[int], reloads: list[int],
              width: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Each failure's start (peak since the previous end) and end (trough before the
    reload; -1 when the series stops before the stress climbs back from it)."""
    starts, ends = [], []
    previous_end = 0
    for number, trigger in enumerate(triggers):
        peak = previous_end + int(np.argmax(smoothed[previous_end:trigger]))
        starts.append(_refine(raw, peak, width, np.argmax, previous_end, trigger))
        reload = reloads[number] if number < len(reloads) else len(smoothed)
        trough = trigger + int(np.argmin(smoothed[trigger:reload]))
        seen = (number < len(reloads)
                or smoothed[trough:].max() - smoothed[trough] >= END_RISE_FRACTION * threshold)
        ends.append(_refine(raw, trough, width, np.argmin, trigger, reload) if seen else -1)
        previous_end = ends[-1]
    return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _refine(raw: np.ndarray, row: int, width: int, pick, low: int, high: int) -> int:
    """The raw series' extreme within one filter width of ``row``, inside ``[low, high)``."""
    if width <= 1:
        return row
    first, last = max(low, row - width // 2), min(high, row + width // 2 + 1)
    return first + int(pick(raw[first:last]))


def _time_to_next(time_s: np.ndarray, rows: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Seconds from each row to the first event at or after it; NaN where none is known."""
    labels = np.full(len(rows), np.nan)
    following = np.searchsorted(events, rows, side="left")
    known = following < len(events)
    labels[known] = time_s[events[following[known]]] - time_s[known]
    return labels


@dataclasses.dataclass(frozen=True)
class LabelledFile:
    """What :func:`label_file` wrote.

    Attributes:
        path: the labelled table.
        rows: its rows.
        time_s: the rows' times.
        failures: the failures found.
        unlabelled_rows: rows without a next failure (after the last start), left empty.
    """

    path: Path
    rows: int
    time_s: np.ndarray
    failures: Failures
    unlabelled_rows: int


def label_file(source: str | os.PathLike, out: str | os.PathLike, *,
               time_column: str = DEFAULT_TIME_COLUMN,
               stress_column: str = DEFAULT_STRESS_COLUMN, min_drop: float | None = None,
               drop_fraction: float = DROP_FRACTION, smooth_s: float = 0.0) -> LabelledFile:
    """Find the failures in a CSV table's stress column and write the table with labels.

    The output holds every input column and row, plus ``TTF_COLUMN`` (seconds to the
    next failure's start) and ``TTE_COLUMN`` (seconds to the next failure's end); both
    are empty where no next failure is known.

    Args:
        source: a CSV table with a header row.
        out: the labelled CSV to write (atomically).
        time_column: the column of times, seconds.
        stress_column: the column of shear stress.
        min_drop, drop_fraction, smooth_s: as :func:`find_failures` takes them.

    Returns:
        The :class:`LabelledFile`.

    Raises:
        LabquakeError: an unreadable table, a missing column, or a series
            :func:`find_failures` refuses.

    Example:
        >>> label_file("rows.csv", "labelled.csv").failures.start_s  # doctest: +SKIP
    """
    table = tables.read_table(source)
    time_s = tables.column(table, time_column, source)
    stress = tables.column(table, stress_column, source)
    failures = find_failures(time_s, stress, min_drop=min_drop, drop_fraction=drop_fraction,
                             smooth_s=smooth_s)
    until_start, until_end = failure_labels(time_s, failures)
    tables.write_table(out, tables.with_columns(table, {TTF_COLUMN: until_start,
                                                        TTE_COLUMN: until_end}))
    return LabelledFile(path=Path(out), rows=len(time_s), time_s=time_s, failures=failures,
                        unlabelled_rows=int(np.isnan(until_start).sum()))
