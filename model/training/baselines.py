"""Simple models fitted beside the network, so a user sees whether the network earns its keep.

``labquake train`` fits them on the same training windows and scores them on the same
validation windows as the network, and prints them beside it:

- ``median``: the training windows' median time to failure, whatever the window;
- ``knn``: a k-nearest-neighbour regressor (scikit-learn) on the window's four
  AE-level features (``KNN_FEATURES``), standardised;
- ``lgbm``: gradient-boosted trees (LightGBM) on every feature of the window itself
  (``model.features``; no stream context).

:func:`fit_boosted` is also the fast model that ranks stream contexts
(:mod:`model.training.selection`) and, on the model's full inputs, the trees of the blend
(:mod:`model.bundle.blend`).

Example:
    >>> rows = baseline_scores(split.train, split.validation)  # doctest: +SKIP
    >>> rows["knn"]["mae"]  # doctest: +SKIP
    1.13
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.features.context import DEFAULT_BASES

if TYPE_CHECKING:
    import lightgbm

    from model.training.dataset import RecordWindows

# The window's AE level four ways: what the context is built on.
KNN_FEATURES: tuple[str, ...] = DEFAULT_BASES
KNN_NEIGHBOURS = 25
# Small trees, shrunk and subsampled: a rig gives a few thousand windows of a few dozen
# cycles, and windows of one cycle are near-copies of each other. 150 trees: the blend's
# trees then cost 0.55 ms a batch of 64 windows (about 4 µs a tree), the network 0.9 ms.
BOOSTED_TREES = 150
BOOSTED_PARAMETERS: dict[str, Any] = {
    "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20, "subsample": 0.8,
    "subsample_freq": 1, "colsample_bytree": 0.8, "n_jobs": 1, "verbose": -1}
BASELINES = ("median", "knn", "lgbm")


def stacked(parts: Sequence[RecordWindows]) -> tuple[np.ndarray, np.ndarray]:
    """The features and times to failure of several parts, one table.

    Example:
        >>> x, y = stacked(split.train)  # doctest: +SKIP
    """
    return (np.concatenate([part.features for part in parts]).astype(np.float32),
            np.concatenate([part.ttf_s for part in parts]))


def fit_boosted(parts: Sequence[RecordWindows], *, seed: int) -> lightgbm.LGBMRegressor:
    """Gradient-boosted trees of the time to failure on every feature column of ``parts``.

    Fitted on the absolute error, the metric reported.

    Args:
        parts: training windows.
        seed: seeds the subsampling.

    Returns:
        The fitted LightGBM regressor (scikit-learn interface).

    Example:
        >>> fit_boosted(split.train, seed=0).predict(features)  # doctest: +SKIP
    """
    import lightgbm

    model = lightgbm.LGBMRegressor(n_estimators=BOOSTED_TREES, objective="l1",
                                   random_state=seed, **BOOSTED_PARAMETERS)
    model.fit(*stacked(parts))
    return model


def baseline_scores(train: Sequence[RecordWindows], validation: Sequence[RecordWindows],
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """MAE and R² of each baseline on the validation windows, fitted on the training ones.

    Args:
        train: training windows (their features must include ``KNN_FEATURES``).
        validation: validation windows.
        seed: seeds the boosted trees.

    Returns:
        Per baseline (``BASELINES``), ``{"mae": ..., "r2": ...}``.
    """
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from model.evaluation.evaluate import mean_absolute_error, r_squared
    from model.features.context import ContextConfig

    context_names = set(ContextConfig().names)
    own = [name for name in train[0].feature_names if name not in context_names]
    true = np.concatenate([part.ttf_s for part in validation])
    median = float(np.median(np.concatenate([part.ttf_s for part in train])))
    predictions = {"median": np.full_like(true, median)}
    knn = make_pipeline(StandardScaler(), KNeighborsRegressor(KNN_NEIGHBOURS))
    knn.fit(*stacked([part.with_features(KNN_FEATURES) for part in train]))
    predictions["knn"] = knn.predict(
        stacked([part.with_features(KNN_FEATURES) for part in validation])[0])
    boosted = fit_boosted([part.with_features(own) for part in train], seed=seed)
    predictions["lgbm"] = boosted.predict(
        stacked([part.with_features(own) for part in validation])[0])
    return {name: {"mae": mean_absolute_error(true, predicted),
                   "r2": r_squared(true, predicted)}
            for name, predicted in predictions.items()}
