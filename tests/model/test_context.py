"""Stream context features: definitions, streaming = offline, snapshot, config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.features.context import (
    CONTEXT_VERSION,
    SINCE_NAME,
    ContextConfig,
    StreamContext,
    context_features,
)
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

ONE_BASE = ContextConfig(bases=("log_variance",), lookback_s=1.0, bin_s=0.2, bins=3)
RATE = 10.0  # windows per second: lookback 10 windows, slices of 2


def _bases(n: int, seed: int = 0, columns: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(2.0, 0.3, (n, columns)).astype(np.float32)


def test_names_follow_the_bases_then_the_burst_clock():
    assert ONE_BASE.names == ("log_variance_bin0_rel", "log_variance_bin1_rel",
                              "log_variance_bin2_rel", SINCE_NAME)
    config = ContextConfig()
    assert len(config.names) == config.bins * len(config.bases) + 1
    assert config.names[config.bins] == f"{config.bases[1]}_bin0_rel"


def test_each_feature_is_its_one_line_definition():
    values = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 1.0, 5.0, 2.0, 2.0, 2.0, 2.0, 9.0,
                       1.0, 1.0], np.float32)
    rows = StreamContext(ONE_BASE, RATE).run(values[:, None])
    # Baseline: 20th percentile of the last 10 windows; slices of 2 windows back.
    for index, row in enumerate(rows):
        past = values[: index + 1].astype(np.float64)
        baseline = np.quantile(past[-10:], 0.2)
        expected = []
        for slice_ in range(3):
            stop = len(past) - 2 * slice_
            expected.append(past[max(0, stop - 2):stop].mean() - baseline if stop > 0 else 0.0)
        np.testing.assert_allclose(row[:3], expected, rtol=1e-6, atol=1e-7)
    # After 1,1,1,1,3: the last slice (1, 3) is 1 above the quiet baseline of 1.
    assert rows[4, 0] == pytest.approx(1.0) and rows[4, 1] == pytest.approx(0.0)
    assert rows[0, 1] == 0.0 and rows[0, 2] == 0.0  # slices not yet reached


def test_seconds_since_burst_counts_from_a_failure_burst():
    level = np.full(30, 1.0, np.float32)
    level[12] = 1.0 + ONE_BASE.burst_log_ratio + 0.5  # a failure's burst
    level[20] = 1.0 + ONE_BASE.burst_log_ratio - 0.5  # a precursor: not a burst
    since = StreamContext(ONE_BASE, RATE).run(level[:, None])[:, -1]
    assert np.all(since[:12] == ONE_BASE.max_since_s)
    np.testing.assert_allclose(since[12:], np.arange(18) / RATE, rtol=1e-6)
    capped = StreamContext(ONE_BASE, 0.1).run(level[:, None])[:, -1]
    assert capped[-1] == ONE_BASE.max_since_s  # 17 windows at 0.1/s: 170 s, capped at 20


def test_offline_equals_one_window_at_a_time_and_restarts_at_run_starts():
    config = ContextConfig()
    bases = _bases(300)
    stepped = StreamContext(config, 26.7)
    one_by_one = np.stack([stepped.step(row) for row in bases])
    np.testing.assert_array_equal(context_features(config, bases, 26.7), one_by_one)
    split = context_features(config, bases, 26.7, run_starts=[0, 120])
    np.testing.assert_array_equal(split[:120], one_by_one[:120])
    np.testing.assert_array_equal(split[120:], context_features(config, bases[120:], 26.7))
    assert not np.array_equal(split[120:], one_by_one[120:])


@pytest.mark.parametrize("stop", [0, 1, 7, 150, 299])
def test_a_snapshot_through_json_continues_exactly(stop: int):
    config = ContextConfig()
    bases = _bases(300, seed=stop)
    bases[100, 0] += 10.0  # a burst, so the clock is running at some stops
    reference = StreamContext(config, 26.7).run(bases)
    first = StreamContext(config, 26.7)
    first.run(bases[:stop])
    state = json.loads(json.dumps(first.snapshot()))
    second = StreamContext.restore(config, state)
    np.testing.assert_array_equal(second.run(bases[stop:]), reference[stop:])


def test_reset_forgets_the_past():
    config = ContextConfig()
    bases = _bases(50)
    context = StreamContext(config, 26.7)
    context.run(bases[:30])
    context.reset()
    np.testing.assert_array_equal(context.run(bases[30:]),
                                  StreamContext(config, 26.7).run(bases[30:]))


def test_config_round_trips_and_refuses_another_version():
    config = ContextConfig(lookback_s=4.0)
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["version"] == CONTEXT_VERSION
    assert ContextConfig.from_dict(stored) == config
    with pytest.raises(LabquakeError, match="retrain"):
        ContextConfig.from_dict({**stored, "version": CONTEXT_VERSION + 1})


@pytest.mark.parametrize(("changes", "message"), [
    ({"quantile": 1.0}, "quantile"),
    ({"lookback_s": 0.0}, "lookback_s"),
    ({"bin_s": float("nan")}, "bin_s"),
    ({"bins": 0}, "bins"),
    ({"bases": ("log_max_abs",)}, "log_variance"),
])
def test_a_bad_config_is_refused(changes: dict, message: str):
    with pytest.raises(LabquakeError, match=message):
        ContextConfig(**changes)


def test_windows_per_second_must_be_positive():
    with pytest.raises(ValueError, match="windows_per_second"):
        StreamContext(ContextConfig(), 0.0)


def numpy_steps(config: ContextConfig, windows_per_second: float,
                bases: np.ndarray) -> np.ndarray:
    """The definitions in NumPy, one window at a time: the reference the compiled steps
    must equal bit for bit."""
    lookback = max(2, round(config.lookback_s * windows_per_second))
    width = max(1, round(config.bin_s * windows_per_second))
    burst = config.bases.index("log_variance")
    past: list[np.ndarray] = []
    since = None
    out = []
    for row in np.asarray(bases, np.float32):
        past.append(row.astype(np.float64))
        held = np.array(past)
        baseline = np.quantile(held[-lookback:], config.quantile, axis=0)
        slices = np.zeros((len(config.bases), config.bins))
        for index in range(min(config.bins, -(-len(held) // width))):
            stop = len(held) - index * width
            slices[:, index] = held[max(0, stop - width):stop].mean(axis=0) - baseline
        if row[burst] - baseline[burst] > config.burst_log_ratio:
            since = 0
        elif since is not None:
            since += 1
        seconds = (config.max_since_s if since is None
                   else min(config.max_since_s, since / windows_per_second))
        out.append(np.append(slices.reshape(-1), seconds).astype(np.float32))
    return np.array(out)


@pytest.mark.parametrize("windows_per_second", [3.0, 26.7, 266.7])
@pytest.mark.parametrize("quantile", [0.05, 0.2, 0.5, 0.75])
def test_the_compiled_steps_are_the_numpy_definitions_bit_for_bit(windows_per_second,
                                                                   quantile):
    config = ContextConfig(quantile=quantile)
    values = np.random.default_rng(7).normal(2.0, 0.5, (1_500, len(config.bases)))
    values[::3, 1] = 0.25  # ties
    values[::97, 0] += 4.0  # bursts
    values = values.astype(np.float32)
    expected = numpy_steps(config, windows_per_second, values)
    context = StreamContext(config, windows_per_second)
    # A step at a time and runs of several windows, as the monitor's batches cut them.
    got = np.concatenate([context.step(values[0])[np.newaxis], context.run(values[1:700]),
                          *(context.step(row)[np.newaxis] for row in values[700:705]),
                          context.run(values[705:])])
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_a_snapshot_taken_after_the_history_wrapped_continues_the_stream():
    # At 266.7 windows a second the history holds 1,334 rows: 3,000 steps wrap it twice.
    config = ContextConfig()
    bases = np.random.default_rng(1).normal(size=(3_000, len(config.bases))).astype(np.float32)
    bases[::200, config.bases.index("log_max_abs")] += 3.0  # bursts
    whole = StreamContext(config, windows_per_second=266.7).run(bases)
    first = StreamContext(config, windows_per_second=266.7)
    first.run(bases[:2_100])
    resumed = StreamContext.restore(config, json.loads(json.dumps(first.snapshot())))
    np.testing.assert_array_equal(resumed.run(bases[2_100:]), whole[2_100:])
