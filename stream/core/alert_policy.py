"""When to raise, update, withdraw and clear a failure alert for one stream.

One class serves the offline evaluation and the streaming monitor. It is a pure
function of the prediction sequence: the same windows in the same order give the
same alerts, so a replay gives the alerts the live run gave.

An alert is an *episode*: one raise, then ``updated`` alerts as its countdown moves, then
one end, ``cleared`` (the failure came) or ``withdrawn`` (it did not). All alerts of an
episode carry the ``window_end_sample`` of its raise. The rules, applied to each window
in counter order (times on the instrument clock):

- **warm-up** — the stream's first ``warmup_s`` seconds of windows (and the first after
  each gap) are *warming up*: the model's stream context does not yet hold the past it
  reads. No alert is raised from them, or only at ``warmup_raise_threshold`` when set.
- **raised, reason** ``probability_high`` — no episode open, ``p_failure >=
  raise_threshold`` in ``consecutive`` windows in a row, and at least ``refractory_s``
  since the last withdrawal. The alert carries the predicted failure time
  ``window_end_time + ttf_s`` and, with a calibrated :class:`~stream.core.countdown.
  CountdownInterval`, the interval around it.
- **cleared, reason** ``failure_passed`` — the failure has happened by either sign: the
  model's time since failure resets (``tsf_s < failure_tsf_s`` in a window after some
  window of the episode had ``tsf_s >= failure_tsf_s``), or the clock passes the failure
  time predicted at the raise by more than ``failure_grace_s`` (the raise's, not the
  latest: a countdown stuck at zero moves the latest along with the clock).
- **withdrawn, reason** ``probability_dropped`` — no failure seen, and ``p_failure <
  clear_threshold`` in every window for ``withdraw_after_s`` seconds (from the first low
  window to this one). The next raise waits ``refractory_s``.
- **updated, reason** ``countdown_moved`` — otherwise, while raised, when the predicted
  failure time differs from the last published one by more than ``update_step_s``.

A gap in the stream (:meth:`AlertPolicy.gap`) restarts the run towards a raise, the low
time towards a withdrawal and the warm-up, but keeps an episode open: it still ends by
the rules above.

Example:
    >>> policy = AlertPolicy()
    >>> policy.update(149_999, 0.0375, p_failure=0.9, ttf_s=0.4, tsf_s=8.0) is None
    True
    >>> policy.update(299_999, 0.0750, p_failure=0.8, ttf_s=0.3, tsf_s=8.1).kind
    'raised'
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from typing import Any, Literal

from stream.core.countdown import CountdownInterval
from stream.core.errors import LabquakeError

RAISED = "raised"
UPDATED = "updated"
WITHDRAWN = "withdrawn"
CLEARED = "cleared"
REASON_PROBABILITY_HIGH = "probability_high"
REASON_COUNTDOWN_MOVED = "countdown_moved"
REASON_PROBABILITY_DROPPED = "probability_dropped"
REASON_FAILURE_PASSED = "failure_passed"
# Failure times are sums of a clock rounded to the nanosecond and a TTF rounded to 0.1 ms;
# rounded again so that a replay and the live run print the same digits.
FAILURE_TIME_DECIMALS = 6

TransitionKind = Literal["raised", "updated", "withdrawn", "cleared"]
TransitionReason = Literal["probability_high", "countdown_moved", "probability_dropped",
                           "failure_passed"]


@dataclasses.dataclass(frozen=True)
class AlertPolicyConfig:
    """Settings of the alert policy; stored in the model bundle's metadata.

    Args:
        raise_threshold: P(failure) at or above which a window counts towards raising.
        clear_threshold: P(failure) below which a window counts towards a withdrawal;
            at most ``raise_threshold``.
        consecutive: windows in a row at or above the raise threshold needed to raise.
        failure_tsf_s: predicted time since failure (s) below which, after being at
            or above it, the failure is taken to have happened.
        failure_grace_s: seconds past the failure time predicted at the raise after which
            the failure is taken to have happened.
        withdraw_after_s: seconds P(failure) must stay below ``clear_threshold`` before
            an episode is withdrawn (0: at the first low window).
        refractory_s: seconds after a withdrawal before the next raise.
        update_step_s: an ``updated`` alert goes out when the predicted failure time
            moves by more than this from the last published one.
        warmup_s: seconds of windows at a stream's start (and after each gap) that are
            marked warming up.
        warmup_raise_threshold: P(failure) at or above which a warming-up window counts
            towards raising; ``None``: warming-up windows never raise.
        interval: the calibrated interval around the predicted failure time; ``None``:
            alerts carry the predicted failure time without an interval.

    Raises:
        LabquakeError: a value is out of range.

    Example:
        >>> AlertPolicyConfig.from_dict({"consecutive": 3}).to_dict()["consecutive"]
        3
    """

    raise_threshold: float = 0.5
    clear_threshold: float = 0.3
    consecutive: int = 2
    failure_tsf_s: float = 1.0
    failure_grace_s: float = 1.0
    withdraw_after_s: float = 0.5
    refractory_s: float = 1.0
    update_step_s: float = 0.25
    warmup_s: float = 0.0
    warmup_raise_threshold: float | None = None
    interval: CountdownInterval | None = None

    def __post_init__(self) -> None:
        for name in ("raise_threshold", "clear_threshold"):
            value = _as_finite(name, getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise LabquakeError(f"alert policy {name} must be in [0, 1], got {value}")
            object.__setattr__(self, name, value)
        if self.clear_threshold > self.raise_threshold:
            raise LabquakeError(
                f"alert policy clear_threshold {self.clear_threshold} is above raise_threshold"
                f" {self.raise_threshold}; set it at or below the raise threshold"
            )
        if self.warmup_raise_threshold is not None:
            value = _as_finite("warmup_raise_threshold", self.warmup_raise_threshold)
            if not self.raise_threshold <= value <= 1.0:
                raise LabquakeError(
                    f"alert policy warmup_raise_threshold must be from raise_threshold "
                    f"{self.raise_threshold} to 1 (it is the stricter one), got {value}")
            object.__setattr__(self, "warmup_raise_threshold", value)
        if (isinstance(self.consecutive, bool) or not isinstance(self.consecutive, int)
                or self.consecutive < 1):
            raise LabquakeError(
                f"alert policy consecutive must be a whole number >= 1, got {self.consecutive!r}"
            )
        for name in ("failure_tsf_s", "failure_grace_s", "withdraw_after_s", "refractory_s",
                     "update_step_s", "warmup_s"):
            value = _as_finite(name, getattr(self, name))
            if value < 0.0:
                raise LabquakeError(f"alert policy {name} must be >= 0 seconds, got {value}")
            object.__setattr__(self, name, value)
        if isinstance(self.interval, Mapping):
            object.__setattr__(self, "interval", CountdownInterval.from_dict(self.interval))
        elif self.interval is not None and not isinstance(self.interval, CountdownInterval):
            raise LabquakeError(f"alert policy interval must be a calibrated interval, got "
                                f"{self.interval!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (the inverse of :meth:`from_dict`)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["interval"] = None if self.interval is None else self.interval.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AlertPolicyConfig:
        """Settings from a dict; missing keys take their defaults, unknown keys are refused.

        Args:
            values: e.g. the ``alert_policy`` entry of a model bundle's metadata.

        Returns:
            The validated configuration.

        Raises:
            LabquakeError: an unknown key or an out-of-range value.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LabquakeError(
                f"unknown alert policy settings {unknown}; known are {sorted(known)}"
            )
        return cls(**values)

    def overridden(self, overrides: Mapping[str, Any]) -> AlertPolicyConfig:
        """These settings with some replaced (``None`` values leave a setting as it is).

        Raises:
            LabquakeError: an unknown name or an out-of-range result.
        """
        given = {name: value for name, value in overrides.items() if value is not None}
        return AlertPolicyConfig.from_dict({**self.to_dict(), **given})


