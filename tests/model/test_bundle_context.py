"""A bundle whose network reads each window in its stream's context (model/features/context.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.bundle import inference as bundle
from model.data import simulate
from model.features.context import ContextConfig
from model.network import build_model
from model.training import dataset
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit

RATE = 2e4
WINDOW = 4096
OWN = ("num_peaks_2", "log_variance", "log_rolling_std_50_p05")
CONTEXT = ContextConfig(lookback_s=2.0, bin_s=0.25, bins=4)


@pytest.fixture(scope="module")
def record() -> simulate.SimulatedRecord:
    return simulate.simulate(40.0, sample_rate=RATE, seed=21, cycle_seconds=(5.0, 8.0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> bundle.Bundle:
    """An untrained network over its own three features and the context's, in a mixed
    order, the context's bases partly not among its own."""
    import keras

    keras.utils.set_random_seed(3)
    names = (CONTEXT.names[0], *OWN, *CONTEXT.names[1:])
    return bundle.save(tmp_path_factory.mktemp("bundle") / "c.lqb", build_model(len(names)),
                       feature_names=names, window=WINDOW, hop=WINDOW,
                       scaler_mean=np.zeros(len(names)), scaler_std=np.ones(len(names)),
                       training_fingerprint="sha256:test", metrics={}, alert_policy={},
                       context=CONTEXT, extra={"sample_rate_hz": RATE})


def _windows(record: simulate.SimulatedRecord) -> tuple[np.ndarray, np.ndarray]:
    count = len(record.acoustic_data) // WINDOW
    windows = record.acoustic_data[:count * WINDOW].reshape(count, WINDOW)
    return windows, np.arange(count, dtype=np.int64) * WINDOW


def test_the_bundle_extracts_its_own_features_and_the_bases(saved: bundle.Bundle) -> None:
    assert saved.context == CONTEXT and saved.sample_rate == RATE
    assert saved.extract_names[:3] == OWN
    assert set(saved.extract_names) == set(OWN) | set(CONTEXT.bases)


