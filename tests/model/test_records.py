"""Record files: LANL CSV (plain and zipped) and .npz round trips in bounded blocks, atomic
writes, and a one-line error naming the file (and line) for every kind of bad input."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model.data import records
from model.data.records import Block, read_blocks, read_record, write_record
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit


def lanl_like(samples: int, seed: int = 0, run: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """int16 samples and a label that counts down in runs of ``run`` samples, with a
    failure in the middle, and values whose text is long (as LANL's ``1.4690999832``)."""
    rng = np.random.default_rng(seed)
    acoustic = rng.integers(-5_500, 5_500, samples).astype(np.int16)
    ttf = np.repeat(1.4690999832 - 0.0011 * np.arange(samples // run + 1), run)[:samples]
    ttf[samples // 2:] += 9.7591999872
    return acoustic, ttf


def write_pairs(path, acoustic, ttf, sample_rate=4e6, size=1000):
    chunks = range(0, len(acoustic), size)
    pairs = [(acoustic[i:i + size], None if ttf is None else ttf[i:i + size]) for i in chunks]
    return write_record(path, pairs, sample_rate)


def read_all(path, block_samples, sample_rate=None):
    blocks = list(read_blocks(path, block_samples=block_samples, sample_rate=sample_rate))
    assert all(len(block.acoustic_data) <= block_samples for block in blocks)
    assert [block.first_sample for block in blocks] == [
        block_samples * i for i in range(len(blocks))]
    return blocks


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("run", [1, 7, 4096])  # labels per line, per short run, per bin
@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_round_trip_is_exact_in_bounded_blocks(tmp_path, suffix, run):
    acoustic, ttf = lanl_like(25_000, run=run)
    path = tmp_path / f"record{suffix}"
    assert write_pairs(path, acoustic, ttf, sample_rate=4e6) == 25_000
    blocks = read_all(path, block_samples=4_096)
    assert len(blocks) == 7
    assert all(block.acoustic_data.dtype == np.int16 for block in blocks)
    np.testing.assert_array_equal(np.concatenate([b.acoustic_data for b in blocks]), acoustic)
    np.testing.assert_array_equal(np.concatenate([b.time_to_failure for b in blocks]), ttf)
    assert {block.sample_rate for block in blocks} == {4e6}


def test_csv_is_lanl_text(tmp_path):
    path = tmp_path / "lanl.csv"
    write_record(path, [(np.array([12, 6, -8], np.int16), np.array([1.4690999832] * 2 + [1.0]))])
    assert path.read_text() == ("acoustic_data,time_to_failure\n12,1.4690999832\n"
                                "6,1.4690999832\n-8,1.0\n")


def test_zipped_csv_reads_like_the_csv(tmp_path):
    acoustic, ttf = lanl_like(12_345, seed=1)
    csv = tmp_path / "train.csv"
    write_pairs(csv, acoustic, ttf)
    archive = tmp_path / "train.csv.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.write(csv, "train.csv")
    block = read_record(archive)
    np.testing.assert_array_equal(block.acoustic_data, acoustic)
    np.testing.assert_array_equal(block.time_to_failure, ttf)


def test_csv_sample_rate_defaults_to_lanl_and_can_be_given(tmp_path):
    path = tmp_path / "r.csv"
    write_pairs(path, *lanl_like(10))
    assert read_record(path).sample_rate == 4e6
    assert read_record(path, sample_rate=1e5).sample_rate == 1e5


def test_npz_keeps_its_sample_rate_and_loads_with_numpy(tmp_path):
    acoustic, ttf = lanl_like(3_000)
    path = tmp_path / "r.npz"
    write_pairs(path, acoustic, ttf, sample_rate=1e5)
    assert read_record(path).sample_rate == 1e5
    with np.load(path) as loaded:
        np.testing.assert_array_equal(loaded["acoustic_data"], acoustic)
        np.testing.assert_array_equal(loaded["time_to_failure"], ttf)
        assert loaded["acoustic_data"].dtype == np.int16 and float(loaded["sample_rate"]) == 1e5


def test_npz_written_by_numpy_is_read(tmp_path):
    acoustic, ttf = lanl_like(5_000)
    path = tmp_path / "saved.npz"
    np.savez(path, acoustic_data=acoustic, time_to_failure=ttf.astype(np.float32),
             sample_rate=np.float64(2e6))
    blocks = read_all(path, block_samples=1_500)
    np.testing.assert_array_equal(np.concatenate([b.acoustic_data for b in blocks]), acoustic)
    np.testing.assert_array_equal(np.concatenate([b.time_to_failure for b in blocks]),
                                  ttf.astype(np.float32).astype(np.float64))
    assert blocks[0].sample_rate == 2e6


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_unlabelled_records_round_trip(tmp_path, suffix):
    acoustic = lanl_like(2_500)[0]
    path = tmp_path / f"segment{suffix}"
    write_pairs(path, acoustic, None)
    if suffix == ".csv":
        assert path.read_text().splitlines()[0] == "acoustic_data"
    block = read_record(path)
    assert block.time_to_failure is None
    np.testing.assert_array_equal(block.acoustic_data, acoustic)


def test_blocks_from_the_reader_can_be_written_back(tmp_path):
    acoustic, ttf = lanl_like(9_000)
    source, copy = tmp_path / "a.csv", tmp_path / "b.npz"
    write_pairs(source, acoustic, ttf)
    write_record(copy, read_blocks(source, block_samples=2_000), 4e6)
    np.testing.assert_array_equal(read_record(copy).time_to_failure, ttf)


def test_csv_windows_line_endings_and_byte_order_mark(tmp_path):
    path = tmp_path / "windows.csv"
    path.write_bytes("\ufeffacoustic_data,time_to_failure\r\n5,1.5\r\n-3,1.25\r\n".encode())
    block = read_record(path)
    assert block.acoustic_data.tolist() == [5, -3]
    assert block.time_to_failure.tolist() == [1.5, 1.25]


def test_csv_parsed_in_small_chunks_gives_the_same_samples(tmp_path, monkeypatch):
    acoustic, ttf = lanl_like(3_000)
    path = tmp_path / "r.csv"
    write_pairs(path, acoustic, ttf)
    monkeypatch.setattr(records, "_CSV_CHUNK_BYTES", 777)
    block = read_record(path)
    np.testing.assert_array_equal(block.acoustic_data, acoustic)
    np.testing.assert_array_equal(block.time_to_failure, ttf)


def test_last_line_without_newline_is_read(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("acoustic_data,time_to_failure\n1,2.0\n3,4.0")
    assert read_record(path).acoustic_data.tolist() == [1, 3]


@settings(max_examples=25, deadline=None)
@given(acoustic=hnp.arrays(np.int16, st.integers(1, 300)),
       label=st.floats(0, 20, allow_nan=False), step=st.floats(1e-9, 1e-3))
def test_any_int16_samples_and_float_labels_round_trip_through_csv(tmp_path_factory, acoustic,
                                                                   label, step):
    path = tmp_path_factory.mktemp("csv") / "r.csv"
    ttf = label - step * np.arange(len(acoustic))
    write_record(path, [(acoustic, ttf)])
    block = read_record(path)
    np.testing.assert_array_equal(block.acoustic_data, acoustic)
    np.testing.assert_array_equal(block.time_to_failure, ttf)


# --- atomic writes -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"previous")

    def failing_blocks():
        yield lanl_like(1_000)
        raise RuntimeError("instrument unplugged")

    with pytest.raises(RuntimeError):
        write_record(path, failing_blocks())
    assert path.read_bytes() == b"previous"
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]


def test_write_refuses_bad_requests(tmp_path):
    one = [lanl_like(10)]
    with pytest.raises(LabquakeError, match=r"cannot write '\.zip'"):
        write_record(tmp_path / "x.zip", one)
    with pytest.raises(LabquakeError, match="does not exist"):
        write_record(tmp_path / "missing" / "x.csv", one)
    with pytest.raises(LabquakeError, match="no samples"):
        write_record(tmp_path / "x.npz", [])
    with pytest.raises(LabquakeError, match="int16"):
        write_record(tmp_path / "x.csv", [(np.zeros(3), None)])
    with pytest.raises(LabquakeError, match="label all of them or none"):
        write_record(tmp_path / "x.csv", [lanl_like(3), (lanl_like(3)[0], None)])
    assert list(tmp_path.iterdir()) == []


def test_empty_blocks_are_skipped(tmp_path):
    acoustic, ttf = lanl_like(10)
    path = tmp_path / "x.csv"
    empty = (acoustic[:0], ttf[:0])
    write_record(path, [empty, (acoustic, ttf), empty])
    assert len(path.read_text().splitlines()) == 11
    np.testing.assert_array_equal(read_record(path).acoustic_data, acoustic)


def test_system_errors_become_one_line_errors(tmp_path, monkeypatch):
    path = tmp_path / "x.csv"
    write_pairs(path, *lanl_like(10))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(records.os, "open", refuse)
    with pytest.raises(LabquakeError, match=r"x\.csv: cannot write \(Permission denied\)"):
        write_record(path, [lanl_like(10)])
    monkeypatch.setattr(records.Path, "open", refuse)
    assert_one_line_error(path, "cannot read (Permission denied)")


def test_block_objects_are_accepted_by_the_writer(tmp_path):
    acoustic, ttf = lanl_like(100)
    path = tmp_path / "x.csv"
    write_record(path, [Block(acoustic, ttf, 0, 4e6)])
    np.testing.assert_array_equal(read_record(path).acoustic_data, acoustic)


# --- bad input: one line naming the file (and the line) ------------------------------


def assert_one_line_error(path, *words, block_samples=1_000):
    with pytest.raises(LabquakeError) as error:
        list(read_blocks(path, block_samples=block_samples))
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(("line", "problem"), [
    ("abc", "expected 2 comma-separated numbers, got 'abc'"),
    ("5,1.2,7", "expected 2 comma-separated numbers, got '5,1.2,7'"),
    ("5", "expected 2 comma-separated numbers, got '5'"),
    ("5,", "expected 2 comma-separated numbers, got '5,'"),
    ("4.5,1.0", "acoustic_data '4.5' is not a 16-bit integer"),
    ("40000,1.0", "acoustic_data '40000' is not a 16-bit integer"),
    ("3,nan", "time_to_failure 'nan' is not a finite number"),
])
def test_corrupt_csv_line_is_named_by_number(tmp_path, monkeypatch, line, problem):
    acoustic, ttf = lanl_like(3_000)
    path = tmp_path / "x.csv"
    write_pairs(path, acoustic, ttf)
    lines = path.read_text().splitlines()
    lines[1233] = line  # line 1234 of the file
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(records, "_CSV_CHUNK_BYTES", 5_000)  # the bad line is chunks in
    message = assert_one_line_error(path, "line 1234:", problem, "fix or remove that line")
    assert message == f"{path} line 1234: {problem}; fix or remove that line"


def test_corrupt_line_in_a_zipped_csv_names_archive_member_and_line(tmp_path):
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("train.csv", "acoustic_data,time_to_failure\n1,2.0\n1;2.0\n")
    assert_one_line_error(archive, "train.zip:train.csv line 3:", "got '1;2.0'")


@pytest.mark.parametrize("header", ["time_to_failure,acoustic_data", "a,b", "1,2.0"])
def test_wrong_header(tmp_path, header):
    path = tmp_path / "x.csv"
    path.write_text(f"{header}\n1,2.0\n")
    assert_one_line_error(path, "line 1: header is", repr(header), "acoustic_data,time_to_failure")


@pytest.mark.parametrize("suffix", [".csv", ".zip", ".npz"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    assert_one_line_error(path, "is empty")


def test_header_only_csv_has_no_samples(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("acoustic_data,time_to_failure\n")
    assert_one_line_error(path, "has a header but no samples")


def test_blank_header_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("\n1,2.0\n")
    assert_one_line_error(path, "line 1: no header")


@pytest.mark.parametrize("name", ["missing.csv", "missing.npz", "missing.zip"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(LabquakeError, match="no such file; check the path") as error:
        read_blocks(path)  # raised at once, before iterating
    assert str(path) in str(error.value)


def test_unknown_format(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"data")
    with pytest.raises(LabquakeError, match=r"unknown record format '\.parquet'"):
        read_blocks(path)


def test_truncated_npz(tmp_path):
    path = tmp_path / "x.npz"
    write_pairs(path, *lanl_like(50_000))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert_one_line_error(path, "truncated or corrupt")


def test_npz_with_a_damaged_member(tmp_path):
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("acoustic_data.npy", b"\x93NUMPY\x01\x00garbage")
    assert_one_line_error(path, "acoustic_data is not a readable NumPy array")


def test_npz_with_short_array_data(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, acoustic_data=np.arange(100, dtype=np.int16))
    with zipfile.ZipFile(path) as zipped:
        member = zipped.read("acoustic_data.npy")
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr("acoustic_data.npy", member[:-20])
    assert_one_line_error(path, "ends early")


@pytest.mark.parametrize(("arrays", "words"), [
    ({"time_to_failure": np.ones(3)}, "no 'acoustic_data' array"),
    ({"acoustic_data": np.ones(3, np.float32)}, "acoustic_data is float32, expected int16"),
    ({"acoustic_data": np.ones((3, 2), np.int16)}, "expected one dimension"),
    ({"acoustic_data": np.ones(3, np.int16), "time_to_failure": np.ones(4)}, "same length"),
    ({"acoustic_data": np.ones(0, np.int16)}, "holds no samples"),
    ({"acoustic_data": np.ones(3, np.int16), "sample_rate": np.float64(-1)}, "sample_rate -1"),
])
def test_npz_with_wrong_contents(tmp_path, arrays, words):
    path = tmp_path / "x.npz"
    np.savez(path, **arrays)
    assert_one_line_error(path, words)


def test_npz_sample_rate_disagreeing_with_the_caller(tmp_path):
    path = tmp_path / "x.npz"
    write_pairs(path, *lanl_like(10), sample_rate=1e5)
    with pytest.raises(LabquakeError, match="records 100000 Hz, but 4e\\+06 Hz was given"):
        list(read_blocks(path, sample_rate=4e6))


def test_zip_without_exactly_one_csv(tmp_path):
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a.csv", "acoustic_data\n1\n")
        zipped.writestr("b.csv", "acoustic_data\n2\n")
    assert_one_line_error(archive, "expected exactly one .csv inside the zip", "a.csv, b.csv")
    archive = tmp_path / "none.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("notes.txt", "hello")
    assert_one_line_error(archive, "found none")


def test_bad_block_size_and_sample_rate(tmp_path):
    path = tmp_path / "r.csv"
    write_pairs(path, *lanl_like(10))
    with pytest.raises(LabquakeError, match="block size"):
        read_blocks(path, block_samples=0)
    with pytest.raises(LabquakeError, match="sample rate"):
        read_blocks(path, sample_rate=-4e6)
