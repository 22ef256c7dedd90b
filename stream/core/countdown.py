"""The interval around an alert's predicted failure time, calibrated by split conformal.

An alert's countdown is the predicted failure time ``window_end_time + ttf_s`` on the
instrument clock. How far the true failure falls from it was measured on validation
records the network never trained on: for each failure an alert announced, the residual
``true failure time - predicted failure time`` of the alert in force when the failure
came. The residuals are grouped by the alert's predicted TTF (a Mondrian split: a countdown
of 1.2 s errs more than one of 0.2 s), and each group's interval runs from its
``k_lo``-th to its ``k_hi``-th smallest residual with ``k_lo = floor((n + 1) * alpha / 2)``
and ``k_hi = ceil((n + 1) * (1 - alpha / 2))`` (``alpha = 1 - coverage``): split conformal
prediction, which covers at least ``coverage`` of new failures whose residuals are
exchangeable with the calibration ones, and not much more.

Example:
    >>> interval = CountdownInterval.calibrate([0.0] * 8 + [0.1, -0.1], [0.5] * 10, 0.8)
    >>> interval.bounds(0.5)
    (-0.1, 0.1)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream.core.errors import LabquakeError

DEFAULT_COVERAGE = 0.8
MIN_PER_BIN = 40
"""Fewest calibration failures per predicted-TTF bin; fewer make the quantiles jumpy."""
MAX_BINS = 3


@dataclasses.dataclass(frozen=True)
class CountdownInterval:
    """Residual quantiles per predicted-TTF bin; stored in the bundle's alert policy.

    Args:
        coverage: the share of failures the interval is made to cover, in (0, 1).
        ttf_edges_s: inner edges of the predicted-TTF bins, ascending (empty: one bin).
        lower_s: per bin, the lower residual bound (true minus predicted failure time).
        upper_s: per bin, the upper residual bound.
        n_calibration: per bin, the failures it was calibrated on.

    Raises:
        LabquakeError: inconsistent or out-of-range values.
    """

    coverage: float
    ttf_edges_s: tuple[float, ...]
    lower_s: tuple[float, ...]
    upper_s: tuple[float, ...]
    n_calibration: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0.0 < float(self.coverage) < 1.0:
            raise LabquakeError(f"countdown interval coverage must be in (0, 1), got "
                                f"{self.coverage!r}")
        bins = len(self.ttf_edges_s) + 1
        if not len(self.lower_s) == len(self.upper_s) == len(self.n_calibration) == bins:
            raise LabquakeError(f"countdown interval: {bins} bins need {bins} lower_s, "
                                "upper_s and n_calibration values each")
        if list(self.ttf_edges_s) != sorted(self.ttf_edges_s):
            raise LabquakeError("countdown interval ttf_edges_s must ascend")
        for low, high in zip(self.lower_s, self.upper_s, strict=True):
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise LabquakeError(f"countdown interval bounds ({low}, {high}) must be "
                                    "finite, lower first")

    def bounds(self, ttf_s: float) -> tuple[float, float]:
        """The residual bounds for a countdown of ``ttf_s`` seconds."""
        index = int(np.searchsorted(self.ttf_edges_s, ttf_s, side="right"))
        return self.lower_s[index], self.upper_s[index]

    def to_dict(self) -> dict[str, Any]:
        """The interval as a JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return {field.name: (list(value) if isinstance(value, tuple) else value)
                for field in dataclasses.fields(self)
                for value in [getattr(self, field.name)]}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CountdownInterval:
        """The interval from :meth:`to_dict`'s form.

        Raises:
            LabquakeError: a key is missing or unknown, or a value is out of range.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        if set(values) != names:
            raise LabquakeError(f"countdown interval needs exactly the keys {sorted(names)}, "
                                f"got {sorted(values)}")
        try:
            return cls(coverage=float(values["coverage"]),
                       ttf_edges_s=tuple(map(float, values["ttf_edges_s"])),
                       lower_s=tuple(map(float, values["lower_s"])),
                       upper_s=tuple(map(float, values["upper_s"])),
                       n_calibration=tuple(map(int, values["n_calibration"])))
        except (TypeError, ValueError) as error:
            raise LabquakeError(f"countdown interval: {error}") from error

    @classmethod
    def calibrate(cls, residuals_s: Sequence[float], predicted_ttf_s: Sequence[float],
                  coverage: float = DEFAULT_COVERAGE) -> CountdownInterval:
        """Split-conformal bounds from calibration residuals, binned by predicted TTF.

        Bins split the calibration failures at predicted-TTF quantiles into as many equal
        groups (at most ``MAX_BINS``) as keep ``MIN_PER_BIN`` failures in each.

        Args:
            residuals_s: per calibration failure, true minus predicted failure time.
            predicted_ttf_s: per calibration failure, the alert's predicted TTF.
            coverage: the share to cover.

        Raises:
            ValueError: fewer than ``2 / (1 - coverage)`` residuals, or lengths differ.
        """
        residuals = np.asarray(residuals_s, np.float64)
        ttf = np.asarray(predicted_ttf_s, np.float64)
        alpha = 1.0 - coverage
        # Rounded: 2 / 0.2 is 10.000000000000002 in floating point.
        fewest = math.ceil(round(2.0 / alpha, 9))
        if residuals.shape != ttf.shape or residuals.size < fewest:
            raise ValueError(f"need at least {fewest} residuals and one TTF each, got "
                             f"{residuals.size} and {ttf.size}")
        n_bins = max(1, min(MAX_BINS, residuals.size // MIN_PER_BIN))
        edges = tuple(float(edge) for edge in
                      np.quantile(ttf, np.arange(1, n_bins) / n_bins)) if n_bins > 1 else ()
        index = np.searchsorted(edges, ttf, side="right")
        lower, upper, counts = [], [], []
        for bin_index in range(n_bins):
            chosen = np.sort(residuals[index == bin_index])
            n = chosen.size
            low_rank = max(1, math.floor((n + 1) * alpha / 2))
            high_rank = min(n, math.ceil((n + 1) * (1 - alpha / 2)))
            lower.append(round(float(chosen[low_rank - 1]), 4))
            upper.append(round(float(chosen[high_rank - 1]), 4))
            counts.append(int(n))
        return cls(float(coverage), tuple(round(edge, 4) for edge in edges), tuple(lower),
                   tuple(upper), tuple(counts))
