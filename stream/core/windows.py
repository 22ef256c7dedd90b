"""Cuts one stream's chunks into fixed-length windows on the instrument's sample counter.

The window grid: a window is ``window`` consecutive samples ``[s, s + window)`` where
``s`` is a multiple of ``hop`` on the instrument counter (``s = k * hop``, k ≥ 0).
The first window of a stream, and the first after a gap, starts at the first sample
received rounded UP to a multiple of ``hop``. Because the grid is fixed to the
counter and not to where reading began, a run that starts anywhere in a record
(a replay from the middle, a monitor restarted from a committed offset) cuts the
same windows as a run that saw the record from its first sample.

What the accumulator does with each chunk, by where it lands on the counter:
- at the next expected sample: its samples are appended;
- beyond it: a :class:`Gap` is reported, every partial window is dropped (no window
  spans a gap) and windows restart on the grid from the chunk's first sample;
- entirely before it (a re-delivery): skipped, reported as :class:`Duplicate` (which
  says whether its samples differ from the copy still held);
- starting before it and ending after: the already-seen part is reported as
  :class:`Duplicate` and only the new part is used.

Memory: samples are stored once, in pieces of ``hop`` samples on the grid (piece k holds
``[k * hop, k * hop + min(hop, window))``), plus the start time of each open window. A
sample no open or future window needs is never stored, and each stored sample is copied
in once. A :class:`Window` holds its pieces, read-only, and shares them with the windows
that overlap it: handing out a window copies nothing (with hop = window / 10, copying
each window out of a ring cost as much as the rest of the cutting). ``Window.samples``
joins the pieces at its first read; the caller may keep a window as long as it likes.

Times: a window's ``start_time`` comes from the chunk that carried its first sample,
its ``end_time`` from the chunk that carried its last one (``Chunk.time_of``), so the
times depend only on the chunks, not on when the accumulator started.

Example:
    >>> import numpy as np
    >>> from stream.core.wire import Chunk
    >>> accumulator = WindowAccumulator(window=4, hop=4)
    >>> chunk = Chunk("rig1", "ae0", 2, 1000.0, 0.002, np.arange(2, 12, dtype=np.int16))
    >>> [(event.first_sample, event.samples.tolist()) for event in accumulator.add(chunk)]
    [(4, [4, 5, 6, 7]), (8, [8, 9, 10, 11])]
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np

from stream.core.errors import LabquakeError
from stream.core.wire import Chunk

WINDOW_SAMPLES = 150_000  # one LANL segment: 0.0375 s at 4 MHz


@dataclasses.dataclass(frozen=True, eq=False)
class Window:
    """A complete window of one stream.

    Args:
        first_sample: index of its first sample on the instrument counter (on the hop grid).
        pieces: its samples, as consecutive read-only int16 arrays (the accumulator's
            pieces, shared with the windows that overlap this one; never a chunk's).
        start_time: instrument clock time of the first sample, seconds.
        end_time: instrument clock time of the last sample, seconds.
    """

    first_sample: int
    pieces: tuple[np.ndarray, ...]
    start_time: float
    end_time: float

    @functools.cached_property
    def samples(self) -> np.ndarray:
        """The window's samples as one read-only int16 array (its pieces joined at the
        first read; the piece itself for a window of one piece)."""
        if len(self.pieces) == 1:
            return self.pieces[0]
        joined = np.concatenate(self.pieces)
        joined.flags.writeable = False
        return joined

    @property
    def length(self) -> int:
        """Samples in the window."""
        return sum(len(piece) for piece in self.pieces)

    @property
    def last_sample(self) -> int:
        """Index of the window's last sample (the alert's ``window_end_sample``)."""
        return self.first_sample + self.length - 1


@dataclasses.dataclass(frozen=True)
class Gap:
    """The counter jumped: samples ``[expected_sample, got_sample)`` never arrived."""

    expected_sample: int
    got_sample: int

    @property
    def missing_samples(self) -> int:
        """How many samples are missing."""
        return self.got_sample - self.expected_sample


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """Samples ``[first_sample, end_sample)`` arrived again and were skipped; ``differs``:
    some of them differ from the copy still held (the first copy is the one used)."""

    first_sample: int
    end_sample: int
    differs: bool = False


WindowEvent = Window | Gap | Duplicate


class WindowAccumulator:
    """Turns the chunks of ONE stream, in arrival order, into windows on the hop grid.

    Args:
        window: samples per window (default ``WINDOW_SAMPLES``).
        hop: samples between window starts (default ``window``); less than ``window``
            overlaps windows, more leaves samples out.

    Raises:
        LabquakeError: ``window`` or ``hop`` is not a positive integer.

    Example:
        >>> import numpy as np
        >>> from stream.core.wire import Chunk
        >>> accumulator = WindowAccumulator(window=4, hop=2)
        >>> _ = accumulator.add(Chunk("rig1", "ae0", 0, 1.0, 0.0, np.zeros(5, dtype=np.int16)))
        >>> accumulator.next_expected_sample, accumulator.oldest_needed_sample()
        (5, 2)
    """

    def __init__(self, window: int = WINDOW_SAMPLES, hop: int | None = None) -> None:
        hop = window if hop is None else hop
        for name, value in (("window", window), ("hop", hop)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LabquakeError(
                    f"{name} must be a positive whole number of samples, got {value!r};"
                    f" set --{name} to e.g. {WINDOW_SAMPLES}"
                )
        self._window = window
        self._hop = hop
        # Piece k holds samples [k * hop, k * hop + min(hop, window)); _pieces holds the
        # open windows' pieces, the first being piece _first_piece.
        self._piece = min(hop, window)
        self._pieces: collections.deque[np.ndarray] = collections.deque()
        self._first_piece = 0
        self._next_expected: int | None = None
        self._next_window_start = 0
        # Start times of the open windows, oldest first; its front belongs to
        # _next_window_start once that window's first sample has arrived.
        self._start_times: collections.deque[float] = collections.deque()

    @property
    def window(self) -> int:
        """Samples per window."""
        return self._window

    @property
    def hop(self) -> int:
        """Samples between window starts."""
        return self._hop

    @property
    def capacity(self) -> int:
        """Samples allocated for the open windows now: at most ``ceil(window / hop)``
        pieces of ``min(hop, window)``."""
        return len(self._pieces) * self._piece

    @property
    def next_expected_sample(self) -> int | None:
        """Index of the sample that continues the stream; ``None`` before the first chunk."""
        return self._next_expected

    @property
    def buffered_samples(self) -> int:
        """How many samples open windows hold now (always below ``window``)."""
        if self._next_expected is None:
            return 0
        return max(0, self._next_expected - self._next_window_start)

    @property
    def open_windows(self) -> int:
        """How many windows have their first sample but are not complete."""
        return len(self._start_times)

    def oldest_needed_sample(self) -> int | None:
        """The smallest sample index an open (incomplete) window still needs.

        A consumer that restarts from the chunk holding this sample rebuilds every
        open window; ``None`` means no sample is buffered, so nothing read so far is
        needed again.

        Returns:
            The first sample of the oldest open window, or ``None``.
        """
        if self.buffered_samples == 0:
            return None
        return self._next_window_start

    def add(self, chunk: Chunk) -> list[WindowEvent]:
        """Take the next chunk of the stream and return what it completed or revealed.

        Args:
            chunk: the chunk, any length.

        Returns:
            Events in counter order: at most one :class:`Gap` or :class:`Duplicate`
            first, then the :class:`Window` objects this chunk completed.
        """
        events: list[WindowEvent] = []
        end = chunk.end_sample
        if self._next_expected is None or chunk.first_sample > self._next_expected:
            if self._next_expected is not None:
                events.append(Gap(self._next_expected, chunk.first_sample))
            self._restart(chunk.first_sample)
        elif chunk.first_sample < self._next_expected:
            stop = min(end, self._next_expected)
            events.append(Duplicate(chunk.first_sample, stop, self._differs(chunk, stop)))
            if end <= self._next_expected:
                return events
        position = self._next_expected
        while True:
            # Samples before the next window start on the grid are needed by no window.
            position = max(position, self._next_window_start)
            if position >= end:
                break
            window_end = self._next_window_start + self._window
            stop = min(end, window_end)
            self._store(chunk, position, stop)
            position = stop
            if stop == window_end:
                events.append(self._complete_window(chunk))
        self._next_expected = end
        return events

    def _differs(self, chunk: Chunk, stop: int) -> bool:
        """Whether the chunk's samples before ``stop`` differ from the held copy of them
        (only the samples still held in open windows' pieces can be compared)."""
        hop, piece = self._hop, self._piece
        position = max(chunk.first_sample, self._first_piece * hop)
        while position < stop:
            index, at = divmod(position, hop)
            if at >= piece:  # a hop longer than the window: samples no window keeps
                position += hop - at
                continue
            end = min(stop, position - at + piece)
            held = self._pieces[index - self._first_piece][at:at + end - position]
            sent = chunk.samples[position - chunk.first_sample:end - chunk.first_sample]
            if not np.array_equal(held, sent):
                return True
            position = end
        return False

    def _restart(self, first_sample: int) -> None:
        self._next_expected = first_sample
        self._next_window_start = -(-first_sample // self._hop) * self._hop
        self._start_times.clear()
        self._pieces.clear()
        self._first_piece = self._next_window_start // self._hop

    def _store(self, chunk: Chunk, start: int, stop: int) -> None:
        """Copy samples ``[start, stop)`` of ``chunk`` into their pieces; note new window
        starts. ``[start, stop)`` lies in one window, from its first sample on."""
        hop, piece = self._hop, self._piece
        offset = chunk.first_sample
        position = start
        while position < stop:
            index, at = divmod(position, hop)
            # A window's samples begin its first piece, so the pieces come in order.
            while self._first_piece + len(self._pieces) <= index:
                self._pieces.append(np.empty(piece, dtype=np.int16))
            end = min(stop, position - at + piece)
            self._pieces[index - self._first_piece][at:at + end - position] = (
                chunk.samples[position - offset:end - offset])
            position = end
        first_start = -(-start // hop) * hop
        self._start_times.extend(
            chunk.time_of(window_start) for window_start in range(first_start, stop, hop)
        )

    def _complete_window(self, chunk: Chunk) -> Window:
        """Hand out the oldest open window, which ``chunk`` has just completed."""
        first_sample = self._next_window_start
        first = first_sample // self._hop - self._first_piece
        count = -(-self._window // self._hop)
        pieces = [self._pieces[first + index] for index in range(count)]
        tail = self._window - (count - 1) * self._hop
        if tail < len(pieces[-1]):
            # A hop that does not divide the window: the last piece is complete only up
            # to the window's end, and the later windows fill the rest.
            pieces[-1] = pieces[-1][:tail]
        for piece in pieces:
            piece.flags.writeable = False  # shared from now on
        window = Window(
            first_sample=first_sample,
            pieces=tuple(pieces),
            start_time=self._start_times.popleft(),
            end_time=chunk.time_of(first_sample + self._window - 1),
        )
        self._next_window_start += self._hop
        # The next window begins a piece later: the older pieces are the windows' alone.
        for _ in range(first + 1):
            self._pieces.popleft()
            self._first_piece += 1
        return window
