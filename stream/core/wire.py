"""Binary wire format of one sample chunk (versions 1 and 2): what a Kafka message holds.

A chunk is a run of consecutive samples from one stream (instrument, channel): a
small header, two identifiers and a little-endian int16 payload. All numbers are
little-endian.

| offset     | size | type    | meaning                                                   |
| ---------- | ---- | ------- | --------------------------------------------------------- |
| 0          | 4    | bytes   | magic ``b"LQAE"`` (Labquake Acoustic Emission)            |
| 4          | 1    | u8      | format version, 1 or 2                                    |
| 5          | 1    | u8      | dtype code, 1 = int16 little-endian (the only one in v1) |
| 6          | 2    | u16     | flags, 0 in v1 (reserved)                                 |
| 8          | 4    | u32     | CRC-32 (zlib) of every byte of the message except these 4 |
| 12         | 4    | u32     | sample count n, 1 ≤ n ≤ ``MAX_SAMPLES``                   |
| 16         | 8    | i64     | ``first_sample``: index of the first sample (range below) |
| 24         | 8    | f64     | ``sample_rate`` in Hz (range below)                       |
| 32         | 8    | f64     | ``start_time``: instrument clock of the first sample, s   |
| 40         | 1    | u8      | instrument id length Li, 1..``MAX_ID_BYTES``              |
| 41         | 1    | u8      | channel id length Lc, 1..``MAX_ID_BYTES``                 |
| 42         | Li   | UTF-8   | instrument id                                             |
| 42+Li      | Lc   | UTF-8   | channel id                                                |
| 42+Li+Lc   | 2n   | int16[] | the samples                                               |

The message is exactly ``42 + Li + Lc + 2n`` bytes. Version 2 inserts one field after
the channel id length, so the ids and samples start 4 bytes later (``46 + Li + Lc + 2n``
bytes in all):

| offset     | size | type    | meaning                                                   |
| ---------- | ---- | ------- | --------------------------------------------------------- |
| 42         | 4    | u32     | ``run``: the instrument's run (boot) id                   |

A run is one uninterrupted life of the instrument's sample counter: an instrument that
reboots and counts from 0 again starts a new run, and says so with another run id (a
boot counter, say). The monitor then cuts the new run's windows afresh. A version-1
chunk has no run id (``Chunk.run`` is ``None``); for it, the monitor infers a new run
from the counter jumping back (``stream.engine.pipeline``). Identifiers are printable text
without ``/`` (so the Kafka key ``instrument/channel`` names one stream only).

Every number is range-checked, so that no valid-checksum message can carry a value the
monitor's arithmetic cannot take:

- ``sample_rate`` in [``MIN_SAMPLE_RATE``, ``MAX_SAMPLE_RATE``] = [0.001 Hz, 1 GHz]: a
  Penn State row rate (10 Hz) and a fast AE digitiser (tens of MHz) both fit, while a
  rate such as 1e300 or 5e-324 (which would size a stream's context at 1e295 rows, or
  divide to zero) does not;
- ``first_sample`` ≥ 0 and ``first_sample + n`` ≤ ``MAX_END_SAMPLE`` = 2**62, so a
  window cut on the counter, rounded up to its hop, stays far inside int64;
- ``|start_time|`` ≤ ``MAX_ABS_START_TIME`` (1e12 s, about 31,700 years), so a time
  extrapolated across a window stays finite.

The checksum catches a message damaged between instrument and monitor (a bad
producer, a truncated file) so it goes to the dead-letter topic instead of feeding
wrong samples into a window.

:func:`decode` checks the fixed header (size limit included) before it touches the
payload, so a header that claims 2**31 samples costs nothing. Every problem raises a
:class:`WireError` subclass whose message is one line saying what is wrong; the
monitor puts it in the dead-letter header.

Example:
    >>> import numpy as np
    >>> chunk = Chunk("rig1", "ae0", first_sample=4096, sample_rate=4e6,
    ...               start_time=0.001024, samples=np.arange(4, dtype=np.int16))
    >>> decode(encode(chunk)).samples.tolist()
    [0, 1, 2, 3]
"""

from __future__ import annotations

import dataclasses
import math
import operator
import struct
import zlib

import numpy as np

