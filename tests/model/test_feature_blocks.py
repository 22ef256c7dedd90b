"""model.features.extract.BlockCache: overlapping windows share their blocks' work, and each
window's features are what it gives alone."""

import re

import numpy as np
import pytest

from model.features import extract as features
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

WINDOW = 15_000
HOP = 3_000  # five blocks a window
# Sums taken in another order (the blocks' partial sums, then the window's) move the last
# digits: skewness, near 0, and MFCC 18 most.
RTOL, ATOL = 1e-4, 2e-5


def record(length: int, seed: int) -> np.ndarray:
    """Background AE with an offset, bursts, and a saturated stretch."""
    rng = np.random.default_rng(seed)
    signal = 4.5 + rng.normal(0.0, 4.0, length)
    for onset in rng.integers(0, length - 2_000, 6):
        signal[onset:onset + 1_500] += rng.uniform(100, 3_000) * rng.standard_normal(1_500)
    signal[length // 2:length // 2 + 300] = 40_000
    return np.clip(np.rint(signal), -32_767, 32_767).astype(np.int16)


def windows_of(samples: np.ndarray, first: int, count: int, start_sample: int = 0,
               ) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(first, first + count) * HOP
    return (np.stack([samples[start:start + WINDOW] for start in starts]),
            starts + start_sample)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return record(40 * HOP + WINDOW, seed=11)


def test_shared_blocks_give_each_windows_own_features(samples):
    windows, starts = windows_of(samples, 0, 40, start_sample=7 * HOP)
    alone = features.extract(windows, starts)
    cache = features.BlockCache(WINDOW, HOP)
    shared = features.extract(windows, starts, cache=cache, streams=["rig/ae0"] * 40)
    np.testing.assert_allclose(shared, alone, rtol=RTOL, atol=ATOL)
    # Counts, peaks and the largest |x| are exact.
    for name in ("num_peaks_2", "log_max_abs", "log1p_count_over_10", "log1p_count_over_250"):
        column = features.FEATURE_NAMES.index(name)
        np.testing.assert_array_equal(shared[:, column], alone[:, column])


def test_the_values_do_not_depend_on_how_the_calls_cut_the_stream(samples):
    windows, starts = windows_of(samples, 0, 30)
    one_call = features.extract(windows, starts, cache=features.BlockCache(WINDOW, HOP),
                                streams=[1] * 30, threads=1)
    cache = features.BlockCache(WINDOW, HOP)
    pieces = [features.extract(windows[first:first + size], starts[first:first + size],
                               cache=cache, streams=[1] * size, threads=2)
              for first, size in ((0, 1), (1, 7), (8, 2), (10, 20))]
    np.testing.assert_array_equal(np.concatenate(pieces), one_call)


def test_streams_in_one_batch_keep_apart(samples):
    other = record(len(samples), seed=12)
    first, starts = windows_of(samples, 0, 12)
    second, _ = windows_of(other, 0, 12)
    mixed = np.empty((24, WINDOW), np.int16)
    mixed[0::2], mixed[1::2] = first, second
    cache = features.BlockCache(WINDOW, HOP)
    shared = features.extract(mixed, np.repeat(starts, 2), cache=cache,
                              streams=["a", "b"] * 12)
    np.testing.assert_allclose(shared[0::2], features.extract(first, starts), rtol=RTOL,
                               atol=ATOL)
    np.testing.assert_allclose(shared[1::2], features.extract(second, starts), rtol=RTOL,
                               atol=ATOL)
    # Each stream keeps only the blocks its next window shares.
    assert len(cache._index) == 2 * (WINDOW // HOP - 1)


def test_a_stream_that_starts_again_or_changes_is_computed_afresh(samples):
    cache = features.BlockCache(WINDOW, HOP)
    windows, starts = windows_of(samples, 0, 10)
    features.extract(windows, starts, cache=cache, streams=["s"] * 10)
    # The counter starts again from 0 under the same name, with other samples.
    other = record(len(samples), seed=13)
    again, again_starts = windows_of(other, 0, 6)
    np.testing.assert_allclose(
        features.extract(again, again_starts, cache=cache, streams=["s"] * 6),
        features.extract(again, again_starts), rtol=RTOL, atol=ATOL)
    # The next windows carry other samples at the places the cache holds.
    changed, changed_starts = windows_of(record(len(samples), seed=14), 6, 3)
    np.testing.assert_allclose(
        features.extract(changed, changed_starts, cache=cache, streams=["s"] * 3),
        features.extract(changed, changed_starts), rtol=RTOL, atol=ATOL)


def test_rows_given_as_a_list_are_read_in_place(samples):
    windows, starts = windows_of(samples, 3, 8)
    cache = features.BlockCache(WINDOW, HOP)
    from_list = features.extract(list(windows), starts, cache=cache, streams=[0] * 8)
    np.testing.assert_array_equal(
        from_list, features.extract(windows, starts, cache=features.BlockCache(WINDOW, HOP),
                                    streams=[0] * 8))
    # Rows without a stream are computed alone, from the same list.
    np.testing.assert_array_equal(
        features.extract(list(windows), starts, cache=features.BlockCache(WINDOW, HOP),
                         streams=[None] * 8),
        features.extract(windows, starts))


@pytest.mark.parametrize("kind", ["zeros", "constant", "saturated", "one_loud_block"])
def test_degenerate_streams_give_their_own_features(kind):
    samples = np.zeros(12 * HOP + WINDOW, np.int16)
    if kind == "constant":
        samples[:] = -1_234
    elif kind == "saturated":
        samples[::2], samples[1::2] = 32_767, -32_767
    elif kind == "one_loud_block":
        # Quiet but for one loud block: the top_db floor cuts into the quiet frames' mel
        # bands, which the window then sums again frame by frame.
        samples[:] = np.random.default_rng(3).integers(-1, 2, len(samples))
        samples[5 * HOP:6 * HOP] = np.random.default_rng(4).integers(-30_000, 30_000, HOP)
    windows, starts = windows_of(samples, 0, 12)
    shared = features.extract(windows, starts, cache=features.BlockCache(WINDOW, HOP),
                              streams=[1] * 12)
    assert np.isfinite(shared).all()
    # Full-scale samples alternating: the lowest band lies 80 dB below the window's power,
    # the difference of large sums, good to 1e-3 whichever way it is summed.
    rtol = 2e-3 if kind == "saturated" else RTOL
    np.testing.assert_allclose(shared, features.extract(windows, starts), rtol=rtol,
                               atol=ATOL)


def test_which_hops_can_share_blocks():
    assert features.shares_blocks(150_000, 15_000)
    assert features.shares_blocks(WINDOW, features.MIN_SHARED_HOP * 2) is (
        WINDOW % (features.MIN_SHARED_HOP * 2) == 0)
    assert not features.shares_blocks(150_000, 150_000)  # nothing overlaps
    assert not features.shares_blocks(150_000, 14_000)  # does not divide the window
    assert not features.shares_blocks(150_000, 1_500)  # blocks shorter than a frame
    with pytest.raises(LabquakeError, match="cannot share blocks"):
        features.BlockCache(150_000, 1_500)


@pytest.mark.parametrize(("cache", "streams", "message"), [
    (None, ["a"], "without a cache"),
    (features.BlockCache(WINDOW, HOP), None, "one stream (or None) per window"),
    (features.BlockCache(WINDOW, HOP), ["a", "b"], "one stream (or None) per window"),
    (features.BlockCache(2 * WINDOW, HOP), ["a"], "windows of 30000 samples"),
])
def test_bad_sharing_raises_labquake_error(cache, streams, message):
    with pytest.raises(LabquakeError, match=re.escape(message)):
        features.extract(np.zeros((1, WINDOW), np.int16), np.array([0]), cache=cache,
                         streams=streams)


def test_a_streams_windows_out_of_order_are_refused(samples):
    windows, starts = windows_of(samples, 0, 2)
    with pytest.raises(LabquakeError, match="in order of their start"):
        features.extract(windows[::-1], starts[::-1], cache=features.BlockCache(WINDOW, HOP),
                         streams=["a", "a"])


def test_windows_given_as_their_pieces_give_the_same_features(samples):
    # A stream's windows as the accumulator hands them out: tuples of shared pieces, one
    # per hop; the cache reads the new blocks from them without joining the window.
    pieces = [samples[start:start + HOP].copy() for start in range(0, len(samples) - HOP + 1,
                                                                   HOP)]
    for piece in pieces:
        piece.flags.writeable = False  # as the accumulator hands them out
    per_window = WINDOW // HOP
    rows = [tuple(pieces[first:first + per_window]) for first in range(30)]
    windows, starts = windows_of(samples, 0, 30)
    as_arrays = features.extract(windows, starts, cache=features.BlockCache(WINDOW, HOP),
                                 streams=["rig/ae0"] * 30)
    as_pieces = features.extract(rows, starts, cache=features.BlockCache(WINDOW, HOP),
                                 streams=["rig/ae0"] * 30)
    np.testing.assert_array_equal(as_pieces, as_arrays)
    # Without a cache, and in pieces that are not the blocks, they are joined.
    uneven = [(row[:1_000], row[1_000:]) for row in windows[:3]]
    np.testing.assert_array_equal(features.extract(uneven, starts[:3]),
                                  features.extract(windows[:3], starts[:3]))


def test_a_cached_block_is_checked_again_when_its_samples_come_in_other_arrays(samples):
    # The same places of a stream with other samples (a recording restarted under the same
    # name) are caught by the blocks' first and last samples, whatever arrays hold them.
    windows, starts = windows_of(samples, 0, 3)
    cache = features.BlockCache(WINDOW, HOP)
    features.extract(list(windows), starts, cache=cache, streams=["s"] * 3)
    altered = samples.copy()
    altered[3 * HOP:] += 1  # from the fourth block on, cached already, all differ
    changed, later = windows_of(altered, 3, 3)
    shared = features.extract(list(changed), later, cache=cache, streams=["s"] * 3)
    np.testing.assert_allclose(shared, features.extract(changed, later), rtol=RTOL,
                               atol=ATOL)
    assert not np.allclose(shared, features.extract(windows_of(samples, 3, 3)[0], later))


def test_a_writable_piece_is_checked_by_its_samples_each_time(samples):
    # Only a read-only piece is trusted by identity: arrays that were written to in between
    # (here a new recording in the same buffers) are made again.
    pieces = [samples[start:start + HOP].copy() for start in range(0, 8 * HOP, HOP)]
    per_window = WINDOW // HOP
    cache = features.BlockCache(WINDOW, HOP)
    first = [tuple(pieces[index:index + per_window]) for index in range(2)]
    features.extract(first, np.arange(2) * HOP, cache=cache, streams=["s"] * 2)
    for piece in pieces[2:]:
        np.negative(piece, out=piece)
    later = [tuple(pieces[index:index + per_window]) for index in range(2, 4)]
    shared = features.extract(later, np.arange(2, 4) * HOP, cache=cache, streams=["s"] * 2)
    joined = np.stack([np.concatenate(row) for row in later])
    np.testing.assert_allclose(shared, features.extract(joined, np.arange(2, 4) * HOP),
                               rtol=RTOL, atol=ATOL)


def test_rows_of_different_lengths_are_one_clear_error():
    with pytest.raises(LabquakeError, match="same length"):
        features.extract([np.zeros(5_000, np.int16), np.zeros(6_000, np.int16)])
