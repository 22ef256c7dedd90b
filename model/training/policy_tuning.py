"""Tuning that prefers calm alerts, the countdown interval's calibration, and retuning a
bundle's alert policy without training its network again.

The search scores each alert policy by the F1 of two rates an operator feels: *recall*
(failures warned within the horizon) and *first-raise precision* (warned failures over
all raises), so a raise that is not the first for its failure costs what a false alarm
costs. Ties go to the longer median lead time, then to the higher raise threshold and
the longer run (fewer raises). The interval is then calibrated (split conformal,
:class:`stream.core.countdown.CountdownInterval`) on other records, with the chosen policy.

Example:
    labquake train --retune model/bundled/default.lqb --simulate 300 \\
        --retune-seeds 5101 5102 5103 5104 --calibration-seeds 5105 5106 5107 5108 \\
        --out model/bundled/default.lqb
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.bundle.inference import Bundle, Prediction
    from model.evaluation.evaluate import AlertQuality, PolicyRuns
    from model.training.dataset import RecordWindows
    from stream.core.alert_policy import AlertPolicyConfig
    from stream.core.countdown import CountdownInterval

THRESHOLD_STEP = 0.01
LOWEST_THRESHOLD = 0.01
QUICK_CONSECUTIVE = (1, 2, 3, 4, 5, 6)
# The full search (retuning, and train --tune-policy after the last epoch).
FULL_CONSECUTIVE = (1, 2, 3)
CLEAR_RATIOS = (0.3, 0.6)
WITHDRAW_AFTER_S = (0.5, 1.0)
REFRACTORY_S = (1.0, 2.0)
UPDATE_STEP_S = 0.25
"""An operator reads a countdown to a quarter second; smaller moves are noise."""


def calm_score(quality: AlertQuality) -> float:
    """F1 of recall and first-raise precision (0 when either is undefined or zero).

    Example:
        >>> from model.evaluation.evaluate import AlertQuality
        >>> calm_score(AlertQuality(n_failures=10, n_detected=9, n_raises=12, n_true_raises=11))
        0.8181818181818182
    """
    if not quality.n_failures or not quality.n_raises:
        return 0.0
    recall = quality.n_detected / quality.n_failures
    precision = quality.n_detected / quality.n_raises
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def candidates(highest_p: float, base: AlertPolicyConfig, *, full: bool,
               clear_threshold: float | None = None) -> Iterable[AlertPolicyConfig]:
    """The policies the search tries: raise thresholds on a grid up to ``highest_p``, with
    run lengths and, in the ``full`` search, clear thresholds, withdrawal and refractory
    times; every other setting as in ``base``."""
    steps = math.floor(round(min(highest_p, 1.0) / THRESHOLD_STEP, 6))
    first = math.ceil(round(LOWEST_THRESHOLD / THRESHOLD_STEP, 6))
    thresholds = [round(step * THRESHOLD_STEP, 6) for step in range(first, steps + 1)]
    ratios = CLEAR_RATIOS if full else (base.clear_threshold / base.raise_threshold,)
    grid = itertools.product(thresholds, FULL_CONSECUTIVE if full else QUICK_CONSECUTIVE,
                             ratios, WITHDRAW_AFTER_S if full else (base.withdraw_after_s,),
                             REFRACTORY_S if full else (base.refractory_s,))
    for threshold, consecutive, ratio, withdraw, refractory in grid:
        clear = round(threshold * ratio, 6) if clear_threshold is None else clear_threshold
        if clear > threshold:
            continue
        yield dataclasses.replace(
            base, raise_threshold=threshold, clear_threshold=clear, consecutive=consecutive,
            withdraw_after_s=withdraw, refractory_s=refractory,
            warmup_raise_threshold=None if base.warmup_raise_threshold is None
            else max(base.warmup_raise_threshold, threshold))


def tune_policy(runs: Sequence[PolicyRuns], base: AlertPolicyConfig, highest_p: float, *,
                full: bool = True, clear_threshold: float | None = None) -> AlertPolicyConfig:
    """The calmest policy that warns: the best :func:`calm_score` over :func:`candidates`.

    Args:
        runs: validation records, prepared (:class:`model.evaluation.evaluate.PolicyRuns`).
        base: the settings not searched (failure rules, update step, warm-up, interval).
        highest_p: the highest predicted P(failure): thresholds above it raise nothing.
        full: search withdrawal, refractory times and clear thresholds too.
        clear_threshold: a fixed clear threshold instead of the searched ratios.

    Returns:
        The chosen configuration, or ``base`` if no candidate warns of any failure.
    """
    from model.evaluation.evaluate import AlertQuality

    best_key: tuple[float, ...] | None = None
    best = base
    for config in candidates(highest_p, base, full=full, clear_threshold=clear_threshold):
        quality = sum((record.quality(config)[0] for record in runs), AlertQuality())
        score = calm_score(quality)
        if score <= 0:
            continue
        lead = float(np.median(quality.lead_times_s)) if quality.lead_times_s else 0.0
        key = (round(score, 9), round(lead, 9), config.raise_threshold, config.consecutive,
               config.withdraw_after_s, config.refractory_s)
        if best_key is None or key > best_key:
            best_key, best = key, config
    return best


def interval_residuals(runs: Sequence[PolicyRuns], config: AlertPolicyConfig
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per scored failure that came during an episode, the residual ``failure time -
    published failure time`` of the alert in force, and that alert's predicted TTF."""
    from model.evaluation.alert_metrics import alerts_in_force

    residuals, ttfs = [], []
    for record in runs:
        for transitions, scored in zip(record.transitions_by_run(config),
                                       record.scored_failure_times_s, strict=True):
            for failure, alert in alerts_in_force(transitions, scored):
                residuals.append(failure - alert.failure_time)
                ttfs.append(alert.ttf_s)
    return np.asarray(residuals, np.float64), np.asarray(ttfs, np.float64)


