"""The model bundle: a trained network plus everything needed to use it, saved and loaded.

A bundle is a directory, by convention named ``NAME.lqb``, holding two files:

- ``model.keras`` — the network of :mod:`model.network` in the Keras 3 format;
- for a bundle of kind ``blend`` (:mod:`model.blend`), ``trees.txt`` — the LightGBM
  trees whose time to failure is blended with the network's;
- ``bundle.json`` — the metadata: ``format``, ``version`` (``<created UTC>-<first 8 hex of
  the model file's SHA-256>``), ``created_at``, ``model_sha256``, ``bundle_sha256``
  (the SHA-256 of the rest of ``bundle.json`` in canonical form), ``feature_names``,
  ``features_fingerprint``, ``window`` and ``hop`` (samples), ``scaler`` (per-feature
  ``mean`` and ``std`` that standardise features before the network),
  ``training_fingerprint``, ``metrics``, ``libraries`` (versions that made it),
  ``keras_backend``, ``alert_policy`` (the alert policy's configuration, opaque here),
  ``model_kind`` (``seed`` or ``blend``; absent: ``seed``), ``blend`` (the trees' file and
  SHA-256, for a blend) and ``extra``.

Loading checks the model file against ``model_sha256`` and the metadata against
``bundle_sha256`` (so editing either file is refused; :func:`stamp` records both hashes
again after a deliberate edit) before Keras reads the model, loads it in
Keras safe mode (no arbitrary code), and refuses a bundle whose features the running code
does not compute the same way. Inference runs as one compiled call per batch
(``tf.function`` on TensorFlow, ``jax.jit`` on JAX), never ``Model.predict``, whose per-call
overhead dominates at streaming batch sizes.

Example:
    >>> from model import bundle
    >>> saved = bundle.save("demo.lqb", model, feature_names=names, window=150_000,
    ...                     hop=150_000, scaler_mean=mean, scaler_std=std,
    ...                     training_fingerprint="sha256:...", metrics={"mae_s": 2.1},
    ...                     alert_policy={"threshold": 0.5})  # doctest: +SKIP
    >>> prediction = bundle.load("demo.lqb").predict(windows)  # doctest: +SKIP
    >>> prediction.ttf_s.shape  # doctest: +SKIP
    (64,)
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np

from model.bundle.blend import Trees
from model.features import kernels
from model.features.context import ContextConfig, StreamContext
from model.network import OUTPUT_NAMES
from stream.core.errors import LabquakeError

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = ".lqb"
MODEL_FILENAME = "model.keras"
METADATA_FILENAME = "bundle.json"
BUNDLE_FORMAT = 1
DEFAULT_BUNDLE_PATH = Path(__file__).resolve().parents[1] / "bundled" / f"default{BUNDLE_SUFFIX}"
# The shipped model that reads each window alone, for independent test segments.
SEGMENTS_BUNDLE_PATH = DEFAULT_BUNDLE_PATH.with_name(f"segments{BUNDLE_SUFFIX}")
FEATURES_MODULE = "model.features.extract"
LIBRARIES: tuple[str, ...] = ("labquake", "tensorflow", "keras", "numpy", "scipy", "jax")
# Inference runs on batches padded to a multiple of this many windows (see _call_bucketed).
BATCH_BLOCK = 64
DEFAULT_BENCH_BATCH_SIZES: tuple[int, ...] = (1, 64, 1024)
REMEDY = "retrain with `labquake train` or install the labquake version that made it"
# Recorded in bundle.json, over the rest of it in canonical form (see metadata_sha256).
BUNDLE_HASH_KEY = "bundle_sha256"
STAMP_COMMAND = "labquake stamp"

_HASH_CHUNK_BYTES = 1 << 20
_VERSION_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The network's three outputs for a batch of windows, each float32 of shape (batch,).

    Attributes:
        ttf_s: predicted time to failure, seconds.
        tsf_s: predicted time since the last failure, seconds.
        p_failure: predicted probability that TTF < ``model.network.FAILURE_HORIZON_S``.
    """

    ttf_s: np.ndarray
    tsf_s: np.ndarray
    p_failure: np.ndarray


@dataclasses.dataclass(frozen=True)
class InferenceTiming:
    """Median wall time of one network call at one batch size, milliseconds; ``model_ms``:
    the bundle's whole model from extracted features (scaling, the network and, for a
    blend, the trees)."""

    batch_size: int
    compiled_ms: float
    keras_predict_ms: float
    model_ms: float


