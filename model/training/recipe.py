"""What ``labquake train`` does between reading the windows and fitting the network.

- the stream context: chosen on validation cycles (``--context auto``, the default:
  :func:`model.training.selection.choose_context`), off, or a span given in seconds;
- the split by whole cycles (:func:`model.training.fit.split_by_cycles`), on the windows with
  that context run through each record;
- the training windows given a second time with the context restarted once in each
  cycle (:func:`model.training.selection.restarted`), so the model learns what a monitor
  started mid-cycle sees;
- the baselines of :mod:`model.training.baselines`, scored on the same validation windows.

Example:
    >>> prepared = prepare(records, "auto", validation_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> prepared.context, len(prepared.split.train)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stream.core.errors import LabquakeError

if TYPE_CHECKING:
    from model.features.context import ContextConfig
    from model.training.dataset import RecordWindows
    from model.training.fit import Split
    from model.training.selection import ContextChoice

CONTEXT_AUTO = "auto"
CONTEXT_OFF = "off"
BASELINE_LABELS = {"median": "constant median", "knn": "kNN (4 level features)",
                   "lgbm": "LightGBM (window features)"}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The windows ready for fitting.

    Attributes:
        records: each record's windows with the chosen context's features.
        split: the training (context run through, then restarted) and validation windows.
        context: the chosen context, or None.
        choice: how it was chosen, with ``--context auto``.
        n_restarted: training windows that are the restarted copies (0 without context).
    """

    records: list[RecordWindows]
    split: Split
    context: ContextConfig | None
    choice: ContextChoice | None
    n_restarted: int = 0


def check_context(value: str) -> str:
    """Refuse a ``--context`` that is not ``auto``, ``off`` or a positive span in seconds.

    Example:
        >>> check_context("3")
        '3'
    """
    if value in (CONTEXT_AUTO, CONTEXT_OFF):
        return value
    try:
        span = float(value)
    except ValueError:
        span = math.nan
    if not (math.isfinite(span) and span > 0):
        raise LabquakeError(f"--context {value!r} is not auto, off or a span in seconds; "
                            "give e.g. --context auto or --context 3")
    return value


def prepare(records: Sequence[RecordWindows], context: str, *, validation_fraction: float,
            seed: int) -> Prepared:
    """Choose the context, add it, split by cycles and add the restarted training windows.

    Args:
        records: each record's windows without context features.
        context: ``"auto"``, ``"off"`` or a span in seconds (:func:`check_context`).
        validation_fraction: share of the cycles held out for validation.
        seed: seeds the choice, the split and the restarts.

    Returns:
        The :class:`Prepared` windows.
    """
    from model.training import selection

    choice = None
    if context == CONTEXT_AUTO:
        choice = selection.choose_context(records, seed=seed)
        config = choice.config
    else:
        config = selection.context_for(
            None if context == CONTEXT_OFF
            else (float(context), selection.DEFAULT_LOOKBACK_S))
    return dataclasses.replace(prepare_with(records, config,
                                            validation_fraction=validation_fraction,
                                            seed=seed), choice=choice)


def prepare_with(records: Sequence[RecordWindows], config: ContextConfig | None, *,
                 validation_fraction: float, seed: int,
                 feature_names: Sequence[str] | None = None) -> Prepared:
    """:func:`prepare` with a given context (None: each window alone), the features kept
    being ``feature_names`` (default: all, then the context's), as a bundle to be
    fine-tuned reads them."""
    from model.training import selection
    from model.training.dataset import add_context
    from model.training.fit import split_by_cycles, split_on_cycles

    def kept(parts: Sequence[RecordWindows]) -> list[RecordWindows]:
        if feature_names is None:
            return list(parts)
        return [part.with_features(feature_names) for part in parts]

    if config is None:
        with_context = kept(records)
        return Prepared(with_context, split_by_cycles(with_context, validation_fraction, seed),
                        None, None)
    with_context = kept([add_context(record, config) for record in records])
    split = split_by_cycles(with_context, validation_fraction, seed)
    again = kept([selection.restarted(record, config, seed + index)
                  for index, record in enumerate(records)])
    extra = split_on_cycles(again, split.validation_cycles).train
    return Prepared(with_context, dataclasses.replace(split, train=[*split.train, *extra]),
                    config, None, sum(map(len, extra)))


def baselines_line(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """The baselines' validation scores as one line a person reads.

    Example:
        >>> baselines_line({"knn": {"mae": 1.2, "r2": 0.6}})
        'baselines on the same validation windows: kNN (4 level features) MAE 1.2 s, R² 0.6'
    """
    from model.evaluation.evaluate import format_value

    parts = [f"{BASELINE_LABELS.get(name, name)} MAE {format_value(score['mae'])} s, "
             f"R² {format_value(score['r2'])}" for name, score in scores.items()]
    return "baselines on the same validation windows: " + "; ".join(parts)
