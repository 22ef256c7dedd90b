"""Streams that stop sending are forgotten after the idle timeout, and their memory freed."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from stream.core.wire import Chunk
from stream.engine.pipeline import Pipeline
from tests.stream.test_pipeline import LoudnessModel

pytestmark = pytest.mark.unit

WINDOW = 15_000
ONE_OFF_STREAMS = 1_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _one_off(pipeline: Pipeline, index: int) -> None:
    samples = np.full(10_000, index % 100, np.int16)  # less than a window: held, open
    assert pipeline.add(Chunk(f"once{index}", "ae0", 0, 1e5, 0.0, samples)) == []


def test_one_off_streams_are_forgotten_after_the_idle_time_and_their_memory_freed():
    clock = Clock()
    pipeline = Pipeline(LoudnessModel(), window=WINDOW, clock=clock)
    _one_off(pipeline, -1)  # the first stream's one-time costs, outside the measure
    pipeline.drop_idle(0.0)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for index in range(ONE_OFF_STREAMS):
            _one_off(pipeline, index)
        held = tracemalloc.get_traced_memory()[0] - start
        clock.now = 59.0
        assert pipeline.drop_idle(60.0) == []
        clock.now = 60.0
        assert len(pipeline.drop_idle(60.0)) == ONE_OFF_STREAMS
        left = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    per_stream = held / ONE_OFF_STREAMS
    print(f"{ONE_OFF_STREAMS} one-off streams held {held / 2**20:.1f} MiB "
          f"({per_stream / 1024:.1f} KiB each); after the idle time {left / 2**20:.2f} MiB")
    assert pipeline.streams == []
    assert per_stream >= 2 * 10_000  # the samples of its open window, at least
    assert left <= 0.1 * held


def test_a_stream_with_a_window_waiting_is_kept_until_its_batch_ran():
    clock = Clock()
    pipeline = Pipeline(LoudnessModel(), window=100, max_batch=64, max_wait_s=1e9,
                        clock=clock)
    pipeline.add(Chunk("rig1", "ae0", 0, 1e3, 0.0, np.zeros(100, np.int16)))
    clock.now = 1e6
    assert pipeline.drop_idle(1.0) == []
    pipeline.flush()
    assert pipeline.drop_idle(1.0) == [("rig1", "ae0")]
