"""``labquake monitor``: the daemon. Kafka → windows → features → model → Redis.

The chain is source → core → sink: :class:`~stream.io.kafka_source.KafkaSource` gives
chunks, :class:`~stream.engine.pipeline.Pipeline` turns them into predictions and alert events,
:class:`~stream.io.redis_sink.RedisSink` stores and publishes them. The commit rule
(DESIGN.md, "Stream semantics"):

1. the sink holds every result produced so far (it retries until it does);
2. then each partition's offset is committed at the oldest chunk that an unfinished
   window still needs (:class:`~stream.engine.offsets.OffsetTracker`).

Killed at any moment, a restarted monitor re-reads from the committed offsets, rebuilds
the same windows, restores each stream's alert-policy state from Redis (stored with the
results), skips the windows that state shows were processed already, and any re-sent
alert is absorbed by the sink. SIGTERM and SIGINT drain:
the waiting windows are predicted, stored and committed, and the process exits 0.

SIGHUP reloads the model without stopping: the bundle named by the configuration (read
again, so a changed ``model`` in the configuration file counts, as does a new bundle
behind the same path or symlink) loads in the background while the old one serves; then,
between two batches, the windows already waiting are predicted and stored with the old
model and every later window uses the new one. Each prediction and alert carries the
``model_version`` that produced it. A bundle that does not load, or that cuts windows
differently or brings another alert policy (which need a restart), is refused and the
old model stays.

With ``metrics_port`` set, Prometheus metrics are served at ``/metrics``
(:mod:`stream.app.metrics`).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from stream.app.metrics import LatencyClock, MonitorMetrics, TimedPredictor
from stream.config.options import (
    ALERT_POLICY_OPTIONS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_WAIT_S,
    OPTIONS_BY_NAME,
    Settings,
    add_options,
    resolve,
)
from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.core.events import (
    Event,
    PredictionEvent,
    RejectedChunkEvent,
    RunEvent,
    SkippedChunkEvent,
)
from stream.engine.offsets import OffsetTracker
from stream.engine.pipeline import Pipeline
from stream.io.redis_names import DEFAULT_NAMESPACE

log = logging.getLogger("labquake.monitor")

DEFAULT_GROUP = OPTIONS_BY_NAME["group"].default
POLL_TIMEOUT_S = 0.05
COMMIT_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 5.0
STATUS_LOG_INTERVAL_S = 30.0


def _return_freed_memory() -> None:
    """Give the pages freed by forgotten streams back to the system.

    A stream's pieces are allocations of tens to hundreds of KiB from the C heap; freed,
    glibc keeps them for reuse, so the process's memory would not shrink after a crowd of
    one-off streams left. ``malloc_trim`` returns them (glibc only; elsewhere nothing).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    """How one monitor process runs."""

    group: str = DEFAULT_GROUP
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    namespace: str = DEFAULT_NAMESPACE
    stop_after_idle_s: float | None = None  # for tests and batch jobs: exit when drained
    stream_idle_timeout_s: float = 600.0  # forget a stream this long without a chunk; 0: never
    stream_retention_s: float = 604800.0  # Redis keys of a stream live this long; 0: forever

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorOptions:
        """The monitor's part of the resolved configuration."""
        return cls(group=settings.group, max_batch=settings.max_batch,
                   max_wait_s=settings.max_wait, namespace=settings.namespace,
                   stop_after_idle_s=settings.stop_after_idle,
                   stream_idle_timeout_s=settings.stream_idle_timeout,
                   stream_retention_s=settings.stream_retention)


