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


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """The stream started its run ``run`` (1, 2, ...) at ``first_sample``; the previous
    run ended at ``previous_end_sample`` (exclusive), and what it had not completed is lost."""

    instrument: str
    channel: str
    run: int
    first_sample: int
    previous_end_sample: int | None
    run_id: int | None
    kind: str = "run"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SkippedChunkEvent:
    """A chunk of an earlier run, read again after a restart: its results are stored."""

    instrument: str
    channel: str
    first_sample: int
    kind: str = "skipped"


Event = (PredictionEvent | AlertEvent | GapEvent | RejectedChunkEvent | RunEvent
         | SkippedChunkEvent)


def alert_id(instrument: str, channel: str, window_end_sample: int, kind: str,
             run: int = 0) -> str:
    """The alert's id: the same alert from a replay or a restarted monitor has the same id;
    the alerts of a stream's later runs carry ``#run<k>``."""
    return f"{instrument}/{channel}{run_label(run)}@{window_end_sample}:{kind}"


def run_label(run: int) -> str:
    """What a stream's run adds to its alert ids (nothing for its first run)."""
    return f"#run{run}" if run else ""


def episode_id(instrument: str, channel: str, raise_sample: int, run: int = 0) -> str:
    """The episode's id, shared by all its alerts: the stream, its run and its raise's
    window."""
    return f"{instrument}/{channel}{run_label(run)}@{raise_sample}"
