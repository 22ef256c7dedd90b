"""The instrument side without Kafka: chunking, counters and clock, pacing, stdin, flags."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.errors import LabquakeError, ServiceUnavailable
from stream.core.wire import Chunk, decode, encode
from stream.io.instrument import (
    MAX_CHUNK_SAMPLES,
    Chunker,
    InstrumentProducer,
    Pacer,
    add_parser,
    as_samples,
    check_arguments,
    check_compression,
    read_raw_samples,
    send_deadline,
)

pytestmark = pytest.mark.unit


def push_all(chunker: Chunker, blocks: list[np.ndarray]) -> list[Chunk]:
    chunks = [chunk for block in blocks for chunk in chunker.push(block)]
    tail = chunker.flush()
    return chunks + ([tail] if tail is not None else [])


def split(samples: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)[:-1]
    return np.split(samples, cuts)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=12),
    chunk_samples=st.integers(1, 64),
    first_sample=st.integers(0, 10_000),
    start_time=st.one_of(st.none(), st.floats(-1e3, 1e3)),
)
def test_any_block_sizes_give_contiguous_grid_aligned_chunks_with_the_right_clock(
    sizes, chunk_samples, first_sample, start_time
):
    rate = 1000.0
    samples = np.arange(sum(sizes), dtype=np.int64).astype(np.int16)
    chunker = Chunker("rig1", "ae0", sample_rate=rate, chunk_samples=chunk_samples,
                      first_sample=first_sample, start_time=start_time)
    chunks = push_all(chunker, split(samples, sizes))

    joined = np.concatenate([c.samples for c in chunks]) if chunks else np.empty(0, np.int16)
    np.testing.assert_array_equal(joined, samples)
    expected_start = first_sample / rate if start_time is None else start_time
    position = first_sample
    for index, chunk in enumerate(chunks):
        assert chunk.first_sample == position
        assert 1 <= len(chunk.samples) <= chunk_samples
        if index < len(chunks) - 1:  # all but the flushed tail end on the grid
            assert chunk.end_sample % chunk_samples == 0
        assert chunk.start_time == pytest.approx(
            expected_start + (chunk.first_sample - first_sample) / rate, abs=1e-9)
        assert chunk.stream_id == ("rig1", "ae0")
        assert chunk.sample_rate == rate
        position = chunk.end_sample
    assert chunker.position == first_sample + len(samples)
    assert chunker.held == 0


def test_chunks_do_not_depend_on_how_the_acquisition_cut_the_blocks():
    samples = np.arange(10_000, dtype=np.int16)
    cuts = [
        [10_000],
        [1] * 50 + [9_950],
        [4095, 2, 4095, 1808],
        [3000, 3000, 3000, 1000],
    ]
    results = []
    for sizes in cuts:
        chunker = Chunker("rig1", "ae0", sample_rate=4e6, first_sample=100)
        results.append([(c.first_sample, c.samples.tolist(), c.start_time)
                        for c in push_all(chunker, split(samples, sizes))])
    assert all(result == results[0] for result in results[1:])
    # first chunk is short so the next ones sit on the 4096 grid of the counter
    assert [first for first, _, _ in results[0]] == [100, 4096, 8192]


def test_a_remainder_is_held_across_calls_until_flush():
    chunker = Chunker("rig1", "ae0", sample_rate=10.0, chunk_samples=4)
    assert chunker.push(np.array([1, 2, 3], np.int16)) == []
    assert (chunker.position, chunker.held) == (3, 3)
    [chunk] = chunker.push(np.array([4, 5, 6], np.int16))
    assert (chunk.first_sample, chunk.samples.tolist()) == (0, [1, 2, 3, 4])
    assert (chunker.position, chunker.held) == (6, 2)
    tail = chunker.flush()
    assert (tail.first_sample, tail.samples.tolist(), tail.start_time) == (4, [5, 6], 0.4)
    assert chunker.flush() is None
    # after a flush the next chunk completes the grid cell: it ends at 8, not at 10
    [chunk] = chunker.push(np.array([7, 8, 9], np.int16))
    assert (chunk.first_sample, chunk.samples.tolist()) == (6, [7, 8])


def test_held_samples_are_copied_so_the_caller_may_reuse_its_buffer():
    chunker = Chunker("rig1", "ae0", sample_rate=10.0, chunk_samples=4)
    buffer = np.array([1, 2, 3], np.int16)
    chunker.push(buffer)
    buffer[:] = [7, 8, 9]  # a DAQ loop refills the same array
    [chunk] = chunker.push(buffer[:1])
    assert chunk.samples.tolist() == [1, 2, 3, 7]


def test_a_known_first_sample_ahead_of_the_counter_flushes_and_jumps_and_one_behind_is_refused():
    chunker = Chunker("rig1", "ae0", sample_rate=100.0, chunk_samples=4)
    chunker.push(np.arange(6, dtype=np.int16))
    chunks = chunker.push(np.arange(3, dtype=np.int16), first_sample=10)
    # the held 4..6 goes out short; after the gap the grid holds: 10..12, then 12 is held
    assert [(c.first_sample, c.end_sample) for c in chunks] == [(4, 6), (10, 12)]
    assert chunks[1].start_time == pytest.approx(0.10)
    assert (chunker.position, chunker.held) == (13, 1)
    chunker.flush()
    assert chunker.push(np.zeros(1, np.int16), first_sample=13) == []
    with pytest.raises(LabquakeError, match="never go backwards"):
        chunker.push(np.zeros(1, np.int16), first_sample=12)


@pytest.mark.parametrize(("values", "expected"), [
    ([1, -2, 3], [1, -2, 3]),
    (np.array([32767, -32768], np.int64), [32767, -32768]),
    (np.array([5, 6], ">i2"), [5, 6]),
    (np.array([0, 65535 // 2], np.uint16), [0, 32767]),
    ([], []),
])
def test_integer_samples_within_int16_are_accepted(values, expected):
    samples = as_samples(values)
    assert samples.dtype == np.dtype(np.int16) and samples.dtype.isnative
    assert samples.tolist() == expected


@pytest.mark.parametrize(("values", "message"), [
    (np.array([0.5, 1.0]), "not integers"),
    (np.array([True, False]), "not integers"),
    (np.array([0, 40_000], np.int32), "outside int16"),
    (np.array([-40_000], np.int64), "outside int16"),
    (np.zeros((2, 3), np.int16), "1-D"),
])
def test_other_samples_are_refused_with_a_reason(values, message):
    with pytest.raises(LabquakeError, match=message):
        as_samples(values)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"instrument": "rig/1"}, "without '/'"),
    ({"channel": ""}, "1..64"),
    ({"chunk_samples": 0}, "chunk size"),
    ({"chunk_samples": MAX_CHUNK_SAMPLES + 1}, "chunk size"),
    ({"first_sample": -1}, "first sample"),
    ({"sample_rate": float("nan")}, "sample rate"),
    ({"sample_rate": 0.0}, "sample rate"),
    ({"sample_rate": 1e300}, "sample rate"),
    ({"first_sample": 2**63 - 808}, "first sample"),
    ({"start_time": float("inf")}, "start time"),
])
def test_bad_chunker_arguments_are_refused(kwargs, message):
    arguments = {"instrument": "rig1", "channel": "ae0", "sample_rate": 1e3, **kwargs}
    with pytest.raises(LabquakeError, match=message):
        Chunker(**arguments)


def test_compression_is_checked_before_connecting():
    check_compression(None)
    check_compression("gzip")  # zlib ships with Python
    with pytest.raises(LabquakeError, match="'brotli' is unknown"):
        check_compression("brotli")
    with pytest.raises(LabquakeError, match="unknown"):
        InstrumentProducer("rig1", sample_rate=1.0, compression="brotli",
                           bootstrap="localhost:1")


class RecordingSink:
    """Stands in for Kafka: keeps the messages; acknowledges them all on flush."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.unacknowledged: list[Callable[[], None]] = []
        self.flushes = 0
        self.closed = False

    def send(self, key: bytes, value: bytes, on_delivered: Callable[[], None]) -> None:
        assert not self.closed
        self.messages.append((key, value))
        self.unacknowledged.append(on_delivered)

    def flush(self) -> None:
        self.flushes += 1
        for delivered in self.unacknowledged:
            delivered()
        self.unacknowledged.clear()

    def close(self) -> None:
        self.flush()
        self.closed = True


