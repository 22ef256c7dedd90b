"""The pipeline core: sample chunks in, predictions and alert events out.

It knows neither Kafka nor Redis. A source feeds it :class:`~stream.core.wire.Chunk` objects
(``add``); it keeps one :class:`~stream.core.windows.WindowAccumulator` and one
:class:`~stream.core.alert_policy.AlertPolicy` per stream (instrument, channel), collects the
completed windows of all streams into micro-batches (at most ``max_batch`` windows, at
most ``max_wait_s`` old), runs the predictor on each batch, and feeds the predictions to
each stream's policy in window order. ``labquake replay`` and ``labquake monitor`` run
this same class, so a replay of a recorded experiment gives the alerts a live run gave.

Events, in order per stream: :class:`PredictionEvent` for every window,
:class:`AlertEvent` when the policy raises, updates, withdraws or clears an alert
episode, :class:`GapEvent` when the sample
counter jumps, :class:`RejectedChunkEvent` for a chunk inconsistent with its stream (its
sample rate differs from the stream's, or its counter leaps far ahead unconfirmed): the
chunk is not used, and the source puts it in its dead letters with the reason. A stream
has one sample rate, the rate of its first chunk; an instrument whose rate changes sends
the new rate as another channel.

Runs: an instrument that reboots counts from 0 again. A chunk whose counter lies more
than ``RUN_RESTART_MARGIN_S`` seconds of signal before the stream's position, or whose
run id (wire version 2) differs from the stream's, starts a new run of the stream
(:class:`RunEvent`): fresh windows, context and alert state, and alert ids of its own
(``#run<k>``, k counted from the stream's first run, so a replay of the same messages
gives the same ids). A source that passes each chunk's position (its Kafka offset) lets
a restarted process skip the chunks of runs whose results are stored already
(:class:`SkippedChunkEvent`).

Far jumps: a chunk more than ``FAR_JUMP_LIMIT_S`` seconds of signal ahead of the stream
is not trusted on its own (a forged or corrupted counter would otherwise blind the stream
for good): it is refused, and the jump is taken only when the next chunk continues
where the refused one ended.

Example:
    >>> import numpy as np
    >>> from stream.core.wire import Chunk
    >>> class Constant:                      # any object with .version and .predict
    ...     version = "v1"
    ...     def predict(self, windows, start_samples):
    ...         n = len(windows)
    ...         return np.full(n, 0.2), np.full(n, 9.0), np.full(n, 0.9)
    >>> core = Pipeline(Constant(), window=4, hop=4, max_batch=8)
    >>> events = core.add(Chunk("rig1", "ae0", 0, 100.0, 0.0, np.zeros(12, np.int16)))
    >>> [event.kind for event in events + core.flush()]
    ['prediction', 'prediction', 'raised', 'prediction']
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np

from stream.config.options import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S
from stream.core.alert_policy import AlertPolicy, AlertPolicyConfig
from stream.core.events import (
    CLOCK_DECIMALS,
    PROBABILITY_DECIMALS,
    TIME_DECIMALS,
    AlertEvent,
    Event,
    GapEvent,
    PredictionEvent,
    RejectedChunkEvent,
    RunEvent,
    SkippedChunkEvent,
    StreamId,
    alert_id,
    episode_id,
)
from stream.core.predictor import (
    ContextPredictor,
    ContextStep,
    Predictor,
    StreamContext,
    block_cache,
    reads_context,
)
from stream.core.windows import Duplicate, Gap, Window, WindowAccumulator
from stream.core.wire import Chunk

log = logging.getLogger(__name__)

# A counter that goes back by more than this much signal (or by two windows and a hop,
# if more) is an instrument that started counting again: a new run. Less is a re-send.
RUN_RESTART_MARGIN_S = 10.0
# A counter that leaps ahead by more than this much signal needs the next chunk to confirm.
FAR_JUMP_LIMIT_S = 3600.0
# A stream's gaps are logged at most this often (each is counted).
GAP_LOG_INTERVAL_S = 10.0

@dataclasses.dataclass
class _PendingWindow:
    stream_id: StreamId
    window: Window


@dataclasses.dataclass
class _Stream:
    accumulator: WindowAccumulator
    policy: AlertPolicy
    sample_rate: float | None = None  # the stream's rate, from its first chunk
    pending: int = 0  # windows of this stream waiting in the batch
    context: StreamContext | None = None  # for a predictor that reads a context
    context_state: Mapping[str, Any] | None = None  # a restarted stream's, until used
    run: int = 0  # runs started before this one
    run_id: int | None = None  # the wire's run id of the current run (version 2)
    run_position: int | None = None  # the source position of the current run's first chunk
    jump_candidate: int | None = None  # where a refused far-ahead chunk ended
    last_chunk_at: float = 0.0  # clock of its last chunk, for dropping idle streams
    # Source position and end sample of the last chunk taken; restored from the stored
    # state, they tell a chunk read again after a restart (at or before that position:
    # checked when first read) from one that continues the stream.
    last_position: int | None = None
    last_end_sample: int | None = None
    gap_logged_at: float | None = None
    mismatch_logged_at: float | None = None


@dataclasses.dataclass
class Counters:
    """Running totals, for logs and metrics."""

    chunks: int = 0
    samples: int = 0
    duplicate_chunks: int = 0
    rejected_chunks: int = 0
    far_jumps: int = 0  # chunks far ahead refused (a confirmed jump is a gap)
    gaps: int = 0
    runs: int = 0  # new runs of a stream (an instrument counting again)
    stale_chunks: int = 0  # chunks of an earlier run read again after a restart
    resent_mismatches: int = 0  # re-sent samples that differ from the first copy
    windows: int = 0
    seen_windows: int = 0  # read again after a restart or rebalance, processed already
    batches: int = 0
    alerts_raised: int = 0
    alerts_updated: int = 0
    alerts_withdrawn: int = 0
    alerts_cleared: int = 0


class Pipeline:
    """Chunks of many streams in, events out; one instance per process.

    Args:
        predictor: the model (``.predict(windows, start_samples)`` returning TTF, TSF and
            P(failure) arrays, or an object with ``ttf_s``/``tsf_s``/``p_failure``; and
            ``.version``).
        window: window length in samples.
        hop: step between window starts in samples (default: ``window``).
        policy_config: the alert policy (default: ``AlertPolicyConfig()``).
        max_batch: run the model once this many windows wait.
        max_wait_s: or once the oldest waiting window is this old (see :meth:`due`).
        policy_state: ``stream_id -> snapshot or None``, asked once per new stream, so a
            restarted process continues each stream's alert state (the monitor reads it
            from its sink); default: every stream starts fresh.
        clock: wall clock for ``emitted_at`` and batching deadlines.
    """

    def __init__(self, predictor: Predictor, window: int, hop: int | None = None,
                 policy_config: AlertPolicyConfig | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 policy_state: Callable[[StreamId], Mapping[str, Any] | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.predictor = predictor
        self.window = window
        self.hop = window if hop is None else hop
        self.policy_config = policy_config or AlertPolicyConfig()
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._policy_state = policy_state
        self._clock = clock
        self._streams: dict[StreamId, _Stream] = {}
        # Overlapping windows of a stream share the work of their common blocks.
        self._blocks = block_cache(predictor, self.hop)
        self._pending: list[_PendingWindow] = []
        self._pending_since: float | None = None
        self.counters = Counters()

    # -- input ----------------------------------------------------------------------------

    def add(self, chunk: Chunk, position: int | None = None) -> list[Event]:
        """Take one chunk; return the events of any batch it completed, or its rejection.

        Args:
            chunk: the next chunk of its stream, in arrival order.
            position: where the source read it, increasing along the stream (a Kafka
                offset); ``None`` where the source never re-reads (a file).
        """
        stream = self._stream(chunk.stream_id)
        stream.last_chunk_at = self._clock()
        if (position is not None and stream.run_position is not None
                and position < stream.run_position):
            self.counters.stale_chunks += 1
            return [SkippedChunkEvent(*chunk.stream_id, chunk.first_sample)]
        refusal = self._refusal(stream, chunk)
        prelude: list[Event] = []
        read_again = (position is not None and stream.last_position is not None
                      and position <= stream.last_position)
        if refusal is None and not read_again:
            refusal = self._far_jump(stream, chunk)
            if refusal is None and self._starts_run(stream, chunk):
                prelude = self._new_run(chunk.stream_id, stream, chunk, position)
        if refusal is None and position is not None and not read_again:
            stream.last_position, stream.last_end_sample = position, chunk.end_sample
        if refusal is None:
            try:
                items = stream.accumulator.add(chunk)
            except (ArithmeticError, ValueError, MemoryError) as error:
                # Unreachable for a chunk the wire accepts; should it happen, the one
                # stream starts its windows afresh and the chunk is refused, rather than
                # the monitor (and every stream of the partition) stopping on it.
                log.error("%s/%s: the chunk at sample %d could not be taken (%s: %s); "
                          "the stream's windows start afresh", *chunk.stream_id,
                          chunk.first_sample, type(error).__name__, error)
                stream.accumulator = WindowAccumulator(self.window, self.hop)
                refusal = f"Unprocessable: {type(error).__name__}: {error}"
        if refusal is not None:
            self.counters.rejected_chunks += 1
            return [*prelude, RejectedChunkEvent(*chunk.stream_id, chunk.first_sample, refusal)]
        self.counters.chunks += 1
        events: list[Event] = prelude
        for item in items:
            if isinstance(item, Window):
                seen = stream.policy.last_window_end_sample
                if seen is not None and item.last_sample <= seen:
                    # Read again after a restart or a rebalance (the offset commit trails
                    # the results): its results and alerts are stored already, and the
                    # stored context has taken it, so it is not computed again.
                    self.counters.seen_windows += 1
                else:
                    self._enqueue(chunk.stream_id, stream, item)
            elif isinstance(item, Gap):
                # The windows before the gap must reach the policy before it resets.
                events.extend(self.flush())
                stream.policy.gap()
                # The context's past ends at the gap too; the next window starts afresh.
                stream.context = None
                stream.context_state = None
                if self._blocks is not None:
                    self._blocks.forget(chunk.stream_id)
                self.counters.gaps += 1
                self._log_gap(stream, chunk, item)
                events.append(GapEvent(*chunk.stream_id, item.expected_sample, item.got_sample))
            elif isinstance(item, Duplicate):
                self.counters.duplicate_chunks += int(item.first_sample == chunk.first_sample)
                if item.differs:
                    self.counters.resent_mismatches += 1
                    self._log_mismatch(stream, chunk, item)
        self.counters.samples += len(chunk.samples)
        if len(self._pending) >= self.max_batch:
            events.extend(self._run_batch())
        return events

    def due(self) -> bool:
        """Whether waiting windows have waited ``max_wait_s``: the caller should ``flush``."""
        return (self._pending_since is not None
                and self._clock() - self._pending_since >= self.max_wait_s)

    def flush(self) -> list[Event]:
        """Run the model on every waiting window now."""
        events: list[Event] = []
        while self._pending:
            events.extend(self._run_batch())
        return events

    # -- state the source needs -----------------------------------------------------------

    @property
    def streams(self) -> list[StreamId]:
        return list(self._streams)

    def oldest_needed_sample(self, stream_id: StreamId) -> int | None:
        """The first sample of this stream that a result not yet given still needs.

        A source may acknowledge (commit) everything before the chunk holding this
        sample; ``None``: nothing of this stream is outstanding.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return None
        candidates = [stream.accumulator.oldest_needed_sample()]
        if stream.pending:
            candidates.extend(p.window.first_sample for p in self._pending
                              if p.stream_id == stream_id)
        found = [sample for sample in candidates if sample is not None]
        return min(found) if found else None

    def policy_snapshot(self, stream_id: StreamId) -> dict[str, Any]:
        """What a restarted process needs to continue the stream (``policy_state``): the
        alert policy's state and the stream's sample rate."""
        stream = self._streams[stream_id]
        snapshot = {**stream.policy.snapshot(), "sample_rate": stream.sample_rate}
        if stream.run:
            snapshot.update(run=stream.run, run_position=stream.run_position)
        if stream.last_position is not None:
            snapshot.update(position=stream.last_position, end_sample=stream.last_end_sample)
        if stream.run_id is not None:
            snapshot["run_id"] = stream.run_id
        if stream.context is not None:
            snapshot["context"] = {**stream.context.snapshot(),
                                   "config": stream.context.config.to_dict()}
        elif stream.context_state is not None:
            snapshot["context"] = dict(stream.context_state)
        return snapshot

    def drop_stream(self, stream_id: StreamId) -> None:
        """Forget a stream (its partition went to another process). Call after ``flush``."""
        self._streams.pop(stream_id, None)
        if self._blocks is not None:
            self._blocks.forget(stream_id)
        self._pending = [p for p in self._pending if p.stream_id != stream_id]
        if not self._pending:
            self._pending_since = None

    def drop_idle(self, idle_s: float) -> list[StreamId]:
        """Forget the streams without a chunk for ``idle_s`` seconds and no window waiting.

        Their memory (open windows, context) is freed; a stream that comes back continues
        from its stored state (``policy_state``) like one after a restart, so the window
        that spans the pause is lost.

        Returns:
            The streams forgotten.
        """
        now = self._clock()
        idle = [stream_id for stream_id, stream in self._streams.items()
                if not stream.pending and now - stream.last_chunk_at >= idle_s]
        for stream_id in idle:
            self.drop_stream(stream_id)
        return idle

    # -- internals ------------------------------------------------------------------------

    def _stream(self, stream_id: StreamId) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            state = self._policy_state(stream_id) if self._policy_state else None
            policy = (AlertPolicy.restore(self.policy_config, state) if state
                      else AlertPolicy(self.policy_config))
            if policy.last_window_end_sample is not None:
                # A restart re-reads a little; a counter started again from 0 under the
                # same name re-reads everything, and alerts nothing it has alerted before.
                log.info("%s/%s continues from its stored state: windows ending at or "
                         "before sample %d were processed already and raise no alert "
                         "again (a new recording should use a new instrument name or "
                         "namespace)", *stream_id, policy.last_window_end_sample)
            state = state or {}
            stream = _Stream(WindowAccumulator(self.window, self.hop), policy,
                             sample_rate=state.get("sample_rate"),
                             context_state=state.get("context"), run=state.get("run", 0),
                             run_id=state.get("run_id"),
                             run_position=state.get("run_position"),
                             last_position=state.get("position"),
                             last_end_sample=state.get("end_sample"))
            self._streams[stream_id] = stream
        return stream

    def _refusal(self, stream: _Stream, chunk: Chunk) -> str | None:
        """Why ``chunk`` cannot join its stream (one line), or ``None``."""
        if stream.sample_rate is not None:
            if chunk.sample_rate == stream.sample_rate:
                return None
            return (f"SampleRateMismatch: the chunk at sample {chunk.first_sample} is at "
                    f"{chunk.sample_rate!r} Hz, its stream {chunk.instrument}/{chunk.channel} "
                    f"at {stream.sample_rate!r} Hz; send another rate as another channel")
        if reads_context(self.predictor):
            # The context is sized by the rate: one the model cannot keep is refused now,
            # at the stream's first chunk, not in a batch shared with other streams.
            try:
                context = cast(ContextPredictor, self.predictor).new_context(
                    chunk.sample_rate, self.hop)
            except (ValueError, ArithmeticError, MemoryError) as error:
                self._streams.pop(chunk.stream_id, None)
                return f"UnsupportedRate: {chunk.sample_rate!r} Hz: {error}"
            if stream.context_state is None:
                stream.context = context
        stream.sample_rate = chunk.sample_rate
        return None

    def _position_of(self, stream: _Stream) -> int | None:
        """The sample that continues the stream: from its windows, or, just restored, the
        end of the last chunk its stored state had taken (``None``: not known)."""
        expected = stream.accumulator.next_expected_sample
        return stream.last_end_sample if expected is None else expected

    def _far_jump(self, stream: _Stream, chunk: Chunk) -> str | None:
        """Why a chunk far ahead of its stream is refused, or ``None`` (taken)."""
        expected = self._position_of(stream)
        limit = max(self.window, round(FAR_JUMP_LIMIT_S * chunk.sample_rate))
        if expected is None or chunk.first_sample - expected <= limit:
            stream.jump_candidate = None
            return None
        if stream.jump_candidate == chunk.first_sample:
            stream.jump_candidate = None  # the refused chunk's successor: confirmed
            log.warning("%s/%s: the counter's jump from %d to %d is confirmed by the next "
                        "chunk; the stream goes on from there", *chunk.stream_id, expected,
                        chunk.first_sample)
            return None
        stream.jump_candidate = chunk.end_sample
        self.counters.far_jumps += 1
        return (f"FarJump: the chunk starts at sample {chunk.first_sample}, "
                f"{chunk.first_sample - expected} samples ahead of its stream "
                f"{chunk.instrument}/{chunk.channel} (at {expected}), more than "
                f"{FAR_JUMP_LIMIT_S:g} s of signal; taken only when the next chunk continues it")

    def _starts_run(self, stream: _Stream, chunk: Chunk) -> bool:
        """Whether ``chunk`` begins a new run: another run id, or the counter far back."""
        if chunk.run is not None and stream.run_id is not None and chunk.run != stream.run_id:
            return True
        if stream.run_id is None and chunk.run is not None and stream.run == 0:
            stream.run_id = chunk.run  # the stream's first run names itself
        expected = self._position_of(stream)
        margin = max(2 * self.window + self.hop,
                     round(RUN_RESTART_MARGIN_S * chunk.sample_rate))
        return expected is not None and chunk.first_sample < expected - margin

    def _new_run(self, stream_id: StreamId, stream: _Stream, chunk: Chunk,
                 position: int | None) -> list[Event]:
        """Close the stream's run and start the next with fresh windows, context and alert
        state; the old run's waiting windows are predicted first."""
        events = self.flush()
        previous_end = self._position_of(stream)
        stream.run += 1
        stream.run_id = chunk.run
        stream.run_position = position
        stream.accumulator = WindowAccumulator(self.window, self.hop)
        stream.policy = AlertPolicy(self.policy_config)
        stream.context = None
        stream.context_state = None
        stream.jump_candidate = None
        if self._blocks is not None:
            self._blocks.forget(stream_id)
        self.counters.runs += 1
        log.warning("%s/%s: new run %d of the instrument: its counter went from %s back to "
                    "%d%s; windows, context and alert state start afresh", *stream_id,
                    stream.run, previous_end, chunk.first_sample,
                    "" if chunk.run is None else f" (run id {chunk.run})")
        events.append(RunEvent(*stream_id, stream.run, chunk.first_sample, previous_end,
                               chunk.run))
        return events

    def _log_gap(self, stream: _Stream, chunk: Chunk, gap: Gap) -> None:
        now = self._clock()
        if stream.gap_logged_at is not None and now - stream.gap_logged_at < GAP_LOG_INTERVAL_S:
            return
        stream.gap_logged_at = now
        log.warning("%s/%s: gap in the sample counter: samples %d to %d (%d) never arrived; "
                    "no window spans them (gaps counted in labquake_gaps_total, logged at "
                    "most every %g s)", *chunk.stream_id, gap.expected_sample,
                    gap.got_sample - 1, gap.missing_samples, GAP_LOG_INTERVAL_S)

    def _log_mismatch(self, stream: _Stream, chunk: Chunk, duplicate: Duplicate) -> None:
        now = self._clock()
        if (stream.mismatch_logged_at is not None
                and now - stream.mismatch_logged_at < GAP_LOG_INTERVAL_S):
            return
        stream.mismatch_logged_at = now
        log.warning("%s/%s: samples %d to %d were sent again with other values; the first "
                    "copy is kept (labquake_resent_mismatches_total; logged at most every "
                    "%g s)", *chunk.stream_id, duplicate.first_sample,
                    duplicate.end_sample - 1, GAP_LOG_INTERVAL_S)

    def _enqueue(self, stream_id: StreamId, stream: _Stream, window: Window) -> None:
        if not self._pending:
            self._pending_since = self._clock()
        self._pending.append(_PendingWindow(stream_id, window))
        stream.pending += 1

    def _run_batch(self) -> list[Event]:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        self._pending_since = self._clock() if self._pending else None
        if not batch:
            return []
        # With a block cache the features read only each window's new blocks: the rows
        # go as their pieces, neither joined nor stacked into one copy.
        windows = ([p.window.pieces for p in batch] if self._blocks is not None
                   else np.stack([p.window.samples for p in batch]))
        starts = np.array([p.window.first_sample for p in batch], dtype=np.int64)
        contexts = (None if not reads_context(self.predictor)
                    else [self._context_call(p) for p in batch])
        if self._blocks is not None:
            prediction = cast(ContextPredictor, self.predictor).predict_in_context(
                windows, starts, contexts, cache=self._blocks,
                streams=[p.stream_id for p in batch])
        elif contexts is None:
            prediction = self.predictor.predict(windows, starts)
        else:
            prediction = cast(ContextPredictor, self.predictor).predict_in_context(
                windows, starts, contexts)
        ttf, tsf, p_failure = _outputs(prediction)
        self.counters.batches += 1
        self.counters.windows += len(batch)
        events: list[Event] = []
        for index, pending in enumerate(batch):
            stream = self._streams.get(pending.stream_id)
            if stream is None:
                continue
            stream.pending -= 1
            events.extend(self._window_events(
                pending.stream_id, stream, pending.window,
                round(float(ttf[index]), TIME_DECIMALS), round(float(tsf[index]), TIME_DECIMALS),
                round(float(p_failure[index]), PROBABILITY_DECIMALS),
            ))
        return events

    def _context_call(self, pending: _PendingWindow) -> ContextStep:
        """How the window's context features are made: its stream's context takes the
        window (a stream dropped meanwhile gets a throwaway one: its results are dropped)."""
        predictor = cast(ContextPredictor, self.predictor)
        stream = self._streams.get(pending.stream_id)
        if stream is None:  # dropped meanwhile; its results are discarded
            return predictor.new_context(predictor.sample_rate or 1.0, self.hop).step
        config = predictor.context
        assert config is not None  # only asked of a predictor that reads a context
        if stream.context is None or stream.context.config != config:
            assert stream.sample_rate is not None  # set by the stream's first chunk
            state = stream.context_state
            stream.context_state = None
            stream.context = (predictor.restore_context(state)
                              if state is not None and state.get("config") == config.to_dict()
                              else predictor.new_context(stream.sample_rate, self.hop))
        return stream.context.step

    def _window_events(self, stream_id: StreamId, stream: _Stream, window: Window,
                       ttf_s: float, tsf_s: float, p_failure: float) -> list[Event]:
        instrument, channel = stream_id
        version = self.predictor.version
        end_sample, end_time = window.last_sample, round(window.end_time, CLOCK_DECIMALS)
        transition = stream.policy.update(end_sample, end_time, p_failure, ttf_s, tsf_s)
        events: list[Event] = [PredictionEvent(instrument, channel, end_sample, end_time,
                                               ttf_s, tsf_s, p_failure, version,
                                               warming_up=stream.policy.warming_up)]
        if transition is not None:
            counter = f"alerts_{transition.kind}"
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            interval = self.policy_config.interval
            events.append(AlertEvent(
                alert_id=alert_id(instrument, channel, end_sample, transition.kind,
                                  stream.run),
                kind=transition.kind, instrument=instrument, channel=channel,
                window_end_sample=end_sample, window_end_time=end_time,
                ttf_s=ttf_s, tsf_s=tsf_s, p_failure=p_failure,
                threshold=self.policy_config.raise_threshold, model_version=version,
                emitted_at=round(self._clock(), 6), reason=transition.reason,
                episode_id=episode_id(instrument, channel, transition.episode_sample,
                                      stream.run),
                failure_time=transition.failure_time,
                failure_time_lower=transition.failure_time_lower,
                failure_time_upper=transition.failure_time_upper,
                interval_coverage=(None if interval is None or transition.failure_time is None
                                   else interval.coverage),
                warming_up=transition.warming_up,
            ))
        return events


def _outputs(prediction: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if hasattr(prediction, "p_failure"):
        return prediction.ttf_s, prediction.tsf_s, prediction.p_failure
    ttf, tsf, p_failure = prediction
    return ttf, tsf, p_failure
