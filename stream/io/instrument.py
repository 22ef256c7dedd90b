"""The instrument side: cut int16 samples into chunks and send them to Kafka (``labquake produce``).

Three parts, each usable alone:

- :class:`Chunker` — pure: turns any-length sample blocks into :class:`~stream.core.wire.Chunk`
  objects with a contiguous sample counter and the instrument clock of each chunk.
- :class:`InstrumentProducer` — what a DAQ script uses: a chunker plus a sink that
  delivers each encoded chunk; by default the sink is Kafka (:class:`KafkaChunkSink`).
- the ``labquake produce`` verb — a file, the simulator or raw int16 on standard input
  as the source, optional pacing (:class:`Pacer`), a progress bar and a summary line
  (``--json``: one JSON object on stdout, :func:`produce_report`; ``--quiet``: neither
  bar nor summary).

Chunk grid: chunks end on multiples of ``chunk_samples`` of the instrument counter, so
the same samples give the same chunks whatever block sizes the acquisition delivers and
wherever a run starts. The first chunk after a start (or after :meth:`Chunker.flush` /
a gap) may be shorter. Samples that do not yet fill a chunk are held until more come,
or until ``flush()`` / ``close()`` sends them as a short chunk.

Clock: the start time of a chunk is ``start_time + (first_sample - origin) / sample_rate``,
always computed from the origin (the first sample the producer was given), never by
adding chunk durations, so it does not drift over a long run.

Delivery: Kafka's idempotent producer (``acks="all"``, ``enable_idempotence=True``,
at most 5 requests in flight): the broker de-duplicates retried batches and keeps them
in order, so a retry neither duplicates nor reorders chunks.

Compression is off by default. Lab AE is mostly a few counts of noise, so it does
compress (about 3:1 with zlib on simulated records), but the codec costs the instrument
computer CPU that the stream needs: kafka-python's gzip runs at level 9, about
0.6 million samples/s on one core, far slower than a 4 MHz stream. lz4 or zstd may keep
up when their Python packages (``lz4``, ``zstandard``) are installed; choose one with
``compression`` when the link to the broker or its disk is the bottleneck.

Example (a DAQ loop; ``card.read_block()`` stands for your acquisition API)::

    from stream.io.instrument import InstrumentProducer

    with InstrumentProducer("rig1", "ae0", sample_rate=4e6,
                            first_sample=resume_index) as producer:
        while acquiring:
            block = card.read_block()       # 1-D int16 (or an integer array within int16)
            producer.send(block)
        # leaving the block flushes the held tail and waits for Kafka's acknowledgements
    save_resume_index(producer.acknowledged)  # where a restart resumes

Example (the pure part):
    >>> import numpy as np
    >>> chunker = Chunker("rig1", "ae0", sample_rate=1000.0, chunk_samples=4)
    >>> [(c.first_sample, len(c.samples)) for c in chunker.push(np.arange(10, dtype=np.int16))]
    [(0, 4), (4, 4)]
    >>> tail = chunker.flush()
    >>> tail.first_sample, tail.samples.tolist(), tail.start_time
    (8, [8, 9], 0.008)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import FrameType
from typing import Any, BinaryIO, Protocol

import numpy as np

from stream.config.arguments import at_least, finite_number, positive_number, positive_or_endless
from stream.config.options import Settings, add_options, resolve
from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.core.wire import (
    HEADER_SIZE_V2,
    MAX_ABS_START_TIME,
    MAX_FIRST_SAMPLE,
    MAX_RUN_ID,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SAMPLE_DTYPE,
    Chunk,
    WireError,
    check_sample_rate,
    encode,
    message_key,
)
from stream.io.kafka_logging import quiet_kafka_logs
from stream.io.security import kafka_client_options

log = logging.getLogger(__name__)

VERB = "produce"
DEFAULT_CHANNEL = "ae0"
DEFAULT_CHUNK_SAMPLES = 4096
# 512 KiB of samples: the largest chunk still fits a broker's default 1 MiB message limit.
MAX_CHUNK_SAMPLES = 262_144
DEFAULT_PARTITIONS = 1
DEFAULT_REPLICATION_FACTOR = 1
DEFAULT_SIMULATED_SECONDS = 60.0
INT16_MIN, INT16_MAX = -32768, 32767
# Standard input is read in blocks of at most this many bytes (what is available is used
# at once, so a slow pipe is not held back waiting for a full block).
STDIN_BLOCK_BYTES = 1 << 20
# Samples per block asked of a file reader or the simulator.
SOURCE_BLOCK_SAMPLES = 1 << 20
# Ctrl-C (SIGINT) and SIGTERM stop cleanly; the exit code is the shell's 128 + signal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Kafka producer settings (kafka-python 3). A batch holds many 8 KiB chunks so a request
# carries tens of them; a 5 ms linger adds at most 5 ms of latency to a paced stream.
KAFKA_BATCH_BYTES = 512 * 1024
KAFKA_LINGER_MS = 5
KAFKA_MAX_IN_FLIGHT = 5  # the most the idempotent producer allows with ordering kept
KAFKA_BOOTSTRAP_TIMEOUT_MS = 10_000
KAFKA_REQUEST_TIMEOUT_MS = 30_000  # kafka-python's default, stated: the delivery bound uses it
# Codecs kafka-python knows, and the Python package each needs beyond kafka-python.
COMPRESSION_PACKAGES = {"gzip": None, "lz4": "lz4", "zstd": "zstandard",
                        "snappy": "python-snappy"}
# How long the producer waits for Kafka (a broker away) before it gives up, exits with
# ServiceUnavailable's code 3 and says where to resume; a chunk may take as long to be
# acknowledged, retries included.
DEFAULT_OUTAGE_TIMEOUT_S = 300.0
# The most bytes of chunks sent but not yet acknowledged; beyond, sending blocks (the
# source is read no further) until Kafka acknowledges, so an outage costs bounded memory.
MAX_PENDING_BYTES = 32 << 20
PENDING_POLL_S = 0.05
PAUSE_LOG_AFTER_S = 1.0


def as_samples(values: object) -> np.ndarray:
    """Check and convert one block of samples to a 1-D native int16 array.

    Accepted: int16 arrays of either byte order, and arrays of any other integer type
    whose values all lie in [-32768, 32767] (a Python list of ints too). Refused, with a
    :class:`LabquakeError`: floating-point and boolean data (they are not ADC counts;
    scale them to counts yourself so no rounding happens behind your back), integer
    values outside int16, and arrays that are not 1-D (one producer carries one channel).

    Args:
        values: the samples.

    Returns:
        A native-order int16 array (the input itself when it already is one).

    Example:
        >>> as_samples([1, -2, 3]).dtype
        dtype('int16')
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise LabquakeError(
            f"samples must be a 1-D array (one channel), got shape {array.shape};"
            " send each channel through its own producer")
    if array.size == 0:
        return np.empty(0, np.int16)
    if array.dtype.kind not in "iu":
        raise LabquakeError(
            f"samples are {array.dtype}, not integers: labquake carries raw int16 ADC counts;"
            " scale to counts and convert, e.g. np.round(volts / volts_per_count).astype(np.int16)")
    if array.dtype.kind == "i" and array.dtype.itemsize == 2:
        return array.astype(np.int16, copy=False)
    low, high = int(array.min()), int(array.max())
    if low < INT16_MIN or high > INT16_MAX:
        raise LabquakeError(
            f"samples range from {low} to {high}, outside int16 [{INT16_MIN}, {INT16_MAX}];"
            " labquake carries int16 ADC counts: rescale them first")
    return array.astype(np.int16)


