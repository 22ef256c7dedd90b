"""The events of a stream: what the pipeline gives for each window, alert, gap and refusal.

They are the public objects labquake publishes: ``labquake replay`` prints them as JSON
lines and the monitor stores them in Redis, so the same window gives the same event
everywhere.

Example:
    >>> event = GapEvent("rig1", "ae0", expected_sample=1000, got_sample=1500)
    >>> event.to_json()["missing_samples"]
    500
    >>> alert_id("rig1", "ae0", 149999, "raised")
    'rig1/ae0@149999:raised'
"""

from __future__ import annotations

import dataclasses
from typing import Any

StreamId = tuple[str, str]

# Output precision: a batch's composition may change the last bits of a float32 result,
# so the published numbers are rounded to what a scientist reads and what replay and the
# live run reproduce identically.
TIME_DECIMALS = 4
PROBABILITY_DECIMALS = 5
# Instrument clock times are rounded to the nanosecond: the same sample's time computed
# from differently cut chunks then reads the same.
CLOCK_DECIMALS = 9


@dataclasses.dataclass(frozen=True)
class PredictionEvent:
    """The model's reading of one window."""

    instrument: str
    channel: str
    window_end_sample: int
    window_end_time: float
    ttf_s: float
    tsf_s: float
    p_failure: float
    model_version: str
    warming_up: bool = False  # the stream's context does not yet hold what the model reads
    kind: str = "prediction"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AlertEvent:
    """An alert of an episode: the public alert object (docs/alert.schema.json)."""

    alert_id: str
    kind: str
    instrument: str
    channel: str
    window_end_sample: int
    window_end_time: float
    ttf_s: float
    tsf_s: float
    p_failure: float
    threshold: float
    model_version: str
    emitted_at: float
    reason: str
    episode_id: str
    failure_time: float | None
    failure_time_lower: float | None
    failure_time_upper: float | None
    interval_coverage: float | None
    warming_up: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GapEvent:
    """The stream's sample counter jumped: no window spans the missing samples."""

    instrument: str
    channel: str
    expected_sample: int
    got_sample: int
    kind: str = "gap"

    @property
    def missing_samples(self) -> int:
        return self.got_sample - self.expected_sample

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "missing_samples": self.missing_samples}


@dataclasses.dataclass(frozen=True)
class RejectedChunkEvent:
    """A chunk that contradicts its stream was not used; ``reason`` says why, in one line."""

    instrument: str
    channel: str
    first_sample: int
    reason: str
    kind: str = "rejected"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Event = PredictionEvent | AlertEvent | GapEvent | RejectedChunkEvent


def alert_id(instrument: str, channel: str, window_end_sample: int, kind: str) -> str:
    """The alert's id: the same alert from a replay or a restarted monitor has the same id."""
    return f"{instrument}/{channel}@{window_end_sample}:{kind}"


def episode_id(instrument: str, channel: str, raise_sample: int) -> str:
    """The episode's id, shared by all its alerts: the stream and its raise's window."""
    return f"{instrument}/{channel}@{raise_sample}"