def calibrate_interval(runs: Sequence[PolicyRuns], config: AlertPolicyConfig,
                       coverage: float) -> CountdownInterval:
    """The split-conformal interval of ``config``'s countdowns on calibration records.

    Raises:
        LabquakeError: too few failures came during an episode to calibrate on.
    """
    from stream.core.countdown import CountdownInterval
    from stream.core.errors import LabquakeError

    residuals, ttfs = interval_residuals(runs, config)
    try:
        return CountdownInterval.calibrate(residuals, ttfs, coverage)
    except ValueError as error:
        raise LabquakeError(f"cannot calibrate the countdown interval: {error}; give more "
                            "calibration records") from error


def record_predictions(model: Bundle, windows: RecordWindows
                       ) -> tuple[RecordWindows, Prediction]:
    """A record's windows as the model reads them, and its predictions."""
    from model.training import dataset

    if model.context is not None:
        windows = dataset.add_context(windows, model.context)
    windows = windows.with_features(model.feature_names)
    return windows, model.predict_features(windows.features)


@dataclasses.dataclass(frozen=True)
class RetuneResult:
    """What :func:`retune` chose and measured."""

    policy: AlertPolicyConfig
    tuning_metrics: dict[str, Any]
    calibration_metrics: dict[str, Any]


def retune(model: Bundle, tuning: Sequence[RecordWindows], calibration: Sequence[RecordWindows],
           coverage: float, note: Callable[[str], None] = lambda line: None) -> RetuneResult:
    """Choose a bundle's alert policy on ``tuning`` records and calibrate its interval on
    ``calibration`` records; the network is not touched.

    The warm-up lasts the stream context's look-back (the past the model reads).

    Args:
        model: the loaded bundle.
        tuning: records (windows) to choose the policy on.
        calibration: other records to calibrate the interval on.
        coverage: the interval's target coverage, in (0, 1).
        note: takes one line of progress.

    Returns:
        The :class:`RetuneResult`; the metrics are :func:`model.evaluation.evaluate.metrics`'.
    """
    from model.evaluation import evaluate
    from stream.core.alert_policy import AlertPolicyConfig

    warmup_s = 0.0 if model.context is None else model.context.lookback_s
    base = dataclasses.replace(AlertPolicyConfig.from_dict(model.alert_policy),
                               update_step_s=UPDATE_STEP_S, warmup_s=warmup_s,
                               warmup_raise_threshold=None, interval=None)
    tuning_parts = [record_predictions(model, windows) for windows in tuning]
    calibration_parts = [record_predictions(model, windows) for windows in calibration]
    runs = [evaluate.PolicyRuns.of(windows, prediction) for windows, prediction in tuning_parts]
    highest = max(float(np.max(prediction.p_failure, initial=0.0))
                  for _, prediction in tuning_parts)
    note(f"searching alert policies on {len(tuning)} records")
    policy = tune_policy(runs, base, highest, full=True)
    calibration_runs = [evaluate.PolicyRuns.of(windows, prediction)
                        for windows, prediction in calibration_parts]
    policy = dataclasses.replace(policy, interval=calibrate_interval(calibration_runs, policy,
                                                                     coverage))
    median = model.metadata.get("extra", {}).get("training_ttf_median_s")
    return RetuneResult(policy, evaluate.metrics(tuning_parts, policy, median),
                        evaluate.metrics(calibration_parts, policy, median))


