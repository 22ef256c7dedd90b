"""The commit rule: never past a chunk that an unfinished result still needs."""

from __future__ import annotations

from stream.engine.offsets import OffsetTracker

A = ("rig1", "ae0")
B = ("rig2", "ae0")


def test_nothing_read_means_nothing_to_commit():
    assert OffsetTracker().committable("p0", lambda s: None) is None


def test_commit_stops_at_the_oldest_chunk_an_open_window_needs():
    tracker = OffsetTracker()
    for index in range(10):  # chunks of 100 samples at offsets 0..9
        tracker.record("p0", index, A, index * 100, (index + 1) * 100)
    assert tracker.committable("p0", lambda s: 450) == 4
    # as the window moves on, earlier chunks are forgotten for good
    assert tracker.committable("p0", lambda s: 700) == 7
    assert tracker.committable("p0", lambda s: 450) == 7
    assert tracker.committable("p0", lambda s: None) == 10


def test_the_slowest_stream_on_a_partition_holds_the_commit():
    tracker = OffsetTracker()
    for index in range(6):
        stream = A if index % 2 == 0 else B
        sample = (index // 2) * 100
        tracker.record("p0", index, stream, sample, sample + 100)
    needed = {A: 250, B: 100}
    assert tracker.committable("p0", needed.get) == 3  # B's chunk 100..200 is at offset 3
    needed[B] = None
    assert tracker.committable("p0", needed.get) == 4  # A's chunk 200..300 is at offset 4


def test_skipped_messages_advance_the_commit_and_partitions_are_independent():
    tracker = OffsetTracker()
    tracker.record("p0", 0, A, 0, 100)
    tracker.skip("p0", 1)  # a dead letter
    tracker.skip("p1", 5)
    assert tracker.committable("p0", lambda s: None) == 2
    assert tracker.committable("p1", lambda s: 0) == 6
    assert tracker.forget("p0") == [A]
    assert tracker.committable("p0", lambda s: None) is None