def test_the_offline_path_equals_the_bundle_on_raw_windows(
        saved: bundle.Bundle, record: simulate.SimulatedRecord, tmp_path: Path) -> None:
    windows, starts = _windows(record)
    direct = saved.predict(windows, starts)
    path = tmp_path / "r.npz"
    from model.data import records

    records.write_record(path, [(record.acoustic_data, record.time_to_failure)],
                         sample_rate=RATE)
    cut = dataset.file_windows(path, window=WINDOW, feature_names=saved.extract_names,
                               progress=False)
    cut = dataset.add_context(cut, saved.context).with_features(saved.feature_names)
    offline = saved.predict_features(cut.features)
    np.testing.assert_allclose(offline.ttf_s, direct.ttf_s[:len(cut)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(offline.p_failure, direct.p_failure[:len(cut)], rtol=1e-5,
                               atol=1e-6)


def test_predict_in_context_keeps_a_stream_across_calls(
        saved: bundle.Bundle, record: simulate.SimulatedRecord) -> None:
    windows, starts = _windows(record)
    whole = saved.predict(windows, starts)
    context = saved.new_context(RATE)
    parts = [saved.predict_in_context(windows[low:low + 7], starts[low:low + 7],
                                      [context.step] * len(windows[low:low + 7]))
             for low in range(0, len(windows), 7)]
    np.testing.assert_allclose(np.concatenate([p.ttf_s for p in parts]), whole.ttf_s,
                               rtol=1e-5, atol=1e-5)
    # Alone, a later stretch starts with a fresh context, and reads differently.
    alone = saved.predict(windows[100:], starts[100:])
    assert not np.allclose(alone.ttf_s[:5], whole.ttf_s[100:105])


def test_interleaved_streams_keep_their_own_contexts(
        saved: bundle.Bundle, record: simulate.SimulatedRecord) -> None:
    # Two streams' windows in one batch, as the monitor mixes them: each stream's run of
    # windows goes through its own context, in order, and any other step function too.
    windows, starts = _windows(record)
    first, second = saved.new_context(RATE), saved.new_context(RATE)
    seen: list[int] = []

    def counting(base: np.ndarray) -> np.ndarray:
        seen.append(len(seen))
        return saved.new_context(RATE).step(base)

    owners = [first.step, first.step, second.step, first.step, counting, second.step] * 4
    mixed = saved.predict_in_context(windows[:24], starts[:24], owners)
    rows = [index for index, owner in enumerate(owners) if owner == first.step]
    reference = saved.new_context(RATE)
    alone = saved.predict_in_context(windows[rows], starts[rows], [reference.step] * 12)
    np.testing.assert_array_equal(mixed.ttf_s[rows], alone.ttf_s)
    assert seen == [0, 1, 2, 3]


def test_the_context_is_part_of_the_features_fingerprint(saved: bundle.Bundle) -> None:
    metadata = json.loads((saved.path / bundle.METADATA_FILENAME).read_text())
    metadata["context"]["lookback_s"] = 9.0
    (saved.path / bundle.METADATA_FILENAME).write_text(json.dumps(metadata))
    bundle.stamp(saved.path)
    try:
        with pytest.raises(LabquakeError, match="computes differently"):
            bundle.load(saved.path)
        metadata["context"]["version"] = 99
        (saved.path / bundle.METADATA_FILENAME).write_text(json.dumps(metadata))
        bundle.stamp(saved.path)
        with pytest.raises(LabquakeError, match="version 99"):
            bundle.load(saved.path)
    finally:
        metadata["context"] = CONTEXT.to_dict()
        (saved.path / bundle.METADATA_FILENAME).write_text(json.dumps(metadata))
        bundle.stamp(saved.path)
    assert bundle.load(saved.path).context == CONTEXT


def test_context_names_without_a_context_are_refused(tmp_path: Path) -> None:
    names = (*OWN, CONTEXT.names[0])
    with pytest.raises(LabquakeError, match="does not compute"):
        bundle.save(tmp_path / "x.lqb", build_model(len(names)), feature_names=names,
                    window=WINDOW, hop=WINDOW, scaler_mean=np.zeros(len(names)),
                    scaler_std=np.ones(len(names)), training_fingerprint="t", metrics={},
                    alert_policy={})


def test_a_bundle_without_a_context_reads_each_window_alone(tmp_path: Path) -> None:
    plain = bundle.save(tmp_path / "p.lqb", build_model(len(OWN)), feature_names=OWN,
                        window=WINDOW, hop=WINDOW, scaler_mean=np.zeros(len(OWN)),
                        scaler_std=np.ones(len(OWN)), training_fingerprint="t", metrics={},
                        alert_policy={})
    assert plain.context is None and plain.extract_names == OWN
    assert plain.metadata["context"] is None
    with pytest.raises(ValueError, match="no context"):
        plain.new_context(RATE)
    windows = np.zeros((2, WINDOW), np.int16)
    starts = np.array([0, WINDOW])
    np.testing.assert_array_equal(plain.predict_in_context(windows, starts, None).ttf_s,
                                  plain.predict(windows, starts).ttf_s)


def test_overlapping_windows_through_the_bundles_block_cache(
        record: simulate.SimulatedRecord, tmp_path: Path) -> None:
    window, hop = 3 * 3_000, 3_000  # three blocks a window
    names = (*OWN, *CONTEXT.names)
    wide = bundle.save(tmp_path / "w.lqb", build_model(len(names)), feature_names=names,
                       window=window, hop=window, scaler_mean=np.zeros(len(names)),
                       scaler_std=np.ones(len(names)), training_fingerprint="t", metrics={},
                       alert_policy={}, context=CONTEXT, extra={"sample_rate_hz": RATE})
    assert wide.block_cache(window) is None  # windows that do not overlap share nothing
    assert wide.block_cache(2_000) is None  # shorter than a frame and its hop
    cache = wide.block_cache(hop)
    assert cache is not None and cache.blocks_per_window == 3
    starts = np.arange(40, dtype=np.int64) * hop
    rows = [record.acoustic_data[start:start + window] for start in starts]
    plain, shared = wide.new_context(RATE, hop), wide.new_context(RATE, hop)
    alone = wide.predict_in_context(np.stack(rows), starts, [plain.step] * 40)
    together = [wide.predict_in_context(rows[first:first + 8], starts[first:first + 8],
                                        [shared.step] * 8, cache=cache,
                                        streams=["rig/ae0"] * 8)
                for first in range(0, 40, 8)]
    for name in ("ttf_s", "tsf_s", "p_failure"):
        np.testing.assert_allclose(np.concatenate([getattr(part, name) for part in together]),
                                   getattr(alone, name), rtol=1e-4, atol=1e-4)
