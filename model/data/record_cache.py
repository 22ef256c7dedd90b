"""The record cache: a record file parsed once into raw arrays that later reads reuse.

Parsing LANL's ``train.csv`` (629,145,480 lines, about 9 GB of text) takes minutes; the
same samples as raw arrays take 3.8 GB and are read at disk speed. A record is converted
once, into a folder under the cache root (``$LABQUAKE_CACHE_DIR/records``, default
``~/.cache/labquake/records``, or the ``--cache DIR`` of ``train`` / ``evaluate``):

- ``acoustic_data.int16``: the samples, raw little-endian int16 (``np.memmap(path,
  "<i2", mode="r")`` maps it);
- ``time_to_failure.float32``: the labels, raw little-endian float32 (absent for an
  unlabelled record). float32 keeps 7 significant digits: 1 µs at 16 s, far finer than
  LANL's label step and than any target the model learns;
- ``meta.json``: ``format``, ``source`` (the file's resolved ``path``, ``name``, ``bytes``
  and ``mtime_ns``: its fingerprint), ``n_samples``, ``labelled``, ``sample_rate_hz``
  (an ``.npz`` file's own rate; ``null`` for CSV, which records none) and ``created_at``.

A cache is used only while its source is unchanged (same size and modification time);
otherwise it is stale, ignored, and a conversion replaces it. The folder is built under a
temporary name and renamed into place when complete, so a cache that exists is whole.
:func:`read_blocks` reads a file from its cache whenever a valid one exists, so every
reader (train, evaluate, replay, produce) gains from a conversion.

Example:
    >>> cache = open_record("train.csv")  # doctest: +SKIP
    >>> cache.n_samples  # doctest: +SKIP
    629145480
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model.data import label_pace, records
from stream.core.errors import LabquakeError

CACHE_FORMAT = 1
ACOUSTIC_FILENAME = "acoustic_data.int16"
TTF_FILENAME = "time_to_failure.float32"
META_FILENAME = "meta.json"
ACOUSTIC_DTYPE = np.dtype("<i2")
TTF_DTYPE = np.dtype("<f4")
CACHE_SUBFOLDER = "records"
DEFAULT_CACHE_HOME = Path("~/.cache/labquake")
# Files at least this big are converted without being asked: below it a parse takes
# seconds and a second copy of the samples is not worth its disk space.
AUTO_CACHE_MIN_BYTES = 256 << 20
# Samples converted at a time: 24 MiB of int16 + float64 in flight.
CONVERT_BLOCK_SAMPLES = 1 << 21
# Bytes of text sampled to estimate a CSV's line count for the progress bar.
_ESTIMATE_BYTES = 1 << 20
_PATH_DIGEST_HEX = 16


@dataclasses.dataclass(frozen=True)
class RecordCache:
    """A converted record: raw sample and label arrays with their metadata.

    Attributes:
        path: the cache folder.
        source: the record file it was converted from.
        n_samples: samples in the record.
        labelled: whether it holds ``time_to_failure``.
        file_sample_rate: the rate recorded in the source (an ``.npz``), or ``None``.
        fingerprint: ``"sha256:<hex>"`` of the source's identity and the sample count;
            it keys caches derived from the record (features).
    """

    path: Path
    source: Path
    n_samples: int
    labelled: bool
    file_sample_rate: float | None
    fingerprint: str

    @property
    def acoustic_path(self) -> Path:
        """The raw int16 samples."""
        return self.path / ACOUSTIC_FILENAME

    @property
    def ttf_path(self) -> Path:
        """The raw float32 labels (present when :attr:`labelled`)."""
        return self.path / TTF_FILENAME

    def sample_rate(self, given: float | None = None) -> float:
        """The record's rate: the source's own, else ``given``, else LANL's 4 MHz.

        Raises:
            LabquakeError: ``given`` contradicts the rate the source records.

        Example:
            >>> cache.sample_rate(None)  # doctest: +SKIP
            4000000.0
        """
        return records.resolve_sample_rate(self.source, self.file_sample_rate, given)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Samples ``[start, stop)`` and their labels (float32; ``None`` if unlabelled).

        Positional reads, not a mapping: a sequential pass over the whole record then
        keeps no more than one block resident.

        Example:
            >>> acoustic, ttf = cache.read(0, 150_000)  # doctest: +SKIP
        """
        acoustic = self._read(self.acoustic_path, ACOUSTIC_DTYPE, start, stop)
        return acoustic, self.read_labels(start, stop) if self.labelled else None

    def read_labels(self, start: int, stop: int) -> np.ndarray:
        """float32 labels of samples ``[start, stop)``.

        Example:
            >>> cache.read_labels(0, 4096).dtype  # doctest: +SKIP
            dtype('float32')
        """
        if not self.labelled:
            raise LabquakeError(f"{self.source} has no time_to_failure labels; training and "
                                "evaluation need a labelled record")
        return self._read(self.ttf_path, TTF_DTYPE, start, stop)

    def _read(self, path: Path, dtype: np.dtype, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.n_samples, stop)
        count = max(0, stop - start)
        values = np.fromfile(path, dtype, count, offset=start * dtype.itemsize)
        if len(values) != count:
            raise LabquakeError(f"record cache {self.path} is truncated; delete the folder and "
                                "run again to convert the record anew")
        return values

    def labels_at(self, samples: np.ndarray) -> np.ndarray:
        """float64 labels at the given sample indices.

        One positional read per index: a memory map would page in (and count as
        resident) the read-ahead around every index, gigabytes for a full-size record.

        Example:
            >>> cache.labels_at(np.array([149_999]))  # doctest: +SKIP
            array([1.46909998])
        """
        self.read_labels(0, 0)  # refuses an unlabelled record
        indices = np.asarray(samples, np.int64).reshape(-1)
        if indices.size and not (indices.min() >= 0 and indices.max() < self.n_samples):
            raise IndexError(f"sample indices must lie in [0, {self.n_samples})")
        size = TTF_DTYPE.itemsize
        with self.ttf_path.open("rb") as stream:
            descriptor = stream.fileno()
            data = b"".join(os.pread(descriptor, size, index * size) for index in indices.tolist())
        if len(data) != indices.size * size:
            raise LabquakeError(f"record cache {self.path} is truncated; delete the folder and "
                                "run again to convert the record anew")
        return np.frombuffer(data, TTF_DTYPE).astype(np.float64)

    def blocks(self, block_samples: int = records.DEFAULT_BLOCK_SAMPLES,
               sample_rate: float | None = None) -> Iterator[records.Block]:
        """The record as :class:`model.data.records.Block` objects (labels as float64).

        Example:
            >>> sum(len(block.acoustic_data) for block in cache.blocks())  # doctest: +SKIP
            629145480
        """
        rate = self.sample_rate(sample_rate)
        for start in range(0, self.n_samples, block_samples):
            acoustic, ttf = self.read(start, start + block_samples)
            yield records.Block(acoustic, None if ttf is None else ttf.astype(np.float64),
                                start, rate)


