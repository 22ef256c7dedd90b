"""Windows and training targets of a labelled record, cut exactly as the monitor cuts them.

A record (a LANL CSV, a ``.csv`` inside a ``.zip``, an ``.npz``, or the simulator's output)
is streamed block by block through :class:`stream.core.windows.WindowAccumulator`, the class the
monitor uses, so a training window is the window the monitor would see at the same place
on the sample counter. Features are extracted in batches of ``batch_windows`` windows and
only features and targets are kept: memory stays bounded whatever the record's size (a
150,000-sample window costs 33 floats, not 300 kB). A record converted to the record cache
(:mod:`model.data.record_cache`, LANL's ``train.csv`` at full size) is instead cut straight
from its raw samples, with features from the resumable :mod:`model.data.feature_cache`
computed by worker processes; the windows and targets are the same.

Failures are read off the ``time_to_failure`` column: a failure is the sample where the
label jumps UP by more than ``FAILURE_JUMP_S`` from the sample before it (the label counts
down through a cycle and restarts at the next cycle's length). Per window, with ``e`` its
last sample:

- ``ttf_s``: the label at ``e`` (the LANL competition's target);
- ``tsf_s``: ``(e - F) / sample_rate`` for the last failure ``F <= e``; NaN before the
  record's first failure, where it is unknown;
- ``failure_soon``: ``ttf_s < model.network.FAILURE_HORIZON_S`` (the classifier's target);
- ``cycle``: how many failures lie at or before the window's first sample (cycle 0 is the
  part of the record before its first failure); ``spans_failure``: a failure lies inside
  the window (after its first sample), so the window belongs to two cycles.

Example:
    >>> from model import dataset
    >>> windows = dataset.simulated_windows(30.0, seed=1, sample_rate=1e5, window=15_000,
    ...                                     progress=False)
    >>> len(windows) == len(windows.ttf_s) == windows.features.shape[0]
    True
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.data.label_pace import FAILURE_JUMP_S
from model.features import extract as feature_extraction
from model.network import FAILURE_HORIZON_S
from stream.core.errors import LabquakeError
from stream.core.windows import WINDOW_SAMPLES, Window, WindowAccumulator
from stream.core.wire import MAX_SAMPLES, Chunk

if TYPE_CHECKING:
    from model.data.record_cache import RecordCache
    from model.features.context import ContextConfig

DEFAULT_WINDOW = WINDOW_SAMPLES
DEFAULT_BATCH_WINDOWS = 64
# Labels scanned at a time for failures in a cached record (64 MiB of float32).
_LABEL_SCAN_SAMPLES = 1 << 24
# The stream name the accumulator sees; a record is one stream.
_INSTRUMENT = "record"
_CHANNEL = "ae"

_PER_WINDOW = frozenset({"first_sample", "end_time_s", "features", "ttf_s", "tsf_s",
                         "failure_soon", "cycle", "spans_failure"})

# A pair (acoustic_data int16, time_to_failure float64 or None) of consecutive samples.
LabelledBlock = tuple[np.ndarray, np.ndarray | None]


@dataclasses.dataclass(frozen=True)
class RecordWindows:
    """Features and targets of every window of one record, in window order.

    Attributes:
        name: where the record came from (a path, or a description of the simulation).
        sample_rate: samples per second.
        window: samples per window.
        hop: samples between window starts.
        n_samples: samples in the record.
        failure_samples: int64 indices of the failures found in the record, ascending.
        feature_names: the columns of ``features``.
        first_sample: int64 (n,), each window's first sample.
        end_time_s: float64 (n,), instrument time of each window's last sample.
        features: float32 (n, n_features), as ``model.features.extract.extract`` gives them.
        ttf_s: float64 (n,), time to failure at each window's last sample.
        tsf_s: float64 (n,), time since the last failure at that sample; NaN if unknown.
        failure_soon: bool (n,), ``ttf_s < FAILURE_HORIZON_S``.
        cycle: int64 (n,), failures at or before each window's first sample.
        spans_failure: bool (n,), a failure lies in ``(first_sample, last_sample]``.
    """

    name: str
    sample_rate: float
    window: int
    hop: int
    n_samples: int
    failure_samples: np.ndarray
    feature_names: tuple[str, ...]
    first_sample: np.ndarray
    end_time_s: np.ndarray
    features: np.ndarray
    ttf_s: np.ndarray
    tsf_s: np.ndarray
    failure_soon: np.ndarray
    cycle: np.ndarray
    spans_failure: np.ndarray

    def __len__(self) -> int:
        return len(self.first_sample)

    @property
    def last_sample(self) -> np.ndarray:
        """int64 (n,), each window's last sample (the alert's ``window_end_sample``)."""
        return self.first_sample + (self.window - 1)

    @property
    def last_cycle(self) -> np.ndarray:
        """int64 (n,), the cycle of each window's last sample."""
        return self.cycle + self.spans_failure

    @property
    def failure_times_s(self) -> np.ndarray:
        """float64, instrument time of each failure, seconds."""
        return self.failure_samples / self.sample_rate

    @property
    def n_cycles(self) -> int:
        """Cycles the record touches: one more than its failures."""
        return len(self.failure_samples) + 1

    def select(self, index: np.ndarray | slice) -> RecordWindows:
        """Some of the windows, with the record's header and failures.

        Args:
            index: a bool mask of shape (n,), ascending integer indices, or a slice.

        Returns:
            A :class:`RecordWindows` of the selected windows, in order.

        Example:
            >>> late = windows.select(windows.cycle > 0)  # doctest: +SKIP
        """
        return dataclasses.replace(self, **{name: getattr(self, name)[index]
                                            for name in _PER_WINDOW})

    def with_features(self, names: Sequence[str]) -> RecordWindows:
        """The same windows with only some feature columns, in the order given.

        Args:
            names: a subset of :attr:`feature_names`.

        Returns:
            A :class:`RecordWindows` whose ``features`` has those columns.

        Example:
            >>> windows.with_features(["num_peaks_2"]).features.shape[1]  # doctest: +SKIP
            1
        """
        columns = [self.feature_names.index(name) for name in names]
        return dataclasses.replace(self, feature_names=tuple(names),
                                   features=self.features[:, columns])


