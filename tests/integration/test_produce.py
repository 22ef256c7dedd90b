"""The instrument side against the real broker: the class and ``labquake produce``."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from stream.core.wire import Chunk, decode
from stream.io.instrument import DEFAULT_CHUNK_SAMPLES, InstrumentProducer
from tests.integration.conftest import TEST_SAMPLE_RATE, finish, labquake


@pytest.fixture
def new_topic(services, unique_name) -> Iterator[str]:
    """A topic name nobody has used; the producer under test creates it. Deleted afterwards."""
    yield unique_name
    admin = KafkaAdminClient(bootstrap_servers=services.bootstrap)
    if unique_name in admin.list_topics():
        admin.delete_topics([unique_name])
    admin.close()


def consume(services, topic: str, chunks: int, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` up to ``chunks`` of them, in offset order per partition."""
    consumer = KafkaConsumer(topic, bootstrap_servers=services.bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < chunks and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        # anything beyond the expected count would be a duplicate: give it a moment to show
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    finally:
        consumer.close()
    return sorted(records, key=lambda record: (record.partition, record.offset))


def stream_of(records: list, key: bytes) -> list[Chunk]:
    """The decoded chunks of one stream, checked to sit in one partition in counter order."""
    mine = [record for record in records if record.key == key]
    assert len({record.partition for record in mine}) == 1, "a stream must stay in one partition"
    chunks = [decode(record.value) for record in mine]
    for before, after in itertools.pairwise(chunks):
        assert after.first_sample == before.end_sample, "counters must be contiguous, in order"
    return chunks


def test_the_class_creates_the_topic_and_sends_every_stream_contiguously_in_order(
    services, new_topic
):
    rng = np.random.default_rng(3)
    signals = {channel: rng.integers(-3000, 3000, 50_001).astype(np.int16)
               for channel in ("ae0", "ae1")}
    producers = {channel: InstrumentProducer("rig1", channel, sample_rate=4e4,
                                             bootstrap=services.bootstrap, topic=new_topic,
                                             partitions=3, first_sample=1000)
                 for channel in signals}
    for start in range(0, 50_001, 7_777):  # interleave the two streams, odd block sizes
        for channel, producer in producers.items():
            producer.send(signals[channel][start:start + 7_777])
    for producer in producers.values():
        producer.close()
        assert producer.acknowledged == producer.position == 51_001

    admin = KafkaAdminClient(bootstrap_servers=services.bootstrap)
    [description] = admin.describe_topics([new_topic])
    admin.close()
    assert len(description["partitions"]) == 3

    expected_chunks = 2 * producers["ae0"].chunks_sent
    records = consume(services, new_topic, expected_chunks)
    assert len(records) == expected_chunks
    for channel, samples in signals.items():
        chunks = stream_of(records, f"rig1/{channel}".encode())
        assert chunks[0].first_sample == 1000 and chunks[-1].end_sample == 51_001
        np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), samples)
        assert all(c.stream_id == ("rig1", channel) and c.sample_rate == 4e4 for c in chunks)
        assert [c.start_time for c in chunks] == pytest.approx(
            [c.first_sample / 4e4 for c in chunks])
        assert all(c.end_sample % 4096 == 0 for c in chunks[:-1])


def produce(services, *argv: str, **kwargs) -> subprocess.Popen:
    """``labquake produce ARGV``; its standard input, if piped, takes bytes (``.buffer``)."""
    return labquake("produce", *argv, services=services, **kwargs)