MAGIC = b"LQAE"
FORMAT_VERSION = 2  # written for a chunk with a run id; version 1 without one
READ_VERSIONS = (1, 2)
MAX_RUN_ID = 2**32 - 1
DTYPE_INT16_LE = 1
SAMPLE_DTYPE = np.dtype("<i2")
MAX_SAMPLES = 1_048_576
MAX_ID_BYTES = 64
# The counter's range leaves room for windows, hops and sums past a chunk's end in int64.
MAX_END_SAMPLE = 2**62
MAX_FIRST_SAMPLE = MAX_END_SAMPLE - 1
MIN_SAMPLE_RATE = 1e-3
MAX_SAMPLE_RATE = 1e9
MAX_ABS_START_TIME = 1e12
KEY_SEPARATOR = "/"

# magic, version, dtype, flags, crc, count, first_sample, sample_rate, start_time,
# instrument length, channel length.
_HEADER = struct.Struct("<4sBBHIIqddBB")
_RUN = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
HEADER_SIZE_V2 = HEADER_SIZE + _RUN.size
_CRC_OFFSET = 8
_CRC_END = _CRC_OFFSET + 4


class WireError(ValueError):
    """A message is not a valid chunk; ``str(error)`` says why in one line."""


class BadMagic(WireError):
    """The message does not start with ``MAGIC``: it is not a labquake chunk."""


class UnsupportedVersion(WireError):
    """The format version is not one this code reads."""


class BadHeader(WireError):
    """A header field is malformed or out of range, or the header is truncated."""


class BadPayload(WireError):
    """The payload does not match the header (wrong length, wrong samples)."""


class BadChecksum(WireError):
    """The CRC-32 does not match: the message was damaged."""


class TooLarge(WireError):
    """The chunk holds more than ``MAX_SAMPLES`` samples."""


@dataclasses.dataclass(frozen=True, eq=False)
class Chunk:
    """A run of consecutive int16 samples of one stream, with its place on the counter.

    Construction validates every field with the rules :func:`decode` applies, so any
    ``Chunk`` can be encoded. ``samples`` from :func:`decode` is a read-only view of
    the message bytes.

    Args:
        instrument: instrument id, printable, no ``/``, 1..64 UTF-8 bytes.
        channel: channel id, same rules.
        first_sample: index of ``samples[0]`` on the instrument's sample counter, ≥ 0,
            and ``first_sample + len(samples)`` ≤ ``MAX_END_SAMPLE``.
        sample_rate: samples per second (Hz), in [``MIN_SAMPLE_RATE``, ``MAX_SAMPLE_RATE``].
        start_time: instrument clock time of ``samples[0]`` in seconds, at most
            ``MAX_ABS_START_TIME`` from 0.
        samples: 1-D int16 array of 1..``MAX_SAMPLES`` samples.
        run: the instrument's run (boot) id, 0..2**32 - 1, or ``None`` (unknown, as in a
            version-1 message).

    Example:
        >>> import numpy as np
        >>> chunk = Chunk("rig1", "ae0", 10, 1000.0, 5.0, np.zeros(3, dtype=np.int16))
        >>> chunk.stream_id, chunk.end_sample, chunk.time_of(12)
        (('rig1', 'ae0'), 13, 5.002)
    """

    instrument: str
    channel: str
    first_sample: int
    sample_rate: float
    start_time: float
    samples: np.ndarray
    run: int | None = None

    def __post_init__(self) -> None:
        check_id("instrument", self.instrument)
        check_id("channel", self.channel)
        first_sample = _as_int("first_sample", self.first_sample)
        samples = _check_samples(self.samples)
        if not 0 <= first_sample <= MAX_END_SAMPLE - len(samples):
            raise BadHeader(f"first_sample {first_sample} with {len(samples)} samples leaves "
                            f"the counter's range: first_sample + samples must be in "
                            f"[0, 2**62]")
        sample_rate = _as_float("sample_rate", self.sample_rate)
        check_sample_rate(sample_rate, BadHeader)
        start_time = _as_float("start_time", self.start_time)
        if not (math.isfinite(start_time) and abs(start_time) <= MAX_ABS_START_TIME):
            raise BadHeader(f"start_time must be finite and within ±{MAX_ABS_START_TIME:g} s,"
                            f" got {start_time!r}")
        if self.run is not None:
            run = _as_int("run", self.run)
            if not 0 <= run <= MAX_RUN_ID:
                raise BadHeader(f"run id must be in 0..{MAX_RUN_ID}, got {run}")
            object.__setattr__(self, "run", run)
        # Normalise numpy scalars and the like to plain Python values once, here.
        object.__setattr__(self, "first_sample", first_sample)
        object.__setattr__(self, "sample_rate", sample_rate)
        object.__setattr__(self, "start_time", start_time)
        object.__setattr__(self, "samples", samples)

    @property
    def stream_id(self) -> tuple[str, str]:
        """The stream this chunk belongs to: ``(instrument, channel)``."""
        return (self.instrument, self.channel)

    @property
    def end_sample(self) -> int:
        """Index one past the last sample (exclusive end on the sample counter)."""
        return self.first_sample + len(self.samples)

    def time_of(self, sample_index: int) -> float:
        """Instrument clock time of ``sample_index``, from this chunk's start time and rate.

        Args:
            sample_index: a sample index on the instrument counter (may lie outside
                the chunk; the clock is extrapolated linearly).

        Returns:
            Time in seconds.
        """
        return self.start_time + (sample_index - self.first_sample) / self.sample_rate