class Chunker:
    """Cuts a stream of int16 samples into chunks on a fixed grid of the sample counter.

    Chunks end on multiples of ``chunk_samples`` of the counter; samples short of the
    next boundary are held (copied) until more arrive or :meth:`flush` is called. Full
    chunks cut straight from a block are views of that block: encode them before
    changing the block's contents.

    Args:
        instrument: instrument id (the rules of :class:`~stream.core.wire.Chunk`).
        channel: channel id.
        sample_rate: samples per second, in the range ``stream.core.wire`` allows.
        chunk_samples: samples per chunk, 1..``MAX_CHUNK_SAMPLES``.
        first_sample: counter index of the first sample pushed, ≥ 0.
        start_time: instrument clock (s) of the first sample; ``None`` means
            ``first_sample / sample_rate`` (a clock that reads 0 at counter 0).

    Raises:
        LabquakeError: an argument is out of range.

    Example:
        >>> import numpy as np
        >>> chunker = Chunker("rig1", "ae0", sample_rate=100.0, chunk_samples=4, first_sample=6)
        >>> [(c.first_sample, c.end_sample, c.start_time)
        ...  for c in chunker.push(np.zeros(7, np.int16))]
        [(6, 8, 0.06), (8, 12, 0.08)]
        >>> chunker.position, chunker.held
        (13, 1)
    """

    def __init__(self, instrument: str, channel: str = DEFAULT_CHANNEL, *, sample_rate: float,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES, first_sample: int = 0,
                 start_time: float | None = None, run: int = 0) -> None:
        try:
            message_key(instrument, channel)
        except WireError as error:
            raise LabquakeError(f"{error}; choose another id") from None
        if not (isinstance(chunk_samples, int | np.integer)
                and 1 <= chunk_samples <= MAX_CHUNK_SAMPLES):
            raise LabquakeError(
                f"chunk size {chunk_samples!r} must be a whole number"
                f" from 1 to {MAX_CHUNK_SAMPLES}")
        if not (isinstance(first_sample, int | np.integer)
                and 0 <= first_sample <= MAX_FIRST_SAMPLE):
            raise LabquakeError(f"first sample {first_sample!r} must be a whole number from 0"
                                f" to 2**62 - 1 ({MAX_FIRST_SAMPLE})")
        sample_rate = float(sample_rate)
        try:
            check_sample_rate(sample_rate)
        except ValueError as error:
            raise LabquakeError(f"sample rate: {error}; give the instrument's rate in Hz"
                                ) from None
        if start_time is None:
            start_time = int(first_sample) / sample_rate
        if not (math.isfinite(start_time) and abs(start_time) <= MAX_ABS_START_TIME):
            raise LabquakeError(f"start time {start_time!r} s must be finite and within "
                                f"±{MAX_ABS_START_TIME:g} s")
        if not (isinstance(run, int | np.integer) and 0 <= run <= MAX_RUN_ID):
            raise LabquakeError(f"run id {run!r} must be a whole number from 0 to {MAX_RUN_ID}")
        self.instrument = instrument
        self.channel = channel
        self.sample_rate = sample_rate
        self.run = int(run)
        self.chunk_samples = int(chunk_samples)
        self.origin = int(first_sample)
        self.start_time = float(start_time)
        self._position = self.origin
        self._buffer = np.empty(self.chunk_samples, np.int16)
        self._held = 0

    @property
    def position(self) -> int:
        """Counter index the next pushed sample gets (held samples included before it)."""
        return self._position

    @property
    def held(self) -> int:
        """Samples pushed but not yet in a chunk."""
        return self._held

    def time_of(self, sample_index: int) -> float:
        """Instrument clock (s) of a counter index, from the origin and the sample rate."""
        return self.start_time + (sample_index - self.origin) / self.sample_rate

    def push(self, samples: object, first_sample: int | None = None) -> list[Chunk]:
        """Add a block of samples; return the chunks it completes, in counter order.

        Args:
            samples: a block (see :func:`as_samples` for what is accepted).
            first_sample: the block's counter index when the acquisition knows it
                (a hardware counter). Equal to :attr:`position`: nothing changes.
                Greater: samples were lost; the held samples go out as a short chunk
                and the counter jumps (the monitor reports the gap). Smaller: refused.

        Returns:
            The completed chunks (possibly none).

        Raises:
            LabquakeError: bad samples, or a ``first_sample`` behind the counter.
        """
        values = as_samples(samples)
        chunks = []
        if first_sample is not None and first_sample != self._position:
            if first_sample < self._position:
                raise LabquakeError(
                    f"block starts at sample {first_sample} but the counter is at "
                    f"{self._position}: the sample counter must never go backwards "
                    "(to re-send, start a new producer at the resume point)")
            tail = self.flush()
            if tail is not None:
                chunks.append(tail)
            self._position = int(first_sample)
        index = 0
        while index < len(values):
            chunk_start = self._position - self._held
            boundary = (chunk_start // self.chunk_samples + 1) * self.chunk_samples
            take = min(boundary - self._position, len(values) - index)
            piece = values[index:index + take]
            index += take
            self._position += take
            if self._held == 0 and self._position == boundary:
                chunks.append(self._chunk(chunk_start, piece))
                continue
            self._buffer[self._held:self._held + take] = piece
            self._held += take
            if self._position == boundary:
                chunks.append(self._take_held())
        return chunks

    def flush(self) -> Chunk | None:
        """The held samples as a short chunk (``None`` when nothing is held)."""
        return self._take_held() if self._held else None

    def _take_held(self) -> Chunk:
        chunk = self._chunk(self._position - self._held, self._buffer[:self._held].copy())
        self._held = 0
        return chunk

    def _chunk(self, first_sample: int, samples: np.ndarray) -> Chunk:
        try:
            return Chunk(self.instrument, self.channel, first_sample, self.sample_rate,
                         self.time_of(first_sample), samples, self.run)
        except WireError as error:  # the counter or the clock ran out of the wire's range
            raise LabquakeError(f"cannot send the chunk at sample {first_sample}: {error}"
                                ) from None


def send_deadline(start: float, samples: int, rate: float) -> float:
    """The clock time before which a paced sender must not have sent ``samples`` samples.

    Computed from the start every time (never by adding per-chunk delays), so pacing
    does not drift: sample ``n`` (counting from 0) is complete at ``start + (n + 1) / rate``.

    Args:
        start: clock reading when pacing began (seconds).
        samples: how many samples will have been sent.
        rate: samples per second.

    Returns:
        The deadline on the same clock.

    Example:
        >>> send_deadline(100.0, 4096, 4096.0)
        101.0
    """
    return start + samples / rate


class Pacer:
    """Sleeps so that a stream goes out no faster than ``rate`` samples per second.

    Args:
        rate: samples per second, finite and > 0.
        clock: monotonic clock (seconds).
        sleep: function that sleeps a number of seconds.

    Example:
        >>> now = [0.0]
        >>> pacer = Pacer(1000.0, clock=lambda: now[0],
        ...               sleep=lambda s: now.__setitem__(0, now[0] + s))
        >>> pacer.wait(500); now[0]
        0.5
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise LabquakeError(f"pacing rate {rate!r} samples/s must be finite and > 0")
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None

    def wait(self, samples: int) -> None:
        """Return once ``samples`` samples (counted from the first call) may have gone out.

        The first call starts the clock. A sender that fell behind is not slowed
        further: it catches up as fast as it can.
        """
        now = self._clock()
        if self._start is None:
            self._start = now
        delay = send_deadline(self._start, samples, self.rate) - now
        if delay > 0:
            self._sleep(delay)


class ChunkSink(Protocol):
    """Where an :class:`InstrumentProducer` delivers encoded chunks."""

    def send(self, key: bytes, value: bytes, on_delivered: Callable[[], None]) -> None:
        """Queue one message; call ``on_delivered`` once it is stored durably."""

    def flush(self) -> None:
        """Return once every queued message is delivered; raise if one was lost."""

    def close(self) -> None:
        """Flush and release the connection."""


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS,
                 replication_factor: int = DEFAULT_REPLICATION_FACTOR,
                 client_options: Mapping[str, Any] | None = None) -> bool:
    """Create the topic if it is missing.

    An existing topic is left as it is (a different partition count is logged: adding
    partitions moves streams between partitions, which is an operator's decision).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: topic name.
        partitions: partitions of a new topic, ≥ 1.
        replication_factor: replicas of a new topic, ≥ 1.
        client_options: kafka-python security options
            (``stream.io.security.kafka_client_options``).

    Returns:
        ``True`` when this call created the topic.

    Raises:
        ServiceUnavailable: no broker answers.
        LabquakeError: the broker refused to create the topic.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

    # Each failed connection attempt is logged by kafka-python; the one line below says it all.
    with quiet_kafka_logs():
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap,
                                     bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
                                     **(client_options or {}))
        except KafkaTimeoutError:
            raise _no_broker(bootstrap) from None
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": replication_factor}},
            wait_for_metadata=True)
        log.info("created topic %s with %d partition(s)", topic, partitions)
        return True
    except TopicAlreadyExistsError:
        existing = len(admin.describe_topics([topic])[0]["partitions"])
        if existing != partitions:
            log.warning("topic %s exists with %d partition(s); %d asked, left unchanged",
                        topic, existing, partitions)
        return False
    except KafkaTimeoutError:
        raise _no_broker(bootstrap) from None
    except KafkaError as error:
        raise LabquakeError(f"Kafka refused to create topic {topic!r}: {error}") from None
    finally:
        admin.close()


