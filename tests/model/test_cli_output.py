"""What ``labquake simulate``, ``train`` and ``evaluate`` print with ``--json`` and
``--quiet``: one JSON object alone on stdout; nothing at all when quiet."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from model.bundle import inference as bundle
from model.data import segments
from model.data.records import read_record
from model.data.simulate import simulate
from stream import cli

pytestmark = pytest.mark.unit

# A log record at WARNING or above, in the text format of stream.cli.
WARNING_RECORD = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ (WARNING|ERROR|CRITICAL) ")

# A small simulated training set: 40 s at 10 kHz, windows of 4,096 (about 100 windows).
TRAIN_FLAGS = ["--simulate", "40", "--sample-rate", "1e4", "--window", "4096", "--epochs", "1",
               "--seed", "7"]
# The object 'labquake evaluate --json' printed before --quiet existed; it must not change.
EVALUATE_FIELDS = {"mae", "r2", "baseline_mae", "baseline_ttf_s", "alert_recall",
                   "alert_precision", "n_windows", "n_failures", "n_detected", "n_raises",
                   "lead_time_median_s", "lead_time_min_s", "lead_time_max_s",
                   "alert_horizon_s", "model_version", "data",
                   # the calm-alert metrics (model/evaluation/alert_metrics.py)
                   "raises_per_failure", "false_alarms_per_hour", "n_false_alarms",
                   "missed_failures", "lead_time_p10_s", "lead_time_p50_s",
                   "lead_time_p90_s", "withdrawn_per_hour", "n_withdrawn", "n_updated",
                   "first_raise_precision", "observed_hours", "interval_coverage",
                   "interval_nominal_coverage", "n_interval_failures"}


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``labquake ARGV`` in this process; its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def only_json(stdout: str) -> dict:
    """The one JSON object that ``stdout`` holds, and nothing else."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout
    return json.loads(stdout)


def assert_warnings_only(stderr: str) -> None:
    """Under --quiet stderr holds log records of WARNING and above, nothing else (no
    progress bar, no epoch line, no summary). TensorFlow may warn, e.g. that a function
    was retraced, after several trainings in one test process; a Python warning's record
    goes on with its indented source line."""
    for line in stderr.splitlines():
        assert WARNING_RECORD.match(line) or line.startswith(" "), stderr


# --- simulate ---------------------------------------------------------------------------


def test_simulate_json_reports_the_record_written(tmp_path: Path) -> None:
    out = tmp_path / "sim.npz"
    code, stdout, stderr = run_cli("simulate", "--out", str(out), "--seconds", "20",
                                   "--sample-rate", "4e4", "--seed", "3", "--cycle-seconds",
                                   "5", "8", "--json")
    assert code == 0
    report = only_json(stdout)
    expected = simulate(20.0, sample_rate=4e4, seed=3, cycle_seconds=(5.0, 8.0))
    assert report == {"path": str(out), "format": "npz", "seconds": 20.0,
                      "sample_rate": 4e4, "samples": 800_000,
                      "failures": len(expected.failure_samples), "seed": 3,
                      "elapsed_s": report["elapsed_s"]}
    assert report["failures"] >= 2
    assert 0 < report["elapsed_s"] < 60
    assert len(read_record(out).acoustic_data) == report["samples"]
    assert "sample/s" in stderr  # the progress bar still shows, on stderr


def test_simulate_quiet_prints_nothing_and_quiet_json_only_the_object(tmp_path: Path) -> None:
    code, stdout, stderr = run_cli("simulate", "--out", str(tmp_path / "a.csv"), "--seconds",
                                   "2", "--sample-rate", "4e4", "--quiet")
    assert (code, stdout, stderr) == (0, "", "")
    assert len(read_record(tmp_path / "a.csv").acoustic_data) == 80_000

    code, stdout, stderr = run_cli("simulate", "--out", str(tmp_path / "b.csv"), "--seconds",
                                   "2", "--sample-rate", "4e4", "--quiet", "--json")
    assert (code, stderr) == (0, "")
    report = only_json(stdout)
    assert (report["format"], report["samples"]) == ("csv", 80_000)


