"""The model bundle: save/load round trip, integrity and feature checks, atomic replacement,
safe mode, and the compiled inference call."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from model.bundle import inference as bundle_module
from model.bundle.inference import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    Bundle,
    benchmark_inference,
    fit_scaler,
    load,
    save,
)
from model.network import FAILURE_OUTPUT, TSF_OUTPUT, TTF_OUTPUT, build_model
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

WINDOW = 4096
HOP = 2048
ALERT_POLICY = {"threshold": 0.7, "clear_below": 0.4, "min_consecutive": 2}


def _stub_features_module() -> types.ModuleType:
    """Stands in for model.features while it does not exist: same interface, simple stats."""
    stub = types.ModuleType("model.features.extract")
    columns = {
        "mean": lambda w: w.mean(axis=1),
        "std": lambda w: w.std(axis=1),
        "abs_max": lambda w: np.abs(w).max(axis=1),
        "zero_crossings": lambda w: (np.diff(np.sign(w), axis=1) != 0).sum(axis=1),
    }
    stub.FEATURE_NAMES = tuple(columns)

    def extract(windows, start_samples=None, names=stub.FEATURE_NAMES):
        data = np.asarray(windows, dtype=np.float64)
        return np.stack([columns[name](data) for name in names], axis=1).astype(np.float32)

    stub.extract = extract
    return stub


@pytest.fixture(scope="module")
def features() -> Iterator[types.ModuleType]:
    try:
        yield importlib.import_module("model.features.extract")
    except ImportError:
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(sys.modules, "model.features.extract", _stub_features_module())
            yield sys.modules["model.features.extract"]


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    rng = np.random.default_rng(7)
    scale = rng.uniform(2, 40, size=(6, 1))
    return np.round(rng.standard_normal((6, WINDOW)) * scale).astype(np.int16)


def _trained_model(n_features: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_model(n_features)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 1, n_features)).astype("float32")
    targets = {
        TTF_OUTPUT: rng.uniform(0, 10, (32, 1)),
        TSF_OUTPUT: rng.uniform(0, 10, (32, 1)),
        FAILURE_OUTPUT: (rng.uniform(size=(32, 1)) < 0.3).astype("float32"),
    }
    model.fit(x, targets, batch_size=32, epochs=1, verbose=0)
    return model


def _another_model(n_features: int, seed: int) -> keras.Model:
    """A differently initialised, untrained network: cheaper than a fit where weights
    only need to differ."""
    keras.utils.set_random_seed(seed)
    return build_model(n_features)


@pytest.fixture(scope="module")
def model(features: types.ModuleType) -> keras.Model:
    return _trained_model(len(features.FEATURE_NAMES), seed=11)


def _save(path: Path, model: keras.Model, features: types.ModuleType, windows: np.ndarray,
          **overrides) -> Bundle:
    names = overrides.pop("feature_names", features.FEATURE_NAMES)
    mean, std = fit_scaler(features.extract(windows, names=names))
    arguments = {
        "feature_names": names, "window": WINDOW, "hop": HOP,
        "scaler_mean": mean, "scaler_std": std,
        "training_fingerprint": "sha256:" + "ab" * 32,
        "metrics": {"mae_s": np.float32(2.25), "r2": float("nan"), "n_windows": np.int64(6)},
        "alert_policy": ALERT_POLICY,
    }
    arguments.update(overrides)
    return save(path, model, **arguments)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, model: keras.Model,
          features: types.ModuleType, windows: np.ndarray) -> Bundle:
    return _save(tmp_path_factory.mktemp("bundles") / "run.lqb", model, features, windows)


def _edit_metadata(path: Path, *, restamp: bool = True, **changes) -> None:
    """Change ``bundle.json`` as a hand edit would; ``restamp``: then record its hashes,
    so that the checks behind the integrity check are reached."""
    metadata = json.loads((path / METADATA_FILENAME).read_text())
    metadata.update(changes)
    (path / METADATA_FILENAME).write_text(json.dumps(metadata))
    if restamp:
        bundle_module.stamp(path)


def _files(path: Path) -> dict[str, bytes]:
    return {child.name: child.read_bytes() for child in sorted(path.iterdir())}


def test_round_trip_predicts_the_same(saved: Bundle, windows: np.ndarray) -> None:
    before = saved.predict(windows)
    after = load(saved.path).predict(windows)
    for field in ("ttf_s", "tsf_s", "p_failure"):
        first, second = getattr(before, field), getattr(after, field)
        assert first.dtype == np.float32
        assert first.shape == (len(windows),)
        np.testing.assert_array_equal(first, second)
    assert np.all(before.ttf_s >= 0)
    assert np.all((before.p_failure > 0) & (before.p_failure < 1))


def test_compiled_call_equals_the_model_called_directly(
        saved: Bundle, model: keras.Model, features: types.ModuleType,
        windows: np.ndarray) -> None:
    raw = features.extract(windows, names=saved.feature_names)
    scaler = saved.metadata["scaler"]
    std = np.asarray(scaler["std"])
    scaled = (raw - np.asarray(scaler["mean"])) / np.where(std > 0, std, 1.0)
    reference = [np.asarray(out).reshape(-1)
                 for out in model(scaled[:, None, :].astype("float32"), training=False)]
    prediction = saved.predict(windows)
    for got, expected in zip((prediction.ttf_s, prediction.tsf_s, prediction.p_failure),
                             reference, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_predict_features_matches_predict(saved: Bundle, features: types.ModuleType,
                                          windows: np.ndarray) -> None:
    raw = features.extract(windows, names=saved.feature_names)
    np.testing.assert_array_equal(saved.predict_features(raw).ttf_s,
                                  saved.predict(windows).ttf_s)


def test_varying_batch_sizes_do_not_change_results(saved: Bundle, windows: np.ndarray) -> None:
    whole = saved.predict(windows).ttf_s
    pieces = np.concatenate([saved.predict(windows[:1]).ttf_s,
                             saved.predict(windows[1:4]).ttf_s,
                             saved.predict(windows[4:]).ttf_s])
    np.testing.assert_allclose(pieces, whole, rtol=1e-6, atol=1e-6)


def test_empty_batch_and_wrong_window(saved: Bundle) -> None:
    empty = saved.predict(np.zeros((0, WINDOW), np.int16))
    assert empty.ttf_s.shape == empty.tsf_s.shape == empty.p_failure.shape == (0,)
    with pytest.raises(ValueError, match=str(WINDOW)):
        saved.predict(np.zeros((2, WINDOW - 1), np.int16))


def test_metadata_fields(saved: Bundle, features: types.ModuleType) -> None:
    metadata = json.loads((saved.path / METADATA_FILENAME).read_text())
    assert metadata == saved.metadata
    assert metadata["feature_names"] == list(features.FEATURE_NAMES)
    assert metadata["features_fingerprint"] == bundle_module.features_fingerprint(
        features.FEATURE_NAMES)
    assert (metadata["window"], metadata["hop"]) == (WINDOW, HOP)
    assert (saved.window, saved.hop) == (WINDOW, HOP)
    assert len(metadata["scaler"]["mean"]) == len(metadata["scaler"]["std"]) == len(
        features.FEATURE_NAMES)
    assert metadata["training_fingerprint"] == "sha256:" + "ab" * 32
    assert metadata["metrics"] == {"mae_s": pytest.approx(2.25), "r2": None, "n_windows": 6}
    assert saved.alert_policy == ALERT_POLICY
    assert metadata["extra"] == {}
    assert {"tensorflow", "keras", "numpy", "scipy"} <= set(metadata["libraries"])
    assert metadata["libraries"]["numpy"] == np.__version__
    assert metadata["keras_backend"] == keras.backend.backend()
    sha256 = bundle_module._sha256_file(saved.path / MODEL_FILENAME)
    assert metadata["model_sha256"] == sha256
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", saved.version)
    assert saved.version.endswith(sha256[:8])
    assert sorted(p.name for p in saved.path.iterdir()) == [METADATA_FILENAME, MODEL_FILENAME]


def test_alert_policy_copy_cannot_change_the_bundle(saved: Bundle) -> None:
    saved.alert_policy["threshold"] = 0.0
    assert saved.alert_policy == ALERT_POLICY


def test_tampered_model_is_refused(tmp_path: Path, model: keras.Model,
                                   features: types.ModuleType, windows: np.ndarray) -> None:
    path = _save(tmp_path / "tampered.lqb", model, features, windows).path
    with (path / MODEL_FILENAME).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(LabquakeError, match="damaged or was modified") as error:
        load(path)
    assert "\n" not in str(error.value)


def test_an_edited_bundle_json_is_refused_until_stamped(tmp_path: Path, model: keras.Model,
                                                       features: types.ModuleType,
                                                       windows: np.ndarray) -> None:
    path = _save(tmp_path / "edited.lqb", model, features, windows).path
    version = load(path).version
    _edit_metadata(path, restamp=False, alert_policy={**ALERT_POLICY, "threshold": 0.999999})
    with pytest.raises(LabquakeError, match=r"bundle\.json does not match") as error:
        load(path)
    message = str(error.value)
    assert "\n" not in message and f"labquake stamp {path}" in message
    stamped = bundle_module.stamp(path)
    loaded = load(path)
    assert loaded.alert_policy["threshold"] == 0.999999
    assert loaded.version == version == stamped["version"]


def test_the_bundle_hash_ignores_formatting_but_not_values(saved: Bundle) -> None:
    metadata = json.loads((saved.path / METADATA_FILENAME).read_text())
    reordered = dict(reversed(list(metadata.items())))
    assert bundle_module.metadata_sha256(reordered) == metadata["bundle_sha256"]
    assert bundle_module.metadata_sha256({**metadata, "window": WINDOW + 1}) != (
        metadata["bundle_sha256"])
    assert bundle_module.metadata_sha256(
        {**metadata, "metrics": {**metadata["metrics"], "mae_s": 2.2500001}}) != (
        metadata["bundle_sha256"])


def test_a_bundle_without_its_bundle_hash_is_refused(tmp_path: Path, model: keras.Model,
                                                     features: types.ModuleType,
                                                     windows: np.ndarray) -> None:
    path = _save(tmp_path / "old.lqb", model, features, windows).path
    metadata = json.loads((path / METADATA_FILENAME).read_text())
    del metadata["bundle_sha256"]
    (path / METADATA_FILENAME).write_text(json.dumps(metadata))
    with pytest.raises(LabquakeError, match=r"records no bundle_sha256.*labquake stamp"):
        load(path)


def test_the_shipped_bundle_is_stamped() -> None:
    metadata = json.loads((bundle_module.DEFAULT_BUNDLE_PATH / METADATA_FILENAME).read_text())
    assert metadata["bundle_sha256"] == bundle_module.metadata_sha256(metadata), (
        "re-stamp it: labquake stamp model/bundled/default.lqb")
    assert metadata["model_sha256"] == bundle_module._sha256_file(
        bundle_module.DEFAULT_BUNDLE_PATH / MODEL_FILENAME)


def test_unknown_feature_names_are_refused(tmp_path: Path, model: keras.Model,
                                           features: types.ModuleType,
                                           windows: np.ndarray) -> None:
    path = _save(tmp_path / "renamed.lqb", model, features, windows).path
    names = list(features.FEATURE_NAMES)
    names[0] = "a_feature_from_another_version"
    _edit_metadata(path, feature_names=names)
    with pytest.raises(LabquakeError, match="labquake train") as error:
        load(path)
    assert "a_feature_from_another_version" in str(error.value)


def test_changed_features_version_is_refused(saved: Bundle, features: types.ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "FEATURES_VERSION", "a-different-definition", raising=False)
    with pytest.raises(LabquakeError, match=r"computes differently.*labquake train"):
        load(saved.path)


def test_saving_unknown_feature_names_is_refused(tmp_path: Path, model: keras.Model,
                                                 features: types.ModuleType) -> None:
    n = len(features.FEATURE_NAMES)
    with pytest.raises(LabquakeError, match="not_a_feature"):
        save(tmp_path / "x.lqb", model, feature_names=["not_a_feature"] * n, window=WINDOW,
             hop=HOP, scaler_mean=np.zeros(n), scaler_std=np.ones(n),
             training_fingerprint="t", metrics={}, alert_policy={})
    assert not (tmp_path / "x.lqb").exists()


def test_a_subset_of_features_in_another_order(tmp_path: Path, features: types.ModuleType,
                                               windows: np.ndarray) -> None:
    names = tuple(reversed(features.FEATURE_NAMES[:2]))
    subset = _save(tmp_path / "subset.lqb", _another_model(2, seed=5), features, windows,
                   feature_names=names)
    loaded = load(subset.path)
    assert loaded.feature_names == names
    raw = features.extract(windows, names=names)
    np.testing.assert_array_equal(loaded.predict(windows).ttf_s,
                                  loaded.predict_features(raw).ttf_s)


def test_zero_std_feature_stays_finite(tmp_path: Path, model: keras.Model,
                                       features: types.ModuleType, windows: np.ndarray) -> None:
    n = len(features.FEATURE_NAMES)
    mean, std = fit_scaler(features.extract(windows))
    std[0] = 0.0
    zero_std = _save(tmp_path / "zero.lqb", model, features, windows,
                     scaler_mean=mean, scaler_std=std)
    prediction = zero_std.predict(windows)
    assert np.all(np.isfinite(prediction.ttf_s))
    inputs = zero_std.network_inputs(features.extract(windows))
    np.testing.assert_allclose(inputs[:, 0, 0], features.extract(windows)[:, 0] - mean[0],
                               rtol=1e-5, atol=1e-3)
    assert inputs.shape == (len(windows), 1, n)


def test_fit_scaler() -> None:
    mean, std = fit_scaler(np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32))
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    np.testing.assert_array_equal(std, [1.0, 0.0])
    with pytest.raises(ValueError):
        fit_scaler(np.zeros((0, 3)))


def test_save_replaces_an_existing_bundle_whole(tmp_path: Path, model: keras.Model,
                                                features: types.ModuleType,
                                                windows: np.ndarray) -> None:
    path = tmp_path / "replace.lqb"
    first = _save(path, model, features, windows, metrics={"run": 1})
    (path / "stray.txt").write_text("left by hand")
    other_model = _another_model(len(features.FEATURE_NAMES), seed=99)
    second = _save(path, other_model, features, windows, metrics={"run": 2})
    assert sorted(p.name for p in path.iterdir()) == [METADATA_FILENAME, MODEL_FILENAME]
    assert load(path).metrics == {"run": 2}
    assert second.metadata["model_sha256"] != first.metadata["model_sha256"]
    assert [p.name for p in tmp_path.iterdir()] == ["replace.lqb"]


def test_failed_save_leaves_the_old_bundle_intact(tmp_path: Path, model: keras.Model,
                                                  features: types.ModuleType,
                                                  windows: np.ndarray,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keep.lqb"
    _save(path, model, features, windows)
    before = _files(path)
    failing = _another_model(len(features.FEATURE_NAMES), seed=3)

    def save_then_fail(filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(failing, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _save(path, failing, features, windows)
    assert _files(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.lqb"]
    load(path)


def test_failed_rename_puts_the_old_bundle_back(tmp_path: Path, model: keras.Model,
                                                features: types.ModuleType,
                                                windows: np.ndarray,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "swap.lqb"
    _save(path, model, features, windows)
    before = _files(path)
    real_rename = os.rename

    def rename_failing_for_the_new_bundle(source, destination):
        if str(source).endswith(".tmp"):
            raise OSError("rename refused")
        real_rename(source, destination)

    monkeypatch.setattr(bundle_module.os, "rename", rename_failing_for_the_new_bundle)
    with pytest.raises(OSError, match="rename refused"):
        _save(path, _another_model(len(features.FEATURE_NAMES), seed=4), features, windows)
    monkeypatch.undo()
    assert _files(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["swap.lqb"]


def test_unserialisable_metrics_fail_before_writing(tmp_path: Path, model: keras.Model,
                                                    features: types.ModuleType,
                                                    windows: np.ndarray) -> None:
    with pytest.raises(TypeError, match=r"metrics\.when"):
        _save(tmp_path / "bad.lqb", model, features, windows, metrics={"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_directory_that_is_not_a_bundle(
        tmp_path: Path, model: keras.Model, features: types.ModuleType,
        windows: np.ndarray) -> None:
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(LabquakeError, match="not a model bundle"):
        _save(precious, model, features, windows)
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_lambda_layer_is_refused_by_safe_mode(tmp_path: Path, features: types.ModuleType,
                                              windows: np.ndarray) -> None:
    n = len(features.FEATURE_NAMES)
    inputs = keras.Input((1, n))
    hidden = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    flat = keras.layers.Flatten()(hidden)
    outputs = [keras.layers.Dense(1, name=name)(flat)
               for name in (TTF_OUTPUT, TSF_OUTPUT, FAILURE_OUTPUT)]
    unsafe = keras.Model(inputs, outputs)
    path = tmp_path / "unsafe.lqb"
    with pytest.raises(LabquakeError, match="holds Python code") as error:
        _save(path, unsafe, features, windows)
    assert "Lambda" in str(error.value) and "version" not in str(error.value)
    assert (path / MODEL_FILENAME).is_file()


def test_a_wrapped_safe_mode_refusal_is_recognised() -> None:
    try:
        try:
            raise ValueError("Requested the deserialization of a `Lambda` layer ... "
                             "`keras.config.enable_unsafe_deserialization()`")
        except ValueError as inner:
            raise TypeError("Could not deserialize class 'Functional'") from inner
    except TypeError as wrapped:
        assert bundle_module._refused_by_safe_mode(wrapped)
    assert not bundle_module._refused_by_safe_mode(OSError("truncated file"))


def test_missing_and_damaged_bundles_are_refused(tmp_path: Path, saved: Bundle) -> None:
    with pytest.raises(LabquakeError, match="no model bundle"):
        load(tmp_path / "nothing.lqb")
    broken = tmp_path / "broken.lqb"
    broken.mkdir()
    (broken / METADATA_FILENAME).write_text("{not json")
    with pytest.raises(LabquakeError, match="unreadable"):
        load(broken)
    (broken / METADATA_FILENAME).write_text(json.dumps({"format": 1}))
    with pytest.raises(LabquakeError, match="lacks"):
        load(broken)


def test_load_default_reads_the_default_path(saved: Bundle,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_module, "DEFAULT_BUNDLE_PATH", saved.path)
    assert bundle_module.load_default().version == saved.version
    assert Path(bundle_module.__file__).parent / "bundled" / "default.lqb" != saved.path


def test_benchmark_inference_times_each_batch_size(saved: Bundle) -> None:
    timings = benchmark_inference(saved, batch_sizes=(1, 8), repeats=2)
    assert [timing.batch_size for timing in timings] == [1, 8]
    assert all(t.compiled_ms > 0 and t.keras_predict_ms > 0 for t in timings)


JAX_CHECK = """
import sys
import numpy as np
if sys.argv[4] == "stub":
    sys.path.insert(0, sys.argv[5])
    from test_bundle import _stub_features_module
    sys.modules["model.features.extract"] = _stub_features_module()
