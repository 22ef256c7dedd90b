"""Stream context: features of a window measured against the stream's own recent past.

One window of 150,000 samples is 37.5 ms of a fault whose cycles last 7–16 s. Its
absolute AE level says little on its own: the level of a whole cycle varies from one
cycle to the next by more than it rises in the last second before failure. What does
rise in every cycle is the level *relative to the same cycle's quiet phase*. So each
window also gets a few features computed from the windows before it on the same stream:

- ``<base>_bin<k>_rel`` for k = 0 .. ``bins - 1``: the mean of the base feature over
  the k-th slice of ``bin_s`` seconds of windows back from this one (slice 0 ends with
  this window), minus the stream's baseline: the ``quantile`` (default 0.2: the quiet
  level, untouched by bursts) of the base feature over the last ``lookback_s`` seconds
  of windows, this one included. A slice the stream has not reached yet reads 0 (the
  baseline). The default 12 slices of 0.125 s show the level's course over the last
  1.5 s: how fast it rises, and whether it is still speeding up;
- ``seconds_since_burst``: seconds since the last window whose ``log_variance`` exceeded
  the baseline by ``burst_log_ratio`` (a failure's burst; capped at ``max_since_s``).

Every value is a function of the stream's earlier windows in order, so the monitor, a
replay and training compute the same numbers: all go through :class:`StreamContext`,
whose compiled steps take a run of consecutive windows at once and give each window what
one step would (``kernels.context_steps``). A gap in a stream starts a fresh context (the
monitor's alert policy resets there too). The monitor stores the context with the alert
policy's state, so a restarted process continues each stream where it stopped.

Example:
    >>> config = ContextConfig()
    >>> context = StreamContext(config, windows_per_second=26.67)
    >>> row = context.step(np.zeros(len(config.bases), np.float32))
    >>> row.shape == (len(config.names),)
    True
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.features import kernels
from stream.core.errors import LabquakeError

# Part of a bundle's features fingerprint: a changed definition must not pass as the old.
CONTEXT_VERSION = 2
DEFAULT_BASES = ("log_variance", "log_rolling_std_50_p50", "log_rolling_std_1000_p05",
                 "log_max_abs")
DEFAULT_LOOKBACK_S = 5.0
DEFAULT_QUANTILE = 0.2
DEFAULT_BIN_S = 0.125
DEFAULT_BINS = 12
# A failure's burst raises the variance 70–190 times over the quiet level (the Penn State
# rows); 20 times (log 3.0) is well above any precursor.
DEFAULT_BURST_LOG_RATIO = float(np.log(20.0))
DEFAULT_MAX_SINCE_S = 20.0
# The most past windows a stream's context keeps (about 100 bytes each): a stream whose
# rate would need more is refused rather than allowed to take the monitor's memory.
MAX_CONTEXT_ROWS = 1 << 20
BURST_BASE = "log_variance"
SINCE_NAME = "seconds_since_burst"


@dataclasses.dataclass(frozen=True)
class ContextConfig:
    """What the context features are made of; stored in a bundle's metadata.

    Args:
        bases: per-window features (``model.features.extract`` names) measured against the past.
        lookback_s: seconds of past windows the baseline is taken over.
        quantile: the baseline's quantile of those windows, in (0, 1).
        bin_s: seconds of windows in each slice of the recent course.
        bins: slices of the recent course, each a feature per base.
        burst_log_ratio: natural-log excess of ``log_variance`` over the baseline that
            marks a failure's burst.
        max_since_s: ``seconds_since_burst`` before any burst, and its cap.

    Raises:
        LabquakeError: a value out of range.

    Example:
        >>> ContextConfig.from_dict(ContextConfig().to_dict()) == ContextConfig()
        True
    """

    bases: tuple[str, ...] = DEFAULT_BASES
    lookback_s: float = DEFAULT_LOOKBACK_S
    quantile: float = DEFAULT_QUANTILE
    bin_s: float = DEFAULT_BIN_S
    bins: int = DEFAULT_BINS
    burst_log_ratio: float = DEFAULT_BURST_LOG_RATIO
    max_since_s: float = DEFAULT_MAX_SINCE_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "bases", tuple(self.bases))
        if BURST_BASE not in self.bases:
            raise LabquakeError(f"context bases {list(self.bases)} lack {BURST_BASE}, "
                                "which marks failures; add it")
        if not 0.0 < self.quantile < 1.0:
            raise LabquakeError(f"context quantile {self.quantile} is not in (0, 1)")
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise LabquakeError(f"context bins {self.bins!r} must be a whole number >= 1")
        for name in ("lookback_s", "bin_s", "burst_log_ratio", "max_since_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise LabquakeError(f"context {name} {value} must be a positive number")

    @property
    def names(self) -> tuple[str, ...]:
        """The context feature names, in column order."""
        return (*(f"{base}_bin{slice_}_rel" for base in self.bases
                  for slice_ in range(self.bins)), SINCE_NAME)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the definitions' version."""
        return {**dataclasses.asdict(self), "bases": list(self.bases),
                "version": CONTEXT_VERSION}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ContextConfig:
        """The configuration a bundle stored.

        Raises:
            LabquakeError: it was written by another version of these definitions.
        """
        values = dict(values)
        version = values.pop("version", None)
        if version != CONTEXT_VERSION:
            raise LabquakeError(f"the bundle's context features are version {version}, this "
                                f"code computes version {CONTEXT_VERSION}; retrain the model "
                                "with this version (labquake train)")
        return cls(**values)


