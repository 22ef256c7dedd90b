"""The ``labquake evaluate`` verb, and the metrics it and ``labquake train`` report.

A model bundle is run over a labelled record (a file, or a simulated record streamed from
the simulator) with the bundle's own window and hop. Reported:

- time to failure: mean absolute error (MAE, seconds), the coefficient of determination
  R², and the MAE of the constant baseline that always answers the training data's median
  TTF (stored in the bundle);
- alerts: the predictions go, in window order, through :class:`stream.core.alert_policy.
  AlertPolicy` with the bundle's configuration (rounded as the streaming pipeline rounds
  them, so these are the alerts ``labquake replay`` would emit). With the horizon
  ``ALERT_HORIZON_S`` = 1.5 s: *recall* is the fraction of failures with an alert raised
  in the 1.5 s before them (raise time in ``[failure - 1.5 s, failure)``), counting the
  failures with at least 1.5 s of observed record before them; *precision* is the fraction
  of raises followed by a failure within 1.5 s; the *lead time* of a warned failure is
  the failure time minus its earliest raise in that interval;
- calm alerts (:mod:`model.evaluation.alert_metrics`): raises per failure, false alarms
  and withdrawn alerts per hour, missed failures, lead time p10/p50/p90, and how often
  the countdown's interval held the failure.

Output: progress bars on stderr and the metrics as lines on stdout; ``--json`` prints them
as one JSON object on stdout instead; ``--quiet`` drops the bars, the lines and logs below
WARNING.

Example:
    labquake evaluate --model model/bundled/default.lqb --simulate 300 --sim-seed 1001
    labquake evaluate --model run.lqb --data train.csv --plot ttf.png --json --quiet
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.data.records import atomic_output
from model.training.cache_arguments import (
    add_cache_arguments,
    cached_windows_options,
    check_cache_arguments,
)

if TYPE_CHECKING:
    from model.bundle.inference import Prediction
    from model.training.dataset import RecordWindows
    from stream.core.alert_policy import AlertPolicyConfig, AlertTransition

VERB = "evaluate"
ALERT_HORIZON_S = 1.5
"""An alert counts as a warning of a failure if raised at most this long before it."""
DEFAULT_SIM_SEED = 1001
PLOT_DPI = 150
PLOT_SIZE_INCHES = (11.0, 6.5)


@dataclasses.dataclass(frozen=True)
class AlertQuality:
    """How well alerts announced failures; add two to pool separate stretches of record.

    Attributes:
        n_failures: failures scored for recall.
        n_detected: of those, failures with a raise in the horizon before them.
        n_raises: alerts raised.
        n_true_raises: raises followed by a failure within the horizon.
        lead_times_s: failure time minus earliest raise, for each detected failure.
        n_withdrawn: episodes withdrawn (P(failure) dropped).
        n_updated: updated alerts (the countdown moved).
        n_covered: scored failures inside the interval of the alert in force.
        n_with_interval: scored failures that came while an alert with an interval was in
            force.
        observed_s: seconds of record watched.
    """

    n_failures: int = 0
    n_detected: int = 0
    n_raises: int = 0
    n_true_raises: int = 0
    lead_times_s: tuple[float, ...] = ()
    n_withdrawn: int = 0
    n_updated: int = 0
    n_covered: int = 0
    n_with_interval: int = 0
    observed_s: float = 0.0

    @property
    def recall(self) -> float:
        """Detected over scored failures; NaN when no failure was scored."""
        return self.n_detected / self.n_failures if self.n_failures else math.nan

    @property
    def precision(self) -> float:
        """True raises over raises; NaN when nothing was raised."""
        return self.n_true_raises / self.n_raises if self.n_raises else math.nan

    def __add__(self, other: AlertQuality) -> AlertQuality:
        return AlertQuality(*(getattr(self, field.name) + getattr(other, field.name)
                              for field in dataclasses.fields(AlertQuality)))


def mean_absolute_error(true: Sequence[float] | np.ndarray,
                        predicted: Sequence[float] | np.ndarray) -> float:
    """Mean of ``|true - predicted|``.

    Example:
        >>> mean_absolute_error([1.0, 2.0, 4.0], [2.0, 2.0, 1.0])
        1.3333333333333333
    """
    true, predicted = _pair(true, predicted)
    return float(np.mean(np.abs(true - predicted)))


def r_squared(true: Sequence[float] | np.ndarray,
              predicted: Sequence[float] | np.ndarray) -> float:
    """Coefficient of determination, ``1 - SS_residual / SS_total``; NaN for constant truth.

    Example:
        >>> r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
        0.5
    """
    true, predicted = _pair(true, predicted)
    total = float(np.sum((true - true.mean()) ** 2))
    if total == 0.0:
        return math.nan
    return 1.0 - float(np.sum((true - predicted) ** 2)) / total


def alert_quality(raise_times_s: Sequence[float], failure_times_s: Sequence[float],
                  scored_failure_times_s: Sequence[float],
                  horizon_s: float = ALERT_HORIZON_S) -> AlertQuality:
    """Score alert raises against failures.

    Args:
        raise_times_s: instrument times of the raises.
        failure_times_s: times of every failure of the record (a raise is true if one of
            them follows it within ``horizon_s``).
        scored_failure_times_s: the failures that recall counts (those the alerts had the
            chance to announce; see :func:`scored_failures`).
        horizon_s: how long before a failure a raise counts as its warning.

    Returns:
        The :class:`AlertQuality`.

    Example:
        >>> quality = alert_quality([8.5, 20.0], [10.0, 30.0], [10.0, 30.0])
        >>> quality.recall, quality.precision, quality.lead_times_s
        (0.5, 0.5, (1.5,))
    """
    raises = np.sort(np.asarray(raise_times_s, np.float64))
    failures = np.sort(np.asarray(failure_times_s, np.float64))
    true_raises = 0
    for raise_time in raises:
        after = failures[np.searchsorted(failures, raise_time, side="right"):]
        true_raises += int(after.size > 0 and after[0] - raise_time <= horizon_s)
    lead_times = []
    for failure in np.asarray(scored_failure_times_s, np.float64):
        warned = raises[(raises >= failure - horizon_s) & (raises < failure)]
        if warned.size:
            lead_times.append(float(failure - warned[0]))
    return AlertQuality(n_failures=len(scored_failure_times_s), n_detected=len(lead_times),
                        n_raises=len(raises), n_true_raises=true_raises,
                        lead_times_s=tuple(lead_times))


def scored_failures(failure_samples: Sequence[int] | np.ndarray, first_sample: int,
                    last_sample: int, hop: int, horizon_samples: float) -> np.ndarray:
    """The failures that contiguous windows from ``first_sample`` to ``last_sample`` watched.

    A failure at sample ``F`` is scored if the windows began at least the horizon before
    it (``F - first_sample >= horizon_samples``) and went on up to it: the last window
    that ends before ``F`` ends at or after ``F - hop``.

    Args:
        failure_samples: the record's failure samples.
        first_sample: first sample of the first window.
        last_sample: last sample of the last window.
        hop: samples between window starts.
        horizon_samples: the alert horizon in samples.

    Returns:
        The scored failure samples, int64.

    Example:
        >>> scored_failures([100, 500, 1150, 1250], 0, 1099, hop=100, horizon_samples=150)
        array([ 500, 1150])
    """
    failures = np.asarray(failure_samples, np.int64)
    keep = (failures - first_sample >= horizon_samples) & (failures <= last_sample + hop)
    return failures[keep]


_PolicyStep = tuple[int, float, float, float, float]  # end sample, time, p, ttf, tsf


def _policy_steps(windows: RecordWindows, prediction: Prediction) -> list[_PolicyStep]:
    """Each window's values as :mod:`stream.engine.pipeline` rounds them before its policy sees
    them, so the transitions are those a replay of the record would give."""
    from stream.core.events import CLOCK_DECIMALS, PROBABILITY_DECIMALS, TIME_DECIMALS

    return list(zip(windows.last_sample.tolist(),
                    _rounded(windows.end_time_s, CLOCK_DECIMALS),
                    _rounded(prediction.p_failure, PROBABILITY_DECIMALS),
                    _rounded(prediction.ttf_s, TIME_DECIMALS),
                    _rounded(prediction.tsf_s, TIME_DECIMALS), strict=True))


def _rounded(values: np.ndarray, decimals: int) -> list[float]:
    # Python's round of each float, as the pipeline does (NumPy's rounding can differ in
    # the last place); the float64 conversion first, as float() would do.
    return [round(value, decimals) for value in np.asarray(values, np.float64).tolist()]


def _run_policy(steps: Sequence[_PolicyStep],
                config: AlertPolicyConfig) -> list[AlertTransition]:
    from stream.core.alert_policy import AlertPolicy

    update = AlertPolicy(config).update
    transitions = []
    for end_sample, end_time, p_failure, ttf_s, tsf_s in steps:
        transition = update(end_sample, end_time, p_failure=p_failure, ttf_s=ttf_s,
                            tsf_s=tsf_s)
        if transition is not None:
            transitions.append(transition)
    return transitions


def alert_transitions(windows: RecordWindows, prediction: Prediction,
                      config: AlertPolicyConfig) -> list[AlertTransition]:
    """Run one fresh alert policy over consecutive windows and their predictions.

    Values are rounded as :mod:`stream.engine.pipeline` rounds them before its policy sees them,
    so the transitions are those a replay of the record would give.

    Args:
        windows: consecutive windows of one record.
        prediction: the model's outputs for them.
        config: the policy settings.

    Returns:
        The raises and clears, in order.
    """
    return _run_policy(_policy_steps(windows, prediction), config)


def contiguous_runs(windows: RecordWindows) -> list[slice]:
    """The runs of windows that follow each other on the hop grid, as index slices.

    Example:
        >>> contiguous_runs(validation)  # doctest: +SKIP
        [slice(0, 3, None), slice(3, 5, None)]
    """
    bounds = [0, *(np.flatnonzero(np.diff(windows.first_sample) != windows.hop) + 1).tolist(),
              len(windows)]
    return [slice(start, stop) for start, stop in itertools.pairwise(bounds)
            if stop > start]


@dataclasses.dataclass(frozen=True)
class PolicyRuns:
    """One record's windows and predictions made ready for many alert policies: per
    contiguous run, the rounded values the policy reads and the failures it is scored on.
    :func:`tune_policy <model.training.fit.tune_policy>` scores hundreds of policies on one."""

    steps: tuple[tuple[_PolicyStep, ...], ...]
    scored_failure_times_s: tuple[np.ndarray, ...]
    failure_times_s: np.ndarray
    horizon_s: float
    observed_s: tuple[float, ...] = ()

    @classmethod
    def of(cls, windows: RecordWindows, prediction: Prediction,
           horizon_s: float = ALERT_HORIZON_S) -> PolicyRuns:
        """Prepare a record's windows (in order) and the model's outputs for them."""
        from model.bundle.inference import Prediction

        steps, scored_times, observed = [], [], []
        for run in contiguous_runs(windows):
            part = windows.select(run)
            steps.append(tuple(_policy_steps(part, Prediction(
                prediction.ttf_s[run], prediction.tsf_s[run], prediction.p_failure[run]))))
            scored = scored_failures(windows.failure_samples, int(part.first_sample[0]),
                                     int(part.last_sample[-1]), windows.hop,
                                     horizon_s * windows.sample_rate)
            scored_times.append(scored / windows.sample_rate)
            observed.append(float(part.last_sample[-1] - part.first_sample[0] + 1)
                            / windows.sample_rate)
        return cls(tuple(steps), tuple(scored_times),
                   np.asarray(windows.failure_times_s, np.float64), horizon_s, tuple(observed))

    def transitions_by_run(self, config: AlertPolicyConfig) -> list[list[AlertTransition]]:
        """The alerts of a fresh policy under ``config`` in each run."""
        return [_run_policy(steps, config) for steps in self.steps]

    def quality(self, config: AlertPolicyConfig) -> tuple[AlertQuality, list[AlertTransition]]:
        """Alert quality under ``config``, a fresh policy per run, and every transition."""
        from model.evaluation.alert_metrics import transition_quality

        quality = AlertQuality()
        transitions: list[AlertTransition] = []
        for run_transitions, scored, observed in zip(
                self.transitions_by_run(config), self.scored_failure_times_s, self.observed_s,
                strict=True):
            quality += transition_quality(run_transitions, self.failure_times_s, scored,
                                          observed, self.horizon_s)
            transitions.extend(run_transitions)
        return quality, transitions


def record_alert_quality(windows: RecordWindows, prediction: Prediction,
                         config: AlertPolicyConfig,
                         horizon_s: float = ALERT_HORIZON_S
                         ) -> tuple[AlertQuality, list[AlertTransition]]:
    """Alert quality of a model over windows of one record, run by contiguous run.

    Each run of consecutive windows gets a fresh policy (a gap between runs, as between
    the validation cycles of a training split, resets it).

    Args:
        windows: windows of one record, in order.
        prediction: the model's outputs for them.
        config: the alert policy settings.
        horizon_s: see :func:`alert_quality`.

    Returns:
        The pooled :class:`AlertQuality` and every transition, in order.
    """
    return PolicyRuns.of(windows, prediction, horizon_s).quality(config)


def metrics(parts: Sequence[tuple[RecordWindows, Prediction]], config: AlertPolicyConfig,
            baseline_ttf_s: float | None) -> dict[str, Any]:
    """Every reported metric over windows of one or more records.

    Args:
        parts: windows of a record and the model's predictions for them.
        config: the alert policy settings.
        baseline_ttf_s: the constant the baseline answers (the training median TTF);
            ``None`` if unknown.

    Returns:
        A JSON-ready dict: ``mae``, ``r2``, ``baseline_mae``, ``baseline_ttf_s``,
        ``alert_recall``, ``alert_precision``, ``n_windows``, ``n_failures``,
        ``n_detected``, ``n_raises``, ``lead_time_median_s``, ``lead_time_min_s``,
        ``lead_time_max_s``, ``alert_horizon_s``, and the calm-alert metrics of
        :func:`model.evaluation.alert_metrics.storm_metrics`; a metric that cannot be
        computed is ``None``.
    """
    from model.evaluation import alert_metrics

    true = np.concatenate([windows.ttf_s for windows, _ in parts])
    predicted = np.concatenate([prediction.ttf_s for _, prediction in parts])
    quality = AlertQuality()
    for windows, prediction in parts:
        quality += record_alert_quality(windows, prediction, config)[0]
    result = {
        "mae": mean_absolute_error(true, predicted),
        "r2": r_squared(true, predicted),
        "baseline_mae": (None if baseline_ttf_s is None
                         else mean_absolute_error(true, np.full_like(true, baseline_ttf_s))),
        "baseline_ttf_s": baseline_ttf_s,
        "n_windows": int(true.size),
        **alert_metrics.alert_summary(
            quality, None if config.interval is None else config.interval.coverage),
    }
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in result.items()}


def format_value(value: float | None) -> str:
    """A metric as text: three significant digits, or ``n/a`` when undefined.

    Example:
        >>> format_value(1.23456), format_value(None)
        ('1.23', 'n/a')
    """
    return "n/a" if value is None else f"{value:.3g}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The metrics as short lines a person reads.

    Example:
        >>> summary_lines({"mae": 1.0, "r2": 0.8, "baseline_mae": 3.0, ...})  # doctest: +SKIP
    """
    from model.evaluation.alert_metrics import summary_line

    value = format_value
    leads = ("no lead times" if result["lead_time_median_s"] is None else
             f"lead time median {value(result['lead_time_median_s'])} s (min "
             f"{value(result['lead_time_min_s'])}, max {value(result['lead_time_max_s'])})")
    return [
        f"time to failure over {result['n_windows']} windows: MAE {value(result['mae'])} s"
        f" (constant-median baseline {value(result['baseline_mae'])} s), "
        f"R² {value(result['r2'])}",
        f"alerts: recall {value(result['alert_recall'])} ({result['n_detected']}/"
        f"{result['n_failures']} failures warned within {result['alert_horizon_s']:g} s), "
        f"precision {value(result['alert_precision'])} ({result['n_raises']} raises), {leads}",
        summary_line(result, value),
    ]


