"""The resumable feature cache: features of a cached record's windows, saved as computed.

Feature extraction is the long part of training at full size (about 6 ms of CPU a
window: 4,194 windows of LANL's ``train.csv`` at hop = window, 41,943 at hop = window / 10).
The windows are cut into chunks of ``CHUNK_WINDOWS``; each chunk's features are written,
atomically, to their own file as soon as they are computed, by worker processes
(:mod:`model.data.parallel`) that read their stretch of the record cache directly. A run
that is interrupted and started again computes only the chunks that are missing; a
finished one is read back in a second.

The cache is keyed by everything its numbers depend on: the record's fingerprint
(:attr:`model.data.record_cache.RecordCache.fingerprint`: its source's name, size and
modification time, and its length), the window, the hop and the features' fingerprint
(:func:`model.bundle.inference.features_fingerprint`: the names in order and
``model.features.extract.FEATURES_VERSION``). Each key has its own folder,
``w<window>-h<hop>-<16 hex of the key's SHA-256>``, under the given directory (default
``features/`` inside the record's cache), holding ``key.json`` and
``chunk-<index>.npy`` (float32, windows by features). A window's features are exactly
those :func:`model.training.dataset.record_windows` computes for it: the same samples, the same
first sample seeding the denoising noise.

Example:
    >>> features = record_features(cache, window=150_000, hop=15_000,
    ...                            feature_names=FEATURE_NAMES)  # doctest: +SKIP
    >>> features.shape  # doctest: +SKIP
    (41943, 33)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.data import parallel
from model.data.record_cache import ACOUSTIC_DTYPE, RecordCache
from model.data.records import atomic_output
from stream.core.errors import LabquakeError

CHUNK_WINDOWS = 256
KEY_FILENAME = "key.json"
FEATURES_SUBFOLDER = "features"
FEATURE_DTYPE = np.dtype(np.float32)
DEFAULT_BATCH_WINDOWS = 64
_DIGEST_HEX = 16


@dataclasses.dataclass(frozen=True)
class _ChunkJob:
    """One chunk of windows for a worker: where the samples are and where to write."""

    acoustic_path: str
    window: int
    hop: int
    feature_names: tuple[str, ...]
    first_window: int
    count: int
    batch_windows: int
    output: str


def window_count(n_samples: int, window: int, hop: int) -> int:
    """How many whole windows of ``window`` samples, every ``hop``, a record holds.

    Example:
        >>> window_count(629_145_480, 150_000, 15_000)
        41934
    """
    return 0 if n_samples < window else (n_samples - window) // hop + 1


def cache_folder(record: RecordCache, *, window: int, hop: int,
                 feature_names: Sequence[str], directory: str | os.PathLike | None = None
                 ) -> Path:
    """The folder of one key's chunks.

    Example:
        >>> cache_folder(cache, window=150_000, hop=150_000,
        ...              feature_names=FEATURE_NAMES).name  # doctest: +SKIP
        'w150000-h150000-3f9c0a1b2c3d4e5f'
    """
    key = _key(record, window, hop, feature_names)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    base = (record.path / FEATURES_SUBFOLDER if directory is None
            else Path(directory).expanduser() / record.path.name)
    return base / f"w{window}-h{hop}-{digest[:_DIGEST_HEX]}"


def record_features(record: RecordCache, *, window: int, hop: int,
                    feature_names: Sequence[str], directory: str | os.PathLike | None = None,
                    workers: int = 1, batch_windows: int = DEFAULT_BATCH_WINDOWS,
                    progress: bool = True) -> np.ndarray:
    """Features of every window of a cached record, from the cache or computed and saved.

    Args:
        record: the converted record.
        window: samples per window.
        hop: samples between window starts; window ``i`` starts at sample ``i * hop``.
        feature_names: the features, in column order.
        directory: where feature caches live (default ``features/`` in the record cache).
        workers: processes computing missing chunks.
        batch_windows: windows per feature-extraction call.
        progress: show a progress bar on stderr.

    Returns:
        float32 array (n_windows, n_features).

    Raises:
        LabquakeError: the record holds no whole window, or the cache cannot be written.

    Example:
        >>> record_features(cache, window=150_000, hop=150_000,
        ...                 feature_names=("num_peaks_2",)).shape  # doctest: +SKIP
        (4194, 1)
    """
    names = tuple(feature_names)
    total = window_count(record.n_samples, window, hop)
    if total == 0:
        raise LabquakeError(f"{record.source} holds {record.n_samples:,} samples, fewer than "
                            f"one window of {window:,}; give a longer record or a shorter "
                            "--window")
    folder = cache_folder(record, window=window, hop=hop, feature_names=names,
                          directory=directory)
    try:
        _prepare(folder, _key(record, window, hop, names))
    except OSError as error:
        raise LabquakeError(f"cannot write the feature cache {folder} "
                            f"({error.strerror or error}); give --feature-cache DIR elsewhere"
                            ) from None
    jobs = []
    chunks: list[np.ndarray | None] = []
    for first in range(0, total, CHUNK_WINDOWS):
        count = min(CHUNK_WINDOWS, total - first)
        path = folder / f"chunk-{first // CHUNK_WINDOWS:06d}.npy"
        stored = _load_chunk(path, count, len(names))
        chunks.append(stored)
        if stored is None:
            jobs.append(_ChunkJob(str(record.acoustic_path), window, hop, names, first, count,
                                  batch_windows, str(path)))
    done = len(chunks) - len(jobs)
    resumed = f", {done} of {len(chunks)} chunks cached" if done else ""
    parallel.run_jobs(compute_chunk, jobs, workers=workers, units=lambda job: job.count,
                      progress=progress, description=f"features{resumed}")
    for index, stored in enumerate(chunks):
        if stored is None:
            path = folder / f"chunk-{index:06d}.npy"
            chunks[index] = _load_chunk(path, min(CHUNK_WINDOWS, total - index * CHUNK_WINDOWS),
                                        len(names))
            if chunks[index] is None:
                raise LabquakeError(f"feature cache chunk {path} is unreadable after writing; "
                                    "check the disk")
    return np.concatenate(chunks)


def compute_chunk(job: _ChunkJob) -> int:
    """Compute one chunk's features from the record cache and save them atomically.

    Runs in a worker process; module-level so that it can be pickled.

    Returns:
        The number of windows computed.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    from model.features import extract as features

    first_sample = job.first_window * job.hop
    span = (job.count - 1) * job.hop + job.window
    samples = np.fromfile(job.acoustic_path, ACOUSTIC_DTYPE, span,
                          offset=first_sample * ACOUSTIC_DTYPE.itemsize)
    if len(samples) != span:
        raise LabquakeError(f"record cache {job.acoustic_path} is truncated; delete its folder "
                            "and run again to convert the record anew")
    windows = sliding_window_view(samples, job.window)[::job.hop]
    starts = first_sample + job.hop * np.arange(job.count, dtype=np.int64)
    result = np.concatenate([
        features.extract(np.ascontiguousarray(windows[low:low + job.batch_windows]),
                         starts[low:low + job.batch_windows], names=job.feature_names)
        for low in range(0, job.count, job.batch_windows)]).astype(FEATURE_DTYPE)
    output = Path(job.output)
    with atomic_output(output) as stream:  # the user's umask, like the record it caches
        np.save(stream, result)
    return job.count


def _key(record: RecordCache, window: int, hop: int,
         feature_names: Sequence[str]) -> dict[str, object]:
    from model.bundle.inference import features_fingerprint

    return {"record": record.fingerprint, "window": int(window), "hop": int(hop),
            "feature_names": list(feature_names),
            "features_fingerprint": features_fingerprint(feature_names),
            "chunk_windows": CHUNK_WINDOWS}


def _prepare(folder: Path, key: dict[str, object]) -> None:
    """Create the folder with its key; an existing folder with another key is emptied."""
    key_path = folder / KEY_FILENAME
    if folder.is_dir():
        try:
            if json.loads(key_path.read_text(encoding="utf-8")) == key:
                return
        except (OSError, ValueError):
            pass
        for stale in folder.glob("chunk-*.npy"):
            stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    key_path.write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")


def _load_chunk(path: Path, count: int, n_features: int) -> np.ndarray | None:
    """A saved chunk, or ``None`` if it is missing or not of the expected shape."""
    try:
        chunk = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if chunk.shape != (count, n_features) or chunk.dtype != FEATURE_DTYPE:
        return None
    return chunk
