"""Faults and bad input against the real services: no alert lost, none doubled.

The streaming tests run on a Kafka broker and a Redis server of this module's own (spare
ports, their own state folder), which they may stop; never on the shared ones. Each
compares the monitor's durable alert log with ``labquake replay`` of the same record.
The command-line tests at the end fail before contacting any service.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition

from model.data import records
from stream.app.replay import file_chunks
from stream.core import wire
from stream.io.instrument import DEFAULT_CHUNK_SAMPLES
from stream.tools import services
from tests.integration.conftest import (
    TEST_SAMPLE_RATE,
    TEST_WINDOW,
    OwnServices,
    finish,
    kill,
    labquake,
    logged_alerts,
    monitor_args,
    replay_alerts,
    stderr_so_far,
    wait_for,
)

OUTAGE_S = 20.0
# Pacing of the 40 s record: a restarted producer re-sends at twice real time; the kill
# test streams at half real time (80 s), so that its restarts land while it streams.
FAST_RATE = str(2 * TEST_SAMPLE_RATE)
SLOW_RATE = str(TEST_SAMPLE_RATE / 2)
IDLE = "4"  # seconds without messages after which a test monitor exits
KILLS = 5
CHUNK_BYTES = 2 * DEFAULT_CHUNK_SAMPLES
RECORD_WINDOWS = 40 * int(TEST_SAMPLE_RATE) // TEST_WINDOW
# A stalled monitor stays in its group for the session timeout (kafka_source: 10 s), and
# writes a heartbeat with its lag every 5 s (monitor.HEARTBEAT_INTERVAL_S).
MAX_STALL_S = 7.0
MIN_STALL_S = 5.5
# What catching up may cost in memory, whatever the backlog: fetched responses (8 MiB a
# partition), a poll's records, a batch's windows and features (about 40 MiB measured).
CATCH_UP_MEMORY_MIB = 64
# Memory a monitor may gain from one backlog to the next, once it has caught up once.
RSS_GROWTH_LIMIT_MIB = 16
MIN_BACKLOG_MIB = 40


@pytest.fixture(scope="module")
def expected(small_record, small_bundle) -> list[dict]:
    """The replay's alerts for the record as instrument rig1."""
    alerts = replay_alerts(small_record, small_bundle, "rig1")
    assert len(alerts) >= 10
    return alerts


def _log(own: OwnServices, namespace: str) -> list[dict]:
    client = own.redis()
    try:
        return logged_alerts(client, namespace)
    finally:
        client.close()


def _progress(own: OwnServices, namespace: str) -> int:
    """The last window end the monitor stored (-1 before the first)."""
    client = own.redis()
    try:
        value = client.hget(f"{namespace}:state:rig1", "window_end_sample")
    finally:
        client.close()
    return -1 if value is None else int(value)


def _stop_and_check(monitor, own: OwnServices, namespace: str, expected: list[dict]) -> str:
    """Wait for the whole record's alerts, stop the monitor (SIGTERM drains), check the log
    is the replay's exactly; return the monitor's stderr."""
    wait_for(lambda: len(_log(own, namespace)) >= len(expected), 180, "every alert")
    monitor.terminate()
    code, _, err = finish(monitor, 60)
    assert code == 0, err[-3000:]
    assert _log(own, namespace) == expected  # nothing lost, nothing doubled
    return err


def _stopped_counters(stderr: str) -> dict:
    match = re.search(r"monitor stopped: (\{.*\})", stderr)
    assert match, stderr[-2000:]
    return json.loads(match.group(1).replace("'", '"'))


