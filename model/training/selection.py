"""The stream context chosen on validation cycles: off, or the span of its recent course
and the lookback of its baseline.

A rig's cycles may last 10 s at 10 windows a second (Penn State) or 7–16 s at 27 windows a
second (LANL); a context that shows the last 1.5 s against the quietest of the last 5 s
suits one and not the other. So
``labquake train`` chooses it on the training data itself: the record's cycles are cut
into ``SELECTION_FOLDS`` contiguous blocks, and each block in turn is held out and scored
*as a monitor started afresh at its first window would see it* (its context computed from
there on, so its first cycle has no burst behind it), while a fast model is fitted on the
other blocks. The candidate with the lowest mean absolute error over all held-out blocks
wins; ties go to the earlier candidate (off first, then shorter spans and lookbacks).

First the burst that marks a failure is calibrated on the training labels
(:func:`calibrate_burst`): a window is a burst when its ``log_variance`` exceeds the
context's baseline by a ratio, and the ratio that best finds the labelled failures (F1 of
bursts marked within a window of a failure, one per failure) is kept. A rig whose
failures are small against its precursors needs a lower ratio than one whose failures
are loud; a missed burst leaves ``seconds_since_burst`` counting through the next cycle.

Training windows are also given a second time with the context restarted at a random
window of each cycle (:func:`restarted`): a monitor can start anywhere in a cycle, and
the model must learn what the context says before the stream's first burst.

The scoring model is LightGBM on the model's features (:mod:`model.training.baselines`):
seconds per candidate, where the network takes a minute; it ranks the candidates, the
chosen one is then used for every model kind.

Example:
    >>> choice = choose_context([windows], seed=0)  # doctest: +SKIP
    >>> choice.candidate, choice.scores["off"]  # doctest: +SKIP
    ((1.5, 3.0), 1.17)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from model.features.context import (
    DEFAULT_BINS,
    DEFAULT_BURST_LOG_RATIO,
    DEFAULT_LOOKBACK_S,
    SINCE_NAME,
    ContextConfig,
)
from stream.core.errors import LabquakeError

if TYPE_CHECKING:
    from model.training.dataset import RecordWindows

# A candidate: (seconds of recent course the context shows, seconds of past its baseline
# quantile is taken over), or None for no context.
Candidate = tuple[float, float] | None
CONTEXT_SPANS_S = (1.5, 3.0, 6.0)
CONTEXT_LOOKBACKS_S = (3.0, DEFAULT_LOOKBACK_S)
CONTEXT_CANDIDATES: tuple[Candidate, ...] = (None, *(
    (span, lookback) for span in CONTEXT_SPANS_S for lookback in CONTEXT_LOOKBACKS_S))
# Burst ratios tried against the labelled failures, the context's default first (ties
# keep the earlier).
BURST_RATIOS = (20.0, 30.0, 14.0, 10.0, 7.0, 5.0, 50.0)
# A burst marks a failure if its window ends at most this long after the window that
# first holds the failure has ended (the burst may take a few windows to show).
BURST_MATCH_S = 1.0
SELECTION_FOLDS = 4
# A held-out block needs a cycle that ends in a failure; the rest trains.
MIN_SELECTION_CYCLES = 2


@dataclasses.dataclass(frozen=True)
class ContextChoice:
    """The context chosen and what each candidate scored.

    Attributes:
        candidate: the chosen ``(span_s, lookback_s)``, or None for no context.
        scores: per candidate (:func:`candidate_label`), the held-out MAE in seconds.
        folds: the contiguous blocks scored.
        burst_ratio: the calibrated burst ratio (:func:`calibrate_burst`).
        burst_f1: per ratio tried, the F1 of its bursts against the labelled failures.
    """

    candidate: Candidate
    scores: dict[str, float]
    folds: int
    burst_ratio: float
    burst_f1: dict[str, float]

    @property
    def config(self) -> ContextConfig | None:
        """The chosen context's definitions (None: each window alone)."""
        return context_for(self.candidate, self.burst_ratio)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, for the bundle's metadata."""
        return {"candidate": self.candidate, "label": candidate_label(self.candidate),
                "scores": self.scores, "folds": self.folds, "burst_ratio": self.burst_ratio,
                "burst_f1": self.burst_f1}


