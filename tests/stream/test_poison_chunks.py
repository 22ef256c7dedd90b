"""Poison chunks: any header with a valid checksum, through the decoder AND the pipeline.

Each case forges messages field by field (any first sample, rate and start time, valid
CRC), decodes them as the monitor's source does, and feeds what decodes to a pipeline
whose model keeps a real stream context (``model.context.StreamContext``), between the
chunks of an honest stream. Nothing may raise; what the decoder takes must be within
the documented ranges; the honest stream's events must be those of a run without the
poison.
"""

from __future__ import annotations

import math
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.features.context import ContextConfig, StreamContext
from stream.core import wire
from stream.core.alert_policy import AlertPolicyConfig
from stream.core.events import AlertEvent, PredictionEvent, RejectedChunkEvent
from stream.engine.pipeline import Pipeline
from stream.io.kafka_source import _decode

pytestmark = pytest.mark.unit

WINDOW = 64
HOP = 32
RATE = 1000.0
CASES = int(os.environ.get("LABQUAKE_FUZZ_CASES", "150"))


class ContextModel:
    """A stand-in network that reads a real stream context, as the bundled model does."""

    version = "context-1"
    sample_rate = RATE

    def __init__(self) -> None:
        self.context = ContextConfig()

    def new_context(self, sample_rate: float, hop: int) -> StreamContext:
        return StreamContext(self.context, sample_rate / hop)

    def restore_context(self, state):
        raise AssertionError("no stored state in these runs")

    def predict_in_context(self, windows, start_samples, contexts):
        bases = np.log1p(np.abs(windows.astype(np.float64))).mean(axis=1)
        rows = np.stack([context(np.full(len(self.context.bases), base))
                         for context, base in zip(contexts, bases, strict=True)])
        p_failure = np.clip(np.nan_to_num(rows[:, 0]) / 50.0 + bases / 10.0, 0.0, 1.0)
        return np.full(len(windows), 5.0), start_samples % 1000 / RATE, p_failure


def forge(first_sample: int, sample_rate: float, start_time: float, instrument: bytes,
          channel: bytes, samples: bytes) -> bytes:
    """A message with these header values and a valid checksum, bypassing all checks."""
    head = struct.pack("<4sBBH", wire.MAGIC, 1, 1, 0)
    rest = struct.pack("<IqddBB", len(samples) // 2, first_sample, sample_rate, start_time,
                       len(instrument), len(channel)) + instrument + channel + samples
    return head + struct.pack("<I", zlib.crc32(rest, zlib.crc32(head))) + rest


def honest_chunks() -> list[wire.Chunk]:
    rng = np.random.default_rng(7)
    level = np.repeat([5, 5, 90, 90, 5, 90], 200)
    samples = (rng.normal(0, 1, len(level)) * level).astype(np.int16)
    return [wire.Chunk("good", "ae0", start, RATE, start / RATE, samples[start:start + 100])
            for start in range(0, len(samples), 100)]


def run(messages: list[tuple[bytes, bytes]]) -> tuple[list, list[str]]:
    pipeline = Pipeline(ContextModel(), window=WINDOW, hop=HOP, max_batch=8,
                        policy_config=AlertPolicyConfig(raise_threshold=0.35,
                                                        clear_threshold=0.25, consecutive=1),
                        clock=lambda: 0.0)
    events, refused = [], []
    for key, value in messages:
        chunk, reason = _decode(key, value)
        if chunk is None:
            refused.append(reason)
            continue
        assert chunk.first_sample >= 0 and chunk.end_sample <= wire.MAX_END_SAMPLE
        assert wire.MIN_SAMPLE_RATE <= chunk.sample_rate <= wire.MAX_SAMPLE_RATE
        assert math.isfinite(chunk.start_time)
        for event in pipeline.add(chunk):
            if isinstance(event, RejectedChunkEvent):
                refused.append(event.reason)
            events.append(event)
    return events + pipeline.flush(), refused


def of_stream(events: list, stream: tuple[str, str]) -> list:
    return [event for event in events if isinstance(event, PredictionEvent | AlertEvent)
            and (event.instrument, event.channel) == stream]


GOOD = ("good", "ae0")
HONEST = [(wire.message_key("good", "ae0"), wire.encode(chunk)) for chunk in honest_chunks()]
BASELINE = of_stream(run(HONEST)[0], GOOD)

first_samples = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, 2**40, 2**62 - 100, 2**62, 2**63 - 300_000, 2**63 - 1, -1]),
    st.integers(0, 10_000),
)
sample_rates = st.one_of(
    st.floats(),
    st.sampled_from([1e300, 4e13, 5e-324, 1e9, 1e-3, 1e6, 1e3, 0.0, -1e3]),
)
start_times = st.one_of(st.floats(), st.sampled_from([0.0, 1e12, 1e300, -1e308]))
headers = st.tuples(
    first_samples, sample_rates, start_times,
    st.sampled_from([b"p1", b"p2", b"good"]), st.sampled_from([b"ae0", b"ae1"]),
    st.integers(1, 200).map(lambda n: np.arange(n, dtype="<i2").tobytes()),
)


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(headers, min_size=1, max_size=12), st.data())
def test_forged_headers_through_the_whole_pipeline_never_raise(forged, data):
    poison = []
    for first_sample, rate, start_time, instrument, channel, samples in forged:
        if instrument == b"good" and channel == b"ae0":
            channel = b"ae1"  # the honest stream's own key is item 3's far-jump rule
        poison.append((instrument + b"/" + channel,
                       forge(first_sample, rate, start_time, instrument, channel, samples)))
    messages = list(HONEST)
    for message in poison:
        messages.insert(data.draw(st.integers(0, len(messages))), message)
    events, refused = run(messages)
    assert all(reason and "\n" not in reason for reason in refused)
    assert of_stream(events, GOOD) == BASELINE


@pytest.mark.parametrize(("first_sample", "rate", "start_time", "reason"), [
    (2**63 - 300_000, 1e3, 0.0, "BadHeader: first_sample"),
    (2**62 - 10, 1e3, 0.0, "BadHeader: first_sample"),
    (0, 1e300, 0.0, "BadHeader: sample_rate"),
    (0, 4e13, 0.0, "BadHeader: sample_rate"),
    (0, 5e-324, 0.0, "BadHeader: sample_rate"),
    (0, 1e3, 1e300, "BadHeader: start_time"),
    (0, 1e9, 0.0, "UnsupportedRate"),  # in the wire's range, beyond this model's context
])
def test_each_poison_named_in_the_issue_is_refused_with_its_reason(first_sample, rate,
                                                                   start_time, reason):
    message = forge(first_sample, rate, start_time, b"p1", b"ae0",
                    np.zeros(100, "<i2").tobytes())
    events, refused = run([(b"p1/ae0", message), *HONEST])
    assert len(refused) == 1 and refused[0].startswith(reason)
    assert of_stream(events, GOOD) == BASELINE
