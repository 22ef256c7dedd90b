"""What an operator lives with: alert storms, false alarms per hour, countdown coverage.

The counts of :class:`model.evaluation.evaluate.AlertQuality` say whether failures were warned;
these functions read the whole alert sequence of a run (raised, updated, withdrawn,
cleared) and say how calm it was and how well the countdown's interval held:

- *raises per failure*: raises over scored failures (1.0 is one alert per failure);
- *false alarms per hour*: raises not followed by a failure within the horizon, per hour
  of record watched;
- *withdrawn per hour*: episodes withdrawn because P(failure) dropped, per hour;
- *lead time p10/p50/p90*: percentiles of the lead times of the warned failures;
- *interval coverage*: of the scored failures that came while an alert was in force
  with an interval, the share whose time fell inside the interval of the latest raised
  or updated alert.

Example:
    >>> from stream.core.alert_policy import AlertTransition
    >>> raised = AlertTransition("raised", "probability_high", 99, 9.0, 0.9, 1.0, 5.0, 99,
    ...                          10.0, 9.8, 10.3)
    >>> interval_hits([raised], [10.1])
    (1, 1)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.evaluation.evaluate import ALERT_HORIZON_S, AlertQuality, alert_quality

if TYPE_CHECKING:
    from stream.core.alert_policy import AlertTransition

SECONDS_PER_HOUR = 3600.0
LEAD_TIME_PERCENTILES = (10, 50, 90)
COUNTDOWN_KINDS = ("raised", "updated")


def alerts_in_force(transitions: Sequence[AlertTransition], failure_times_s: Sequence[float]
                    ) -> list[tuple[float, AlertTransition]]:
    """Each failure that came while an episode was open, with the episode's latest raised
    or updated alert (the countdown an operator saw when the failure came).

    Args:
        transitions: one contiguous run's alerts, in order.
        failure_times_s: the failures to look at.
    """
    times = np.array([t.window_end_time for t in transitions], np.float64)
    found = []
    for failure in failure_times_s:
        before = int(np.searchsorted(times, failure, side="left"))
        if before and transitions[before - 1].kind in COUNTDOWN_KINDS:
            found.append((float(failure), transitions[before - 1]))
    return found


def interval_hits(transitions: Sequence[AlertTransition],
                  failure_times_s: Sequence[float]) -> tuple[int, int]:
    """How many failures fell inside the interval of the alert in force when they came.

    Args:
        transitions: one contiguous run's alerts, in order.
        failure_times_s: the failures to check (e.g. the scored ones).

    Returns:
        ``(covered, with_interval)``: failures inside the interval, and failures that
        came while an episode with an interval was open.
    """
    with_bounds = [(failure, alert) for failure, alert in alerts_in_force(transitions,
                                                                          failure_times_s)
                   if alert.failure_time_lower is not None]
    covered = sum(alert.failure_time_lower <= failure <= alert.failure_time_upper
                  for failure, alert in with_bounds)
    return covered, len(with_bounds)


def kind_counts(transitions: Sequence[AlertTransition]) -> dict[str, int]:
    """How many alerts of each kind a run published."""
    return {kind: sum(t.kind == kind for t in transitions)
            for kind in ("raised", "updated", "withdrawn", "cleared")}


def storm_metrics(quality: Any, observed_s: float,
                  interval_coverage: float | None = None) -> dict[str, Any]:
    """The calm-alert metrics of pooled alert quality, as a JSON-ready dict.

    Args:
        quality: a :class:`model.evaluation.evaluate.AlertQuality` (its counts and lead times).
        observed_s: seconds of record the alerts watched.
        interval_coverage: the nominal coverage of the interval, if alerts carried one.

    Returns:
        ``raises_per_failure``, ``false_alarms_per_hour``, ``n_false_alarms``,
        ``missed_failures``, ``lead_time_p10_s``, ``lead_time_p50_s``,
        ``lead_time_p90_s``, ``withdrawn_per_hour``, ``n_withdrawn``, ``n_updated``,
        ``first_raise_precision`` (warned failures over raises: a second raise for one
        failure counts against it), ``observed_hours``, ``interval_coverage``
        (measured), ``interval_nominal_coverage``, ``n_interval_failures``; ``None``
        where undefined.
    """
    hours = observed_s / SECONDS_PER_HOUR
    leads = np.asarray(quality.lead_times_s, np.float64)
    false_alarms = quality.n_raises - quality.n_true_raises
    result: dict[str, Any] = {
        "raises_per_failure": (quality.n_raises / quality.n_failures
                               if quality.n_failures else None),
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else None,
        "n_false_alarms": false_alarms,
        "missed_failures": quality.n_failures - quality.n_detected,
        **{f"lead_time_p{q}_s": (float(np.percentile(leads, q)) if leads.size else None)
           for q in LEAD_TIME_PERCENTILES},
        "withdrawn_per_hour": quality.n_withdrawn / hours if hours > 0 else None,
        "n_withdrawn": quality.n_withdrawn,
        "n_updated": quality.n_updated,
        "first_raise_precision": (quality.n_detected / quality.n_raises
                                  if quality.n_raises else None),
        "observed_hours": hours,
        "interval_coverage": (quality.n_covered / quality.n_with_interval
                              if quality.n_with_interval else None),
        "interval_nominal_coverage": interval_coverage,
        "n_interval_failures": quality.n_with_interval,
    }
    return result


def summary_line(result: Mapping[str, Any], value: Any) -> str:
    """The calm-alert metrics as one line a person reads (``value`` formats a number)."""
    coverage = ("no interval" if result["interval_coverage"] is None else
                f"interval covers {value(result['interval_coverage'])} of "
                f"{result['n_interval_failures']} failures (nominal "
                f"{value(result['interval_nominal_coverage'])})")
    return (f"calm: {value(result['raises_per_failure'])} raises per failure, "
            f"{value(result['false_alarms_per_hour'])} false alarms per hour, "
            f"{result['missed_failures']} missed, lead time p10/p50/p90 "
            f"{value(result['lead_time_p10_s'])}/{value(result['lead_time_p50_s'])}/"
            f"{value(result['lead_time_p90_s'])} s, {value(result['withdrawn_per_hour'])} "
            f"withdrawn per hour; {coverage}")


def transition_of_alert(alert: Mapping[str, Any]) -> AlertTransition:
    """An alert object as the monitor logs it (``docs/alert.schema.json``), back as the
    policy's transition, so a Redis alert log is scored as ``labquake evaluate`` scores."""
    from stream.core.alert_policy import AlertTransition

    episode = alert.get("episode_id")
    return AlertTransition(
        alert["kind"], alert["reason"], int(alert["window_end_sample"]),
        float(alert["window_end_time"]), float(alert["p_failure"]), float(alert["ttf_s"]),
        float(alert["tsf_s"]),
        int(episode.rpartition("@")[2]) if episode else int(alert["window_end_sample"]),
        alert.get("failure_time"), alert.get("failure_time_lower"),
        alert.get("failure_time_upper"), bool(alert.get("warming_up", False)))