def context_for(candidate: Candidate,
                burst_ratio: float = float(np.exp(DEFAULT_BURST_LOG_RATIO))
                ) -> ContextConfig | None:
    """The context whose ``DEFAULT_BINS`` slices cover the last ``span_s`` seconds, its
    baseline taken over the last ``lookback_s``, a burst ``burst_ratio`` times over it.

    Example:
        >>> context_for((3.0, 5.0)).bin_s
        0.25
        >>> context_for(None) is None
        True
    """
    if candidate is None:
        return None
    span_s, lookback_s = candidate
    for name, value in (("span", span_s), ("lookback", lookback_s)):
        if not (np.isfinite(value) and value > 0):
            raise LabquakeError(f"context {name} {value} s is not a positive number of "
                                "seconds")
    return ContextConfig(bin_s=span_s / DEFAULT_BINS, lookback_s=lookback_s,
                         burst_log_ratio=float(np.log(burst_ratio)))


def candidate_label(candidate: Candidate) -> str:
    """``"off"`` or ``"SPAN s / LOOKBACK s"``, as the scores are keyed.

    Example:
        >>> candidate_label((1.5, 5.0)), candidate_label(None)
        ('1.5 s / 5 s', 'off')
    """
    return "off" if candidate is None else f"{candidate[0]:g} s / {candidate[1]:g} s"


def burst_f1(records: Sequence[RecordWindows], config: ContextConfig) -> float:
    """How well the context's bursts mark the labelled failures: the F1 of recall (failures
    with a burst starting within ``BURST_MATCH_S`` after the first window that holds
    them ends) and precision (bursts that so mark a failure).

    Example:
        >>> burst_f1([windows], ContextConfig())  # doctest: +SKIP
        0.93
    """
    from model.training.dataset import add_context

    found = marked = n_bursts = n_failures = 0
    for record in records:
        since = add_context(record, config).with_features([SINCE_NAME]).features[:, 0]
        burst = since == 0
        starts = record.end_time_s[burst & ~np.concatenate([[False], burst[:-1]])]
        window_s = record.window / record.sample_rate
        failures = record.failure_times_s[
            (record.failure_times_s > record.end_time_s[0])
            & (record.failure_times_s + window_s <= record.end_time_s[-1])]
        late = failures + window_s + BURST_MATCH_S
        hits = [(starts >= failure) & (starts <= limit)
                for failure, limit in zip(failures, late, strict=True)]
        found += sum(bool(hit.any()) for hit in hits)
        marked += int(np.any(hits, axis=0).sum()) if hits else 0
        n_bursts, n_failures = n_bursts + len(starts), n_failures + len(failures)
    recall = found / n_failures if n_failures else 0.0
    precision = marked / n_bursts if n_bursts else 0.0
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def calibrate_burst(records: Sequence[RecordWindows], candidate: Candidate = (1.5, 5.0)
                    ) -> tuple[float, dict[str, float]]:
    """The burst ratio of ``BURST_RATIOS`` whose bursts best mark the labelled failures.

    Returns:
        ``(ratio, F1 per ratio tried)``.

    Example:
        >>> calibrate_burst([windows])[0]  # doctest: +SKIP
        10.0
    """
    scores = {f"{ratio:g}": burst_f1(records, context_for(candidate, ratio))
              for ratio in BURST_RATIOS}
    best = max(BURST_RATIOS, key=lambda ratio: scores[f"{ratio:g}"])
    return best, scores


def restarted(windows: RecordWindows, config: ContextConfig, seed: int) -> RecordWindows:
    """The record's windows with the context restarted at a random window of each cycle.

    Args:
        windows: one record's windows, without context features.
        config: the context definitions.
        seed: draws the restart windows.

    Returns:
        The windows with context features, as :func:`model.training.dataset.add_context` gives
        them but started afresh at one window drawn in each cycle.
    """
    from model.training.dataset import add_context

    rng = np.random.default_rng(seed)
    restarts = []
    for cycle in np.unique(windows.cycle):
        members = np.flatnonzero(windows.cycle == cycle)
        restarts.append(int(members[rng.integers(len(members))]))
    return add_context(windows, config, restarts=restarts)


