"""The sample rate a record's labels imply, checked against the rate it is read at.

A LANL CSV carries no sample rate, so a reader assumes LANL's 4 MHz unless told
otherwise; a 15-kHz record read that way is silently 267 times too fast, and every window
and stream context with it. Its ``time_to_failure`` labels know better: within a cycle
they fall by one second per second of record, so samples per second of label fall is the
record's rate.

Estimating that pace must survive two things. LANL's own ``train.csv`` labels fall in
steps: almost flat within each 4,096-sample bin, with a small jump between bins (and a
gap in the recording, so its labels imply about 3.7 MHz, not 4). And across a failure the
label jumps up. So the labels are cut at every failure (a rise of more than
``FAILURE_JUMP_S``) into pieces; each piece of at least ``MIN_PIECE_SAMPLES`` (many bins)
gives a pace, its fall over its length, and the estimate is the median of those paces
weighted by length. Only the first ``EVIDENCE_SAMPLES`` of a record are looked at (seconds
to minutes of it), so the check costs little whatever the file's size; a record too short
to hold one such piece is not judged.

A pace within a factor ``RATE_TOLERANCE`` of the rate read passes silently (LANL's 3.7
against 4 MHz included); beyond it the reader stops with one line naming the rate the
labels imply and what to do.

Example:
    >>> labels = np.linspace(10.0, 0.0, 1_000_001)     # 10 s over 10^6 samples
    >>> round(implied_rate(labels))
    100000
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Literal, Protocol

import numpy as np

from stream.core.errors import LabquakeError

# A label rise bigger than this between consecutive samples is a failure (within a cycle
# the label only falls, by one LANL bin, about 1 ms, at most).
FAILURE_JUMP_S = 0.01
# Shortest piece between failures whose pace counts: 16 LANL bins, so the bin steps it
# holds (15 or 16) leave its pace within about 6 %.
MIN_PIECE_SAMPLES = 1 << 16
# Samples from the record's start that are looked at.
EVIDENCE_SAMPLES = 1 << 22
# A rate read within this factor of the one the labels imply passes.
RATE_TOLERANCE = 1.5

RateOrigin = Literal["assumed", "given", "recorded"]


class _Block(Protocol):
    acoustic_data: np.ndarray
    time_to_failure: np.ndarray | None
    sample_rate: float


def implied_rate(labels: np.ndarray) -> float | None:
    """Samples per second implied by how fast ``labels`` fall; ``None`` when too few.

    Example:
        >>> implied_rate(np.ones(10)) is None
        True
    """
    labels = np.asarray(labels, dtype=np.float64)
    cuts = np.flatnonzero(np.diff(labels) > FAILURE_JUMP_S) + 1
    bounds = np.concatenate([[0], cuts, [len(labels)]])
    paces, weights = [], []
    for first, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if stop - first >= MIN_PIECE_SAMPLES:
            paces.append((labels[first] - labels[stop - 1]) / (stop - 1 - first))
            weights.append(stop - first)
    if not paces:
        return None
    order = np.argsort(paces)
    cumulative = np.cumsum(np.asarray(weights)[order])
    pace = float(np.asarray(paces)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
    # Labels that do not fall (or rise) imply no rate at all: as wrong as can be.
    return 1.0 / pace if pace > 0 else math.inf


def check_labels(labels: np.ndarray, sample_rate: float, origin: RateOrigin,
                 source: str | os.PathLike) -> None:
    """Stop when the labels' pace contradicts ``sample_rate``; a matching pace passes.

    Args:
        labels: the record's first labels (up to ``EVIDENCE_SAMPLES`` are used).
        sample_rate: the rate the record is read at.
        origin: where that rate came from: ``"assumed"`` (LANL's 4 MHz for a CSV),
            ``"given"`` by the caller, or ``"recorded"`` in the file (an .npz).
        source: the record, for the message.

    Raises:
        LabquakeError: the pace implies a rate more than ``RATE_TOLERANCE`` away.

    Example:
        >>> check_labels(np.linspace(1.0, 0.0, 400_001), 4e5, "given", "r.csv")
    """
    implied = implied_rate(np.asarray(labels)[:EVIDENCE_SAMPLES])
    if implied is None or (sample_rate / RATE_TOLERANCE <= implied
                           <= sample_rate * RATE_TOLERANCE):
        return
    if not math.isfinite(implied):
        raise LabquakeError(f"{source}: its time_to_failure labels do not count down to "
                            "the failures; check the label column")
    rate = _rounded(implied)
    read = _rounded(sample_rate)
    read_at = {"assumed": f"the {read} Hz assumed for a CSV", "given": f"the {read} Hz given",
               "recorded": f"the {read} Hz the file records"}[origin]
    advice = (f"write it again with sample_rate {rate}" if origin == "recorded"
              else f"pass --sample-rate {rate}")
    raise LabquakeError(f"{source}: its time_to_failure labels fall at the pace of "
                        f"{rate} samples a second, not {read_at}; {advice}")


def checked_blocks(blocks: Iterator[_Block], origin: RateOrigin,
                   source: str | os.PathLike) -> Iterator[_Block]:
    """``blocks`` (:class:`model.data.records.Block`) unchanged, once the labels of their first
    ``EVIDENCE_SAMPLES`` passed :func:`check_labels` at the blocks' rate (those blocks are
    held until then; unlabelled ones pass at once).

    Example:
        >>> checked = checked_blocks(blocks, "assumed", "train.csv")  # doctest: +SKIP
    """
    held: list[_Block] = []
    samples = 0
    for block in blocks:
        if block.time_to_failure is None:
            yield from held
            yield block
            yield from blocks
            return
        held.append(block)
        samples += len(block.acoustic_data)
        if samples >= EVIDENCE_SAMPLES:
            break
    if held:
        check_labels(np.concatenate([block.time_to_failure for block in held]),
                     held[0].sample_rate, origin, source)
    yield from held
    yield from blocks


def _rounded(rate: float) -> str:
    """A rate to three significant figures, as a plain number a flag takes."""
    digits = 2 - math.floor(math.log10(rate))
    return f"{round(rate, digits):.{max(digits, 0)}f}"
