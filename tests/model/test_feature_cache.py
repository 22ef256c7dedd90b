"""The resumable feature cache and the windows of a cached record."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model.data import feature_cache, record_cache, records
from model.data.simulate import simulate_blocks
from model.features import extract as features
from model.training import dataset

pytestmark = pytest.mark.unit

RATE = 2e4
WINDOW = 4096
HOP = 512
NAMES = ("num_peaks_2", "log_variance", "mfcc_4_mean")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> record_cache.RecordCache:
    """20 s of CSV at 20 kHz with 2-3 s cycles, converted."""
    folder = tmp_path_factory.mktemp("feature_cache")
    path = folder / "lab.csv"
    records.write_record(path, simulate_blocks(20.0, sample_rate=RATE, seed=5,
                                               cycle_seconds=(2.0, 3.0)), RATE)
    return record_cache.convert(path, folder / "records", progress=False)


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the windows whose features are extracted in this process."""
    calls: list[int] = []
    extract = features.extract

    def counting(windows: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        calls.append(len(windows))
        return extract(windows, *args, **kwargs)

    monkeypatch.setattr(features, "extract", counting)
    return calls


def test_cached_windows_equal_the_streamed_windows(cache: record_cache.RecordCache,
                                                   tmp_path: Path) -> None:
    cached = dataset.cached_windows(cache, window=WINDOW, hop=HOP, sample_rate=RATE,
                                    feature_names=NAMES, feature_cache=tmp_path,
                                    progress=False)
    streamed = dataset.record_windows(
        ((block.acoustic_data, block.time_to_failure) for block in cache.blocks(
            sample_rate=RATE)), RATE, name=str(cache.source), window=WINDOW, hop=HOP,
        feature_names=NAMES, progress=False)
    assert len(cached) == feature_cache.window_count(cache.n_samples, WINDOW, HOP) > 300
    assert len(cached.failure_samples) >= 5
    for field in dataclasses.fields(dataset.RecordWindows):
        mine, theirs = getattr(cached, field.name), getattr(streamed, field.name)
        if isinstance(mine, np.ndarray):
            np.testing.assert_array_equal(mine, theirs, err_msg=field.name)
        else:
            assert mine == theirs, field.name


def test_a_rerun_reads_the_cache_and_an_interrupted_run_resumes(
        cache: record_cache.RecordCache, tmp_path: Path, counted: list[int]) -> None:
    first = feature_cache.record_features(cache, window=WINDOW, hop=HOP, feature_names=NAMES,
                                          directory=tmp_path, progress=False)
    assert sum(counted) == len(first)
    counted.clear()
    again = feature_cache.record_features(cache, window=WINDOW, hop=HOP, feature_names=NAMES,
                                          directory=tmp_path, progress=False)
    assert counted == []
    np.testing.assert_array_equal(again, first)
    # A run stopped after some chunks: only the missing ones are computed.
    folder = feature_cache.cache_folder(cache, window=WINDOW, hop=HOP, feature_names=NAMES,
                                        directory=tmp_path)
    chunk_files = sorted(folder.glob("chunk-*.npy"))
    assert len(chunk_files) == -(-len(first) // feature_cache.CHUNK_WINDOWS) >= 3
    chunk_files[1].unlink()
    np.save(chunk_files[0], np.zeros((3, 3), np.float32))  # a damaged chunk is redone too
    resumed = feature_cache.record_features(cache, window=WINDOW, hop=HOP, feature_names=NAMES,
                                            directory=tmp_path, progress=False)
    assert sum(counted) == 2 * feature_cache.CHUNK_WINDOWS
    np.testing.assert_array_equal(resumed, first)


def test_the_key_separates_hops_features_and_feature_versions(
        cache: record_cache.RecordCache, monkeypatch: pytest.MonkeyPatch) -> None:
    def folder(hop: int = HOP, names: tuple[str, ...] = NAMES) -> Path:
        return feature_cache.cache_folder(cache, window=WINDOW, hop=hop, feature_names=names)

    base = folder()
    assert base.parent == cache.path / feature_cache.FEATURES_SUBFOLDER
    assert base.name.startswith(f"w{WINDOW}-h{HOP}-")
    assert folder(hop=2 * HOP) != base
    assert folder(names=NAMES[::-1]) != base
    monkeypatch.setattr(features, "FEATURES_VERSION", features.FEATURES_VERSION + 1)
    assert folder() != base


def test_worker_processes_compute_the_same_features(cache: record_cache.RecordCache,
                                                    tmp_path: Path) -> None:
    alone = feature_cache.record_features(cache, window=WINDOW, hop=HOP,
                                          feature_names=NAMES[:1], directory=tmp_path / "a",
                                          workers=1, progress=False)
    pooled = feature_cache.record_features(cache, window=WINDOW, hop=HOP,
                                           feature_names=NAMES[:1], directory=tmp_path / "b",
                                           workers=2, progress=False)
    np.testing.assert_array_equal(pooled, alone)


def test_a_record_shorter_than_a_window_is_refused(cache: record_cache.RecordCache) -> None:
    from stream.core.errors import LabquakeError

    with pytest.raises(LabquakeError, match="fewer than one window"):
        dataset.cached_windows(cache, window=cache.n_samples + 1, sample_rate=RATE,
                               progress=False)
