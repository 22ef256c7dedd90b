"""Raw AE records whose variance follows a recorded envelope: real lab cycles as samples.

Labs often keep the AE only as its energy over short windows: a table with one row per
window (e.g. 0.1 s) holding the raw signal's variance, beside the shear stress or a
measured time to failure. This module turns such a table back into a raw record that
``train``, ``evaluate`` and ``replay`` read like any other: each row becomes
``sample_rate * row_seconds`` Gaussian int16 samples with that row's variance (zero
mean), and labels that fall linearly through the row to the row's own label at its last
sample (so a row covers the window that ends at its time). Within a cycle the labels run
on continuously from row to row; across a failure they restart at the next cycle's label.

Labels come from a column of seconds to failure (``time_to_failure``, as ``labquake
label`` writes it, else ``TimeToStartFailure``), or are found from the stress column
(:mod:`model.data.labels`) when the table has neither. Rows with no label (after the
last failure) are left out, from the ends only.

The samples of row ``i`` are drawn from a generator seeded by ``(seed, i)``, ``i`` being
the row's place in the whole table: the same seed gives the same bytes, and a part of
the table (:func:`select_rows`, e.g. its first 70 %) gives exactly the samples that part
has in the whole record.

Example:
    >>> envelope = read_envelope("rows.csv")  # doctest: +SKIP
    >>> first70 = select_rows(envelope, fraction=(0.0, 0.7))  # doctest: +SKIP
    >>> write_record("first70.npz", envelope_blocks(first70, 15_000.0), 15_000.0)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np

from model.data import labels as stress_labels
from model.data import tables
from model.data.label_pace import FAILURE_JUMP_S
from stream.core.errors import LabquakeError

DEFAULT_SAMPLE_RATE = 15_000.0
DEFAULT_VARIANCE_COLUMN = "Var_Ch1"
# Label columns looked for, in order: labquake label's, then a measured one.
LABEL_COLUMNS = (stress_labels.TTF_COLUMN, "TimeToStartFailure")
# Rows rendered per block handed to the writer.
_ROWS_PER_BLOCK = 256
_INT16_MIN, _INT16_MAX = -(1 << 15), (1 << 15) - 1


@dataclasses.dataclass(frozen=True)
class Envelope:
    """Rows of an AE-variance table with their labels.

    Attributes:
        source: the table's path.
        rows: int64 place of each row in the whole table.
        time_s: float64 time of each row.
        variance: float64 AE variance of each row.
        labels: float64 seconds to failure at each row's last sample.
        row_seconds: the table's row spacing (the median step of its times).
        label_origin: where the labels came from (a column, or the stress column).
    """

    source: str
    rows: np.ndarray
    time_s: np.ndarray
    variance: np.ndarray
    labels: np.ndarray
    row_seconds: float
    label_origin: str

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def failures(self) -> int:
        """Failures between the rows: places where the label jumps up."""
        return int((np.diff(self.labels) > FAILURE_JUMP_S).sum())


def read_envelope(path: str | os.PathLike, *,
                  variance_column: str = DEFAULT_VARIANCE_COLUMN,
                  label_column: str | None = None,
                  time_column: str = stress_labels.DEFAULT_TIME_COLUMN,
                  stress_column: str = stress_labels.DEFAULT_STRESS_COLUMN) -> Envelope:
    """Read an AE-variance table and its labels.

    Args:
        path: a CSV table with a header row.
        variance_column: the column of AE variance per row.
        label_column: the column of seconds to failure; default the first of
            ``LABEL_COLUMNS`` the table has, else labels found from ``stress_column``.
        time_column: the column of times, seconds.
        stress_column: the column of shear stress, used when no label column exists.

    Returns:
        The :class:`Envelope`, without the unlabelled rows at its ends.

    Raises:
        LabquakeError: a missing column, a negative or missing variance, missing labels
            inside the table, times that do not increase.
    """
    table = tables.read_table(path)
    time_s = tables.column(table, time_column, path)
    steps = np.diff(time_s)
    if len(time_s) < 2 or not (steps > 0).all():
        raise LabquakeError(f"{path}: the times in {time_column!r} must increase from row to "
                            "row; sort the rows or name the right --time-column")
    variance = tables.column(table, variance_column, path)
    bad = np.flatnonzero(~(variance >= 0))
    if len(bad):
        raise LabquakeError(f"{path}: {variance_column!r} at row {bad[0] + 1} is "
                            f"{variance[bad[0]]}, not a variance; fix or remove that row")
    found = label_column or next((name for name in LABEL_COLUMNS
                                  if name in table.column_names), None)
    if found is not None:
        until, origin = tables.column(table, found, path), f"column {found}"
    elif stress_column in table.column_names:
        failures = stress_labels.find_failures(time_s, tables.column(table, stress_column, path))
        until, origin = (stress_labels.failure_labels(time_s, failures)[0],
                         f"stress column {stress_column}")
    else:
        raise LabquakeError(f"{path} has no label column ({', '.join(LABEL_COLUMNS)}) and no "
                            f"stress column {stress_column!r}; name one with --label-column "
                            "or --stress-column")
    labelled = np.flatnonzero(np.isfinite(until))
    if len(labelled) == 0:
        raise LabquakeError(f"{path}: no row has a label ({origin}); the table holds no "
                            "complete cycle")
    first, stop = int(labelled[0]), int(labelled[-1]) + 1
    if len(labelled) != stop - first:
        row = first + int(np.flatnonzero(~np.isfinite(until[first:stop]))[0])
        raise LabquakeError(f"{path}: row {row + 1} has no label ({origin}) between labelled "
                            "rows; fill it or cut the table there")
    if (until[first:stop] < 0).any():
        raise LabquakeError(f"{path}: {origin} holds negative times to failure; check the "
                            "label column")
    return Envelope(source=str(path), rows=np.arange(first, stop), time_s=time_s[first:stop],
                    variance=variance[first:stop], labels=until[first:stop],
                    row_seconds=float(np.median(steps)), label_origin=origin)


def select_rows(envelope: Envelope, *, fraction: tuple[float, float] | None = None,
                time_range: tuple[float, float] | None = None) -> Envelope:
    """A chronological part of the rows: a fraction of them, or a span of times.

    ``fraction=(a, b)`` keeps rows ``floor(a n)`` to ``floor(b n)``, so ``(0, 0.7)`` and
    ``(0.7, 1)`` split the table into two parts that share no row. ``time_range=(t0, t1)``
    keeps rows with ``t0 <= time < t1``. Both given: the fraction of the time range.

    Raises:
        LabquakeError: a fraction outside ``0 <= a < b <= 1``, an empty range, or a
            part without rows.

    Example:
        >>> select_rows(envelope, fraction=(0.7, 1.0))  # doctest: +SKIP
    """
    keep = np.arange(len(envelope))
    if time_range is not None:
        low, high = time_range
        if not low < high:
            raise LabquakeError(f"time range {low:g}:{high:g} is empty; give START:END with "
                                "START < END")
        keep = keep[(envelope.time_s >= low) & (envelope.time_s < high)]
    if fraction is not None:
        low, high = fraction
        if not 0.0 <= low < high <= 1.0:
            raise LabquakeError(f"fraction {low:g}:{high:g} must satisfy 0 <= START < END <= 1, "
                                "e.g. 0:0.7 for the first 70 %")
        keep = keep[math.floor(low * len(keep)):math.floor(high * len(keep))]
    if len(keep) == 0:
        raise LabquakeError(f"{envelope.source}: no rows in the part asked for; widen it")
    return dataclasses.replace(envelope, rows=envelope.rows[keep],
                               time_s=envelope.time_s[keep],
                               variance=envelope.variance[keep], labels=envelope.labels[keep])


def samples_per_row(envelope: Envelope, sample_rate: float) -> int:
    """Samples a row becomes at ``sample_rate``: the row's spacing in samples.

    Raises:
        LabquakeError: a rate that gives a row fewer than two samples.
    """
    count = round(sample_rate * envelope.row_seconds)
    if not (math.isfinite(sample_rate) and count >= 2):
        raise LabquakeError(f"sample rate {sample_rate:g} Hz gives rows of "
                            f"{envelope.row_seconds:g} s fewer than 2 samples; raise it")
    return count


def envelope_blocks(envelope: Envelope, sample_rate: float = DEFAULT_SAMPLE_RATE,
                    seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The record's samples and labels, a few hundred rows at a time.

    Args:
        envelope: the rows to render.
        sample_rate: samples per second of the record.
        seed: the same seed gives the same samples.

    Returns:
        An iterator of ``(acoustic_data int16, time_to_failure float64)`` pairs, as
        :func:`model.data.records.write_record` takes them.

    Raises:
        LabquakeError: a negative seed or too low a rate.
    """
    if seed < 0:
        raise LabquakeError(f"seed {seed} is negative; give a whole number >= 0")
    per_row = samples_per_row(envelope, sample_rate)
    falls = _label_falls(envelope.labels, per_row / sample_rate)
    steps_to_end = np.arange(per_row - 1, -1, -1, dtype=np.float64)
    for first in range(0, len(envelope), _ROWS_PER_BLOCK):
        rows = range(first, min(first + _ROWS_PER_BLOCK, len(envelope)))
        acoustic = np.concatenate([
            _row_samples(int(envelope.rows[row]), envelope.variance[row], per_row, seed)
            for row in rows])
        until = np.concatenate([envelope.labels[row] + steps_to_end * falls[row] / per_row
                                for row in rows])
        yield acoustic, until


def _label_falls(until: np.ndarray, row_seconds: float) -> np.ndarray:
    """How far the label falls through each row: from the previous row's label to its
    own, or one row's duration after a failure and at the first row."""
    falls = np.full(len(until), row_seconds)
    previous = until[:-1] - until[1:]
    within_cycle = previous > 0
    falls[1:][within_cycle] = previous[within_cycle]
    return falls


def _row_samples(row: int, variance: float, count: int, seed: int) -> np.ndarray:
    generator = np.random.default_rng([seed, row])
    values = np.rint(generator.normal(0.0, math.sqrt(variance), count))
    return np.clip(values, _INT16_MIN, _INT16_MAX).astype(np.int16)