def default_root() -> Path:
    """The cache root: ``$LABQUAKE_CACHE_DIR/records`` (default ``~/.cache/labquake``).

    Example:
        >>> default_root().name
        'records'
    """
    home = os.environ.get("LABQUAKE_CACHE_DIR") or DEFAULT_CACHE_HOME
    return Path(home).expanduser() / CACHE_SUBFOLDER


def cache_folder(source: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Where the cache of ``source`` lives: named by the file and a hash of its full path.

    Example:
        >>> cache_folder("/data/train.csv", "/cache").name.startswith("train.csv-")
        True
    """
    resolved = str(Path(source).resolve())
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:_PATH_DIGEST_HEX]
    base = default_root() if root is None else Path(root).expanduser()
    return base / f"{Path(source).name}-{digest}"


def read_blocks(path: str | os.PathLike, block_samples: int = records.DEFAULT_BLOCK_SAMPLES,
                sample_rate: float | None = None, *,
                cache_root: str | os.PathLike | None = None) -> Iterator[records.Block]:
    """Read a record in blocks, as :func:`model.data.records.read_blocks` does, from its
    cache when a valid one exists: the same samples, labels rounded to float32.

    Args:
        path: a ``.csv``, a ``.zip`` holding one ``.csv``, or an ``.npz``.
        block_samples: samples per block.
        sample_rate: the rate of a CSV (default LANL's 4 MHz); for an .npz, the file's own
            rate is used and a different value here is an error.
        cache_root: where to look for the file's cache (default :func:`default_root`).

    Raises:
        LabquakeError: as :func:`model.data.records.read_blocks`.

    Example:
        >>> blocks = read_blocks("train.csv", block_samples=150_000)  # doctest: +SKIP
    """
    # The file's own reader checks the path, format and arguments at once, cache or not.
    parsed = records.read_blocks(path, block_samples, sample_rate)
    cached = find(path, cache_root)
    if cached is None:
        return parsed
    return label_pace.checked_blocks(cached.blocks(int(block_samples), sample_rate),
                                     records.rate_origin(path, sample_rate), path)


def find(source: str | os.PathLike, root: str | os.PathLike | None = None) -> RecordCache | None:
    """The valid cache of ``source``, or ``None`` if there is none or it is stale.

    Example:
        >>> find("train.csv") is None  # doctest: +SKIP
        True
    """
    source = Path(source)
    folder = cache_folder(source, root)
    try:
        meta = json.loads((folder / META_FILENAME).read_text(encoding="utf-8"))
        identity = _identity(source)
    except (OSError, ValueError):
        return None
    if not (isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT
            and meta.get("source") == identity):
        return None
    cache = _from_meta(folder, source, meta)
    expected = [(cache.acoustic_path, ACOUSTIC_DTYPE)]
    if cache.labelled:
        expected.append((cache.ttf_path, TTF_DTYPE))
    for path, dtype in expected:
        with contextlib.suppress(OSError):
            if path.stat().st_size == cache.n_samples * dtype.itemsize:
                continue
        return None
    return cache


def open_record(source: str | os.PathLike, root: str | os.PathLike | None = None, *,
                convert_any_size: bool = False, sample_rate: float | None = None,
                progress: bool = True) -> RecordCache | None:
    """The cache of ``source``: found, or made now if the file is worth caching.

    Args:
        source: a record file (``.csv``, ``.zip`` holding one, ``.npz``).
        root: the cache root (default :func:`default_root`).
        convert_any_size: convert even a file below ``AUTO_CACHE_MIN_BYTES``.
        sample_rate: the rate the caller reads the file at; checked against an ``.npz``'s.
        progress: show a progress bar while converting.

    Returns:
        The :class:`RecordCache`, or ``None`` for a small file that has none.

    Example:
        >>> cache = open_record("train.csv")  # doctest: +SKIP
    """
    found = find(source, root)
    if found is not None:
        found.sample_rate(sample_rate)
        return found
    # Checks the path and format as a read does, so a bad file is refused the same way.
    records.read_blocks(source, sample_rate=sample_rate)
    if not convert_any_size and Path(source).stat().st_size < AUTO_CACHE_MIN_BYTES:
        return None
    return convert(source, root, sample_rate=sample_rate, progress=progress)


def convert(source: str | os.PathLike, root: str | os.PathLike | None = None, *,
            sample_rate: float | None = None, progress: bool = True) -> RecordCache:
    """Parse a record file once into its cache (replacing a stale one); bounded memory.

    Args:
        source: a record file (``.csv``, ``.zip`` holding one, ``.npz``).
        root: the cache root (default :func:`default_root`).
        sample_rate: the rate the caller reads the file at; checked against an ``.npz``'s.
        progress: show a progress bar (samples) on stderr.

    Returns:
        The new :class:`RecordCache`.

    Raises:
        LabquakeError: the file is unreadable or malformed (with its line), or the cache
            cannot be written (permissions, disk full).

    Example:
        >>> convert("train.csv").n_samples  # doctest: +SKIP
        629145480
    """
    from tqdm import tqdm

    source = Path(source)
    blocks = records.read_blocks(source, CONVERT_BLOCK_SAMPLES, sample_rate)
    identity = _identity(source)
    folder = cache_folder(source, root)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part",
                                        dir=folder.parent))
        staging.chmod(0o755)  # mkdtemp makes it owner-only; others may train on it too
    except OSError as error:
        raise _write_error(folder, error) from None
    try:
        n_samples, labelled, file_rate = _write_arrays(
            staging, source, blocks, tqdm(total=_estimated_samples(source), unit="sample",
                                  unit_scale=True, file=sys.stderr, leave=False,
                                  desc=f"converting {source.name}", disable=not progress))
        meta = {"format": CACHE_FORMAT, "source": identity, "n_samples": n_samples,
                "labelled": labelled, "sample_rate_hz": file_rate,
                "created_at": datetime.datetime.now(datetime.UTC).isoformat(
                    timespec="seconds").replace("+00:00", "Z")}
        with (staging / META_FILENAME).open("w", encoding="utf-8") as stream:
            json.dump(meta, stream, indent=2)
            stream.write("\n")
        _replace_folder(staging, folder)
    except OSError as error:
        raise _write_error(folder, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _from_meta(folder, source, meta)


def _write_arrays(staging: Path, source: Path, blocks: Iterator[records.Block],
                  bar: Any) -> tuple[int, bool, float | None]:
    """Stream the blocks into the raw files; the sample count, labels present, file rate."""
    n_samples = 0
    labelled = False
    file_rate = None
    with bar, (staging / ACOUSTIC_FILENAME).open("wb") as acoustic_out, \
            contextlib.ExitStack() as stack:
        ttf_out = None
        for block in blocks:
            if n_samples == 0:
                labelled = block.time_to_failure is not None
                # Only an .npz records its rate; a CSV's is the reader's assumption.
                file_rate = block.sample_rate if records.records_own_rate(source) else None
                if labelled:
                    ttf_out = stack.enter_context((staging / TTF_FILENAME).open("wb"))
            acoustic_out.write(block.acoustic_data.astype(ACOUSTIC_DTYPE, copy=False).data)
            if ttf_out is not None:
                ttf_out.write(block.time_to_failure.astype(TTF_DTYPE).data)
            n_samples += len(block.acoustic_data)
            bar.update(len(block.acoustic_data))
        for output in (acoustic_out, ttf_out):
            if output is not None:
                output.flush()
                os.fsync(output.fileno())
    return n_samples, labelled, file_rate


def _from_meta(folder: Path, source: Path, meta: dict[str, Any]) -> RecordCache:
    identity = {"source": meta["source"], "n_samples": meta["n_samples"]}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    return RecordCache(path=folder, source=source, n_samples=int(meta["n_samples"]),
                       labelled=bool(meta["labelled"]),
                       file_sample_rate=(None if meta["sample_rate_hz"] is None
                                         else float(meta["sample_rate_hz"])),
                       fingerprint=f"sha256:{digest}")


def _identity(source: Path) -> dict[str, Any]:
    """What says a file is unchanged: its resolved path, name, size and modification time."""
    stat = source.stat()
    return {"path": str(source.resolve()), "name": source.name, "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns}


def _estimated_samples(source: Path) -> int | None:
    """About how many samples ``source`` holds (for the progress bar), from its first lines."""
    suffix = source.suffix.lower()
    try:
        if suffix == ".csv":
            text_bytes = source.stat().st_size
            with source.open("rb") as stream:
                head = stream.read(_ESTIMATE_BYTES)
        elif suffix == ".zip":
            with zipfile.ZipFile(source) as archive:
                member = next(info for info in archive.infolist()
                              if info.filename.lower().endswith(".csv"))
                text_bytes = member.file_size
                with archive.open(member) as stream:
                    head = stream.read(_ESTIMATE_BYTES)
        else:
            return None
    except (OSError, StopIteration, zipfile.BadZipFile):
        return None
    lines = head.count(b"\n")
    # The header line is not a sample.
    return max(0, math.floor(text_bytes * lines / len(head)) - 1) if lines else None


def _replace_folder(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an old folder there is moved aside, then removed."""
    if folder.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old",
                                      dir=folder.parent))
        os.rename(folder, aside / folder.name)
        os.rename(staging, folder)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(staging, folder)


def _write_error(folder: Path, error: OSError) -> LabquakeError:
    return LabquakeError(f"cannot write the record cache {folder} ({error.strerror or error}); "
                         "free disk space, give --cache DIR on another disk, or --no-cache")