def test_the_producer_keys_encodes_and_counts_chunks_and_tracks_acknowledgements():
    sink = RecordingSink()
    producer = InstrumentProducer("rig1", "ae1", sample_rate=1e4, chunk_samples=1000,
                                  first_sample=2500, sink=sink)
    assert producer.send(np.arange(1200, dtype=np.int16)) == 1  # 2500..3000 completes
    assert producer.send(np.arange(2000, dtype=np.int16)) == 2
    assert (producer.position, producer.acknowledged) == (5700, 2500)
    producer.flush()
    assert producer.acknowledged == 5700 == producer.position
    chunks = [decode(value) for _, value in sink.messages]
    assert {key for key, _ in sink.messages} == {b"rig1/ae1"}
    assert [(c.first_sample, c.end_sample) for c in chunks] == [
        (2500, 3000), (3000, 4000), (4000, 5000), (5000, 5700)]
    assert [c.start_time for c in chunks] == pytest.approx([0.25, 0.3, 0.4, 0.5])
    assert (producer.chunks_sent, producer.samples_sent) == (4, 3200)


def test_closing_sends_the_tail_and_a_closed_producer_refuses_more():
    sink = RecordingSink()
    with InstrumentProducer("rig1", sample_rate=100.0, chunk_samples=8, sink=sink) as producer:
        producer.send([1, 2, 3])
        assert sink.messages == []
    assert sink.closed
    assert decode(sink.messages[0][1]).samples.tolist() == [1, 2, 3]
    assert producer.acknowledged == 3
    with pytest.raises(LabquakeError, match="closed"):
        producer.send([4])