def test_simulate_segments_json_reports_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "test"
    code, stdout, stderr = run_cli("simulate", "--segments", "3", "--out", str(folder),
                                   "--segment-samples", "5000", "--sample-rate", "2e4",
                                   "--seed", "9", "--quiet", "--json")
    assert (code, stderr) == (0, "")
    report = only_json(stdout)
    # Without --seconds the segments are cut from a record of at least 150 s.
    record = simulate(150.0, sample_rate=2e4, seed=9)
    assert report == {"path": str(folder), "format": "segments", "seconds": 150.0,
                      "sample_rate": 2e4, "samples": 15_000,
                      "failures": len(record.failure_samples), "seed": 9,
                      "elapsed_s": report["elapsed_s"], "segments": 3,
                      "segment_samples": 5000,
                      "truth": str(folder / segments.TRUTH_FILENAME)}
    assert len(segments.segment_files(folder)) == 3
    assert Path(report["truth"]).is_file()


def test_an_error_under_json_is_one_line_on_stderr_and_nothing_on_stdout(
        tmp_path: Path) -> None:
    code, stdout, stderr = run_cli("simulate", "--out", str(tmp_path / "x.txt"), "--seconds",
                                   "1", "--json")
    assert (code, stdout) == (2, "")
    assert stderr.startswith("labquake simulate: ") and stderr.count("\n") == 1


# --- train and evaluate -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """A bundle trained with ``--json``: its path, the printed object and stderr."""
    out = tmp_path_factory.mktemp("cli-output") / "json.lqb"
    code, stdout, stderr = run_cli("train", *TRAIN_FLAGS, "--out", str(out), "--json")
    assert code == 0, stderr
    return out, only_json(stdout), stderr


def test_train_json_reports_the_bundle_from_its_metadata(
        trained: tuple[Path, dict, str]) -> None:
    out, report, stderr = trained
    saved = bundle.load(out)
    extra = saved.metadata["extra"]
    assert report["bundle"] == str(out) and report["version"] == saved.version
    assert report["n_train_windows"] == extra["n_train_windows"] > 0
    assert report["n_validation_windows"] == extra["n_validation_windows"] > 0
    assert report["n_train_windows"] + report["n_validation_windows"] <= 40 * 10_000 // 4096
    assert report["validation_cycles"] == len(extra["validation_cycles"]) >= 1
    assert (report["epochs_run"], report["best_epoch"]) == (1, 1)
    assert report["validation"] == saved.metrics["validation"]
    assert report["validation"]["mae"] > 0
    assert report["alert_policy"] == saved.alert_policy
    assert report["policy_tuned"] is False and "cross_validation" not in report
    assert 0 < report["elapsed_s"] < 600
    # Not quiet: the progress bar and Keras's epoch line still show, on stderr.
    assert "sample/s" in stderr and "val_loss" in stderr


def test_train_quiet_prints_nothing(tmp_path: Path) -> None:
    out = tmp_path / "quiet.lqb"
    code, stdout, stderr = run_cli("train", *TRAIN_FLAGS, "--out", str(out), "--quiet")
    # No progress bar, no epoch line, no summary: the test above shows them without it.
    assert (code, stdout) == (0, "")
    assert_warnings_only(stderr)
    assert bundle.load(out).metadata["extra"]["epochs_run"] == 1


def test_evaluate_quiet_prints_nothing_and_keeps_its_json_object(
        trained: tuple[Path, dict, str]) -> None:
    out, _, _ = trained
    evaluate = ("evaluate", "--model", str(out), "--simulate", "20")
    code, stdout, stderr = run_cli(*evaluate, "--quiet")
    assert (code, stdout) == (0, "")
    assert_warnings_only(stderr)

    code, stdout, stderr = run_cli(*evaluate, "--quiet", "--json")
    assert code == 0
    assert_warnings_only(stderr)
    report = only_json(stdout)
    assert set(report) == EVALUATE_FIELDS
    assert report["n_windows"] == 20 * 10_000 // 4096
    assert report["data"] == "simulated 20 s, seed 1001"
    assert report["model_version"] == bundle.load(out).version
