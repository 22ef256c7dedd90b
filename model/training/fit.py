"""The fit of the seed network: validation splits by earthquake cycle, the targets, early
stopping on the validation alerts, and the alert policy tuned on validation windows.

``labquake train`` and the cross-validation both build on these functions.

Example:
    >>> network_inputs(np.array([[1.0, 5.0]]), np.array([0.0, 5.0]), np.array([2.0, 0.0]))
    array([[[0.5, 0. ]]], dtype=float32)
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.core.errors import LabquakeError

if TYPE_CHECKING:
    import keras

    from model.bundle.inference import Prediction
    from model.training.dataset import RecordWindows
    from stream.core.alert_policy import AlertPolicyConfig

# What early stopping watches: the validation alerts' F1 (the failure classifier, which
# the monitor publishes, learns for longer than the TTF head, whose weight 8 rules the
# loss), or the validation loss.
STOP_ON = ("alerts", "loss")
# Validation needs at least one cycle and training at least one: two that end in failures.
MIN_SPLIT_CYCLES = 2



@dataclasses.dataclass(frozen=True)
class Split:
    """Training and validation windows of each record.

    Attributes:
        train: per record, the windows entirely within training cycles.
        validation: per record, the windows entirely within validation cycles.
        validation_cycles: ``(record index, cycle)`` of each validation cycle.
    """

    train: list[RecordWindows]
    validation: list[RecordWindows]
    validation_cycles: list[tuple[int, int]]


def split_by_cycles(records: Sequence[RecordWindows], validation_fraction: float,
                    seed: int) -> Split:
    """Split windows into training and validation by whole earthquake cycles.

    About ``validation_fraction`` of the cycles that end in a failure (at least one, and
    never all) are drawn, from ``seed``, for validation. A window whose cycles are all
    validation cycles is a validation window; one whose cycles are all training cycles is a
    training window; a window that touches both is dropped.

    Args:
        records: the windows of each record.
        validation_fraction: share of the cycles to validate on, in (0, 1).
        seed: picks the validation cycles.

    Returns:
        The :class:`Split`.

    Raises:
        ValueError: ``validation_fraction`` is not in (0, 1).
        LabquakeError: fewer than ``MIN_SPLIT_CYCLES`` cycles end in a failure, or one
            side of the split holds no window.

    Example:
        >>> split = split_by_cycles([windows], 0.2, seed=0)  # doctest: +SKIP
        >>> sum(map(len, split.train)) > sum(map(len, split.validation))  # doctest: +SKIP
        True
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    candidates = failure_cycles(records)
    count = min(len(candidates) - 1, max(1, round(validation_fraction * len(candidates))))
    chosen = np.random.default_rng(seed).choice(len(candidates), size=count, replace=False)
    return split_on_cycles(records, sorted(candidates[int(pick)] for pick in chosen))


def failure_cycles(records: Sequence[RecordWindows]) -> list[tuple[int, int]]:
    """``(record index, cycle)`` of every cycle that ends in a failure: those that can
    be held out (each then has a failure for the alert metrics).

    Raises:
        LabquakeError: fewer than ``MIN_SPLIT_CYCLES`` such cycles.

    Example:
        >>> failure_cycles([windows])[:2]  # doctest: +SKIP
        [(0, 0), (0, 1)]
    """
    candidates = [(index, cycle) for index, record in enumerate(records)
                  for cycle in range(len(record.failure_samples))]
    if len(candidates) < MIN_SPLIT_CYCLES:
        raise LabquakeError(
            f"the training data holds {len(candidates)} failure(s); a validation split by "
            f"earthquake cycles needs at least {MIN_SPLIT_CYCLES}: give a longer record "
            "(e.g. --simulate 120) or more --data files")
    return candidates