def _no_broker(bootstrap: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"no Kafka broker answers at {bootstrap}; start one ('labquake services up'), "
        "give --bootstrap / LABQUAKE_KAFKA_BOOTSTRAP, or check the security settings "
        "(a broker refuses wrong credentials or an untrusted CA the same way; "
        "docs/security.md)")


def check_compression(compression: str | None) -> None:
    """Check that kafka-python can use ``compression`` here (``None``: no compression).

    Raises:
        LabquakeError: an unknown codec, or one whose Python package is missing.
    """
    if compression is None:
        return
    if compression not in COMPRESSION_PACKAGES:
        raise LabquakeError(f"compression {compression!r} is unknown; choose one of "
                            f"{', '.join(COMPRESSION_PACKAGES)} or none")
    from kafka import codec

    if not getattr(codec, f"has_{compression}")():
        raise LabquakeError(f"compression {compression} needs the Python package "
                            f"{COMPRESSION_PACKAGES[compression]}: pip install it, or choose none")


class KafkaChunkSink:
    """Delivers chunks to a Kafka topic with kafka-python's idempotent producer.

    While Kafka does not acknowledge (a broker away), chunks wait in memory up to
    ``max_pending_bytes``; then ``send`` blocks until Kafka acknowledges some, for at most
    ``outage_timeout_s``, after which it gives up (``ServiceUnavailable``).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the topic.
        compression: ``None`` (default) or a codec of ``COMPRESSION_PACKAGES``.
        client_options: kafka-python security options
            (``stream.io.security.kafka_client_options``).
        outage_timeout_s: how long to wait for Kafka before giving up.
        max_pending_bytes: the most bytes sent and not yet acknowledged.

    Raises:
        LabquakeError: a codec that cannot be used; ServiceUnavailable: no broker answers.
    """

    def __init__(self, bootstrap: str, topic: str, compression: str | None = None,
                 client_options: Mapping[str, Any] | None = None,
                 outage_timeout_s: float = DEFAULT_OUTAGE_TIMEOUT_S,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaTimeoutError

        check_compression(compression)
        self.bootstrap = bootstrap
        self.topic = topic
        self.outage_timeout_s = outage_timeout_s
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0  # changed on kafka-python's I/O thread too: under the lock
        self.peak_pending_bytes = 0
        self._lock = threading.Lock()
        self._last_progress = time.monotonic()  # of the last acknowledgement, or idle
        self._gave_up = False
        self._failure: Exception | None = None
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                enable_idempotence=True,
                max_in_flight_requests_per_connection=KAFKA_MAX_IN_FLIGHT,
                # A chunk is retried for as long as the producer waits for the broker
                # (kafka-python wants more than a request and a linger).
                delivery_timeout_ms=max(int(outage_timeout_s * 1000),
                                        KAFKA_REQUEST_TIMEOUT_MS + KAFKA_LINGER_MS + 1000),
                request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
                linger_ms=KAFKA_LINGER_MS,
                batch_size=KAFKA_BATCH_BYTES,
                compression_type=compression,
                # The topic is created on purpose (ensure_topic); a typo must not make one.
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=KAFKA_BOOTSTRAP_TIMEOUT_MS,
                **(client_options or {}),
            )
        except KafkaTimeoutError:
            raise _no_broker(bootstrap) from None

    def send(self, key: bytes, value: bytes, on_delivered: Callable[[], None]) -> None:
        """Queue one message; kafka-python's I/O thread delivers it.

        kafka-python 3 queues without a memory limit of its own, so this one blocks while
        ``max_pending_bytes`` wait for their acknowledgement.

        Raises:
            ServiceUnavailable: Kafka acknowledged nothing for ``outage_timeout_s``.
        """
        from kafka.errors import KafkaTimeoutError

        self._raise_failure()
        self._wait_for_room(len(value))
        try:
            future = self._producer.send(self.topic, key=key, value=value)
        except KafkaTimeoutError as error:
            # Raised when the topic's metadata does not come (topic deleted, broker gone).
            raise ServiceUnavailable(
                f"topic {self.topic!r} is not available at {self.bootstrap} ({error});"
                " check the broker and the topic") from None
        size = len(value)
        with self._lock:
            if not self.pending_bytes:
                self._last_progress = time.monotonic()
            self.pending_bytes += size
            self.peak_pending_bytes = max(self.peak_pending_bytes, self.pending_bytes)

        def acknowledged(_metadata: object) -> None:
            self._settled(size)
            on_delivered()

        def failed(error: Exception) -> None:
            self._settled(size)
            self._record_failure(error)

        future.add_callback(acknowledged)
        future.add_errback(failed)

    def flush(self) -> None:
        """Wait for every queued message to be acknowledged."""
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=self.outage_timeout_s)
        except KafkaTimeoutError:
            self._gave_up = True
            raise ServiceUnavailable(
                f"Kafka at {self.bootstrap} did not acknowledge the chunks within "
                f"{self.outage_timeout_s:g} s (--outage-timeout); check the broker") from None
        self._raise_failure()

    def close(self) -> None:
        """Flush, then close the producer (also when the flush fails); after giving up,
        close at once: waiting again for the same chunks gains nothing."""
        if self._gave_up:
            self._close_now()
            return
        try:
            self.flush()
        except LabquakeError:
            self._close_now()
            raise
        self._producer.close(timeout=self.outage_timeout_s)

    def _close_now(self) -> None:
        """Close without waiting for the chunks Kafka never acknowledged (they are lost
        here; the resume point says where to send them again)."""
        from kafka.errors import KafkaError

        try:
            self._producer.close(timeout=0)
        except KafkaError as error:  # kafka-python reports the unsent batches so
            log.debug("closing the Kafka producer: %s", error)

    def _settled(self, size: int) -> None:
        with self._lock:
            self.pending_bytes -= size
            self._last_progress = time.monotonic()

    def _wait_for_room(self, size: int) -> None:
        """Block while the unacknowledged bytes are at their limit (the policy: hold the
        source back, lose nothing); give up once Kafka has acknowledged nothing for
        ``outage_timeout_s``."""
        if self.pending_bytes + size <= self.max_pending_bytes or not self.pending_bytes:
            return
        started = time.monotonic()
        said = False  # a wait of a moment (catching up after an outage) is not news
        while self.pending_bytes and self.pending_bytes + size > self.max_pending_bytes:
            self._raise_failure()
            now = time.monotonic()
            if now - self._last_progress >= self.outage_timeout_s:
                self._gave_up = True
                raise ServiceUnavailable(
                    f"Kafka at {self.bootstrap} acknowledged nothing for "
                    f"{self.outage_timeout_s:g} s (--outage-timeout); check the broker")
            if not said and now - started >= PAUSE_LOG_AFTER_S:
                log.warning("Kafka at %s is not acknowledging: %.1f MiB wait, sending paused "
                            "until it does (giving up after %g s without an "
                            "acknowledgement)", self.bootstrap, self.pending_bytes / 2**20,
                            self.outage_timeout_s)
                said = True
            time.sleep(PENDING_POLL_S)
        if said:
            log.warning("Kafka at %s acknowledges again after %.1f s; sending resumed",
                        self.bootstrap, time.monotonic() - started)

    def _record_failure(self, error: Exception) -> None:
        # Called on kafka-python's I/O thread; the first failure is the one to report.
        if self._failure is None:
            self._failure = error

    def _raise_failure(self) -> None:
        from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

        error = self._failure
        if error is None:
            return
        if isinstance(error, MessageSizeTooLargeError):
            raise LabquakeError(
                f"Kafka refused a chunk as too large ({error}); use a smaller --chunk")
        if isinstance(error, KafkaTimeoutError):
            self._gave_up = True
            raise ServiceUnavailable(
                f"a chunk was not delivered to Kafka at {self.bootstrap} in time ({error});"
                " check the broker")
        raise LabquakeError(f"Kafka failed to store a chunk: {error}")