def features_fingerprint(feature_names: Sequence[str],
                         features_module: ModuleType | None = None,
                         context: Mapping[str, Any] | None = None) -> str:
    """Fingerprint of a feature set: its names, in order, and the code's features version.

    Args:
        feature_names: the feature names, in the column order the network was trained on.
        features_module: the module that computes them (default: ``model.features.extract``); its
            ``FEATURES_VERSION``, when it has one, is part of the fingerprint so that a
            changed definition under an unchanged name is caught.
        context: the bundle's stream-context configuration (``model.features.context``), if any;
            it and its definitions' version are part of the fingerprint.

    Returns:
        ``"sha256:<hex>"``.

    Example:
        >>> features_fingerprint(["peaks_2"]).startswith("sha256:")  # doctest: +SKIP
        True
    """
    module = features_module or importlib.import_module(FEATURES_MODULE)
    identity = {
        "names": list(feature_names),
        "version": getattr(module, "FEATURES_VERSION", None),
    }
    if context is not None:
        identity["context"] = dict(context)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def fit_scaler(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of training features, for :func:`save`.

    Args:
        features: float array of shape (n_windows, n_features).

    Returns:
        ``(mean, std)``, float64 arrays of shape (n_features,). A constant feature has
        std 0; :class:`Bundle` then only centres it.

    Example:
        >>> mean, std = fit_scaler(np.array([[1.0, 5.0], [3.0, 5.0]]))
        >>> mean.tolist(), std.tolist()
        ([2.0, 5.0], [1.0, 0.0])
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be (n_windows >= 1, n_features), got {features.shape}")
    return features.mean(axis=0), features.std(axis=0)


class Bundle:
    """A loaded model bundle: the network, its scaler and metadata, and a compiled forward.

    Build one with :func:`load` or :func:`save`, not directly.

    Attributes:
        path: the bundle directory.
        model: the loaded (uncompiled) ``keras.Model``.
    """

    def __init__(self, path: Path, model: keras.Model, metadata: Mapping[str, Any],
                 features_module: ModuleType) -> None:
        self.path = path
        self.model = model
        self._metadata = dict(metadata)
        self._features = features_module
        self._feature_names = tuple(metadata["feature_names"])
        self._context = _context_config(metadata, path)
        context_names = set(self._context.names) if self._context else set()
        # What features.extract computes: the network's own columns, then the context's
        # bases it does not already have.
        own = [name for name in self._feature_names if name not in context_names]
        bases = self._context.bases if self._context else ()
        self._extract_names = (*own, *(base for base in bases if base not in own))
        self._base_columns = [self._extract_names.index(base) for base in bases]
        columns = {name: index for index, name in enumerate(self._extract_names)}
        if self._context:
            columns.update({name: len(self._extract_names) + index
                            for index, name in enumerate(self._context.names)})
        self._input_columns = [columns[name] for name in self._feature_names]
        n_features = len(self._feature_names)
        self._mean = np.asarray(metadata["scaler"]["mean"], dtype=np.float32)
        std = np.asarray(metadata["scaler"]["std"], dtype=np.float32)
        # A feature constant over the training set carries no information; dividing by 1
        # keeps it finite instead of turning any later deviation into inf.
        self._std = np.where(std > 0, std, np.float32(1.0))
        self._forward = _compiled_forward(model, n_features)
        blend = metadata.get("blend")
        self._trees = Trees.load(path, blend, REMEDY) if blend else None

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of ``bundle.json``."""
        return json.loads(json.dumps(self._metadata))

    @property
    def version(self) -> str:
        """The bundle's version id, ``<created UTC>-<first 8 hex of the model's SHA-256>``."""
        return self._metadata["version"]

    @property
    def window(self) -> int:
        """Window length in samples that the model was trained on."""
        return int(self._metadata["window"])

    @property
    def hop(self) -> int:
        """Step between consecutive windows, samples."""
        return int(self._metadata["hop"])

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature names, in the network's input column order."""
        return self._feature_names

    @property
    def context(self) -> ContextConfig | None:
        """The stream-context configuration (``model.features.context``); ``None``: the network
        reads each window alone."""
        return self._context

    @property
    def sample_rate(self) -> float | None:
        """The training data's sample rate, Hz (``extra.sample_rate_hz``; ``None`` if the
        bundle does not say)."""
        rate = self._metadata.get("extra", {}).get("sample_rate_hz")
        return None if rate is None else float(rate)

    @property
    def extract_names(self) -> tuple[str, ...]:
        """The ``model.features.extract`` columns :meth:`extract` computes."""
        return self._extract_names

    def new_context(self, sample_rate: float, hop: int | None = None) -> StreamContext:
        """A fresh :class:`model.features.context.StreamContext` for a stream at ``sample_rate``
        whose windows start ``hop`` samples apart (default: the bundle's hop).

        Raises:
            ValueError: the bundle has no context.
        """
        if self._context is None:
            raise ValueError(f"model bundle {self.path} reads each window alone (no context)")
        return StreamContext(self._context, sample_rate / (hop or self.hop))

    def restore_context(self, state: Mapping[str, Any]) -> StreamContext:
        """The :class:`model.features.context.StreamContext` of a snapshot taken with this bundle's
        configuration."""
        if self._context is None:
            raise ValueError(f"model bundle {self.path} reads each window alone (no context)")
        return StreamContext.restore(self._context, state)

    def block_cache(self, hop: int) -> Any:
        """A ``model.features.extract.BlockCache`` for this bundle's windows every ``hop``
        samples, or ``None`` where such windows cannot share blocks (see
        ``model.features.extract.shares_blocks``): pass it to :meth:`predict_in_context`."""
        shares = getattr(self._features, "shares_blocks", None)
        if shares is None or not shares(self.window, hop):
            return None
        return self._features.BlockCache(self.window, hop)

    def extract(self, windows: np.ndarray, start_samples: np.ndarray | None = None,
                cache: Any = None, streams: Sequence[Any] | None = None) -> np.ndarray:
        """The per-window features this bundle needs (its own columns and the context's
        bases), for :meth:`context_bases` and :meth:`assemble`; ``cache`` and ``streams``
        as ``model.features.extract.extract`` takes them."""
        if cache is None:
            return self._features.extract(windows, start_samples, names=self._extract_names)
        return self._features.extract(windows, start_samples, names=self._extract_names,
                                      cache=cache, streams=streams)

    def context_bases(self, extracted: np.ndarray) -> np.ndarray:
        """The context's base columns of :meth:`extract`'s output."""
        return np.asarray(extracted)[:, self._base_columns]

    def assemble(self, extracted: np.ndarray, context_rows: np.ndarray | None) -> np.ndarray:
        """The network's feature columns from :meth:`extract`'s output and, for a bundle
        with a context, each window's context features (in ``context.names`` order)."""
        extracted = np.asarray(extracted, np.float32)
        table = (extracted if context_rows is None
                 else np.concatenate([extracted, np.asarray(context_rows, np.float32)], axis=1))
        return table[:, self._input_columns]

    @property
    def trees(self) -> Trees | None:
        """A blend's trees (:mod:`model.blend`); None for the network alone."""
        return self._trees

    @property
    def kind(self) -> str:
        """The model kind: ``seed`` (the network) or ``blend`` (network and trees)."""
        return "seed" if self._trees is None else "blend"

    @property
    def alert_policy(self) -> dict[str, Any]:
        """A copy of the alert policy configuration stored with the model."""
        return self.metadata["alert_policy"]

    @property
    def metrics(self) -> dict[str, Any]:
        """A copy of the evaluation metrics stored with the model."""
        return self.metadata["metrics"]

    def predict(self, windows: np.ndarray, start_samples: np.ndarray | None = None,
                sample_rate: float | None = None) -> Prediction:
        """Predict TTF, TSF and P(failure) for a batch of raw windows.

        For a bundle with a stream context (:attr:`context`), the batch is taken as
        consecutive windows of one stream, with a fresh context: a stream read in several
        calls needs its context kept between them, as ``stream.engine.pipeline.Pipeline`` does.

        Args:
            windows: int16 array of shape (batch, window).
            start_samples: int64 array of shape (batch,), each window's first sample on the
                instrument counter, passed to the feature extractor; ``None`` if unknown.
            sample_rate: the windows' sample rate, Hz, for the context (default: the
                training data's).

        Returns:
            A :class:`Prediction` of float32 arrays of shape (batch,).

        Example:
            >>> bundle.predict(np.zeros((2, bundle.window), np.int16)).ttf_s.shape
            (2,)
        """
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.shape[1] != self.window:
            raise ValueError(
                f"windows must have shape (batch, {self.window}), got {windows.shape}"
            )
        if windows.shape[0] == 0:
            return _empty_prediction()
        if self._context is None:
            return self.predict_features(self.assemble(self.extract(windows, start_samples),
                                                       None))
        rate = sample_rate if sample_rate is not None else self.sample_rate
        if rate is None:
            raise ValueError("this bundle's context needs the windows' sample rate")
        context = self.new_context(rate)
        return self.predict_in_context(windows, start_samples, [context.step] * len(windows))

    def predict_in_context(self, windows: np.ndarray, start_samples: np.ndarray,
                           contexts: Sequence[Callable[[np.ndarray], np.ndarray]] | None,
                           cache: Any = None,
                           streams: Sequence[Any] | None = None) -> Prediction:
        """Predict windows of several streams, each with its stream's context.

        Args:
            windows: int16 array of shape (batch, window), or a list of rows as
                ``model.features.extract.extract`` takes them (arrays, or each window's pieces).
            start_samples: int64 array of shape (batch,).
            contexts: per window, the function that gives its context features from its
                base features (a stream's ``StreamContext.step``); called in row order.
                None for a bundle without a context.
            cache: a :meth:`block_cache` shared by the calls of overlapping windows, with
                ``streams``, each window's stream; None: each window alone.
            streams: see ``cache``.

        Returns:
            A :class:`Prediction` of float32 arrays of shape (batch,).
        """
        if len(windows) == 0:
            return _empty_prediction()
        # A list of rows goes to the features as it is: with a cache, they read only
        # the new blocks of each window, and a stacked copy would cost more than that.
        extracted = self.extract(windows if isinstance(windows, list) else np.asarray(windows),
                                 start_samples, cache, streams)
        if self._context is None:
            return self.predict_features(self.assemble(extracted, None))
        return self.predict_features(self.assemble(extracted,
                                                   _context_rows(contexts,
                                                                 self.context_bases(extracted))))

    def predict_features(self, features: np.ndarray) -> Prediction:
        """Predict from already extracted (unscaled) features.

        Args:
            features: float array of shape (batch, n_features), columns in
                :attr:`feature_names` order, as ``model.features.extract.extract`` returns them.

        Returns:
            A :class:`Prediction` of float32 arrays of shape (batch,).

        Example:
            >>> bundle.predict_features(np.zeros((3, len(bundle.feature_names)))).p_failure
            array([...], dtype=float32)
        """
        inputs = self.network_inputs(features)
        if inputs.shape[0] == 0:
            return _empty_prediction()
        ttf, tsf, p_failure = (np.asarray(output, dtype=np.float32).reshape(-1)
                               for output in self._forward(inputs))
        if self._trees is not None:
            ttf = self._trees.blend(ttf, features)
        return Prediction(ttf_s=ttf, tsf_s=tsf, p_failure=p_failure)

    def network_inputs(self, features: np.ndarray) -> np.ndarray:
        """Standardise features and shape them as the network's input.

        Args:
            features: float array of shape (batch, n_features).

        Returns:
            float32 array of shape (batch, 1, n_features).

        Example:
            >>> bundle.network_inputs(np.zeros((3, len(bundle.feature_names)))).shape
            (3, 1, 6)
        """
        features = np.asarray(features, dtype=np.float32)
        n_features = len(self._feature_names)
        if features.ndim != 2 or features.shape[1] != n_features:
            raise ValueError(
                f"features must have shape (batch, {n_features}), got {features.shape}"
            )
        scaled = (features - self._mean) / self._std
        return scaled.reshape(features.shape[0], 1, n_features)


def save(path: str | os.PathLike[str], model: keras.Model, *,
         feature_names: Sequence[str], window: int, hop: int,
         scaler_mean: Sequence[float] | np.ndarray, scaler_std: Sequence[float] | np.ndarray,
         training_fingerprint: str, metrics: Mapping[str, Any],
         alert_policy: Mapping[str, Any],
         extra: Mapping[str, Any] | None = None,
         context: ContextConfig | None = None, trees: Trees | None = None) -> Bundle:
    """Write a bundle directory atomically and return it loaded.

    The bundle is written into a temporary directory beside ``path`` and renamed into
    place; an existing bundle at ``path`` is replaced whole, and a save that fails leaves
    it untouched. ``path`` must not be an existing directory that is not a bundle.

    Args:
        path: the bundle directory to write, conventionally ``NAME.lqb``.
        model: the trained network (``model.network.build_model``).
        feature_names: feature names in the network's input column order; each must be
            one ``model.features.extract`` computes.
        window: window length, samples.
        hop: step between windows, samples.
        scaler_mean: per-feature mean subtracted before the network (see :func:`fit_scaler`).
        scaler_std: per-feature standard deviation divided by before the network.
        training_fingerprint: identifies the training data (e.g. a hash of the file).
        metrics: evaluation metrics, JSON-compatible (NumPy scalars are converted,
            non-finite floats stored as null).
        alert_policy: the alert policy configuration, stored as given.
        extra: any further JSON-compatible metadata.
        context: the stream-context configuration whose features (``context.names``)
            are among ``feature_names``; ``None``: one window alone.
        trees: for a blend (:mod:`model.blend`), the trees fitted on the same feature
            columns, unscaled; ``None``: the network alone.

    Returns:
        The saved :class:`Bundle`, loaded back from ``path`` (so its checks ran).

    Example:
        >>> save("run.lqb", model, feature_names=names, window=150_000, hop=150_000,
        ...      scaler_mean=mean, scaler_std=std, training_fingerprint="sha256:ab",
        ...      metrics={}, alert_policy={})  # doctest: +SKIP
    """
    path = Path(path)
    features_module = importlib.import_module(FEATURES_MODULE)
    feature_names = list(feature_names)
    context_dict = context.to_dict() if context is not None else None
    _check_feature_names(feature_names, features_module, path, context)
    mean = np.asarray(scaler_mean, dtype=np.float64).reshape(-1)
    std = np.asarray(scaler_std, dtype=np.float64).reshape(-1)
    _check_save_arguments(model, feature_names, window, hop, mean, std)
    if path.exists() and not _is_bundle(path):
        raise LabquakeError(
            f"refusing to overwrite {path}: it exists and is not a model bundle; "
            "choose another output path"
        )
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    metadata: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "feature_names": feature_names,
        "features_fingerprint": features_fingerprint(feature_names, features_module,
                                                     context_dict),
        "context": context_dict,
        "window": int(window),
        "hop": int(hop),
        "scaler": {"mean": mean.tolist(), "std": std.tolist()},
        "training_fingerprint": str(training_fingerprint),
        "metrics": _json_ready(metrics, "metrics"),
        "libraries": _library_versions(),
        "keras_backend": keras.backend.backend(),
        "alert_policy": _json_ready(alert_policy, "alert_policy"),
        "model_kind": "seed" if trees is None else "blend",
        "extra": _json_ready(extra or {}, "extra"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; a bundle is read by service users
    try:
        model.save(staging / MODEL_FILENAME)
        _fsync(staging / MODEL_FILENAME)
        model_sha256 = _sha256_file(staging / MODEL_FILENAME)
        if trees is not None:
            metadata["blend"] = trees.save(staging)
        metadata["version"] = f"{created.strftime(_VERSION_TIME_FORMAT)}-{model_sha256[:8]}"
        _write_stamped(staging, metadata)
        _replace_directory(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load(path)


def load(path: str | os.PathLike[str]) -> Bundle:
    """Load a bundle after checking its integrity and its features against the code.

    Args:
        path: a bundle directory written by :func:`save`.

    Returns:
        The :class:`Bundle`, ready to predict.

    Raises:
        LabquakeError: the bundle is missing or unreadable, its model file does not match
            its recorded SHA-256, its features differ from what the code computes, or its
            model needs code that safe mode refuses to run.

    Example:
        >>> load("model/bundled/default.lqb").version  # doctest: +SKIP
        '20250101T000000Z-1a2b3c4d'
    """
    path = Path(path)
    metadata = _read_metadata(path)
    model_path = path / MODEL_FILENAME
    if not model_path.is_file():
        raise LabquakeError(f"model bundle {path} has no {MODEL_FILENAME}; {REMEDY}")
    if _sha256_file(model_path) != metadata["model_sha256"]:
        raise LabquakeError(
            f"model bundle {path} is damaged or was modified: {MODEL_FILENAME} does not match "
            f"the SHA-256 in {METADATA_FILENAME}; restore it from a good copy or {REMEDY}"
        )
    recorded = metadata.get(BUNDLE_HASH_KEY)
    if recorded is None:
        raise LabquakeError(
            f"model bundle {path} records no {BUNDLE_HASH_KEY}, so its {METADATA_FILENAME} "
            f"cannot be checked (it predates whole-bundle hashing); if it is unmodified, "
            f"record its hashes with `{STAMP_COMMAND} {path}`"
        )
    if metadata_sha256(metadata) != recorded:
        raise LabquakeError(
            f"model bundle {path} is damaged or was modified: {METADATA_FILENAME} does not "
            f"match its {BUNDLE_HASH_KEY}; restore it from a good copy, or, if the edit is "
            f"deliberate, record it with `{STAMP_COMMAND} {path}`"
        )
    features_module = importlib.import_module(FEATURES_MODULE)
    context = _context_config(metadata, path)
    _check_feature_names(metadata["feature_names"], features_module, path, context)
    if features_fingerprint(metadata["feature_names"], features_module,
                            metadata.get("context")) != metadata["features_fingerprint"]:
        raise LabquakeError(
            f"model bundle {path} was trained on features this labquake computes differently; "
            f"{REMEDY}"
        )
    model = _load_model(model_path, path)
    n_features = len(metadata["feature_names"])
    if tuple(model.input_shape[1:]) != (1, n_features) or len(model.outputs) != len(
        OUTPUT_NAMES
    ):
        raise LabquakeError(
            f"model bundle {path} holds a network of input {model.input_shape} with "
            f"{len(model.outputs)} outputs, not (None, 1, {n_features}) with "
            f"{len(OUTPUT_NAMES)}; {REMEDY}"
        )
    # The features' compiled kernels, ready before the first batch rather than during it.
    kernels.warm_up()
    return Bundle(path, model, metadata, features_module)


def metadata_sha256(metadata: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a bundle's metadata in canonical form, without its own hash.

    Canonical: keys sorted, no whitespace, UTF-8, floats as Python writes them back; so
    reformatting ``bundle.json`` changes nothing, while any change of a value does.

    Example:
        >>> metadata_sha256({"b": 1, "a": [0.5]}) == metadata_sha256({"a": [0.5], "b": 1})
        True
    """
    content = {key: value for key, value in metadata.items() if key != BUNDLE_HASH_KEY}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Record a bundle's hashes again after a deliberate edit of its files.

    The model file's SHA-256 and the metadata's canonical hash are computed from the
    files as they are now and written into ``bundle.json`` (atomically); ``version``
    is kept. :func:`save` writes every bundle through the same step.

    Args:
        path: the bundle directory.

    Returns:
        The metadata as written.

    Raises:
        LabquakeError: no bundle there, or its ``bundle.json`` is unreadable.

    Example:
        >>> stamp("model/bundled/default.lqb")["bundle_sha256"][:8]  # doctest: +SKIP
        '3f2a9c10'
    """
    path = Path(path)
    metadata = _read_metadata(path)
    if not (path / MODEL_FILENAME).is_file():
        raise LabquakeError(f"model bundle {path} has no {MODEL_FILENAME}; {REMEDY}")
    return _write_stamped(path, metadata)


def write_metadata(path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Replace a bundle's ``bundle.json`` with edited ``metadata``, stamped as :func:`stamp`
    stamps it, in one atomic write.

    Raises:
        LabquakeError: ``path`` has no model file.
    """
    path = Path(path)
    if not (path / MODEL_FILENAME).is_file():
        raise LabquakeError(f"model bundle {path} has no {MODEL_FILENAME}; {REMEDY}")
    return _write_stamped(path, dict(metadata))


def set_inference_threads(threads: int) -> bool:
    """Run the model's batches on ``threads`` threads; 0 leaves the backend's default
    (TensorFlow: one per core, for each operation and across them).

    On a small machine one thread is the fastest for the monitor's batches (up to
    ``max_batch``, 64 windows): a batch of 64 takes 0.9 ms against 1.4 ms with
    TensorFlow's pools, which pay off from about 1,024 windows a batch. TensorFlow
    takes the setting only before it first runs, so the verbs call this before they load
    a model. Under another Keras backend it does nothing (JAX reads ``XLA_FLAGS``).

    Args:
        threads: 1 or more, or 0 for the default.

    Returns:
        Whether TensorFlow now runs with this setting.

    Example:
        >>> set_inference_threads(1)  # doctest: +SKIP
        True
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    wanted = (threads, min(threads, 1))  # (within an operation, across operations)
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(),
               threading.get_inter_op_parallelism_threads())
    if current == wanted:
        return True
    try:
        threading.set_intra_op_parallelism_threads(wanted[0])
        threading.set_inter_op_parallelism_threads(wanted[1])
    except RuntimeError:
        log.warning("TensorFlow runs already: the model keeps %s inference thread(s), not "
                    "%s; set inference_threads before a model is loaded in this process",
                    current[0] or "the default", threads or "the default")
        return False
    return True


def load_default() -> Bundle:
    """Load the model bundle shipped with labquake (``DEFAULT_BUNDLE_PATH``).

    Returns:
        The default :class:`Bundle`.

    Example:
        >>> load_default().window  # doctest: +SKIP
        150000
    """
    return load(DEFAULT_BUNDLE_PATH)


def benchmark_inference(bundle: Bundle,
                        batch_sizes: Iterable[int] = DEFAULT_BENCH_BATCH_SIZES,
                        repeats: int = 20) -> list[InferenceTiming]:
    """Time the bundle's compiled network call against ``Model.predict``, per batch size.

    Feature extraction is not included: both sides get the same standardised inputs.

    Args:
        bundle: a loaded bundle.
        batch_sizes: batch sizes to time.
        repeats: calls timed per batch size and method, after one warm-up call.

    Returns:
        One :class:`InferenceTiming` (median milliseconds) per batch size.

    Example:
        >>> [t.batch_size for t in benchmark_inference(bundle, (1, 64), repeats=3)]
        [1, 64]
    """
    rng = np.random.default_rng(0)
    n_features = len(bundle.feature_names)
    timings = []
    for batch_size in batch_sizes:
        features = rng.standard_normal((batch_size, n_features)).astype(np.float32)
        inputs = bundle.network_inputs(features)
        compiled = _median_ms(lambda x=inputs: [np.asarray(o) for o in bundle._forward(x)],
                              repeats)
        predict = _median_ms(
            lambda x=inputs, n=batch_size: bundle.model.predict(x, batch_size=n, verbose=0),
            repeats,
        )
        whole = _median_ms(lambda x=features: bundle.predict_features(x), repeats)
        timings.append(InferenceTiming(batch_size, compiled, predict, whole))
    return timings


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000.0


def _compiled_forward(model: keras.Model,
                      n_features: int) -> Callable[[np.ndarray], Sequence[Any]]:
    """One compiled inference function for the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        # Imported here: a JAX deployment has no TensorFlow installed.
        import tensorflow as tf

        forward = tf.function(
            lambda inputs: model(inputs, training=False),
            input_signature=[tf.TensorSpec((None, 1, n_features), tf.float32)],
            jit_compile=False,
            reduce_retracing=True,
        )
        return functools.partial(_call_bucketed, forward)
    if backend == "jax":
        import jax

        @jax.jit
        def forward(trainable, non_trainable, inputs):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs

        def forward_current_weights(inputs: np.ndarray) -> Sequence[Any]:
            # Read the variables on every call: Keras on JAX replaces (and may delete) their
            # buffers whenever it runs the model itself, e.g. in Model.predict.
            return forward([variable.value for variable in model.trainable_variables],
                           [variable.value for variable in model.non_trainable_variables],
                           inputs)

        return functools.partial(_call_bucketed, forward_current_weights)
    # Other backends (torch) run eagerly; correct, only slower.
    return lambda inputs: model(inputs, training=False)


def _call_bucketed(forward: Callable[[np.ndarray], Sequence[Any]],
                   inputs: np.ndarray) -> list[np.ndarray]:
    """Call ``forward`` on the batch padded to a whole number of ``BATCH_BLOCK`` rows.

    Two reasons: a window's result then does not depend on how many other windows shared
    its batch (the kernels are chosen by shape), so a replay reproduces the live run's
    numbers bit for bit; and jax.jit compiles once per input shape, so padding bounds
    the compilations.
    """
    batch = inputs.shape[0]
    bucket = max(1, -(-batch // BATCH_BLOCK)) * BATCH_BLOCK
    padded = np.zeros((bucket, *inputs.shape[1:]), dtype=inputs.dtype)
    padded[:batch] = inputs
    return [np.asarray(output)[:batch] for output in forward(padded)]


def _context_rows(contexts: Sequence[Callable[[np.ndarray], np.ndarray]],
                  bases: np.ndarray) -> np.ndarray:
    """Each window's context features, in row order: the consecutive windows of one
    stream (the steps of one :class:`StreamContext`) in one call of its ``run``."""
    if len(contexts) != len(bases):
        raise ValueError(f"{len(contexts)} contexts for {len(bases)} windows")
    rows: list[np.ndarray] = []
    start = 0
    while start < len(bases):
        owner = getattr(contexts[start], "__self__", None)
        stop = start + 1
        if isinstance(owner, StreamContext) and contexts[start] == owner.step:
            while stop < len(bases) and contexts[stop] == owner.step:
                stop += 1
            rows.extend(owner.run(bases[start:stop]))
        else:
            rows.append(contexts[start](bases[start]))
        start = stop
    return np.stack(rows)


def _empty_prediction() -> Prediction:
    empty = np.zeros(0, dtype=np.float32)
    return Prediction(ttf_s=empty, tsf_s=empty.copy(), p_failure=empty.copy())


def _context_config(metadata: Mapping[str, Any], path: Path) -> ContextConfig | None:
    values = metadata.get("context")
    if values is None:
        return None
    try:
        return ContextConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise LabquakeError(f"model bundle {path} has a context this labquake cannot read "
                            f"({error}); {REMEDY}") from None
    except LabquakeError as error:
        raise LabquakeError(f"model bundle {path}: {error}") from None


def _check_feature_names(feature_names: Sequence[str], features_module: ModuleType,
                         path: Path, context: ContextConfig | None = None) -> None:
    known = set(features_module.FEATURE_NAMES) | set(context.names if context else ())
    if context is not None:
        missing = [base for base in context.bases if base not in features_module.FEATURE_NAMES]
        if missing:
            raise LabquakeError(f"model bundle {path} builds its context on features "
                                f"{missing}, which this labquake does not compute; {REMEDY}")
    unknown = [name for name in feature_names if name not in known]
    if not feature_names or unknown or len(set(feature_names)) != len(feature_names):
        raise LabquakeError(
            f"model bundle {path} uses features {list(feature_names)}, which this labquake "
            f"does not compute (unknown: {unknown or 'none'}, or empty or repeated); {REMEDY}"
        )


def _check_save_arguments(model: keras.Model, feature_names: Sequence[str], window: int,
                          hop: int, mean: np.ndarray, std: np.ndarray) -> None:
    n_features = len(feature_names)
    if tuple(model.input_shape[1:]) != (1, n_features):
        raise ValueError(
            f"model input {model.input_shape} does not match {n_features} feature names"
        )
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
    if mean.shape != (n_features,) or std.shape != (n_features,):
        raise ValueError(
            f"scaler mean {mean.shape} and std {std.shape} must both be ({n_features},)"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
        raise ValueError("scaler mean must be finite and std finite and non-negative")


def _is_bundle(path: Path) -> bool:
    return path.is_dir() and (path / METADATA_FILENAME).is_file()


def _read_metadata(path: Path) -> dict[str, Any]:
    if not _is_bundle(path):
        raise LabquakeError(
            f"no model bundle at {path} (a directory with {METADATA_FILENAME} and "
            f"{MODEL_FILENAME}); train one with `labquake train` or pass the right path"
        )
    try:
        metadata = json.loads((path / METADATA_FILENAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabquakeError(
            f"model bundle {path} has an unreadable {METADATA_FILENAME} ({error}); {REMEDY}"
        ) from error
    required = ("format", "version", "model_sha256", "feature_names", "features_fingerprint",
                "window", "hop", "scaler", "alert_policy", "metrics")
    missing = [key for key in required if key not in metadata] if isinstance(
        metadata, dict) else list(required)
    if missing or metadata.get("format") != BUNDLE_FORMAT:
        raise LabquakeError(
            f"model bundle {path} is not format {BUNDLE_FORMAT} or lacks {missing}; {REMEDY}"
        )
    return metadata


def _write_stamped(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``bundle.json`` into ``path`` with the hashes of the files as they are:
    the one place a bundle's hashes are made."""
    metadata = dict(metadata)
    metadata["model_sha256"] = _sha256_file(path / MODEL_FILENAME)
    metadata.pop(BUNDLE_HASH_KEY, None)
    metadata[BUNDLE_HASH_KEY] = metadata_sha256(metadata)
    temporary = path / f".{METADATA_FILENAME}.tmp"
    _write_json(temporary, metadata)
    os.replace(temporary, path / METADATA_FILENAME)
    _fsync(path)
    return metadata


def _load_model(model_path: Path, path: Path) -> keras.Model:
    try:
        return keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a file it cannot read.
        if _refused_by_safe_mode(error):
            raise LabquakeError(
                f"model bundle {path} is refused: its network holds Python code (e.g. a "
                "Lambda layer), which labquake never runs; build the network from "
                "standard layers only (as `labquake train` does) and save it again"
            ) from error
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LabquakeError(f"model bundle {path} is refused: it cannot be loaded: "
                            f"{first_line}; {REMEDY}") from error


def _refused_by_safe_mode(error: BaseException) -> bool:
    """Whether Keras refused to run code, also when it wrapped that refusal in another
    error (deserialising a layer inside a model re-raises with the cause in its text or
    its chain)."""
    markers = ("safe_mode", "enable_unsafe_deserialization", "arbitrary code")
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(marker in str(current) for marker in markers):
            return True
        current = current.__cause__ or current.__context__
    return False


def _replace_directory(staging: Path, path: Path) -> None:
    """Move ``staging`` to ``path``, replacing an existing bundle there.

    POSIX cannot rename over a non-empty directory, so an old bundle is first renamed
    aside and put back if the second rename fails.
    """
    if not path.exists():
        os.rename(staging, path)
        _fsync(path.parent)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    aside.rmdir()
    os.rename(path, aside)
    try:
        os.rename(staging, path)
    except OSError:
        os.rename(aside, path)
        raise
    _fsync(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk, so a rename never publishes unwritten data."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(_HASH_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as stream:
        json.dump(value, stream, indent=2, allow_nan=False)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())


def _json_ready(value: Any, where: str) -> Any:
    """``value`` as plain JSON types: NumPy values converted, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist(), where)
    if isinstance(value, list | tuple):
        return [_json_ready(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, np.generic):
        return _json_ready(value.item(), where)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"{where} is a {type(value).__name__}, which JSON cannot hold")


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