class Monitor:
    """One consumer-group member: reads, predicts, stores, commits.

    Args:
        settings: Kafka, Redis, topic, model and the metrics endpoint.
        options: group, batching and namespace.
        predictor: the loaded model bundle (``model.bundle.inference.Bundle``).
        reload_model: loads the bundle to switch to on SIGHUP (default: the one at
            ``settings.model`` again).
    """

    def __init__(self, settings: Settings, options: MonitorOptions, predictor: Any,
                 reload_model: Callable[[], Any] | None = None) -> None:
        from stream.io.kafka_source import KafkaSource
        from stream.io.redis_sink import RedisSink
        from stream.io.security import redis_client_options

        self.settings = settings
        self.options = options
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = MonitorMetrics()
        self.sink = RedisSink.connect(settings.redis, options.namespace,
                                      client_options=redis_client_options(settings),
                                      retention_s=options.stream_retention_s)
        self.pipeline = Pipeline(
            TimedPredictor(predictor, self.metrics), window=predictor.window, hop=predictor.hop,
            policy_config=policy_config(predictor, settings), max_batch=options.max_batch,
            max_wait_s=options.max_wait_s, policy_state=self.sink.load_policy_state,
        )
        self.tracker = OffsetTracker()
        self.source = KafkaSource(settings, options.group, on_revoke=self._on_revoke,
                                  on_assign=self._on_assign)
        self._revoked: list[Any] = []
        self._stopping = False
        self._closing = False
        self._touched: set[tuple[str, str]] = set()  # streams new since the last store
        self._seen: set[tuple[str, str]] = set()
        self._last_commit = self._last_heartbeat = self._last_status = 0.0
        self._last_activity = time.monotonic()
        self._reload_model = reload_model or (lambda: load_predictor(settings.model))
        self._reload_requested = False
        self._reload: Future | None = None
        self._read_clock = LatencyClock()  # monotonic time each chunk was read
        self._sent_clock = LatencyClock()  # Unix time each chunk was sent (Kafka timestamp)
        self._metrics_server: Any = None
        self.metrics.watch(self._totals)
        self.metrics.set_model(predictor.version)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or idle, if so configured); return the exit code."""
        previous = {sig: signal.signal(sig, self._request_stop)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._request_reload)
        if self.settings.metrics_port is not None:
            from stream.app.metrics import serve

            self._metrics_server = serve(self.metrics, self.settings.metrics_host,
                                         self.settings.metrics_port)
        log.info("monitor started: member=%s group=%s topic=%s model=%s window=%d hop=%d",
                 self.member, self.options.group, self.settings.topic,
                 self.pipeline.predictor.version, self.pipeline.window, self.pipeline.hop)
        try:
            while not self._stopping:
                self.step()
                if self._idle_long_enough():
                    log.info("no messages for %.1f s; stopping", self.options.stop_after_idle_s)
                    break
            self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._closing = True  # closing revokes every partition; all is committed already
            self.source.close()
            self.sink.close()
            if self._metrics_server is not None:
                self._metrics_server.close()
        log.info("monitor stopped: %s", dataclasses.asdict(self.pipeline.counters))
        return 0

    def step(self) -> None:
        """One poll: read, feed the core, store the results, commit what is safe."""
        self._reload_if_asked()
        events: list[Event] = []
        messages = self.source.poll(POLL_TIMEOUT_S)
        received_at = time.monotonic()
        self.metrics.last_poll.set_to_current_time()
        if messages:
            self._last_activity = received_at
        for message in messages:
            if message.chunk is None:
                self.tracker.skip(message.partition, message.offset)
                continue
            chunk = message.chunk
            added = self.pipeline.add(chunk, message.offset)
            if any(isinstance(event, SkippedChunkEvent) for event in added):
                self.tracker.skip(message.partition, message.offset)  # an earlier run's
                continue
            if any(isinstance(event, RunEvent) for event in added):
                # The old run's chunks are needed no more: its waiting windows are in
                # these events, stored before the next commit; its open ones are lost.
                self.tracker.forget_stream(message.partition, chunk.stream_id)
                self._read_clock.forget(chunk.stream_id)
                self._sent_clock.forget(chunk.stream_id)
            rejected = [event for event in added if isinstance(event, RejectedChunkEvent)]
            if rejected:  # inconsistent with its stream: a dead letter, as if undecodable
                self.source.dead_letter(message, rejected[0].reason)
                self.tracker.skip(message.partition, message.offset)
                # What the chunk closed before it was refused (a run's last windows).
                events.extend(event for event in added if event not in rejected)
                continue
            self.tracker.record(message.partition, message.offset, chunk.stream_id,
                                chunk.first_sample, chunk.end_sample)
            self._read_clock.received(chunk.stream_id, chunk.first_sample, chunk.end_sample,
                                      received_at)
            if message.record is not None and message.record.timestamp >= 0:
                self._sent_clock.received(chunk.stream_id, chunk.first_sample,
                                          chunk.end_sample, message.record.timestamp / 1000)
            if chunk.stream_id not in self._seen:
                self._seen.add(chunk.stream_id)
                self._touched.add(chunk.stream_id)
            events.extend(added)
        # Waiting windows go now when they have waited max_wait, or when nothing more is
        # there to read: at real-time load a window is then predicted as soon as it is
        # complete, while a backlog still fills whole batches.
        if self.pipeline.due() or self.source.caught_up(messages):
            events.extend(self.pipeline.flush())
        self._store(events)
        now = time.monotonic()
        if now - self._last_commit >= COMMIT_INTERVAL_S:
            self._commit()
        if now - self._last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self._heartbeat()

    # -- internals ------------------------------------------------------------------------

    def _store(self, events: list[Event]) -> None:
        if not events and not self._touched:
            return
        # A stream's saved state (alert policy, sample rate) changes only with its events,
        # or is new: storing it for every stream read cost a Redis transaction a poll.
        changed = self._touched | {(event.instrument, event.channel) for event in events}
        snapshots = {stream_id: self.pipeline.policy_snapshot(stream_id)
                     for stream_id in changed if stream_id in self.pipeline.streams}
        if events or snapshots:
            self.sink.write(events, snapshots, should_stop=lambda: self._stopping)
        self._touched.clear()
        stored_at, stored_at_unix = time.monotonic(), time.time()
        for event in events:
            if isinstance(event, PredictionEvent):
                stream_id = (event.instrument, event.channel)
                latency = self._read_clock.stored(stream_id, event.window_end_sample, stored_at)
                if latency is not None:
                    self.metrics.result_latency_seconds.observe(latency)
                latency = self._sent_clock.stored(stream_id, event.window_end_sample,
                                                  stored_at_unix)
                if latency is not None:
                    self.metrics.end_to_end_latency_seconds.observe(max(0.0, latency))

    def _committable(self, partitions: list[Any]) -> dict[Any, int]:
        offsets = {}
        for partition in partitions:
            offset = self.tracker.committable(partition, self.pipeline.oldest_needed_sample)
            if offset is not None:
                offsets[partition] = offset
        return offsets

    def _commit(self) -> None:
        from kafka.errors import KafkaError

        try:
            self.source.commit(self._committable(self.tracker.partitions()))
        except KafkaError as error:  # the next commit covers these offsets too
            self.metrics.kafka_errors.inc()
            log.warning("offset commit failed (%s); retrying at the next commit", error)
        self._last_commit = time.monotonic()

    def _on_revoke(self, partitions: list[Any]) -> dict[Any, int]:
        """Finish what this member has of the partitions it may lose; return their offsets.

        Their streams' state is kept until the new assignment is known: a partition that
        comes back to this member continues where it was (the consumer may keep its read
        position), one that goes elsewhere is dropped in ``_on_assign``.
        """
        if self._closing:
            return {}
        self._revoked = list(partitions)
        self._store(self.pipeline.flush())
        return self._committable([p for p in partitions if p in self.tracker.partitions()])

    def _on_assign(self, partitions: list[Any]) -> None:
        kept = set(partitions)
        # Every partition this member read from and no longer holds, whether or not its
        # revocation came through (a listener that failed, a lost membership): its
        # streams must not continue from this member's old state when it comes back.
        # (The consumer's assignors are eager: ``partitions`` is the whole assignment.)
        gone = sorted({*self._revoked, *self.tracker.partitions()} - kept,
                      key=lambda p: (p.topic, p.partition))
        for partition in gone:
            for stream_id in self.tracker.forget(partition):
                self.pipeline.drop_stream(stream_id)
                self._read_clock.forget(stream_id)
                self._sent_clock.forget(stream_id)
        self._revoked = []
        log.info("assigned partitions: %s; gave up: %s",
                 ", ".join(f"{p.topic}/{p.partition}" for p in sorted(kept)) or "none",
                 ", ".join(f"{p.topic}/{p.partition}" for p in gone) or "none")

    def _drain(self) -> None:
        self._store(self.pipeline.flush())
        self._commit()

    def _heartbeat(self) -> None:
        from kafka.errors import KafkaError

        lag: dict[str, int] | None
        try:
            lag = self.source.lag()
            self.metrics.set_lag(lag)
        except KafkaError as error:
            self.metrics.kafka_errors.inc()
            log.warning("consumer lag unknown (%s)", error)
            lag = None  # unknown (the broker is away), not "no partition
        self._forget_idle_streams()
        counters = dataclasses.asdict(self.pipeline.counters)
        self.metrics.streams.set(len(self.pipeline.streams))
        self.sink.heartbeat(self.member, {
            "member": self.member, "group": self.options.group, "topic": self.settings.topic,
            "model_version": self.pipeline.predictor.version, "lag": lag,
            "streams": len(self.pipeline.streams), "dead_letters":
                self.source.counters.dead_letters, **counters,
            "metrics_url": self._metrics_server.url if self._metrics_server else None,
        })
        self._last_heartbeat = time.monotonic()
        if self._last_heartbeat - self._last_status >= STATUS_LOG_INTERVAL_S:
            log.info("status: lag=%s windows=%d alerts_raised=%d dead_letters=%d gaps=%d "
                     "runs=%d", "unknown" if lag is None else lag, counters["windows"],
                     counters["alerts_raised"], self.source.counters.dead_letters,
                     counters["gaps"], counters["runs"])
            self._last_status = self._last_heartbeat

    def _forget_idle_streams(self) -> None:
        """Free the memory of the streams without a chunk for the idle timeout."""
        if not self.options.stream_idle_timeout_s:
            return
        dropped = self.pipeline.drop_idle(self.options.stream_idle_timeout_s)
        for stream_id in dropped:
            self._seen.discard(stream_id)
            self._read_clock.forget(stream_id)
            self._sent_clock.forget(stream_id)
        if dropped:
            _return_freed_memory()
            log.info("forgot %d stream(s) idle for %g s (%s%s); %d held", len(dropped),
                     self.options.stream_idle_timeout_s,
                     ", ".join("/".join(stream_id) for stream_id in dropped[:5]),
                     ", ..." if len(dropped) > 5 else "", len(self.pipeline.streams))

    def _idle_long_enough(self) -> bool:
        limit = self.options.stop_after_idle_s
        return limit is not None and time.monotonic() - self._last_activity >= limit

    def _request_stop(self, signum: int, frame: object) -> None:
        log.info("signal %s: draining and stopping", signal.Signals(signum).name)
        self._stopping = True

    def _totals(self) -> dict[str, int]:
        """The running totals that ``stream.app.metrics`` reports as counters."""
        return {**dataclasses.asdict(self.pipeline.counters),
                "messages": self.source.counters.messages,
                "dead_letters": self.source.counters.dead_letters,
                "alerts_logged": self.sink.alerts_logged,
                "alerts_rejected": self.sink.alerts_rejected,
                "redis_errors": self.sink.errors}

    # -- model reload (SIGHUP) -------------------------------------------------------------

    def _request_reload(self, signum: int, frame: object) -> None:
        log.info("signal SIGHUP: loading the model again")
        self._reload_requested = True

    def _reload_if_asked(self) -> None:
        """Start a requested load in the background; switch to a loaded model."""
        if self._reload is not None and self._reload.done():
            future, self._reload = self._reload, None
            self._switch_model(future)
        if self._reload_requested and self._reload is None:
            self._reload_requested = False
            future: Future = Future()

            def load() -> None:
                try:
                    future.set_result(self._reload_model())
                except Exception as error:  # reported, and the old model stays
                    future.set_exception(error)

            threading.Thread(target=load, name="model-reload", daemon=True).start()
            self._reload = future

    def _switch_model(self, loaded: Future) -> None:
        """Between two batches: finish the waiting windows with the old model, then switch."""
        current = self.pipeline.predictor
        try:
            new = loaded.result()
            new_policy = policy_config(new, self.settings)
        except Exception as error:  # a bad bundle must not stop a running monitor
            self._refuse_reload(f"it does not load ({error})")
            return
        if (new.window, new.hop) != (self.pipeline.window, self.pipeline.hop):
            self._refuse_reload(
                f"it cuts windows of {new.window} samples every {new.hop}, the running model "
                f"{self.pipeline.window} every {self.pipeline.hop}; restart to change that")
            return
        if new_policy != self.pipeline.policy_config:
            self._refuse_reload("it brings another alert policy; restart to change the policy")
            return
        self._store(self.pipeline.flush())
        self.pipeline.predictor = TimedPredictor(new, self.metrics)
        self.metrics.set_model(new.version)
        self.metrics.model_reloads.labels("done").inc()
        log.info("model reloaded: %s -> %s", current.version, new.version)

    def _refuse_reload(self, why: str) -> None:
        self.metrics.model_reloads.labels("refused").inc()
        log.error("model reload refused, keeping %s: %s", self.pipeline.predictor.version, why)


def policy_config(predictor: Any, settings: Settings | None = None) -> Any:
    """The alert policy stored in the bundle (defaults where it stores none), with the
    settings the configuration overrides (``alert_*`` options)."""
    from stream.core.alert_policy import AlertPolicyConfig

    stored = AlertPolicyConfig.from_dict(getattr(predictor, "alert_policy", None) or {})
    return stored.overridden(settings.alert_policy_overrides if settings else {})


def load_predictor(model_path: str | None) -> Any:
    """The named bundle, or the bundled default; a clear error if neither loads."""
    from model.bundle import inference as bundle

    if model_path is None:
        if not bundle.DEFAULT_BUNDLE_PATH.exists():
            raise LabquakeError(
                f"no bundled model at {bundle.DEFAULT_BUNDLE_PATH}; name one with --model "
                "(train it with `labquake train`)"
            )
        return bundle.load_default()
    return bundle.load(model_path)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "monitor", help="the daemon: Kafka → windows → features → model → Redis alerts",
        description=(
            "Consume acoustic chunks from Kafka as a member of a consumer group, predict "
            "time to failure for every window, and publish alerts to Redis. Run more "
            "monitors with the same --group to share a topic's partitions."
        ),
    )
    add_options(parser, "topic", "bootstrap", "redis", "model", "group", "max_batch",
                "max_wait", "inference_threads", "namespace", "stop_after_idle",
                "stream_idle_timeout", "stream_retention", "metrics_host", "metrics_port",
                *ALERT_POLICY_OPTIONS)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    settings = resolve(args)
    _check_services(settings)
    from model.bundle.inference import set_inference_threads

    set_inference_threads(settings.inference_threads)
    predictor = load_predictor(settings.model)
    return Monitor(settings, MonitorOptions.from_settings(settings), predictor,
                   reload_model=lambda: load_predictor(resolve(args).model)).run()


def _check_services(settings: Settings) -> None:
    from stream.io.security import (
        describe_kafka,
        kafka_client_options,
        redact_url,
        redis_client_options,
    )
    from stream.tools.services import kafka_ready, redis_ready

    if not kafka_ready(settings.bootstrap, timeout_s=10.0,
                       client_options=kafka_client_options(settings)):
        raise ServiceUnavailable(
            f"no Kafka broker answers at {describe_kafka(settings)}; start one "
            "(`labquake services up`), point --bootstrap / LABQUAKE_KAFKA_BOOTSTRAP at it, "
            "or check the credentials (docs/security.md)"
        )
    if not redis_ready(settings.redis, client_options=redis_client_options(settings)):
        raise ServiceUnavailable(
            f"no Redis answers at {redact_url(settings.redis)}; start one (`labquake services "
            "up`), point --redis / LABQUAKE_REDIS_URL at it, or check the credentials "
            "(docs/security.md)"
        )