def encode(chunk: Chunk) -> bytes:
    """Serialise a chunk: version 2 when it has a run id, version 1 when not.

    Args:
        chunk: the chunk (already validated by its constructor).

    Returns:
        The message bytes, ``HEADER_SIZE + Li + Lc + 2 * len(chunk.samples)`` long
        (``HEADER_SIZE_V2 + ...`` with a run id).

    Example:
        >>> import numpy as np
        >>> len(encode(Chunk("a", "b", 0, 1.0, 0.0, np.zeros(5, dtype=np.int16))))
        54
    """
    instrument = chunk.instrument.encode("utf-8")
    channel = chunk.channel.encode("utf-8")
    message = bytearray(_HEADER.pack(
        MAGIC, 1 if chunk.run is None else 2, DTYPE_INT16_LE, 0, 0, len(chunk.samples),
        chunk.first_sample, chunk.sample_rate, chunk.start_time, len(instrument), len(channel),
    ))
    if chunk.run is not None:
        message += _RUN.pack(chunk.run)
    message += instrument
    message += channel
    message += chunk.samples.astype(SAMPLE_DTYPE, copy=False).tobytes()
    struct.pack_into("<I", message, _CRC_OFFSET, _checksum(message))
    return bytes(message)


def decode(data: bytes) -> Chunk:
    """Parse and validate one message of version 1 or 2.

    Checks run cheapest first: header size, magic, version, dtype, flags, sample
    count limit and identifier lengths, then the total length, then the checksum,
    then the field values. No buffer is sized from the header before the length
    matches.

    Args:
        data: the message value (``bytes``; ``bytearray``/``memoryview`` are copied
            once so the chunk never aliases a buffer the caller may reuse).

    Returns:
        The chunk; its ``samples`` is a read-only int16 view of the message bytes.

    Raises:
        WireError: one of its subclasses, with a one-line reason.

    Example:
        >>> decode(b"LQAE")
        Traceback (most recent call last):
        ...
        stream.core.wire.BadHeader: message is 4 bytes, shorter than the 42-byte header
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise BadHeader(f"message value is {type(data).__name__}, not bytes")
    if len(data) < HEADER_SIZE:
        if not MAGIC.startswith(data[: len(MAGIC)]):
            raise BadMagic(f"message starts with {data[:len(MAGIC)]!r}, not {MAGIC!r}")
        raise BadHeader(f"message is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    (magic, version, dtype_code, flags, crc, count, first_sample, sample_rate, start_time,
     instrument_length, channel_length) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadMagic(f"message starts with {magic!r}, not {MAGIC!r}: not a labquake chunk")
    if version not in READ_VERSIONS:
        raise UnsupportedVersion(
            f"format version {version} is not supported (this reader knows "
            f"{', '.join(map(str, READ_VERSIONS))}); upgrade labquake"
        )
    if dtype_code != DTYPE_INT16_LE:
        raise BadHeader(f"dtype code {dtype_code} is unknown (version {version} knows 1 ="
                        " int16 LE)")
    if flags != 0:
        raise BadHeader(f"flags are 0x{flags:04x}, must be 0 in version {version}")
    header_size = HEADER_SIZE if version == 1 else HEADER_SIZE_V2
    if len(data) < header_size:
        raise BadHeader(f"message is {len(data)} bytes, shorter than the {header_size}-byte "
                        f"header of version {version}")
    run = None if version == 1 else _RUN.unpack_from(data, HEADER_SIZE)[0]
    if count > MAX_SAMPLES:
        raise TooLarge(f"header declares {count} samples, more than the limit {MAX_SAMPLES}")
    if count == 0:
        raise BadHeader("header declares 0 samples, a chunk holds at least 1")
    for name, length in (("instrument", instrument_length), ("channel", channel_length)):
        if not 1 <= length <= MAX_ID_BYTES:
            raise BadHeader(f"{name} id length {length} is outside 1..{MAX_ID_BYTES} bytes")
    payload_offset = header_size + instrument_length + channel_length
    expected_length = payload_offset + 2 * count
    if len(data) != expected_length:
        raise BadPayload(
            f"message is {len(data)} bytes, header declares {expected_length}"
            f" ({count} samples and ids of {instrument_length}+{channel_length} bytes)"
        )
    actual_crc = _checksum(data)
    if actual_crc != crc:
        raise BadChecksum(f"CRC-32 is 0x{actual_crc:08x}, header says 0x{crc:08x}: damaged message")
    instrument = _decode_id("instrument", data[header_size:header_size + instrument_length])
    channel = _decode_id("channel", data[header_size + instrument_length:payload_offset])
    samples = np.frombuffer(data, dtype=SAMPLE_DTYPE, count=count, offset=payload_offset)
    return Chunk(instrument, channel, first_sample, sample_rate, start_time, samples, run)


def message_key(instrument: str, channel: str) -> bytes:
    """The Kafka message key of a stream, ``b"instrument/channel"``.

    All chunks of one stream share the key, so Kafka keeps them in one partition, in order.

    Args:
        instrument: instrument id (the rules of :class:`Chunk`).
        channel: channel id.

    Returns:
        The UTF-8 key.

    Example:
        >>> message_key("rig1", "ae0")
        b'rig1/ae0'
    """
    check_id("instrument", instrument)
    check_id("channel", channel)
    return f"{instrument}{KEY_SEPARATOR}{channel}".encode()


def check_sample_rate(sample_rate: float, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``sample_rate`` (Hz) is in the range a chunk may carry."""
    if not (isinstance(sample_rate, int | float) and math.isfinite(sample_rate)
            and MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE):
        raise error(f"sample_rate must be from {MIN_SAMPLE_RATE:g} to {MAX_SAMPLE_RATE:g} Hz,"
                    f" got {sample_rate!r}")