@dataclasses.dataclass(frozen=True)
class AlertTransition:
    """An alert of an episode, decided at the end of one window.

    Args:
        kind: ``"raised"``, ``"updated"``, ``"withdrawn"`` or ``"cleared"``.
        reason: ``"probability_high"`` (raised), ``"countdown_moved"`` (updated),
            ``"probability_dropped"`` (withdrawn) or ``"failure_passed"`` (cleared).
        window_end_sample: index of the last sample of the deciding window.
        window_end_time: instrument clock time of that sample, seconds.
        p_failure: the window's predicted P(TTF < 0.5 s).
        ttf_s: the window's predicted time to failure, seconds.
        tsf_s: the window's predicted time since failure, seconds.
        episode_sample: ``window_end_sample`` of the episode's raise.
        failure_time: predicted failure time on the instrument clock (raised and
            updated; ``None`` for the end of an episode).
        failure_time_lower: lower end of the interval around it (``None`` without one).
        failure_time_upper: upper end of the interval around it (``None`` without one).
        warming_up: the window was in the stream's warm-up.
    """

    kind: TransitionKind
    reason: TransitionReason
    window_end_sample: int
    window_end_time: float
    p_failure: float
    ttf_s: float
    tsf_s: float
    episode_sample: int
    failure_time: float | None = None
    failure_time_lower: float | None = None
    failure_time_upper: float | None = None
    warming_up: bool = False