from model.bundle.inference import load
bundle = load(sys.argv[1])
prediction = bundle.predict_features(np.load(sys.argv[2]))
np.save(sys.argv[3], np.stack([prediction.ttf_s, prediction.tsf_s, prediction.p_failure]))
"""


@pytest.mark.slow
def test_same_bundle_runs_on_the_jax_backend(tmp_path: Path, saved: Bundle,
                                             features: types.ModuleType,
                                             windows: np.ndarray) -> None:
    pytest.importorskip("jax")
    raw = features.extract(windows, names=saved.feature_names)
    np.save(tmp_path / "features.npy", raw)
    here = Path(__file__).resolve()
    features_kind = "real" if hasattr(features, "__file__") else "stub"
    subprocess.run([sys.executable, "-c", JAX_CHECK, str(saved.path),
                    str(tmp_path / "features.npy"), str(tmp_path / "out.npy"),
                    features_kind, str(here.parent)],
                   check=True, cwd=here.parents[2], env=dict(os.environ, KERAS_BACKEND="jax"),
                   timeout=120)
    on_jax = np.load(tmp_path / "out.npy")
    expected = saved.predict_features(raw)
    np.testing.assert_allclose(on_jax, np.stack([expected.ttf_s, expected.tsf_s,
                                                 expected.p_failure]), rtol=1e-4, atol=1e-4)


INFERENCE_THREADS_CHECK = """
import logging, sys
import numpy as np
import tensorflow as tf
from model.bundle import inference as bundle
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
assert bundle.set_inference_threads(1)
assert bundle.set_inference_threads(1)  # the same again: nothing to change
assert tf.config.threading.get_intra_op_parallelism_threads() == 1
assert tf.config.threading.get_inter_op_parallelism_threads() == 1
loaded = bundle.load_default()
loaded.predict_features(np.zeros((2, len(loaded.feature_names)), np.float32))
assert not bundle.set_inference_threads(0)  # TensorFlow runs now: refused, with a word
assert tf.config.threading.get_intra_op_parallelism_threads() == 1
print("ok")
"""


def test_inference_threads_are_set_before_tensorflow_runs_and_kept_after() -> None:
    # A fresh process: in this one TensorFlow has run already.
    result = subprocess.run([sys.executable, "-c", INFERENCE_THREADS_CHECK],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True,
                            text=True, timeout=120,
                            env=dict(os.environ, KERAS_BACKEND="tensorflow"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "ok"
    assert any("TensorFlow runs already" in line and "inference_threads" in line
               for line in lines)