def test_leaving_with_an_error_still_delivers_what_was_sent_and_keeps_the_error():
    sink = RecordingSink()
    with (pytest.raises(RuntimeError, match="acquisition card"),
          InstrumentProducer("rig1", sample_rate=100.0, chunk_samples=8, sink=sink) as producer):
        producer.send(np.arange(10, dtype=np.int16))
        raise RuntimeError("acquisition card stopped")
    assert [decode(v).end_sample for _, v in sink.messages] == [8, 10]
    assert sink.closed


class LosingSink(RecordingSink):
    """Kafka acknowledged the first two chunks, then lost the connection."""

    def flush(self) -> None:
        for delivered in self.unacknowledged[:2]:
            delivered()
        raise ServiceUnavailable("no Kafka broker answers")


def test_a_delivery_failure_says_from_which_sample_to_resume():
    producer = InstrumentProducer("rig1", sample_rate=100.0, chunk_samples=10,
                                  first_sample=40, sink=LosingSink())
    producer.send(np.zeros(35, np.int16))
    with pytest.raises(ServiceUnavailable) as failure:
        producer.flush()
    assert str(failure.value) == ("no Kafka broker answers; rig1/ae0 is delivered up to sample"
                                  " 60: resume with --first-sample 60")
    assert failure.value.exit_code == 3


class FakeClock:
    def __init__(self, now: float = 50.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_send_deadline_of_n_samples_is_counted_from_the_start():
    assert send_deadline(10.0, 0, 4e6) == 10.0
    assert send_deadline(10.0, 4_000_000, 4e6) == 11.0
    assert send_deadline(0.0, 4096, 4e6) == pytest.approx(0.001024)


def test_pacing_does_not_drift_when_each_step_runs_late():
    clock = FakeClock()
    pacer = Pacer(1000.0, clock=clock, sleep=clock.sleep)
    start = clock.now
    sent = 0
    for _ in range(100):
        sent += 10
        pacer.wait(sent)
        clock.now += 0.003  # sending a piece costs 3 ms of the 10 ms each piece is worth
    # per-piece sleeps of 10 ms would end at 1.3 s; pacing from the start ends at 1.0 s + 3 ms
    assert clock.now - start == pytest.approx(1.003)
    assert clock.sleeps[1:] == pytest.approx([0.007] * 99)


def test_a_sender_behind_its_schedule_is_not_slowed_further():
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, sleep=clock.sleep)
    pacer.wait(10)                      # starts the clock, sleeps 0.1 s
    clock.now += 5.0                    # a long stall
    pacer.wait(20)
    pacer.wait(400)                     # due at 4.0 s, now is past 5.1 s
    assert clock.sleeps == pytest.approx([0.1])