class AlertPolicy:
    """The alert state of one stream, advanced one window prediction at a time.

    Args:
        config: the settings (default: ``AlertPolicyConfig()``).

    Example:
        >>> policy = AlertPolicy(AlertPolicyConfig(consecutive=1))
        >>> policy.update(99, 1.0, p_failure=0.7, ttf_s=2.0, tsf_s=5.0).kind
        'raised'
        >>> policy.update(199, 2.0, p_failure=0.1, ttf_s=6.0, tsf_s=0.2).reason
        'failure_passed'
    """

    def __init__(self, config: AlertPolicyConfig | None = None) -> None:
        self._config = AlertPolicyConfig() if config is None else config
        self._raised = False
        self._high_count = 0
        self._low_since: float | None = None
        self._episode_sample: int | None = None
        self._published_failure_time: float | None = None
        self._raise_failure_time: float | None = None
        self._tsf_reached = False
        self._refractory_until: float | None = None
        self._run_start_time: float | None = None
        self._warmed_up = False
        self._warming_up = False
        self._last_window_end_sample: int | None = None

    @property
    def config(self) -> AlertPolicyConfig:
        """The settings in force."""
        return self._config

    @property
    def raised(self) -> bool:
        """Whether an episode is open (an alert raised and not ended)."""
        return self._raised

    @property
    def predicted_failure_time(self) -> float | None:
        """The failure time last published in the open episode; ``None`` if none is open."""
        return self._published_failure_time

    @property
    def warming_up(self) -> bool:
        """Whether the last window taken was in the stream's warm-up."""
        return self._warming_up

    @property
    def last_window_end_sample(self) -> int | None:
        """The last window this policy took, on the instrument's counter; ``None`` if none."""
        return self._last_window_end_sample

    def update(self, window_end_sample: int, window_end_time: float, p_failure: float,
               ttf_s: float, tsf_s: float) -> AlertTransition | None:
        """Take the next window's prediction; return the alert it causes, if any.

        Args:
            window_end_sample: index of the window's last sample; increases call to call.
            window_end_time: instrument clock time of that sample, seconds.
            p_failure: predicted P(TTF < 0.5 s), in [0, 1].
            ttf_s: predicted time to failure, seconds.
            tsf_s: predicted time since failure, seconds.

        Returns:
            The :class:`AlertTransition`, or ``None`` when nothing is published.

        Raises:
            ValueError: a value is not finite, ``p_failure`` is outside [0, 1], or the
                window does not come after the previous one (a caller bug).
        """
        # Plain Python numbers (the model gives numpy float32) keep transitions JSON-ready.
        window_end_sample = operator.index(window_end_sample)
        window_end_time, p_failure, ttf_s, tsf_s = (
            float(window_end_time), float(p_failure), float(ttf_s), float(tsf_s))
        for name, value in (("window_end_time", window_end_time), ("p_failure", p_failure),
                            ("ttf_s", ttf_s), ("tsf_s", tsf_s)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not 0.0 <= p_failure <= 1.0:
            raise ValueError(f"p_failure must be in [0, 1], got {p_failure!r}")
        if (self._last_window_end_sample is not None
                and window_end_sample <= self._last_window_end_sample):
            raise ValueError(
                f"window ending at sample {window_end_sample} does not come after the"
                f" previous one at {self._last_window_end_sample}; feed windows in order"
            )
        self._last_window_end_sample = window_end_sample
        self._warming_up = self._in_warmup(window_end_time)
        values = (window_end_sample, window_end_time, p_failure, ttf_s, tsf_s)
        if self._raised:
            return self._while_raised(*values)
        return self._while_calm(*values)

    def snapshot(self) -> dict[str, Any]:
        """The policy's state as a JSON-ready dict; :meth:`restore` takes it back.

        The monitor stores it beside each batch of results so that a restarted monitor
        continues a stream exactly where the stopped one left it.
        """
        return {
            "raised": self._raised,
            "high_count": self._high_count,
            "low_since": self._low_since,
            "episode_sample": self._episode_sample,
            "predicted_failure_time": self._published_failure_time,
            "raise_failure_time": self._raise_failure_time,
            "tsf_reached": self._tsf_reached,
            "refractory_until": self._refractory_until,
            "run_start_time": self._run_start_time,
            "warmed_up": self._warmed_up,
            "warming_up": self._warming_up,
            "last_window_end_sample": self._last_window_end_sample,
        }

    @classmethod
    def restore(cls, config: AlertPolicyConfig, state: Mapping[str, Any]) -> AlertPolicy:
        """A policy in the state that :meth:`snapshot` gave.

        A state stored before episodes existed (no ``episode_sample``) continues its
        open alert as an episode raised at its last window, and its stream as warmed up.
        """
        policy = cls(config)
        last = state["last_window_end_sample"]
        policy._last_window_end_sample = _optional(int, last)
        policy._raised = bool(state["raised"])
        policy._high_count = int(state["high_count"])
        policy._low_since = _optional(float, state.get("low_since"))
        policy._episode_sample = _optional(int, state.get("episode_sample", last)
                                           if policy._raised else None)
        policy._published_failure_time = _optional(float, state["predicted_failure_time"])
        policy._raise_failure_time = _optional(float, state.get(
            "raise_failure_time", state["predicted_failure_time"]))
        policy._tsf_reached = bool(state["tsf_reached"])
        policy._refractory_until = _optional(float, state.get("refractory_until"))
        policy._run_start_time = _optional(float, state.get("run_start_time"))
        policy._warmed_up = bool(state.get("warmed_up", last is not None))
        policy._warming_up = bool(state.get("warming_up", False))
        return policy

    def gap(self) -> None:
        """The stream had a gap: windows before and after it are not consecutive, and the
        model's stream context starts afresh (a new warm-up)."""
        self._high_count = 0
        self._low_since = None
        self._run_start_time = None
        self._warmed_up = False

    # -- internals ------------------------------------------------------------------------

    def _in_warmup(self, window_end_time: float) -> bool:
        if self._warmed_up:
            return False
        if self._run_start_time is None:
            self._run_start_time = window_end_time
        self._warmed_up = window_end_time - self._run_start_time >= self._config.warmup_s
        return not self._warmed_up

    def _while_calm(self, window_end_sample: int, window_end_time: float, p_failure: float,
                    ttf_s: float, tsf_s: float) -> AlertTransition | None:
        config = self._config
        threshold = config.warmup_raise_threshold if self._warming_up else config.raise_threshold
        high = threshold is not None and p_failure >= threshold
        self._high_count = self._high_count + 1 if high else 0
        resting = (self._refractory_until is not None
                   and window_end_time < self._refractory_until)
        if self._high_count < config.consecutive or resting:
            return None
        self._raised = True
        self._high_count = 0
        self._low_since = None
        self._refractory_until = None
        self._episode_sample = window_end_sample
        self._tsf_reached = tsf_s >= config.failure_tsf_s
        self._raise_failure_time = _failure_time(window_end_time, ttf_s)
        return self._countdown(RAISED, REASON_PROBABILITY_HIGH, window_end_sample,
                               window_end_time, p_failure, ttf_s, tsf_s)

    def _while_raised(self, window_end_sample: int, window_end_time: float, p_failure: float,
                      ttf_s: float, tsf_s: float) -> AlertTransition | None:
        config = self._config
        values = (window_end_sample, window_end_time, p_failure, ttf_s, tsf_s)
        tsf_reset = self._tsf_reached and tsf_s < config.failure_tsf_s
        clock_passed = window_end_time > self._raise_failure_time + config.failure_grace_s
        if tsf_reset or clock_passed:
            return self._end(CLEARED, REASON_FAILURE_PASSED, *values)
        self._tsf_reached = self._tsf_reached or tsf_s >= config.failure_tsf_s
        if p_failure < config.clear_threshold:
            if self._low_since is None:
                self._low_since = window_end_time
            if window_end_time - self._low_since >= config.withdraw_after_s:
                self._refractory_until = window_end_time + config.refractory_s
                return self._end(WITHDRAWN, REASON_PROBABILITY_DROPPED, *values)
        else:
            self._low_since = None
        moved = abs(_failure_time(window_end_time, ttf_s) - self._published_failure_time)
        if moved > config.update_step_s:
            return self._countdown(UPDATED, REASON_COUNTDOWN_MOVED, *values)
        return None

    def _countdown(self, kind: TransitionKind, reason: TransitionReason,
                   window_end_sample: int, window_end_time: float, p_failure: float,
                   ttf_s: float, tsf_s: float) -> AlertTransition:
        """A raised or updated alert: publishes the predicted failure time."""
        failure_time = _failure_time(window_end_time, ttf_s)
        self._published_failure_time = failure_time
        lower = upper = None
        if self._config.interval is not None:
            low, high = self._config.interval.bounds(ttf_s)
            # The failure cannot come before the window that announces it.
            lower = round(max(window_end_time, failure_time + low), FAILURE_TIME_DECIMALS)
            upper = round(max(window_end_time, failure_time + high), FAILURE_TIME_DECIMALS)
        return AlertTransition(kind, reason, window_end_sample, window_end_time, p_failure,
                               ttf_s, tsf_s, self._episode_sample, failure_time, lower, upper,
                               self._warming_up)

    def _end(self, kind: TransitionKind, reason: TransitionReason, window_end_sample: int,
             window_end_time: float, p_failure: float, ttf_s: float,
             tsf_s: float) -> AlertTransition:
        episode = self._episode_sample
        self._raised = False
        self._high_count = 0
        self._low_since = None
        self._episode_sample = None
        self._published_failure_time = None
        self._raise_failure_time = None
        self._tsf_reached = False
        return AlertTransition(kind, reason, window_end_sample, window_end_time, p_failure,
                               ttf_s, tsf_s, episode, warming_up=self._warming_up)


def _failure_time(window_end_time: float, ttf_s: float) -> float:
    return round(window_end_time + ttf_s, FAILURE_TIME_DECIMALS)


def _optional(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def _as_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LabquakeError(f"alert policy {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise LabquakeError(f"alert policy {name} must be finite, got {value!r}")
    return float(value)