class InstrumentProducer:
    """Sends one stream (instrument, channel) of int16 samples to Kafka as chunks.

    ``send`` takes blocks of any length; chunks go out keyed ``instrument/channel`` (all
    of a stream's chunks land in one partition, in order). ``flush`` sends the held
    tail and waits until Kafka has acknowledged everything; ``close`` (or leaving a
    ``with`` block) flushes and disconnects. Without ``sink``, the constructor creates
    the topic when it is missing, then connects.

    Sample counter and clock: the counter must never go backwards. To restart after a
    stop or a crash, start a new producer with ``first_sample`` at or before the first
    sample Kafka did not acknowledge (:attr:`acknowledged`, saved by your script); the
    monitor skips re-sent samples by their index, and reports a gap if you resume
    after it. Give ``start_time`` when the instrument's clock is not ``index / rate``.

    Args:
        instrument: instrument id (printable, no ``/``, 1..64 UTF-8 bytes).
        channel: channel id, same rules.
        sample_rate: samples per second.
        bootstrap: Kafka bootstrap servers (default: ``settings`` or the environment).
        topic: Kafka topic (default: ``settings`` or the environment).
        settings: a :class:`~stream.config.options.Settings`; default
            :func:`~stream.config.options.resolve`.
        chunk_samples: samples per chunk, 1..``MAX_CHUNK_SAMPLES`` (default 4,096).
        first_sample: counter index of the first sample sent (default 0).
        start_time: instrument clock of the first sample (default ``first_sample / rate``).
        partitions: partitions of the topic if this creates it.
        replication_factor: replicas of the topic if this creates it.
        compression: Kafka compression codec (default none; see the module notes).
        sink: deliver chunks here instead of Kafka (anything with ``send``/``flush``/
            ``close`` as in :class:`ChunkSink`).
        run: the instrument's run (boot) id, sent in every chunk (wire version 2).
        outage_timeout_s: how long sending waits for a Kafka that acknowledges nothing
            (holding at most ``MAX_PENDING_BYTES``) before it gives up.

    Raises:
        LabquakeError: a bad argument; ServiceUnavailable: Kafka cannot be reached.

    Example (a DAQ loop; ``card`` stands for your acquisition API)::

        with InstrumentProducer("rig1", "ae0", sample_rate=4e6) as producer:
            for block in card.blocks():     # e.g. 65,536 int16 samples at a time
                producer.send(block)
            print("next sample:", producer.position)
    """

    def __init__(self, instrument: str, channel: str = DEFAULT_CHANNEL, *, sample_rate: float,
                 bootstrap: str | None = None, topic: str | None = None,
                 settings: Settings | None = None,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES, first_sample: int = 0,
                 start_time: float | None = None, partitions: int = DEFAULT_PARTITIONS,
                 replication_factor: int = DEFAULT_REPLICATION_FACTOR,
                 compression: str | None = None, sink: ChunkSink | None = None,
                 run: int = 0, outage_timeout_s: float = DEFAULT_OUTAGE_TIMEOUT_S) -> None:
        self._chunker = Chunker(instrument, channel, sample_rate=sample_rate,
                                chunk_samples=chunk_samples, first_sample=first_sample,
                                start_time=start_time, run=run)
        self._key = message_key(instrument, channel)
        if sink is None:
            settings = settings or resolve()
            settings = dataclasses.replace(settings, bootstrap=bootstrap or settings.bootstrap,
                                           topic=topic or settings.topic)
            check_compression(compression)
            security = kafka_client_options(settings)
            ensure_topic(settings.bootstrap, settings.topic, partitions, replication_factor,
                         client_options=security)
            sink = KafkaChunkSink(settings.bootstrap, settings.topic, compression,
                                  client_options=security, outage_timeout_s=outage_timeout_s)
        self._sink = sink
        self._acknowledged = self._chunker.origin
        self._closed = False
        self.chunks_sent = 0
        self.samples_sent = 0

    @property
    def instrument(self) -> str:
        return self._chunker.instrument

    @property
    def channel(self) -> str:
        return self._chunker.channel

    @property
    def sample_rate(self) -> float:
        return self._chunker.sample_rate

    @property
    def position(self) -> int:
        """Counter index the next sample given to :meth:`send` gets."""
        return self._chunker.position

    @property
    def acknowledged(self) -> int:
        """Counter index one past the last sample Kafka has acknowledged (a safe resume point)."""
        return self._acknowledged

    def send(self, samples: object, first_sample: int | None = None) -> int:
        """Send a block: cut it into chunks, hand the complete ones to the sink.

        Args:
            samples: 1-D int16 samples, or integers within int16 (see :func:`as_samples`).
            first_sample: the block's counter index if the acquisition knows it; a
                jump forward is a gap (logged), a step back is refused.

        Returns:
            How many chunks went out.

        Raises:
            LabquakeError: bad samples, a counter going backwards, a closed producer or
                a chunk Kafka refused; ServiceUnavailable: Kafka lost a chunk.
        """
        if self._closed:
            raise LabquakeError("this producer is closed; create a new one to send more")
        if first_sample is not None and first_sample > self.position:
            log.warning("%s/%s: gap of %d samples (counter jumps from %d to %d)",
                        self.instrument, self.channel, first_sample - self.position,
                        self.position, first_sample)
        chunks = self._chunker.push(samples, first_sample)
        for chunk in chunks:
            self._deliver(chunk)
        return len(chunks)

    def flush(self) -> None:
        """Send the held tail as a short chunk and wait for Kafka to acknowledge everything."""
        tail = self._chunker.flush()
        if tail is not None:
            self._deliver(tail)
        with self._resume_hint():
            self._sink.flush()

    def close(self) -> None:
        """Flush and disconnect; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        tail = self._chunker.flush()
        try:
            if tail is not None:
                self._deliver(tail)
        finally:
            with self._resume_hint():
                self._sink.close()

    def __enter__(self) -> InstrumentProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        if exc is None:
            self.close()
            return
        # Already failing: still deliver what was sent, but keep the original error.
        try:
            self.close()
        except LabquakeError as close_error:
            log.warning("while closing after an error: %s", close_error)

    @contextlib.contextmanager
    def _resume_hint(self) -> Iterator[None]:
        """Add where to resume to a delivery failure (same error class, same exit code)."""
        try:
            yield
        except LabquakeError as error:
            raise type(error)(
                f"{error}; {self.instrument}/{self.channel} is delivered up to sample "
                f"{self.acknowledged}: resume with --first-sample {self.acknowledged}"
                f"{'' if not self._chunker.run else f' --run-id {self._chunker.run}'}"
            ) from None

    def _deliver(self, chunk: Chunk) -> None:
        end = chunk.end_sample

        def delivered() -> None:
            self._acknowledged = max(self._acknowledged, end)

        with self._resume_hint():
            self._sink.send(self._key, encode(chunk), delivered)
        self.chunks_sent += 1
        self.samples_sent += len(chunk.samples)


def read_raw_samples(stream: BinaryIO,
                     block_bytes: int = STDIN_BLOCK_BYTES) -> Iterator[np.ndarray]:
    """Raw little-endian int16 samples from a byte stream, block by block.

    Whatever bytes are available are used at once (``read1``), so samples from a slow
    pipe go out without waiting for a full block. A sample split across two reads is
    joined.

    Args:
        stream: a binary file object (e.g. ``sys.stdin.buffer``).
        block_bytes: the most bytes read at a time.

    Returns:
        An iterator of non-empty int16 arrays.

    Raises:
        LabquakeError: the stream ends after an odd number of bytes (the samples before
            the last byte have been yielded).

    Example:
        >>> import io
        >>> [b.tolist() for b in read_raw_samples(io.BytesIO(b"\\x01\\x00\\xff\\xff"))]
        [[1, -1]]
    """
    read = getattr(stream, "read1", stream.read)
    carry = b""
    total = 0
    while True:
        data = read(block_bytes)
        if not data:
            break
        total += len(data)
        if carry:
            data = carry + data
        whole = len(data) // 2
        carry = data[2 * whole:]
        if whole:
            yield np.frombuffer(data, dtype="<i2", count=whole).astype(np.int16, copy=False)
    if carry:
        raise LabquakeError(
            f"input ended after {total} bytes, an odd number: raw samples are little-endian"
            " int16, 2 bytes each; the samples before the last byte were sent")


# ---------------------------------------------------------------- labquake produce


@dataclasses.dataclass
class _Source:
    """Where ``labquake produce`` reads samples from."""

    blocks: Iterable[np.ndarray]
    sample_rate: float
    total_samples: int | None
    show_progress: bool


class _StopSignals:
    """Turns Ctrl-C or SIGTERM into a clean stop that never cuts a chunk's hand-over to Kafka.

    Outside :meth:`deferring` the first signal raises ``KeyboardInterrupt`` at once (so a
    blocking read or a pacing sleep ends); inside it only records the signal in
    :attr:`received`, and the caller stops after the hand-over.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopSignals:
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def exit_code(self) -> int:
        """0 when no signal came, else 128 + the signal number (130 for Ctrl-C)."""
        return 0 if self.received is None else 128 + self.received

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if not self._deferring:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        VERB, help="instrument side: send samples (file, simulator, raw int16 on stdin) to Kafka",
        description=(
            "Send one stream of int16 acoustic-emission samples to Kafka as chunks keyed "
            "INSTRUMENT/CHANNEL, creating the topic if it is missing. Sources: a recorded "
            "file (--data; its sample rate is the file's), the lab-earthquake simulator "
            "(--simulate), or raw little-endian int16 on standard input (--stdin, e.g. "
            "'acquire --raw | labquake produce --instrument rig1 --stdin --sample-rate 4e6'). "
            "Ctrl-C (or SIGTERM) sends what was read, prints where to resume and exits "
            "130 (143). A summary line goes to stderr at the end; --json prints one JSON "
            "object on stdout instead."
        ),
    )
    parser.add_argument("--instrument", required=True, help="instrument id, e.g. rig1")
    parser.add_argument("--channel", default=DEFAULT_CHANNEL,
                        help=f"channel id (default {DEFAULT_CHANNEL})")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="FILE",
                        help="a recorded file: LANL .csv, .zip or compact .npz")
    source.add_argument("--simulate", action="store_true",
                        help="generate a synthetic lab-earthquake record")
    source.add_argument("--stdin", action="store_true",
                        help="raw little-endian int16 samples on standard input")
    parser.add_argument("--seconds", type=positive_or_endless, default=None,
                        help=f"with --simulate: record length, 'inf' for endless "
                             f"(default {DEFAULT_SIMULATED_SECONDS:g})")
    parser.add_argument("--seed", type=at_least(0), default=None,
                        help="with --simulate: random seed (default 0)")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument("--realtime", action="store_true",
                        help="send no faster than the sample rate (as the instrument would)")
    pacing.add_argument("--rate", type=positive_or_endless, default=None, metavar="HZ",
                        help="send no faster than HZ samples per second")
    parser.add_argument("--sample-rate", type=positive_or_endless, default=None, metavar="HZ",
                        help="samples per second: required with --stdin; with --simulate "
                             "default 4e6; with --data only for a file that does not record it")
    parser.add_argument("--chunk", type=at_least(1), default=DEFAULT_CHUNK_SAMPLES,
                        metavar="N", help=f"samples per chunk, at most {MAX_CHUNK_SAMPLES} "
                                          f"(default {DEFAULT_CHUNK_SAMPLES})")
    parser.add_argument("--first-sample", type=at_least(0), default=0, metavar="N",
                        help="counter index of the first sample sent (default 0; to resume, "
                             "the index the last run printed)")
    parser.add_argument("--start-time", type=finite_number, default=None, metavar="S",
                        help="instrument clock of the first sample (default first-sample/rate)")
    parser.add_argument("--outage-timeout", type=positive_number,
                        default=DEFAULT_OUTAGE_TIMEOUT_S, metavar="S",
                        help="while Kafka does not acknowledge, hold up to "
                             f"{MAX_PENDING_BYTES >> 20} MiB of chunks, then pause the "
                             "source; give up after this many seconds with exit code 3 and "
                             "the sample to resume from (default "
                             f"{DEFAULT_OUTAGE_TIMEOUT_S:g})")
    parser.add_argument("--run-id", type=at_least(0), default=0, metavar="N",
                        help="the instrument's run (boot) id, sent with every chunk: give a "
                             "new one each time the instrument starts counting again, the same "
                             "one to resume a run (default 0; the monitor also takes a counter "
                             "that goes back by more than 10 s as a new run)")
    parser.add_argument("--partitions", type=at_least(1), default=DEFAULT_PARTITIONS,
                        metavar="N",
                        help=f"partitions if the topic is created (default {DEFAULT_PARTITIONS})")
    parser.add_argument("--replication-factor", type=at_least(1),
                        default=DEFAULT_REPLICATION_FACTOR, metavar="N",
                        help="replicas if the topic is created "
                             f"(default {DEFAULT_REPLICATION_FACTOR})")
    parser.add_argument("--compression", choices=("none", *COMPRESSION_PACKAGES),
                        default="none", help="Kafka compression codec (default none: the "
                                             "codec's CPU cost usually outweighs the ~3:1 gain)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout at the end instead of the "
                             "summary line: topic, instrument, channel, sample_rate, "
                             "first_sample, next_sample (where to resume), samples, messages, "
                             "bytes (of the message values), elapsed_s, samples_per_s, "
                             "interrupted")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar, no summary line (unless a stop signal cut the "
                             "run: it says where to resume), logs at WARNING and above only "
                             "(-v still logs debug details); errors still print")
    add_options(parser, "bootstrap", "topic")
    parser.set_defaults(handler=run)
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Reject flag combinations argparse cannot express, each with a one-line reason.

    Raises:
        LabquakeError: a flag that does not fit the chosen source, or a value out of range.
    """
    if not args.simulate and (args.seconds is not None or args.seed is not None):
        raise LabquakeError("--seconds and --seed go with --simulate only")
    if args.stdin and args.sample_rate is None:
        raise LabquakeError("--stdin needs --sample-rate HZ: raw samples do not carry their rate")
    if args.chunk > MAX_CHUNK_SAMPLES:
        raise LabquakeError(f"--chunk {args.chunk} is above the limit {MAX_CHUNK_SAMPLES}")
    if args.rate is not None and math.isinf(args.rate):
        raise LabquakeError("--rate must be finite")
    if args.sample_rate is not None:
        try:
            check_sample_rate(args.sample_rate)
        except ValueError:
            raise LabquakeError(
                f"--sample-rate {args.sample_rate:g} is outside {MIN_SAMPLE_RATE:g} to "
                f"{MAX_SAMPLE_RATE:g} Hz; give the instrument's rate in Hz") from None
    if args.run_id > MAX_RUN_ID:
        raise LabquakeError(f"--run-id {args.run_id} is above the limit {MAX_RUN_ID}")
    if args.first_sample > MAX_FIRST_SAMPLE:
        raise LabquakeError(f"--first-sample {args.first_sample} is above the counter's "
                            f"limit 2**62 - 1 ({MAX_FIRST_SAMPLE})")


def _open_source(args: argparse.Namespace) -> _Source:
    if args.stdin:
        return _Source(read_raw_samples(sys.stdin.buffer), args.sample_rate, None, False)
    if args.simulate:
        from model.data.simulate import DEFAULT_SAMPLE_RATE, record_samples, simulate_blocks

        seconds = DEFAULT_SIMULATED_SECONDS if args.seconds is None else args.seconds
        rate = args.sample_rate or DEFAULT_SAMPLE_RATE
        blocks = simulate_blocks(seconds, sample_rate=rate, seed=args.seed or 0,
                                 block_samples=SOURCE_BLOCK_SAMPLES)
        return _Source((acoustic for acoustic, _ in blocks), rate,
                       record_samples(seconds, rate), True)
    return _file_source(args.data, args.sample_rate)


def _file_source(path: str, sample_rate: float | None) -> _Source:
    from model.data.record_cache import read_blocks

    blocks = read_blocks(path, SOURCE_BLOCK_SAMPLES, sample_rate)
    # The producer needs the rate before the first chunk: it comes with the first block.
    first = next(blocks, None)
    if first is None:
        raise LabquakeError(f"{path} holds no samples; give a record with acoustic_data")
    acoustic = itertools.chain([first], blocks)
    return _Source((block.acoustic_data for block in acoustic), first.sample_rate, None, True)


def _pieces(block: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(block), size):
        yield block[start:start + size]


def run(args: argparse.Namespace) -> int:
    """``labquake produce``: send the chosen source, print a summary line (or one JSON
    object), return the exit code."""
    from tqdm import tqdm

    check_arguments(args)
    settings = resolve(args)
    source = _open_source(args)
    producer = InstrumentProducer(
        args.instrument, args.channel, sample_rate=source.sample_rate, settings=settings,
        chunk_samples=args.chunk, first_sample=args.first_sample, start_time=args.start_time,
        run=args.run_id, outage_timeout_s=args.outage_timeout,
        partitions=args.partitions, replication_factor=args.replication_factor,
        compression=None if args.compression == "none" else args.compression)
    pace_rate = source.sample_rate if args.realtime else args.rate
    pacer = Pacer(pace_rate) if pace_rate else None
    # Paced, a block goes out chunk by chunk so no sample leaves before its time.
    piece_samples = args.chunk if pacer else None
    bar = tqdm(total=source.total_samples, unit="S", unit_scale=True, file=sys.stderr,
               desc=f"{args.instrument}/{args.channel}", dynamic_ncols=True,
               disable=args.quiet or not source.show_progress)
    started = time.monotonic()
    with _StopSignals() as stop:
        try:
            sent = 0
            for block in source.blocks:
                for piece in _pieces(block, piece_samples or len(block)):
                    if pacer is not None:
                        pacer.wait(sent + len(piece))
                    with stop.deferring():
                        producer.send(piece)
                    sent += len(piece)
                    bar.update(len(piece))
                    if stop.received is not None:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass  # a stop signal (stop.received says which): deliver what was read, below
        finally:
            bar.close()
            with stop.deferring():
                producer.close()
    report = produce_report(producer, settings.topic, time.monotonic() - started,
                            stop.received is not None)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    elif not args.quiet or report["interrupted"]:
        # Even quiet, a cut run says where to resume: that is what the operator needs next.
        print(_summary(report), file=sys.stderr)
    return stop.exit_code


def produce_report(producer: InstrumentProducer, topic: str, elapsed_s: float,
                   interrupted: bool) -> dict[str, Any]:
    """What ``labquake produce`` sent, as ``--json`` prints it (and the summary line says).

    Args:
        producer: the closed producer.
        topic: the Kafka topic.
        elapsed_s: seconds spent sending.
        interrupted: a stop signal ended the run.

    Returns:
        A JSON-ready dict: ``topic``, ``instrument``, ``channel``, ``sample_rate``,
        ``first_sample``, ``next_sample`` (one past the last sample sent: where to resume),
        ``samples``, ``messages`` (chunks), ``bytes`` (of the message values, as
        :func:`stream.core.wire.encode` lays them out), ``elapsed_s``, ``samples_per_s``,
        ``interrupted``.

    Example:
        >>> produce_report(producer, "rig-test", 1.2, False)["samples_per_s"]  # doctest: +SKIP
        33333333.3
    """
    samples = producer.samples_sent
    # Every message is the wire header, the two ids and two bytes a sample.
    id_bytes = len(producer.instrument.encode()) + len(producer.channel.encode())
    message_bytes = producer.chunks_sent * (HEADER_SIZE_V2 + id_bytes) + (
        samples * SAMPLE_DTYPE.itemsize)
    return {"topic": topic, "instrument": producer.instrument, "channel": producer.channel,
            "sample_rate": float(producer.sample_rate), "first_sample": producer.position - samples,
            "next_sample": producer.position, "samples": samples,
            "messages": producer.chunks_sent, "bytes": message_bytes,
            "elapsed_s": round(elapsed_s, 3),
            "samples_per_s": round(samples / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "interrupted": interrupted}


def _summary(report: Mapping[str, Any]) -> str:
    line = (f"sent {report['samples']} samples ({report['instrument']}/{report['channel']} "
            f"[{report['first_sample']}, {report['next_sample']})) in {report['messages']} "
            f"chunks to {report['topic']} in {report['elapsed_s']:.2f} s "
            f"({report['samples_per_s'] / 1e6:.2f} MS/s)")
    if report["interrupted"]:
        line += f"; interrupted: resume with --first-sample {report['next_sample']}"
    return line