def add_context(windows: RecordWindows, config: ContextConfig,
                restarts: Sequence[int] = ()) -> RecordWindows:
    """The windows with their stream-context features (``model.features.context``) appended.

    The context runs over the windows in order, as a stream's would, starting afresh
    wherever a window does not follow the previous one by one hop (a gap, or windows left
    out by a selection) and at each of ``restarts``. Call it on a whole record, before
    splitting.

    Args:
        windows: the record's windows; their features must include ``config.bases``.
        config: the context definitions.
        restarts: indices of windows where a monitor would start afresh (as if it began
            listening there).

    Returns:
        A :class:`RecordWindows` whose ``feature_names`` end with ``config.names``.

    Raises:
        LabquakeError: a base feature is missing.
    """
    from model.features.context import context_features

    missing = [base for base in config.bases if base not in windows.feature_names]
    if missing:
        raise LabquakeError(f"the context needs features {missing}, which {windows.name} "
                            "was not read with; read it with them")
    bases = windows.with_features(config.bases).features
    breaks = np.flatnonzero(np.diff(windows.first_sample) != windows.hop) + 1
    rows = context_features(config, bases, windows.sample_rate / windows.hop,
                            run_starts=[0, *breaks.tolist(), *restarts])
    return dataclasses.replace(
        windows, feature_names=(*windows.feature_names, *config.names),
        features=np.concatenate([windows.features, rows], axis=1))


