"""Test-style segment folders: writing them from the simulator, reading them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.data import segments
from model.data.simulate import LabFault
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

RATE = 2e4
LENGTH = 5_000
CYCLES = (2.0, 3.0)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> segments.WrittenSegments:
    folder = tmp_path_factory.mktemp("segments") / "test"
    return segments.write_segments(folder, 12, seconds=30.0, sample_rate=RATE, seed=3,
                                   segment_samples=LENGTH, cycle_seconds=CYCLES,
                                   progress=False)


def test_segments_are_cuts_of_one_record_with_their_true_answers(
        written: segments.WrittenSegments) -> None:
    files = segments.segment_files(written.folder)
    ids = segments.segment_ids(files)
    assert len(files) == 12 and ids == sorted(ids)
    assert all(len(segment_id) == len("seg_") + segments.SEGMENT_ID_HEX for segment_id in ids)
    truth = segments.read_truth(written.folder / segments.TRUTH_FILENAME)
    assert sorted(truth) == ids == sorted(written.first_samples)
    fault = LabFault(RATE, 3, CYCLES)
    for path in files:
        assert path.read_text().splitlines()[0] == "acoustic_data"
        start = written.first_samples[path.stem]
        acoustic, ttf = fault.render(start, start + LENGTH)
        np.testing.assert_array_equal(segments.read_segment(path, LENGTH), acoustic)
        assert truth[path.stem] == pytest.approx(ttf[-1], rel=1e-9)


def test_segments_lie_apart_inside_the_record(written: segments.WrittenSegments) -> None:
    starts = np.sort(np.array(list(written.first_samples.values())))
    assert written.record_samples == 30 * RATE
    assert starts[0] >= 0 and starts[-1] + LENGTH <= written.record_samples
    assert np.all(np.diff(starts) >= LENGTH)
    # Spread over the record, not packed at one end.
    assert starts[-1] - starts[0] > written.record_samples / 2


def test_the_same_seed_writes_the_same_folder(written: segments.WrittenSegments,
                                             tmp_path: Path) -> None:
    again = segments.write_segments(tmp_path, 12, seconds=30.0, sample_rate=RATE, seed=3,
                                    segment_samples=LENGTH, cycle_seconds=CYCLES,
                                    progress=False)
    assert again.first_samples == written.first_samples
    assert ((tmp_path / segments.TRUTH_FILENAME).read_bytes()
            == (written.folder / segments.TRUTH_FILENAME).read_bytes())


def test_the_default_record_spans_many_cycles(tmp_path: Path) -> None:
    done = segments.write_segments(tmp_path, 2, sample_rate=RATE, segment_samples=LENGTH,
                                   progress=False)
    assert done.record_samples == segments.MIN_RECORD_SECONDS * RATE


def test_a_model_window_reads_the_end_of_a_segment(written: segments.WrittenSegments) -> None:
    path = segments.segment_files(written.folder)[0]
    whole = segments.read_segment(path, LENGTH)
    np.testing.assert_array_equal(segments.read_segment(path, 4096), whole[-4096:])
    with pytest.raises(LabquakeError, match="fewer than the model's window of 6,000"):
        segments.read_segment(path, 6_000)


def test_segment_features_are_those_of_the_last_window(
        written: segments.WrittenSegments) -> None:
    from model.features import extract as features

    files = segments.segment_files(written.folder)
    names = ("num_peaks_2", "log_variance")
    computed = segments.segment_features(files, window=4096, feature_names=names,
                                         batch_segments=5, progress=False)
    windows = np.stack([segments.read_segment(path, 4096) for path in files])
    np.testing.assert_array_equal(computed, features.extract(windows, names=names))


@pytest.mark.parametrize(("arguments", "message"), [
    ({"count": 0}, "segment count 0 is not a positive whole number"),
    ({"count": 200, "seconds": 30.0, "segment_samples": LENGTH},
     "need a record of 1,000,000 samples, longer than 600,000"),
    ({"count": 2, "segment_samples": 0}, "segment length 0 is not a positive"),
])
def test_bad_requests_are_refused(arguments: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(LabquakeError, match=message):
        segments.write_segments(tmp_path, sample_rate=RATE, progress=False, **arguments)


def test_a_folder_that_holds_segments_is_not_written_over(
        written: segments.WrittenSegments) -> None:
    with pytest.raises(LabquakeError, match="already holds seg_"):
        segments.write_segments(written.folder, 1, sample_rate=RATE, progress=False)


def test_reading_refuses_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(LabquakeError, match="no such folder"):
        segments.segment_files(tmp_path / "absent")
    with pytest.raises(LabquakeError, match="holds no seg_"):
        segments.segment_files(tmp_path)


def test_answer_files_round_trip_and_bad_lines_are_named(tmp_path: Path) -> None:
    path = segments.write_submission(tmp_path / "s.csv", {"seg_b": 2.5, "seg_a": 0.125})
    assert path.read_text() == "seg_id,time_to_failure\nseg_a,0.125\nseg_b,2.5\n"
    assert segments.read_truth(path) == {"seg_a": 0.125, "seg_b": 2.5}
    path.write_text("seg_id,time_to_failure\nseg_a,0.1\nseg_b\n")
    with pytest.raises(LabquakeError, match="line 3: expected 'seg_id,seconds'"):
        segments.read_truth(path)
    path.write_text("id,ttf\n")
    with pytest.raises(LabquakeError, match="line 1: expected the header"):
        segments.read_truth(path)


def test_the_simulate_verb_writes_segments(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from stream.cli import simulate as simulate_cli

    parser = argparse.ArgumentParser()
    simulate_cli.add_parser(parser.add_subparsers())
    folder = tmp_path / "test"
    args = parser.parse_args(["simulate", "--segments", "3", "--out", str(folder),
                              "--segment-samples", str(LENGTH), "--sample-rate", str(RATE),
                              "--seed", "9"])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.startswith(f"wrote 3 segments of {LENGTH:,} samples (cut "
                                              "from 150 s at 20000 Hz, seed 9)")
    assert len(segments.segment_files(folder)) == 3
    assert (folder / segments.TRUTH_FILENAME).is_file()


def test_the_simulate_verb_needs_seconds_for_a_record(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    import argparse

    from stream.cli import simulate as simulate_cli

    parser = argparse.ArgumentParser()
    simulate_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["simulate", "--out", str(tmp_path / "r.csv")])
    assert args.segment_samples == segments.SEGMENT_SAMPLES
    with pytest.raises(LabquakeError, match="--seconds is required to write a record"):
        args.handler(args)
    assert list(tmp_path.iterdir()) == []
