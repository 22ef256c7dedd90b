"""The ``predict`` verb: a folder of test segments in, a submission file out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.bundle import inference as bundle
from model.data import segments
from model.network import build_model
from stream import cli

pytestmark = pytest.mark.unit

RATE = 2e4
LENGTH = 6_000
WINDOW = 4096
NAMES = ("num_peaks_2", "log_variance", "log_rolling_std_50_p05")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> bundle.Bundle:
    """An untrained network in a bundle with a short window (its predictions vary)."""
    import keras

    keras.utils.set_random_seed(2)
    return bundle.save(tmp_path_factory.mktemp("bundle") / "m.lqb", build_model(len(NAMES)),
                       feature_names=NAMES, window=WINDOW, hop=WINDOW,
                       scaler_mean=[1.0, 2.0, 1.0], scaler_std=[1.0, 0.5, 0.5],
                       training_fingerprint="sha256:test", metrics={}, alert_policy={})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    written = segments.write_segments(tmp_path_factory.mktemp("segments") / "test", 9,
                                      sample_rate=RATE, seed=4, segment_samples=LENGTH,
                                      progress=False)
    return written.folder


def _predict(*arguments: str) -> int:
    return cli.main(["predict", *arguments, "--quiet"])


def test_the_submission_holds_the_bundles_prediction_for_each_segment(
        model: bundle.Bundle, folder: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "submission.csv"
    truth_path = folder / segments.TRUTH_FILENAME
    code = _predict("--model", str(model.path), "--segments", str(folder), "--out", str(out),
                    "--truth", str(truth_path), "--workers", "1")
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "seg_id,time_to_failure" and len(lines) == 10
    answers = segments.read_truth(out)
    files = segments.segment_files(folder)
    assert list(answers) == segments.segment_ids(files)
    # Each answer is the bundle's prediction for the segment's last window.
    windows = np.stack([segments.read_segment(path, WINDOW) for path in files])
    expected = model.predict(windows).ttf_s
    np.testing.assert_allclose(list(answers.values()), expected, rtol=1e-6)
    assert len(set(np.round(expected, 4))) > 1
    assert printed[0].startswith(f"wrote 9 predictions to {out} with model {model.version}")
    truth = segments.read_truth(truth_path)
    mae = np.mean(np.abs(np.array([truth[key] for key in answers]) - expected))
    assert printed[1] == (f"MAE {mae:.3g} s over 9 segments against {truth_path}")


def test_worker_processes_give_the_same_submission(model: bundle.Bundle, folder: Path,
                                                   tmp_path: Path) -> None:
    for workers in ("1", "2"):
        assert _predict("--model", str(model.path), "--segments", str(folder), "--out",
                        str(tmp_path / f"{workers}.csv"), "--workers", workers) == 0
    assert (tmp_path / "1.csv").read_bytes() == (tmp_path / "2.csv").read_bytes()


def test_segments_shorter_than_the_window_are_refused(model: bundle.Bundle, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    short = segments.write_segments(tmp_path / "short", 2, sample_rate=RATE,
                                    segment_samples=WINDOW - 1, progress=False)
    code = _predict("--model", str(model.path), "--segments", str(short.folder), "--out",
                    str(tmp_path / "s.csv"), "--workers", "1")
    assert code == 2
    assert "fewer than the model's window of 4,096" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(("arguments", "message"), [
    (["--segments", "{tmp}/absent"], "no such folder"),
    (["--out", "{tmp}/absent/s.csv"], "does not exist; create it first"),
    (["--truth", "{tmp}/other.csv"], "has no answer for seg_"),
    (["--workers", "0"], "--workers 0 is not a positive whole number"),
])
def test_bad_input_is_one_line(arguments: list[str], message: str, model: bundle.Bundle,
                               folder: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    segments.write_submission(tmp_path / "other.csv", {"seg_zzzzzz": 1.0})
    given = {"--model": str(model.path), "--segments": str(folder),
             "--out": str(tmp_path / "s.csv")}
    flags = [value.format(tmp=tmp_path) for value in arguments]
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        given[flag] = value
    code = _predict(*[item for pair in given.items() for item in pair])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_bad_segment_read_by_a_worker_is_named(model: bundle.Bundle, folder: Path,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "test"
    broken.mkdir()
    for path in segments.segment_files(folder):
        (broken / path.name).write_bytes(path.read_bytes())
    victim = segments.segment_files(broken)[-1]
    lines = victim.read_text().splitlines()
    lines[100] = "12x"
    victim.write_text("\n".join(lines) + "\n")
    code = _predict("--model", str(model.path), "--segments", str(broken), "--out",
                    str(tmp_path / "s.csv"), "--workers", "2")
    err = capsys.readouterr().err
    assert code == 2 and f"{victim} line 101: expected 1 number, got '12x'" in err
    assert not (tmp_path / "s.csv").exists()


def test_without_a_model_the_shipped_segments_bundle_predicts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = bundle.load(bundle.SEGMENTS_BUNDLE_PATH)
    assert shipped.context is None  # a segment has no stream before it
    folder = segments.write_segments(tmp_path / "test", 2, sample_rate=RATE, seed=4,
                                     segment_samples=shipped.window, progress=False).folder
    out = tmp_path / "submission.csv"
    assert _predict("--segments", str(folder), "--out", str(out), "--workers", "1") == 0
    assert f"with model {shipped.version}" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 3