def summary_of(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_a_raw_int16_pipe_into_the_cli_arrives_whole(services, new_topic):
    samples = np.random.default_rng(5).integers(-32768, 32767, 12_345, dtype=np.int16)
    process = produce(services, "--instrument", "rig2", "--channel", "ch3", "--stdin",
                      "--sample-rate", "4e4", "--chunk", "1000", "--first-sample", "500",
                      "--topic", new_topic, stdin=subprocess.PIPE)
    raw = samples.astype("<i2").tobytes()
    for start in range(0, len(raw), 3_001):  # odd-sized writes split samples across reads
        process.stdin.buffer.write(raw[start:start + 3_001])
        process.stdin.buffer.flush()
    returncode, _, stderr = finish(process, timeout_s=60)
    assert returncode == 0, stderr
    assert summary_of(stderr).startswith(
        "sent 12345 samples (rig2/ch3 [500, 12845)) in 13 chunks")

    chunks = stream_of(consume(services, new_topic, 13), b"rig2/ch3")
    assert [c.first_sample for c in chunks[:3]] == [500, 1000, 2000]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), samples)


def test_the_cli_sends_the_simulator_and_a_recorded_file_as_they_are(
    services, new_topic, tmp_path
):
    from model.data.records import write_record
    from model.data.simulate import simulate

    record = simulate(1.0, sample_rate=4e4, seed=3)
    returncode, _, stderr = finish(produce(
        services, "--instrument", "sim", "--simulate", "--seconds", "1", "--sample-rate", "4e4",
        "--seed", "3", "--quiet", "--topic", new_topic), timeout_s=60)
    assert returncode == 0, stderr

    path = tmp_path / "rig.npz"
    write_record(path, [(record.acoustic_data[:9000], record.time_to_failure[:9000])],
                 sample_rate=2e4)
    returncode, _, stderr = finish(produce(
        services, "--instrument", "file", "--data", str(path), "--quiet", "--topic", new_topic),
        timeout_s=60)
    assert returncode == 0, stderr

    records = consume(services, new_topic, 10 + 3)
    simulated = stream_of(records, b"sim/ae0")
    np.testing.assert_array_equal(np.concatenate([c.samples for c in simulated]),
                                  record.acoustic_data)
    recorded = stream_of(records, b"file/ae0")
    assert {c.sample_rate for c in recorded} == {2e4}, "the rate comes from the file"
    np.testing.assert_array_equal(np.concatenate([c.samples for c in recorded]),
                                  record.acoustic_data[:9000])


def test_realtime_pacing_holds_the_stream_to_the_sample_rate(services, new_topic):
    started = time.monotonic()
    returncode, stdout, stderr = finish(produce(
        services, "--instrument", "paced", "--simulate", "--seconds", "1.5",
        "--sample-rate", "8192", "--realtime", "--quiet", "--json", "--topic", new_topic),
        timeout_s=60)
    assert returncode == 0, stderr
    sending_s = json.loads(stdout)["elapsed_s"]
    assert 1.5 <= sending_s < 3.0, stdout
    assert time.monotonic() - started >= 1.5


# Even --quiet says where to resume after a stop signal.
@pytest.mark.parametrize(("stop", "exit_code", "flags"), [(signal.SIGINT, 130, ()),
                                                          (signal.SIGTERM, 143, ("--quiet",))])
def test_a_stop_signal_delivers_what_was_read_and_says_where_to_resume(services, new_topic,
                                                                      stop, exit_code, flags):
    process = produce(services, "--instrument", "rig3", "--stdin", "--sample-rate", "4e6",
                      "--topic", new_topic, *flags, stdin=subprocess.PIPE)
    process.stdin.buffer.write(np.arange(5000, dtype="<i2").tobytes())
    process.stdin.buffer.flush()
    # the first full chunk in Kafka means the producer is running and holds the rest
    assert len(consume(services, new_topic, 1)) == 1
    process.send_signal(stop)
    returncode, _, stderr = finish(process, timeout_s=60)
    assert returncode == exit_code, stderr
    assert summary_of(stderr).endswith("interrupted: resume with --first-sample 5000"), stderr
    chunks = stream_of(consume(services, new_topic, 2), b"rig3/ae0")
    assert [(c.first_sample, c.end_sample) for c in chunks] == [(0, 4096), (4096, 5000)]


