"""The Kafka side of the monitor: a consumer-group member that yields decoded chunks.

A thin adapter around kafka-python. Each message's value is one wire chunk
(``stream.core.wire``); a message that cannot be decoded, or whose key does not name the
chunk's own stream, goes to the dead-letter topic ``<topic>.dlq`` with its original
bytes and a ``labquake-error`` header, and never stops the stream. Offsets are
committed only when the monitor says so (``commit``), after its sink holds the results.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from stream.config.options import Settings
from stream.core import wire
from stream.core.errors import ServiceUnavailable
from stream.io.security import describe_kafka, kafka_client_options

log = logging.getLogger(__name__)

ERROR_HEADER = "labquake-error"
SOURCE_HEADER = "labquake-source"
MAX_POLL_RECORDS = 500
# A monitor killed outright holds its partitions until the group gives up on it: keep that
# short so a restarted (or another) member takes over within seconds, not a minute.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000
# Commits and lag queries give up after this long (the broker is away): the monitor goes
# on reading what it has and tries again at its next commit, rather than stalling.
KAFKA_CALL_TIMEOUT_MS = 5_000
# The largest message read, and so the largest a dead letter may need to carry back.
MAX_MESSAGE_BYTES = 8 << 20
# How often the consumer asks the broker for the topic's partitions. kafka-python's
# default, 5 minutes, left a monitor started before its topic existed (or before more
# partitions were added) without partitions for that long; a new partition is now
# assigned within seconds.
METADATA_MAX_AGE_MS = 5_000
# Before its topic exists, the monitor looks for it this often, and says so this often.
TOPIC_WAIT_S = 1.0
TOPIC_WAIT_LOG_S = 60.0
# Dead letters are each counted, but logged at most this many in each interval (a
# misconfigured 4-MHz instrument would otherwise log a thousand lines a second).
DEAD_LETTER_LOG_BURST = 10
DEAD_LETTER_LOG_INTERVAL_S = 10.0


@dataclasses.dataclass(frozen=True)
class Message:
    """A message read: its chunk (``None`` for a dead letter) and where it came from."""

    partition: Any  # kafka TopicPartition
    offset: int
    chunk: wire.Chunk | None
    record: Any = None  # the kafka ConsumerRecord, for a dead letter the core asks for


@dataclasses.dataclass
class SourceCounters:
    messages: int = 0
    dead_letters: int = 0


class KafkaSource:
    """Consumer-group member reading chunks from ``settings.topic``.

    Args:
        settings: bootstrap servers and topic.
        group: the consumer group; monitors in one group share the topic's partitions.
        on_revoke: called with the partitions about to go to another member, before
            they go; it finishes what the monitor has of them and returns the offsets to
            commit for them, which are committed before the partitions move.
        on_assign: called with the partitions of the new assignment.
        client_options: extra kafka-python options, over those of the configured
            security (``stream.io.security.kafka_client_options``).
    """

    def __init__(self, settings: Settings, group: str,
                 on_revoke: Callable[[list[Any]], Mapping[Any, int]],
                 on_assign: Callable[[list[Any]], None],
                 client_options: Mapping[str, Any] | None = None) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError

        options = {**kafka_client_options(settings), **(client_options or {})}
        self.topic = settings.topic
        self.dead_letter_topic = settings.dead_letter_topic
        self.counters = SourceCounters()
        # Dead letters the broker did not take (filled on kafka-python's I/O thread).
        self._undelivered: list[tuple[Any, str]] = []
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=settings.bootstrap.split(","), group_id=group,
                enable_auto_commit=False, auto_offset_reset="earliest",
                max_poll_records=MAX_POLL_RECORDS, max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
                session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                metadata_max_age_ms=METADATA_MAX_AGE_MS, **options,
            )
            self._dead_letters = KafkaProducer(
                bootstrap_servers=settings.bootstrap.split(","), acks="all", retries=10,
                max_in_flight_requests_per_connection=1, max_request_size=MAX_MESSAGE_BYTES,
                **options,
            )
        except KafkaError as error:
            raise ServiceUnavailable(
                f"cannot reach Kafka at {describe_kafka(settings)} ({error}); start it "
                "(`labquake services up`) or point --bootstrap at a running broker"
            ) from error
        self._listener = _Rebalance(self, on_revoke, on_assign)
        self._subscribed = False
        self._waiting_since: float | None = None
        self._dead_letter_log = _Throttle(DEAD_LETTER_LOG_BURST, DEAD_LETTER_LOG_INTERVAL_S)

    def poll(self, timeout_s: float) -> list[Message]:
        """The next messages (possibly none), decoded; bad ones already dead-lettered."""
        if not self._subscribe_when_ready():
            time.sleep(min(timeout_s, TOPIC_WAIT_S))
            return []
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        messages: list[Message] = []
        for partition, records in polled.items():
            for record in records:
                self.counters.messages += 1
                chunk, reason = _decode(record.key, record.value)
                if chunk is None:
                    self._dead_letter(record, reason)
                messages.append(Message(partition, record.offset, chunk, record))
        return messages

    def _subscribe_when_ready(self) -> bool:
        """Join the group once the broker lists the topic's partitions.

        A member that joins while its topic has no partition metadata yet (not created,
        or created a moment ago) can be left with an empty assignment that no later
        metadata refresh repairs; so the monitor waits for the partitions first, saying
        so now and then (the first instrument to send creates the topic).
        """
        if self._subscribed:
            return True
        from kafka.errors import KafkaError

        try:
            partitions = self._consumer.partitions_for_topic(self.topic)
        except KafkaError as error:
            log.debug("topic %s: no metadata yet (%s)", self.topic, error)
            partitions = None
        if partitions:
            self._consumer.subscribe([self.topic], listener=self._listener)
            # One metadata fetch now, so the group is joined with the topic's partitions
            # already in the consumer's view: joined with an empty view, kafka-python
            # rebalances a second time as soon as the view fills in.
            self._consumer.topics()
            self._subscribed = True
            if self._waiting_since is not None:
                log.info("topic %s has %d partition(s): joining the group", self.topic,
                         len(partitions))
            return True
        now = time.monotonic()
        if self._waiting_since is None or now - self._waiting_since >= TOPIC_WAIT_LOG_S:
            log.info("waiting for topic %s: the broker lists no partition of it yet (the "
                     "first instrument to send creates it)", self.topic)
            self._waiting_since = now
        return False

    def caught_up(self, messages: list[Message]) -> bool:
        """Whether the last poll's ``messages`` reached the end of what the broker held at
        the last fetch (an empty poll: nothing was waiting): more is not on its way yet,
        so a batch gains nothing by waiting. Uses the fetch's high-water marks; no request."""
        last_offsets = {message.partition: message.offset for message in messages}
        assigned = self._consumer.assignment()
        return all(offset + 1 >= (self._consumer.highwater(partition) or 0)
                   for partition, offset in last_offsets.items() if partition in assigned)

    def commit(self, offsets: Mapping[Any, int]) -> None:
        """Commit ``partition -> next offset to read``, once dead letters are stored.

        Raises:
            kafka.errors.KafkaError: the broker did not confirm within
                ``KAFKA_CALL_TIMEOUT_MS``; nothing is lost, a later commit covers these.
        """
        if offsets:
            self._dead_letters.flush(timeout=KAFKA_CALL_TIMEOUT_MS / 1000)
            self._raise_undelivered()
            self._consumer.commit(_offsets_and_metadata(offsets),
                                  timeout_ms=KAFKA_CALL_TIMEOUT_MS)

    async def commit_in_rebalance(self, offsets: Mapping[Any, int]) -> None:
        """The same commit from inside a rebalance, where the consumer's IO loop runs us."""
        if offsets:
            self._dead_letters.flush()
            await self._consumer.commit_async(_offsets_and_metadata(offsets))

    def lag(self) -> dict[str, int]:
        """Messages behind the end of each assigned partition: ``"topic/partition" -> n``."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = self._consumer.end_offsets(assigned, timeout_ms=KAFKA_CALL_TIMEOUT_MS)
        return {f"{p.topic}/{p.partition}":
                max(0, ends[p] - self._consumer.position(p, timeout_ms=KAFKA_CALL_TIMEOUT_MS))
                for p in assigned}

    def dead_letter(self, message: Message, reason: str) -> None:
        """Send a message the core refused (``stream.core.events.RejectedChunkEvent``) to the
        dead-letter topic with its reason, like one that could not be decoded."""
        self._dead_letter(message.record, reason)

    def close(self) -> None:
        self._dead_letters.flush()
        self._dead_letters.close()
        self._consumer.close(autocommit=False)

    def _dead_letter(self, record: Any, reason: str) -> None:
        self.counters.dead_letters += 1
        allowed, skipped = self._dead_letter_log.take(time.monotonic())
        if allowed:
            log.warning("dead letter: topic=%s partition=%d offset=%d reason=%s%s",
                        record.topic, record.partition, record.offset, reason,
                        f" ({skipped} more not logged)" if skipped else "")
        self._send_dead_letter(record, reason)

    def _send_dead_letter(self, record: Any, reason: str) -> None:
        source = f"{record.topic}/{record.partition}/{record.offset}".encode()
        future = self._dead_letters.send(
            self.dead_letter_topic, key=record.key, value=record.value or b"",
            headers=[(ERROR_HEADER, reason.encode("utf-8")), (SOURCE_HEADER, source)],
        )
        future.add_errback(lambda error: self._undelivered.append((record, reason)))

    def _raise_undelivered(self) -> None:
        """Send again the dead letters the broker did not take, and refuse the commit
        meanwhile: an offset past a dead letter is committed only once it is stored."""
        from kafka.errors import KafkaError

        if not self._undelivered:
            return
        failed, self._undelivered = self._undelivered, []
        for record, reason in failed:
            self._send_dead_letter(record, reason)
        raise KafkaError(f"{len(failed)} dead letter(s) not stored yet; sent again")


class _Throttle:
    """Allows ``burst`` events per ``interval_s``; counts the ones it refused."""

    def __init__(self, burst: int, interval_s: float) -> None:
        self._burst = burst
        self._interval_s = interval_s
        self._window_start: float | None = None
        self._taken = 0
        self._skipped = 0

    def take(self, now: float) -> tuple[bool, int]:
        """Whether an event at ``now`` may be logged, and how many were not logged since
        the last one that was."""
        if self._window_start is None or now - self._window_start >= self._interval_s:
            self._window_start, self._taken = now, 0
        if self._taken >= self._burst:
            self._skipped += 1
            return False, self._skipped
        self._taken += 1
        skipped, self._skipped = self._skipped, 0
        return True, skipped


def _decode(key: bytes | None, value: bytes | None) -> tuple[wire.Chunk | None, str]:
    """The chunk in a message, or ``None`` and the reason it is not one."""
    try:
        chunk = wire.decode(value)  # type: ignore[arg-type]
    except wire.WireError as error:
        return None, f"{type(error).__name__}: {error}"
    expected = wire.message_key(chunk.instrument, chunk.channel)
    if key != expected:
        return None, (f"KeyMismatch: message key {key!r} does not name the chunk's stream "
                      f"{expected!r}; the producer must key each chunk by its stream")
    return chunk, ""


def _offsets_and_metadata(offsets: Mapping[Any, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata

    return {partition: OffsetAndMetadata(offset, "", -1) for partition, offset in offsets.items()}


class _Rebalance(AsyncConsumerRebalanceListener):
    """Finishes and commits revoked partitions before they move to another member.

    kafka-python 3 runs rebalance listeners on the consumer's IO loop, where a blocking
    commit would deadlock; the async form awaits the commit instead.
    """

    def __init__(self, source: KafkaSource,
                 on_revoke: Callable[[list[Any]], Mapping[Any, int]],
                 on_assign: Callable[[list[Any]], None]) -> None:
        self._source = source
        self._on_revoke = on_revoke
        self._on_assign = on_assign

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if not revoked:
            return
        offsets = self._on_revoke(list(revoked))
        try:
            await self._source.commit_in_rebalance(offsets)
        except Exception as error:  # the next owner re-reads; the sink absorbs repeats
            log.warning("commit of revoked partitions failed: %s", error)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._on_assign(list(assigned))