def transition_quality(transitions: Sequence[AlertTransition],
                       failure_times_s: Sequence[float],
                       scored_failure_times_s: Sequence[float], observed_s: float,
                       horizon_s: float = ALERT_HORIZON_S) -> AlertQuality:
    """Score one contiguous run's alerts (every kind) against failures.

    Args:
        transitions: the run's alerts, in order.
        failure_times_s: every failure of the record.
        scored_failure_times_s: the failures recall counts.
        observed_s: seconds of record the run watched.
        horizon_s: see :func:`alert_quality`.

    Returns:
        The :class:`AlertQuality`, calm-alert counts included.
    """
    counts = kind_counts(transitions)
    covered, with_interval = interval_hits(transitions, scored_failure_times_s)
    return dataclasses.replace(
        alert_quality([t.window_end_time for t in transitions if t.kind == "raised"],
                      failure_times_s, scored_failure_times_s, horizon_s),
        n_withdrawn=counts["withdrawn"], n_updated=counts["updated"], n_covered=covered,
        n_with_interval=with_interval, observed_s=observed_s)


def alert_summary(quality: AlertQuality, nominal_coverage: float | None) -> dict[str, Any]:
    """The alert metrics of pooled quality, as :func:`metrics` reports them (``None``
    where undefined); ``deploy/alert-quality`` reports the same from the Redis log.

    Args:
        quality: the pooled :class:`AlertQuality`.
        nominal_coverage: the coverage the countdown interval was calibrated for, if any.
    """
    leads = np.asarray(quality.lead_times_s)
    result = {
        "alert_recall": quality.recall,
        "alert_precision": quality.precision,
        "n_failures": quality.n_failures,
        "n_detected": quality.n_detected,
        "n_raises": quality.n_raises,
        "lead_time_median_s": float(np.median(leads)) if leads.size else None,
        "lead_time_min_s": float(leads.min()) if leads.size else None,
        "lead_time_max_s": float(leads.max()) if leads.size else None,
        "alert_horizon_s": ALERT_HORIZON_S,
        **storm_metrics(quality, quality.observed_s, nominal_coverage),
    }
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in result.items()}