def _checksum(message: bytes | bytearray) -> int:
    view = memoryview(message)
    return zlib.crc32(view[_CRC_END:], zlib.crc32(view[:_CRC_OFFSET]))


def check_id(name: str, value: object) -> None:
    """Raise :class:`BadHeader` unless ``value`` is a valid instrument or channel id."""
    if not isinstance(value, str):
        raise BadHeader(f"{name} id must be a str, got {type(value).__name__}")
    # isprintable() is False for lone surrogates too, so the encode below cannot fail.
    if not value.isprintable() or KEY_SEPARATOR in value:
        raise BadHeader(f"{name} id {value!r} must be printable text without {KEY_SEPARATOR!r}")
    size = len(value.encode("utf-8"))
    if not 1 <= size <= MAX_ID_BYTES:
        raise BadHeader(f"{name} id must be 1..{MAX_ID_BYTES} UTF-8 bytes, got {size}")


def _decode_id(name: str, raw: bytes) -> str:
    # The Chunk constructor checks the decoded text; only the decoding can fail here.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadHeader(f"{name} id {raw!r} is not valid UTF-8: {error.reason}") from None


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise BadHeader(f"{name} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise BadHeader(f"{name} must be an integer, got {type(value).__name__}") from None


def _as_float(name: str, value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadHeader(f"{name} must be a number, got {value!r}") from None


def _check_samples(samples: object) -> np.ndarray:
    if not isinstance(samples, np.ndarray) or samples.dtype != np.int16:
        dtype = getattr(samples, "dtype", type(samples).__name__)
        raise BadPayload(
            f"samples must be a numpy int16 array, got {dtype};"
            " convert with np.asarray(values, dtype=np.int16) after checking the range"
        )
    if samples.ndim != 1:
        raise BadPayload(f"samples must be 1-D, got shape {samples.shape}")
    if len(samples) > MAX_SAMPLES:
        raise TooLarge(f"{len(samples)} samples, more than the limit {MAX_SAMPLES}")
    if len(samples) == 0:
        raise BadPayload("a chunk holds at least 1 sample, got 0")
    return samples
