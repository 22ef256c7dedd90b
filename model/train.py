"""The ``labquake train`` verb: train the seed network on labelled records, save a bundle.

The flow, each step a function below:

1. windows and targets of each record (:mod:`model.dataset`: cut as the monitor cuts
   them, features extracted in batches, the raw samples never kept);
2. a validation split by whole earthquake cycles (:func:`split_by_cycles`): validation
   cycles are drawn from the seed among the cycles that end in a failure; a window goes to
   validation only if it lies entirely within validation cycles, to training only if
   entirely within training cycles, and a window that straddles the two is dropped, so no
   validation window shares a sample with a training window;
3. features standardised with the training windows' mean and standard deviation
   (:func:`model.bundle.fit_scaler`);
4. the network of :func:`model.network.build_model`, fitted on the three targets (time to
   failure; time since failure, masked where unknown; TTF below the failure horizon) with
   early stopping on the validation alerts' F1 (``--stop-on alerts``, the default) or the
   validation loss (``--stop-on loss``), the best epoch's weights kept;
5. metrics on the validation windows (:func:`model.evaluate.metrics`), saved with the
   alert policy settings and a fingerprint of the training data into the bundle.

Reproducibility: ``--seed`` seeds Python, NumPy and the backend (``keras.utils.
set_random_seed``: weight initialisation and the epoch shuffles) and picks the validation
cycles; on the TensorFlow backend its op determinism is switched on (for the whole
process), so a run repeated on the same machine
with the same library versions gives the same weights. Another CPU type or thread count
may change the last bits of float sums and so, slightly, the weights.

Output: progress bars and Keras's per-epoch lines on stderr, a one-line summary on
stdout; ``--json`` prints one JSON object on stdout instead (:func:`training_report`), the
KS-filter and cross-validation lines then going to stderr; ``--quiet`` drops the bars, the
epoch lines, those lines and the summary, and logs below WARNING.

Example:
    labquake train --simulate 1200 --out model/bundled/default.lqb
    labquake train --data train.csv --out lanl.lqb --epochs 40
    labquake train --data train.csv --out lanl.lqb --quiet --json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Light (NumPy only): '--help' stays fast.
from model.ks_filter import DEFAULT_ALPHA
from stream.errors import LabquakeError

if TYPE_CHECKING:
    import keras

    from model.bundle import Bundle, Prediction
    from model.dataset import RecordWindows
    from model.ks_filter import Selection
    from stream.alert_policy import AlertPolicyConfig

VERB = "train"
# Defaults are literals here so that '--help' imports nothing heavy; the window default is
# stream.windows.WINDOW_SAMPLES (a unit test checks it).
DEFAULT_WINDOW = 150_000
DEFAULT_EPOCHS = 80
# Large batches: the fixed learning rate (0.008, SEED_MODEL.md) makes small ones noisy.
DEFAULT_BATCH_SIZE = 256
DEFAULT_SEED = 0
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_PATIENCE = 15
# What early stopping watches: the validation alerts' F1 (the failure classifier, which
# the monitor publishes, learns for longer than the TTF head, whose weight 8 rules the
# loss), or the validation loss.
STOP_ON = ("alerts", "loss")
DEFAULT_STOP_ON = "alerts"
# Validation needs at least one cycle and training at least one: two that end in failures.
MIN_SPLIT_CYCLES = 2
# --tune-policy tries raise thresholds on this grid (up to the highest validation
# P(failure)) and these run lengths; the clear threshold keeps the default's ratio to it.
TUNE_THRESHOLD_STEP = 0.01
TUNE_CONSECUTIVE = (1, 2, 3, 4, 5, 6)


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
    """Standardise features as :class:`model.bundle.Bundle` does and shape them for the net.

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
        ) -> tuple[keras.Model, np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit the seed network on the training windows, stopping early on validation.

    Args:
        split: the training and validation windows.
        epochs: at most this many passes over the training windows.
        batch_size: windows per gradient step.
        patience: epochs without a better validation score before stopping.
        seed: seeds weights and shuffles.
        stop_on: ``"loss"``: the score is the validation loss; ``"alerts"``: the F1 of
            the validation alerts' recall and precision (``model.evaluate``), ties going
            to the lower validation loss. The weights of the best epoch are kept.
        policy: with ``"alerts"``, the alert policy the alerts are made with; None
            tunes one on the validation windows after every epoch (``tune_policy``).

    Returns:
        ``(model, scaler_mean, scaler_std, history)`` with the best epoch's weights;
        ``history`` holds ``epochs_run``, ``best_epoch`` (1-based), ``stop_on`` and per
        epoch ``loss``, ``val_loss`` and, with ``"alerts"``, ``val_alert_f1``.
    """
    if stop_on not in STOP_ON:
        raise ValueError(f"stop_on must be one of {STOP_ON}, got {stop_on!r}")
    import keras

    from model import bundle
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
    if stop_on == "loss":
        stopper: keras.callbacks.Callback = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True)
    else:
        stopper = _alert_stopping(split.validation, mean, std, patience, policy)
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
                    patience: int, policy: AlertPolicyConfig | None) -> keras.callbacks.Callback:
    """The early-stopping callback of ``fit(stop_on="alerts")`` (made here: Keras is
    imported only when training)."""
    import keras

    class AlertStopping(keras.callbacks.Callback):
        """Early stopping on the validation alerts' F1; keeps the best epoch's weights."""

        def __init__(self, validation: Sequence[RecordWindows], mean: np.ndarray,
                     std: np.ndarray, patience: int, policy: AlertPolicyConfig | None):
            super().__init__()
            self._inputs = [(part, network_inputs(part.features, mean, std))
                            for part in validation]
            self._patience, self._policy = patience, policy
            self.scores: list[float] = []
            self.best_epoch = 0
            self._best: tuple[float, float] | None = None
            self._weights: list[np.ndarray] | None = None

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            from model.evaluate import metrics

            parts = [(part, network_prediction(self.model, inputs))
                     for part, inputs in self._inputs]
            policy = self._policy if self._policy is not None else tune_policy(parts)
            score = _alert_f1(metrics(parts, policy, None))
            self.scores.append(round(score, 6))
            key = (score, -float((logs or {}).get("val_loss", 0.0)))
            if self._best is None or key > self._best:
                self._best, self.best_epoch = key, epoch + 1
                self._weights = self.model.get_weights()
            elif epoch + 1 - self.best_epoch >= self._patience:
                self.model.stop_training = True

        def on_train_end(self, logs: Mapping[str, float] | None = None) -> None:
            if self._weights is not None:
                self.model.set_weights(self._weights)

    return AlertStopping(validation, mean, std, patience, policy)


def tune_policy(parts: Sequence[tuple[RecordWindows, Prediction]],
                clear_threshold: float | None = None) -> AlertPolicyConfig:
    """The alert policy whose alerts best announce the failures of validation windows.

    Tries every raise threshold on a ``TUNE_THRESHOLD_STEP`` grid up to the highest
    predicted P(failure), with each run length in ``TUNE_CONSECUTIVE``, and keeps the one
    with the best F1 score of alert recall and precision (``model.evaluate``'s
    definitions); ties go to the higher threshold, then the longer run (fewer raises).
    If no setting warns of any failure, the default configuration is kept.

    Args:
        parts: validation windows of each record and the model's predictions for them.
        clear_threshold: a fixed clear threshold; default: the default configuration's
            ratio of clear to raise threshold.

    Returns:
        The chosen configuration (other settings at their defaults).

    Example:
        >>> tune_policy([(validation, prediction)]).raise_threshold  # doctest: +SKIP
        0.14
    """
    from model.evaluate import AlertQuality, PolicyRuns
    from stream.alert_policy import AlertPolicyConfig

    runs = [PolicyRuns.of(windows, prediction) for windows, prediction in parts]

    default = AlertPolicyConfig()
    highest = max(float(np.max(prediction.p_failure, initial=0.0)) for _, prediction in parts)
    # Rounded first so that a highest value on the grid counts as reached.
    steps = math.floor(round(min(highest, 1.0) / TUNE_THRESHOLD_STEP, 6))
    best = (0.0, 0.0, 0)
    best_config = default
    for step in range(1, steps + 1):
        threshold = round(step * TUNE_THRESHOLD_STEP, 6)
        clear = (round(threshold * default.clear_threshold / default.raise_threshold, 6)
                 if clear_threshold is None else clear_threshold)
        if clear > threshold:
            continue
        for consecutive in TUNE_CONSECUTIVE:
            config = AlertPolicyConfig(raise_threshold=threshold, clear_threshold=clear,
                                       consecutive=consecutive)
            quality = sum((record.quality(config)[0] for record in runs), AlertQuality())
            recall = 0.0 if math.isnan(quality.recall) else quality.recall
            precision = 0.0 if math.isnan(quality.precision) else quality.precision
            score = (2 * recall * precision / (recall + precision) if recall + precision
                     else 0.0)
            key = (score, threshold, consecutive)
            if score > 0 and key > best:
                best, best_config = key, config
    return best_config


def fingerprint(description: Any) -> str:
    """``"sha256:<hex>"`` of a JSON-ready description of the training data.

    Example:
        >>> fingerprint({"simulator": {"seconds": 60.0, "seed": 0}})[:7]
        'sha256:'
    """
    text = json.dumps(description, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def files_description(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Each training file's name and size in bytes (what the fingerprint of files hashes).

    Example:
        >>> files_description(["train.csv"])  # doctest: +SKIP
        [{'name': 'train.csv', 'bytes': 9000000000}]
    """
    return [{"name": Path(path).name, "bytes": Path(path).stat().st_size} for path in paths]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` verb and its flags.

    Args:
        subparsers: the ``labquake`` command's sub-parsers.

    Returns:
        The verb's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        VERB, help="train the model on labelled records and save a model bundle",
        description="Train the seed network (SEED_MODEL.md) on labelled acoustic records "
                    "(LANL CSV, .zip, .npz; real LANL train.csv at full size included) or on "
                    "a simulated record streamed from the simulator, validate on whole "
                    "earthquake cycles, and save a model bundle with its metrics, alert "
                    "policy and training-data fingerprint.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", metavar="PATH",
                        help="labelled records: LANL .csv, .zip holding one, or .npz")
    source.add_argument("--simulate", type=float, metavar="SECONDS",
                        help="train on a simulated record of this length, streamed from the "
                             "simulator (no file)")
    parser.add_argument("--sim-seed", type=int, default=0, metavar="N",
                        help="simulator seed for --simulate (default 0)")
    parser.add_argument("--sample-rate", type=float, metavar="HZ",
                        help="samples per second of CSV records or of --simulate "
                             "(default 4e6, as LANL); an .npz carries its own")
    parser.add_argument("--out", required=True, metavar="BUNDLE",
                        help="the model bundle to write, conventionally NAME.lqb")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                        help=f"samples per window (default {DEFAULT_WINDOW:,})")
    parser.add_argument("--hop", type=int, metavar="N",
                        help="samples between window starts (default: the window)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, metavar="N",
                        help=f"most passes over the training windows (default {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"windows per gradient step (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="N",
                        help="seeds the weights, the shuffles and the validation cycles "
                             f"(default {DEFAULT_SEED})")
    parser.add_argument("--validation-fraction", type=float,
                        default=DEFAULT_VALIDATION_FRACTION, metavar="F",
                        help="share of the earthquake cycles held out for validation "
                             f"(default {DEFAULT_VALIDATION_FRACTION})")
    parser.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, metavar="N",
                        help="stop after this many epochs without a better validation score "
                             f"(see --stop-on) (default {DEFAULT_PATIENCE})")
    parser.add_argument("--stop-on", choices=STOP_ON, default=DEFAULT_STOP_ON,
                        help="what early stopping watches: the F1 of the validation alerts' "
                             "recall and precision, ties to the lower loss (alerts), or the "
                             f"validation loss (loss) (default {DEFAULT_STOP_ON})")
    parser.add_argument("--raise-threshold", type=float, metavar="P",
                        help="alert policy: P(failure) at or above which windows count "
                             "towards a raise (default 0.5)")
    parser.add_argument("--clear-threshold", type=float, metavar="P",
                        help="alert policy: P(failure) below which windows count towards a "
                             "clear (default 0.3)")
    parser.add_argument("--consecutive", type=int, metavar="N",
                        help="alert policy: windows in a row needed to raise or clear "
                             "(default 2)")
    parser.add_argument("--tune-policy", action="store_true",
                        help="choose the raise threshold and run length that best announce "
                             "the validation cycles' failures (F1 of alert recall and "
                             "precision); excludes --raise-threshold and --consecutive")
    parser.add_argument("--test-segments", metavar="DIR",
                        help="a folder of test segments (seg_*.csv, LANL's test/): keep only "
                             "the features whose two-sample KS test between training windows "
                             "and these segments does not reject at --ks-alpha")
    parser.add_argument("--ks-alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                        help="significance level of the KS feature filter; a feature with a "
                             f"lower p-value is dropped (default {DEFAULT_ALPHA})")
    parser.add_argument("--no-context", action="store_true",
                        help="read each window alone, without the stream-context features "
                             "(model/context.py: the window against its stream's last "
                             "seconds); needed for independent test segments")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="first cross-validate: K folds of whole earthquake cycles, each "
                             "held out in turn; prints and stores each fold's MAE")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout instead of the summary line: "
                             "bundle, version, n_train_windows, n_validation_windows, "
                             "validation_cycles, epochs_run, best_epoch, validation (the "
                             "bundle's validation metrics), alert_policy, policy_tuned, "
                             "cross_validation (with --folds), elapsed_s; the KS-filter and "
                             "fold lines go to stderr")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, no per-epoch, KS-filter, fold or summary "
                             "lines, logs at WARNING and above only (-v still logs debug "
                             "details); errors still print")
    add_cache_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the record cache, the feature cache and the worker processes (also used by
    ``labquake evaluate``).

    Example:
        >>> add_cache_arguments(argparse.ArgumentParser())
    """
    parser.add_argument("--cache", metavar="DIR",
                        help="record cache root: CSV/.zip/.npz records are converted there "
                             "once (raw int16 samples, float32 labels) and read from there "
                             "after (default $LABQUAKE_CACHE_DIR/records, i.e. "
                             "~/.cache/labquake/records, for files of 256 MiB or more)")
    parser.add_argument("--no-cache", action="store_true",
                        help="parse the record files every time; no record or feature cache")
    parser.add_argument("--feature-cache", metavar="DIR",
                        help="where window features are saved as they are computed, so a run "
                             "that stops resumes (default: inside the record cache)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes extracting features of cached records and test "
                             "segments (default: the number of cores)")


def check_cache_arguments(args: argparse.Namespace) -> None:
    """Refuse cache flags that contradict each other or the data source.

    Example:
        >>> check_cache_arguments(argparse.Namespace(no_cache=False, cache=None,
        ...                                          feature_cache=None, workers=None))
    """
    from model.parallel import check_workers

    check_workers(args.workers)
    given = [flag for flag, value in (("--cache", args.cache),
                                      ("--feature-cache", args.feature_cache)) if value]
    if args.no_cache and given:
        raise LabquakeError(f"--no-cache contradicts {' and '.join(given)}; drop one or the "
                            "other")
    if getattr(args, "simulate", None) is not None and given:
        raise LabquakeError(f"{' and '.join(given)} apply to --data files; a --simulate "
                            "record is streamed from the simulator")


def cached_windows_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`model.dataset.file_windows` from the cache flags.

    Example:
        >>> cached_windows_options(args)["use_cache"]  # doctest: +SKIP
        True
    """
    from model.parallel import check_workers

    return {"use_cache": not args.no_cache, "cache_root": args.cache,
            "convert_any_size": bool(args.cache or args.feature_cache),
            "feature_cache": args.feature_cache, "workers": check_workers(args.workers)}


def run(args: argparse.Namespace) -> int:
    """Train, validate and save the bundle; print a one-line summary, or one JSON object.

    Args:
        args: parsed flags of :func:`add_parser`.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    started = time.monotonic()
    config = _policy_config(args)
    _check_arguments(args)
    records, description = _read_training_data(args)
    rates = {record.sample_rate for record in records}
    if len(rates) > 1:
        raise LabquakeError(f"the records have different sample rates {sorted(rates)}; "
                            "train on records of one rate")
    context = None
    if not args.no_context:
        from model.context import ContextConfig
        from model.dataset import add_context

        context = ContextConfig()
        records = [add_context(record, context) for record in records]
    selection = None
    if args.test_segments:
        selection = _ks_filter(records, args)
        records = [record.with_features(selection.kept) for record in records]
    with _keras_progress(shown=not args.quiet):
        folds = _cross_validate(records, args) if args.folds is not None else None
        split = split_by_cycles(records, args.validation_fraction, args.seed)
        model, mean, std, history = fit(split, epochs=args.epochs,
                                        batch_size=args.batch_size, patience=args.patience,
                                        seed=args.seed, stop_on=args.stop_on,
                                        policy=None if args.tune_policy else config)
    from model import bundle, evaluate

    training_median = float(np.median(np.concatenate([part.ttf_s for part in split.train])))
    validation = [(part, network_prediction(model, network_inputs(part.features, mean, std)))
                  for part in split.validation]
    if args.tune_policy:
        config = tune_policy(validation, args.clear_threshold)
    result = evaluate.metrics(validation, config, training_median)
    n_train = sum(map(len, split.train))
    elapsed = time.monotonic() - started
    saved = bundle.save(
        args.out, model, feature_names=records[0].feature_names, window=records[0].window,
        hop=records[0].hop, scaler_mean=mean, scaler_std=std,
        training_fingerprint=fingerprint(description),
        metrics={"validation": result} | ({"cross_validation": folds} if folds else {}),
        alert_policy=config.to_dict(), context=context,
        extra={
            "training_ttf_median_s": training_median,
            "sample_rate_hz": records[0].sample_rate,
            "training_data": description,
            "seed": args.seed,
            "validation_fraction": args.validation_fraction,
            "validation_cycles": [list(pair) for pair in split.validation_cycles],
            "policy_tuned_on_validation": bool(args.tune_policy),
            "n_train_windows": n_train,
            "n_validation_windows": result["n_windows"],
            "epochs": args.epochs, "batch_size": args.batch_size, "patience": args.patience,
            "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
            "stop_on": args.stop_on, "val_loss": history["val_loss"],
            **({"val_alert_f1": history["val_alert_f1"]} if "val_alert_f1" in history else {}),
            "training_seconds": round(elapsed, 1),
        } | ({"ks_filter": selection.to_dict()} if selection else {}))
    if args.json:
        print(json.dumps(training_report(saved, elapsed), allow_nan=False))
        return 0
    if args.quiet:
        return 0
    tuned = (f"; policy tuned: raise {config.raise_threshold:g}, clear "
             f"{config.clear_threshold:g}, {config.consecutive} in a row"
             if args.tune_policy else "")
    if not result["n_detected"] and not args.tune_policy:
        tuned = "; no validation failure was warned: try --tune-policy"
    value = evaluate.format_value
    print(f"trained {saved.path} (version {saved.version}) on {n_train:,} windows in "
          f"{elapsed:.0f} s, best epoch {history['best_epoch']}/{history['epochs_run']}; "
          f"validation on {_count(len(split.validation_cycles), 'cycle')} "
          f"({result['n_windows']:,} windows): MAE {value(result['mae'])} s (baseline "
          f"{value(result['baseline_mae'])} s), R² {value(result['r2'])}, alert recall "
          f"{value(result['alert_recall'])}, precision {value(result['alert_precision'])}"
          f"{tuned}")
    return 0


def training_report(saved: Bundle, elapsed_s: float) -> dict[str, Any]:
    """What ``labquake train --json`` prints, read from the saved bundle's metadata.

    Args:
        saved: the bundle :func:`model.bundle.save` wrote.
        elapsed_s: wall time of the training.

    Returns:
        A JSON-ready dict: ``bundle`` (path), ``version``, ``n_train_windows``,
        ``n_validation_windows``, ``validation_cycles`` (count), ``epochs_run``,
        ``best_epoch``, ``validation`` (the metrics of :func:`model.evaluate.metrics`,
        ``None`` where undefined), ``alert_policy``, ``policy_tuned``, ``elapsed_s``, and
        ``cross_validation`` when the bundle holds one.

    Example:
        >>> training_report(bundle.load("lab.lqb"), 12.5)["validation"]["mae"]  # doctest: +SKIP
        1.62
    """
    extra = saved.metadata["extra"]
    metrics = saved.metrics
    report = {"bundle": str(saved.path), "version": saved.version,
              "n_train_windows": extra["n_train_windows"],
              "n_validation_windows": extra["n_validation_windows"],
              "validation_cycles": len(extra["validation_cycles"]),
              "epochs_run": extra["epochs_run"], "best_epoch": extra["best_epoch"],
              "validation": metrics["validation"], "alert_policy": saved.alert_policy,
              "policy_tuned": extra["policy_tuned_on_validation"],
              "elapsed_s": round(elapsed_s, 3)}
    if "cross_validation" in metrics:
        report["cross_validation"] = metrics["cross_validation"]
    return report


@contextlib.contextmanager
def _keras_progress(shown: bool) -> Iterator[None]:
    """Keras's per-epoch lines as they are, or, not ``shown``, dropped.

    Keras writes them to ``sys.stdout``, which :func:`fit` points at ``sys.stderr``; not
    shown, ``sys.stderr`` is the null device while the network trains (the folds of
    cross-validation too: a Keras switch would not do, their ``clear_session`` resets it).
    Logging keeps its own handle on the real stderr, and Python warnings go to logging
    meanwhile, so warnings and errors still show.
    """
    if shown:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)


def _note(args: argparse.Namespace, line: str) -> None:
    """A line about the work under way: on stdout, on stderr with ``--json`` (stdout then
    holds the JSON object alone), nowhere with ``--quiet``."""
    if not args.quiet:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)


def _policy_config(args: argparse.Namespace) -> AlertPolicyConfig:
    from stream.alert_policy import AlertPolicyConfig

    fixed = [flag for flag, value in (("--raise-threshold", args.raise_threshold),
                                      ("--consecutive", args.consecutive)) if value is not None]
    if args.tune_policy and fixed:
        raise LabquakeError(f"--tune-policy chooses {' and '.join(fixed)} itself; drop one "
                            "or the other")
    given = {name: getattr(args, name) for name in ("raise_threshold", "clear_threshold",
                                                    "consecutive")
             if getattr(args, name) is not None}
    if args.tune_policy:
        # Checked against each tried raise threshold instead.
        given.pop("clear_threshold", None)
    return AlertPolicyConfig.from_dict(given)


def _check_arguments(args: argparse.Namespace) -> None:
    from model.dataset import check_window

    check_window(args.window, args.window if args.hop is None else args.hop)
    for flag, value, least in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                               ("--patience", args.patience, 0)):
        if value < least:
            raise LabquakeError(f"{flag} {value} is below {least}; give {flag} >= {least}")
    if not 0.0 < args.validation_fraction < 1.0:
        raise LabquakeError(f"--validation-fraction {args.validation_fraction} is not between 0 "
                            f"and 1; give e.g. {DEFAULT_VALIDATION_FRACTION}")
    if args.simulate is not None and not (math.isfinite(args.simulate) and args.simulate > 0):
        raise LabquakeError(f"--simulate {args.simulate} is not a positive length in seconds; "
                            "give e.g. 600")
    for path in args.data or ():
        if not Path(path).is_file():
            raise LabquakeError(f"--data {path}: no such file; check the path")
    check_cache_arguments(args)
    if args.test_segments:
        from model.ks_filter import check_alpha
        from model.segments import segment_files

        check_alpha(args.ks_alpha)
        segment_files(args.test_segments)
        if not args.no_context:
            raise LabquakeError("--test-segments are independent windows without a stream's "
                                "past, so the model must read each window alone: add "
                                "--no-context")
    if args.folds is not None:
        from model.cross_validation import check_folds

        check_folds(args.folds)
    from model.bundle import METADATA_FILENAME

    out = Path(args.out)
    # Checked now, not only when saving: training may take many minutes.
    if out.exists() and not (out / METADATA_FILENAME).is_file():
        raise LabquakeError(f"--out {out} exists and is not a model bundle; give a new "
                            "NAME.lqb path (an existing bundle is replaced)")


def _read_training_data(args: argparse.Namespace) -> tuple[list[RecordWindows], Any]:
    from model import dataset

    if args.simulate is not None:
        from model import simulate

        rate = args.sample_rate or simulate.DEFAULT_SAMPLE_RATE
        record = dataset.simulated_windows(args.simulate, seed=args.sim_seed, sample_rate=rate,
                                           window=args.window, hop=args.hop,
                                           progress=not args.quiet)
        return [record], {"simulator": {"seconds": args.simulate, "seed": args.sim_seed,
                                        "sample_rate_hz": rate}}
    records = [dataset.file_windows(path, window=args.window, hop=args.hop,
                                    sample_rate=args.sample_rate, progress=not args.quiet,
                                    **cached_windows_options(args)) for path in args.data]
    return records, {"files": files_description(args.data)}


def _ks_filter(records: Sequence[RecordWindows], args: argparse.Namespace) -> Selection:
    """Select features by the KS test against the test segments; note what was dropped."""
    from model import ks_filter, segments
    from model.parallel import check_workers

    names = records[0].feature_names
    files = segments.segment_files(args.test_segments)
    test_features = segments.segment_features(files, window=records[0].window,
                                              feature_names=names,
                                              workers=check_workers(args.workers),
                                              progress=not args.quiet)
    train_features = np.concatenate([
        record.features[ks_filter.independent_rows(len(record), record.window, record.hop)]
        for record in records])
    selection = ks_filter.select(train_features, test_features, names, args.ks_alpha)
    dropped = ", ".join(selection.dropped) or "none"
    _note(args, f"KS filter (alpha {selection.alpha:g}, {selection.n_train:,} training "
                f"windows, {selection.n_test:,} test segments): kept {len(selection.kept)} of "
                f"{len(names)} features; dropped: {dropped}")
    return selection


def _cross_validate(records: Sequence[RecordWindows], args: argparse.Namespace
                    ) -> dict[str, Any]:
    """Cross-validate by cycles, noting each fold's MAE as it finishes."""
    from model import cross_validation
    from model.evaluate import format_value

    results = []
    for result in cross_validation.cross_validate(
            records, args.folds, seed=args.seed, epochs=args.epochs,
            batch_size=args.batch_size, patience=args.patience):
        results.append(result)
        _note(args, f"fold {result.fold}/{args.folds}: "
                    f"{_count(len(result.validation_cycles), 'cycle')} held out "
                    f"({result.n_validation:,} windows, {result.n_train:,} training): MAE "
                    f"{format_value(result.mae)} s (baseline "
                    f"{format_value(result.baseline_mae)} s), best epoch "
                    f"{result.best_epoch}/{result.epochs_run}")
    summary = cross_validation.summary(results)
    _note(args, f"cross-validation over {args.folds} folds: MAE "
                f"{format_value(summary['mae_mean'])} ± {format_value(summary['mae_std'])} s "
                f"(baseline {format_value(summary['baseline_mae_mean'])} s)")
    return summary


def network_prediction(model: keras.Model, inputs: np.ndarray) -> Prediction:
    """The network's three outputs for already standardised inputs (n, 1, n_features).

    Example:
        >>> network_prediction(model, network_inputs(features, mean, std)).ttf_s  # doctest: +SKIP
    """
    from model.bundle import Prediction

    if len(inputs) == 0:
        empty = np.zeros(0, np.float32)
        return Prediction(empty, empty, empty)
    outputs = model.predict(inputs, batch_size=1024, verbose=0)
    return Prediction(*(np.asarray(output, np.float32).reshape(-1) for output in outputs))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"
