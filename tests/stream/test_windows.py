"""Windows cut from chunks equal windows cut from the whole record, whatever the chunking."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.core.errors import LabquakeError
from stream.core.windows import (
    WINDOW_SAMPLES,
    Duplicate,
    Gap,
    Window,
    WindowAccumulator,
)
from stream.core.wire import Chunk

pytestmark = pytest.mark.unit

RATE = 1000.0
CLOCK_ORIGIN = 50.0


def chunk_at(record: np.ndarray, record_first: int, start: int, stop: int) -> Chunk:
    """Samples [start, stop) of a record whose element 0 is sample `record_first`."""
    return Chunk("rig1", "ae0", start, RATE, CLOCK_ORIGIN + start / RATE,
                 record[start - record_first:stop - record_first])


def split(record: np.ndarray, record_first: int, cuts: list[int]) -> list[Chunk]:
    """The record as chunks cut at the given offsets (no chunk for an empty record)."""
    if not len(record):
        return []
    bounds = [record_first, *sorted({record_first + c for c in cuts if 0 < c < len(record)}),
              record_first + len(record)]
    return [chunk_at(record, record_first, a, b) for a, b in itertools.pairwise(bounds)]


def grid_windows(record: np.ndarray, record_first: int, window: int, hop: int):
    """The reference: record[s:s+window] for every s on the hop grid inside the record."""
    start = math.ceil(record_first / hop) * hop
    out = []
    while start + window <= record_first + len(record):
        out.append((start, record[start - record_first:start - record_first + window]))
        start += hop
    return out


def feed(accumulator: WindowAccumulator, chunks: list[Chunk]):
    events = []
    for chunk in chunks:
        events.extend(accumulator.add(chunk))
        assert accumulator.buffered_samples < accumulator.window
        pieces = math.ceil(accumulator.window / accumulator.hop)
        assert accumulator.capacity <= pieces * min(accumulator.hop, accumulator.window)
        assert accumulator.open_windows <= math.ceil(accumulator.window / accumulator.hop)
    return events


def windows_of(events):
    return [event for event in events if isinstance(event, Window)]


def assert_same_windows(windows, expected):
    assert [w.first_sample for w in windows] == [s for s, _ in expected]
    for window, (_, samples) in zip(windows, expected, strict=True):
        assert window.samples.dtype == np.int16
        np.testing.assert_array_equal(window.samples, samples)


records = st.integers(0, 400).flatmap(
    lambda n: st.builds(lambda seed: np.random.default_rng(seed).integers(
        -2000, 2000, n, dtype=np.int16), st.integers(0, 2**32 - 1)))
shapes = st.fixed_dictionaries({
    "window": st.integers(1, 60), "hop": st.integers(1, 80), "first": st.integers(0, 1000),
    "cuts": st.lists(st.integers(1, 399), max_size=40),
})


@given(records, shapes)
def test_windows_equal_those_cut_from_the_whole_record(record, shape):
    accumulator = WindowAccumulator(shape["window"], shape["hop"])
    events = feed(accumulator, split(record, shape["first"], shape["cuts"]))
    assert all(isinstance(event, Window) for event in events)
    expected = grid_windows(record, shape["first"], shape["window"], shape["hop"])
    assert_same_windows(events, expected)
    for window in events:
        assert window.last_sample == window.first_sample + shape["window"] - 1
        assert window.start_time == pytest.approx(CLOCK_ORIGIN + window.first_sample / RATE)
        assert window.end_time == pytest.approx(CLOCK_ORIGIN + window.last_sample / RATE)


@given(records, shapes, st.data())
def test_redelivered_and_overlapping_chunks_change_nothing(record, shape, data):
    first = shape["first"]
    chunks = split(record, first, shape["cuts"])
    sent = []
    for index, chunk in enumerate(chunks):
        if index and data.draw(st.booleans()):
            sent.append(chunks[data.draw(st.integers(0, index - 1))])
        if data.draw(st.booleans()):
            # Re-send from an earlier point up to this chunk's end: part old, part new.
            start = data.draw(st.integers(first, chunk.first_sample))
            sent.append(chunk_at(record, first, start, chunk.end_sample))
        else:
            sent.append(chunk)
    accumulator = WindowAccumulator(shape["window"], shape["hop"])
    events = feed(accumulator, sent)
    assert not any(isinstance(event, Gap) for event in events)
    assert_same_windows(windows_of(events),
                        grid_windows(record, first, shape["window"], shape["hop"]))
    skipped = sum(event.end_sample - event.first_sample
                  for event in events if isinstance(event, Duplicate))
    assert skipped == sum(len(chunk.samples) for chunk in sent) - len(record)


@given(records, shapes, st.integers(1, 200), st.data())
def test_a_gap_is_reported_and_no_window_spans_it(record, shape, missing, data):
    first = shape["first"]
    split_at = data.draw(st.integers(0, len(record)))
    before, after = record[:split_at], record[split_at:]
    after_first = first + split_at + missing
    chunks = split(before, first, shape["cuts"]) + split(after, after_first, shape["cuts"])
    accumulator = WindowAccumulator(shape["window"], shape["hop"])
    events = feed(accumulator, chunks)
    gaps = [event for event in events if isinstance(event, Gap)]
    if len(before) and len(after):
        assert gaps == [Gap(first + split_at, after_first)]
        assert gaps[0].missing_samples == missing
    else:
        assert gaps == []
    expected = (grid_windows(before, first, shape["window"], shape["hop"])
                + grid_windows(after, after_first, shape["window"], shape["hop"]))
    assert_same_windows(windows_of(events), expected)


@given(records, shapes, st.data())
def test_oldest_needed_sample_is_the_first_sample_of_the_oldest_open_window(record, shape, data):
    window, hop, first = shape["window"], shape["hop"], shape["first"]
    accumulator = WindowAccumulator(window, hop)
    assert accumulator.oldest_needed_sample() is None
    assert accumulator.next_expected_sample is None
    for chunk in split(record, first, shape["cuts"]):
        accumulator.add(chunk)
        received_end = chunk.end_sample
        assert accumulator.next_expected_sample == received_end
        open_starts = [start for start in range(math.ceil(first / hop) * hop, received_end, hop)
                       if start + window > received_end]
        assert accumulator.oldest_needed_sample() == (min(open_starts) if open_starts else None)
        assert accumulator.open_windows == len(open_starts)


@given(records, shapes, st.data())
def test_restarting_from_the_oldest_needed_sample_rebuilds_the_same_windows(record, shape, data):
    """What the Kafka consumer relies on: commit the chunk holding oldest_needed_sample."""
    chunks = split(record, shape["first"], shape["cuts"])
    stop_after = data.draw(st.integers(0, len(chunks)))
    accumulator = WindowAccumulator(shape["window"], shape["hop"])
    emitted_before = windows_of(feed(accumulator, chunks[:stop_after]))
    oldest = accumulator.oldest_needed_sample()
    resume = next((i for i, chunk in enumerate(chunks) if oldest is not None
                   and chunk.first_sample <= oldest < chunk.end_sample), stop_after)
    emitted_after = windows_of(feed(accumulator, chunks[stop_after:]))
    restarted = windows_of(feed(WindowAccumulator(shape["window"], shape["hop"]), chunks[resume:]))
    reference = {w.first_sample: w.samples for w in emitted_before + emitted_after}
    restarted_starts = {w.first_sample for w in restarted}
    assert {w.first_sample for w in emitted_after} <= restarted_starts
    for window in restarted:
        np.testing.assert_array_equal(window.samples, reference[window.first_sample])


@pytest.mark.parametrize("hop", [WINDOW_SAMPLES // 10, WINDOW_SAMPLES, WINDOW_SAMPLES + 20_000])
def test_default_window_with_overlap_and_with_skipped_samples(hop):
    record = np.random.default_rng(7).integers(-5000, 5000, 460_000, dtype=np.int16)
    first = 4096 * 3
    accumulator = WindowAccumulator(hop=hop)
    assert accumulator.window == WINDOW_SAMPLES
    events = feed(accumulator, split(record, first, list(range(4096, len(record), 4096))))
    assert_same_windows(events, grid_windows(record, first, WINDOW_SAMPLES, hop))


def test_one_chunk_holding_many_windows_and_one_sample_chunks_agree():
    record = np.arange(1000, dtype=np.int16)
    whole = windows_of(WindowAccumulator(100, 30).add(chunk_at(record, 0, 0, 1000)))
    single = windows_of(feed(WindowAccumulator(100, 30), split(record, 0, list(range(1, 1000)))))
    assert len(whole) == len(single) == 31
    for a, b in zip(whole, single, strict=True):
        assert a.first_sample == b.first_sample
        np.testing.assert_array_equal(a.samples, b.samples)


def test_grid_starts_at_the_first_sample_rounded_up_to_the_hop():
    record = np.arange(50, dtype=np.int16)
    events = WindowAccumulator(10, 10).add(chunk_at(record, 13, 13, 63))
    assert [w.first_sample for w in events] == [20, 30, 40, 50]
    np.testing.assert_array_equal(events[0].samples, np.arange(7, 17))


def test_window_times_come_from_the_chunks_that_carried_the_samples():
    accumulator = WindowAccumulator(4, 4)
    samples = np.zeros(2, dtype=np.int16)
    accumulator.add(Chunk("rig1", "ae0", 0, 10.0, 100.0, samples))
    (window,) = accumulator.add(Chunk("rig1", "ae0", 2, 10.0, 500.0, samples))
    assert (window.start_time, window.end_time) == (100.0, 500.1)


@pytest.mark.parametrize(("window", "hop"), [(4, 2), (4, 4), (5, 2), (3, 5)])
def test_windows_share_read_only_pieces_and_never_a_chunks_memory(window, hop):
    accumulator = WindowAccumulator(window, hop)
    record = np.arange(40, dtype=np.int16)
    chunks = split(record, 0, [3, 7, 8, 21])
    windows = windows_of(feed(accumulator, chunks))
    assert_same_windows(windows, grid_windows(record, 0, window, hop))
    for window_ in windows:
        assert window_.length == window
        for array in (*window_.pieces, window_.samples):
            assert not array.flags.writeable
            assert not any(np.shares_memory(array, chunk.samples) for chunk in chunks)
        with pytest.raises(ValueError, match="read-only"):
            window_.samples[0] = -1
    if hop < window:
        # Overlapping windows hold the same pieces: nothing was copied to hand them out.
        assert windows[1].pieces[0] is windows[0].pieces[1]


def test_a_hop_that_does_not_divide_the_window_leaves_the_last_piece_open():
    accumulator = WindowAccumulator(5, 2)
    record = np.arange(12, dtype=np.int16)
    first = windows_of(accumulator.add(chunk_at(record, 0, 0, 5)))
    assert [w.first_sample for w in first] == [0]
    # The window's view of piece 2 ends with it; the piece itself still takes sample 5.
    assert len(first[0].pieces[-1]) == 1
    later = windows_of(accumulator.add(chunk_at(record, 0, 5, 12)))
    np.testing.assert_array_equal(first[0].samples, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(later[0].samples, [2, 3, 4, 5, 6])


def test_partial_overlap_reports_the_skipped_part_and_uses_the_rest():
    record = np.arange(20, dtype=np.int16)
    accumulator = WindowAccumulator(8, 8)
    accumulator.add(chunk_at(record, 0, 0, 6))
    events = accumulator.add(chunk_at(record, 0, 2, 12))
    assert events[0] == Duplicate(2, 6)
    assert [w.first_sample for w in events[1:]] == [0]
    assert accumulator.add(chunk_at(record, 0, 3, 9)) == [Duplicate(3, 9)]
    assert accumulator.next_expected_sample == 12


@pytest.mark.parametrize(("window", "hop"), [(0, None), (10, 0), (-3, 1), (True, 1), (10, 2.5)])
def test_bad_window_or_hop_is_a_user_error(window, hop):
    with pytest.raises(LabquakeError, match="positive whole number"):
        WindowAccumulator(window, hop)