def block_folds(records: Sequence[RecordWindows], folds: int) -> list[list[tuple[int, int]]]:
    """Deal the cycles that end in a failure into ``folds`` contiguous blocks, in order.

    Example:
        >>> [len(block) for block in block_folds([windows], 4)]  # doctest: +SKIP
        [6, 6, 5, 5]
    """
    from model.training.fit import failure_cycles

    candidates = failure_cycles(records)
    folds = min(folds, len(candidates))
    bounds = np.linspace(0, len(candidates), folds + 1).round().astype(int)
    return [candidates[low:high] for low, high in itertools.pairwise(bounds)
            if high > low]


def held_out_block(record: RecordWindows, cycles: Sequence[int],
                   config: ContextConfig | None) -> RecordWindows:
    """The windows inside ``cycles`` (contiguous) of one record, with their context
    computed from the block's first window on, as a monitor started there would."""
    from model.training.dataset import add_context

    wanted = np.isin(record.cycle, cycles) & np.isin(record.last_cycle, cycles)
    block = record.select(wanted)
    return block if config is None else add_context(block, config)


def training_parts(records: Sequence[RecordWindows], config: ContextConfig | None,
                   held_out: Sequence[tuple[int, int]], seed: int) -> list[RecordWindows]:
    """Training windows (outside ``held_out`` cycles): with the context run through
    each record, and again restarted in each cycle (:func:`restarted`)."""
    from model.training.dataset import add_context
    from model.training.fit import split_on_cycles

    if config is None:
        return split_on_cycles(records, held_out).train
    continuous = [add_context(record, config) for record in records]
    again = [restarted(record, config, seed + index) for index, record in enumerate(records)]
    return [*split_on_cycles(continuous, held_out).train,
            *split_on_cycles(again, held_out).train]


def choose_context(records: Sequence[RecordWindows], *, seed: int,
                   candidates: Sequence[Candidate] = CONTEXT_CANDIDATES,
                   folds: int = SELECTION_FOLDS) -> ContextChoice:
    """Choose the context with the lowest MAE on held-out blocks of whole cycles.

    Args:
        records: the training records' windows without context features (their features
            must include the context's bases).
        seed: seeds the restarts and the scoring model.
        candidates: ``(span_s, lookback_s)`` pairs, None meaning no context.
        folds: contiguous blocks of cycles, each held out in turn.

    Returns:
        The :class:`ContextChoice`.

    Raises:
        LabquakeError: fewer than ``MIN_SELECTION_CYCLES`` cycles end in a failure.
    """
    from model.evaluation.evaluate import mean_absolute_error
    from model.training.baselines import fit_boosted

    blocks = block_folds(records, folds)
    ratio, ratio_scores = calibrate_burst(records)
    if len(blocks) < MIN_SELECTION_CYCLES:
        raise LabquakeError(f"choosing the stream context needs at least "
                            f"{MIN_SELECTION_CYCLES} cycles that end in a failure; give "
                            "longer records, or --context off or --context SECONDS")
    scores: dict[str, float] = {}
    for candidate in candidates:
        config = context_for(candidate, ratio)
        true, predicted = [], []
        for block in blocks:
            train = training_parts(records, config, block, seed)
            model = fit_boosted(train, seed=seed)
            for index, record in enumerate(records):
                cycles = [cycle for owner, cycle in block if owner == index]
                if not cycles:
                    continue
                held = held_out_block(record, cycles, config)
                true.append(held.ttf_s)
                predicted.append(model.predict(held.features))
        scores[candidate_label(candidate)] = mean_absolute_error(np.concatenate(true),
                                                                 np.concatenate(predicted))
    best = min(candidates, key=lambda candidate: scores[candidate_label(candidate)])
    return ContextChoice(best, scores, len(blocks), ratio, ratio_scores)
