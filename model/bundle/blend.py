"""The blend model kind: the seed network and gradient-boosted trees, as the LANL winners did.

The LANL competition's first-place submission was the geometric mean of a small network
and a LightGBM model. A bundle of kind ``blend`` holds, beside ``model.keras``, the trees
of a LightGBM regressor of the time to failure on the same (unscaled) feature columns
(``TREES_FILENAME``, LightGBM's text format, its SHA-256 in ``bundle.json`` under
``blend``). Its predicted time to failure is the weighted geometric mean of the network's
and the trees', ``network ** (1 - w) * trees ** w``: the winners' plain geometric mean is
``w = 0.5``; ``train`` chooses ``w`` among ``BLEND_WEIGHTS`` by the validation windows'
MAE (:func:`choose_weight`), so a rig where one part is the better gets more of it. Time
since failure and P(failure) are the network's (the alerts come from its classifier head,
which the trees do not have). Inference stays one call per batch: the
network's compiled call, then the trees' (one thread: the monitor's batches are at most
64 windows, where LightGBM's thread pool costs more than it saves).

Example:
    >>> trees = Trees.fit(split.train, seed=0)  # doctest: +SKIP
    >>> blended_ttf(np.array([4.0]), trees.predict(features[:1]))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.core.errors import LabquakeError

if TYPE_CHECKING:
    import lightgbm

    from model.training.dataset import RecordWindows

MODEL_KINDS = ("seed", "blend")
DEFAULT_MODEL_KIND = "blend"
TREES_FILENAME = "trees.txt"
# The trees' share in the blend's geometric mean; the first is the winners' (a tie keeps it).
WINNERS_WEIGHT = 0.5
BLEND_WEIGHTS = (WINNERS_WEIGHT, 0.0, 0.25, 0.75, 1.0)


class Trees:
    """A LightGBM regressor of the time to failure, as a blend bundle holds it.

    Args:
        booster: the fitted ``lightgbm.Booster``.
        weight: the trees' share in the blend's geometric mean, in [0, 1].
    """

    def __init__(self, booster: lightgbm.Booster, weight: float = WINNERS_WEIGHT) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.booster = booster
        self.weight = float(weight)

    @classmethod
    def fit(cls, parts: Sequence[RecordWindows], *, seed: int) -> Trees:
        """Fit the trees on training windows (every feature column, unscaled).

        Example:
            >>> Trees.fit(split.train, seed=0).predict(features).shape  # doctest: +SKIP
            (1200,)
        """
        from model.training.baselines import fit_boosted

        return cls(fit_boosted(parts, seed=seed).booster_)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The trees' time to failure for (batch, n_features) features, float32."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        values = self.booster.predict(np.asarray(features, np.float64), num_threads=1)
        return np.asarray(values, np.float32)

    def blend(self, network_ttf: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The blend's time to failure from the network's and these features."""
        return blended_ttf(network_ttf, self.predict(features), self.weight)

    def with_weight(self, weight: float) -> Trees:
        """The same trees with another share in the blend."""
        return Trees(self.booster, weight)

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the trees into a bundle's staging directory; return the metadata entry."""
        path = directory / TREES_FILENAME
        self.booster.save_model(str(path))
        return {"trees_file": TREES_FILENAME, "trees_sha256": _sha256(path),
                "weight": self.weight,
                "combine": "network TTF ** (1 - weight) * trees TTF ** weight"}

    @classmethod
    def load(cls, directory: Path, entry: Mapping[str, Any], remedy: str) -> Trees:
        """The trees of a bundle, checked against the SHA-256 its metadata holds.

        Raises:
            LabquakeError: the file is missing, altered, or not LightGBM's.
        """
        import lightgbm

        path = directory / str(entry.get("trees_file", TREES_FILENAME))
        if not path.is_file():
            raise LabquakeError(f"model bundle {directory} is a blend without its "
                                f"{path.name}; {remedy}")
        if _sha256(path) != entry.get("trees_sha256"):
            raise LabquakeError(f"model bundle {directory} is damaged or was modified: "
                                f"{path.name} does not match the SHA-256 in its metadata; "
                                f"restore it from a good copy or {remedy}")
        try:
            booster = lightgbm.Booster(model_file=str(path))
        except lightgbm.basic.LightGBMError as error:
            raise LabquakeError(f"model bundle {directory}: {path.name} cannot be read "
                                f"({error}); {remedy}") from None
        try:
            return cls(booster, float(entry.get("weight", WINNERS_WEIGHT)))
        except (TypeError, ValueError) as error:
            raise LabquakeError(f"model bundle {directory} has a blend weight this labquake "
                                f"cannot use ({error}); {remedy}") from None


def choose_weight(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """The weight of ``BLEND_WEIGHTS`` whose blend has the lowest MAE on validation windows.

    Args:
        parts: per record, ``(true TTF, network TTF, trees TTF)`` of the validation windows.

    Returns:
        The weight (ties: the earlier in ``BLEND_WEIGHTS``, the winners' first).

    Example:
        >>> choose_weight([(np.array([1.0, 4.0]), np.array([1.0, 4.0]), np.array([3.0, 3.0]))])
        0.0
    """
    true = np.concatenate([part[0] for part in parts])
    network = np.concatenate([part[1] for part in parts])
    trees = np.concatenate([part[2] for part in parts])
    errors = [float(np.mean(np.abs(blended_ttf(network, trees, weight) - true)))
              for weight in BLEND_WEIGHTS]
    return BLEND_WEIGHTS[int(np.argmin(errors))]


def blended_ttf(network_ttf: np.ndarray, trees_ttf: np.ndarray,
                weight: float = WINNERS_WEIGHT) -> np.ndarray:
    """The weighted geometric mean of two TTF predictions (a negative one counts as 0):
    ``network ** (1 - weight) * trees ** weight``.

    Example:
        >>> blended_ttf(np.array([4.0, 1.0]), np.array([1.0, -2.0])).tolist()
        [2.0, 0.0]
        >>> blended_ttf(np.array([4.0]), np.array([1.0]), weight=1.0).tolist()
        [1.0]
    """
    network = np.maximum(np.asarray(network_ttf, np.float64), 0.0)
    trees = np.maximum(np.asarray(trees_ttf, np.float64), 0.0)
    if weight == 0.0:
        return network.astype(np.float32)
    if weight == 1.0:
        return trees.astype(np.float32)
    return (network ** (1.0 - weight) * trees ** weight).astype(np.float32)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