def file_windows(path: str | os.PathLike, *, window: int = DEFAULT_WINDOW,
                 hop: int | None = None, sample_rate: float | None = None,
                 feature_names: Sequence[str] = feature_extraction.FEATURE_NAMES,
                 batch_windows: int = DEFAULT_BATCH_WINDOWS,
                 progress: bool = True, use_cache: bool = True,
                 cache_root: str | os.PathLike | None = None, convert_any_size: bool = False,
                 feature_cache: str | os.PathLike | None = None,
                 workers: int = 1) -> RecordWindows:
    """Windows, features and targets of a labelled record file.

    A file with a record cache (:mod:`model.data.record_cache`), or big enough to be given
    one now, is read through it, with its features kept in the resumable feature cache
    (:mod:`model.data.feature_cache`) and computed by ``workers`` processes; the result is the
    same as streaming the file, its labels rounded to float32. Other files are streamed.

    Args:
        path: a LANL ``.csv``, a ``.zip`` holding one, or an ``.npz``.
        window: samples per window.
        hop: samples between window starts (default ``window``).
        sample_rate: the rate of a CSV (default LANL's 4 MHz); an ``.npz`` carries its own.
        feature_names: the features to compute, in column order.
        batch_windows: windows per feature-extraction call.
        progress: show progress bars on stderr.
        use_cache: ``False`` streams the file, whatever caches exist.
        cache_root: the record cache's root (default ``record_cache.default_root()``).
        convert_any_size: convert the file to the record cache whatever its size.
        feature_cache: where feature caches live (default inside the record cache).
        workers: processes computing features of a cached record.

    Returns:
        The record's :class:`RecordWindows`.

    Raises:
        LabquakeError: the file is missing, malformed or unlabelled, or shorter than a window.

    Example:
        >>> windows = file_windows("train.csv", window=150_000)  # doctest: +SKIP
    """
    from model.data import record_cache, records

    if use_cache:
        check_window(window, window if hop is None else hop)
        cached = record_cache.open_record(path, cache_root, convert_any_size=convert_any_size,
                                          sample_rate=sample_rate, progress=progress)
        if cached is not None:
            return cached_windows(cached, window=window, hop=hop, sample_rate=sample_rate,
                                  feature_names=feature_names, batch_windows=batch_windows,
                                  feature_cache=feature_cache, workers=workers,
                                  progress=progress)
    blocks = records.read_blocks(path, sample_rate=sample_rate)
    first = next(blocks, None)
    if first is None:
        raise LabquakeError(f"{path} holds no samples; give a labelled record")
    pairs = _prepend((first.acoustic_data, first.time_to_failure),
                     ((block.acoustic_data, block.time_to_failure) for block in blocks))
    return record_windows(pairs, first.sample_rate, name=str(path), window=window, hop=hop,
                          feature_names=feature_names, batch_windows=batch_windows,
                          progress=progress)


def simulated_windows(seconds: float, *, seed: int = 0, sample_rate: float | None = None,
                      window: int = DEFAULT_WINDOW, hop: int | None = None,
                      feature_names: Sequence[str] = feature_extraction.FEATURE_NAMES,
                      batch_windows: int = DEFAULT_BATCH_WINDOWS,
                      progress: bool = True) -> RecordWindows:
    """Windows, features and targets of a simulated record, streamed from the simulator.

    No file is written: a multi-minute record at 4 MHz would take gigabytes.

    Args:
        seconds: record length.
        seed: the simulator's seed.
        sample_rate: samples per second (default the simulator's, 4 MHz).
        window: samples per window.
        hop: samples between window starts (default ``window``).
        feature_names: the features to compute, in column order.
        batch_windows: windows per feature-extraction call.
        progress: show a progress bar on stderr.

    Returns:
        The record's :class:`RecordWindows`; its failures are found from the labels, as
        for a file.

    Example:
        >>> simulated_windows(60.0, seed=3, sample_rate=1e5, window=15_000,
        ...                   progress=False).n_cycles > 1
        True
    """
    from model.data import simulate

    rate = simulate.DEFAULT_SAMPLE_RATE if sample_rate is None else float(sample_rate)
    if not math.isfinite(seconds):
        raise LabquakeError(f"simulated record length {seconds} s is not finite; give e.g. 600")
    blocks = simulate.simulate_blocks(seconds, sample_rate=rate, seed=seed)
    return record_windows(blocks, rate, name=f"simulated {seconds:g} s, seed {seed}",
                          window=window, hop=hop, feature_names=feature_names,
                          batch_windows=batch_windows, progress=progress,
                          total_samples=simulate.record_samples(seconds, rate))


