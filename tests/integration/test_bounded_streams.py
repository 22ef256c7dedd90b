"""One-off streams are forgotten after the idle time: the monitor's memory comes back, and
a stream's Redis keys expire after the retention (real Kafka and Redis)."""

from __future__ import annotations

import json

import numpy as np
from kafka import KafkaProducer

from stream.core import wire
from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    TEST_WINDOW,
    finish,
    kill,
    labquake,
    monitor_args,
    stderr_so_far,
    wait_for,
)

ONE_OFF_STREAMS = 1_000
# Long enough that every one-off stream is read before the first is forgotten, even on a
# loaded machine: the memory is measured while all of them are held.
IDLE_S = 20
RETENTION_S = 3600
# Each one-off stream sends a little less than a window: its samples stay held.
ONE_OFF_SAMPLES = TEST_WINDOW - 1_000


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _heartbeat(redis_client, namespace: str) -> dict:
    keys = list(redis_client.scan_iter(f"{namespace}:monitor:*"))
    return json.loads(redis_client.get(keys[0])) if keys else {}


def _send(bootstrap: str, topic: str, chunks: list[wire.Chunk]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for chunk in chunks:
        producer.send(topic, key=wire.message_key(chunk.instrument, chunk.channel),
                      value=wire.encode(chunk))
    producer.flush()
    producer.close()


def _stream(name: str, samples: int) -> list[wire.Chunk]:
    rng = np.random.default_rng(len(name))
    data = (rng.normal(0, 50, samples)).astype(np.int16)
    return [wire.Chunk(name, "ae0", start, TEST_SAMPLE_RATE, start / TEST_SAMPLE_RATE,
                       data[start:start + 4096]) for start in range(0, samples, 4096)]


def test_one_off_streams_are_forgotten_and_the_memory_comes_back(
        services, kafka_topic, redis_client, small_bundle):
    monitor = labquake(*monitor_args(kafka_topic, kafka_topic, small_bundle,
                                     "--stream-idle-timeout", str(IDLE_S),
                                     "--stream-retention", str(RETENTION_S)), services=services)
    try:
        wait_for(lambda: f"assigned partitions: {kafka_topic}/0" in stderr_so_far(monitor),
                 120, "the monitor to be assigned the partition")
        # Warm up (the model's first batch, the first streams' one-time costs), then let
        # the warm-up stream be forgotten too.
        _send(services.bootstrap, kafka_topic, _stream("warm", 3 * TEST_WINDOW))
        wait_for(lambda: _heartbeat(redis_client, kafka_topic).get("windows") == 3, 60,
                 "the warm-up windows")
        wait_for(lambda: _heartbeat(redis_client, kafka_topic).get("streams") == 0,
                 3 * IDLE_S, "the warm-up stream to be forgotten")
        start = _rss_mib(monitor.pid)
        _send(services.bootstrap, kafka_topic,
              [chunk for index in range(ONE_OFF_STREAMS)
               for chunk in _stream(f"once{index}", ONE_OFF_SAMPLES)])
        wait_for(lambda: _heartbeat(redis_client, kafka_topic).get("streams")
                 == ONE_OFF_STREAMS, 120, "every one-off stream to be read and held")
        held = _rss_mib(monitor.pid)
        wait_for(lambda: _heartbeat(redis_client, kafka_topic).get("streams") == 0,
                 3 * IDLE_S, "the one-off streams to be forgotten")
        after = _rss_mib(monitor.pid)
        ttl = redis_client.ttl(f"{kafka_topic}:state:warm")
        predictions_ttl = redis_client.ttl(f"{kafka_topic}:predictions:warm/ae0")
    finally:
        monitor.terminate()
        code, _, err = finish(monitor, 60)
    assert code == 0, err[-2000:]
    print(f"monitor RSS: {start:.1f} MiB before {ONE_OFF_STREAMS} one-off streams, "
          f"{held:.1f} MiB holding them, {after:.1f} MiB after the idle time")
    assert "forgot" in err and f"stream(s) idle for {IDLE_S} s" in err
    assert held - start >= ONE_OFF_STREAMS * 2 * ONE_OFF_SAMPLES / 2**20 / 2  # really held
    assert after - start <= 0.1 * start
    assert after - start <= 0.5 * (held - start)
    assert 0 < ttl <= RETENTION_S and 0 < predictions_ttl <= RETENTION_S


def test_no_stream_is_forgotten_while_it_sends(services, kafka_topic, small_bundle):
    """A stream that keeps sending is not affected by a short idle timeout."""
    monitor = labquake(*monitor_args(kafka_topic, kafka_topic, small_bundle,
                                     "--stream-idle-timeout", "1", "--stop-after-idle", "4"),
                       services=services)
    try:
        _send(services.bootstrap, kafka_topic, _stream("steady", 5 * TEST_WINDOW))
        code, _, err = finish(monitor, 120)
    except BaseException:
        kill(monitor)
        raise
    assert code == 0, err[-2000:]
    assert "'windows': 5" in err
