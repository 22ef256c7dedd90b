"""An instrument that reboots, a forged far-ahead chunk and 10,000 poison chunks, against
the real Kafka and Redis: each stream's alert log must equal ``labquake replay``'s."""

from __future__ import annotations

import json
import random
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from model.data import records
from stream.app.replay import file_chunks
from stream.core import wire
from stream.io.instrument import DEFAULT_CHUNK_SAMPLES
from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    finish,
    labquake,
    logged_alerts,
    monitor_args,
    replay_alerts,
)

IDLE = "4"  # seconds without messages after which a test monitor exits
REBOOT_AT = 2_500_000  # 25 s into the 40 s record: more than the 10-s run margin
POISON_CHUNKS = 10_000


@pytest.fixture(scope="module")
def expected(small_record, small_bundle) -> list[dict]:
    alerts = replay_alerts(small_record, small_bundle, "rig1")
    assert len(alerts) >= 10
    return alerts


def _stopped_counters(stderr: str) -> dict:
    match = re.search(r"monitor stopped: (\{.*\})", stderr)
    assert match, stderr[-2000:]
    return json.loads(match.group(1).replace("'", '"'))


def _chunks(record: Path) -> Iterator[wire.Chunk]:
    for block in file_chunks(str(record), "rig1", "ae0"):
        for start in range(0, len(block.samples), DEFAULT_CHUNK_SAMPLES):
            first = block.first_sample + start
            yield wire.Chunk("rig1", "ae0", first, block.sample_rate, block.time_of(first),
                             block.samples[start:start + DEFAULT_CHUNK_SAMPLES])


def _send(bootstrap: str, topic: str, messages: Iterator[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             max_in_flight_requests_per_connection=1)
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _dead_letters(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = list(consumer)
    consumer.close()
    return letters


def _monitor(services, topic: str, bundle: Path) -> tuple[dict, str]:
    code, _, err = finish(labquake(*monitor_args(topic, topic, bundle, "--stop-after-idle",
                                                 IDLE), services=services), 600)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    return _stopped_counters(err), err


def test_a_reboot_mid_stream_gives_the_replays_alerts_for_both_runs(
        services, kafka_topic, redis_client, small_record, small_bundle, expected, tmp_path):
    record = records.read_record(small_record)
    first_run = tmp_path / "first-run.npz"
    records.write_record(first_run, [(record.acoustic_data[:REBOOT_AT],
                                      record.time_to_failure[:REBOOT_AT])],
                         sample_rate=TEST_SAMPLE_RATE)
    for path in (first_run, small_record):  # the second from counter 0 again: a reboot
        code, _, err = finish(labquake("produce", "--instrument", "rig1", "--data", str(path),
                                       "--topic", kafka_topic, "--quiet", services=services))
        assert code == 0, err[-2000:]
    counters, err = _monitor(services, kafka_topic, small_bundle)
    assert counters["runs"] == 1 and counters["duplicate_chunks"] == 0
    assert "rig1/ae0: new run 1 of the instrument: its counter went from" in err
    second_run = [{**alert, **{key: alert[key].replace("rig1/ae0@", "rig1/ae0#run1@")
                               for key in ("alert_id", "episode_id")}}
                  for alert in expected]
    first = replay_alerts(first_run, small_bundle, "rig1")
    assert first and logged_alerts(redis_client, kafka_topic) == first + second_run
    assert redis_client.hget(f"{kafka_topic}:state:rig1", "run") == b"1"


def test_a_forged_chunk_far_ahead_is_dead_lettered_and_the_stream_goes_on(
        services, kafka_topic, redis_client, small_record, small_bundle, expected):
    key = wire.message_key("rig1", "ae0")
    chunks = list(_chunks(small_record))
    forged = wire.encode(wire.Chunk("rig1", "ae0", 2**40, TEST_SAMPLE_RATE, 1e7,
                                    np.full(DEFAULT_CHUNK_SAMPLES, 9000, np.int16)))
    messages = [(key, wire.encode(chunk)) for chunk in chunks]
    messages.insert(300, (key, forged))
    _send(services.bootstrap, kafka_topic, iter(messages))
    counters, _ = _monitor(services, kafka_topic, small_bundle)
    assert counters["far_jumps"] == 1 and counters["gaps"] == 0
    assert logged_alerts(redis_client, kafka_topic) == expected
    letters = _dead_letters(services.bootstrap, kafka_topic)
    assert [letter.value for letter in letters] == [forged]
    assert dict(letters[0].headers)["labquake-error"].startswith(b"FarJump: ")


def _poison(rng: random.Random) -> tuple[bytes, bytes]:
    """A message with random header values and a valid checksum, keyed by its stream."""
    first_sample = rng.choice([
        rng.randrange(-(2**63), 2**63), rng.randrange(0, 10**7), 2**62 - rng.randrange(1, 10**6),
        2**63 - 1, 2**40, -1, 0])
    rate = rng.choice([TEST_SAMPLE_RATE, 1e300, 4e13, 5e-324, float("nan"), float("inf"), 0.0,
                       -1.0, 1e9, 1e-3, 10.0, struct.unpack("<d", rng.randbytes(8))[0]])
    start_time = rng.choice([0.0, first_sample / 1e5 if abs(first_sample) < 2**53 else 0.0,
                             1e300, float("nan"), struct.unpack("<d", rng.randbytes(8))[0]])
    instrument = f"p{rng.randrange(40)}".encode()
    channel = f"ae{rng.randrange(3)}".encode()
    samples = rng.randbytes(2 * rng.randrange(1, 2 * DEFAULT_CHUNK_SAMPLES))
    head = struct.pack("<4sBBH", wire.MAGIC, rng.choice([1, 2]), 1, 0)
    run = struct.pack("<I", rng.randrange(4)) if head[4] == 2 else b""
    rest = (struct.pack("<IqddBB", len(samples) // 2, first_sample, rate, start_time,
                        len(instrument), len(channel)) + run + instrument + channel + samples)
    message = head + struct.pack("<I", zlib.crc32(rest, zlib.crc32(head))) + rest
    return instrument + b"/" + channel, message


@pytest.mark.timeout(900)
def test_ten_thousand_poison_chunks_leave_the_monitor_up_and_other_streams_exact(
        services, kafka_topic, redis_client, small_record, small_bundle, expected):
    rng = random.Random(18)
    key = wire.message_key("rig1", "ae0")
    honest = [(key, wire.encode(chunk)) for chunk in _chunks(small_record)]
    poison = [_poison(rng) for _ in range(POISON_CHUNKS)]
    messages = list(honest)
    for message in poison:
        messages.insert(rng.randrange(len(messages) + 1), message)
    _send(services.bootstrap, kafka_topic, iter(messages))
    counters, _ = _monitor(services, kafka_topic, small_bundle)
    logged = logged_alerts(redis_client, kafka_topic)
    assert [alert for alert in logged if alert["instrument"] == "rig1"] == expected
    assert counters["chunks"] >= len(honest)
    # Most poison is refused at the decoder or by its stream; what is left is taken.
    refused = len(_dead_letters(services.bootstrap, kafka_topic))
    print(f"poison: {refused} of {POISON_CHUNKS} dead-lettered; monitor counters {counters}")
    assert POISON_CHUNKS // 2 < refused <= POISON_CHUNKS
