"""Feature filtering by the two-sample Kolmogorov–Smirnov test, as the LANL winners did.

LANL's test segments come from another stretch of the experiment than ``train.csv``, and
the signal drifts: features whose distribution moved between the two mislead a model
trained on one and scored on the other. A feature is kept only if the two-sample KS test
between its values over the training windows and over the test segments does not reject
equality at ``alpha`` (p-value >= ``alpha``).

Overlapping training windows (hop < window) are not independent samples, which would
make the test reject too easily; only windows that do not overlap (every
``ceil(window / hop)``-th) enter it.

Example:
    >>> rng = np.random.default_rng(0)
    >>> train = np.column_stack([rng.normal(0, 1, 500), rng.normal(0, 1, 500)])
    >>> test = np.column_stack([rng.normal(0, 1, 300), rng.normal(2, 1, 300)])
    >>> select(train, test, ["same", "moved"], alpha=0.01).kept
    ('same',)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.core.errors import LabquakeError

DEFAULT_ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outcome of the KS filter.

    Attributes:
        kept: features whose test did not reject, in their original order.
        dropped: features whose distributions differ at ``alpha``.
        p_values: per feature, the KS test's p-value.
        statistics: per feature, the KS statistic (largest gap between the two CDFs).
        alpha: the significance level.
        n_train: training windows tested.
        n_test: test segments tested.
    """

    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    p_values: dict[str, float]
    statistics: dict[str, float]
    alpha: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the bundle's metadata.

        Example:
            >>> select(np.zeros((3, 1)), np.zeros((3, 1)), ["a"], 0.05).to_dict()["kept"]
            ['a']
        """
        return {"alpha": self.alpha, "n_train_windows": self.n_train,
                "n_test_segments": self.n_test, "kept": list(self.kept),
                "dropped": list(self.dropped), "p_values": self.p_values,
                "statistics": self.statistics}


def check_alpha(alpha: float) -> float:
    """``alpha`` if it is a significance level in (0, 1).

    Example:
        >>> check_alpha(0.05)
        0.05
    """
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise LabquakeError(f"--ks-alpha {alpha} is not between 0 and 1; give e.g. "
                            f"{DEFAULT_ALPHA}")
    return alpha


def independent_rows(n_windows: int, window: int, hop: int) -> slice:
    """The windows, one every ``ceil(window / hop)``, that share no sample.

    Example:
        >>> independent_rows(100, 150_000, 15_000)
        slice(None, None, 10)
    """
    return slice(None, None, max(1, math.ceil(window / hop)))


def select(train_features: np.ndarray, test_features: np.ndarray,
           feature_names: Sequence[str], alpha: float = DEFAULT_ALPHA) -> Selection:
    """Keep the features whose train and test distributions the KS test does not separate.

    Args:
        train_features: (n_train, n_features), independent training windows.
        test_features: (n_test, n_features), the test segments, same columns.
        feature_names: the column names.
        alpha: significance level; a feature with p-value below it is dropped.

    Returns:
        The :class:`Selection`.

    Raises:
        LabquakeError: a side holds no rows, or every feature is dropped.

    Example:
        >>> select(np.arange(10.0)[:, None], np.arange(10.0)[:, None], ["x"]).kept
        ('x',)
    """
    from scipy.stats import ks_2samp

    check_alpha(alpha)
    train_features = np.asarray(train_features, np.float64)
    test_features = np.asarray(test_features, np.float64)
    if len(train_features) == 0 or len(test_features) == 0:
        raise LabquakeError("the KS filter needs training windows and test segments; give a "
                            "--test-segments folder with segments")
    p_values, statistics = {}, {}
    for column, name in enumerate(feature_names):
        result = ks_2samp(train_features[:, column], test_features[:, column])
        p_values[name] = float(result.pvalue)
        statistics[name] = float(result.statistic)
    kept = tuple(name for name in feature_names if p_values[name] >= alpha)
    if not kept:
        raise LabquakeError(f"the KS test separates every feature's training and test "
                            f"distributions at alpha {alpha:g} (largest p-value "
                            f"{max(p_values.values()):.2g}); give a smaller --ks-alpha")
    return Selection(kept=kept,
                     dropped=tuple(name for name in feature_names if name not in kept),
                     p_values=p_values, statistics=statistics, alpha=alpha,
                     n_train=len(train_features), n_test=len(test_features))