def cached_windows(record: RecordCache, *, window: int = DEFAULT_WINDOW,
                   hop: int | None = None, sample_rate: float | None = None,
                   feature_names: Sequence[str] = feature_extraction.FEATURE_NAMES,
                   batch_windows: int = DEFAULT_BATCH_WINDOWS,
                   feature_cache: str | os.PathLike | None = None, workers: int = 1,
                   progress: bool = True) -> RecordWindows:
    """Windows, features and targets of a converted record, read at random from its cache.

    Window ``i`` starts at sample ``i * hop``, as the monitor's accumulator cuts a
    contiguous stream; features come from :func:`model.data.feature_cache.record_features`;
    failures and targets are found from the labels as :func:`record_windows` finds them.
    The result equals :func:`record_windows` over the same samples and labels.

    Args:
        record: the record cache.
        window: samples per window.
        hop: samples between window starts (default ``window``).
        sample_rate: the rate of a CSV (default LANL's 4 MHz); an ``.npz`` carries its own.
        feature_names: the features to compute, in column order.
        batch_windows: windows per feature-extraction call.
        feature_cache: where feature caches live (default inside the record cache).
        workers: processes computing missing features.
        progress: show a progress bar on stderr.

    Returns:
        The record's :class:`RecordWindows`.

    Raises:
        LabquakeError: an unlabelled record, or one shorter than a window.

    Example:
        >>> windows = cached_windows(record_cache.open_record("train.csv"),
        ...                          hop=15_000)  # doctest: +SKIP
    """
    from model.data import feature_cache as features_on_disk
    from model.data import label_pace, records

    hop = window if hop is None else hop
    check_window(window, hop)
    rate = record.sample_rate(sample_rate)
    label_pace.check_labels(record.read_labels(0, label_pace.EVIDENCE_SAMPLES), rate,
                            records.rate_origin(record.source, sample_rate), record.source)
    name = str(record.source)
    total = features_on_disk.window_count(record.n_samples, window, hop)
    if total == 0:
        raise _too_short(name, record.n_samples, window)
    failures = np.concatenate([
        label_failures(record.read_labels(start, start + _LABEL_SCAN_SAMPLES),
                       None if start == 0 else float(record.read_labels(start - 1, start)[0]))
        + start for start in range(0, record.n_samples, _LABEL_SCAN_SAMPLES)])
    features = features_on_disk.record_features(
        record, window=window, hop=hop, feature_names=feature_names, directory=feature_cache,
        workers=workers, batch_windows=batch_windows, progress=progress)
    first = hop * np.arange(total, dtype=np.int64)
    last = first + (window - 1)
    # The accumulator times a window by the chunk that carried its last sample; records
    # are fed to it in chunks of MAX_SAMPLES from sample 0.
    chunk_first = last - last % MAX_SAMPLES
    end_time = chunk_first / rate + (last - chunk_first) / rate
    return _record_windows(name, rate, window, hop, record.n_samples, failures,
                           tuple(feature_names), first, end_time, features,
                           record.labels_at(last))


