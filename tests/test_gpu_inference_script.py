"""deploy/gpu-inference, the prepared GPU check, runs on the CPU under both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "gpu-inference"


def _run(*args: str, backend: str = "tensorflow") -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_times_the_default_bundle_at_each_batch(tmp_path: Path, backend: str):
    if backend == "jax":
        pytest.importorskip("jax")
    out = tmp_path / "figures.json"
    done = _run("--batches", "8,32", "--repeats", "2", "--json", str(out), backend=backend)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["backend"] == backend
    assert [row["batch"] for row in figures["rows"]] == [8, 32]
    for row in figures["rows"]:
        assert row["calls"] == 2
        assert row["ms_per_batch"] > 0
        # ms_per_batch is rounded to the microsecond, so the rate agrees within 1 %.
        expected = row["batch"] / (row["ms_per_batch"] / 1e3)
        assert abs(row["windows_per_s"] - expected) <= 0.01 * expected
    assert f"batch=32 ms_per_batch={figures['rows'][1]['ms_per_batch']}" in done.stdout


def test_a_missing_bundle_or_bad_batches_is_one_line():
    missing = _run("no-such.lqb")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "gpu-inference: no bundle at no-such.lqb; name bundle directories, "
        "e.g. model/bundled/default.lqb"]
    bad = _run("--batches", "64,lots")
    assert bad.returncode == 2
    assert "is not a comma list of batch sizes" in bad.stderr
