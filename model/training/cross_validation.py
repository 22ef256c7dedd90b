"""Cross-validation grouped by earthquake cycle: how well the recipe generalises to new cycles.

Windows of one cycle are strongly alike, so a random K-fold split puts near-copies of the
validation windows in training and flatters the model. Here the cycles that end in a
failure are dealt, in a random order drawn from the seed, into ``K`` folds; each fold in
turn is held out whole (:func:`model.training.fit.split_on_cycles`: a window touching a held-out
and a training cycle is dropped) while the network is trained on the rest, with early
stopping on the held-out fold, as the winners of the LANL competition validated. The
mean absolute error of each fold, and of the constant training-median baseline on it,
is reported; the bundle that ``labquake train --folds K`` saves is still the one trained
on its usual split, with the fold results stored in its metrics.

Example:
    >>> for result in cross_validate([windows], 5, seed=0, epochs=40, batch_size=256,
    ...                              patience=8):  # doctest: +SKIP
    ...     print(result.fold, result.mae)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.core.errors import LabquakeError

if TYPE_CHECKING:
    from model.training.dataset import RecordWindows

MIN_FOLDS = 2


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """One fold's outcome.

    Attributes:
        fold: 1-based fold number.
        validation_cycles: ``(record index, cycle)`` pairs held out.
        n_train: training windows.
        n_validation: held-out windows.
        mae: mean absolute error of the predicted time to failure on the held-out windows.
        baseline_mae: MAE of the training windows' median TTF on them.
        best_epoch: the epoch whose weights were kept (1-based).
        epochs_run: epochs trained before early stopping.
    """

    fold: int
    validation_cycles: tuple[tuple[int, int], ...]
    n_train: int
    n_validation: int
    mae: float
    baseline_mae: float
    best_epoch: int
    epochs_run: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the bundle's metrics."""
        fields = dataclasses.asdict(self)
        fields["validation_cycles"] = [list(pair) for pair in self.validation_cycles]
        return fields


def check_folds(folds: int, available: int | None = None) -> None:
    """Refuse a fold count below ``MIN_FOLDS`` or above the cycles there are to deal.

    Args:
        folds: the fold count asked for.
        available: cycles that end in a failure, if known yet.

    Example:
        >>> check_folds(5, 16)
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < MIN_FOLDS:
        raise LabquakeError(f"--folds {folds!r} is below {MIN_FOLDS}; give e.g. --folds 5")
    if available is not None and folds > available:
        raise LabquakeError(f"--folds {folds} exceeds the {available} earthquake cycles that "
                            f"end in a failure; give --folds {available} or fewer")


def cycle_folds(records: Sequence[RecordWindows], folds: int,
                seed: int) -> list[list[tuple[int, int]]]:
    """Deal the cycles that end in a failure into ``folds`` groups, in a seeded order.

    Args:
        records: the windows of each record.
        folds: number of folds.
        seed: draws the order.

    Returns:
        Per fold, its ``(record index, cycle)`` pairs, sorted; every such cycle is in
        exactly one fold and fold sizes differ by one at most.

    Raises:
        LabquakeError: too few cycles for ``folds``.

    Example:
        >>> [len(fold) for fold in cycle_folds([windows], 3, seed=0)]  # doctest: +SKIP
        [6, 5, 5]
    """
    from model.training.fit import failure_cycles

    candidates = failure_cycles(records)
    check_folds(folds, len(candidates))
    order = np.random.default_rng(seed).permutation(len(candidates))
    return [sorted(candidates[int(index)] for index in order[fold::folds])
            for fold in range(folds)]


def cross_validate(records: Sequence[RecordWindows], folds: int, *, seed: int, epochs: int,
                   batch_size: int, patience: int) -> Iterator[FoldResult]:
    """Train and score the network once per fold, holding that fold's cycles out.

    Args:
        records: the windows of each record.
        folds: number of folds.
        seed: deals the folds and seeds each fold's training.
        epochs: most epochs per fold.
        batch_size: windows per gradient step.
        patience: early-stopping patience on the held-out fold.

    Returns:
        An iterator of :class:`FoldResult`, one per fold as it finishes.

    Example:
        >>> maes = [result.mae for result in cross_validate(
        ...     [windows], 5, seed=0, epochs=40, batch_size=256, patience=8)]  # doctest: +SKIP
    """
    import keras

    from model.evaluation.evaluate import mean_absolute_error
    from model.training.fit import fit, network_inputs, network_prediction, split_on_cycles

    for number, held_out in enumerate(cycle_folds(records, folds, seed), start=1):
        split = split_on_cycles(records, held_out)
        model, mean, std, history = fit(split, epochs=epochs, batch_size=batch_size,
                                        patience=patience, seed=seed)
        true = np.concatenate([part.ttf_s for part in split.validation])
        predicted = np.concatenate([
            network_prediction(model, network_inputs(part.features, mean, std)).ttf_s
            for part in split.validation])
        median = float(np.median(np.concatenate([part.ttf_s for part in split.train])))
        yield FoldResult(
            fold=number, validation_cycles=tuple(held_out),
            n_train=sum(map(len, split.train)), n_validation=len(true),
            mae=mean_absolute_error(true, predicted),
            baseline_mae=mean_absolute_error(true, np.full_like(true, median)),
            best_epoch=history["best_epoch"], epochs_run=history["epochs_run"])
        # Each fold builds a new network; the old graphs need not stay in memory.
        keras.backend.clear_session()


def summary(results: Sequence[FoldResult]) -> dict[str, Any]:
    """The fold results with their mean and spread, JSON-ready, for the bundle's metrics.

    Example:
        >>> summary(results)["mae_mean"]  # doctest: +SKIP
        2.1
    """
    maes = np.array([result.mae for result in results])
    return {"folds": len(results), "mae_mean": float(maes.mean()),
            "mae_std": float(maes.std()),
            "baseline_mae_mean": float(np.mean([result.baseline_mae for result in results])),
            "per_fold": [result.to_dict() for result in results]}
