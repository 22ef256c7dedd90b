"""Smoke tests of the real services: Kafka consumer groups and Redis pub/sub and streams."""

from __future__ import annotations

import time

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

MESSAGES = 3000


def _consume(consumer: KafkaConsumer, count: int, timeout_s: float = 60.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=count - len(records)).values():
            records.extend(batch)
    return records


def _group_consumer(services, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic, bootstrap_servers=services.bootstrap, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )


def test_binary_messages_through_a_consumer_group_resume_from_the_committed_offset(
    services, kafka_topic, unique_name
):
    rng = np.random.default_rng(7)
    payloads = [rng.integers(-5000, 5000, 4096, dtype=np.int16).tobytes() for _ in range(MESSAGES)]
    producer = KafkaProducer(bootstrap_servers=services.bootstrap, acks="all", linger_ms=5)
    for index, payload in enumerate(payloads):
        producer.send(kafka_topic, key=b"rig-1/ch0", value=payload, headers=[("n", b"%d" % index)])
    producer.flush()
    producer.close()

    first = _group_consumer(services, kafka_topic, unique_name)
    received = _consume(first, 1000)
    assert [r.value for r in received] == payloads[: len(received)]
    assert len(received) == 1000
    first.commit()
    partition = TopicPartition(kafka_topic, 0)
    assert first.committed(partition) == 1000
    first.close()

    second = _group_consumer(services, kafka_topic, unique_name)
    rest = _consume(second, MESSAGES - 1000)
    second.close()
    assert rest[0].offset == 1000, "the restarted consumer must resume at the committed offset"
    assert [r.value for r in rest] == payloads[1000:]
    assert [dict(r.headers)["n"] for r in rest[:3]] == [b"1000", b"1001", b"1002"]


def test_uncommitted_messages_are_delivered_again_after_a_restart(
    services, kafka_topic, unique_name
):
    producer = KafkaProducer(bootstrap_servers=services.bootstrap, acks="all")
    for index in range(50):
        producer.send(kafka_topic, value=b"m%d" % index)
    producer.flush()
    producer.close()

    first = _group_consumer(services, kafka_topic, unique_name)
    assert len(_consume(first, 50)) == 50
    first.close()  # closes without committing: nothing was acknowledged

    second = _group_consumer(services, kafka_topic, unique_name)
    again = _consume(second, 50)
    second.close()
    assert [r.value for r in again] == [b"m%d" % i for i in range(50)]


def test_redis_pubsub_round_trip(redis_client, unique_name):
    channel = f"{unique_name}:alerts"
    pubsub = redis_client.pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert redis_client.publish(channel, b'{"kind": "raised"}') == 1
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message["channel"] == channel.encode()
    assert message["data"] == b'{"kind": "raised"}'


def test_redis_stream_xadd_xrange_xread_with_explicit_ids(redis_client, unique_name):
    import redis

    key = f"{unique_name}:alerts:log"
    for sample in (150_000, 300_000, 450_000):
        redis_client.xadd(key, {"alert": f'{{"window_end_sample": {sample}}}'}, id=f"{sample}-0")
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        redis_client.xadd(key, {"alert": "again"}, id="300000-0")  # a re-sent entry is refused
    entries = redis_client.xrange(key)
    assert [entry_id for entry_id, _ in entries] == [b"150000-0", b"300000-0", b"450000-0"]
    assert redis_client.xread({key: "300000-0"}, count=10) == [
        [key.encode(), [(b"450000-0", {b"alert": b'{"window_end_sample": 450000}'})]]
    ]
    assert redis_client.xread({key: "$"}, block=100) == []
