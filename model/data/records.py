"""Acoustic records on disk: LANL CSV (plain or inside a .zip) and compact NumPy .npz.

Formats (DESIGN.md, "Files"):

- **LANL CSV**: header ``acoustic_data,time_to_failure``, one sample a line, e.g.
  ``12,1.4690999832``. A file with the header ``acoustic_data`` alone (like LANL's test
  segments) holds unlabelled samples. CSV carries no sample rate: LANL's 4 MHz is assumed
  unless the caller gives one. A ``.zip`` holding exactly one ``.csv`` is read the same way.
- **.npz**: arrays ``acoustic_data`` (int16), ``time_to_failure`` (float64; absent for
  unlabelled records) and scalar ``sample_rate``. Written deflated (level 1): about 0.7
  bytes a sample for simulated AE, and LANL's bin-constant labels shrink to a few percent,
  so float64 labels cost little and a CSV -> .npz -> CSV round trip is exact.

Memory: reading is in blocks of ``block_samples`` whatever the file size. CSV is parsed a
few megabytes at a time, by Arrow's CSV reader on all cores (a chunk it refuses goes to
NumPy, which names the bad line); an .npz is read member by member straight from the zip
stream (stored or deflated alike), so a huge .npz is never loaded whole. ``np.load`` with
``mmap_mode`` cannot map arrays inside a zip, so it is not used. Writing streams the
blocks; an .npz first spills them to unnamed temporary files beside the output (its
header needs the final length). Either format is built under a temporary name and renamed
into place when complete: no half-written output is ever left under the real name.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_record(folder / "r.csv", [(np.array([1, -2], np.int16), np.array([0.5, 0.25]))])
    2
    >>> [block.acoustic_data.tolist() for block in read_blocks(folder / "r.csv")]
    [[1, -2]]
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import os
import secrets
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from model.data import label_pace
from stream.core.errors import LabquakeError

LANL_SAMPLE_RATE = 4e6
DEFAULT_BLOCK_SAMPLES = 1 << 20
LABELLED_HEADER = "acoustic_data,time_to_failure"
UNLABELLED_HEADER = "acoustic_data"
ACOUSTIC_MEMBER = "acoustic_data.npy"
TTF_MEMBER = "time_to_failure.npy"
SAMPLE_RATE_MEMBER = "sample_rate.npy"
READABLE_SUFFIXES = (".csv", ".zip", ".npz")
WRITABLE_SUFFIXES = (".csv", ".npz")
# Bytes of CSV text parsed at a time, and Arrow's block within it (blocks are parsed in
# parallel): measured on LANL-format text, larger chunks gain nothing.
_CSV_CHUNK_BYTES = 8 << 20
_ARROW_BLOCK_BYTES = 1 << 20
# A header longer than this is not a LANL header (and reading it must stay bounded).
_MAX_HEADER_BYTES = 4096
# Bytes copied at a time when assembling a .npz from its spill files.
_COPY_BYTES = 16 << 20
_NPZ_COMPRESS_LEVEL = 1
# Below this mean number of lines per label, CSV lines are formatted one by one.
_MIN_MEAN_RUN = 16
_INT16_MIN, _INT16_MAX = -(1 << 15), (1 << 15) - 1


@dataclasses.dataclass(frozen=True)
class Block:
    """Consecutive samples of one record.

    Attributes:
        acoustic_data: int16 samples.
        time_to_failure: float64 seconds to the next failure for each sample, or ``None``
            when the record is unlabelled.
        first_sample: index of the first sample in the record (the record starts at 0).
        sample_rate: samples per second.
    """

    acoustic_data: np.ndarray
    time_to_failure: np.ndarray | None
    first_sample: int
    sample_rate: float


# --- reading -------------------------------------------------------------------------


def read_blocks(path: str | os.PathLike, block_samples: int = DEFAULT_BLOCK_SAMPLES,
                sample_rate: float | None = None) -> Iterator[Block]:
    """Read a record file in blocks of ``block_samples`` (the last may be shorter).

    The path and format are checked at once; a problem inside the file is raised when
    the iteration reaches it. This parses the file itself;
    :func:`model.data.record_cache.read_blocks` reads it from its record cache when one
    exists.

    Args:
        path: a ``.csv``, a ``.zip`` holding one ``.csv``, or an ``.npz``.
        block_samples: samples per block.
        sample_rate: the rate of a CSV (default LANL's 4 MHz); for an .npz, the file's own
            rate is used and a different value here is an error.

    Returns:
        An iterator of :class:`Block`.

    Raises:
        LabquakeError: missing, empty, unknown-format or malformed file, with the file
            and (for CSV) the line number; labels whose pace contradicts the rate
            (:mod:`model.data.label_pace`), naming the rate they imply.

    Example:
        >>> blocks = read_blocks("train.csv", block_samples=150_000)  # doctest: +SKIP
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE_SUFFIXES:
        raise LabquakeError(f"{path}: unknown record format {path.suffix!r}; "
                            f"give a {', '.join(READABLE_SUFFIXES)} file")
    if not path.is_file():
        raise LabquakeError(f"{path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise LabquakeError(f"{path} is empty; expected a record with header "
                            f"'{LABELLED_HEADER}' or an .npz of acoustic_data")
    if not (isinstance(block_samples, int | np.integer) and block_samples >= 1):
        raise LabquakeError(f"block size {block_samples!r} is not a positive whole number")
    if sample_rate is not None and not (math.isfinite(sample_rate) and sample_rate > 0):
        raise LabquakeError(f"sample rate {sample_rate} is not a positive number of Hz")
    if suffix == ".npz":
        blocks = _rebatch(_npz_pieces(path, sample_rate), int(block_samples))
    else:
        rate = LANL_SAMPLE_RATE if sample_rate is None else float(sample_rate)
        blocks = _rebatch(_csv_file_pieces(path, rate), int(block_samples))
    return label_pace.checked_blocks(blocks, rate_origin(path, sample_rate), path)


def read_record(path: str | os.PathLike, sample_rate: float | None = None) -> Block:
    """A whole record as one :class:`Block` (for files that fit in memory).

    Example:
        >>> block = read_record("segment.csv")  # doctest: +SKIP
    """
    blocks = list(read_blocks(path, DEFAULT_BLOCK_SAMPLES, sample_rate))
    labelled = blocks[0].time_to_failure is not None
    return Block(
        acoustic_data=np.concatenate([block.acoustic_data for block in blocks]),
        time_to_failure=(np.concatenate([block.time_to_failure for block in blocks])
                         if labelled else None),
        first_sample=0, sample_rate=blocks[0].sample_rate)


# A piece: (acoustic_data, time_to_failure or None, sample_rate), of any length.
_Piece = tuple[np.ndarray, np.ndarray | None, float]


def _rebatch(pieces: Iterator[_Piece], block_samples: int) -> Iterator[Block]:
    """Cut pieces of any length into blocks of exactly ``block_samples``."""
    pending: list[_Piece] = []
    pending_samples = 0
    emitted = 0
    for piece in pieces:
        pending.append(piece)
        pending_samples += len(piece[0])
        while pending_samples >= block_samples:
            acoustic, ttf, rate = _join(pending)
            yield Block(acoustic[:block_samples], None if ttf is None else ttf[:block_samples],
                        emitted, rate)
            emitted += block_samples
            pending = [(acoustic[block_samples:],
                        None if ttf is None else ttf[block_samples:], rate)]
            pending_samples -= block_samples
    if pending_samples:
        acoustic, ttf, rate = _join(pending)
        yield Block(acoustic, ttf, emitted, rate)


def _join(pieces: list[_Piece]) -> _Piece:
    if len(pieces) == 1:
        return pieces[0]
    ttf = None if pieces[0][1] is None else np.concatenate([piece[1] for piece in pieces])
    return np.concatenate([piece[0] for piece in pieces]), ttf, pieces[0][2]


def _csv_file_pieces(path: Path, sample_rate: float) -> Iterator[_Piece]:
    if path.suffix.lower() == ".zip":
        with _open_zip(path) as archive:
            members = [info for info in archive.infolist()
                       if info.filename.lower().endswith(".csv") and not info.is_dir()
                       and not info.filename.startswith("__MACOSX/")]
            if len(members) != 1:
                names = ", ".join(info.filename for info in members) or "none"
                raise LabquakeError(f"{path}: expected exactly one .csv inside the zip, found "
                                    f"{names}; zip a single LANL CSV")
            name = f"{path}:{members[0].filename}"
            with _read_errors(path), archive.open(members[0]) as stream:
                yield from _csv_pieces(stream, name, sample_rate)
    else:
        with _read_errors(path), path.open("rb") as stream:
            yield from _csv_pieces(stream, str(path), sample_rate)


def _csv_pieces(stream: IO[bytes], name: str, sample_rate: float) -> Iterator[_Piece]:
    """Parse CSV text a chunk at a time; ``name`` is how errors refer to the file."""
    header_line = stream.readline(_MAX_HEADER_BYTES)
    header = header_line.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not header_line.strip():
        raise LabquakeError(f"{name} line 1: no header; expected '{LABELLED_HEADER}' "
                            f"(or '{UNLABELLED_HEADER}' for unlabelled samples)")
    if header not in (LABELLED_HEADER, UNLABELLED_HEADER):
        shown = header if len(header) <= 60 else header[:60] + "..."
        raise LabquakeError(f"{name} line 1: header is {shown!r}, expected "
                            f"'{LABELLED_HEADER}' (or '{UNLABELLED_HEADER}'); "
                            "is this a LANL-format file?")
    columns = 2 if header == LABELLED_HEADER else 1
    line_number = 2
    carry = b""
    samples = 0
    while chunk := stream.read(_CSV_CHUNK_BYTES):
        text = carry + chunk
        cut = text.rfind(b"\n") + 1
        if cut == 0 and len(text) > _CSV_CHUNK_BYTES:
            raise LabquakeError(f"{name} line {line_number}: a line of more than "
                                f"{_CSV_CHUNK_BYTES} bytes; this is not a LANL CSV")
        body, carry = text[:cut], text[cut:]
        if body:
            acoustic, ttf = _parse_csv(body, columns, name, line_number)
            samples += len(acoustic)
            line_number += body.count(b"\n")
            yield acoustic, ttf, sample_rate
    if carry.strip():
        acoustic, ttf = _parse_csv(carry + b"\n", columns, name, line_number)
        samples += len(acoustic)
        yield acoustic, ttf, sample_rate
    if samples == 0:
        raise LabquakeError(f"{name} has a header but no samples; is the file truncated?")


def _parse_csv(body: bytes, columns: int, name: str,
               first_line: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse whole lines with Arrow's multi-threaded reader; what it refuses goes to NumPy's
    reader, which accepts what the format allows and otherwise names the first bad line."""
    parsed = _parse_csv_arrow(body, columns)
    if parsed is not None:
        return parsed
    body = body.replace(b"\r", b"")
    try:
        values = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2,
                            comments=None, encoding="utf-8")
    except ValueError:
        values = None
    if values is not None and values.shape[1] == columns:
        acoustic = values[:, 0]
        good = ((acoustic >= _INT16_MIN) & (acoustic <= _INT16_MAX)
                & (acoustic == np.rint(acoustic))).all()
        if good and (columns == 1 or np.isfinite(values[:, 1]).all()):
            return acoustic.astype(np.int16), values[:, 1].copy() if columns == 2 else None
    _raise_first_bad_line(body, columns, name, first_line)
    raise AssertionError("unreachable: _raise_first_bad_line always raises")


@functools.cache
def _arrow_csv_options(columns: int) -> tuple[object, object]:
    """Arrow read and convert options for ``columns`` LANL columns (built once)."""
    import pyarrow as pa
    import pyarrow.csv as arrow_csv

    names = (UNLABELLED_HEADER, "time_to_failure")[:columns]
    types = {UNLABELLED_HEADER: pa.int16(), "time_to_failure": pa.float64()}
    read = arrow_csv.ReadOptions(column_names=list(names), use_threads=True,
                                 block_size=_ARROW_BLOCK_BYTES)
    # No null markers: an empty or 'NA' field is an error, as for NumPy.
    convert = arrow_csv.ConvertOptions(column_types={name: types[name] for name in names},
                                       null_values=[], strings_can_be_null=False,
                                       quoted_strings_can_be_null=False)
    return read, convert


def _parse_csv_arrow(body: bytes, columns: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Whole lines parsed by Arrow (int16 samples, float64 labels); ``None`` if it refuses
    them or a label is not finite (Arrow reads 'inf' and 'nan')."""
    import pyarrow as pa
    import pyarrow.csv as arrow_csv

    read, convert = _arrow_csv_options(columns)
    try:
        table = arrow_csv.read_csv(pa.py_buffer(body), read_options=read,
                                   convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    acoustic = table.column(0).to_numpy()
    if columns == 1:
        return acoustic, None
    ttf = table.column(1).to_numpy()
    return (acoustic, ttf) if np.isfinite(ttf).all() else None


def _raise_first_bad_line(body: bytes, columns: int, name: str, first_line: int) -> None:
    """Raise the error for the first line of ``body`` that is not a valid sample."""
    expected = "2 comma-separated numbers" if columns == 2 else "1 number"
    for offset, raw in enumerate(body.split(b"\n")):
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        fields = line.split(",")
        problem = None
        if len(fields) != columns:
            problem = f"expected {expected}, got {line[:60]!r}"
        else:
            try:
                numbers = [float(field) for field in fields]
            except ValueError:
                problem = f"expected {expected}, got {line[:60]!r}"
            else:
                if not (numbers[0].is_integer() and _INT16_MIN <= numbers[0] <= _INT16_MAX):
                    problem = f"acoustic_data {fields[0].strip()!r} is not a 16-bit integer"
                elif columns == 2 and not math.isfinite(numbers[1]):
                    problem = f"time_to_failure {fields[1].strip()!r} is not a finite number"
        if problem:
            raise LabquakeError(f"{name} line {first_line + offset}: {problem}; "
                                "fix or remove that line")
    last_line = first_line + body.count(b"\n") - 1
    raise LabquakeError(f"{name} lines {first_line}-{last_line}: unreadable; "
                        "check the file is a LANL CSV")


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Turn system errors and those of a damaged archive into one-line user errors."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise LabquakeError(f"{path}: damaged archive ({error}); the file is truncated or "
                            "corrupt, copy or write it again") from None
    except OSError as error:
        raise LabquakeError(f"{path}: cannot read ({error.strerror or error}); check the "
                            "file's permissions and the disk") from None


@contextlib.contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    with _read_errors(path):
        archive = zipfile.ZipFile(path)
    with archive:
        yield archive


def _npz_pieces(path: Path, sample_rate: float | None) -> Iterator[_Piece]:
    with _open_zip(path) as archive, _read_errors(path):
        names = set(archive.namelist())
        if ACOUSTIC_MEMBER not in names:
            raise LabquakeError(f"{path}: no 'acoustic_data' array; an .npz record needs "
                                "acoustic_data (int16), time_to_failure and sample_rate")
        rate = _npz_sample_rate(archive, path, names, sample_rate)
        with archive.open(ACOUSTIC_MEMBER) as acoustic_stream:
            length, acoustic_dtype = _npy_header(acoustic_stream, path, "acoustic_data")
            if acoustic_dtype != np.dtype(np.int16):
                raise LabquakeError(f"{path}: acoustic_data is {acoustic_dtype}, expected "
                                    "int16; convert it with astype('int16')")
            with contextlib.ExitStack() as stack:
                ttf_stream = None
                if TTF_MEMBER in names:
                    ttf_stream = stack.enter_context(archive.open(TTF_MEMBER))
                    ttf_length, ttf_dtype = _npy_header(ttf_stream, path, "time_to_failure")
                    if ttf_dtype.kind != "f" or ttf_length != length:
                        raise LabquakeError(
                            f"{path}: time_to_failure is {ttf_dtype} of length {ttf_length}, "
                            f"expected floats of the same length as acoustic_data ({length})")
                if length == 0:
                    raise LabquakeError(f"{path} holds no samples; is the file truncated?")
                yield from _npz_arrays(path, acoustic_stream, acoustic_dtype, ttf_stream,
                                       ttf_dtype if ttf_stream else None, length, rate)


def _npz_arrays(path: Path, acoustic_stream: IO[bytes], acoustic_dtype: np.dtype,
                ttf_stream: IO[bytes] | None, ttf_dtype: np.dtype | None, length: int,
                rate: float) -> Iterator[_Piece]:
    done = 0
    while done < length:
        count = min(DEFAULT_BLOCK_SAMPLES, length - done)
        acoustic = _read_exactly(acoustic_stream, count, acoustic_dtype, path)
        ttf = (None if ttf_stream is None
               else _read_exactly(ttf_stream, count, ttf_dtype, path).astype(np.float64))
        done += count
        yield acoustic.astype(np.int16), ttf, rate


def _read_exactly(stream: IO[bytes], count: int, dtype: np.dtype, path: Path) -> np.ndarray:
    data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise LabquakeError(f"{path}: an array ends early; the file is truncated, "
                            "write it again")
    return np.frombuffer(data, dtype)


def _npy_header(stream: IO[bytes], path: Path, what: str) -> tuple[int, np.dtype]:
    """Length and dtype of a 1-D .npy array from its header."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _fortran_order, dtype = read_header(stream)
    except ValueError as error:
        raise LabquakeError(f"{path}: {what} is not a readable NumPy array ({error}); "
                            "write the file again") from None
    if len(shape) != 1 or dtype.hasobject:
        raise LabquakeError(f"{path}: {what} has shape {shape}; expected one dimension")
    return shape[0], dtype


def _npz_sample_rate(archive: zipfile.ZipFile, path: Path, names: set[str],
                     given: float | None) -> float:
    if SAMPLE_RATE_MEMBER not in names:
        return LANL_SAMPLE_RATE if given is None else float(given)
    with archive.open(SAMPLE_RATE_MEMBER) as stream:
        try:
            stored = float(np.lib.format.read_array(stream, allow_pickle=False))
        except (ValueError, TypeError) as error:
            raise LabquakeError(f"{path}: sample_rate is not a number ({error})") from None
    if not (math.isfinite(stored) and stored > 0):
        raise LabquakeError(f"{path}: sample_rate {stored} is not a positive number of Hz")
    return resolve_sample_rate(path, stored, given)


def records_own_rate(path: str | os.PathLike) -> bool:
    """Whether a file of this format records its sample rate (an .npz does, a CSV not).

    Example:
        >>> records_own_rate("r.npz"), records_own_rate("train.csv")
        (True, False)
    """
    return Path(path).suffix.lower() == ".npz"


def rate_origin(path: str | os.PathLike, given: float | None) -> label_pace.RateOrigin:
    """Where a record's rate comes from: its file (.npz), the caller, or LANL's default.

    Example:
        >>> rate_origin("train.csv", None), rate_origin("r.npz", None)
        ('assumed', 'recorded')
    """
    if records_own_rate(path):
        return "recorded"
    return "assumed" if given is None else "given"


def resolve_sample_rate(path: str | os.PathLike, stored: float | None,
                        given: float | None) -> float:
    """A record's rate: the one its file stores, else the one given, else LANL's 4 MHz.

    Raises:
        LabquakeError: ``given`` contradicts ``stored``.

    Example:
        >>> resolve_sample_rate("train.csv", None, None)
        4000000.0
    """
    if stored is None:
        return LANL_SAMPLE_RATE if given is None else float(given)
    if given is not None and not math.isclose(given, stored):
        raise LabquakeError(f"{path} records {stored:g} Hz, but {given:g} Hz was given; "
                            "leave the sample rate out for an .npz")
    return float(stored)


# --- writing -------------------------------------------------------------------------


def write_record(path: str | os.PathLike,
                 blocks: Iterable[Block | tuple[np.ndarray, np.ndarray | None]],
                 sample_rate: float = LANL_SAMPLE_RATE) -> int:
    """Write a record atomically, its format chosen by the suffix (.csv or .npz).

    Args:
        path: output file; its folder must exist. An existing file is replaced only once
            the new one is complete.
        blocks: :class:`Block` objects or ``(acoustic_data, time_to_failure)`` pairs, as
            :func:`model.data.simulate.simulate_blocks` yields; ``time_to_failure`` ``None`` (in
            every block) writes an unlabelled record.
        sample_rate: stored in an .npz; a CSV has no place for it (LANL's format).

    Returns:
        The number of samples written.

    Example:
        >>> write_record("out.npz", simulate_blocks(10.0), 4e6)  # doctest: +SKIP
        40000000
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE_SUFFIXES:
        raise LabquakeError(f"{path}: cannot write {path.suffix!r} records; "
                            f"name the output {' or '.join(WRITABLE_SUFFIXES)}")
    if not path.parent.is_dir():
        raise LabquakeError(f"{path}: folder {path.parent} does not exist; create it first")
    if not (math.isfinite(sample_rate) and sample_rate > 0):
        raise LabquakeError(f"sample rate {sample_rate} is not a positive number of Hz")
    try:
        with atomic_output(path) as output:
            if suffix == ".csv":
                return _write_csv(output, _checked_pairs(blocks))
            return _write_npz(output, path.parent, _checked_pairs(blocks), float(sample_rate))
    except OSError as error:
        raise LabquakeError(f"{path}: cannot write ({error.strerror or error}); check the "
                            "folder's permissions and free space") from None


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path`` that replaces it only when the block succeeds."""
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    # os.open with 0o666 lets the umask decide permissions, as for any file the user writes.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as output:
            yield output
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _checked_pairs(blocks: Iterable[Block | tuple[np.ndarray, np.ndarray | None]]
                   ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    labelled = None
    for item in blocks:
        acoustic, ttf = ((item.acoustic_data, item.time_to_failure) if isinstance(item, Block)
                         else item)
        acoustic = np.asarray(acoustic)
        if acoustic.ndim != 1 or acoustic.dtype != np.int16:
            raise LabquakeError(f"acoustic_data must be a 1-D int16 array, got {acoustic.dtype} "
                                f"of shape {acoustic.shape}")
        if labelled is None:
            labelled = ttf is not None
        if (ttf is not None) != labelled:
            raise LabquakeError("some blocks have time_to_failure and some do not; "
                                "label all of them or none")
        if ttf is not None:
            ttf = np.asarray(ttf, dtype=np.float64)
            if ttf.shape != acoustic.shape:
                raise LabquakeError(f"time_to_failure has shape {ttf.shape}, acoustic_data "
                                    f"{acoustic.shape}; they must match")
        if len(acoustic):
            yield acoustic, ttf


@functools.cache
def _integer_texts() -> np.ndarray:
    """The text of every int16 value, indexed by value + 32768."""
    return np.array([str(value).encode() for value in range(_INT16_MIN, _INT16_MAX + 1)],
                    dtype=object)


def _write_csv(output: IO[bytes], pairs: Iterator[tuple[np.ndarray, np.ndarray | None]]) -> int:
    texts = _integer_texts()
    samples = 0
    header_written = False
    for acoustic, ttf in pairs:
        if not header_written:
            header = LABELLED_HEADER if ttf is not None else UNLABELLED_HEADER
            output.write(header.encode() + b"\n")
            header_written = True
        output.write(_csv_lines(texts[acoustic.astype(np.int64) - _INT16_MIN], ttf))
        samples += len(acoustic)
    if not header_written:
        raise LabquakeError("no samples to write; the record is empty")
    return samples


def _csv_lines(values: np.ndarray, ttf: np.ndarray | None) -> bytes:
    """CSV lines for the sample texts ``values`` (an object array) and their labels."""
    if ttf is None:
        return b"\n".join(values.tolist()) + b"\n"
    bounds = np.concatenate([[0], np.flatnonzero(ttf[1:] != ttf[:-1]) + 1, [len(ttf)]])
    if len(bounds) - 1 > len(ttf) // _MIN_MEAN_RUN:
        # Labels change nearly every line (LANL's own files): format line by line.
        lines = map(b",".join, zip(values.tolist(), (repr(label).encode()
                                                     for label in ttf.tolist()), strict=True))
        return b"\n".join(lines) + b"\n"
    # Labels constant over runs (LANL's bins, the simulator): one join per run, whose
    # separator carries the label, is ten times faster. repr() is the shortest exact text.
    parts = []
    for low, high in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        separator = b"," + repr(float(ttf[low])).encode() + b"\n"
        parts.append(separator.join(values[low:high].tolist()) + separator)
    return b"".join(parts)


def _write_npz(output: IO[bytes], folder: Path,
               pairs: Iterator[tuple[np.ndarray, np.ndarray | None]], sample_rate: float) -> int:
    with tempfile.TemporaryFile(dir=folder) as acoustic_spill, \
            tempfile.TemporaryFile(dir=folder) as ttf_spill:
        samples = 0
        labelled = False
        for acoustic, ttf in pairs:
            acoustic_spill.write(acoustic.astype("<i2").tobytes())
            if ttf is not None:
                labelled = True
                ttf_spill.write(ttf.astype("<f8").tobytes())
            samples += len(acoustic)
        if samples == 0:
            raise LabquakeError("no samples to write; the record is empty")
        with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=_NPZ_COMPRESS_LEVEL, allowZip64=True) as archive:
            _write_npy_member(archive, ACOUSTIC_MEMBER, acoustic_spill, np.dtype("<i2"), samples)
            if labelled:
                _write_npy_member(archive, TTF_MEMBER, ttf_spill, np.dtype("<f8"), samples)
            with archive.open(SAMPLE_RATE_MEMBER, "w") as member:
                np.lib.format.write_array(member, np.array(sample_rate, dtype=np.float64))
    return samples


def _write_npy_member(archive: zipfile.ZipFile, name: str, spill: IO[bytes], dtype: np.dtype,
                      samples: int) -> None:
    spill.seek(0)
    with archive.open(name, "w", force_zip64=True) as member:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": (samples,)}
        np.lib.format.write_array_header_2_0(member, header)
        shutil.copyfileobj(spill, member, _COPY_BYTES)