def write_policy(source: str | os.PathLike, out: str | os.PathLike, policy: AlertPolicyConfig,
                 provenance: dict[str, Any]) -> Path:
    """Write the bundle at ``source`` to ``out`` (the same path: in place) with a new alert
    policy; the network, its version and everything else stay as they are.

    ``provenance`` goes to the metadata's ``extra.policy_retuned``. The metadata file is
    replaced atomically, stamped with the bundle's hashes.
    """
    import shutil

    from model.bundle.inference import METADATA_FILENAME, write_metadata

    source, out = Path(source), Path(out)
    if out.resolve() != source.resolve():
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(source, out)
    metadata = json.loads((out / METADATA_FILENAME).read_text())
    metadata["alert_policy"] = policy.to_dict()
    metadata.setdefault("extra", {})["policy_retuned"] = provenance
    write_metadata(out, metadata)  # the edited metadata needs its integrity hash anew
    return out


@dataclasses.dataclass(frozen=True)
class RecordSource:
    """One record to retune on: a labelled file, or a simulated record of a seed."""

    path: str | None = None
    seconds: float | None = None
    seed: int | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for the bundle's provenance."""
        if self.path is not None:
            return {"file": Path(self.path).name}
        return {"simulator": {"seconds": self.seconds, "seed": self.seed}}

    def windows(self, model: Bundle, sample_rate: float | None,
                progress: bool) -> RecordWindows:
        """The record's windows cut and measured as the bundle cuts and measures them."""
        from model.training import dataset

        if self.path is None:
            return dataset.simulated_windows(
                self.seconds, seed=self.seed, sample_rate=sample_rate, window=model.window,
                hop=model.hop, feature_names=model.extract_names, progress=progress)
        native_rate = Path(self.path).suffix.lower() == ".npz"
        return dataset.file_windows(self.path, window=model.window, hop=model.hop,
                                    feature_names=model.extract_names,
                                    sample_rate=None if native_rate else sample_rate,
                                    progress=progress)


def retune_command(bundle_path: str, out: str, tuning: Sequence[RecordSource],
                   calibration: Sequence[RecordSource], coverage: float,
                   sample_rate: float | None, as_json: bool, quiet: bool) -> int:
    """``labquake train --retune``: retune a bundle's alert policy, print what it measured.

    Raises:
        LabquakeError: no tuning or calibration record, or a coverage outside (0, 1).
    """
    import sys

    from model.bundle import inference as bundles
    from model.evaluation.alert_metrics import summary_line
    from model.evaluation.evaluate import format_value
    from stream.core.errors import LabquakeError

    if not tuning or not calibration:
        raise LabquakeError("--retune needs tuning records (--data, or --simulate with "
                            "--retune-seeds) and other calibration records "
                            "(--calibration-data or --calibration-seeds)")
    if not 0.0 < coverage < 1.0:
        raise LabquakeError(f"--interval-coverage {coverage} is not between 0 and 1; give "
                            "e.g. 0.8")
    model = bundles.load(bundle_path)
    rate = sample_rate or model.metadata.get("extra", {}).get("sample_rate_hz")

    def note(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr if as_json else sys.stdout, flush=True)

    note(f"reading {len(tuning)} tuning and {len(calibration)} calibration records")
    result = retune(model, [source.windows(model, rate, not quiet) for source in tuning],
                    [source.windows(model, rate, not quiet) for source in calibration],
                    coverage, note)
    provenance = {"tuning_records": [source.describe() for source in tuning],
                  "calibration_records": [source.describe() for source in calibration],
                  "tuning_metrics": result.tuning_metrics,
                  "calibration_metrics": result.calibration_metrics}
    written = write_policy(bundle_path, out, result.policy, provenance)
    if as_json:
        print(json.dumps({"bundle": str(written), "version": model.version,
                          "alert_policy": result.policy.to_dict(), **provenance},
                         allow_nan=False))
    elif not quiet:
        policy = result.policy
        print(f"retuned {written} (network {model.version} unchanged): raise "
              f"{policy.raise_threshold:g}, clear {policy.clear_threshold:g}, "
              f"{policy.consecutive} in a row, withdraw after {policy.withdraw_after_s:g} s, "
              f"refractory {policy.refractory_s:g} s, warm-up {policy.warmup_s:g} s")
        for name, metrics in (("tuning", result.tuning_metrics),
                              ("calibration", result.calibration_metrics)):
            print(f"{name} records: recall {format_value(metrics['alert_recall'])}, "
                  f"precision {format_value(metrics['alert_precision'])}; "
                  f"{summary_line(metrics, format_value)}")
    return 0
