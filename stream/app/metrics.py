"""The monitor's Prometheus metrics and the HTTP endpoint that serves them.

Every metric is named ``labquake_*``. Running totals that the monitor already keeps
(the pipeline's, the Kafka source's and the Redis sink's counters) are read when
Prometheus scrapes, through one collector, so nothing is counted twice; what only
exists as it happens (batch sizes, inference time, result latency, consumer lag, model
reloads, Kafka errors) is recorded here as it happens.

| metric                                   | type      | what                                   |
| ---------------------------------------- | --------- | -------------------------------------- |
| ``labquake_samples_total``               | counter   | samples read (rate: samples/s)         |
| ``labquake_chunks_total``                | counter   | chunks read                            |
| ``labquake_duplicate_chunks_total``      | counter   | re-delivered chunks skipped            |
| ``labquake_windows_total``               | counter   | windows predicted (rate: windows/s)    |
| ``labquake_seen_windows_total``          | counter   | windows read again, processed already  |
| ``labquake_batches_total``               | counter   | inference batches                      |
| ``labquake_gaps_total``                  | counter   | gaps in a stream's sample counter      |
| ``labquake_runs_total``                  | counter   | new runs of a stream (counter restarted) |
| ``labquake_far_jumps_total``             | counter   | far-ahead chunks refused unconfirmed   |
| ``labquake_stale_chunks_total``          | counter   | an earlier run's chunks re-read, skipped |
| ``labquake_resent_mismatches_total``     | counter   | re-sent samples unlike the first copy  |
| ``labquake_alerts_total{kind}``          | counter   | alerts by kind (raised ... cleared)    |
| ``labquake_alerts_logged_total``         | counter   | alerts the Redis log took              |
| ``labquake_alerts_rejected_total``       | counter   | re-sent alerts the log absorbed        |
| ``labquake_messages_total``              | counter   | Kafka messages read                    |
| ``labquake_dead_letters_total``          | counter   | messages sent to the dead-letter topic |
| ``labquake_redis_errors_total``          | counter   | failed Redis calls (each retried)      |
| ``labquake_kafka_errors_total``          | counter   | failed Kafka commits and lag queries   |
| ``labquake_batch_size_windows``          | histogram | windows per inference batch            |
| ``labquake_inference_seconds``           | histogram | model time per batch                   |
| ``labquake_result_latency_seconds``      | histogram | window's last chunk read → in Redis    |
| ``labquake_end_to_end_latency_seconds``  | histogram | window's last chunk sent → in Redis    |
| ``labquake_consumer_lag_messages{partition}`` | gauge | messages behind each partition's end |
| ``labquake_streams``                     | gauge     | streams (instrument, channel) held     |
| ``labquake_model_info{version}``         | gauge     | 1 for the model in use                 |
| ``labquake_model_reloads_total{outcome}``| counter   | SIGHUP reloads ``done`` / ``refused``  |
| ``labquake_last_poll_timestamp_seconds`` | gauge     | when the loop last polled Kafka (Unix) |

Example:
    >>> metrics = MonitorMetrics()
    >>> metrics.watch(lambda: {"windows": 12, "alerts_raised": 1})
    >>> metrics.observe_batch(windows=12, seconds=0.02)
    >>> "labquake_windows_total 12.0" in metrics.exposition().splitlines()
    True
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from stream.core.errors import LabquakeError

log = logging.getLogger(__name__)

StreamId = tuple[str, str]

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Running total kept by the monitor → (metric name without _total, help, labels).
ALERTS_HELP = "Alerts published, by kind (raised, updated, withdrawn, cleared)."
WATCHED_COUNTERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "samples": ("labquake_samples", "Samples read from Kafka.", {}),
    "chunks": ("labquake_chunks", "Chunks read from Kafka.", {}),
    "duplicate_chunks": ("labquake_duplicate_chunks", "Re-delivered chunks skipped.", {}),
    "windows": ("labquake_windows", "Windows predicted.", {}),
    "seen_windows": ("labquake_seen_windows", "Windows read again after a restart or a "
                     "rebalance, processed already: skipped.", {}),
    "batches": ("labquake_batches", "Inference batches run.", {}),
    "gaps": ("labquake_gaps", "Gaps in a stream's sample counter.", {}),
    "runs": ("labquake_runs", "New runs of a stream: its instrument counting again.", {}),
    "far_jumps": ("labquake_far_jumps", "Chunks far ahead of their stream, refused until "
                  "the next chunk confirms the jump.", {}),
    "stale_chunks": ("labquake_stale_chunks", "Chunks of a stream's earlier run read again "
                     "after a restart: skipped.", {}),
    "resent_mismatches": ("labquake_resent_mismatches", "Re-sent samples that differ "
                          "from the first copy (which is kept).", {}),
    "alerts_raised": ("labquake_alerts", ALERTS_HELP, {"kind": "raised"}),
    "alerts_updated": ("labquake_alerts", ALERTS_HELP, {"kind": "updated"}),
    "alerts_withdrawn": ("labquake_alerts", ALERTS_HELP, {"kind": "withdrawn"}),
    "alerts_cleared": ("labquake_alerts", ALERTS_HELP, {"kind": "cleared"}),
    "alerts_logged": ("labquake_alerts_logged", "Alerts the Redis alert log took.", {}),
    "alerts_rejected": ("labquake_alerts_rejected",
                        "Re-sent alerts the Redis alert log absorbed.", {}),
    "messages": ("labquake_messages", "Kafka messages read.", {}),
    "dead_letters": ("labquake_dead_letters", "Messages sent to the dead-letter topic.", {}),
    "redis_errors": ("labquake_redis_errors", "Failed Redis calls (each is retried).", {}),
}


class _WatchedCounters(Collector):
    """Reports the monitor's running totals as counters when Prometheus scrapes."""

    def __init__(self, read: Callable[[], Mapping[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        values = self._read()
        families: dict[str, CounterMetricFamily] = {}
        for key, (name, help_text, labels) in WATCHED_COUNTERS.items():
            if key not in values:
                continue
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, help_text,
                                                               labels=list(labels))
            family.add_metric(list(labels.values()), float(values[key]))
        yield from families.values()


class MonitorMetrics:
    """The monitor's metrics in their own registry (one per monitor, so tests can run two).

    Args:
        registry: where to register them (default: a new ``CollectorRegistry``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.batch_size = Histogram(
            "labquake_batch_size_windows", "Windows per inference batch.",
            buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.inference_seconds = Histogram(
            "labquake_inference_seconds", "Model time per inference batch, seconds.",
            buckets=INFERENCE_BUCKETS, registry=self.registry)
        self.result_latency_seconds = Histogram(
            "labquake_result_latency_seconds",
            "From reading a window's last chunk to Redis holding its prediction, seconds.",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        # Sent: the chunk's Kafka timestamp, set by the producer on the instrument's computer;
        # a clock offset between the two computers shifts it (a negative value reads as 0).
        self.end_to_end_latency_seconds = Histogram(
            "labquake_end_to_end_latency_seconds",
            "From the instrument sending a window's last chunk to Redis holding its "
            "prediction, seconds.", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.consumer_lag = Gauge(
            "labquake_consumer_lag_messages", "Messages behind the end of each partition.",
            ["partition"], registry=self.registry)
        self.streams = Gauge("labquake_streams", "Streams (instrument, channel) held.",
                             registry=self.registry)
        self.model_info = Gauge("labquake_model_info", "1 for the model bundle in use.",
                                ["version"], registry=self.registry)
        self.model_reloads = Counter("labquake_model_reloads", "Model reloads on SIGHUP.",
                                     ["outcome"], registry=self.registry)
        self.kafka_errors = Counter("labquake_kafka_errors",
                                    "Failed Kafka commits and lag queries.",
                                    registry=self.registry)
        # The endpoint answers from its own thread: this tells a stuck loop from a live one.
        self.last_poll = Gauge("labquake_last_poll_timestamp_seconds",
                               "When the monitor's loop last polled Kafka, Unix time.",
                               registry=self.registry)
        self._lagging: set[str] = set()

    def watch(self, read: Callable[[], Mapping[str, float]]) -> None:
        """Report the running totals that ``read()`` gives (keys of ``WATCHED_COUNTERS``)."""
        self.registry.register(_WatchedCounters(read))

    def observe_batch(self, windows: int, seconds: float) -> None:
        """One inference batch of ``windows`` windows took ``seconds``."""
        self.batch_size.observe(windows)
        self.inference_seconds.observe(seconds)

    def set_lag(self, lag: Mapping[str, int]) -> None:
        """The lag of each assigned partition; partitions no longer assigned disappear."""
        for partition in self._lagging - set(lag):
            self.consumer_lag.remove(partition)
        for partition, messages in lag.items():
            self.consumer_lag.labels(partition).set(messages)
        self._lagging = set(lag)

    def set_model(self, version: str) -> None:
        """The model in use is ``version`` (the previous one's series disappears)."""
        self.model_info.clear()
        self.model_info.labels(version).set(1)

    def exposition(self) -> str:
        """The metrics in Prometheus's text format, as ``/metrics`` serves them."""
        return generate_latest(self.registry).decode("utf-8")


class TimedPredictor:
    """A predictor that reports each batch's size and model time to ``metrics``.

    Everything but ``predict`` and ``predict_in_context`` (``version``, ``window``, ``hop``,
    ``alert_policy``, ``context``...) is the wrapped predictor's.

    Args:
        predictor: the model bundle (anything with ``.predict(windows, start_samples)``).
        metrics: where to report.
    """

    def __init__(self, predictor: Any, metrics: MonitorMetrics) -> None:
        self.wrapped = predictor
        self._metrics = metrics

    def predict(self, windows: Any, start_samples: Any) -> Any:
        started = time.perf_counter()
        result = self.wrapped.predict(windows, start_samples)
        self._metrics.observe_batch(len(windows), time.perf_counter() - started)
        return result

    def predict_in_context(self, windows: Any, start_samples: Any, contexts: Any,
                           **sharing: Any) -> Any:
        started = time.perf_counter()
        # ``sharing``: the pipeline's block cache and each window's stream, if any.
        result = self.wrapped.predict_in_context(windows, start_samples, contexts, **sharing)
        self._metrics.observe_batch(len(windows), time.perf_counter() - started)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class LatencyClock:
    """When each stream's chunks were read, to time a window from its last chunk to Redis.

    Example:
        >>> clock = LatencyClock()
        >>> clock.received(("rig1", "ae0"), first_sample=0, end_sample=100, at=10.0)
        >>> clock.stored(("rig1", "ae0"), window_end_sample=99, at=10.25)
        0.25
    """

    def __init__(self) -> None:
        self._chunks: dict[StreamId, collections.deque[tuple[int, int, float]]] = {}

    def received(self, stream_id: StreamId, first_sample: int, end_sample: int,
                 at: float) -> None:
        """A chunk with samples ``[first_sample, end_sample)`` was read at ``at``."""
        chunks = self._chunks.setdefault(stream_id, collections.deque())
        if chunks and end_sample <= chunks[-1][1]:
            return  # a re-delivery: the first reading is when the samples arrived
        chunks.append((first_sample, end_sample, at))

    def stored(self, stream_id: StreamId, window_end_sample: int, at: float) -> float | None:
        """Seconds from reading the chunk holding ``window_end_sample`` to ``at``; ``None``
        when that chunk was not seen (read before a restart)."""
        chunks = self._chunks.get(stream_id)
        # Windows come in counter order: chunks that end before this one's are done with.
        while chunks and chunks[0][1] <= window_end_sample:
            chunks.popleft()
        if not chunks or chunks[0][0] > window_end_sample:
            return None
        return at - chunks[0][2]

    def forget(self, stream_id: StreamId) -> None:
        """The stream went to another monitor."""
        self._chunks.pop(stream_id, None)


@dataclasses.dataclass
class MetricsServer:
    """The running ``/metrics`` endpoint."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(metrics: MonitorMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` from a daemon thread.

    Args:
        host: address to bind (``127.0.0.1`` keeps it on this machine).
        port: port to bind; 0 picks a free one (see ``MetricsServer.port``).

    Raises:
        LabquakeError: the address cannot be bound.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as error:
        raise LabquakeError(
            f"cannot serve metrics on {host}:{port} ({error.strerror}); choose another "
            "--metrics-port / LABQUAKE_METRICS_PORT or free that one") from error
    bound_port = server.server_address[1]
    log.info("metrics at http://%s:%d/metrics", host, bound_port)
    return MetricsServer(host, bound_port, server, thread)
