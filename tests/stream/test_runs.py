"""Runs of an instrument (a counter that starts again) and far jumps of its counter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stream.core.alert_policy import AlertPolicyConfig
from stream.core.events import (
    AlertEvent,
    GapEvent,
    PredictionEvent,
    RejectedChunkEvent,
    RunEvent,
    SkippedChunkEvent,
)
from stream.core.wire import Chunk
from stream.engine.pipeline import FAR_JUMP_LIMIT_S, Pipeline
from tests.stream.test_pipeline import RATE, WINDOW, LoudnessModel, _chunks, _record

pytestmark = pytest.mark.unit

POLICY = AlertPolicyConfig(raise_threshold=0.5, clear_threshold=0.3, consecutive=2)
RECORD = _record(150)  # 15,000 samples: 15 s at 1 kHz, more than the run margin of 10 s
SIZES = [700] * 40


def _pipeline(**kwargs) -> Pipeline:
    return Pipeline(LoudnessModel(), window=WINDOW, policy_config=POLICY, max_batch=16,
                    clock=lambda: 0.0, **kwargs)


def _feed(pipeline: Pipeline, chunks, positions=None) -> list:
    events = []
    for index, chunk in enumerate(chunks):
        events.extend(pipeline.add(chunk, None if positions is None else positions[index]))
    return events + pipeline.flush()


def _alerts(events, run: int | None = None) -> list[AlertEvent]:
    marker = f"#run{run}@" if run else None
    return [event for event in events if isinstance(event, AlertEvent)
            and (marker in event.alert_id if marker else "#run" not in event.alert_id)]


def _without_run(alert: AlertEvent) -> AlertEvent:
    return dataclasses.replace(alert, alert_id=alert.alert_id.replace("#run1", ""),
                               episode_id=alert.episode_id.replace("#run1", ""))


def test_a_reboot_starts_a_run_whose_alerts_are_a_fresh_replay():
    first = list(_chunks(RECORD[:12_000], SIZES))
    second = list(_chunks(RECORD, SIZES))  # counting from 0 again
    events = _feed(_pipeline(), first + second)
    runs = [event for event in events if isinstance(event, RunEvent)]
    assert [(run.run, run.first_sample, run.previous_end_sample) for run in runs] == [
        (1, 0, 12_000)]
    fresh = _feed(_pipeline(), second)
    assert _alerts(fresh) and [_without_run(alert) for alert in _alerts(events, 1)] == (
        _alerts(fresh))
    assert _alerts(events) == _alerts(_feed(_pipeline(), first))
    assert all(alert.alert_id.startswith("rig1/ae0#run1@")
               and alert.episode_id.startswith("rig1/ae0#run1@") for alert in _alerts(events, 1))


def test_a_re_send_within_the_margin_is_skipped_not_a_new_run():
    chunks = list(_chunks(RECORD, SIZES))
    pipeline = _pipeline()
    events = _feed(pipeline, chunks[:10] + chunks[4:])
    assert not any(isinstance(event, RunEvent) for event in events)
    assert pipeline.counters.duplicate_chunks == 6
    assert _alerts(events) == _alerts(_feed(_pipeline(), chunks))


def test_a_new_run_id_starts_a_run_even_where_the_counter_goes_on():
    chunks = [dataclasses.replace(chunk, run=7) for chunk in _chunks(RECORD, SIZES)]
    rebooted = [dataclasses.replace(chunk, run=8) for chunk in chunks[10:]]
    pipeline = _pipeline()
    events = _feed(pipeline, chunks[:10] + rebooted)
    assert [event.run_id for event in events if isinstance(event, RunEvent)] == [8]
    assert pipeline.counters.runs == 1


def test_a_restarted_process_skips_earlier_runs_and_gives_the_same_alerts():
    first = list(_chunks(RECORD[:12_000], SIZES))
    second = list(_chunks(RECORD, SIZES))
    messages = first + second
    positions = list(range(100, 100 + len(messages)))
    whole = _feed(_pipeline(), messages, positions)
    # Stop after 10 chunks of the second run, keep the stored state, restart 25 messages
    # back (an old commit): the old run's tail comes again, then the new run's chunks.
    stopped = _pipeline()
    stop = len(first) + 10
    before = []
    for index in range(stop):
        before.extend(stopped.add(messages[index], positions[index]))
    before.extend(stopped.flush())
    state = stopped.policy_snapshot(("rig1", "ae0"))
    assert state["run"] == 1 and state["run_position"] == positions[len(first)]
    restarted = _pipeline(policy_state=lambda stream: state)
    start = stop - 25
    after = _feed(restarted, messages[start:], positions[start:])
    skipped = [event for event in after if isinstance(event, SkippedChunkEvent)]
    assert len(skipped) == len(first) - start
    assert not any(isinstance(event, RunEvent) for event in after)
    logged = {}
    for alert in _alerts(before, 1) + _alerts(after, 1):
        logged.setdefault(alert.alert_id, alert)
    assert list(logged.values()) == _alerts(whole, 1)


def test_a_forged_chunk_far_ahead_is_refused_and_the_stream_goes_on():
    chunks = list(_chunks(RECORD, SIZES))
    forged = Chunk("rig1", "ae0", 2**40, RATE, 0.0, np.full(50, 1000, np.int16))
    pipeline = _pipeline()
    events = _feed(pipeline, [*chunks[:8], forged, *chunks[8:]])
    refused = [event for event in events if isinstance(event, RejectedChunkEvent)]
    assert len(refused) == 1 and refused[0].reason.startswith("FarJump: ")
    assert not any(isinstance(event, GapEvent) for event in events)
    baseline = _feed(_pipeline(), chunks)
    assert [e for e in events if isinstance(e, PredictionEvent | AlertEvent)] == [
        e for e in baseline if isinstance(e, PredictionEvent | AlertEvent)]
    assert pipeline.counters.far_jumps == 1


def test_a_far_jump_that_the_next_chunk_confirms_is_a_gap():
    chunks = list(_chunks(RECORD, SIZES))
    ahead = int(FAR_JUMP_LIMIT_S * RATE) * 2
    later = [dataclasses.replace(chunk, first_sample=chunk.first_sample + ahead)
             for chunk in chunks[8:]]
    events = _feed(_pipeline(), chunks[:8] + later)
    refused = [event for event in events if isinstance(event, RejectedChunkEvent)]
    gaps = [event for event in events if isinstance(event, GapEvent)]
    assert len(refused) == 1 and refused[0].first_sample == later[0].first_sample
    assert [(gap.expected_sample, gap.got_sample) for gap in gaps] == [
        (chunks[8].first_sample, later[1].first_sample)]
    assert [e.window_end_sample for e in events if isinstance(e, PredictionEvent)][-1] == (
        later[-1].end_sample - 1)


def test_gaps_are_logged_at_most_every_interval(caplog):
    chunks = list(_chunks(RECORD, [100] * 150))
    with caplog.at_level("WARNING", logger="stream.pipeline"):
        _feed(_pipeline(), chunks[::2])
    lines = [record for record in caplog.records if "gap in the sample counter" in
             record.getMessage()]
    assert len(lines) == 1 and "samples 100 to 199 (100)" in lines[0].getMessage()


def test_a_re_sent_chunk_with_other_samples_is_counted_and_logged(caplog):
    chunks = list(_chunks(RECORD, [130] * 120))  # ends off the window grid: samples held
    changed = dataclasses.replace(chunks[7], samples=chunks[7].samples + np.int16(1))
    pipeline = _pipeline()
    with caplog.at_level("WARNING", logger="stream.pipeline"):
        events = _feed(pipeline, [*chunks[:8], changed, chunks[7], *chunks[8:]])
    assert pipeline.counters.resent_mismatches == 1 and pipeline.counters.duplicate_chunks == 2
    assert any("were sent again with other values" in record.getMessage()
               for record in caplog.records)
    assert _alerts(events) == _alerts(_feed(_pipeline(), chunks))  # the first copy is kept


def test_the_alerts_of_a_later_run_are_valid_alert_objects():
    from tests.stream.test_alert_schema import alert_validator

    events = _feed(_pipeline(), [*_chunks(RECORD[:12_000], SIZES), *_chunks(RECORD, SIZES)])
    validator = alert_validator()
    later = _alerts(events, 1)
    assert later
    for alert in later:
        validator.validate(alert.to_json())


def test_a_restart_that_reads_far_back_is_not_a_new_run():
    """A monitor that caught up a backlog between two commits re-reads more than the run
    margin after a restart: the stored position tells those chunks from a reboot."""
    chunks = list(_chunks(RECORD, SIZES))
    positions = list(range(len(chunks)))
    whole = _feed(_pipeline(), chunks, positions)
    stopped = _pipeline()
    before = _feed(stopped, chunks[:20], positions[:20])
    state = stopped.policy_snapshot(("rig1", "ae0"))
    assert chunks[19].end_sample - chunks[2].first_sample > 10 * RATE  # beyond the margin
    restarted = _pipeline(policy_state=lambda stream: state)
    after = _feed(restarted, chunks[2:], positions[2:])
    assert restarted.counters.runs == 0 and restarted.counters.far_jumps == 0
    logged = {}
    for alert in _alerts(before) + _alerts(after):
        logged.setdefault(alert.alert_id, alert)
    assert list(logged.values()) == _alerts(whole)
