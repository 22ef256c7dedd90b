"""The record cache: conversion, the read hook, staleness, formats and refusals."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model.data import record_cache, records
from model.data.simulate import simulate_blocks
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

RATE = 2e4


@pytest.fixture(scope="module")
def lanl_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of LANL-format CSV at 20 kHz (200,000 lines)."""
    path = tmp_path_factory.mktemp("records") / "train.csv"
    records.write_record(path, simulate_blocks(10.0, sample_rate=RATE, seed=4,
                                               cycle_seconds=(2.0, 3.0)), RATE)
    return path


@pytest.fixture()
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default cache root, redirected to a temporary folder."""
    monkeypatch.setenv("LABQUAKE_CACHE_DIR", str(tmp_path / "home"))
    return tmp_path / "home" / record_cache.CACHE_SUBFOLDER


def test_conversion_holds_the_files_samples_and_float32_labels(lanl_csv: Path,
                                                               tmp_path: Path) -> None:
    parsed = records.read_record(lanl_csv)
    cache = record_cache.convert(lanl_csv, tmp_path, progress=False)
    assert cache.n_samples == len(parsed.acoustic_data) == 200_000
    assert cache.labelled and cache.file_sample_rate is None
    assert cache.path == record_cache.cache_folder(lanl_csv, tmp_path)
    acoustic = np.memmap(cache.acoustic_path, "<i2", mode="r")
    labels = np.memmap(cache.ttf_path, "<f4", mode="r")
    np.testing.assert_array_equal(acoustic, parsed.acoustic_data)
    np.testing.assert_array_equal(labels, parsed.time_to_failure.astype(np.float32))
    meta = json.loads((cache.path / record_cache.META_FILENAME).read_text())
    assert meta["source"]["bytes"] == lanl_csv.stat().st_size
    assert meta["n_samples"] == 200_000 and meta["sample_rate_hz"] is None
    # Nothing but the cache folder is left in the root (no staging folders).
    assert [path.name for path in tmp_path.iterdir()] == [cache.path.name]


def test_reading_a_converted_file_uses_the_cache(lanl_csv: Path, cache_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = list(record_cache.read_blocks(lanl_csv, 70_000))
    record_cache.convert(lanl_csv, progress=False)

    def no_parsing(*_: object) -> None:
        raise AssertionError("the CSV was parsed although its cache exists")

    monkeypatch.setattr(records, "_parse_csv", no_parsing)
    cached = list(record_cache.read_blocks(lanl_csv, 70_000, sample_rate=RATE))
    assert [block.first_sample for block in cached] == [0, 70_000, 140_000]
    assert {block.sample_rate for block in cached} == {RATE}
    for block, reference in zip(cached, parsed, strict=True):
        np.testing.assert_array_equal(block.acoustic_data, reference.acoustic_data)
        assert block.time_to_failure.dtype == np.float64
        np.testing.assert_allclose(block.time_to_failure, reference.time_to_failure,
                                   rtol=1e-7)
    with pytest.raises(AssertionError, match="parsed"):
        next(records.read_blocks(lanl_csv))


def test_a_changed_file_makes_its_cache_stale(lanl_csv: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.csv"
    copy.write_bytes(lanl_csv.read_bytes())
    root = tmp_path / "cache"
    assert record_cache.find(copy, root) is None
    first = record_cache.convert(copy, root, progress=False)
    assert record_cache.find(copy, root) == first
    with copy.open("ab") as stream:
        stream.write(b"7,0.5\n")
    assert record_cache.find(copy, root) is None
    second = record_cache.open_record(copy, root, convert_any_size=True, progress=False)
    assert second.n_samples == first.n_samples + 1
    assert second.fingerprint != first.fingerprint
    assert record_cache.find(copy, root) == second


def test_a_truncated_cache_is_not_used(lanl_csv: Path, tmp_path: Path) -> None:
    cache = record_cache.convert(lanl_csv, tmp_path, progress=False)
    with cache.ttf_path.open("r+b") as stream:
        stream.truncate(100)
    assert record_cache.find(lanl_csv, tmp_path) is None


def test_small_files_are_converted_only_when_asked(lanl_csv: Path, tmp_path: Path) -> None:
    assert lanl_csv.stat().st_size < record_cache.AUTO_CACHE_MIN_BYTES
    assert record_cache.open_record(lanl_csv, tmp_path, progress=False) is None
    made = record_cache.open_record(lanl_csv, tmp_path, convert_any_size=True, progress=False)
    assert made is not None
    # Once made, a cache is used whatever the file's size.
    assert record_cache.open_record(lanl_csv, tmp_path, progress=False) == made


def test_big_files_are_converted_without_being_asked(lanl_csv: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_cache, "AUTO_CACHE_MIN_BYTES", lanl_csv.stat().st_size)
    assert record_cache.open_record(lanl_csv, tmp_path, progress=False) is not None


def test_a_zip_converts_to_the_same_arrays(lanl_csv: Path, tmp_path: Path) -> None:
    archive = tmp_path / "train.csv.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as output:
        output.write(lanl_csv, "train.csv")
    from_zip = record_cache.convert(archive, tmp_path / "cache", progress=False)
    from_csv = record_cache.convert(lanl_csv, tmp_path / "cache", progress=False)
    assert from_zip.path != from_csv.path
    for name in (record_cache.ACOUSTIC_FILENAME, record_cache.TTF_FILENAME):
        assert (from_zip.path / name).read_bytes() == (from_csv.path / name).read_bytes()


def test_an_npz_keeps_its_own_rate(tmp_path: Path) -> None:
    path = tmp_path / "lab.npz"
    records.write_record(path, simulate_blocks(2.0, sample_rate=RATE, seed=1,
                                               cycle_seconds=(2.0, 3.0)), RATE)
    cache = record_cache.convert(path, tmp_path / "cache", progress=False)
    assert cache.file_sample_rate == RATE == cache.sample_rate(None)
    with pytest.raises(LabquakeError, match=r"records 20000 Hz, but 4e\+06 Hz was given"):
        cache.sample_rate(4e6)


def test_unlabelled_records_convert_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "seg.csv"
    records.write_record(path, [(np.arange(-5, 5, dtype=np.int16), None)])
    cache = record_cache.convert(path, tmp_path / "cache", progress=False)
    assert not cache.labelled and not cache.ttf_path.exists()
    acoustic, ttf = cache.read(2, 6)
    assert acoustic.tolist() == [-3, -2, -1, 0] and ttf is None
    with pytest.raises(LabquakeError, match="no time_to_failure labels"):
        cache.read_labels(0, 1)


def test_a_malformed_line_is_named_and_leaves_no_cache(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("acoustic_data,time_to_failure\n1,0.5\n2,0.4\n99999,0.3\n")
    root = tmp_path / "cache"
    with pytest.raises(LabquakeError, match=r"bad\.csv line 4: acoustic_data '99999' is "
                                            r"not a 16-bit integer"):
        record_cache.convert(path, root, progress=False)
    assert list(root.iterdir()) == []


def test_an_unwritable_root_is_one_line(lanl_csv: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LabquakeError, match=r"cannot write the record cache .*--no-cache"):
        record_cache.convert(lanl_csv, blocker, progress=False)


def test_the_default_root_follows_the_environment(cache_home: Path) -> None:
    assert record_cache.default_root() == cache_home
    folder = record_cache.cache_folder("/data/train.csv")
    assert folder.parent == cache_home and folder.name.startswith("train.csv-")
    # Two files of one name in different folders get different caches.
    assert record_cache.cache_folder("/other/train.csv") != folder


def test_cache_flags_that_contradict_are_refused() -> None:
    import argparse

    from model.training import cache_arguments

    parser = argparse.ArgumentParser()
    cache_arguments.add_cache_arguments(parser)
    options = cache_arguments.cached_windows_options(
        parser.parse_args(["--cache", "/c", "--workers", "3"]))
    assert options == {"use_cache": True, "cache_root": "/c", "convert_any_size": True,
                       "feature_cache": None, "workers": 3}
    assert not cache_arguments.cached_windows_options(parser.parse_args([]))["convert_any_size"]
    with pytest.raises(LabquakeError, match="--no-cache contradicts --cache"):
        cache_arguments.check_cache_arguments(parser.parse_args(["--no-cache", "--cache", "/c"]))
    with pytest.raises(LabquakeError, match="--workers 0 is not a positive"):
        cache_arguments.check_cache_arguments(parser.parse_args(["--workers", "0"]))
    simulated = parser.parse_args(["--feature-cache", "/f"])
    simulated.simulate = 60.0
    with pytest.raises(LabquakeError, match="--feature-cache apply to --data files"):
        cache_arguments.check_cache_arguments(simulated)