def record_windows(blocks: Iterable[LabelledBlock], sample_rate: float, *, name: str,
                   window: int = DEFAULT_WINDOW, hop: int | None = None,
                   feature_names: Sequence[str] = feature_extraction.FEATURE_NAMES,
                   batch_windows: int = DEFAULT_BATCH_WINDOWS, progress: bool = True,
                   total_samples: int | None = None) -> RecordWindows:
    """Windows, features and targets of a record given as consecutive labelled blocks.

    Args:
        blocks: ``(acoustic_data int16, time_to_failure float64)`` pairs of consecutive
            samples from the record's sample 0; blocks of any length.
        sample_rate: samples per second.
        name: where the record came from, for messages.
        window: samples per window.
        hop: samples between window starts (default ``window``).
        feature_names: the features to compute, in column order.
        batch_windows: windows per feature-extraction call.
        progress: show a progress bar on stderr.
        total_samples: the record's length if known (for the progress bar).

    Returns:
        The record's :class:`RecordWindows`.

    Raises:
        LabquakeError: bad window or hop, an unlabelled block, or no complete window.

    Example:
        >>> acoustic = np.zeros(20_000, np.int16)
        >>> ttf = np.linspace(2.0, 0.1, 20_000)
        >>> windows = record_windows([(acoustic, ttf)], 1e4, name="ramp", window=5_000,
        ...                          progress=False)
        >>> windows.first_sample.tolist(), windows.tsf_s.tolist()
        ([0, 5000, 10000, 15000], [nan, nan, nan, nan])
    """
    from tqdm import tqdm

    hop = window if hop is None else hop
    check_window(window, hop)
    builder = _Builder(sample_rate, window, hop, tuple(feature_names), batch_windows)
    with tqdm(total=total_samples, unit="sample", unit_scale=True, file=sys.stderr,
              desc=Path(name).name, disable=not progress, leave=False) as bar:
        for acoustic, ttf in blocks:
            if ttf is None:
                raise LabquakeError(f"{name} has no time_to_failure labels; training and "
                                    "evaluation need a labelled record "
                                    "(acoustic_data,time_to_failure)")
            builder.add(np.asarray(acoustic), np.asarray(ttf, dtype=np.float64))
            bar.update(len(acoustic))
    return builder.finish(name)


def check_window(window: int, hop: int) -> None:
    """Refuse a window the features cannot use or a hop that is not a positive step.

    Args:
        window: samples per window.
        hop: samples between window starts.

    Raises:
        LabquakeError: ``window`` below ``model.features.extract.MIN_WINDOW_LEN`` or ``hop < 1``.

    Example:
        >>> check_window(15_000, 15_000)
    """
    if isinstance(hop, bool) or not isinstance(hop, int) or hop < 1:
        raise LabquakeError(f"hop {hop!r} is not a positive whole number of samples; "
                            f"give --hop N >= 1 (default: the window length)")
    if isinstance(window, bool) or not isinstance(window, int) or (
            window < feature_extraction.MIN_WINDOW_LEN):
        raise LabquakeError(f"window {window!r} is too short for the features; give --window "
                            f">= {feature_extraction.MIN_WINDOW_LEN} (default {DEFAULT_WINDOW})")


def label_failures(ttf: np.ndarray, previous: float | None = None) -> np.ndarray:
    """Indices in ``ttf`` where a failure happens: the label rises by over FAILURE_JUMP_S.

    Args:
        ttf: consecutive labels.
        previous: the label just before ``ttf[0]`` (``None`` at the record's start).

    Returns:
        int64 indices into ``ttf``, ascending.

    Example:
        >>> label_failures(np.array([0.2, 0.1, 9.0, 8.9]), previous=0.3).tolist()
        [2]
    """
    if len(ttf) == 0:
        return np.zeros(0, np.int64)
    rises = np.diff(ttf, prepend=ttf[0] if previous is None else previous) > FAILURE_JUMP_S
    return np.flatnonzero(rises).astype(np.int64)