def split_on_cycles(records: Sequence[RecordWindows],
                    validation_cycles: Sequence[tuple[int, int]]) -> Split:
    """Split windows into training and validation given the validation cycles.

    A window whose cycles are all validation cycles is a validation window; one whose
    cycles are all training cycles is a training window; a window touching both is
    dropped.

    Args:
        records: the windows of each record.
        validation_cycles: ``(record index, cycle)`` pairs held out.

    Returns:
        The :class:`Split`.

    Raises:
        LabquakeError: one side of the split holds no window.

    Example:
        >>> split = split_on_cycles([windows], [(0, 2)])  # doctest: +SKIP
    """
    validation_cycles = sorted(validation_cycles)
    train, validation = [], []
    for index, record in enumerate(records):
        is_validation = np.zeros(record.n_cycles, bool)
        is_validation[[cycle for owner, cycle in validation_cycles if owner == index]] = True
        # Validation cycles among each window's cycles [cycle, last_cycle], by prefix sums.
        prefix = np.concatenate([[0], np.cumsum(is_validation)])
        in_validation = prefix[record.last_cycle + 1] - prefix[record.cycle]
        touched = record.last_cycle - record.cycle + 1
        train.append(record.select(in_validation == 0))
        validation.append(record.select(in_validation == touched))
    for side, parts in (("training", train), ("validation", validation)):
        if not sum(map(len, parts)):
            raise LabquakeError(f"no {side} window lies inside whole {side} cycles; give "
                                "longer records or a shorter --window")
    return Split(train, validation, validation_cycles)