@pytest.fixture
def spawn(own: OwnServices) -> Iterator[Callable[..., subprocess.Popen]]:
    """``spawn(*args)`` starts ``labquake ARGS`` on the module's services; whatever still
    runs when the test ends (it failed midway) is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        started.append(labquake(*args, services=own))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            kill(process)


@contextlib.contextmanager
def _outage(stop: Callable[[services.Layout], bool], start: Callable[[services.Layout], str],
            layout: services.Layout) -> Iterator[None]:
    """A service stopped for the block, started again after it, whatever happens."""
    assert stop(layout), "the service must be running before its outage"
    try:
        yield
    finally:
        start(layout)


def _producer(spawn, record: Path, topic: str, *extra: str) -> subprocess.Popen:
    return spawn("produce", "--instrument", "rig1", "--data", str(record), "--topic", topic,
                 "--quiet", *extra)


def _assigned(monitor: subprocess.Popen, topic: str) -> bool:
    return f"assigned partitions: {topic}/0" in stderr_so_far(monitor)


def _ready_monitor(spawn, own: OwnServices, topic: str, bundle: Path,
                   *extra: str) -> subprocess.Popen:
    """A monitor that owns the topic's partition: from now on it reads as data comes."""
    admin = KafkaAdminClient(bootstrap_servers=own.bootstrap)
    try:
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    monitor = spawn(*monitor_args(topic, topic, bundle, *extra))
    try:
        wait_for(lambda: _assigned(monitor, topic) or monitor.poll() is not None, 120,
                 "the monitor to be assigned the partition")
    except AssertionError as error:
        raise AssertionError(f"{error}; its log:\n{stderr_so_far(monitor)[-3000:]}") from None
    assert monitor.poll() is None, f"the monitor exited at start:\n{stderr_so_far(monitor)}"
    return monitor


# --- service outages ---------------------------------------------------------------------

@pytest.mark.timeout(360)
def test_the_broker_stopped_for_20_s_mid_record(own, spawn, unique_name, small_record,
                                                small_bundle, expected):
    monitor = _ready_monitor(spawn, own, unique_name, small_bundle)
    producer = _producer(spawn, small_record, unique_name, "--realtime")
    wait_for(lambda: len(_log(own, unique_name)) >= 1, 60, "an alert before the outage")
    with _outage(services.stop_kafka, services.start_kafka, own.layout):
        time.sleep(OUTAGE_S)
        assert monitor.poll() is None, "the monitor must outlive the outage"
        logged_in_outage = len(_log(own, unique_name))
    assert logged_in_outage < len(expected), "the outage must land mid-record"
    code, _, err = finish(producer, 240)
    assert code == 0, err[-2000:]
    _stop_and_check(monitor, own, unique_name, expected)


@pytest.mark.timeout(360)
def test_redis_stopped_for_20_s_holds_offsets_and_retries_with_backoff(
        own, spawn, unique_name, small_record, small_bundle, expected):
    monitor = _ready_monitor(spawn, own, unique_name, small_bundle)
    producer = _producer(spawn, small_record, unique_name, "--realtime")
    wait_for(lambda: len(_log(own, unique_name)) >= 1, 60, "an alert before the outage")
    logged_before = len(_log(own, unique_name))
    admin = KafkaAdminClient(bootstrap_servers=own.bootstrap)
    try:
        with _outage(services.stop_redis, services.start_redis, own.layout):
            time.sleep(3)  # what the monitor had stored is committed by now; then nothing
            held = admin.list_group_offsets(f"{unique_name}-group")
            time.sleep(OUTAGE_S - 3)
            assert admin.list_group_offsets(f"{unique_name}-group") == held, \
                "offsets moved while Redis was away"
            assert monitor.poll() is None, "the monitor must outlive the outage"
    finally:
        admin.close()
    assert logged_before < len(expected), "the outage must land mid-record"
    assert finish(producer, 240)[0] == 0
    err = _stop_and_check(monitor, own, unique_name, expected)
    delays = [float(delay) for delay in re.findall(r"redis call failed .*retrying in ([\d.]+) s",
                                                   err)]
    assert delays[:5] == [0.2, 0.4, 0.8, 1.6, 3.2] and max(delays) == 5.0, delays


# --- process faults ----------------------------------------------------------------------

@pytest.mark.timeout(420)
def test_the_monitor_killed_at_5_random_points(own, spawn, unique_name, small_record,
                                               small_bundle, expected):
    rng = random.Random(20261126)
    monitor = _ready_monitor(spawn, own, unique_name, small_bundle)
    # At half real time the record takes 80 s: the kills land while it streams.
    producer = _producer(spawn, small_record, unique_name, "--rate", SLOW_RATE)
    streaming_at_kills = []
    for kill_number in range(KILLS):
        if kill_number:
            monitor = spawn(*monitor_args(unique_name, unique_name, small_bundle))
            # Once the group hands it the partition: a random point of catching up,
            # reading, predicting, writing or committing.
            wait_for(lambda monitor=monitor: _assigned(monitor, unique_name), 120,
                     "the restarted monitor to be assigned the partition")
        time.sleep(rng.uniform(0.5, 4.0))
        kill(monitor)
        streaming_at_kills.append(producer.poll() is None)
    assert finish(producer, 180)[0] == 0
    assert sum(streaming_at_kills) >= 3, f"kills must land mid-record: {streaming_at_kills}"
    code, _, err = finish(spawn(*monitor_args(unique_name, unique_name, small_bundle,
                                              "--stop-after-idle", IDLE)))
    assert code == 0, err[-2000:]
    assert _log(own, unique_name) == expected