class _Builder:
    """Accumulates windows, their features and targets, block after block."""

    def __init__(self, sample_rate: float, window: int, hop: int,
                 feature_names: tuple[str, ...], batch_windows: int) -> None:
        if not (math.isfinite(sample_rate) and sample_rate > 0):
            raise LabquakeError(f"sample rate {sample_rate} is not a positive number of Hz")
        self.sample_rate = float(sample_rate)
        self.window = window
        self.hop = hop
        self.feature_names = feature_names
        self.batch_windows = max(1, int(batch_windows))
        self.accumulator = WindowAccumulator(window, hop)
        self.position = 0
        self.previous_label: float | None = None
        self.failures: list[int] = []
        self.pending: list[Window] = []
        self.feature_batches: list[np.ndarray] = []
        self.columns: dict[str, list] = {key: [] for key in (
            "first_sample", "end_time_s", "ttf_s")}

    def add(self, acoustic: np.ndarray, ttf: np.ndarray) -> None:
        if acoustic.shape != ttf.shape or acoustic.ndim != 1:
            raise LabquakeError(f"acoustic_data {acoustic.shape} and time_to_failure "
                                f"{ttf.shape} must be 1-D of the same length")
        self.failures.extend((label_failures(ttf, self.previous_label)
                              + self.position).tolist())
        if len(ttf):
            self.previous_label = float(ttf[-1])
        for offset in range(0, len(acoustic), MAX_SAMPLES):
            first = self.position + offset
            piece = acoustic[offset:offset + MAX_SAMPLES]
            chunk = Chunk(_INSTRUMENT, _CHANNEL, first, self.sample_rate,
                          first / self.sample_rate, piece)
            for event in self.accumulator.add(chunk):
                # One record is one contiguous stream: its only events are windows.
                self._add_window(event, ttf[event.last_sample - self.position])
        self.position += len(acoustic)

    def _add_window(self, window: Window, ttf_at_end: float) -> None:
        columns = self.columns
        columns["first_sample"].append(window.first_sample)
        columns["end_time_s"].append(window.end_time)
        columns["ttf_s"].append(float(ttf_at_end))
        self.pending.append(window)
        if len(self.pending) >= self.batch_windows:
            self._extract()

    def _extract(self) -> None:
        if not self.pending:
            return
        windows = np.stack([window.samples for window in self.pending])
        starts = np.array([window.first_sample for window in self.pending], np.int64)
        self.feature_batches.append(
            feature_extraction.extract(windows, starts, names=self.feature_names))
        self.pending = []

    def finish(self, name: str) -> RecordWindows:
        self._extract()
        if not self.columns["first_sample"]:
            raise _too_short(name, self.position, self.window)
        columns = self.columns
        return _record_windows(
            name, self.sample_rate, self.window, self.hop, self.position,
            np.asarray(self.failures, np.int64), self.feature_names,
            np.asarray(columns["first_sample"], np.int64),
            np.asarray(columns["end_time_s"], np.float64),
            np.concatenate(self.feature_batches), np.asarray(columns["ttf_s"], np.float64))


def _record_windows(name: str, sample_rate: float, window: int, hop: int, n_samples: int,
                    failures: np.ndarray, feature_names: tuple[str, ...],
                    first_sample: np.ndarray, end_time_s: np.ndarray, features: np.ndarray,
                    ttf_s: np.ndarray) -> RecordWindows:
    """Assemble :class:`RecordWindows`, deriving cycles and time since failure."""
    last = first_sample + (window - 1)
    cycle = np.searchsorted(failures, first_sample, side="right").astype(np.int64)
    last_cycle = np.searchsorted(failures, last, side="right")
    since = last - failures[np.maximum(last_cycle - 1, 0)] if len(failures) else last
    tsf = np.where(last_cycle > 0, since / sample_rate, math.nan)
    return RecordWindows(
        name=name, sample_rate=sample_rate, window=window, hop=hop, n_samples=n_samples,
        failure_samples=failures, feature_names=feature_names, first_sample=first_sample,
        end_time_s=end_time_s, features=features, ttf_s=ttf_s, tsf_s=tsf,
        failure_soon=ttf_s < FAILURE_HORIZON_S, cycle=cycle,
        spans_failure=last_cycle > cycle)


def _too_short(name: str, n_samples: int, window: int) -> LabquakeError:
    return LabquakeError(f"{name} holds {n_samples:,} samples, fewer than one window of "
                         f"{window:,}; give a longer record or a shorter --window")


def _prepend(first: LabelledBlock, rest: Iterator[LabelledBlock]) -> Iterator[LabelledBlock]:
    yield first
    yield from rest

