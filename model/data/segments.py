"""Test-style segment folders: the LANL competition's ``test/`` layout, written and read.

LANL's ``test/`` folder holds 2,624 files ``seg_<6 hex>.csv``, each 150,000 samples under
the header ``acoustic_data``, cut from a record other than ``train.csv``; the answer for
a segment is the time to failure after its last sample, and a submission is a CSV
``seg_id,time_to_failure``. :func:`write_segments` makes such a folder from the simulator,
plus ``truth.csv`` (``seg_id,time_to_failure``, the true answers) so that a prediction can
be scored; :func:`segment_files` and :func:`read_segment` read any such folder, LANL's
own included (``truth.csv`` is not a segment: segments are the ``seg_*.csv`` files).

Segments are drawn at random positions of one simulated record, never overlapping, and
their ids are random hex, so the order of the files says nothing about time (as in LANL).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> written = write_segments(folder, 3, sample_rate=1e5, segment_samples=5_000,
    ...                          progress=False)
    >>> len(segment_files(folder)), sorted(read_truth(folder / TRUTH_FILENAME)) == [
    ...     path.stem for path in segment_files(folder)]
    (3, True)
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.data import parallel, records
from stream.core.errors import LabquakeError

SEGMENT_SAMPLES = 150_000
SEGMENT_GLOB = "seg_*.csv"
SEGMENT_PREFIX = "seg_"
TRUTH_FILENAME = "truth.csv"
SUBMISSION_HEADER = "seg_id,time_to_failure"
# LANL's segment ids are six hex digits.
SEGMENT_ID_HEX = 6
# Without --seconds, the record the segments are cut from is this many times their total
# length, so their positions are spread out, and at least MIN_RECORD_SECONDS long, so even
# a few segments sample many cycles (only the segments are rendered: length costs nothing).
DEFAULT_RECORD_FACTOR = 2
MIN_RECORD_SECONDS = 150.0
# Answers are written with this many significant digits (LANL's labels have 10 at most).
ANSWER_DIGITS = 10
# Segments read and featurised per job: 64 x 150,000 int16 is 19 MB in flight per worker.
DEFAULT_BATCH_SEGMENTS = 64


@dataclasses.dataclass(frozen=True)
class WrittenSegments:
    """What :func:`write_segments` wrote.

    Attributes:
        folder: the segment folder.
        count: segments written.
        segment_samples: samples per segment.
        record_samples: length of the simulated record they were cut from.
        sample_rate: samples per second.
        seed: the simulator's seed (it also draws positions and ids).
        first_samples: each segment's first sample in that record, by segment id.
    """

    folder: Path
    count: int
    segment_samples: int
    record_samples: int
    sample_rate: float
    seed: int
    first_samples: dict[str, int]


def write_segments(folder: str | os.PathLike, count: int, *, seconds: float | None = None,
                   sample_rate: float = records.LANL_SAMPLE_RATE, seed: int = 0,
                   segment_samples: int = SEGMENT_SAMPLES,
                   cycle_seconds: tuple[float, float] | None = None,
                   progress: bool = True) -> WrittenSegments:
    """Write ``count`` test-style segments of a simulated record and their ``truth.csv``.

    Args:
        folder: the folder to write into (created if missing); it must hold no segments.
        count: number of segments.
        seconds: length of the simulated record they are cut from (default:
            ``DEFAULT_RECORD_FACTOR`` times their total length, at least
            ``MIN_RECORD_SECONDS``).
        sample_rate: samples per second.
        seed: the simulator's seed; also draws the positions and the ids.
        segment_samples: samples per segment (LANL: 150,000).
        cycle_seconds: (shortest, longest) stick-slip cycle (default the simulator's).
        progress: show a progress bar on stderr.

    Returns:
        A :class:`WrittenSegments`.

    Raises:
        LabquakeError: a bad count or length, a record too short for the segments, or a
            folder that already holds segments.

    Example:
        >>> write_segments("test", 2624)  # doctest: +SKIP
    """
    from tqdm import tqdm

    from model.data.simulate import DEFAULT_CYCLE_SECONDS, LabFault, record_samples

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise LabquakeError(f"segment count {count!r} is not a positive whole number; "
                            "give --segments N, e.g. 2624")
    if (isinstance(segment_samples, bool) or not isinstance(segment_samples, int)
            or segment_samples < 1):
        raise LabquakeError(f"segment length {segment_samples!r} is not a positive number of "
                            "samples")
    folder = Path(folder)
    fault = LabFault(sample_rate, seed, cycle_seconds or DEFAULT_CYCLE_SECONDS)
    if seconds is None:
        total = max(DEFAULT_RECORD_FACTOR * count * segment_samples,
                    round(MIN_RECORD_SECONDS * fault.sample_rate))
    else:
        if not math.isfinite(seconds):
            raise LabquakeError(f"--seconds {seconds} is not a finite length; give e.g. 200")
        total = record_samples(seconds, sample_rate)
    if total < count * segment_samples:
        raise LabquakeError(f"{count} segments of {segment_samples:,} samples need a record of "
                            f"{count * segment_samples:,} samples, longer than {total:,}; give "
                            "a longer --seconds or fewer --segments")
    if folder.exists() and not folder.is_dir():
        raise LabquakeError(f"--out {folder} is a file; give a folder for the segments")
    folder.mkdir(parents=True, exist_ok=True)
    if segment_files(folder, required=False):
        raise LabquakeError(f"{folder} already holds {SEGMENT_GLOB} files; give an empty or "
                            "new folder")
    rng = np.random.default_rng([seed, count, segment_samples])
    # Sorted gaps plus i segment lengths: uniform random positions that never overlap.
    slack = total - count * segment_samples
    starts = np.sort(rng.integers(0, slack, count, endpoint=True)) + (
        segment_samples * np.arange(count, dtype=np.int64))
    ids = [f"{SEGMENT_PREFIX}{value:0{SEGMENT_ID_HEX}x}" for value in
           rng.choice(16 ** SEGMENT_ID_HEX, count, replace=False).tolist()]
    truth = {}
    # In record order, so the simulator renders each stretch once.
    with tqdm(total=count, unit="segment", file=sys.stderr, disable=not progress,
              desc=folder.name, leave=False) as bar:
        for segment_id, start in zip(ids, starts.tolist(), strict=True):
            acoustic, ttf = fault.render(start, start + segment_samples)
            records.write_record(folder / f"{segment_id}.csv", [(acoustic, None)], sample_rate)
            truth[segment_id] = float(ttf[-1])
            bar.update()
    write_submission(folder / TRUTH_FILENAME, truth)
    return WrittenSegments(folder, count, segment_samples, total, fault.sample_rate, seed,
                           dict(zip(ids, starts.tolist(), strict=True)))


def segment_files(folder: str | os.PathLike, *, required: bool = True) -> list[Path]:
    """The segment files of a folder (``seg_*.csv``), sorted by name.

    Raises:
        LabquakeError: the folder does not exist, or (``required``) holds no segment.

    Example:
        >>> [path.name for path in segment_files("test")][:1]  # doctest: +SKIP
        ['seg_00030f.csv']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabquakeError(f"{folder}: no such folder; give the folder of {SEGMENT_GLOB} "
                            "segment files (LANL's test/)")
    files = sorted(path for path in folder.glob(SEGMENT_GLOB) if path.is_file())
    if required and not files:
        raise LabquakeError(f"{folder} holds no {SEGMENT_GLOB} files; give the folder of "
                            "test segments (LANL's test/, or `labquake simulate --segments`)")
    return files


def read_segment(path: str | os.PathLike, window: int) -> np.ndarray:
    """The last ``window`` samples of a segment file (int16).

    The answer for a segment is the time to failure after its last sample, so a model
    with a shorter window reads the segment's end.

    Raises:
        LabquakeError: the file is malformed or shorter than ``window``.

    Example:
        >>> read_segment("test/seg_00030f.csv", 150_000).shape  # doctest: +SKIP
        (150000,)
    """
    samples = records.read_record(path).acoustic_data
    if len(samples) < window:
        raise LabquakeError(f"{path} holds {len(samples):,} samples, fewer than the model's "
                            f"window of {window:,}; give segments of at least that length")
    return samples[len(samples) - window:]


def segment_features(files: Sequence[Path], *, window: int, feature_names: Sequence[str],
                     workers: int = 1, batch_segments: int = DEFAULT_BATCH_SEGMENTS,
                     progress: bool = True) -> np.ndarray:
    """Features of the last ``window`` samples of each segment file, in file order.

    Files are read and their features extracted in batches of ``batch_segments`` by
    ``workers`` processes (:mod:`model.data.parallel`). The denoising noise of every segment
    is seeded with first sample 0: a segment's place on the instrument counter is unknown.

    Args:
        files: segment files.
        window: samples per window (the model's).
        feature_names: the features, in column order.
        workers: processes.
        batch_segments: most segments per job and per feature-extraction call.
        progress: show a progress bar on stderr.

    Returns:
        float32 (n_files, n_features).

    Example:
        >>> segment_features(segment_files("test"), window=150_000,
        ...                  feature_names=FEATURE_NAMES).shape  # doctest: +SKIP
        (2624, 33)
    """
    # Few files are still shared among the workers.
    batch = max(1, min(batch_segments, math.ceil(len(files) / workers)))
    jobs = [(tuple(str(path) for path in files[low:low + batch]), window,
             tuple(feature_names)) for low in range(0, len(files), batch)]
    results = parallel.run_jobs(_batch_features, jobs, workers=workers,
                                units=lambda job: len(job[0]), progress=progress,
                                description="segments", unit="segment")
    return np.concatenate(results) if results else np.zeros((0, len(feature_names)),
                                                            np.float32)


def _batch_features(job: tuple[tuple[str, ...], int, tuple[str, ...]]) -> np.ndarray:
    """One job of :func:`segment_features`; module-level so that it can be pickled."""
    from model.features import extract as features

    paths, window, names = job
    windows = np.stack([read_segment(path, window) for path in paths])
    return features.extract(windows, names=names).astype(np.float32)


def read_truth(path: str | os.PathLike) -> dict[str, float]:
    """A ``seg_id,time_to_failure`` file (a truth file or a submission) as a dict.

    Raises:
        LabquakeError: missing file, wrong header, or a malformed line.

    Example:
        >>> read_truth("test/truth.csv")["seg_00030f"]  # doctest: +SKIP
        4.2
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LabquakeError(f"{path}: cannot read ({error}); check the path") from None
    if not lines or lines[0].strip().lstrip("\ufeff") != SUBMISSION_HEADER:
        raise LabquakeError(f"{path} line 1: expected the header '{SUBMISSION_HEADER}'")
    answers = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            segment_id, value = fields[0].strip(), float(fields[1])
        except (IndexError, ValueError):
            raise LabquakeError(f"{path} line {number}: expected 'seg_id,seconds', got "
                                f"{line[:60]!r}") from None
        if len(fields) != 2 or not math.isfinite(value):
            raise LabquakeError(f"{path} line {number}: expected 'seg_id,seconds', got "
                                f"{line[:60]!r}")
        answers[segment_id] = value
    return answers


def write_submission(path: str | os.PathLike, answers: dict[str, float]) -> Path:
    """Write ``seg_id,time_to_failure`` lines sorted by id, atomically.

    Example:
        >>> write_submission("submission.csv", {"seg_00030f": 4.2})  # doctest: +SKIP
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise LabquakeError(f"{path}: folder {path.parent} does not exist; create it first")
    lines = [SUBMISSION_HEADER] + [f"{segment_id},{value:.{ANSWER_DIGITS}g}"
                                   for segment_id, value in sorted(answers.items())]
    temporary = path.parent / f".{path.name}.part"
    try:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise LabquakeError(f"{path}: cannot write ({error.strerror or error}); check the "
                            "folder's permissions and free space") from None
    return path


def segment_ids(files: Sequence[Path]) -> list[str]:
    """The segment ids of segment files: their names without ``.csv``.

    Example:
        >>> segment_ids([Path("test/seg_00030f.csv")])
        ['seg_00030f']
    """
    return [path.stem for path in files]
