"""The seam between the pipeline and a model: everything the pipeline asks of one.

A model that reads each window alone needs :class:`Predictor` only (``version`` and
``predict``). A model that reads each window in its stream's context, or lets
overlapping windows share their work, is a :class:`ContextPredictor` as well:
``model.bundle.inference.Bundle`` is one. The pipeline asks for the optional part with
:func:`reads_context` and :func:`block_cache`, so a plain predictor stays plain.

Example:
    >>> import numpy as np
    >>> class Constant:
    ...     version = "v1"
    ...     def predict(self, windows, start_samples):
    ...         n = len(windows)
    ...         return np.full(n, 0.2), np.full(n, 9.0), np.full(n, 0.9)
    >>> isinstance(Constant(), Predictor), reads_context(Constant())
    (True, False)
    >>> block_cache(Constant(), hop=4) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

# A window's context features from its base features (a stream context's ``step``).
ContextStep = Callable[[np.ndarray], np.ndarray]


class ContextConfiguration(Protocol):
    """The definition of a stream context, stored with the context's snapshot."""

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready data."""
        ...


class StreamContext(Protocol):
    """One stream's recent past, as a model's context features read it."""

    @property
    def config(self) -> ContextConfiguration:
        """The definition this context follows."""
        ...

    def step(self, base: np.ndarray) -> np.ndarray:
        """Take one window's base features; give its context features."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The state a restarted process continues from."""
        ...


class BlockCache(Protocol):
    """Per-stream partial results of the blocks that overlapping windows share."""

    def forget(self, stream: Hashable) -> None:
        """Drop a stream's blocks (a gap, or the stream went to another process)."""
        ...


@runtime_checkable
class Predictor(Protocol):
    """What the pipeline needs of every model.

    ``predict`` gives TTF, TSF and P(failure) arrays of shape (batch,): as a tuple of
    three, or as an object with ``ttf_s``, ``tsf_s`` and ``p_failure``.
    """

    @property
    def version(self) -> str:
        """The model's version, published with every prediction."""
        ...

    def predict(self, windows: np.ndarray, start_samples: np.ndarray) -> Any:
        """TTF, TSF and P(failure) for a batch of windows."""
        ...


@runtime_checkable
class ContextPredictor(Predictor, Protocol):
    """A model that reads each window in its stream's context, batched across streams."""

    @property
    def context(self) -> ContextConfiguration | None:
        """The stream-context definition; ``None``: each window is read alone."""
        ...

    @property
    def sample_rate(self) -> float | None:
        """The training data's sample rate, Hz, if known."""
        ...

    def new_context(self, sample_rate: float, hop: int | None = None) -> StreamContext:
        """A fresh context for a stream at ``sample_rate`` with windows ``hop`` apart."""
        ...

    def restore_context(self, state: Mapping[str, Any]) -> StreamContext:
        """The context of a snapshot taken with this model's configuration."""
        ...

    def block_cache(self, hop: int) -> BlockCache | None:
        """A cache for windows every ``hop`` samples, or ``None`` if they share nothing."""
        ...

    def predict_in_context(self, windows: Any, start_samples: np.ndarray,
                           contexts: Sequence[ContextStep] | None, cache: Any = None,
                           streams: Sequence[Any] | None = None) -> Any:
        """Like ``predict``, each window with its own context step (and the cache)."""
        ...


def reads_context(predictor: Predictor) -> bool:
    """Whether the predictor reads each window in its stream's context."""
    return getattr(predictor, "context", None) is not None


def block_cache(predictor: Predictor, hop: int) -> BlockCache | None:
    """The predictor's block cache for windows every ``hop`` samples, if it keeps one."""
    make_cache = getattr(predictor, "block_cache", None)
    return make_cache(hop) if make_cache is not None else None