def test_an_odd_byte_at_the_end_of_stdin_is_one_line_and_exit_2(services, new_topic):
    process = produce(services, "--instrument", "rig4", "--stdin", "--sample-rate", "1e3",
                      "--topic", new_topic, stdin=subprocess.PIPE)
    process.stdin.buffer.write(np.arange(10, dtype="<i2").tobytes() + b"\x07")
    returncode, _, stderr = finish(process, timeout_s=60)
    assert returncode == 2
    assert summary_of(stderr).startswith(
        "labquake produce: input ended after 21 bytes, an odd number")
    chunks = stream_of(consume(services, new_topic, 1), b"rig4/ae0")
    assert np.concatenate([c.samples for c in chunks]).tolist() == list(range(10))


def test_an_unreachable_broker_is_one_line_and_exit_3(services):
    process = produce(services, "--instrument", "rig5", "--simulate", "--seconds", "1",
                      "--bootstrap", "localhost:1")
    returncode, _, stderr = finish(process, timeout_s=60)
    assert returncode == 3
    assert stderr.strip() == (
        "labquake produce: no Kafka broker answers at localhost:1; start one "
        "('labquake services up'), give --bootstrap / LABQUAKE_KAFKA_BOOTSTRAP, or check the "
        "security settings (a broker refuses wrong credentials or an untrusted CA the same "
        "way; docs/security.md)")


def test_json_is_one_object_on_stdout_saying_what_was_sent(services, new_topic, small_record):
    from model.data.records import read_record

    samples = len(read_record(small_record).acoustic_data)
    returncode, stdout, stderr = finish(produce(
        services, "--instrument", "rig6", "--data", str(small_record), "--json",
        "--topic", new_topic), timeout_s=120)
    assert returncode == 0, stderr
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    report = json.loads(stdout)
    messages = math.ceil(samples / DEFAULT_CHUNK_SAMPLES)
    assert report == {
        "topic": new_topic, "instrument": "rig6", "channel": "ae0",
        "sample_rate": TEST_SAMPLE_RATE, "first_sample": 0, "next_sample": samples,
        "samples": samples, "messages": messages, "bytes": report["bytes"],
        "elapsed_s": report["elapsed_s"], "samples_per_s": report["samples_per_s"],
        "interrupted": False}
    assert 0 < report["elapsed_s"] < 120
    assert report["samples_per_s"] == pytest.approx(samples / report["elapsed_s"], rel=0.01)
    records = consume(services, new_topic, messages)
    assert len(records) == messages
    assert report["bytes"] == sum(len(record.value) for record in records)
    # The progress bar still goes to stderr; the summary line gives way to the object.
    assert "rig6/ae0" in stderr and "sent " not in stderr


def test_quiet_prints_nothing_and_an_explicit_v_still_logs(services, new_topic):
    simulated = ("--simulate", "--seconds", "1", "--sample-rate", "4e4", "--topic", new_topic)
    # The first run creates the topic: without --quiet that is an INFO line on stderr.
    returncode, stdout, stderr = finish(produce(
        services, "--instrument", "quiet", *simulated, "--quiet"), timeout_s=60)
    assert (returncode, stdout, stderr) == (0, "", "")

    returncode, stdout, stderr = finish(produce(
        services, "--instrument", "quietjson", *simulated, "--quiet", "--json"), timeout_s=60)
    assert (returncode, stderr) == (0, "")
    assert json.loads(stdout)["messages"] == 10

    returncode, stdout, stderr = finish(labquake(
        "-v", "produce", "--instrument", "verbose", *simulated, "--quiet", services=services),
        timeout_s=60)
    assert (returncode, stdout) == (0, "")
    assert " DEBUG " in stderr
    # Still no progress bar ("  0%|...") and no summary line.
    assert "%|" not in stderr and "sent 40000 samples" not in stderr

    keys = [record.key for record in consume(services, new_topic, 30)]
    assert [keys.count(key) for key in (b"quiet/ae0", b"quietjson/ae0", b"verbose/ae0")] == [
        10, 10, 10]
