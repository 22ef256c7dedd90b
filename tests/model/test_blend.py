"""The blend model kind, the baselines and the stream context chosen on held-out cycles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.bundle import inference as bundle
from model.bundle.blend import DEFAULT_MODEL_KIND, MODEL_KINDS, Trees, blended_ttf
from model.data.simulate import simulate_blocks
from model.training import baselines, dataset, fit, recipe, selection, train
from stream import cli
from stream.core.errors import LabquakeError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def windows() -> dataset.RecordWindows:
    """60 s of 2-3 s cycles at 20 kHz, windows of 4,096 every 2,048 samples."""
    blocks = simulate_blocks(60.0, sample_rate=2e4, seed=5, cycle_seconds=(2.0, 3.0))
    return dataset.record_windows(blocks, 2e4, name="sim", window=4096, hop=2048,
                                  progress=False)


def test_the_verbs_literals_match_the_modules() -> None:
    assert (train.MODEL_KINDS, train.DEFAULT_MODEL_KIND) == (MODEL_KINDS, DEFAULT_MODEL_KIND)
    assert train.DEFAULT_CONTEXT == recipe.CONTEXT_AUTO


def test_the_blend_is_the_geometric_mean_of_non_negative_answers() -> None:
    np.testing.assert_allclose(blended_ttf(np.array([9.0, 2.0, 3.0]),
                                           np.array([1.0, 8.0, -1.0])), [3.0, 4.0, 0.0])


def test_blocks_are_contiguous_and_cover_every_failure_cycle(
        windows: dataset.RecordWindows) -> None:
    blocks = selection.block_folds([windows], 4)
    flat = [pair for block in blocks for pair in block]
    assert flat == fit.failure_cycles([windows])
    assert len(blocks) == 4 and max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_a_held_out_block_starts_a_fresh_context(windows: dataset.RecordWindows) -> None:
    config = selection.context_for((1.5, 5.0))
    block = selection.held_out_block(windows, [3, 4], config)
    assert set(block.cycle.tolist()) <= {3, 4}
    # No burst seen yet at the block's first window: the counter is at its cap.
    since = block.features[:, block.feature_names.index("seconds_since_burst")]
    assert since[0] == config.max_since_s
    continuous = dataset.add_context(windows, config)
    first = int(np.flatnonzero(windows.first_sample == block.first_sample[0])[0])
    assert continuous.features[first, -1] != since[0]


def test_restarts_fall_once_in_each_cycle(windows: dataset.RecordWindows) -> None:
    config = selection.context_for((1.5, 5.0))
    again = selection.restarted(windows, config, seed=0)
    since = again.features[:, -1]
    continuous = dataset.add_context(windows, config).features[:, -1]
    # Each restart puts the counter back at its cap until the next burst.
    assert (since == config.max_since_s).sum() > (continuous == config.max_since_s).sum()
    np.testing.assert_array_equal(again.ttf_s, windows.ttf_s)


def test_choose_context_scores_every_candidate(windows: dataset.RecordWindows) -> None:
    choice = selection.choose_context([windows], seed=0, candidates=(None, (1.5, 5.0)),
                                      folds=3)
    assert set(choice.scores) == {"off", "1.5 s / 5 s"}
    assert choice.candidate in (None, (1.5, 5.0))
    assert choice.scores[selection.candidate_label(choice.candidate)] == min(
        choice.scores.values())
    json.dumps(choice.to_dict())


def test_a_bad_context_is_one_line() -> None:
    for value in ("sometimes", "-2", "nan"):
        with pytest.raises(LabquakeError, match="--context"):
            recipe.check_context(value)


def test_baselines_score_on_the_validation_windows(windows: dataset.RecordWindows) -> None:
    split = fit.split_by_cycles([windows], 0.3, seed=0)
    scores = baselines.baseline_scores(split.train, split.validation)
    assert set(scores) == set(baselines.BASELINES)
    # A constant's R² is at most 0; the level features know more than a constant.
    assert scores["median"]["r2"] <= 0.0
    assert scores["knn"]["mae"] < scores["median"]["mae"]
    assert scores["lgbm"]["mae"] < scores["median"]["mae"]


def test_trees_survive_a_bundle_round_trip_and_are_checked(
        windows: dataset.RecordWindows, tmp_path: Path) -> None:
    trees = Trees.fit([windows], seed=0)
    entry = trees.save(tmp_path)
    loaded = Trees.load(tmp_path, entry, "retrain")
    np.testing.assert_array_equal(loaded.predict(windows.features),
                                  trees.predict(windows.features))
    (tmp_path / entry["trees_file"]).write_text("tree\n")
    with pytest.raises(LabquakeError, match="does not match the SHA-256"):
        Trees.load(tmp_path, entry, "retrain")


def test_train_saves_a_blend_that_serves_batched(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "blend.lqb"
    code = cli.main(["train", "--simulate", "40", "--sample-rate", "1e4", "--window", "4096",
                     "--epochs", "1", "--seed", "7", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("stream context chosen on ")
    assert printed[1].startswith("baselines on the same validation windows: constant median")
    assert printed[-1].startswith(f"trained {out} (blend, version ")
    model = bundle.load(out)
    assert model.kind == "blend" and model.trees is not None
    assert set(model.metrics["baselines"]) == set(baselines.BASELINES)
    assert "context_choice" in model.metadata["extra"]
    features = np.random.default_rng(0).standard_normal(
        (64, len(model.feature_names))).astype(np.float32)
    network = fit.network_prediction(model.model, model.network_inputs(features))
    prediction = model.predict_features(features)
    np.testing.assert_allclose(
        prediction.ttf_s, model.trees.blend(network.ttf_s, features),
        rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(prediction.p_failure, network.p_failure)
    (timing,) = bundle.benchmark_inference(model, (64,), repeats=2)
    assert timing.model_ms > 0


def test_train_seed_kind_without_context(tmp_path: Path) -> None:
    out = tmp_path / "seed.lqb"
    code = cli.main(["train", "--simulate", "40", "--sample-rate", "1e4", "--window", "4096",
                     "--epochs", "1", "--seed", "7", "--out", str(out), "--kind", "seed",
                     "--context", "off", "--quiet"])
    assert code == 0
    model = bundle.load(out)
    assert model.kind == "seed" and model.trees is None and model.context is None
    # Fine-tuning starts from its weights and keeps its features and context.
    tuned_path = tmp_path / "tuned.lqb"
    code = cli.main(["train", "--simulate", "40", "--sample-rate", "1e4", "--window", "4096",
                     "--epochs", "1", "--seed", "8", "--out", str(tuned_path), "--kind",
                     "seed", "--init", str(out), "--quiet"])
    assert code == 0
    tuned = bundle.load(tuned_path)
    assert tuned.metadata["extra"]["initial_bundle"] == model.version
    assert tuned.feature_names == model.feature_names and tuned.context is None


def test_no_context_contradicting_a_context_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--simulate", "40", "--out", str(tmp_path / "x.lqb"),
                     "--no-context", "--context", "3"])
    assert code == 2
    assert "--no-context contradicts --context 3" in capsys.readouterr().err


def test_evaluate_without_a_model_uses_the_bundled_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    shipped = bundle.load(bundle.DEFAULT_BUNDLE_PATH)
    assert cli.main(["evaluate", "--simulate", "2", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["model_version"] == shipped.version


def test_the_comparison_table_has_a_row_per_model_and_seed() -> None:
    from model.evaluation.compare import MODELS, table_lines

    rows = [{"seed": seed, "model": name, "r2": 0.5, "mae": 1.0, "baseline_mae": 2.0,
             "alert_recall": None, "alert_precision": None}
            for seed in (0, 1) for name in MODELS]
    lines = table_lines(rows)
    assert len(lines) == 2 + len(rows)
    assert lines[2] == "| blend | 0 | 0.5 | 1 | 2 | n/a | n/a |"