def network_inputs(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardise features as :class:`model.bundle.inference.Bundle` does; shape them for the net.

    Args:
        features: (n, n_features).
        mean: per-feature mean.
        std: per-feature standard deviation; a zero std only centres its feature.

    Returns:
        float32 (n, 1, n_features).

    Example:
        >>> network_inputs(np.array([[1.0, 5.0]]), np.array([0.0, 5.0]), np.array([2.0, 0.0]))
        array([[[0.5, 0. ]]], dtype=float32)
    """
    scale = np.where(std > 0, std, 1.0)
    scaled = ((np.asarray(features, np.float64) - mean) / scale).astype(np.float32)
    return scaled.reshape(len(scaled), 1, -1)


def targets(parts: Sequence[RecordWindows]) -> tuple[dict[str, np.ndarray],
                                                      dict[str, np.ndarray]]:
    """The network's targets and per-output sample weights, keyed by output name.

    Time since failure is unknown before a record's first failure: those windows get TSF
    target 0 with weight 0, so they do not count in its loss.

    Args:
        parts: windows of one or more records.

    Returns:
        ``(targets, sample_weights)``, each a dict of float32 arrays keyed by
        ``model.network.OUTPUT_NAMES``.

    Example:
        >>> y, weights = targets([windows])  # doctest: +SKIP
    """
    from model.network import FAILURE_OUTPUT, TSF_OUTPUT, TTF_OUTPUT

    ttf = np.concatenate([part.ttf_s for part in parts]).astype(np.float32)
    tsf = np.concatenate([part.tsf_s for part in parts])
    soon = np.concatenate([part.failure_soon for part in parts]).astype(np.float32)
    known = np.isfinite(tsf)
    y = {TTF_OUTPUT: ttf, TSF_OUTPUT: np.where(known, tsf, 0.0).astype(np.float32),
         FAILURE_OUTPUT: soon}
    ones = np.ones_like(ttf)
    weights = {TTF_OUTPUT: ones, TSF_OUTPUT: known.astype(np.float32), FAILURE_OUTPUT: ones}
    return y, weights


def fit(split: Split, *, epochs: int, batch_size: int, patience: int,
        seed: int, stop_on: str = "loss", policy: AlertPolicyConfig | None = None,
        average_epochs: int = 1, initial: keras.Model | None = None,
        ) -> tuple[keras.Model, np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit the seed network on the training windows, stopping early on validation.

    Args:
        split: the training and validation windows.
        epochs: at most this many passes over the training windows.
        batch_size: windows per gradient step.
        patience: epochs without a better validation score before stopping.
        seed: seeds weights and shuffles.
        stop_on: ``"loss"``: the score is the validation loss; ``"alerts"``: the F1 of
            the validation alerts' recall and precision (``model.evaluation.evaluate``), ties going
            to the lower validation loss. The weights of the best epoch are kept.
        policy: with ``"alerts"``, the alert policy the alerts are made with; None
            tunes one on the validation windows after every epoch (``tune_policy``).
        average_epochs: with ``"alerts"``, the weights kept are the mean of those of
            the this many best-scoring epochs (checkpoint averaging: at the fixed
            learning rate the weights wander between epochs, and their mean is steadier
            than any one of them); 1 keeps the best epoch's.
        initial: a trained network of the same inputs to start from (fine-tuning);
            None starts from random weights.

    Returns:
        ``(model, scaler_mean, scaler_std, history)`` with the best epoch's weights;
        ``history`` holds ``epochs_run``, ``best_epoch`` (1-based), ``stop_on`` and per
        epoch ``loss``, ``val_loss`` and, with ``"alerts"``, ``val_alert_f1``.
    """
    if stop_on not in STOP_ON:
        raise ValueError(f"stop_on must be one of {STOP_ON}, got {stop_on!r}")
    import keras

    from model.bundle import inference as bundle
    from model.network import build_model

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        # Imported here: a JAX deployment has no TensorFlow installed.
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    train_features = np.concatenate([part.features for part in split.train])
    mean, std = bundle.fit_scaler(train_features)
    x = network_inputs(train_features, mean, std)
    y, weights = targets(split.train)
    validation_x = network_inputs(
        np.concatenate([part.features for part in split.validation]), mean, std)
    validation_y, validation_weights = targets(split.validation)
    model = build_model(train_features.shape[1])
    if initial is not None:
        model.set_weights(initial.get_weights())
    if stop_on == "loss":
        stopper: keras.callbacks.Callback = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True)
    else:
        stopper = _alert_stopping(split.validation, mean, std, patience, policy,
                                  average_epochs)
    # Keras matches a dict of targets to outputs by name but resolves sample weights by
    # position, so both go as lists in the model's output order.
    def ordered(values: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [values[name] for name in model.output_names]

    # Keras prints its one line per epoch on stdout; stdout is kept for the summary.
    with contextlib.redirect_stdout(sys.stderr):
        history = model.fit(x, ordered(y), sample_weight=ordered(weights),
                            validation_data=(validation_x, ordered(validation_y),
                                             ordered(validation_weights)),
                            epochs=epochs, batch_size=batch_size, shuffle=True,
                            callbacks=[stopper], verbose=2)
    losses = history.history["val_loss"]
    best_epoch = (int(np.argmin(losses)) + 1 if stop_on == "loss"
                  else stopper.best_epoch)  # type: ignore[attr-defined]
    summary = {"epochs_run": len(losses), "best_epoch": best_epoch, "stop_on": stop_on,
               "loss": [float(v) for v in history.history["loss"]],
               "val_loss": [float(v) for v in losses]}
    if stop_on == "alerts":
        summary["val_alert_f1"] = stopper.scores  # type: ignore[attr-defined]
    return model, mean, std, summary


def _alert_f1(quality: Mapping[str, Any]) -> float:
    recall, precision = quality["alert_recall"] or 0.0, quality["alert_precision"] or 0.0
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def _alert_stopping(validation: Sequence[RecordWindows], mean: np.ndarray, std: np.ndarray,
                    patience: int, policy: AlertPolicyConfig | None,
                    average_epochs: int = 1) -> keras.callbacks.Callback:
    """The early-stopping callback of ``fit(stop_on="alerts")`` (made here: Keras is
    imported only when training)."""
    import keras

    class AlertStopping(keras.callbacks.Callback):
        """Early stopping on the validation alerts' F1; keeps the mean weights of the
        ``average_epochs`` best epochs."""

        def __init__(self, validation: Sequence[RecordWindows], mean: np.ndarray,
                     std: np.ndarray, patience: int, policy: AlertPolicyConfig | None,
                     average_epochs: int):
            super().__init__()
            self._inputs = [(part, network_inputs(part.features, mean, std))
                            for part in validation]
            self._patience, self._policy = patience, policy
            self.scores: list[float] = []
            self.best_epoch = 0
            self._best: tuple[float, float] | None = None
            self._average = max(1, average_epochs)
            self._kept: list[tuple[tuple[float, float], list[np.ndarray]]] = []

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            from model.evaluation.evaluate import metrics

            parts = [(part, network_prediction(self.model, inputs))
                     for part, inputs in self._inputs]
            policy = self._policy if self._policy is not None else tune_policy(parts)
            score = _alert_f1(metrics(parts, policy, None))
            self.scores.append(round(score, 6))
            key = (score, -float((logs or {}).get("val_loss", 0.0)))
            self._kept.append((key, self.model.get_weights()))
            self._kept.sort(key=lambda kept: kept[0], reverse=True)
            del self._kept[self._average:]
            if self._best is None or key > self._best:
                self._best, self.best_epoch = key, epoch + 1
            elif epoch + 1 - self.best_epoch >= self._patience:
                self.model.stop_training = True

        def on_train_end(self, logs: Mapping[str, float] | None = None) -> None:
            if self._kept:
                self.model.set_weights([np.mean(layer, axis=0) for layer in
                                        zip(*(weights for _, weights in self._kept),
                                            strict=True)])

    return AlertStopping(validation, mean, std, patience, policy, average_epochs)


def tune_policy(parts: Sequence[tuple[RecordWindows, Prediction]],
                clear_threshold: float | None = None, *, full: bool = False,
                warmup_s: float = 0.0) -> AlertPolicyConfig:
    """The alert policy whose alerts announce the validation failures most calmly.

    Scores every raise (:func:`model.training.policy_tuning.calm_score`: a second raise
    for one failure costs like a false alarm) over the raise thresholds and run lengths
    of :func:`model.training.policy_tuning.candidates`, up to the highest P(failure);
    ``full`` also searches clear thresholds, withdrawal and refractory times. If no
    setting warns of any failure, the default configuration is kept.

    Args:
        parts: validation windows of each record and the model's predictions for them.
        clear_threshold: a fixed clear threshold; default: the default configuration's
            ratio of clear to raise threshold (``full``: the searched ratios).
        full: search the episode settings too (slower: once, after training).
        warmup_s: the warm-up of the policies tried (the context's look-back).

    Returns:
        The chosen configuration.

    Example:
        >>> tune_policy([(validation, prediction)]).raise_threshold  # doctest: +SKIP
        0.14
    """
    from model.evaluation.evaluate import PolicyRuns
    from model.training.policy_tuning import tune_policy as calm_search
    from stream.core.alert_policy import AlertPolicyConfig

    runs = [PolicyRuns.of(windows, prediction) for windows, prediction in parts]
    highest = max(float(np.max(prediction.p_failure, initial=0.0)) for _, prediction in parts)
    base = dataclasses.replace(AlertPolicyConfig(), warmup_s=warmup_s)
    return calm_search(runs, base, highest, full=full, clear_threshold=clear_threshold)


def network_prediction(model: keras.Model, inputs: np.ndarray) -> Prediction:
    """The network's three outputs for already standardised inputs (n, 1, n_features).

    Example:
        >>> network_prediction(model, network_inputs(features, mean, std)).ttf_s  # doctest: +SKIP
    """
    from model.bundle.inference import Prediction

    if len(inputs) == 0:
        empty = np.zeros(0, np.float32)
        return Prediction(empty, empty, empty)
    outputs = model.predict(inputs, batch_size=1024, verbose=0)
    return Prediction(*(np.asarray(output, np.float32).reshape(-1) for output in outputs))