@pytest.mark.timeout(360)
def test_a_producer_restarted_mid_record_resends_chunks_and_duplicates_are_skipped(
        own, spawn, unique_name, small_record, small_bundle, expected, tmp_path):
    monitor = _ready_monitor(spawn, own, unique_name, small_bundle)
    producer = _producer(spawn, small_record, unique_name, "--realtime")
    wait_for(lambda: _progress(own, unique_name) >= 10 * TEST_WINDOW, 120,
             "the monitor to be ten windows in")
    kill(producer)
    # Resend from 20 chunks before what the monitor has surely seen: the instrument
    # resumes from its last acknowledged point, which may be well behind.
    seen = _progress(own, unique_name) + 1
    assert seen < RECORD_WINDOWS * TEST_WINDOW, "the producer must stop mid-record"
    resume = max(0, seen // DEFAULT_CHUNK_SAMPLES - 20) * DEFAULT_CHUNK_SAMPLES
    record = records.read_record(small_record)
    tail = tmp_path / "tail.npz"
    records.write_record(tail, [(record.acoustic_data[resume:], record.time_to_failure[resume:])],
                         sample_rate=record.sample_rate)
    restarted = _producer(spawn, tail, unique_name, "--first-sample", str(resume),
                          "--rate", FAST_RATE)
    assert finish(restarted, 120)[0] == 0
    counters = _stopped_counters(_stop_and_check(monitor, own, unique_name, expected))
    assert counters["duplicate_chunks"] >= 20
    assert counters["gaps"] == 0
    assert counters["windows"] == RECORD_WINDOWS


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _heartbeat(own: OwnServices, namespace: str) -> dict | None:
    client = own.redis()
    try:
        keys = list(client.scan_iter(f"{namespace}:monitor:*"))
        return json.loads(client.get(keys[0])) if keys else None
    finally:
        client.close()


def _end_offset(own: OwnServices, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=own.bootstrap, group_id=None)
    try:
        partition = TopicPartition(topic, 0)
        return consumer.end_offsets([partition])[partition]
    finally:
        consumer.close()


@dataclasses.dataclass(frozen=True)
class Backlog:
    """One round of falling behind: how far (MiB of chunks), what the monitor reported
    (the largest lag in its heartbeats, MiB) and its largest resident memory (MiB)."""

    sent_mib: float
    reported_mib: float
    peak_rss_mib: float


def _backlog_round(own: OwnServices, spawn, monitor: subprocess.Popen, topic: str,
                   record_path: Path, first_sample: int, total_windows: int) -> Backlog:
    """Send a record at full speed while the monitor is held still (SIGSTOP, as a stalled
    machine would), then let it catch up."""
    before = _end_offset(own, topic)
    producer = _producer(spawn, record_path, topic, "--first-sample", str(first_sample))
    wait_for(lambda: _end_offset(own, topic) > before or producer.poll() is not None, 60,
             "the producer to send")
    os.kill(monitor.pid, signal.SIGSTOP)
    try:
        # Held past its heartbeat interval, so that it reports its lag as soon as it
        # resumes; and less than the group's session timeout, so that it stays a member.
        stalled = time.monotonic()
        while time.monotonic() - stalled < MIN_STALL_S or (
                producer.poll() is None and time.monotonic() - stalled < MAX_STALL_S):
            time.sleep(0.2)
        sent = _end_offset(own, topic) - before
    finally:
        os.kill(monitor.pid, signal.SIGCONT)
    lags, peak = [], 0.0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        peak = max(peak, _rss_mib(monitor.pid))
        beat = _heartbeat(own, topic) or {}
        lags.append(sum((beat.get("lag") or {}).values()))
        if beat.get("windows") == total_windows:
            break
        time.sleep(0.5)
    assert finish(producer)[0] == 0
    assert lags[-1] == 0, f"the monitor must catch up and say so: lags {lags}"
    return Backlog(sent * CHUNK_BYTES / 2**20, max(lags) * CHUNK_BYTES / 2**20, peak)


@pytest.mark.timeout(420)
def test_a_producer_far_ahead_of_the_monitor_leaves_its_memory_flat_and_lag_reported(
        own, spawn, unique_name, small_record, small_bundle, tmp_path):
    """Twice, 60 M samples (120 MB) arrive while the monitor stands still: each time
    it resumes far behind. The backlog must wait in Kafka, not in the monitor's memory:
    catching up costs a bounded working set, far below the backlogs, that does not grow
    from one backlog to the next; and the monitor reports its lag while it catches up."""
    copies, rounds = 15, 2
    record = records.read_record(small_record)
    big = tmp_path / "big.npz"
    records.write_record(big, [(np.tile(record.acoustic_data, copies), None)],
                         sample_rate=record.sample_rate)
    monitor = _ready_monitor(spawn, own, unique_name, small_bundle)
    # Warm up on one record first, so the model's first batches are behind us.
    assert finish(_producer(spawn, small_record, unique_name))[0] == 0
    wait_for(lambda: (_heartbeat(own, unique_name) or {}).get("windows") == RECORD_WINDOWS,
             120, "the warm-up record to be processed")
    baseline = _rss_mib(monitor.pid)
    backlogs = []
    for round_number in range(rounds):
        first_sample = len(record.acoustic_data) * (1 + copies * round_number)
        total_windows = (first_sample + copies * len(record.acoustic_data)) // TEST_WINDOW
        backlogs.append(_backlog_round(own, spawn, monitor, unique_name, big, first_sample,
                                       total_windows))
    monitor.terminate()
    code, _, err = finish(monitor, 60)
    assert code == 0, err[-2000:]
    measured = f"baseline {baseline:.0f} MiB; {backlogs}"
    peaks = [backlog.peak_rss_mib for backlog in backlogs]
    assert all(b.sent_mib >= MIN_BACKLOG_MIB for b in backlogs), f"too little behind: {measured}"
    # The first heartbeat after the stall reports the lag before much is read again.
    assert all(b.reported_mib >= b.sent_mib / 2 for b in backlogs), f"lag unreported: {measured}"
    assert max(peaks) - baseline <= CATCH_UP_MEMORY_MIB < sum(b.sent_mib for b in backlogs), \
        f"the backlog is held in memory: {measured}"
    assert max(peaks[1:]) - peaks[0] <= RSS_GROWTH_LIMIT_MIB, f"memory grows: {measured}"


# --- bad messages ------------------------------------------------------------------------

def _with_checksum(message: bytes | bytearray) -> bytes:
    data = bytearray(message)
    struct.pack_into("<I", data, 8, zlib.crc32(data[12:], zlib.crc32(data[:8])))
    return bytes(data)


def _forged(chunk: wire.Chunk, **fields: object) -> bytes:
    """``chunk`` encoded, then header fields overwritten, with a valid checksum: what a
    buggy producer sends."""
    layout = {"dtype": (5, "B"), "count": (12, "I"), "first_sample": (16, "q"),
              "sample_rate": (24, "d"), "start_time": (32, "d")}
    data = bytearray(wire.encode(chunk))
    for name, value in fields.items():
        offset, form = layout[name]
        struct.pack_into("<" + form, data, offset, value)
    return _with_checksum(data)


def _oversized(chunk: wire.Chunk) -> bytes:
    """A chunk of ``MAX_SAMPLES + 1`` samples (2 MiB), header and payload agreeing."""
    count = wire.MAX_SAMPLES + 1
    head = bytearray(wire.encode(chunk)[:-2 * len(chunk.samples)])
    struct.pack_into("<I", head, 12, count)
    return _with_checksum(head + bytes(2 * count))


@pytest.mark.timeout(300)
def test_malformed_oversized_and_inconsistent_messages_go_to_the_dead_letters_with_reasons(
        own, spawn, unique_name, small_record, small_bundle, expected):
    """Each bad message sits between valid ones under the stream's own key; the valid
    traffic must give exactly the replay's alerts, with no gap."""
    key = wire.message_key("rig1", "ae0")
    chunks = [piece for block in file_chunks(str(small_record), "rig1", "ae0")
              for piece in _pieces(block)]
    bad = {  # position in the stream -> (message, the reason's start)
        50: (_forged(chunks[50], sample_rate=2 * TEST_SAMPLE_RATE), b"SampleRateMismatch"),
        120: (_forged(chunks[120], dtype=2), b"BadHeader: dtype code 2"),
        200: (_forged(chunks[200], count=2**32 - 1), b"TooLarge"),
        300: (_forged(chunks[300], start_time=float("nan")), b"BadHeader: start_time"),
        400: (_forged(chunks[400], sample_rate=float("nan")), b"BadHeader: sample_rate"),
        500: (_forged(chunks[500], first_sample=-4096), b"BadHeader: first_sample"),
        600: (_oversized(chunks[600]), b"TooLarge"),
        700: (_forged(chunks[700], count=wire.MAX_SAMPLES + 1), b"TooLarge"),
        800: (wire.encode(chunks[800])[:-7], b"BadPayload"),
    }
    producer = KafkaProducer(bootstrap_servers=own.bootstrap, acks="all",
                             max_in_flight_requests_per_connection=1,
                             max_request_size=8 << 20)
    for index, chunk in enumerate(chunks):
        if index in bad:
            producer.send(unique_name, key=key, value=bad[index][0])
        producer.send(unique_name, key=key, value=wire.encode(chunk))
    producer.flush()
    producer.close()

    code, _, err = finish(spawn(*monitor_args(unique_name, unique_name, small_bundle,
                                              "--stop-after-idle", IDLE)))
    assert code == 0, err[-2000:]
    assert _log(own, unique_name) == expected
    counters = _stopped_counters(err)
    assert counters["gaps"] == 0 and counters["rejected_chunks"] == 1
    assert counters["windows"] == RECORD_WINDOWS
    assert len(re.findall(r"dead letter: .* reason=", err)) == len(bad)

    consumer = KafkaConsumer(f"{unique_name}.dlq", bootstrap_servers=own.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000,
                             max_partition_fetch_bytes=8 << 20)
    letters = list(consumer)
    consumer.close()
    # A dead letter the broker did not take at once (the first one creates the topic) is
    # sent again later: in source order, they are the bad messages, each with its reason.
    letters.sort(key=lambda letter: int(dict(letter.headers)["labquake-source"].split(b"/")[-1]))
    assert [letter.value for letter in letters] == [message for message, _ in bad.values()]
    for letter, (_, reason) in zip(letters, bad.values(), strict=True):
        headers = dict(letter.headers)
        assert headers["labquake-error"].startswith(reason), headers["labquake-error"]
        assert headers["labquake-source"].startswith(unique_name.encode() + b"/0/")


def _pieces(block: wire.Chunk) -> Iterator[wire.Chunk]:
    for start in range(0, len(block.samples), DEFAULT_CHUNK_SAMPLES):
        first = block.first_sample + start
        yield wire.Chunk(block.instrument, block.channel, first, block.sample_rate,
                         block.time_of(first), block.samples[start:start + DEFAULT_CHUNK_SAMPLES])


# --- bad files and flags at the command line ---------------------------------------------

def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken records and what the one-line error must say about each."""
    valid = folder / "valid.npz"
    records.write_record(valid, [(np.arange(1000, dtype=np.int16), None)], sample_rate=1e5)
    corrupt = folder / "corrupt.csv"
    corrupt.write_text("acoustic_data,time_to_failure\n12,1.5\n7,1.4\nseven,1.3\n")
    header = folder / "header.csv"
    header.write_text("samples,ttf\n12,1.5\n")
    truncated = folder / "truncated.npz"
    truncated.write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    empty = folder / "empty.csv"
    empty.write_bytes(b"")
    return {"corrupt line": (corrupt, "line 4"), "wrong header": (header, "line 1"),
            "truncated npz": (truncated, "truncated"), "empty file": (empty, "empty")}


@pytest.mark.parametrize("case", ["corrupt line", "wrong header", "truncated npz",
                                  "empty file"])
def test_a_broken_file_is_one_line_naming_it_and_exit_2(services, tmp_path, case):
    path, words = _bad_files(tmp_path)[case]
    code, out, err = finish(labquake("produce", "--instrument", "rig1", "--data", str(path),
                                     "--topic", "never-created", "--quiet",
                                     services=services), 60)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("labquake produce: "), err
    assert str(path) in lines[0] and words in lines[0], lines[0]


@pytest.mark.parametrize(("args", "words"), [
    (["monitor", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["monitor", "--max-batch", "0"], "max_batch must be a whole number >= 1"),
    (["produce", "--instrument", "rig1", "--simulate", "--chunk", "x"], "is not a whole number"),
    (["replay", "--data", "x.npz", "--instrument", "a/b"], "--instrument"),
])
def test_unknown_flags_and_bad_values_are_one_line_and_exit_2(services, args, words):
    code, _, err = finish(labquake(*args, services=services), 60)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err