def plot(path: str | os.PathLike, windows: RecordWindows, prediction: Prediction,
         transitions: Sequence[AlertTransition], config: AlertPolicyConfig,
         result: dict[str, Any], title: str) -> Path:
    """Draw true and predicted TTF, P(failure), alerts and failures; write a PNG atomically.

    Args:
        path: the PNG to write (replaced only once the new one is complete).
        windows: the record's windows.
        prediction: the model's outputs for them.
        transitions: the alert raises and clears.
        config: the alert policy settings (for the thresholds).
        result: the metrics, for the title.
        title: first line of the title (what was evaluated on what).

    Returns:
        The written path.
    """
    # Imported here: matplotlib is only needed for --plot. The figure is drawn with the
    # object API on an Agg canvas, so no display and no global backend state is involved.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from model.network import FAILURE_HORIZON_S

    path = Path(path)
    if not path.parent.is_dir():
        from stream.core.errors import LabquakeError

        raise LabquakeError(f"--plot {path}: folder {path.parent} does not exist; create it")
    figure = Figure(figsize=PLOT_SIZE_INCHES, layout="constrained")
    FigureCanvasAgg(figure)
    ttf_axes, probability_axes = figure.subplots(2, 1, sharex=True,
                                                 gridspec_kw={"height_ratios": (3, 2)})
    time = windows.end_time_s
    ttf_axes.plot(time, windows.ttf_s, color="black", linewidth=1.2, label="true TTF")
    ttf_axes.plot(time, prediction.ttf_s, color="tab:blue", linewidth=0.9,
                  label="predicted TTF")
    ttf_axes.set_ylabel("time to failure (s)")
    probability_axes.plot(time, prediction.p_failure, color="tab:purple", linewidth=0.9,
                          label=f"P(TTF < {FAILURE_HORIZON_S:g} s)")
    probability_axes.axhline(config.raise_threshold, color="tab:red", linestyle="--",
                             linewidth=0.8, label=f"raise threshold {config.raise_threshold:g}")
    probability_axes.axhline(config.clear_threshold, color="tab:green", linestyle=":",
                             linewidth=0.8, label=f"clear threshold {config.clear_threshold:g}")
    for kind, marker, colour in (("raised", "^", "tab:red"), ("updated", ".", "tab:red"),
                                 ("withdrawn", "x", "tab:grey"), ("cleared", "v", "tab:green")):
        chosen = [t for t in transitions if t.kind == kind]
        probability_axes.scatter([t.window_end_time for t in chosen],
                                 [t.p_failure for t in chosen], marker=marker, color=colour,
                                 s=28, zorder=3, label=f"alert {kind}")
    for axes in (ttf_axes, probability_axes):
        for index, failure in enumerate(windows.failure_times_s):
            axes.axvline(failure, color="tab:orange", linewidth=0.8, alpha=0.8,
                         label="failure (labquake)" if index == 0 else None)
    # Headroom above the highest curve or threshold for the legend; never beyond 1.
    highest = max(float(np.max(prediction.p_failure, initial=0.0)), config.raise_threshold)
    probability_axes.set_ylim(-0.02, min(1.03, max(0.1, 1.6 * highest)))
    probability_axes.set_ylabel("probability")
    probability_axes.set_xlabel("time in record (s)")
    ttf_axes.legend(loc="upper right", fontsize="small")
    probability_axes.legend(loc="upper left", fontsize="small", ncols=3)

    value = format_value
    figure.suptitle(
        f"{title}\nMAE {value(result['mae'])} s (baseline {value(result['baseline_mae'])} s), "
        f"R² {value(result['r2'])}; alerts within {result['alert_horizon_s']:g} s: recall "
        f"{value(result['alert_recall'])}, precision {value(result['alert_precision'])}",
        fontsize="medium")
    # Written atomically, with the permissions the user's umask gives.
    with atomic_output(path) as output:
        figure.savefig(output, format="png", dpi=PLOT_DPI)
    return path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` verb and its flags.

    Args:
        subparsers: the ``labquake`` command's sub-parsers.

    Returns:
        The verb's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = add_parser(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        VERB, help="MAE / R² of TTF and alert precision/recall/lead time on labelled data",
        description="Run a model bundle over a labelled record with the bundle's window and "
                    "hop and report the mean absolute error and R² of the time to failure "
                    "against a constant-median baseline, and the quality of the alerts its "
                    f"alert policy raises: recall (failures warned within "
                    f"{ALERT_HORIZON_S:g} s before), precision, lead times.")
    parser.add_argument("--model", metavar="BUNDLE",
                        help="the model bundle (a NAME.lqb directory; default: the bundled "
                             "model, as the monitor uses)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="PATH",
                        help="labelled record: LANL .csv, .zip holding one, or .npz")
    source.add_argument("--simulate", type=float, metavar="SECONDS",
                        help="evaluate on a simulated record of this length, streamed from "
                             "the simulator (no file)")
    parser.add_argument("--sim-seed", type=int, nargs="+", default=[DEFAULT_SIM_SEED],
                        metavar="N",
                        help=f"simulator seed for --simulate (default {DEFAULT_SIM_SEED}); "
                             "use ones the model was not trained or tuned on; several seeds "
                             "are several records, scored together")
    parser.add_argument("--sample-rate", type=float, metavar="HZ",
                        help="samples per second of a CSV record or of --simulate (default: "
                             "the rate the model was trained at); an .npz carries its own")
    parser.add_argument("--plot", metavar="OUT.png",
                        help="write a figure of true and predicted TTF, P(failure) and alerts")
    parser.add_argument("--json", action="store_true",
                        help="print the metrics as one JSON object on stdout instead of "
                             "lines: mae, r2, baseline_mae, baseline_ttf_s, alert_recall, "
                             "alert_precision, n_windows, n_failures, n_detected, n_raises, "
                             "lead_time_median_s, lead_time_min_s, lead_time_max_s, "
                             "alert_horizon_s, raises_per_failure, false_alarms_per_hour, "
                             "n_false_alarms, missed_failures, lead_time_p10_s, "
                             "lead_time_p50_s, lead_time_p90_s, withdrawn_per_hour, "
                             "n_withdrawn, n_updated, first_raise_precision, "
                             "observed_hours, interval_coverage, interval_nominal_coverage, "
                             "n_interval_failures (null where undefined), model_version, data")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, no metric lines, logs at WARNING and above "
                             "only (-v still logs debug details); errors still print")
    add_cache_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate the bundle and print the metrics (text, or one JSON object).

    Args:
        args: parsed flags of :func:`add_parser`.

    Returns:
        0 on success (errors raise ``LabquakeError``).
    """
    from model.bundle import inference as bundles
    from model.training import dataset
    from model.training.policy_tuning import record_predictions
    from stream.core.alert_policy import AlertPolicyConfig
    from stream.core.errors import LabquakeError

    check_cache_arguments(args)
    for flag, value in (("--simulate", args.simulate), ("--sample-rate", args.sample_rate)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise LabquakeError(f"{flag} {value} must be a finite number > 0")
    model = bundles.load(args.model or bundles.DEFAULT_BUNDLE_PATH)
    extra = model.metadata.get("extra", {})
    trained_rate = extra.get("sample_rate_hz")
    if args.plot and args.simulate is not None and len(args.sim_seed) > 1:
        raise LabquakeError("--plot draws one record; give one --sim-seed with it")
    if args.simulate is not None:
        records = [dataset.simulated_windows(
            args.simulate, seed=seed, sample_rate=args.sample_rate or trained_rate,
            window=model.window, hop=model.hop, feature_names=model.extract_names,
            progress=not args.quiet) for seed in args.sim_seed]
    else:
        native_rate = Path(args.data).suffix.lower() == ".npz"
        records = [dataset.file_windows(
            args.data, window=model.window, hop=model.hop, feature_names=model.extract_names,
            sample_rate=args.sample_rate or (None if native_rate else trained_rate),
            progress=not args.quiet, **cached_windows_options(args))]
    parts = [record_predictions(model, windows) for windows in records]
    config = AlertPolicyConfig.from_dict(model.alert_policy)
    result = metrics(parts, config, extra.get("training_ttf_median_s"))
    result["model_version"] = model.version
    result["data"] = "; ".join(windows.name for windows, _ in parts)
    if args.plot:
        windows, prediction = parts[0]
        _, transitions = record_alert_quality(windows, prediction, config)
        plot(args.plot, windows, prediction, transitions, config, result,
             f"labquake model {model.version} on {windows.name}")
    if args.json:
        print(json.dumps(result, allow_nan=False))
    elif not args.quiet:
        print(f"model {model.version} on {windows.name}")
        for line in summary_lines(result):
            print(line)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _pair(true: Sequence[float] | np.ndarray,
          predicted: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(true, np.float64).reshape(-1)
    predicted = np.asarray(predicted, np.float64).reshape(-1)
    if true.shape != predicted.shape or true.size == 0:
        raise ValueError(f"need two non-empty arrays of one length, got {true.shape} and "
                         f"{predicted.shape}")
    return true, predicted
