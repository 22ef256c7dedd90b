"""``labquake monitor``: the daemon. Kafka → windows → features → model → Redis.

The chain is source → core → sink: :class:`~stream.kafka_source.KafkaSource` gives
chunks, :class:`~stream.pipeline.Pipeline` turns them into predictions and alert events,
:class:`~stream.redis_sink.RedisSink` stores and publishes them. The commit rule
(DESIGN.md, "Stream semantics"):

1. the sink holds every result produced so far (it retries until it does);
2. then each partition's offset is committed at the oldest chunk that an unfinished
   window still needs (:class:`~stream.offsets.OffsetTracker`).

Killed at any moment, a restarted monitor re-reads from the committed offsets, rebuilds
the same windows, restores each stream's alert-policy state from Redis (stored with the
results), and its re-sent alerts are absorbed by the sink. SIGTERM and SIGINT drain:
the waiting windows are predicted, stored and committed, and the process exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import time
from typing import Any

from stream.config import Settings, add_options, resolve
from stream.errors import LabquakeError, ServiceUnavailable
from stream.offsets import OffsetTracker
from stream.pipeline import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, Event, Pipeline

log = logging.getLogger("labquake.monitor")

DEFAULT_GROUP = "labquake-monitor"
POLL_TIMEOUT_S = 0.05
COMMIT_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 5.0
STATUS_LOG_INTERVAL_S = 30.0


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    """How one monitor process runs."""

    group: str = DEFAULT_GROUP
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    namespace: str = "labquake"
    stop_after_idle_s: float | None = None  # for tests and batch jobs: exit when drained


class Monitor:
    """One consumer-group member: reads, predicts, stores, commits.

    Args:
        settings: Kafka, Redis, topic and model.
        options: group, batching and namespace.
        predictor: the loaded model bundle (``model.bundle.Bundle``).
    """

    def __init__(self, settings: Settings, options: MonitorOptions, predictor: Any) -> None:
        from stream.kafka_source import KafkaSource
        from stream.redis_sink import RedisSink

        self.settings = settings
        self.options = options
        self.member = f"{socket.gethostname()}:{os.getpid()}"
        self.sink = RedisSink.connect(settings.redis, options.namespace)
        self.pipeline = Pipeline(
            predictor, window=predictor.window, hop=predictor.hop,
            policy_config=policy_config(predictor), max_batch=options.max_batch,
            max_wait_s=options.max_wait_s, policy_state=self.sink.load_policy_state,
        )
        self.tracker = OffsetTracker()
        self.source = KafkaSource(settings, options.group, on_revoke=self._on_revoke,
                                  on_assign=self._on_assign)
        self._revoked: list[Any] = []
        self._stopping = False
        self._closing = False
        self._touched: set[tuple[str, str]] = set()
        self._last_commit = self._last_heartbeat = self._last_status = 0.0
        self._last_activity = time.monotonic()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or idle, if so configured); return the exit code."""
        previous = {sig: signal.signal(sig, self._request_stop)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
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
        log.info("monitor stopped: %s", dataclasses.asdict(self.pipeline.counters))
        return 0

    def step(self) -> None:
        """One poll: read, feed the core, store the results, commit what is safe."""
        events: list[Event] = []
        messages = self.source.poll(POLL_TIMEOUT_S)
        if messages:
            self._last_activity = time.monotonic()
        for message in messages:
            if message.chunk is None:
                self.tracker.skip(message.partition, message.offset)
                continue
            chunk = message.chunk
            self.tracker.record(message.partition, message.offset, chunk.stream_id,
                                chunk.first_sample, chunk.end_sample)
            self._touched.add(chunk.stream_id)
            events.extend(self.pipeline.add(chunk))
        if self.pipeline.due():
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
        snapshots = {stream_id: self.pipeline.policy_snapshot(stream_id)
                     for stream_id in self._touched if stream_id in self.pipeline.streams}
        if events or snapshots:
            self.sink.write(events, snapshots, should_stop=lambda: self._stopping)
        self._touched.clear()

    def _committable(self, partitions: list[Any]) -> dict[Any, int]:
        offsets = {}
        for partition in partitions:
            offset = self.tracker.committable(partition, self.pipeline.oldest_needed_sample)
            if offset is not None:
                offsets[partition] = offset
        return offsets

    def _commit(self) -> None:
        self.source.commit(self._committable(self.tracker.partitions()))
        self._last_commit = time.monotonic()

    def _on_revoke(self, partitions: list[Any]) -> dict[Any, int]:
        """Finish what this member has of the partitions it may lose; return their offsets.

        Their streams' state is kept until the new assignment is known: a partition that
        comes back to this member continues where it was (the consumer may keep its read
        position), one that goes elsewhere is dropped in ``_on_assign``.
        """
        if self._closing:
            return {}
        self._store(self.pipeline.flush())
        self._revoked = list(partitions)
        return self._committable([p for p in partitions if p in self.tracker.partitions()])

    def _on_assign(self, partitions: list[Any]) -> None:
        kept = set(partitions)
        gone = [p for p in self._revoked if p not in kept]
        for partition in gone:
            for stream_id in self.tracker.forget(partition):
                self.pipeline.drop_stream(stream_id)
        self._revoked = []
        log.info("assigned partitions: %s; gave up: %s",
                 ", ".join(f"{p.topic}/{p.partition}" for p in sorted(kept)) or "none",
                 ", ".join(f"{p.topic}/{p.partition}" for p in gone) or "none")

    def _drain(self) -> None:
        self._store(self.pipeline.flush())
        self._commit()

    def _heartbeat(self) -> None:
        lag = self.source.lag()
        counters = dataclasses.asdict(self.pipeline.counters)
        self.sink.heartbeat(self.member, {
            "member": self.member, "group": self.options.group, "topic": self.settings.topic,
            "model_version": self.pipeline.predictor.version, "lag": lag,
            "streams": len(self.pipeline.streams), "dead_letters":
                self.source.counters.dead_letters, **counters,
        })
        self._last_heartbeat = time.monotonic()
        if self._last_heartbeat - self._last_status >= STATUS_LOG_INTERVAL_S:
            log.info("status: lag=%s windows=%d alerts_raised=%d dead_letters=%d gaps=%d",
                     lag, counters["windows"], counters["alerts_raised"],
                     self.source.counters.dead_letters, counters["gaps"])
            self._last_status = self._last_heartbeat

    def _idle_long_enough(self) -> bool:
        limit = self.options.stop_after_idle_s
        return limit is not None and time.monotonic() - self._last_activity >= limit

    def _request_stop(self, signum: int, frame: object) -> None:
        log.info("signal %s: draining and stopping", signal.Signals(signum).name)
        self._stopping = True


def policy_config(predictor: Any) -> Any:
    """The alert policy stored in the bundle (defaults where it stores none)."""
    from stream.alert_policy import AlertPolicyConfig

    return AlertPolicyConfig.from_dict(getattr(predictor, "alert_policy", None) or {})


def load_predictor(model_path: str | None) -> Any:
    """The named bundle, or the bundled default; a clear error if neither loads."""
    from model import bundle

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
    add_options(parser, "topic", "bootstrap", "redis", "model")
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help=f"Kafka consumer group (default {DEFAULT_GROUP})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"largest inference batch, windows (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT_S,
                        help="longest a window waits for its batch, seconds "
                             f"(default {DEFAULT_MAX_WAIT_S})")
    parser.add_argument("--namespace", default="labquake",
                        help="prefix of the Redis names (default labquake)")
    parser.add_argument("--stop-after-idle", type=float, default=None, metavar="SECONDS",
                        help="exit after this long without messages (default: run forever)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.max_batch < 1:
        raise LabquakeError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.max_wait < 0:
        raise LabquakeError(f"--max-wait must be >= 0, got {args.max_wait}")
    settings = resolve(args)
    _check_services(settings)
    predictor = load_predictor(settings.model)
    options = MonitorOptions(group=args.group, max_batch=args.max_batch,
                             max_wait_s=args.max_wait, namespace=args.namespace,
                             stop_after_idle_s=args.stop_after_idle)
    return Monitor(settings, options, predictor).run()


def _check_services(settings: Settings) -> None:
    from stream.services import kafka_ready, redis_ready

    if not kafka_ready(settings.bootstrap, timeout_s=10.0):
        raise ServiceUnavailable(
            f"no Kafka broker answers at {settings.bootstrap}; start one "
            "(`labquake services up`) or point --bootstrap / LABQUAKE_KAFKA_BOOTSTRAP at it"
        )
    if not redis_ready(settings.redis):
        raise ServiceUnavailable(
            f"no Redis answers at {settings.redis}; start one (`labquake services up`) "
            "or point --redis / LABQUAKE_REDIS_URL at it"
        )