class StreamContext:
    """The context of one stream: feed it each window's base features, in order.

    Args:
        config: the definitions.
        windows_per_second: the stream's windows per second (sample rate / hop).

    Example:
        >>> context = StreamContext(ContextConfig(), windows_per_second=10.0)
        >>> float(context.step(np.ones(4, np.float32))[-1])  # no burst seen yet
        20.0
    """

    def __init__(self, config: ContextConfig, windows_per_second: float) -> None:
        if not (np.isfinite(windows_per_second) and windows_per_second > 0):
            raise ValueError(f"windows_per_second must be positive, got {windows_per_second}")
        self.config = config
        self.windows_per_second = float(windows_per_second)
        self._lookback = max(2, round(config.lookback_s * windows_per_second))
        self._bin = max(1, round(config.bin_s * windows_per_second))
        if max(self._lookback, config.bins * self._bin) > MAX_CONTEXT_ROWS:
            raise ValueError(
                f"{windows_per_second:g} windows per second would keep "
                f"{max(self._lookback, config.bins * self._bin)} windows of context, more "
                f"than the limit {MAX_CONTEXT_ROWS}; the sample rate is too high for this "
                "model's hop")
        self._burst_column = config.bases.index(BURST_BASE)
        # The last `capacity` rows, each written twice, `capacity` apart, so that they
        # always lie in order in one stretch of the buffer: a step costs the same
        # whatever the windows per second (a deque turned into an array did not).
        self._capacity = max(self._lookback, config.bins * self._bin)
        self._buffer = np.zeros((2 * self._capacity, len(config.bases)), np.float64)
        self._written = 0
        # The last `lookback` rows again, each column sorted: the baseline quantile is
        # read from them, one value out and one in a step (a partition of the whole
        # lookback each step cost more than everything else at 10 windows a hop).
        self._ordered = np.zeros((len(config.bases), self._lookback), np.float64)
        self._held = 0
        self._since_burst: int | None = None  # windows since the last burst

    @property
    def _past(self) -> np.ndarray:
        """The rows held, oldest first (a view)."""
        count = min(self._written, self._capacity)
        end = (self._written - 1) % self._capacity + self._capacity + 1 if count else 0
        return self._buffer[end - count:end]

    def step(self, base: np.ndarray) -> np.ndarray:
        """Take the next window's base features; return its context features (float32)."""
        return self.run(np.asarray(base, np.float32).reshape(1, len(self.config.bases)))[0]

    def run(self, bases: np.ndarray) -> np.ndarray:
        """:meth:`step` over consecutive windows: (n, len(bases)) in, (n, len(names)) out,
        in one compiled call (``kernels.context_steps``: the same operations as a step
        in NumPy, bit for bit).

        Per window: the baseline is ``np.quantile`` (linear) of the last ``lookback``
        windows' base features, this one included; slice k is the mean of the windows
        ``(k * bin, (k + 1) * bin]`` back (this one being 1 back) less the baseline, 0
        for a slice the stream has not reached; a burst is a ``log_variance`` over the
        baseline by ``burst_log_ratio``.
        """
        config = self.config
        bases = np.asarray(bases, np.float32).reshape(-1, len(config.bases))
        state = np.array([self._held, self._written,
                          -1 if self._since_burst is None else self._since_burst], np.int64)
        out = kernels.context_steps(
            bases, self._ordered, self._buffer, state, self._lookback, self._bin,
            config.bins, config.quantile, self._burst_column, config.burst_log_ratio,
            self.windows_per_second, config.max_since_s)
        self._held, self._written = int(state[0]), int(state[1])
        self._since_burst = None if state[2] < 0 else int(state[2])
        return out

    def reset(self) -> None:
        """Forget the past (after a gap in the stream)."""
        self._written = 0
        self._held = 0
        self._since_burst = None

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state, restored exactly by :meth:`restore`."""
        history = self._past.astype(np.float32)
        return {"history": base64.b64encode(history.tobytes()).decode("ascii"),
                "since_burst": self._since_burst,
                "windows_per_second": self.windows_per_second}

    @classmethod
    def restore(cls, config: ContextConfig, state: Mapping[str, Any]) -> StreamContext:
        """The context a :meth:`snapshot` describes."""
        context = cls(config, float(state["windows_per_second"]))
        history = np.frombuffer(base64.b64decode(state["history"]), np.float32)
        context.run(history.reshape(-1, len(config.bases))[-context._capacity:])
        since = state.get("since_burst")
        context._since_burst = None if since is None else int(since)
        return context


def context_features(config: ContextConfig, bases: np.ndarray, windows_per_second: float,
                     run_starts: Sequence[int] = (0,)) -> np.ndarray:
    """Context features of a record's windows, offline, exactly as a stream computes them.

    Args:
        config: the definitions.
        bases: float32 (n, len(config.bases)), the base features of consecutive windows.
        windows_per_second: sample rate / hop.
        run_starts: indices where a contiguous run of windows begins (a fresh context).

    Returns:
        float32 (n, len(config.names)).
    """
    bases = np.asarray(bases, np.float32)
    out = np.empty((len(bases), len(config.names)), np.float32)
    bounds = sorted({0, *run_starts, len(bases)})
    for low, high in itertools.pairwise(bounds):
        out[low:high] = StreamContext(config, windows_per_second).run(bases[low:high])
    return out
