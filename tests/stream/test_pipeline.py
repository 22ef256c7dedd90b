"""The pipeline core over plain chunks: batching, order, gaps, restarts."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.alert_policy import AlertPolicyConfig
from stream.core.events import AlertEvent, GapEvent, PredictionEvent
from stream.core.wire import Chunk
from stream.engine.pipeline import Pipeline

WINDOW = 100
RATE = 1000.0


class LoudnessModel:
    """P(failure) follows the window's loudness: a deterministic stand-in for a network."""

    version = "loudness-1"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict(self, windows, start_samples):
        self.batch_sizes.append(len(windows))
        loudness = np.abs(windows.astype(np.float64)).mean(axis=1)
        p_failure = np.clip(loudness / 100.0, 0.0, 1.0)
        return 10.0 - loudness / 20.0, start_samples / RATE, p_failure


def _record(n_windows: int, seed: int = 0) -> np.ndarray:
    """Quiet samples with loud stretches, so the policy raises and clears several times."""
    rng = np.random.default_rng(seed)
    level = np.where((np.arange(n_windows) // 5) % 3 == 2, 90, 5)
    return (rng.normal(0, 1, (n_windows, WINDOW)) * level[:, None]).astype(np.int16).ravel()


def _chunks(record: np.ndarray, sizes, instrument="rig1", channel="ae0", first=0):
    position = 0
    for size in sizes:
        if position >= len(record):
            return
        part = record[position:position + size]
        yield Chunk(instrument, channel, first + position, RATE, (first + position) / RATE, part)
        position += len(part)


def _run(pipeline: Pipeline, chunks) -> list:
    events = []
    for chunk in chunks:
        events.extend(pipeline.add(chunk))
    return events + pipeline.flush()


def _logged(events):
    """The alerts a sink logs: the first of each id (a re-sent one is absorbed)."""
    logged = {}
    for event in events:
        if isinstance(event, AlertEvent):
            logged.setdefault(event.alert_id, event)
    return list(logged.values())


def _comparable(events) -> list[dict]:
    return [{k: v for k, v in e.to_json().items() if k != "emitted_at"} for e in events]


# Short enough times that the loud stretches of _record give two whole episodes.
EPISODES = AlertPolicyConfig(withdraw_after_s=0.3, refractory_s=0.3, update_step_s=0.25)


def test_the_same_record_in_any_chunking_gives_the_same_events():
    record = _record(40)
    reference = _run(Pipeline(LoudnessModel(), WINDOW, policy_config=EPISODES, max_batch=7),
                     _chunks(record, [WINDOW] * 50))
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 333, 500)
    other = _run(Pipeline(LoudnessModel(), WINDOW, policy_config=EPISODES, max_batch=3),
                 _chunks(record, sizes))
    assert _comparable(other) == _comparable(reference)
    alerts = [e for e in reference if isinstance(e, AlertEvent)]
    assert [a.kind for a in alerts] == (["raised"] + ["updated"] * 3 + ["withdrawn"]
                                        + ["raised"] + ["updated"] * 4 + ["withdrawn"])
    # Each episode's alerts share the id of its raise.
    assert [a.episode_id for a in alerts] == (
        [f"rig1/ae0@{alerts[0].window_end_sample}"] * 5
        + [f"rig1/ae0@{alerts[5].window_end_sample}"] * 6)
    assert len([e for e in reference if isinstance(e, PredictionEvent)]) == 40


def test_alert_objects_carry_the_public_fields():
    events = _run(Pipeline(LoudnessModel(), WINDOW), _chunks(_record(20), [250] * 10))
    alert = next(e for e in events if isinstance(e, AlertEvent)).to_json()
    assert set(alert) >= {"alert_id", "kind", "instrument", "channel", "window_end_sample",
                          "window_end_time", "ttf_s", "tsf_s", "p_failure", "threshold",
                          "model_version", "emitted_at"}
    assert alert["alert_id"] == f"rig1/ae0@{alert['window_end_sample']}:raised"
    assert alert["episode_id"] == f"rig1/ae0@{alert['window_end_sample']}"
    assert alert["failure_time"] == round(alert["window_end_time"] + alert["ttf_s"], 6)
    assert alert["warming_up"] is False
    assert alert["window_end_sample"] % WINDOW == WINDOW - 1
    assert alert["threshold"] == AlertPolicyConfig().raise_threshold


def test_windows_of_many_streams_share_batches_and_keep_their_order():
    model = LoudnessModel()
    pipeline = Pipeline(model, WINDOW, max_batch=8)
    records = {f"rig{i}": _record(12, seed=i) for i in range(4)}
    interleaved = []
    for position in range(0, 12 * WINDOW, 50):
        for name, record in records.items():
            interleaved.append(Chunk(name, "ae0", position, RATE, position / RATE,
                                     record[position:position + 50]))
    events = _run(pipeline, interleaved)
    assert max(model.batch_sizes) == 8 and sum(model.batch_sizes) == 48
    for name, record in records.items():
        alone = _run(Pipeline(LoudnessModel(), WINDOW), _chunks(record, [50] * 24, name))
        mine = [e for e in events if e.instrument == name]
        assert _comparable(mine) == _comparable(alone)


def test_a_gap_is_reported_and_no_window_spans_it():
    record = _record(10)
    chunks = list(_chunks(record, [WINDOW // 2] * 20))
    del chunks[7]  # samples 350..399 never arrive
    events = _run(Pipeline(LoudnessModel(), WINDOW), chunks)
    gaps = [e for e in events if isinstance(e, GapEvent)]
    assert [(g.expected_sample, g.got_sample, g.missing_samples) for g in gaps] == [(350, 400, 50)]
    ends = [e.window_end_sample for e in events if isinstance(e, PredictionEvent)]
    assert 399 not in ends and 499 in ends  # window 300..399 lost, 400..499 complete
    assert len(ends) == 9


def test_oldest_needed_sample_covers_windows_waiting_for_the_model():
    pipeline = Pipeline(LoudnessModel(), WINDOW, max_batch=100)
    stream = ("rig1", "ae0")
    assert pipeline.oldest_needed_sample(stream) is None
    for chunk in _chunks(_record(3), [WINDOW] * 2 + [30]):
        pipeline.add(chunk)
    # windows 0..99 and 100..199 wait for a batch; 200.. is open
    assert pipeline.oldest_needed_sample(stream) == 0
    pipeline.flush()
    assert pipeline.oldest_needed_sample(stream) == 200


def test_a_restart_from_the_oldest_needed_sample_with_the_saved_policy_gives_the_same_alerts():
    record = _record(45)
    chunks = list(_chunks(record, [37] * 200))
    uninterrupted = [e for e in _run(Pipeline(LoudnessModel(), WINDOW), chunks)
                     if isinstance(e, AlertEvent)]
    assert len(uninterrupted) >= 4

    for stop_at in (40, 61, 77, 100):  # kill points, in chunks
        first = Pipeline(LoudnessModel(), WINDOW, max_batch=4)
        before = []
        for chunk in chunks[:stop_at]:
            before.extend(first.add(chunk))
        stream = ("rig1", "ae0")
        # What a sink holds at the kill: the policy after the last delivered result.
        saved = first.policy_snapshot(stream)
        resume_sample = first.oldest_needed_sample(stream)
        resume = next(i for i, c in enumerate(chunks) if c.end_sample > resume_sample)
        second = Pipeline(LoudnessModel(), WINDOW, max_batch=4,
                          policy_state=lambda stream_id, saved=saved: saved)
        after = _run(second, chunks[resume:])
        assert _comparable(_logged(before + after)) == _comparable(uninterrupted), stop_at


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        Pipeline(LoudnessModel(), WINDOW, max_batch=0)


class ContextLoudnessModel(LoudnessModel):
    """P(failure) follows the window's loudness against its stream's recent past, as a
    model with a stream context (model/features/context.py) reads it."""

    version = "context-loudness-1"

    def __init__(self) -> None:
        from model.features.context import ContextConfig

        super().__init__()
        self.context = ContextConfig(bases=("log_variance",), lookback_s=1.0, bin_s=0.2, bins=3)
        self.sample_rate = RATE

    def new_context(self, sample_rate, hop):
        from model.features.context import StreamContext

        return StreamContext(self.context, sample_rate / hop)

    def restore_context(self, state):
        from model.features.context import StreamContext

        return StreamContext.restore(self.context, state)

    def predict(self, windows, start_samples):
        raise AssertionError("a model with a context is called with its streams' contexts")

    def predict_in_context(self, windows, start_samples, contexts):
        self.batch_sizes.append(len(windows))
        loudness = np.log1p(np.abs(windows.astype(np.float64)).mean(axis=1))
        rows = np.stack([context(np.array([value], np.float32))
                         for context, value in zip(contexts, loudness, strict=True)])
        p_failure = np.clip(rows[:, 0] / 3.0, 0.0, 1.0)
        return 10.0 - rows[:, 1], rows[:, -1], p_failure


def test_a_model_with_a_context_gives_the_same_events_in_any_chunking_and_batching():
    record = np.concatenate([_record(45, seed=1), _record(45, seed=2)])
    reference = _comparable(_run(Pipeline(ContextLoudnessModel(), WINDOW, max_batch=1),
                                 _chunks(record, [WINDOW] * 100)))
    assert sum(e["kind"] == "raised" for e in reference) >= 3
    for sizes, batch in (([37] * 300, 4), ([1000] * 10, 64), ([263] * 40, 7)):
        events = _run(Pipeline(ContextLoudnessModel(), WINDOW, max_batch=batch),
                      _chunks(record, sizes))
        assert _comparable(events) == reference, (sizes[0], batch)


def test_two_streams_keep_two_contexts():
    first, second = _record(30, seed=3), _record(30, seed=4) * 3
    alone = [_comparable(_run(Pipeline(ContextLoudnessModel(), WINDOW), _chunks(r, [250] * 20,
                                                                           instrument=name)))
             for r, name in ((first, "rig1"), (second, "rig2"))]
    pipeline = Pipeline(ContextLoudnessModel(), WINDOW, max_batch=5)
    events = []
    for one, two in zip(_chunks(first, [250] * 20, instrument="rig1"),
                        _chunks(second, [250] * 20, instrument="rig2"), strict=True):
        events.extend(pipeline.add(one))
        events.extend(pipeline.add(two))
    together = _comparable(events + pipeline.flush())
    assert [e for e in together if e["instrument"] == "rig1"] == alone[0]
    assert [e for e in together if e["instrument"] == "rig2"] == alone[1]


def test_a_restart_with_the_saved_context_gives_the_same_alerts_and_later_predictions():
    import json

    record = _record(90, seed=5)
    chunks = list(_chunks(record, [37] * 400))
    uninterrupted = _run(Pipeline(ContextLoudnessModel(), WINDOW), chunks)
    alerts = [e for e in uninterrupted if isinstance(e, AlertEvent)]
    assert len(alerts) >= 4
    for stop_at in (40, 61, 77, 150, 201):
        first = Pipeline(ContextLoudnessModel(), WINDOW, max_batch=4)
        before = []
        for chunk in chunks[:stop_at]:
            before.extend(first.add(chunk))
        stream = ("rig1", "ae0")
        # What a sink holds at the kill, through JSON as in Redis.
        saved = json.loads(json.dumps(first.policy_snapshot(stream)))
        assert "context" in saved
        # The source may resume before that: the offset commit trails the sink, so
        # windows the saved state already holds are read again.
        resume_sample = first.oldest_needed_sample(stream) - 3 * WINDOW * (stop_at % 2)
        resume = next(i for i, c in enumerate(chunks) if c.end_sample > resume_sample)
        second = Pipeline(ContextLoudnessModel(), WINDOW, max_batch=4,
                          policy_state=lambda stream_id, saved=saved: saved)
        after = _run(second, chunks[resume:])
        assert _comparable(_logged(before + after)) == _comparable(alerts), stop_at
        # Every window after the saved one is predicted as without the restart, and the
        # ones the saved state holds, read again, are skipped, not computed again.
        last = saved["last_window_end_sample"]
        predicted = [e for e in after if isinstance(e, PredictionEvent)]
        expected = [e for e in uninterrupted
                    if isinstance(e, PredictionEvent) and e.window_end_sample > last]
        assert _comparable(predicted) == _comparable(expected), stop_at
        read_again = (last - (chunks[resume].first_sample + WINDOW - 1)) // WINDOW + 1
        assert second.counters.seen_windows == max(0, read_again), stop_at
        assert second.counters.windows == len(predicted), stop_at


def test_a_gap_starts_the_context_afresh():
    record = _record(40, seed=6)
    events = _run(Pipeline(ContextLoudnessModel(), WINDOW),
                  [*_chunks(record[:2000], [500] * 4),
                   *_chunks(record[2000:], [500] * 4, first=2000 + 10 * WINDOW)])
    assert any(isinstance(e, GapEvent) for e in events)
    after_gap = [e for e in events if isinstance(e, PredictionEvent)
                 and e.window_end_sample > 2000 + 10 * WINDOW]
    fresh = [e for e in _run(Pipeline(ContextLoudnessModel(), WINDOW),
                             _chunks(record[2000:], [500] * 4, first=2000 + 10 * WINDOW))
             if isinstance(e, PredictionEvent)]
    assert _comparable(after_gap) == _comparable(fresh)


class FeatureVarianceModel:
    """P(failure) from the windows' log variance, through model.features: with a hop that
    lets windows share blocks, the pipeline hands it a block cache and each window's
    stream."""

    version = "variance-1"

    def __init__(self, window: int, shares: bool = True) -> None:
        self.window = window
        self.shares = shares
        self.cached_calls = 0

    def block_cache(self, hop: int):
        from model.features import extract as features

        if not (self.shares and features.shares_blocks(self.window, hop)):
            return None
        return features.BlockCache(self.window, hop)

    def predict(self, windows, start_samples):
        return self.predict_in_context(windows, start_samples, None)

    def predict_in_context(self, windows, start_samples, contexts, cache=None, streams=None):
        from model.features import extract as features

        assert contexts is None
        self.cached_calls += cache is not None
        variance = features.extract(windows, start_samples, names=["log_variance"],
                                    cache=cache, streams=streams)[:, 0].astype(np.float64)
        return 20.0 - variance, start_samples / RATE, np.clip((variance - 4.0) / 4.0, 0.0, 1.0)


def test_overlapping_windows_through_a_block_cache_give_each_windows_own_result():
    window, hop = 15_000, 3_000
    rng = np.random.default_rng(9)
    level = np.repeat(np.where(np.arange(12) % 4 == 3, 300.0, 4.0), 6_000)
    record = (rng.normal(0, 1, len(level)) * level).astype(np.int16)
    chunks = list(_chunks(record, [4_096] * 20))
    del chunks[9]  # a gap: the stream's blocks are forgotten, its windows start afresh
    shared_model = FeatureVarianceModel(window)
    shared = _run(Pipeline(shared_model, window, hop=hop, max_batch=4), chunks)
    alone = _run(Pipeline(FeatureVarianceModel(window, shares=False), window, hop=hop,
                          max_batch=4), chunks)
    assert shared_model.cached_calls > 0
    assert [type(e) for e in shared] == [type(e) for e in alone]
    predictions = [(a, b) for a, b in zip(shared, alone, strict=True)
                   if isinstance(a, PredictionEvent)]
    ends = [ours.window_end_sample for ours, _ in predictions]
    # Windows before the gap (samples 36,864 to 40,959) and after it, from fresh blocks.
    assert min(ends) < 36_864 and max(ends) - window + 1 > 40_960 and len(ends) >= 10
    for ours, theirs in predictions:
        assert ours.window_end_sample == theirs.window_end_sample
        assert ours.ttf_s == pytest.approx(theirs.ttf_s, abs=2e-4)
        assert ours.p_failure == pytest.approx(theirs.p_failure, abs=2e-5)
