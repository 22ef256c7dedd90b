"""The monitor against the real Kafka and Redis: its alert log equals the replay's."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from stream.core import wire
from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    TEST_WINDOW,
    finish,
    kill,
    labquake,
    logged_alerts,
    monitor_args,
    replay_alerts,
    stderr_so_far,
    wait_for,
)

IDLE = "4"  # seconds without messages after which a test monitor exits


def _produce(services, record, topic, instrument, *extra):
    code, _, err = finish(labquake("produce", "--instrument", instrument, "--data", str(record),
                                   "--topic", topic, "--quiet", *extra, services=services))
    assert code == 0, err


def _stopped_counters(stderr: str) -> dict:
    match = re.search(r"monitor stopped: (\{.*\})", stderr)
    assert match, stderr[-2000:]
    return json.loads(match.group(1).replace("'", '"'))


def test_end_to_end_the_alert_log_equals_the_replay(
        services, kafka_topic, unique_name, redis_client, small_record, small_bundle):
    _produce(services, small_record, kafka_topic, "rig1")
    code, _, err = finish(labquake(*monitor_args(kafka_topic, unique_name, small_bundle,
                                                 "--stop-after-idle", IDLE), services=services))
    assert code == 0, err[-2000:]
    # One rebalance at start: a second one, right after the first, once left a monitor
    # stuck in it with its partition unread.
    assert err.count("assigned partitions:") == 1, err[-3000:]
    expected = replay_alerts(small_record, small_bundle, "rig1")
    assert len(expected) >= 10
    assert logged_alerts(redis_client, unique_name) == expected
    # Episodes: updates and ends carry their raise's episode id, in every kind.
    assert {alert["kind"] for alert in expected} >= {"raised", "updated", "cleared"}
    raises = {alert["episode_id"] for alert in expected if alert["kind"] == "raised"}
    assert {alert["episode_id"] for alert in expected} == raises
    # The first second of the stream (the bundle's warm-up) is marked and raises nothing.
    history = redis_client.xrange(f"{unique_name}:predictions:rig1/ae0")
    warming = [fields[b"warming_up"] == b"1" for _, fields in history]
    assert warming[0] and not warming[-1] and warming == sorted(warming, reverse=True)
    first_warm = float(history[warming.index(False)][1][b"window_end_time"])
    assert all(alert["window_end_time"] >= first_warm for alert in expected)
    state = redis_client.hgetall(f"{unique_name}:state:rig1")
    windows = 40 * int(TEST_SAMPLE_RATE) // TEST_WINDOW
    assert int(state[b"window_end_sample"]) == windows * TEST_WINDOW - 1
    assert set(state) >= {b"window_end_time", b"ttf_s", b"tsf_s", b"p_failure",
                          b"model_version", b"warming_up", b"updated_at"}
    assert _stopped_counters(err)["windows"] == windows


def test_a_monitor_started_before_its_topic_exists_waits_for_it_then_reads_it_all(
        services, unique_name, redis_client, small_record, small_bundle):
    topic = unique_name  # created by the first instrument to send, after the monitor starts
    monitor = labquake(*monitor_args(topic, unique_name, small_bundle), services=services)
    try:
        wait_for(lambda: f"waiting for topic {topic}" in stderr_so_far(monitor), 120,
                 "the monitor to say it waits for the topic")
        _produce(services, small_record, topic, "rig1")
        expected = replay_alerts(small_record, small_bundle, "rig1")
        wait_for(lambda: len(logged_alerts(redis_client, unique_name)) >= len(expected), 120,
                 "the whole record's alerts")
        assert logged_alerts(redis_client, unique_name) == expected
        assert f"topic {topic} has 1 partition(s): joining the group" in stderr_so_far(monitor)
        assert stderr_so_far(monitor).count("assigned partitions:") == 1
    finally:
        kill(monitor)


def test_killed_mid_record_and_restarted_the_log_still_equals_the_replay(
        services, kafka_topic, unique_name, redis_client, small_record, small_bundle):
    expected = replay_alerts(small_record, small_bundle, "rig1")
    # The record arrives in real time (40 s) while the monitor is killed 3 times, each
    # time just after it logged more alerts.
    producer = labquake("produce", "--instrument", "rig1", "--data", str(small_record),
                        "--topic", kafka_topic, "--realtime", "--quiet", services=services)
    rng = np.random.default_rng(2)
    for _ in range(3):
        before = len(logged_alerts(redis_client, unique_name))
        monitor = labquake(*monitor_args(kafka_topic, unique_name, small_bundle),
                           services=services)
        wait_for(lambda before=before: len(logged_alerts(redis_client, unique_name)) > before,
                 120, "more alerts")
        time.sleep(rng.uniform(0.0, 0.3))
        kill(monitor)
    assert finish(producer)[0] == 0
    partial = logged_alerts(redis_client, unique_name)
    assert 0 < len(partial) < len(expected), "the kills must land mid-record"
    code, _, err = finish(labquake(*monitor_args(kafka_topic, unique_name, small_bundle,
                                                 "--stop-after-idle", IDLE), services=services))
    assert code == 0, err[-2000:]
    assert logged_alerts(redis_client, unique_name) == expected  # nothing lost, nothing doubled


def _producers(services, record, topic, instruments, rate):
    """One producer per instrument, each sending the whole record at ``rate`` samples/s."""
    return [labquake("produce", "--instrument", name, "--data", str(record), "--topic", topic,
                     "--rate", str(rate), "--quiet", services=services)
            for name in instruments]


def _heartbeat_windows(redis_client, namespace: str, pid: int) -> int:
    """Windows the monitor of process ``pid`` reported in its latest heartbeat (0: none yet)."""
    beat = redis_client.get(f"{namespace}:monitor:{socket.gethostname()}:{pid}")
    return json.loads(beat)["windows"] if beat else 0


def _assert_each_log_equals_the_replay(redis_client, namespace, instruments, record, bundle):
    expected = replay_alerts(record, bundle, "rigX")
    logged = logged_alerts(redis_client, namespace)
    for name in instruments:
        mine = [a for a in logged if a["instrument"] == name]
        renamed = [{**a, "instrument": name,
                    "alert_id": a["alert_id"].replace("rigX/", f"{name}/"),
                    "episode_id": a["episode_id"].replace("rigX/", f"{name}/")}
                   for a in expected]
        assert mine == renamed, name


def test_two_monitors_share_four_partitions_and_every_window_is_processed_once(
        services, make_topic, unique_name, redis_client, small_record, small_bundle):
    topic = make_topic(unique_name, partitions=4)
    # Keys rig3, rig1, rig5, rig2 land on partitions 0, 1, 2, 3 (Kafka's murmur2 partitioner).
    instruments = ["rig3", "rig1", "rig5", "rig2"]
    producers = _producers(services, small_record, topic, instruments, 2 * TEST_SAMPLE_RATE)
    first = labquake(*monitor_args(topic, unique_name, small_bundle, "--stop-after-idle", IDLE),
                     services=services)
    time.sleep(3)
    second = labquake(*monitor_args(topic, unique_name, small_bundle, "--stop-after-idle", IDLE),
                      services=services)
    for producer in producers:
        assert finish(producer)[0] == 0
    results = [finish(first), finish(second)]
    for code, _, err in results:
        assert code == 0, err[-6000:]
    counters = [_stopped_counters(err) for _, _, err in results]
    windows_per_record = 40 * int(TEST_SAMPLE_RATE) // TEST_WINDOW
    assert all(c["windows"] > 0 for c in counters), "both members must get partitions"
    assert sum(c["windows"] for c in counters) == 4 * windows_per_record

    _assert_each_log_equals_the_replay(redis_client, unique_name, instruments, small_record,
                                       small_bundle)


def test_members_joining_and_leaving_mid_record_process_every_window_once(
        services, make_topic, unique_name, redis_client, small_record, small_bundle):
    # Rebalance churn: a second member joins and leaves twice while four instruments
    # stream; each join and each leave moves partitions with their open windows.
    topic = make_topic(unique_name, partitions=4)
    instruments = ["rig3", "rig1", "rig5", "rig2"]  # partitions 0, 1, 2, 3
    producers = _producers(services, small_record, topic, instruments, TEST_SAMPLE_RATE)
    staying = labquake(*monitor_args(topic, unique_name, small_bundle, "--stop-after-idle", IDLE),
                       services=services)
    wait_for(lambda: "assigned partitions" in stderr_so_far(staying), 90,
             "the first member to be given partitions")
    leavers = []
    for _ in range(2):
        member = labquake(*monitor_args(topic, unique_name, small_bundle), services=services)
        wait_for(lambda member=member: "assigned partitions" in stderr_so_far(member), 90,
                 "the second member to be given partitions")
        # It works on them until its own heartbeat shows predicted windows: a fixed
        # sleep left a member on a loaded machine with none before it was stopped.
        wait_for(lambda member=member: _heartbeat_windows(redis_client, unique_name,
                                                          member.pid) > 0, 60,
                 "the second member to predict windows")
        member.send_signal(signal.SIGTERM)
        leavers.append(finish(member))
    for producer in producers:
        assert finish(producer)[0] == 0
    results = [finish(staying), *leavers]
    for code, _, err in results:
        assert code == 0, err[-6000:]
    counters = [_stopped_counters(err) for _, _, err in results]
    windows_per_record = 40 * int(TEST_SAMPLE_RATE) // TEST_WINDOW
    assert sum(c["windows"] for c in counters) == 4 * windows_per_record
    assert all(c["windows"] > 0 for c in counters[1:]), "each leaver worked on its partitions"
    # The staying member was assigned at its start, then again at each join and leave.
    assignments = [line for line in results[0][2].splitlines() if "assigned partitions" in line]
    assert len(assignments) == 5, "\n".join(assignments)

    _assert_each_log_equals_the_replay(redis_client, unique_name, instruments, small_record,
                                       small_bundle)


def _record_chunks(record_path, instrument="rig1", size=4096):
    from stream.app.replay import file_chunks

    for block in file_chunks(str(record_path), instrument, "ae0"):
        for start in range(0, len(block.samples), size):
            yield wire.Chunk(block.instrument, block.channel, block.first_sample + start,
                             block.sample_rate, block.time_of(block.first_sample + start),
                             block.samples[start:start + size])


def test_garbage_under_the_same_key_goes_to_the_dead_letter_topic_and_changes_nothing(
        services, make_topic, unique_name, redis_client, small_record, small_bundle):
    topic = make_topic(unique_name)
    dead_letter_topic = make_topic(f"{unique_name}.dlq")
    key = wire.message_key("rig1", "ae0")
    rng = np.random.default_rng(1)
    producer = KafkaProducer(bootstrap_servers=services.bootstrap, acks="all",
                             max_in_flight_requests_per_connection=1)
    garbage = []
    for index, chunk in enumerate(_record_chunks(small_record)):
        message = wire.encode(chunk)
        producer.send(topic, key=key, value=message)
        if index % 97 == 0:
            bad = [rng.bytes(int(rng.integers(0, 200))), message[: len(message) // 2],
                   b"LQAE" + message[4:40], message[:-2] + b"\x00\x01"][len(garbage) % 4]
            garbage.append(bad)
            producer.send(topic, key=key, value=bad)
    wrong_key = wire.encode(wire.Chunk("rig9", "ae0", 0, TEST_SAMPLE_RATE, 0.0,
                                       np.zeros(16, np.int16)))
    producer.send(topic, key=key, value=wrong_key)
    garbage.append(wrong_key)
    producer.flush()
    producer.close()

    code, _, err = finish(labquake(*monitor_args(topic, unique_name, small_bundle,
                                                 "--stop-after-idle", IDLE), services=services))
    assert code == 0, err[-2000:]
    assert logged_alerts(redis_client, unique_name) == replay_alerts(
        small_record, small_bundle, "rig1")

    consumer = KafkaConsumer(dead_letter_topic, bootstrap_servers=services.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = list(consumer)
    consumer.close()
    assert [letter.value for letter in letters] == garbage
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["labquake-error"], "every dead letter carries its reason"
        assert headers["labquake-source"].startswith(topic.encode())
    reasons = {dict(letter.headers)["labquake-error"].split(b":")[0] for letter in letters}
    assert {b"KeyMismatch", b"BadChecksum"} <= reasons


def test_a_missing_chunk_is_reported_as_a_gap_and_no_window_spans_it(
        services, kafka_topic, unique_name, redis_client, small_record, small_bundle):
    chunks = list(_record_chunks(small_record))
    lost = chunks.pop(300)  # samples 1,228,800 .. 1,232,896 never arrive
    producer = KafkaProducer(bootstrap_servers=services.bootstrap, acks="all",
                             max_in_flight_requests_per_connection=1)
    for chunk in chunks:
        producer.send(kafka_topic, key=wire.message_key("rig1", "ae0"), value=wire.encode(chunk))
    producer.flush()
    producer.close()
    code, _, err = finish(labquake(*monitor_args(kafka_topic, unique_name, small_bundle,
                                                 "--stop-after-idle", IDLE), services=services))
    assert code == 0, err[-2000:]
    assert int(redis_client.hget(f"{unique_name}:state:rig1", "gaps")) == 1
    counters = _stopped_counters(err)
    assert counters["gaps"] == 1
    # The windows touching the lost samples are not cut; the others all are.
    first_lost, end_lost = lost.first_sample, lost.end_sample
    whole = 40 * int(TEST_SAMPLE_RATE) // TEST_WINDOW
    spanning = {s // TEST_WINDOW for s in (first_lost, end_lost - 1)}
    assert counters["windows"] == whole - len(spanning)
    logged = logged_alerts(redis_client, unique_name)
    assert all(not (a["window_end_sample"] - TEST_WINDOW < end_lost
                    and a["window_end_sample"] >= first_lost) for a in logged)


def test_the_monitor_says_in_one_line_when_kafka_cannot_be_reached(services, small_bundle):
    process = labquake("monitor", "--bootstrap", "127.0.0.1:1", "--model", str(small_bundle),
                       services=services)
    code, _, err = finish(process, timeout_s=60)
    assert code == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("labquake monitor: no Kafka broker answers at 127.0.0.1:1")