class Trickle(io.RawIOBase):
    """A pipe that hands over at most ``step`` bytes a read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        piece, self.data = self.data[:self.step], self.data[self.step:]
        return piece


def test_raw_samples_split_across_reads_are_joined():
    samples = np.array([1, -1, 300, -300, 32767, -32768, 7], "<i2")
    blocks = list(read_raw_samples(Trickle(samples.tobytes(), step=3), block_bytes=3))
    assert np.concatenate(blocks).tolist() == samples.tolist()
    assert all(block.dtype == np.int16 for block in blocks)


def test_an_odd_trailing_byte_is_an_error_after_the_whole_samples():
    stream = io.BytesIO(np.array([5, 6], "<i2").tobytes() + b"\x01")
    reader = read_raw_samples(stream, block_bytes=2)
    assert [block.tolist() for block in [next(reader), next(reader)]] == [[5], [6]]
    with pytest.raises(LabquakeError, match="odd number"):
        next(reader)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_parser(parser.add_subparsers())
    return parser.parse_args(["produce", *argv])


@pytest.mark.parametrize("argv", [
    ["--instrument", "rig1"],                                        # no source
    ["--instrument", "rig1", "--simulate", "--stdin"],               # two sources
    ["--instrument", "rig1", "--simulate", "--realtime", "--rate", "5"],
    ["--instrument", "rig1", "--simulate", "--chunk", "0"],
    ["--instrument", "rig1", "--simulate", "--seconds", "-1"],
    ["--instrument", "rig1", "--simulate", "--first-sample", "-5"],
    ["--simulate"],                                                  # no instrument
])
def test_flags_argparse_refuses(argv):
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["--stdin"], "needs --sample-rate"),
    (["--stdin", "--sample-rate", "1e3", "--seconds", "3"], "with --simulate only"),
    (["--data", "x.npz", "--seed", "1"], "with --simulate only"),
    (["--simulate", "--chunk", str(MAX_CHUNK_SAMPLES + 1)], "above the limit"),
    (["--simulate", "--rate", "inf"], "finite"),
    (["--stdin", "--sample-rate", "1e300"], "outside 0.001 to 1e\\+09 Hz"),
    (["--stdin", "--sample-rate", "inf"], "outside"),
    (["--simulate", "--first-sample", "9223372036854775000"], "counter's limit"),
])
def test_flag_combinations_that_do_not_fit_are_refused(argv, message):
    with pytest.raises(LabquakeError, match=message):
        check_arguments(parse("--instrument", "rig1", *argv))


def test_good_flags_pass_and_keep_their_defaults():
    args = parse("--instrument", "rig1", "--simulate", "--seconds", "inf", "--realtime")
    check_arguments(args)
    assert (args.channel, args.chunk, args.first_sample, args.partitions) == ("ae0", 4096, 0, 1)
    assert args.seconds == float("inf") and args.realtime and args.bootstrap is None


def test_the_chunker_sends_its_run_id_in_version_2():
    chunker = Chunker("rig1", "ae0", sample_rate=1e3, chunk_samples=4, run=9)
    chunk = chunker.push(np.arange(4, dtype=np.int16))[0]
    assert chunk.run == 9 and decode(encode(chunk)).run == 9
    with pytest.raises(LabquakeError, match="run id"):
        Chunker("rig1", "ae0", sample_rate=1e3, run=2**32)
