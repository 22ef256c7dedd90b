"""When to raise and clear a failure alert for one stream, from its window predictions.

One class serves the offline evaluation and the streaming monitor. It is a pure
function of the prediction sequence: the same windows in the same order give the
same transitions, so a replay gives the alerts the live run gave.

The rule, applied to each window in counter order (k = ``consecutive``):

- **raise** — not raised, and ``p_failure >= raise_threshold`` in k consecutive
  windows. The raising window fixes the predicted failure time
  ``window_end_time + ttf_s``.
- **clear, reason** ``failure_passed`` — raised, and the failure has happened by
  either sign: the model's time since failure resets (``tsf_s < failure_tsf_s`` in a
  window after some window since the raise had ``tsf_s >= failure_tsf_s``), or the
  instrument clock passes the predicted failure time by more than
  ``failure_grace_s`` (``window_end_time > predicted + failure_grace_s``).
- **clear, reason** ``probability_dropped`` — raised, no failure seen, and
  ``p_failure < clear_threshold`` in k consecutive windows.

Between the thresholds nothing changes (hysteresis): a raised alert stays raised and
the count towards raising starts again. Every transition restarts both counts. A gap
in the stream (:meth:`AlertPolicy.gap`) restarts the counts, since windows on either
side are not consecutive, but keeps a raised alert raised: it is still cleared by the
rules above.

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

from stream.core.errors import LabquakeError

RAISED = "raised"
CLEARED = "cleared"
REASON_PROBABILITY_HIGH = "probability_high"
REASON_PROBABILITY_DROPPED = "probability_dropped"
REASON_FAILURE_PASSED = "failure_passed"

TransitionKind = Literal["raised", "cleared"]
TransitionReason = Literal["probability_high", "probability_dropped", "failure_passed"]


@dataclasses.dataclass(frozen=True)
class AlertPolicyConfig:
    """Settings of the alert policy; stored in the model bundle's metadata.

    Args:
        raise_threshold: P(failure) at or above which a window counts towards raising.
        clear_threshold: P(failure) below which a window counts towards clearing;
            at most ``raise_threshold``.
        consecutive: windows in a row needed to raise or to clear on probability.
        failure_tsf_s: predicted time since failure (s) below which, after being at
            or above it, the failure is taken to have happened.
        failure_grace_s: seconds past the failure time predicted at the raise after
            which the failure is taken to have happened.

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
        if (isinstance(self.consecutive, bool) or not isinstance(self.consecutive, int)
                or self.consecutive < 1):
            raise LabquakeError(
                f"alert policy consecutive must be a whole number >= 1, got {self.consecutive!r}"
            )
        for name in ("failure_tsf_s", "failure_grace_s"):
            value = _as_finite(name, getattr(self, name))
            if value < 0.0:
                raise LabquakeError(f"alert policy {name} must be >= 0 seconds, got {value}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

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


@dataclasses.dataclass(frozen=True)
class AlertTransition:
    """An alert was raised or cleared at the end of one window.

    Args:
        kind: ``"raised"`` or ``"cleared"``.
        reason: ``"probability_high"`` for a raise; ``"probability_dropped"`` or
            ``"failure_passed"`` for a clear.
        window_end_sample: index of the last sample of the deciding window.
        window_end_time: instrument clock time of that sample, seconds.
        p_failure: the window's predicted P(TTF < 0.5 s).
        ttf_s: the window's predicted time to failure, seconds.
        tsf_s: the window's predicted time since failure, seconds.
    """

    kind: TransitionKind
    reason: TransitionReason
    window_end_sample: int
    window_end_time: float
    p_failure: float
    ttf_s: float
    tsf_s: float


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
        self._low_count = 0
        self._predicted_failure_time: float | None = None
        self._tsf_reached = False
        self._last_window_end_sample: int | None = None

    @property
    def config(self) -> AlertPolicyConfig:
        """The settings in force."""
        return self._config

    @property
    def raised(self) -> bool:
        """Whether an alert is raised now."""
        return self._raised

    @property
    def predicted_failure_time(self) -> float | None:
        """Failure time predicted when the current alert was raised; ``None`` if not raised."""
        return self._predicted_failure_time

    def update(self, window_end_sample: int, window_end_time: float, p_failure: float,
               ttf_s: float, tsf_s: float) -> AlertTransition | None:
        """Take the next window's prediction; return the transition it causes, if any.

        Args:
            window_end_sample: index of the window's last sample; increases call to call.
            window_end_time: instrument clock time of that sample, seconds.
            p_failure: predicted P(TTF < 0.5 s), in [0, 1].
            ttf_s: predicted time to failure, seconds.
            tsf_s: predicted time since failure, seconds.

        Returns:
            The :class:`AlertTransition`, or ``None`` when the state does not change.

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
        reason = (self._clear_reason(window_end_time, p_failure, tsf_s) if self._raised
                  else self._raise_reason(p_failure))
        if reason is None:
            return None
        self._high_count = 0
        self._low_count = 0
        self._raised = not self._raised
        if self._raised:
            self._predicted_failure_time = window_end_time + ttf_s
            self._tsf_reached = tsf_s >= self._config.failure_tsf_s
        else:
            self._predicted_failure_time = None
            self._tsf_reached = False
        return AlertTransition(
            kind=RAISED if self._raised else CLEARED,
            reason=reason,
            window_end_sample=window_end_sample,
            window_end_time=window_end_time,
            p_failure=p_failure,
            ttf_s=ttf_s,
            tsf_s=tsf_s,
        )

    @property
    def last_window_end_sample(self) -> int | None:
        """The last window this policy took, on the instrument's counter; ``None`` if none."""
        return self._last_window_end_sample

    def snapshot(self) -> dict[str, Any]:
        """The policy's state as a JSON-ready dict; :meth:`restore` takes it back.

        The monitor stores it beside each batch of results so that a restarted monitor
        continues a stream exactly where the stopped one left it.
        """
        return {
            "raised": self._raised,
            "high_count": self._high_count,
            "low_count": self._low_count,
            "predicted_failure_time": self._predicted_failure_time,
            "tsf_reached": self._tsf_reached,
            "last_window_end_sample": self._last_window_end_sample,
        }

    @classmethod
    def restore(cls, config: AlertPolicyConfig, state: Mapping[str, Any]) -> AlertPolicy:
        """A policy in the state that :meth:`snapshot` gave."""
        policy = cls(config)
        policy._raised = bool(state["raised"])
        policy._high_count = int(state["high_count"])
        policy._low_count = int(state["low_count"])
        failure_time = state["predicted_failure_time"]
        policy._predicted_failure_time = None if failure_time is None else float(failure_time)
        policy._tsf_reached = bool(state["tsf_reached"])
        last = state["last_window_end_sample"]
        policy._last_window_end_sample = None if last is None else int(last)
        return policy

    def gap(self) -> None:
        """The stream had a gap: windows before and after it are not consecutive."""
        self._high_count = 0
        self._low_count = 0

    def _raise_reason(self, p_failure: float) -> TransitionReason | None:
        self._high_count = self._high_count + 1 if p_failure >= self._config.raise_threshold else 0
        return REASON_PROBABILITY_HIGH if self._high_count >= self._config.consecutive else None

    def _clear_reason(self, window_end_time: float, p_failure: float,
                      tsf_s: float) -> TransitionReason | None:
        config = self._config
        tsf_reset = self._tsf_reached and tsf_s < config.failure_tsf_s
        clock_passed = window_end_time > self._predicted_failure_time + config.failure_grace_s
        if tsf_reset or clock_passed:
            return REASON_FAILURE_PASSED
        self._tsf_reached = self._tsf_reached or tsf_s >= config.failure_tsf_s
        self._low_count = self._low_count + 1 if p_failure < config.clear_threshold else 0
        return REASON_PROBABILITY_DROPPED if self._low_count >= config.consecutive else None


def _as_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LabquakeError(f"alert policy {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise LabquakeError(f"alert policy {name} must be finite, got {value!r}")
    return float(value)
